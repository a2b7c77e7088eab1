//! Background tasks whose panics are not swallowed.
//!
//! `let _ = handle.await` drops a task's panic on the floor: the process
//! keeps running without the task (a model watcher that died serves a stale
//! model forever) and exits 0. A task spawned through a [`Supervisor`]
//! instead logs its panic at once and resolves [`Supervisor::failed`], which
//! the process's `run` selects on to shut down; [`Task::join`] then returns
//! the panic as an error, so `main` exits non-zero.

use std::future::Future;
use std::sync::Arc;

use futures::FutureExt;
use tokio::task::JoinHandle;

/// Why a background task did not return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    #[error("background task `{name}` panicked: {message}")]
    Panicked { name: &'static str, message: String },
    #[error("background task `{name}` was cancelled")]
    Cancelled { name: &'static str },
}

/// Spawns tasks and reports the first panic among them.
#[derive(Debug, Clone)]
pub struct Supervisor {
    failed: Arc<tokio::sync::watch::Sender<Option<TaskError>>>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor { failed: Arc::new(tokio::sync::watch::channel(None).0) }
    }
}

/// A task spawned by a [`Supervisor`].
#[derive(Debug)]
pub struct Task<T> {
    name: &'static str,
    handle: JoinHandle<Result<T, TaskError>>,
}

impl Supervisor {
    pub fn new() -> Supervisor {
        Supervisor::default()
    }

    /// Spawns `fut` on the runtime as the task `name`.
    pub fn spawn<F>(&self, name: &'static str, fut: F) -> Task<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let failed = self.failed.clone();
        // AssertUnwindSafe: after a panic nothing of the task is used again;
        // the process shuts down.
        let handle = tokio::spawn(std::panic::AssertUnwindSafe(fut).catch_unwind().map(move |r| {
            r.map_err(|payload| {
                let e = TaskError::Panicked { name, message: crate::http::panic_message(payload.as_ref()).to_owned() };
                tracing::error!(error = %e, "background task panicked; shutting down");
                failed.send_if_modified(|f| f.is_none() && f.replace(e.clone()).is_none());
                e
            })
        }));
        Task { name, handle }
    }

    /// Watches a task spawned elsewhere (a library's own `JoinHandle`) like
    /// one spawned here.
    pub fn adopt<T: Send + 'static>(&self, name: &'static str, handle: JoinHandle<T>) -> Task<T> {
        let failed = self.failed.clone();
        let handle = tokio::spawn(async move {
            join(name, handle).await.inspect_err(|e| {
                failed.send_if_modified(|f| f.is_none() && f.replace(e.clone()).is_none());
            })
        });
        Task { name, handle }
    }

    /// Resolves with the first panic of a task spawned here (never, if none panics).
    pub fn failed(&self) -> impl Future<Output = TaskError> + Send + 'static {
        let mut rx = self.failed.subscribe();
        async move {
            // Cloned out at once: the watch guard must not live across an await.
            let first = rx.wait_for(Option::is_some).await.map(|e| e.clone());
            match first {
                Ok(Some(e)) => e,
                // The sender lives in the supervisor; once it is gone no task can fail.
                Ok(None) | Err(_) => std::future::pending().await,
            }
        }
    }

    /// The first panic so far, if any.
    pub fn first_failure(&self) -> Option<TaskError> {
        self.failed.borrow().clone()
    }
}

impl<T> Task<T> {
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
    use std::time::Duration;

    #[tokio::test]
    async fn a_panic_is_reported_at_once_and_returned_by_join() {
        let sup = Supervisor::new();
        let ok = sup.spawn("fine", async { 7 });
        let quiet = sup.spawn("quiet", std::future::pending::<()>());
        let bad = sup.spawn("watcher", async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            panic!("lost the model");
        });
        let first = tokio::time::timeout(Duration::from_secs(5), sup.failed()).await.expect("failure reported");
        assert_eq!(first, TaskError::Panicked { name: "watcher", message: "lost the model".into() });
        assert_eq!(ok.join().await, Ok(7));
        let e = bad.join().await.unwrap_err();
        assert!(e.to_string().contains("`watcher` panicked: lost the model"), "{e}");
        let adopted = sup.adopt("adopted", tokio::spawn(async { 5 }));
        assert_eq!(adopted.join().await, Ok(5));
        quiet.abort();
        assert_eq!(quiet.join().await, Err(TaskError::Cancelled { name: "quiet" }));
        assert!(sup.first_failure().is_some());
    }

    #[tokio::test]
    async fn join_turns_a_plain_handles_panic_into_an_error() {
        let h = tokio::spawn(async { panic!("boom {}", 1) });
        assert_eq!(join("t", h).await, Err(TaskError::Panicked { name: "t", message: "boom 1".into() }));
        assert_eq!(join("t", tokio::spawn(async { 3 })).await, Ok(3));
        let sup = Supervisor::new();
        let never = sup.failed();
        assert!(tokio::time::timeout(Duration::from_millis(50), never).await.is_err(), "nothing failed");
    }
}
