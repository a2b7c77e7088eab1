//! recsys-updater: Kafka events → user histories in Redis → ALS fold-in →
//! top-N lists in Redis (docs/design.md §2, §4, §5).
//!
//! Layout:
//! - [`config`]: `[updater]` and the shared sections, consumer settings.
//! - [`pipeline`]: the consume → apply → fold → write → commit loop: the
//!   batch step `common::kafka::consume` runs, one method per stage.
//! - [`store`]: Redis — the atomic apply script (`apply.lua`: history +
//!   offset), lists, folded-in items.
//! - [`compute`]: fold-in, batched scoring, re-rank, item fold-in (pure CPU).
//! - [`served`]: a verified model version and the atomic [`ModelHandle`].
//! - [`watch`]: model announcements and `CURRENT` → hot swap.
//! - [`refold`]: after a swap, every user's list from the new model, in the background.
//! - [`catalog`]: `recsys.items` → each item's state in Redis (`catalog.lua`)
//!   and the in-memory availability the scoring excludes by.
//! - [`kafka`]: the consumer's context (lag metrics, rebalance logs).
//! - [`metrics`], [`http`]: `recsys_updater_*` on `/metrics`, and `/health`.
//! - [`upgrade`]: `recsys-updater upgrade-keys`, the previous key layout's
//!   rankings and counters moved to their current names.
//! - [`verify`]: `recsys-updater verify`, the histories in Redis against the
//!   events topic (events lost, events applied twice).
//!
//! Exactly-once application: each partition's offset lives in Redis next to
//! the histories and moves in the same atomic step, so Kafka's own committed
//! offsets only decide where re-reading starts after a crash or rebalance;
//! nothing is applied twice or lost whichever instance reads it.
//!
//! [`run`] takes already-made dependencies ([`Deps`]) so tests drive it with
//! their own topics, consumer groups, Redis prefixes and a port-0 listener.

pub mod catalog;
pub mod compute;
pub mod config;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod pipeline;
pub mod refold;
pub mod served;
pub mod store;
pub mod upgrade;
pub mod verify;
pub mod watch;

use std::future::{Future, IntoFuture};
use std::sync::Arc;

use anyhow::Context;
use rdkafka::consumer::StreamConsumer;
use rdkafka::producer::FutureProducer;
use tokio::net::TcpListener;

pub use config::Settings;
pub use metrics::Metrics;
pub use served::{ModelHandle, ServedModel};
pub use store::{RecItem, RecsList};

use crate::kafka::UpdaterContext;
use crate::store::Store;

/// What [`run`] needs, made by the caller.
pub struct Deps {
    /// Bound listener of `/metrics` and `/health`.
    pub listener: TcpListener,
    /// The event consumer, subscribed (see [`kafka::event_consumer`]).
    pub consumer: StreamConsumer<UpdaterContext>,
    /// The `recsys.models` consumer (see [`watch::announcement_consumer`]).
    pub announcements: StreamConsumer,
    /// The dead-letter producer.
    pub producer: FutureProducer,
    /// Redis.
    pub redis: common::redis_conn::RedisConn,
    /// The registry the consumer's context reports into.
    pub metrics: Metrics,
    /// Registries of tasks hosted in the same process (tracking), rendered
    /// on the same `/metrics`.
    pub extra_metrics: Vec<prometheus::Registry>,
    /// The `recsys.items` consumer (see [`catalog::consumer`]).
    pub catalog: StreamConsumer,
    /// Its metrics (rendered on `/metrics`).
    pub catalog_metrics: catalog::CatalogMetrics,
    /// The availability the scoring uses, kept by the catalog task.
    pub live: catalog::LiveCatalog,
}

impl std::fmt::Debug for Deps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deps").field("listener", &self.listener).finish_non_exhaustive()
    }
}

impl Deps {
    /// Connects everything `settings` names; `listener` is already bound.
    pub async fn connect(settings: &Settings, listener: TcpListener) -> anyhow::Result<Deps> {
        let metrics = Metrics::new()?;
        let consumer = kafka::event_consumer(settings, &metrics).context("creating the event consumer")?;
        let instance = format!("{}-{}", std::process::id(), rand_suffix());
        let announcements =
            watch::announcement_consumer(settings, &instance).context("creating the announcement consumer")?;
        let producer = settings.producer_config().create().context("creating the dead-letter producer")?;
        let redis = common::redis_conn::connect(&settings.redis)
            .await
            .with_context(|| format!("connecting to Redis at {}", settings.redis.target()))?;
        let catalog = catalog::consumer(settings).context("creating the recsys.items consumer")?;
        let catalog_metrics = catalog::CatalogMetrics::new()?;
        Ok(Deps {
            listener,
            consumer,
            announcements,
            producer,
            redis,
            metrics,
            extra_metrics: Vec::new(),
            catalog,
            catalog_metrics,
            live: catalog::LiveCatalog::default(),
        })
    }
}

pub(crate) fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish()
}

/// Consumes until `shutdown` resolves; then finishes the batch in hand,
/// commits its offsets and returns. The served model at start is `CURRENT`'s
/// (none is fine: histories are kept and lists follow once a model arrives).
pub async fn run(settings: Settings, deps: Deps, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    let Deps {
        listener,
        consumer,
        announcements,
        producer,
        redis,
        metrics,
        mut extra_metrics,
        catalog,
        catalog_metrics,
        live,
    } = deps;
    extra_metrics.push(catalog_metrics.registry.clone());
    let catalog_redis = redis.clone();
    let store =
        Store::new(redis, settings.redis.keys(), settings.updater.history_max_items, settings.updater.recs_ttl_s)
            .with_live_rankings(store::LiveRankings::new(&settings.popularity, settings.training.weights))
            .with_replicas_acked(settings.redis.replicas_to_wait(), settings.redis.replicas_ack_timeout());
    let handle = ModelHandle::default();
    let models = watch::Models { handle: handle.clone(), metrics: metrics.clone() };
    match watch::load_current(&settings.model.artifacts_dir).await {
        Ok(Some(m)) => watch::serve(&handle, &metrics, m),
        Ok(None) => tracing::warn!(
            dir = %settings.model.artifacts_dir.display(),
            "no model yet: histories are kept, lists follow the first model"
        ),
        Err(e) => {
            metrics.model_loads.with_label_values(&["refused"]).inc();
            tracing::error!(error = %e, "the CURRENT model cannot be served; waiting for another");
        }
    }

    // A panicking background task stops the pipeline and the process
    // (non-zero) instead of leaving it on a stale model.
    let deadline = std::time::Duration::from_secs(settings.updater.drain_deadline_s);
    let stop = common::Shutdown::new().with_drain_deadline(deadline);
    let watcher =
        stop.spawn("model watch", watch::watch_models(settings.clone(), announcements, models, stop.cancelled()));
    let refold = stop.spawn(
        "re-fold",
        refold::supervise(
            settings.clone(),
            store.clone(),
            handle.clone(),
            metrics.clone(),
            compute::ComputeParams { live: live.clone(), ..compute::ComputeParams::from_settings(&settings) },
            stop.cancelled(),
        ),
    );
    let catalog_task = stop.spawn(
        "catalog",
        catalog::run(settings.clone(), catalog, catalog_redis, live.clone(), catalog_metrics, stop.cancelled()),
    );
    let app = http::router_with(metrics.clone(), handle.clone(), extra_metrics);
    tracing::info!(addr = %listener.local_addr()?, "recsys-updater metrics listening");
    let server =
        stop.spawn("metrics server", axum::serve(listener, app).with_graceful_shutdown(stop.cancelled()).into_future());

    let pipeline =
        pipeline::Pipeline::new(settings, Arc::new(consumer), producer, store, handle, metrics).with_live(live);
    let result = pipeline
        .run({
            let stop = stop.clone();
            async move {
                tokio::select! {
                    () = shutdown => {}
                    () = stop.cancelled() => {
                        if let Some(e) = stop.first_failure() {
                            tracing::error!(error = %e, "stopping the pipeline");
                        }
                    }
                }
            }
        })
        .await;
    // The batch in hand is committed: the background tasks stop within the deadline.
    let drained = stop.drain().await;
    if let Err(e) = server.join().await? {
        tracing::warn!(error = %e, "metrics server");
    }
    result?;
    watcher.join().await?;
    refold.join().await?;
    catalog_task.join().await?.context("catalog task")?;
    drained.into_result()
}
