//! The HTML report: one self-contained file (inline CSS and SVG, no scripts, no fetches)
//! with each scenario's table and notes, and two charts per scenario: the calls the
//! caller had in flight and the calls the upstream held, over time, one line per stack.

use std::fmt::Write as _;

use crate::load::Point;
use crate::report::{format_value, ScenarioReport};

/// Line colours, one per stack (colour-blind-safe Okabe-Ito order).
const COLOURS: [&str; 7] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
];

/// At most this many points per line (the series is bucketed, keeping each bucket's max).
const MAX_POINTS: usize = 300;

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The report for `reports`, run with `seed`.
pub fn render(reports: &[ScenarioReport], seed: u64) -> String {
    let mut out = String::new();
    out.push_str(concat!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<title>palisade-lab report</title><style>",
        "body{font:15px/1.45 system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}",
        "table{border-collapse:collapse;margin:.5em 0}",
        "th,td{padding:.25em .6em;border-bottom:1px solid #ddd;text-align:right}td{white-space:nowrap}",
        "th:first-child,td:first-child{text-align:left}",
        "th{background:#f3f3f3}.setup{color:#555}",
        "figure{display:inline-block;margin:.5em 1em .5em 0}figcaption{font-size:13px;color:#444}",
        "svg text{font:11px system-ui,sans-serif;fill:#333}",
        "</style></head><body>\n<h1>palisade-lab report</h1>\n"
    ));
    let _ = writeln!(
        out,
        "<p>{} scenario(s), seed {seed}. Every number was measured by this run: <code>palisade-lab run SCENARIO{} --seed {seed}</code> reproduces it{}.</p>",
        reports.len(),
        if reports.first().is_some_and(|r| r.mode == "virtual") { " --virtual" } else { "" },
        if reports.first().is_some_and(|r| r.mode == "virtual") {
            " exactly (paused time)"
        } else {
            " within the noise of real time"
        }
    );
    for r in reports {
        scenario(&mut out, r);
    }
    out.push_str("</body></html>\n");
    out
}

fn scenario(out: &mut String, r: &ScenarioReport) {
    let _ = writeln!(
        out,
        "<section id=\"{}\"><h2>{}: {}</h2>\n<p class=\"setup\">{} <em>[{}, {:.2} s on its clock]</em></p>",
        escape(r.name),
        escape(r.name),
        escape(r.title),
        escape(&r.setup),
        escape(r.mode),
        r.elapsed.as_secs_f64()
    );
    if r.is_skipped() {
        out.push_str("</section>\n");
        return;
    }
    out.push_str("<table><thead><tr><th>stack</th>");
    for c in &r.columns {
        let _ = write!(out, "<th>{}</th>", escape(c.name));
    }
    out.push_str("</tr></thead><tbody>\n");
    for (i, row) in r.rows.iter().enumerate() {
        let _ = write!(
            out,
            "<tr><td><span style=\"color:{}\">&#9632;</span> {}</td>",
            COLOURS[i % COLOURS.len()],
            escape(&row.stack)
        );
        for (c, v) in r.columns.iter().zip(&row.values) {
            let _ = write!(out, "<td>{}</td>", escape(&format_value(c.unit, *v)));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n<ul>");
    for n in &r.notes {
        let _ = write!(out, "<li>{}</li>", escape(n));
    }
    out.push_str("</ul>\n");
    chart(out, r, "calls in flight at the caller", |p| {
        p.client_in_flight
    });
    chart(out, r, "calls held by the upstream", |p| {
        p.upstream_in_flight
    });
    out.push_str("</section>\n");
}

/// One line chart of `value` over time, a line per stack.
fn chart(out: &mut String, r: &ScenarioReport, caption: &str, value: fn(&Point) -> usize) {
    const W: f64 = 460.0;
    const H: f64 = 200.0;
    const L: f64 = 44.0; // left margin (y labels)
    const B: f64 = 24.0; // bottom margin (x labels)
    const T: f64 = 10.0;
    let t_max = r
        .rows
        .iter()
        .filter_map(|row| row.run.series.last())
        .map(|p| p.t.as_secs_f64())
        .fold(0.0, f64::max)
        .max(1e-3);
    let y_max = r
        .rows
        .iter()
        .flat_map(|row| row.run.series.iter().map(value))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let x = |t: f64| L + (W - L - 8.0) * t / t_max;
    let y = |v: f64| T + (H - T - B) * (1.0 - v / y_max);
    let _ = write!(
        out,
        "<figure><svg width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\">",
        escape(caption)
    );
    // Axes and ticks.
    let _ = write!(
        out,
        "<line x1=\"{L}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999\"/><line x1=\"{L}\" y1=\"{T}\" x2=\"{L}\" y2=\"{}\" stroke=\"#999\"/>",
        H - B,
        W - 8.0,
        H - B,
        H - B
    );
    for i in 0..=4 {
        let t = t_max * f64::from(i) / 4.0;
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{t:.1} s</text>",
            x(t),
            H - 8.0
        );
        let v = y_max * f64::from(i) / 4.0;
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.0}</text><line x1=\"{L}\" y1=\"{:.1}\" x2=\"{}\" y2=\"{:.1}\" stroke=\"#eee\"/>",
            L - 4.0,
            y(v) + 4.0,
            y(v),
            W - 8.0,
            y(v)
        );
    }
    for (t, label) in &r.marks {
        let _ = write!(
            out,
            "<line x1=\"{0:.1}\" y1=\"{T}\" x2=\"{0:.1}\" y2=\"{1}\" stroke=\"#888\" stroke-dasharray=\"4 3\"/><text x=\"{2:.1}\" y=\"{3}\">{4}</text>",
            x(*t),
            H - B,
            x(*t) + 3.0,
            T + 10.0,
            escape(label)
        );
    }
    for (i, row) in r.rows.iter().enumerate() {
        let pts = downsample(&row.run.series, value);
        let mut path = String::new();
        for (t, v) in pts {
            let _ = write!(path, "{:.1},{:.1} ", x(t), y(v));
        }
        let _ = write!(
            out,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"><title>{}</title></polyline>",
            COLOURS[i % COLOURS.len()],
            path.trim_end(),
            escape(&row.stack)
        );
    }
    let _ = writeln!(
        out,
        "</svg><figcaption>{} (y) over time (x); colours as in the table</figcaption></figure>",
        escape(caption)
    );
}

/// At most [`MAX_POINTS`] `(seconds, value)` points: each bucket's largest value, so a
/// peak is never smoothed away.
fn downsample(series: &[Point], value: fn(&Point) -> usize) -> Vec<(f64, f64)> {
    let per = series.len().div_ceil(MAX_POINTS).max(1);
    series
        .chunks(per)
        .map(|c| {
            let t = c[0].t.as_secs_f64();
            let v = c.iter().map(value).max().unwrap_or(0) as f64;
            (t, v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(escape("<a & 'b'>"), "&lt;a &amp; &#39;b&#39;&gt;");
    }

    #[test]
    fn downsampling_keeps_the_peak() {
        let series: Vec<Point> = (0..1000)
            .map(|i| Point {
                t: std::time::Duration::from_millis(i),
                client_in_flight: if i == 501 { 99 } else { 1 },
                upstream_in_flight: 0,
            })
            .collect();
        let pts = downsample(&series, |p| p.client_in_flight);
        assert!(pts.len() <= MAX_POINTS);
        assert_eq!(pts.iter().map(|p| p.1).fold(0.0, f64::max), 99.0);
    }
}
