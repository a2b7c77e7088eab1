//! recsys-ingest: storefront events and catalog changes → Kafka (docs/design.md §2–3).
//!
//! - `POST /v1/events`, `PUT /v1/items/{id}` and `POST /v1/items` ([`http`])
//!   answer only after Kafka acknowledged every accepted record and every
//!   dead letter.
//! - `recsys-ingest replay` ([`replay`]) sends a RetailRocket `events.csv`;
//!   `recsys-ingest replay-items` ([`replay_items`]) its item-property files,
//!   merged in time order, to `recsys.items` (through `replay`'s send loop).
//! - Rejected input goes to `recsys.events.dlq` with its reason; the rules are
//!   `schemas::Event`'s and `schemas::ItemUpdate`'s, not ingest's.
//! - [`kafka`]: the idempotent producer, topic creation and the detector of a
//!   broker that stopped acknowledging; [`error`]: the API's error enum
//!   (client faults 4xx, server faults 5xx, JSON bodies); [`metrics`]: the
//!   Prometheus series of `/metrics`; [`config`]: `[ingest]` and the sections
//!   it reads. [`http`] also serves its own OpenAPI document (`GET /openapi.json`).
//!
//! [`run`] serves until `shutdown` resolves, then finishes in-flight requests
//! and flushes the producer; `main` only wires configuration and signals.

pub mod config;
pub mod error;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod replay;
pub mod replay_items;

use std::future::{Future, IntoFuture};
use std::sync::{Arc, OnceLock};

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
    let stuck = Arc::new(kafka::StuckDetector::new(std::time::Duration::from_millis(settings.ingest.stuck_after_ms)));
    let app = http::router_with(&settings, producer.clone(), metrics, stuck.clone());
    tracing::info!(addr = %listener.local_addr()?, brokers = %settings.kafka.brokers, "recsys-ingest listening");
    let deadline = std::time::Duration::from_secs(settings.ingest.drain_deadline_s);
    let stop = common::Shutdown::new().with_drain_deadline(deadline);
    stop.cancel_on(shutdown);
    // An idempotent producer's fatal error is permanent: stop serving (so the
    // orchestrator sees the process end and starts a fresh one) instead of
    // answering 503 forever.
    let fatal = Arc::new(OnceLock::new());
    stop.spawn("producer watch", {
        let (fatal, producer, stop) = (fatal.clone(), producer.clone(), stop.clone());
        async move {
            let watch = async {
                loop {
                    if let Some((code, reason)) = producer.client().fatal_error() {
                        let _ = fatal.set(format!("{code:?}: {reason}"));
                        return;
                    }
                    if let Some(d) = stuck.stuck_for() {
                        let _ = fatal.set(format!("the broker has refused every message for {} s", d.as_secs()));
                        return;
                    }
                    tokio::time::sleep(FATAL_POLL).await;
                }
            };
            tokio::select! {
                () = stop.cancelled() => {}
                () = watch => {
                    tracing::error!(error = ?fatal.get(), "the producer can no longer produce; shutting down");
                    stop.cancel();
                }
            }
        }
    });
    let server = stop.spawn_essential(
        "http server",
        axum::serve(listener, app).with_graceful_shutdown(stop.cancelled()).into_future(),
    );
    // Serves until the first stop (the caller's, the producer watch's or the
    // server's own end), then drains.
    stop.cancelled().await;
    let drained = stop.drain().await;
    tracing::info!("HTTP server stopped; flushing the producer");
    let timeout = settings.ingest.flush_timeout();
    tokio::task::spawn_blocking(move || producer.flush(timeout)).await??;
    if let Some(e) = fatal.get() {
        anyhow::bail!("the Kafka producer can no longer produce ({e}); exiting so a fresh process replaces this one");
    }
    server.join().await??;
    drained.into_result()
}

/// How often [`run`] checks the producer for a fatal error.
const FATAL_POLL: std::time::Duration = std::time::Duration::from_millis(500);

pub use common::shutdown_signal;
