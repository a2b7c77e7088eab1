//! The producer, topic creation, and "send these and wait for every acknowledgement".

use std::sync::atomic::Ordering;
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

/// Notices a producer that the broker keeps refusing: every produce failing
/// with an error the *broker answered* (not a local timeout or a transport
/// error, which mean "down" and heal by themselves) for longer than `after`.
/// Seen with tansu: an idempotent producer that lived across a broker restart
/// gets "unknown broker error" for every message, forever; only a fresh
/// producer (a fresh process) recovers.
#[derive(Debug)]
pub struct StuckDetector {
    /// Epoch ms of the first broker error of the current streak (0 = none).
    since_ms: std::sync::atomic::AtomicI64,
    after: Duration,
}

impl StuckDetector {
    pub fn new(after: Duration) -> StuckDetector {
        StuckDetector { since_ms: std::sync::atomic::AtomicI64::new(0), after }
    }

    /// A message failed with `e`.
    pub fn failed(&self, e: &KafkaError) {
        if is_broker_error(e) {
            let now = now_ms().max(1);
            let _ = self.since_ms.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// Messages were acknowledged: the streak ends.
    pub fn acknowledged(&self) {
        self.since_ms.store(0, Ordering::Relaxed);
    }

    /// How long the broker has refused everything, once that exceeds the limit.
    pub fn stuck_for(&self) -> Option<Duration> {
        let since = self.since_ms.load(Ordering::Relaxed);
        if since == 0 {
            return None;
        }
        let d = Duration::from_millis((now_ms() - since).max(0) as u64);
        (d > self.after).then_some(d)
    }
}

/// An error code the broker answered (Kafka protocol codes are ≥ -1;
/// librdkafka's local ones, timeouts and transport failures included, are ≤ -100).
fn is_broker_error(e: &KafkaError) -> bool {
    e.rdkafka_error_code().is_some_and(|c| (c as i32) >= -1 && (c as i32) != 0)
}

/// The receiver's clock of every check.
pub(crate) use schemas::now_ms;

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode;

    #[test]
    fn only_a_long_streak_of_broker_answers_is_stuck() {
        let d = StuckDetector::new(Duration::from_millis(50));
        let refused = KafkaError::MessageProduction(RDKafkaErrorCode::Unknown);
        let timed_out = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        d.failed(&timed_out);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(d.stuck_for(), None, "a broker that is down is not a stuck producer");
        d.failed(&refused);
        assert_eq!(d.stuck_for(), None, "not for long yet");
        std::thread::sleep(Duration::from_millis(80));
        assert!(d.stuck_for().is_some());
        d.acknowledged();
        assert_eq!(d.stuck_for(), None);
        assert!(is_broker_error(&KafkaError::MessageProduction(RDKafkaErrorCode::InvalidMessage)));
        assert!(!is_broker_error(&KafkaError::MessageProduction(RDKafkaErrorCode::BrokerTransportFailure)));
    }
}
