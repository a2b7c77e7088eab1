//! The producer, topic creation, and "send these and wait for every acknowledgement".

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

pub use common::kafka::{ensure_topics, TopicOutcome};

use crate::config::Settings;

/// One message to produce.
#[derive(Debug, Clone)]
pub struct OutRecord<'a> {
    pub topic: &'a str,
    pub key: Option<&'a [u8]>,
    pub payload: Vec<u8>,
}

/// Messages Kafka did not acknowledge.
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {total} messages not acknowledged (first: {topic}: {error})")]
pub struct ProduceError {
    pub failed: usize,
    pub total: usize,
    pub topic: String,
    pub error: KafkaError,
    /// Per record, in call order: did Kafka acknowledge it? Some may have been
    /// written even though the call failed as a whole; a caller that answers a
    /// client must say which, or the client's retry duplicates them.
    pub acked: Vec<bool>,
}

/// The idempotent `acks=all` producer of [`Settings::producer_config`].
pub fn producer(settings: &Settings) -> Result<FutureProducer, KafkaError> {
    settings.producer_config().create()
}

/// How often to retry enqueueing when librdkafka's local queue is full.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(2);

/// Enqueues one record, waiting while the local queue is full (until `deadline`).
/// Records are enqueued strictly in call order, so one key's messages keep their order.
pub async fn enqueue(
    producer: &FutureProducer,
    rec: &OutRecord<'_>,
    deadline: tokio::time::Instant,
) -> Result<DeliveryFuture, KafkaError> {
    loop {
        let mut fr = FutureRecord::<[u8], [u8]>::to(rec.topic).payload(&rec.payload);
        if let Some(k) = rec.key {
            fr = fr.key(k);
        }
        match producer.send_result(fr) {
            Ok(f) => return Ok(f),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Sends every record (in order) and waits until Kafka acknowledged each one.
/// `Ok` only if all were acknowledged; otherwise the error counts the failures.
/// `on_error(topic, error)` is called once per failed message.
pub async fn produce_all(
    producer: &FutureProducer,
    records: &[OutRecord<'_>],
    enqueue_timeout: Duration,
    mut on_error: impl FnMut(&str, &KafkaError),
) -> Result<(), ProduceError> {
    let deadline = tokio::time::Instant::now() + enqueue_timeout;
    let mut pending = Vec::with_capacity(records.len());
    let mut first: Option<(String, KafkaError)> = None;
    let mut failed = 0usize;
    let mut acked = vec![false; records.len()];
    for (i, rec) in records.iter().enumerate() {
        match enqueue(producer, rec, deadline).await {
            Ok(f) => pending.push((i, rec.topic, f)),
            Err(e) => {
                on_error(rec.topic, &e);
                // Later records must not overtake this one: stop here; none of
                // the rest is sent.
                failed = records.len() - pending.len();
                first = Some((rec.topic.to_owned(), e));
                break;
            }
        }
    }
    let results = futures::future::join_all(pending.into_iter().map(|(i, t, f)| async move { (i, t, f.await) })).await;
    for (i, topic, res) in results {
        let err = match res {
            Ok(Ok(_)) => {
                acked[i] = true;
                continue;
            }
            Ok(Err((e, _msg))) => e,
            Err(_canceled) => KafkaError::Canceled,
        };
        on_error(topic, &err);
        failed += 1;
        first.get_or_insert((topic.to_owned(), err));
    }
    match first {
        None => Ok(()),
        Some((topic, error)) => Err(ProduceError { failed, total: records.len(), topic, error, acked }),
    }
}

/// A short label for an error, for metrics.
pub fn error_label(e: &KafkaError) -> String {
    match e.rdkafka_error_code() {
        Some(code) => format!("{code:?}"),
        None => "other".to_owned(),
    }
}
