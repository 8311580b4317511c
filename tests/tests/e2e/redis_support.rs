//! Real servers for the fleet tests, started on free loopback ports and killed (and reaped)
//! on drop, so nothing outlives a failing test: `redis-server` (or the binary named by
//! `PALISADE_REDIS_SERVER`, e.g. `valkey-server`), a 3-node Redis Cluster, a loopback
//! upstream that records its in-flight calls, and fleet worker processes.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

fn server_binary() -> String {
    std::env::var("PALISADE_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "no server came up on {port}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill(1)");
    assert!(status.success(), "kill {sig} failed");
}

/// Kills and reaps a child process when dropped.
pub(crate) struct Reaped(pub(crate) Child);

impl Reaped {
    pub(crate) fn kill(&mut self) {
        if matches!(self.0.try_wait(), Ok(Some(_))) {
            return;
        }
        // SIGCONT first: a stopped process still dies on SIGKILL, but be explicit.
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A standalone `redis-server`.
pub(crate) struct RedisServer {
    child: Reaped,
    pub(crate) port: u16,
}

impl RedisServer {
    pub(crate) async fn start() -> Self {
        Self::start_on(free_port()).await
    }

    pub(crate) async fn start_on(port: u16) -> Self {
        let child = Command::new(server_binary())
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `{}` ({e}): apt-get install -y redis-server",
                    server_binary()
                )
            });
        let server = Self {
            child: Reaped(child),
            port,
        };
        wait_for_port(port).await;
        server
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub(crate) async fn connect(&self) -> ConnectionManager {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(200)))
            .set_response_timeout(Some(Duration::from_millis(200)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(100));
        ConnectionManager::new_with_config(redis::Client::open(self.url()).unwrap(), config)
            .await
            .unwrap()
    }

    pub(crate) fn pause(&self) {
        signal(&self.child.0, "-STOP");
    }

    pub(crate) fn resume(&self) {
        signal(&self.child.0, "-CONT");
    }

    pub(crate) fn kill(&mut self) {
        self.child.kill();
    }
}

/// A 3-node Redis Cluster, no replicas, in a temporary directory.
pub(crate) struct RedisCluster {
    nodes: Vec<Reaped>,
    pub(crate) ports: Vec<u16>,
    dir: PathBuf,
}

impl RedisCluster {
    pub(crate) async fn start() -> Self {
        // Each node also needs port + 10000 free (the cluster bus).
        let mut ports = Vec::new();
        while ports.len() < 3 {
            let p = free_port();
            if p < 55000
                && TcpListener::bind(("127.0.0.1", p + 10000)).is_ok()
                && !ports.contains(&p)
            {
                ports.push(p);
            }
        }
        let dir = std::env::temp_dir().join(format!("palisade-cluster-{}", ports[0]));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cluster = Self {
            nodes: Vec::new(),
            ports: ports.clone(),
            dir,
        };
        for port in &ports {
            let child = Command::new(server_binary())
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&cluster.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server");
            cluster.nodes.push(Reaped(child));
        }
        for port in &ports {
            wait_for_port(*port).await;
        }
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli (apt-get install -y redis-tools)");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        // Every node must agree the cluster is up before clients route by slot.
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in &ports {
            loop {
                let info = Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "cluster", "info"])
                    .output()
                    .expect("redis-cli");
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "cluster never became ok");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        cluster
    }

    pub(crate) async fn connect(&self) -> redis::cluster_async::ClusterConnection {
        let urls: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}/"))
            .collect();
        redis::cluster::ClusterClientBuilder::new(urls)
            .connection_timeout(Duration::from_millis(500))
            .response_timeout(Duration::from_millis(500))
            .build()
            .unwrap()
            .get_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback TCP upstream: each connection sends its hold time as a line, is held that
/// long (or until the client goes away), and gets one byte back. Records calls in flight,
/// their peak, and a sample of in-flight every 2 ms.
pub(crate) struct Upstream {
    pub(crate) addr: String,
    pub(crate) in_flight: Arc<AtomicUsize>,
    pub(crate) peak: Arc<AtomicUsize>,
    samples: Arc<Mutex<Vec<(Instant, usize)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Upstream {
    pub(crate) async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (i, p) = (Arc::clone(&in_flight), Arc::clone(&peak));
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (i, p) = (Arc::clone(&i), Arc::clone(&p));
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut read = BufReader::new(read);
                    let mut line = String::new();
                    if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let hold = Duration::from_millis(line.trim().parse().unwrap_or(0));
                    let now = i.fetch_add(1, Ordering::SeqCst) + 1;
                    p.fetch_max(now, Ordering::SeqCst);
                    let mut rest = Vec::new();
                    tokio::select! {
                        () = tokio::time::sleep(hold) => {}
                        // EOF: the caller died (SIGKILL); its call is over.
                        _ = tokio::io::AsyncReadExt::read_to_end(&mut read, &mut rest) => {}
                    }
                    i.fetch_sub(1, Ordering::SeqCst);
                    let _ = write.write_all(b"k").await;
                });
            }
        });
        let (i, s) = (Arc::clone(&in_flight), Arc::clone(&samples));
        let sampler = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(2));
            loop {
                tick.tick().await;
                let n = i.load(Ordering::SeqCst);
                s.lock().unwrap().push((Instant::now(), n));
            }
        });
        Self {
            addr,
            in_flight,
            peak,
            samples,
            tasks: vec![accept, sampler],
        }
    }

    /// Mean in-flight over the samples taken between `from` and `to`.
    pub(crate) fn mean_in_flight(&self, from: Instant, to: Instant) -> f64 {
        let samples = self.samples.lock().unwrap();
        let window: Vec<usize> = samples
            .iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .map(|(_, n)| *n)
            .collect();
        window.iter().sum::<usize>() as f64 / window.len().max(1) as f64
    }

    /// The first sample at or after `from` with at least `n` in flight.
    pub(crate) fn first_reaching(&self, from: Instant, n: usize) -> Option<Instant> {
        let samples = self.samples.lock().unwrap();
        samples
            .iter()
            .find(|(t, m)| *t >= from && *m >= n)
            .map(|(t, _)| *t)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Arguments of one `fleet-worker` process (see `src/bin/fleet_worker.rs`).
pub(crate) struct WorkerSpec<'a> {
    pub(crate) redis_url: &'a str,
    pub(crate) upstream: &'a str,
    pub(crate) key: &'a str,
    pub(crate) limit: usize,
    pub(crate) concurrency: usize,
    pub(crate) hold_ms: u64,
    pub(crate) run_ms: u64,
    pub(crate) ttl_ms: u64,
    pub(crate) renew_ms: u64,
}

/// Starts a worker process; it is killed and reaped on drop.
pub(crate) fn worker(spec: &WorkerSpec<'_>) -> Reaped {
    let child = Command::new(env!("CARGO_BIN_EXE_fleet-worker"))
        .arg(spec.redis_url)
        .arg(spec.upstream)
        .arg(spec.key)
        .arg(spec.limit.to_string())
        .arg(spec.concurrency.to_string())
        .arg(spec.hold_ms.to_string())
        .arg(spec.run_ms.to_string())
        .arg(spec.ttl_ms.to_string())
        .arg(spec.renew_ms.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("fleet-worker");
    Reaped(child)
}

/// Waits (polling, bounded) for a worker to exit; returns its stdout.
pub(crate) async fn finish(mut w: Reaped, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = w.0.try_wait().unwrap() {
            assert!(status.success(), "worker failed: {status}");
            let mut out = String::new();
            if let Some(mut stdout) = w.0.stdout.take() {
                std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
            }
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "worker did not finish within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
