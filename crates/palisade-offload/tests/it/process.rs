//! Process pool tests on real worker processes (the package's `palisade-offload-test-worker`
//! binary) and real time: they assert outcomes and upper bounds, never speed.

use std::path::PathBuf;
use std::time::Duration;

use palisade_core::{BoxError, Deadline, DeadlineExceeded, Elapsed, Overloaded, WithDeadline};
use palisade_offload::process::{ProcessPool, ProcessPoolBuilder, WorkerCrashed, WorkerFailed};
use palisade_offload::InvalidPool;
use tower::{Service, ServiceExt};

const WORKER: &str = env!("CARGO_BIN_EXE_palisade-offload-test-worker");

fn pool(workers: usize) -> ProcessPoolBuilder {
    ProcessPool::builder(WORKER).workers(workers)
}

async fn call(pool: &ProcessPool, req: impl Into<String>) -> Result<String, BoxError> {
    let out = pool.service().oneshot(req.into()).await?;
    Ok(String::from_utf8(out.to_vec()).unwrap())
}

/// The process state letter from `/proc/PID/stat` (`Z` for a zombie); `None` once the
/// process is gone and reaped.
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Waits (real time, at most 10 s) until every one of `pids` is gone from the process
/// table: neither running nor a zombie.
async fn assert_reaped(pids: &[u32]) {
    for _ in 0..1000 {
        if pids.iter().all(|&pid| proc_state(pid).is_none()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let states: Vec<_> = pids.iter().map(|&p| (p, proc_state(p))).collect();
    panic!("workers not reaped: {states:?}");
}

/// Polls (real time, at most 10 s) until `cond` holds.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

fn marker(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("palisade-offload-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_and_reuses_its_workers() {
    let pool = pool(2).build().unwrap();
    assert_eq!(call(&pool, "echo:hello").await.unwrap(), "hello");
    let first = call(&pool, "pid").await.unwrap();
    let second = call(&pool, "pid").await.unwrap();
    assert_eq!(first, second, "an idle worker is reused");
    assert_eq!(pool.worker_pids().len(), 1);
    let handle = pool.handle();
    assert_eq!(
        (handle.completed(), handle.restarts(), handle.running()),
        (3, 0, 0)
    );

    let pids = pool.worker_pids();
    pool.shutdown().await;
    assert!(pool.worker_pids().is_empty());
    // `shutdown` waited for them: gone at once, no zombie left.
    assert!(pids.iter().all(|&pid| proc_state(pid).is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_worker_is_replaced_and_the_job_retried_once() {
    let pool = pool(1).build().unwrap();
    let done = marker("sigkill");
    let job = format!("sleep-once:{}:30000:survived", done.display());
    let task = tokio::spawn({
        let pool = pool.clone();
        async move { call(&pool, job).await }
    });
    // The worker creates the marker once it holds the job, then sleeps 30 s.
    eventually("the worker holds the job", || done.exists()).await;
    let victim = pool.worker_pids()[0];
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(victim as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();

    // Retried on a fresh worker, which finds the marker and answers at once.
    let answer = tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.unwrap(), "survived");
    let handle = pool.handle();
    assert_eq!(handle.restarts(), 1);
    assert_ne!(pool.worker_pids(), vec![victim]);
    assert_reaped(&[victim]).await;
    let _ = std::fs::remove_file(&done);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_crashing_job_is_a_typed_error_after_one_retry() {
    let pool = pool(2).build().unwrap();
    let err = call(&pool, "exit:3").await.unwrap_err();
    let crashed = err.downcast_ref::<WorkerCrashed>().expect("WorkerCrashed");
    assert_eq!(crashed.status().and_then(|s| s.code()), Some(3));
    assert_eq!(pool.handle().restarts(), 2, "one worker per attempt");

    let err = call(&pool, "abort").await.unwrap_err();
    let crashed = err.downcast_ref::<WorkerCrashed>().expect("WorkerCrashed");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        crashed.status().and_then(|s| s.signal()),
        Some(6),
        "SIGABRT"
    );

    // The pool is still healthy.
    assert_eq!(call(&pool, "echo:still here").await.unwrap(), "still here");
    assert_eq!(pool.handle().running(), 0);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_past_its_deadline_gets_its_worker_killed() {
    let pool = pool(1).build().unwrap();
    let busy = call(&pool, "pid").await.unwrap().parse::<u32>().unwrap();
    let req = WithDeadline::until(
        "sleep:30000:late".to_owned(),
        Deadline::after(Duration::from_millis(200)),
    );
    let err = tokio::time::timeout(Duration::from_secs(10), pool.service().oneshot(req))
        .await
        .expect("the deadline bounds the call")
        .unwrap_err();
    assert!(err.is::<DeadlineExceeded>(), "{err}");
    assert_eq!(pool.handle().restarts(), 1);
    assert_reaped(&[busy]).await;
    assert_eq!(call(&pool, "echo:next").await.unwrap(), "next");
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_timeout_kills_a_runaway_worker() {
    let pool = pool(1)
        .job_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), call(&pool, "sleep:30000:late"))
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.is::<Elapsed>(), "{err}");
    assert_eq!(call(&pool, "echo:ok").await.unwrap(), "ok");
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_errors_keep_the_worker_and_are_not_retried() {
    let pool = pool(1).quiet().build().unwrap();
    let pid = call(&pool, "pid").await.unwrap();
    let err = call(&pool, "fail:no such row").await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<WorkerFailed>().unwrap().message(),
        "no such row"
    );
    let err = call(&pool, "panic:bad input").await.unwrap_err();
    assert!(err
        .downcast_ref::<WorkerFailed>()
        .unwrap()
        .message()
        .contains("bad input"));
    assert_eq!(call(&pool, "pid").await.unwrap(), pid, "same worker");
    assert_eq!(pool.handle().restarts(), 0);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violation_replaces_the_worker() {
    let pool = pool(1).build().unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), call(&pool, "garbage"))
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("unknown answer tag"), "{err}");
    assert_eq!(pool.handle().restarts(), 1);
    assert_eq!(call(&pool, "echo:ok").await.unwrap(), "ok");
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_dropped_mid_job_kills_the_worker() {
    let pool = pool(1).build().unwrap();
    let task = tokio::spawn({
        let pool = pool.clone();
        async move { call(&pool, "sleep:30000:never").await }
    });
    eventually("the job runs", || {
        pool.handle().running() == 1 && pool.worker_pids().len() == 1
    })
    .await;
    let pid = pool.worker_pids()[0];
    task.abort();
    let _ = task.await;
    assert_reaped(&[pid]).await;
    let handle = pool.handle();
    assert_eq!(
        (handle.running(), handle.restarts(), handle.completed()),
        (0, 1, 0)
    );
    assert_eq!(call(&pool, "echo:ok").await.unwrap(), "ok");
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_is_bounded_and_dropping_it_reaps_every_worker() {
    let pool = pool(2).reject().build().unwrap();
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { call(&pool, "sleep:300:slow").await })
        })
        .collect();
    eventually("both workers busy", || pool.handle().running() == 2).await;
    let err = call(&pool, "echo:one too many").await.unwrap_err();
    assert!(err.is::<Overloaded>(), "{err}");
    for task in slow {
        assert_eq!(task.await.unwrap().unwrap(), "slow");
    }
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 2);
    drop(pool);
    // kill_on_drop, and tokio's reaper: no zombie, no orphan.
    assert_reaped(&pids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_program_and_config_are_errors() {
    let missing = ProcessPool::builder("/nonexistent/palisade-worker")
        .build()
        .unwrap();
    let err = call(&missing, "echo:x").await.unwrap_err();
    let io = err.downcast_ref::<std::io::Error>().expect("a spawn error");
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    assert_eq!(missing.handle().restarts(), 0);
    assert_eq!(pool(0).build().unwrap_err(), InvalidPool::ZeroThreads);
    assert_eq!(
        ProcessPool::builder("").build().unwrap_err(),
        InvalidPool::EmptyProgram
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_a_free_worker() {
    let pool = pool(1).build().unwrap();
    let mut svc = pool.service();
    let mut other = pool.service();
    let slow = ServiceExt::<String>::ready(&mut svc)
        .await
        .unwrap()
        .call("sleep:200:first".to_owned());
    let second = async {
        std::future::poll_fn(|cx| Service::<String>::poll_ready(&mut other, cx))
            .await
            .unwrap();
        other.call("echo:second".to_owned()).await
    };
    let (a, b) = tokio::join!(slow, second);
    assert_eq!(
        (&a.unwrap()[..], &b.unwrap()[..]),
        (&b"first"[..], &b"second"[..])
    );
    assert_eq!(
        pool.worker_pids().len(),
        1,
        "never more workers than the bound"
    );
    pool.shutdown().await;
}

#[cfg(feature = "serde")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_requests_and_answers() {
    use palisade_offload::process::{from_payload, to_payload};
    let pool = pool(1).arg("--json").build().unwrap();
    let req = to_payload(&serde_json::json!({ "a": 40, "b": 2 })).unwrap();
    let out = pool.service().oneshot(req).await.unwrap();
    let answer: serde_json::Value = from_payload(&out).unwrap();
    assert_eq!(answer["sum"], 42);
    let err = pool.service().oneshot(b"{}".to_vec()).await.unwrap_err();
    assert!(err.is::<WorkerFailed>(), "{err}");
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_fails_without_touching_a_worker() {
    let pool = pool(1).max_frame(16).build().unwrap();
    let err = call(&pool, "echo:this request is longer than sixteen bytes")
        .await
        .unwrap_err();
    let io = err.downcast_ref::<std::io::Error>().expect("an io error");
    assert_eq!(io.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!((pool.handle().restarts(), pool.worker_pids().len()), (0, 0));
    assert_eq!(call(&pool, "echo:short").await.unwrap(), "short");
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prestarted_workers_serve_the_first_jobs() {
    let pool = pool(2).build().unwrap();
    pool.prestart().unwrap();
    let started = pool.worker_pids();
    assert_eq!(started.len(), 2);
    let pid: u32 = call(&pool, "pid").await.unwrap().parse().unwrap();
    assert!(started.contains(&pid), "a new worker was started");
    assert_eq!(pool.worker_pids(), started);
    pool.shutdown().await;
    assert_reaped(&started).await;
}
