//! recsys-ingest: storefront events → Kafka (DESIGN.md §2–3).
//!
//! - `POST /v1/events` ([`http`]) answers only after Kafka acknowledged every
//!   accepted event and every dead letter.
//! - `recsys-ingest replay` ([`replay`]) sends a RetailRocket `events.csv`.
//! - Rejected input goes to `recsys.events.dlq` with its reason; the rules are
//!   `schemas::Event`'s, not ingest's.
//!
//! [`run`] serves until `shutdown` resolves, then finishes in-flight requests
//! and flushes the producer; `main` only wires configuration and signals.

pub mod config;
pub mod error;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod replay;

use std::future::Future;

use rdkafka::producer::{FutureProducer, Producer};
use tokio::net::TcpListener;

pub use config::Settings;
pub use metrics::Metrics;

/// Serves the HTTP API on `listener` until `shutdown` resolves; then stops
/// accepting connections, lets in-flight requests finish, and flushes the producer.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    producer: FutureProducer,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics = Metrics::new()?;
    let app = http::router(&settings, producer.clone(), metrics);
    tracing::info!(addr = %listener.local_addr()?, brokers = %settings.kafka.brokers, "recsys-ingest listening");
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    tracing::info!("HTTP server stopped; flushing the producer");
    let timeout = settings.ingest.flush_timeout();
    tokio::task::spawn_blocking(move || producer.flush(timeout)).await??;
    Ok(())
}

pub use common::shutdown_signal;
