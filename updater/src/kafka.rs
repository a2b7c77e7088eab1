//! The event consumer's librdkafka context: per-partition lag from the
//! statistics callback and rebalances in the log.

use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::{ClientContext, Statistics, TopicPartitionList};

use crate::config::Settings;
use crate::metrics::Metrics;

/// Context of the event consumer.
#[derive(Debug, Clone)]
pub struct UpdaterContext {
    pub metrics: Metrics,
    pub topic: String,
}

impl ClientContext for UpdaterContext {
    fn stats(&self, stats: Statistics) {
        let Some(t) = stats.topics.get(&self.topic) else { return };
        for (p, s) in &t.partitions {
            // Partition -1 is librdkafka's internal "unassigned" queue.
            if *p < 0 || s.fetch_state != "active" {
                continue;
            }
            // Behind the stored offset = not yet applied to Redis.
            let lag = if s.consumer_lag_stored >= 0 { s.consumer_lag_stored } else { s.consumer_lag };
            if lag >= 0 {
                self.metrics.consumer_lag.with_label_values(&[&p.to_string()]).set(lag);
            }
        }
    }
}

impl ConsumerContext for UpdaterContext {
    fn post_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        match r {
            Rebalance::Assign(tpl) => {
                // Eager protocol (range assignor): an assignment is the whole set.
                self.metrics.assigned_partitions.set(tpl.count() as i64);
                tracing::info!(partitions = ?partitions(tpl), "partitions assigned");
            }
            Rebalance::Revoke(tpl) => {
                self.metrics.assigned_partitions.set(0);
                for p in partitions(tpl) {
                    let _ = self.metrics.consumer_lag.remove_label_values(&[&p.to_string()]);
                }
                tracing::info!(partitions = ?partitions(tpl), "partitions revoked");
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            self.metrics.commit_errors.inc();
            tracing::warn!(error = %e, "offset commit failed; the next commit covers it");
        }
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

/// The event consumer, subscribed to `recsys.events` (with the configured prefix).
pub fn event_consumer(settings: &Settings, metrics: &Metrics) -> KafkaResult<StreamConsumer<UpdaterContext>> {
    use rdkafka::consumer::Consumer;
    let topic = settings.kafka.topic(schemas::topics::EVENTS);
    let ctx = UpdaterContext { metrics: metrics.clone(), topic: topic.clone() };
    let c: StreamConsumer<UpdaterContext> = settings.consumer_config().create_with_context(ctx)?;
    c.subscribe(&[&topic])?;
    Ok(c)
}
