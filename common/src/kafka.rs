//! Topic creation at start-up (the local broker does not auto-create topics,
//! and a deployment should not rely on broker defaults for partition counts).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
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
