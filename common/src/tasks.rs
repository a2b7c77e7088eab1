//! Background tasks whose panics are not swallowed.
//!
//! `let _ = handle.await` drops a task's panic on the floor: the process
//! keeps running without the task (a model watcher that died serves a stale
//! model forever) and exits 0. A [`Task`] (spawned through a
//! [`crate::shutdown::Shutdown`]) and [`join`] instead turn a panic or an
//! abort into a [`TaskError`], logged, so `main` exits non-zero.

use tokio::task::JoinHandle;

/// Why a background task did not return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    #[error("background task `{name}` panicked: {message}")]
    Panicked { name: &'static str, message: String },
    #[error("background task `{name}` was cancelled")]
    Cancelled { name: &'static str },
}

/// A task spawned by a [`crate::shutdown::Shutdown`].
#[derive(Debug)]
pub struct Task<T> {
    name: &'static str,
    handle: JoinHandle<Result<T, TaskError>>,
}

impl<T> Task<T> {
    pub(crate) fn new(name: &'static str, handle: JoinHandle<Result<T, TaskError>>) -> Task<T> {
        Task { name, handle }
    }

    /// The name it was spawned under.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Waits for the task; a panic (or an abort) is an error.
    pub async fn join(self) -> Result<T, TaskError> {
        join(self.name, self.handle).await?
    }

    /// Stops the task at its next await point.
    pub fn abort(&self) {
        self.handle.abort();
    }

    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}

/// Awaits a plain `JoinHandle`, turning a panic or a cancellation into an
/// error (logged) instead of dropping it.
pub async fn join<T>(name: &'static str, handle: JoinHandle<T>) -> Result<T, TaskError> {
    handle.await.map_err(|e| {
        let err = if e.is_panic() {
            TaskError::Panicked { name, message: crate::http::panic_message(e.into_panic().as_ref()).to_owned() }
        } else {
            TaskError::Cancelled { name }
        };
        tracing::error!(error = %err, "background task failed");
        err
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn join_turns_a_plain_handles_panic_into_an_error() {
        let h = tokio::spawn(async { panic!("boom {}", 1) });
        assert_eq!(join("t", h).await, Err(TaskError::Panicked { name: "t", message: "boom 1".into() }));
        assert_eq!(join("t", tokio::spawn(async { 3 })).await, Ok(3));
    }
}
