//! Topic creation at start-up (the local broker does not auto-create topics,
//! and a deployment should not rely on broker defaults for partition counts),
//! the micro-batch read of the updater's and tracking's consumers, and the
//! log-start lookup of their lost-state checks.

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
/// that does not exist yet, with the configured partitions and replication.
pub async fn ensure_topics(kafka: &KafkaConfig, timeout: Duration) -> anyhow::Result<Vec<(String, TopicOutcome)>> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &kafka.brokers).create()?;
    let names: Vec<String> = schemas::topics::ALL.iter().map(|t| kafka.topic(t)).collect();
    let new: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| NewTopic::new(n, kafka.partitions, TopicReplication::Fixed(kafka.replication_factor)))
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
    Some(Batch { messages, stopping })
}
