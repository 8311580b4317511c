use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use palisade_core::observe::CallSpan;
use palisade_core::{
    call_span, BoxError, Deadline, DeadlineExceeded, Elapsed, HasDeadline, WithDeadline,
};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tower_service::Service;

use super::protocol::{TAG_ERR, TAG_OK};
use super::{WorkerCrashed, WorkerFailed};
use crate::shared::{admission_setters, Admission, Executor, OnFull, Reservation, Shared, TARGET};
use crate::{InvalidPool, OffloadHandle};

/// How long a worker that closed its pipes gets to exit by itself before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// A request to a [`ProcessPool`]: its bytes, and the deadline it may carry.
pub trait Payload: Send + 'static {
    /// The request's deadline, if any.
    fn deadline(&self) -> Option<Deadline> {
        None
    }

    /// The bytes sent to the worker.
    fn into_bytes(self) -> Bytes;
}

impl Payload for Bytes {
    fn into_bytes(self) -> Bytes {
        self
    }
}

impl Payload for Vec<u8> {
    fn into_bytes(self) -> Bytes {
        self.into()
    }
}

impl Payload for String {
    fn into_bytes(self) -> Bytes {
        self.into()
    }
}

impl Payload for &'static [u8] {
    fn into_bytes(self) -> Bytes {
        Bytes::from_static(self)
    }
}

impl<T: Payload> Payload for WithDeadline<T> {
    fn deadline(&self) -> Option<Deadline> {
        HasDeadline::deadline(self).or_else(|| self.request.deadline())
    }

    fn into_bytes(self) -> Bytes {
        self.into_inner().into_bytes()
    }
}

/// A pool of worker processes; see the [module docs](super).
///
/// Cloning shares the pool. Dropping the last clone (and every service built on it) kills
/// the idle workers; [`shutdown`](Self::shutdown) closes and reaps them first.
#[derive(Clone)]
pub struct ProcessPool {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    spec: Spec,
    idle: Mutex<Vec<Worker>>,
    live: Mutex<BTreeSet<u32>>,
}

#[derive(Debug, Clone)]
struct Spec {
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    quiet: bool,
    job_timeout: Option<Duration>,
    max_frame: usize,
}

/// Builds a [`ProcessPool`]; see [`ProcessPool::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ProcessPoolBuilder {
    spec: Spec,
    workers: usize,
    on_full: OnFull,
    name: Arc<str>,
}

/// One live worker process and its framed pipes.
struct Worker {
    child: Child,
    pid: u32,
    input: FramedWrite<ChildStdin, LengthDelimitedCodec>,
    output: FramedRead<ChildStdout, LengthDelimitedCodec>,
}

/// How one exchange with a worker ended, short of an answer.
enum Failure {
    /// Its pipes closed or broke: it died (or is dying).
    Died,
    /// The job ran past its deadline (`true`) or the pool's job timeout (`false`).
    TimedOut { deadline: bool },
    /// A frame the protocol does not allow; the worker is not trusted further.
    Protocol(String),
}

// === impl ProcessPool ===

impl ProcessPool {
    /// Configures a pool of workers running `program`. Defaults: one worker per core,
    /// [`OnFull::Wait`], no job timeout, stderr passed through, frames up to 8 MiB.
    pub fn builder(program: impl Into<OsString>) -> ProcessPoolBuilder {
        ProcessPoolBuilder {
            spec: Spec {
                program: program.into(),
                args: Vec::new(),
                envs: Vec::new(),
                quiet: false,
                job_timeout: None,
                max_frame: 8 * 1024 * 1024,
            },
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            on_full: OnFull::Wait,
            name: Arc::from(""),
        }
    }

    /// A service sending each request to a worker; every service built on the pool shares
    /// its workers and bound.
    pub fn service(&self) -> ProcessService {
        ProcessService::new(Arc::clone(&self.inner))
    }

    /// Live counts of this pool (`restarts` counts workers replaced after they died or
    /// were killed).
    pub fn handle(&self) -> OffloadHandle {
        OffloadHandle {
            shared: Arc::clone(&self.inner.shared),
        }
    }

    /// Starts idle workers until the pool has as many alive as its size, so the first
    /// jobs do not wait for a process to start. Needs a tokio runtime (tokio reaps
    /// children through it).
    ///
    /// # Errors
    ///
    /// The first worker that could not be started; those started before it stay.
    pub fn prestart(&self) -> std::io::Result<()> {
        while lock(&self.inner.live).len() < self.inner.shared.size {
            let worker = self.inner.spawn()?;
            self.inner.checkin(worker);
        }
        Ok(())
    }

    /// Process ids of the workers alive now (idle or busy).
    pub fn worker_pids(&self) -> Vec<u32> {
        lock(&self.inner.live).iter().copied().collect()
    }

    /// Closes every idle worker's stdin (so [`worker::serve`](super::worker::serve)
    /// returns), waits up to a second for each to exit, kills those that do not, and reaps
    /// them all. Busy workers are left to their jobs; the pool stays usable and starts new
    /// workers when asked.
    pub async fn shutdown(&self) {
        let idle = std::mem::take(&mut *lock(&self.inner.idle));
        for worker in idle {
            let Worker {
                mut child,
                pid,
                input,
                output,
            } = worker;
            drop(input);
            drop(output);
            let _ = reap(&mut child).await;
            lock(&self.inner.live).remove(&pid);
        }
    }
}

impl fmt::Debug for ProcessPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessPool")
            .field("name", &self.inner.shared.name)
            .field("program", &self.inner.spec.program)
            .field("workers", &self.inner.shared.size)
            .field("live", &lock(&self.inner.live).len())
            .finish()
    }
}

// === impl ProcessPoolBuilder ===

impl ProcessPoolBuilder {
    /// Adds an argument to the worker command.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.spec.args.push(arg.into());
        self
    }

    /// Adds arguments to the worker command.
    pub fn args<I: IntoIterator<Item = A>, A: Into<OsString>>(mut self, args: I) -> Self {
        self.spec.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for the workers.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.spec.envs.push((key.into(), value.into()));
        self
    }

    /// Most worker processes alive (and jobs running) at once.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Kills a worker whose job runs longer than `timeout` (the job fails with
    /// [`Elapsed`]); a request's own deadline applies as well, whichever is first.
    pub fn job_timeout(mut self, timeout: Duration) -> Self {
        self.spec.job_timeout = Some(timeout);
        self
    }

    /// Sends the workers' stderr to the null device instead of passing it through.
    pub fn quiet(mut self) -> Self {
        self.spec.quiet = true;
        self
    }

    /// Largest frame either way (default 8 MiB): a larger request fails at once without
    /// reaching a worker; a larger answer is a protocol error and the worker is replaced.
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.spec.max_frame = bytes;
        self
    }

    admission_setters!("worker");

    /// Validates the configuration and builds the pool. No worker starts yet: each starts
    /// when a job first needs it.
    ///
    /// # Errors
    ///
    /// [`InvalidPool`] for zero workers, an empty program, or a queue of zero places or
    /// zero wait.
    pub fn build(self) -> Result<ProcessPool, InvalidPool> {
        if self.spec.program.is_empty() {
            return Err(InvalidPool::EmptyProgram);
        }
        let shared = Shared::new(
            "process_pool",
            self.workers,
            self.on_full,
            self.name,
            Executor::Processes,
        )?;
        Ok(ProcessPool {
            inner: Arc::new(Inner {
                shared: Arc::new(shared),
                spec: self.spec,
                idle: Mutex::new(Vec::new()),
                live: Mutex::new(BTreeSet::new()),
            }),
        })
    }
}

// === impl Inner ===

impl Inner {
    /// An idle worker that is still alive, or a new one.
    fn checkout(self: &Arc<Self>) -> std::io::Result<Worker> {
        loop {
            let Some(mut worker) = lock(&self.idle).pop() else {
                return self.spawn();
            };
            // A worker may have died while idle (killed from outside): reap it, try another.
            match worker.child.try_wait() {
                Ok(None) => return Ok(worker),
                Ok(Some(status)) => {
                    self.replaced(worker.pid, "worker died while idle", Some(status))
                }
                Err(_) => self.replaced(worker.pid, "worker lost while idle", None),
            }
        }
    }

    fn spawn(&self) -> std::io::Result<Worker> {
        let mut cmd = Command::new(&self.spec.program);
        cmd.args(&self.spec.args)
            .envs(self.spec.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if self.spec.quiet {
                Stdio::null()
            } else {
                Stdio::inherit()
            })
            // A worker whose `Child` is dropped (caller gone mid-job, pool dropped) is
            // killed, and tokio reaps it in the background.
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let pid = child.id().unwrap_or(0);
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(std::io::Error::other("worker spawned without pipes"));
        };
        let codec = || {
            LengthDelimitedCodec::builder()
                .max_frame_length(self.spec.max_frame)
                .new_codec()
        };
        lock(&self.live).insert(pid);
        tracing::debug!(target: TARGET, name = %self.shared.name, pid, "worker started");
        Ok(Worker {
            child,
            pid,
            input: FramedWrite::new(stdin, codec()),
            output: FramedRead::new(stdout, codec()),
        })
    }

    fn checkin(&self, worker: Worker) {
        lock(&self.idle).push(worker);
    }

    /// Counts a worker that is gone (or going) and will be replaced by the next job that
    /// needs one. Called before any await on the way out, so a caller dropped meanwhile
    /// cannot leave the worker counted as alive.
    fn replaced(&self, pid: u32, why: &'static str, status: Option<ExitStatus>) {
        lock(&self.live).remove(&pid);
        self.shared.restarts.fetch_add(1, Ordering::Relaxed);
        self.shared.metrics.restarts.increment(1);
        let status = status.map(|s| s.to_string());
        tracing::warn!(target: TARGET, name = %self.shared.name, pid, why, status, "worker replaced");
    }

    /// Runs one job: a worker, at most one retry on another if the first dies mid-job.
    async fn run(
        self: Arc<Self>,
        payload: Bytes,
        deadline: Option<Deadline>,
    ) -> Result<Bytes, BoxError> {
        // The codec would refuse it mid-send, which would look like a dead worker.
        if payload.len() > self.spec.max_frame {
            return Err(Box::new(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "request of {} bytes exceeds the pool's max_frame of {}",
                    payload.len(),
                    self.spec.max_frame
                ),
            )));
        }
        let limit = self.spec.job_timeout.map(Deadline::after);
        let mut last = None;
        for attempt in 0..2 {
            let mut busy = Busy {
                inner: Arc::clone(&self),
                worker: Some(self.checkout()?),
            };
            let worker = busy.worker.as_mut().expect("checked out");
            match exchange(worker, payload.clone(), deadline, limit).await {
                Ok((tag, body)) => {
                    self.checkin(busy.worker.take().expect("checked out"));
                    return match tag {
                        TAG_OK => Ok(body),
                        _ => Err(Box::new(WorkerFailed::new(
                            String::from_utf8_lossy(&body).into_owned(),
                        ))),
                    };
                }
                Err(Failure::TimedOut {
                    deadline: by_deadline,
                }) => {
                    let mut worker = busy.worker.take().expect("checked out");
                    self.replaced(worker.pid, "job past its deadline: worker killed", None);
                    let _ = worker.child.kill().await;
                    return Err(if by_deadline {
                        Box::new(DeadlineExceeded::new())
                    } else {
                        Box::new(Elapsed::new())
                    });
                }
                Err(Failure::Protocol(why)) => {
                    let mut worker = busy.worker.take().expect("checked out");
                    self.replaced(worker.pid, "protocol error: worker killed", None);
                    let _ = worker.child.kill().await;
                    return Err(why.into());
                }
                Err(Failure::Died) => {
                    let mut worker = busy.worker.take().expect("checked out");
                    // Reaped inside a guard: a caller dropped meanwhile still has the dead
                    // worker counted, and its `Child` killed and left to tokio's reaper.
                    let mut dying = Dying {
                        inner: Arc::clone(&self),
                        pid: worker.pid,
                        counted: false,
                    };
                    let status = reap(&mut worker.child).await;
                    dying.counted = true;
                    self.replaced(worker.pid, "worker died mid-job", status);
                    last = status;
                    if attempt == 0 {
                        tracing::info!(target: TARGET, name = %self.shared.name, "retrying the job once on another worker");
                    }
                }
            }
        }
        Err(Box::new(WorkerCrashed::new(last)))
    }
}

/// A worker checked out for one job. Dropped with the worker still in it (the caller's
/// future was dropped mid-job), it kills the worker: a process, unlike a thread, can be
/// stopped, so nothing runs on for a caller that left.
struct Busy {
    inner: Arc<Inner>,
    worker: Option<Worker>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Some(mut worker) = self.worker.take() {
            // SIGKILL now; `kill_on_drop` and tokio's reaper finish the job when `child`
            // drops. Never panics: an error means the worker is already gone.
            let _ = worker.child.start_kill();
            self.inner
                .replaced(worker.pid, "caller dropped mid-job: worker killed", None);
        }
    }
}

/// A dead worker being reaped; dropped before it is counted, it counts it.
struct Dying {
    inner: Arc<Inner>,
    pid: u32,
    counted: bool,
}

impl Drop for Dying {
    fn drop(&mut self) {
        if !self.counted {
            self.inner.replaced(self.pid, "worker died mid-job", None);
        }
    }
}

/// Sends one request and reads one answer, within the earlier of `deadline` and `limit`.
async fn exchange(
    worker: &mut Worker,
    payload: Bytes,
    deadline: Option<Deadline>,
    limit: Option<Deadline>,
) -> Result<(u8, Bytes), Failure> {
    let by_deadline = match (deadline, limit) {
        (Some(d), Some(l)) => d <= l,
        (Some(_), None) => true,
        (None, _) => false,
    };
    let until = match (deadline, limit) {
        (Some(d), Some(l)) => Some(d.min(l)),
        (d, l) => d.or(l),
    };
    let io = async {
        // A write error is a broken pipe: the worker is gone.
        worker
            .input
            .send(payload)
            .await
            .map_err(|_| Failure::Died)?;
        match worker.output.next().await {
            Some(Ok(frame)) => split(frame),
            Some(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                Err(Failure::Protocol(format!("bad frame from worker: {e}")))
            }
            Some(Err(_)) | None => Err(Failure::Died),
        }
    };
    match until {
        None => io.await,
        Some(until) => tokio::time::timeout_at(until.instant(), io)
            .await
            .unwrap_or(Err(Failure::TimedOut {
                deadline: by_deadline,
            })),
    }
}

fn split(mut frame: BytesMut) -> Result<(u8, Bytes), Failure> {
    if frame.is_empty() {
        return Err(Failure::Protocol(
            "empty answer frame from worker".to_owned(),
        ));
    }
    let tag = frame.split_to(1)[0];
    if tag != TAG_OK && tag != TAG_ERR {
        return Err(Failure::Protocol(format!(
            "unknown answer tag {tag} from worker"
        )));
    }
    Ok((tag, frame.freeze()))
}

/// Waits for a worker that closed its pipes to exit, killing it after [`EXIT_GRACE`];
/// returns how it ended if it could be reaped.
async fn reap(child: &mut Child) -> Option<ExitStatus> {
    match tokio::time::timeout(EXIT_GRACE, child.wait()).await {
        Ok(Ok(status)) => Some(status),
        Ok(Err(_)) => None,
        Err(_) => {
            let _ = child.kill().await;
            None
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The pool's locks guard plain collections updated in one step; a panic elsewhere
    // cannot leave them half-updated.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The [`Service`] of a [`ProcessPool`]: bytes in, bytes out; see the [module docs](super).
pub struct ProcessService {
    inner: Arc<Inner>,
    reservation: Reservation,
}

impl ProcessService {
    fn new(inner: Arc<Inner>) -> Self {
        Self {
            reservation: Reservation::new(&inner.shared),
            inner,
        }
    }
}

// Manual: a clone shares the pool but not the slot this service reserved in `poll_ready`.
impl Clone for ProcessService {
    fn clone(&self) -> Self {
        Self::new(Arc::clone(&self.inner))
    }
}

impl fmt::Debug for ProcessService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessService")
            .field("pool", &self.inner.shared.name)
            .field("reserved", &self.reservation.is_reserved())
            .finish()
    }
}

impl<R: Payload> Service<R> for ProcessService {
    type Response = Bytes;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.reservation.poll_reserve(cx)
    }

    fn call(&mut self, req: R) -> ResponseFuture {
        let reserved = self.reservation.take();
        let deadline = req.deadline();
        let payload = req.into_bytes();
        let inner = Arc::clone(&self.inner);
        let mut admission = Admission::start(&inner.shared, reserved, deadline);
        let span =
            call_span!("palisade::offload", "palisade.offload_process", name = %inner.shared.name);
        ResponseFuture {
            span,
            inner: Box::pin(async move {
                let _permit = poll_fn(|cx| admission.poll(cx)).await?;
                if deadline.is_some_and(|d| d.is_expired()) {
                    return Err(Box::new(DeadlineExceeded::new()) as BoxError);
                }
                let shared = Arc::clone(&inner.shared);
                shared.start_running();
                let mut running = Running {
                    shared,
                    completed: false,
                };
                let out = inner.run(payload, deadline).await;
                running.completed = true;
                out
            }),
        }
    }
}

/// Ends a process job's accounting however the job ends (dropped mid-job included).
struct Running {
    shared: Arc<Shared>,
    completed: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shared.stop_running(self.completed);
    }
}

/// Response future of [`ProcessService`]. Dropping it mid-job kills the job's worker (see
/// the [module docs](super)).
pub struct ResponseFuture {
    inner: Pin<Box<dyn Future<Output = Result<Bytes, BoxError>> + Send>>,
    span: CallSpan,
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Bytes, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let _entered = this.span.enter();
        this.inner.as_mut().poll(cx)
    }
}
