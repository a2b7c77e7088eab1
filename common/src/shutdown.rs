//! One way to stop every process (docs/design.md §8, "Shutdown").
//!
//! A [`Shutdown`] is a `CancellationToken` and a `TaskTracker`. It is
//! cancelled by SIGINT/SIGTERM ([`Shutdown::on_signals`]), by the caller
//! ([`Shutdown::cancel`], [`Shutdown::cancel_on`] for a test's channel), by
//! the end of a task the process cannot run without
//! ([`Shutdown::spawn_essential`]) or by the panic of any task it spawned —
//! a watcher that died must not leave the process serving a stale model.
//! Every task reads [`Shutdown::cancelled`] as its stop, so cancelling stops
//! consuming, accepting and polling everywhere at once; [`Shutdown::drain`]
//! then joins the tasks within a deadline and aborts (and names) the ones
//! still running, so a stuck task cannot hold the process forever.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::tasks::{Task, TaskError};

/// How long [`Shutdown::drain`] waits for the tasks by default.
pub const DEFAULT_DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// The stop switch of a process and the tasks it waits for.
#[derive(Debug, Clone)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
    failed: Arc<tokio::sync::watch::Sender<Option<TaskError>>>,
    running: Arc<Mutex<Vec<(&'static str, AbortHandle)>>>,
    deadline: Duration,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            token: CancellationToken::new(),
            tracker: TaskTracker::new(),
            failed: Arc::new(tokio::sync::watch::channel(None).0),
            running: Arc::default(),
            deadline: DEFAULT_DRAIN_DEADLINE,
        }
    }
}

/// What [`Shutdown::drain`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drained {
    /// Tasks still running at the deadline, aborted.
    pub aborted: Vec<&'static str>,
    /// The first panic among the tasks, if any.
    pub failure: Option<TaskError>,
}

impl Drained {
    /// An error naming the first failure, else the aborted tasks: what makes
    /// the process exit non-zero.
    pub fn into_result(self) -> anyhow::Result<()> {
        if let Some(e) = self.failure {
            return Err(e.into());
        }
        if !self.aborted.is_empty() {
            anyhow::bail!("still running at the drain deadline, aborted: {}", self.aborted.join(", "));
        }
        Ok(())
    }
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// The same switch with another drain deadline.
    pub fn with_drain_deadline(mut self, deadline: Duration) -> Shutdown {
        self.deadline = deadline;
        self
    }

    /// Cancels on SIGINT or SIGTERM (see [`crate::signal`]).
    pub fn on_signals(&self) -> &Shutdown {
        self.cancel_on(crate::signal::shutdown_signal())
    }

    /// Cancels when `stop` resolves (a signal, a test's channel).
    pub fn cancel_on(&self, stop: impl Future<Output = ()> + Send + 'static) -> &Shutdown {
        let token = self.token.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stop => token.cancel(),
                () = token.cancelled() => {}
            }
        });
        self
    }

    /// Stops everything that reads [`Shutdown::cancelled`].
    pub fn cancel(&self) {
        self.token.cancel();
    }

    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Resolves once cancelled: the `shutdown` future every `run` and every
    /// loop selects on.
    pub fn cancelled(&self) -> impl Future<Output = ()> + Send + 'static {
        self.token.clone().cancelled_owned()
    }

    /// The token itself, for code that checks it between steps.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Spawns `fut` as the task `name`; its panic is logged at once,
    /// recorded and cancels the process.
    pub fn spawn<F>(&self, name: &'static str, fut: F) -> Task<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (failed, token) = (self.failed.clone(), self.token.clone());
        // AssertUnwindSafe: after a panic nothing of the task is used again;
        // the process shuts down.
        let handle = self.tracker.spawn(std::panic::AssertUnwindSafe(fut).catch_unwind().map(move |r| {
            r.map_err(|payload| {
                let e = TaskError::Panicked { name, message: crate::http::panic_message(payload.as_ref()).to_owned() };
                tracing::error!(error = %e, "background task panicked; shutting down");
                record(&failed, &e);
                token.cancel();
                e
            })
        }));
        self.track(name, &handle);
        Task::new(name, handle)
    }

    /// [`Shutdown::spawn`] for a task the process cannot run without (a
    /// server, a consumer): its end, whatever the outcome, cancels too.
    pub fn spawn_essential<F>(&self, name: &'static str, fut: F) -> Task<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let token = self.token.clone();
        self.spawn(
            name,
            fut.map(move |r| {
                token.cancel();
                r
            }),
        )
    }

    /// Watches a task spawned elsewhere (a library's own `JoinHandle`) like
    /// one spawned here.
    pub fn adopt<T: Send + 'static>(&self, name: &'static str, handle: JoinHandle<T>) -> Task<T> {
        let (failed, token) = (self.failed.clone(), self.token.clone());
        let inner = handle.abort_handle();
        let handle = self.tracker.spawn(async move {
            crate::tasks::join(name, handle).await.inspect_err(|e| {
                record(&failed, e);
                token.cancel();
            })
        });
        self.track(name, &handle);
        // Aborting the watcher alone would leave the adopted task running.
        self.running.lock().unwrap_or_else(|p| p.into_inner()).push((name, inner));
        Task::new(name, handle)
    }

    fn track<T>(&self, name: &'static str, handle: &JoinHandle<T>) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.retain(|(_, h)| !h.is_finished());
        running.push((name, handle.abort_handle()));
    }

    /// Resolves with the first panic of a task spawned here (never, if none panics).
    pub fn failed(&self) -> impl Future<Output = TaskError> + Send + 'static {
        let mut rx = self.failed.subscribe();
        async move {
            // Cloned out at once: the watch guard must not live across an await.
            let first = rx.wait_for(Option::is_some).await.map(|e| e.clone());
            match first {
                Ok(Some(e)) => e,
                // The sender lives in the switch; once it is gone no task can fail.
                Ok(None) | Err(_) => std::future::pending().await,
            }
        }
    }

    /// The first panic so far, if any.
    pub fn first_failure(&self) -> Option<TaskError> {
        self.failed.borrow().clone()
    }

    /// Cancels, waits for every task spawned here up to the drain deadline,
    /// then aborts the ones still running (each named in the log).
    pub async fn drain(&self) -> Drained {
        self.cancel();
        self.tracker.close();
        let mut aborted = Vec::new();
        if tokio::time::timeout(self.deadline, self.tracker.wait()).await.is_err() {
            let running = std::mem::take(&mut *self.running.lock().unwrap_or_else(|p| p.into_inner()));
            for (name, h) in running.into_iter().filter(|(_, h)| !h.is_finished()) {
                tracing::error!(
                    task = name,
                    deadline_s = self.deadline.as_secs_f64(),
                    "task still running at the drain deadline; aborted"
                );
                h.abort();
                aborted.push(name);
            }
            // An aborted task ends at its next await; one blocked in a
            // system call is not waited for longer than this.
            if tokio::time::timeout(Duration::from_secs(1), self.tracker.wait()).await.is_err() {
                tracing::error!("tasks did not end after the abort; exiting without them");
            }
        }
        aborted.dedup();
        Drained { aborted, failure: self.first_failure() }
    }
}

fn record(failed: &tokio::sync::watch::Sender<Option<TaskError>>, e: &TaskError) {
    failed.send_if_modified(|f| f.is_none() && f.replace(e.clone()).is_none());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_is_reported_at_once_and_returned_by_join() {
        let sup = Shutdown::new();
        let ok = sup.spawn("fine", async { 7 });
        let quiet = sup.spawn("quiet", std::future::pending::<()>());
        let bad = sup.spawn("watcher", async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            panic!("lost the model");
        });
        let first = tokio::time::timeout(Duration::from_secs(5), sup.failed()).await.expect("failure reported");
        assert_eq!(first, TaskError::Panicked { name: "watcher", message: "lost the model".into() });
        assert!(sup.is_cancelled(), "a panic stops the process");
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
    async fn nothing_failed_means_failed_never_resolves() {
        let sup = Shutdown::new();
        let never = sup.failed();
        assert!(tokio::time::timeout(Duration::from_millis(50), never).await.is_err(), "nothing failed");
    }

    #[tokio::test]
    async fn cancel_stops_the_loops_and_drain_joins_them() {
        let stop = Shutdown::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        stop.cancel_on(async {
            let _ = rx.await;
        });
        let seen = stop.cancelled();
        let looping = stop.spawn("loop", async move {
            seen.await;
            "stopped"
        });
        let essential = stop.spawn_essential("server", async {});
        assert_eq!(essential.join().await, Ok(()));
        assert!(stop.is_cancelled(), "an essential task's end cancels");
        drop(tx);
        let d = stop.drain().await;
        assert_eq!(d, Drained::default());
        assert_eq!(looping.join().await, Ok("stopped"));
    }

    #[tokio::test]
    async fn a_task_past_the_deadline_is_aborted_and_named() {
        let stop = Shutdown::new().with_drain_deadline(Duration::from_millis(50));
        let stuck = stop.spawn("stuck", std::future::pending::<()>());
        let fine = stop.spawn("fine", stop.cancelled());
        let adopted = stop.adopt("adopted", tokio::spawn(std::future::pending::<()>()));
        let d = tokio::time::timeout(Duration::from_secs(5), stop.drain()).await.expect("drain is bounded");
        assert_eq!(d.aborted, vec!["stuck", "adopted"]);
        assert_eq!(stuck.join().await, Err(TaskError::Cancelled { name: "stuck" }));
        assert_eq!(fine.join().await, Ok(()));
        assert!(adopted.join().await.is_err());
    }
}
