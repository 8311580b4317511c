//! The HTML report: self-contained (no scripts, stylesheets, images or URLs to fetch), and
//! rendered by a real browser (headless Chromium) with its tables and charts.
//!
//! Chromium comes from `bash scripts/test.sh` (it installs it with apt-get when missing).
//! In CI (`CI=true`) a missing Chromium fails the test; elsewhere the test says how to
//! install it and checks only the file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A fresh directory under the system's temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("palisade-lab-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PALISADE_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|p| p.is_file())
}

/// Runs headless Chromium on `page` with `args`, within a minute, and returns its stdout.
async fn run_chromium(chromium: &Path, profile: &Path, args: &[String], page: &Path) -> String {
    let mut cmd = tokio::process::Command::new(chromium);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .arg(format!("file://{}", page.display()))
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("chromium finished within a minute")
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "current_thread")]
async fn report_is_self_contained_and_renders_in_chromium() {
    let dir = TempDir::new("report");
    let page = dir.0.join("lab.html");
    let o = Command::new(env!("CARGO_BIN_EXE_palisade-lab"))
        .args(["run", "partial-fanout", "--virtual", "--report"])
        .arg(&page)
        .output()
        .expect("the binary runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let html = std::fs::read_to_string(&page).expect("the report was written");
    assert!(html.starts_with("<!doctype html>"));
    for fetch in [
        "<script", "<link", "<img", "<iframe", "src=", "url(", "http://", "https://",
    ] {
        assert!(
            !html.contains(fetch),
            "the report would fetch something: {fetch}"
        );
    }

    let Some(chromium) = chromium() else {
        let how = "install Chromium to check the report in a browser: `sudo apt-get install -y chromium` \
                   (bash scripts/test.sh does it), or point PALISADE_CHROMIUM at a Chrome binary";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Chromium is missing in CI: {how}"
        );
        eprintln!("skipping the browser half of this test: {how}");
        return;
    };
    let profile = TempDir::new("profile");
    let dom = run_chromium(&chromium, &profile.0, &["--dump-dom".to_owned()], &page).await;
    // Chromium parsed what we wrote: the table's rows, one line per stack in each chart.
    assert!(dom.contains("partial-fanout"), "{dom}");
    assert!(dom.contains("palisade fan-out, partial at 50 ms"), "{dom}");
    assert_eq!(dom.matches("<svg").count(), 2, "{dom}");
    assert_eq!(dom.matches("<polyline").count(), 2 * 3, "{dom}");

    let shot = dir.0.join("lab.png");
    run_chromium(
        &chromium,
        &profile.0,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1000,1200".to_owned(),
        ],
        &page,
    )
    .await;
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    assert!(
        png.len() > 10_000,
        "a {} byte screenshot is blank",
        png.len()
    );
}

/// The loopback-only scenarios' tables and charts render too (the fleet's, or its skip
/// note when redis-server is missing outside CI), and a skipped scenario's section has
/// its note and no chart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_and_fleet_render_in_chromium() {
    use palisade_lab::scenario::{self, Ctx};
    use palisade_lab::upstream::Mode;
    let ctx = Ctx {
        mode: Mode::Loopback,
        seed: 1,
        duration: None,
        extra: None,
    };
    let mut reports = Vec::new();
    for name in ["gateway", "fleet"] {
        reports.push(scenario::find(name).unwrap().run(ctx).await.unwrap());
    }
    let fleet_ran = !reports[1].is_skipped();
    // And a skipped one: its note, no table, no chart.
    reports.push(
        scenario::find("gateway")
            .unwrap()
            .run(Ctx {
                mode: Mode::Virtual,
                ..ctx
            })
            .await
            .unwrap(),
    );
    let charts = if fleet_ran { 4 } else { 2 };
    let lines = if fleet_ran { 2 * 2 + 2 * 3 } else { 2 * 2 };
    let doc = palisade_lab::html::render(&reports, 1);
    let dir = TempDir::new("report-new");
    let page = dir.0.join("lab.html");
    std::fs::write(&page, &doc).unwrap();
    assert_eq!(doc.matches("<svg").count(), charts, "{doc}");

    let Some(chromium) = chromium() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Chromium is missing in CI"
        );
        eprintln!("skipping the browser half of this test: install chromium");
        return;
    };
    let profile = TempDir::new("profile-new");
    let dom = run_chromium(&chromium, &profile.0, &["--dump-dom".to_owned()], &page).await;
    assert!(dom.contains("palisade BlockingPool + CpuPool"), "{dom}");
    assert!(dom.contains("ticker max lag"), "{dom}");
    assert!(
        dom.contains("skipped: the gateway runs over loopback only"),
        "{dom}"
    );
    if fleet_ran {
        assert!(dom.contains("palisade fleet limit 20 (redis)"), "{dom}");
    } else {
        assert!(dom.contains("apt-get install -y redis-server"), "{dom}");
    }
    assert_eq!(dom.matches("<svg").count(), charts, "{dom}");
    assert_eq!(dom.matches("<polyline").count(), lines, "{dom}");
}
