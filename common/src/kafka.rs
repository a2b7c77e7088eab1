//! Topic creation at start-up (the local broker does not auto-create topics,
//! and a deployment should not rely on broker defaults for partition counts),
//! the consumer loop of the updater and tracking ([`consume`]: micro-batch
//! read, retried apply, commit, stop), and the log-start lookup of their
//! lost-state checks.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::OwnedMessage;
use rdkafka::ClientConfig;

use crate::config::KafkaConfig;

/// What [`ensure_topics`] did for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicOutcome {
    Created,
    AlreadyExists,
}

/// Creates every topic of `schemas::topics::ALL` (with the configured prefix)
/// that does not exist yet, with the configured partitions and replication;
/// those of `schemas::topics::COMPACTED` with `cleanup.policy=compact`.
pub async fn ensure_topics(kafka: &KafkaConfig, timeout: Duration) -> anyhow::Result<Vec<(String, TopicOutcome)>> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &kafka.brokers).create()?;
    let names: Vec<String> = schemas::topics::ALL.iter().map(|t| kafka.topic(t)).collect();
    let new: Vec<NewTopic<'_>> = names
        .iter()
        .zip(schemas::topics::ALL)
        .map(|(n, t)| {
            let topic = NewTopic::new(n, kafka.partitions, TopicReplication::Fixed(kafka.replication_factor));
            if schemas::topics::COMPACTED.contains(&t) {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    let opts = AdminOptions::new().request_timeout(Some(timeout)).operation_timeout(Some(timeout));
    let results = tokio::time::timeout(timeout + Duration::from_secs(1), admin.create_topics(&new, &opts))
        .await
        .map_err(|_| anyhow::anyhow!("creating topics on {} timed out after {timeout:?}", kafka.brokers))??;
    let mut out = Vec::new();
    for r in results {
        match r {
            Ok(name) => out.push((name, TopicOutcome::Created)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => out.push((name, TopicOutcome::AlreadyExists)),
            Err((name, code)) => anyhow::bail!("creating topic {name} on {}: {code}", kafka.brokers),
        }
    }
    Ok(out)
}

/// The first offset of partition `p` of `topic` (its low watermark), asked
/// off the async workers (the call blocks). -1 when the broker cannot tell: a
/// lost-state check (no stored offset although the batch starts past the log
/// start) is then skipped for that partition.
pub async fn log_start<C: ConsumerContext + 'static>(consumer: &Arc<StreamConsumer<C>>, topic: &str, p: i32) -> i64 {
    let (c, name) = (consumer.clone(), topic.to_owned());
    match tokio::task::spawn_blocking(move || c.fetch_watermarks(&name, p, Duration::from_secs(5))).await {
        Ok(Ok((low, _))) => low,
        Ok(Err(e)) => {
            tracing::warn!(topic, partition = p, error = %e, "cannot read the log start; lost-state check off for it");
            -1
        }
        Err(e) => {
            tracing::warn!(topic, partition = p, error = %e, "watermark task failed");
            -1
        }
    }
}

/// One micro-batch of a consumer (see [`next_batch`]).
#[derive(Debug)]
pub struct Batch {
    /// At least one message, at most the asked maximum.
    pub messages: Vec<OwnedMessage>,
    /// Shutdown came while the batch was filling: process it, then stop.
    pub stopping: bool,
    /// When the first message reached the caller: the batch's oldest wait.
    pub opened: std::time::Instant,
}

/// Waits for one message, then gathers more until `max` or until `wait` has
/// passed since the first; `None` when `shutdown` resolves before any message.
/// The batch is all the caller holds (bounded), and a lone event waits at most
/// `wait`. Consumer errors are logged (`task` names the caller) and reading
/// goes on: librdkafka retries by itself.
pub async fn next_batch<C, F>(
    consumer: &StreamConsumer<C>,
    max: usize,
    wait: Duration,
    shutdown: &mut Pin<&mut F>,
    task: &'static str,
) -> Option<Batch>
where
    C: ConsumerContext + 'static,
    F: Future<Output = ()>,
{
    let mut messages = Vec::with_capacity(max);
    while messages.is_empty() {
        tokio::select! {
            biased;
            () = shutdown.as_mut() => return None,
            m = consumer.recv() => match m {
                Ok(m) => messages.push(m.detach()),
                Err(e) => {
                    tracing::warn!(task, error = %e, "consumer error");
                    // Not a busy loop on a broker that keeps failing, and still
                    // prompt to stop.
                    tokio::select! {
                        biased;
                        () = shutdown.as_mut() => return None,
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            },
        }
    }
    let opened = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + wait;
    let mut stopping = false;
    while messages.len() < max {
        tokio::select! {
            biased;
            () = shutdown.as_mut() => { stopping = true; break; }
            () = tokio::time::sleep_until(deadline) => break,
            m = consumer.recv() => match m {
                Ok(m) => messages.push(m.detach()),
                Err(e) => tracing::warn!(task, error = %e, "consumer error"),
            },
        }
    }
    Some(Batch { messages, stopping, opened })
}

/// How [`consume`] paces a consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLoop {
    /// Most messages per batch.
    pub max: usize,
    /// Longest wait for more messages after a batch's first (see [`next_batch`]).
    pub wait: Duration,
    /// Pause after the first failed attempt at a batch; doubled after each
    /// further failure, up to 5 s.
    pub backoff: Duration,
    /// Names the consumer in the logs.
    pub task: &'static str,
}

/// The work [`consume`] does on each batch.
pub trait BatchStep {
    /// What is worked out once per batch and kept across its retries.
    type Decoded: Send;
    /// Why an attempt failed (it is retried).
    type Error: std::fmt::Display + Send;

    /// The batch about to be decoded had its first message in hand at
    /// `at` (for a step that measures its own latency).
    fn opened(&mut self, _at: std::time::Instant) {}

    /// Once per batch, before the first attempt: what needs no retry.
    fn decode(&mut self, batch: &[OwnedMessage]) -> impl Future<Output = Self::Decoded> + Send;

    /// Applies the batch and stores and commits its offsets — in that order,
    /// so no offset moves past a message whose effects are not written.
    /// Called again with the same batch after an error, so it must be
    /// idempotent.
    fn apply(
        &mut self,
        batch: &[OwnedMessage],
        decoded: &Self::Decoded,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// An attempt failed and will be retried after a pause.
    fn failed(&mut self, _error: &Self::Error) {}
}

/// The consumer loop of the updater and tracking: [`next_batch`] → decode →
/// apply (retried with backoff until it succeeds) → the next batch, until
/// `shutdown` resolves. The batch in hand is then finished and the consumer's
/// offsets committed synchronously before returning; if shutdown comes while a
/// batch keeps failing, it returns at once without committing (the batch is
/// read again after the restart). The error is the final commit's task
/// failing.
pub async fn consume<C, S, F>(
    consumer: Arc<StreamConsumer<C>>,
    pace: BatchLoop,
    mut step: S,
    shutdown: F,
) -> Result<(), tokio::task::JoinError>
where
    C: ConsumerContext + 'static,
    S: BatchStep + Send + 'static,
    F: Future<Output = ()>,
{
    let task = pace.task;
    tokio::pin!(shutdown);
    let mut stopping = false;
    while !stopping {
        // Bounded: one batch of at most `max` messages is all the loop holds.
        let Some(next) = next_batch(&consumer, pace.max, pace.wait, &mut shutdown, task).await else {
            break;
        };
        stopping = next.stopping;
        let batch = next.messages;
        step.opened(next.opened);
        let decoded = step.decode(&batch).await;
        let mut backoff = pace.backoff;
        loop {
            match step.apply(&batch, &decoded).await {
                Ok(()) => break,
                Err(e) => {
                    step.failed(&e);
                    tracing::warn!(task, error = %e, retry_in = ?backoff, "batch failed; retrying");
                    tokio::select! {
                        () = &mut shutdown => {
                            tracing::warn!(task, "shutting down with a batch not applied; it will be read again");
                            return Ok(());
                        }
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
    tracing::info!(task, "consumer stopped; committing offsets");
    // A synchronous commit and the consumer's drop (leaving the group, when
    // the step held the last other handle) block: off the async workers.
    tokio::task::spawn_blocking(move || {
        match consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync) {
            Ok(()) | Err(rdkafka::error::KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => tracing::warn!(task, error = %e, "final commit failed"),
        }
        drop(step);
    })
    .await
}
