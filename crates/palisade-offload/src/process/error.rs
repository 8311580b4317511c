use std::fmt;
use std::process::ExitStatus;

/// A worker process died mid-job (it exited, was killed by a signal, or closed its pipes),
/// and so did the fresh worker the job was retried on once.
///
/// The pool replaced both workers and keeps serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerCrashed {
    status: Option<ExitStatus>,
}

impl WorkerCrashed {
    pub(crate) const fn new(status: Option<ExitStatus>) -> Self {
        Self { status }
    }

    /// How the last worker ended, when it could be reaped (`None` if it had to be killed
    /// after it closed its pipes).
    pub fn status(&self) -> Option<ExitStatus> {
        self.status
    }
}

impl fmt::Display for WorkerCrashed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("worker process died mid-job, twice")?;
        if let Some(status) = self.status {
            write!(f, " (last: {status})")?;
        }
        Ok(())
    }
}

impl std::error::Error for WorkerCrashed {}

/// A worker process answered the job with an error of its own (its handler returned an
/// error or panicked). The worker is healthy and was kept; the job was not retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerFailed {
    message: String,
}

impl WorkerFailed {
    pub(crate) fn new(message: String) -> Self {
        Self { message }
    }

    /// The worker's error message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for WorkerFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "worker process failed the job: {}", self.message)
    }
}

impl std::error::Error for WorkerFailed {}
