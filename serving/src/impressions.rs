//! Impressions → `recsys.impressions`, off the request path: a request only
//! `try_send`s into a bounded queue; one task hands the queue to librdkafka
//! (itself bounded); delivery results are counted by the producer's context.
//! With Kafka down the API keeps answering and the losses are counted
//! (`recsys_serving_impressions_dropped_total`).

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;
use schemas::Impression;
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// Counts deliveries.
#[derive(Debug, Clone)]
pub struct CountingContext {
    metrics: Metrics,
}

impl ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.metrics.impressions_delivered.inc(),
            Err((e, _)) => {
                self.metrics.impressions_dropped.with_label_values(&["delivery_failed"]).inc();
                tracing::debug!(error = %e, "impression not delivered");
            }
        }
    }
}

/// The producer impressions go through.
pub type ImpressionProducer = ThreadedProducer<CountingContext>;

/// Creates the producer (it connects lazily: a broker that is down is not an error here).
pub fn producer(settings: &crate::Settings, metrics: &Metrics) -> Result<ImpressionProducer, KafkaError> {
    settings.producer_config().create_with_context(CountingContext { metrics: metrics.clone() })
}

/// The request side: a bounded queue.
#[derive(Debug, Clone)]
pub struct Publisher {
    tx: mpsc::Sender<Impression>,
    metrics: Metrics,
}

impl Publisher {
    /// Queues `imp` without waiting; when the queue is full it is dropped and counted.
    pub fn publish(&self, imp: Impression) {
        match self.tx.try_send(imp) {
            Ok(()) => {}
            Err(_) => self.metrics.impressions_dropped.with_label_values(&["queue_full"]).inc(),
        }
    }
}

/// The bounded queue and the task draining it into `producer` on `topic`.
/// The task ends (flushing for at most `flush`) when every [`Publisher`] is dropped.
pub fn start(
    producer: ImpressionProducer,
    topic: String,
    capacity: usize,
    metrics: Metrics,
    flush: Duration,
) -> (Publisher, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Impression>(capacity);
    let m = metrics.clone();
    let task = tokio::spawn(async move {
        while let Some(imp) = rx.recv().await {
            let payload = imp.to_json();
            let rec = BaseRecord::<[u8], [u8]>::to(&topic).payload(&payload).key(imp.key());
            match producer.send(rec) {
                Ok(()) => m.impressions_queued.inc(),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    m.impressions_dropped.with_label_values(&["producer_queue_full"]).inc();
                }
                Err((e, _)) => {
                    m.impressions_dropped.with_label_values(&["delivery_failed"]).inc();
                    tracing::debug!(error = %e, "impression not enqueued");
                }
            }
        }
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = producer.flush(flush) {
                tracing::warn!(error = %e, "impressions not flushed at shutdown");
            }
        })
        .await;
    });
    (Publisher { tx, metrics }, task)
}
