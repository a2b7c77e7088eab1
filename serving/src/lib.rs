//! recsys-serving: the API the storefront calls on every page view
//! (docs/design.md §7–8). It reads what the updater and the trainer wrote to Redis
//! (cached lists, popular and similar lists, counters) and computes nothing
//! from the model's factors.
//!
//! Layout:
//! - [`config`]: `[serving]` and the shared sections.
//! - [`http`]: the router: every route, the `/v1/*` guard, request metrics.
//! - [`routes`]: the handlers by family — [`routes::recs`] (the fallback chain
//!   cached list → category popular → popular, the sticky A/B arm),
//!   [`routes::similar`], [`routes::popular`], [`routes::stats`],
//!   [`routes::ops`] (health, readiness, metrics, admin reload).
//! - [`state`]: [`AppState`], what every request shares, and the popular-list lookups.
//! - [`request`]: path and query parameters.
//! - [`cached`]: the lazy reader of cached-list values (`recs:{user}`, `similar:{item}`).
//! - [`openapi`]: the OpenAPI document.
//! - [`catalog`]: the served model's metadata in memory (popular lists,
//!   categories, availability), swapped atomically.
//! - [`watch`]: model announcements / `CURRENT`, and the Redis popular lists.
//! - [`impressions`]: the bounded, fire-and-forget impression producer.
//! - [`live`]: the live popularity rankings in memory (day one, trending).
//! - [`live_catalog`]: availability and categories from `recsys.items`,
//!   folded in memory by a background consumer; readiness waits for it.
//! - [`stats`]: Wilson intervals and the two-proportion z-test of `/v1/stats`.
//! - [`error`], [`metrics`]: JSON errors and `recsys_serving_*` metrics.
//! - [`demo`]: the demo shop page at `/demo/` (`[serving] demo`), compiled in.
//!
//! [`run`] takes already-made dependencies ([`Deps`]) so tests drive it with
//! their own Redis prefix, topics and a port-0 listener.

pub mod cached;
pub mod catalog;
pub mod config;
pub mod demo;
pub mod error;
pub mod http;
pub mod impressions;
pub mod live;
pub mod live_catalog;
pub mod metrics;
pub mod openapi;
pub mod request;
pub mod routes;
pub mod state;
pub mod stats;
pub mod watch;

use std::future::{Future, IntoFuture};
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::StreamConsumer;
use tokio::net::TcpListener;

pub use catalog::{Catalog, CatalogHandle};
pub use common::shutdown_signal;
pub use config::Settings;
pub use metrics::Metrics;
pub use state::AppState;

/// What [`run`] needs, made by the caller.
pub struct Deps {
    /// Bound listener of the API.
    pub listener: TcpListener,
    /// Redis (lazy: serving starts, degraded, while Redis is down).
    pub redis: common::redis_conn::RedisConn,
    /// The impression producer (see [`impressions::producer`]).
    pub producer: impressions::ImpressionProducer,
    /// The `recsys.models` consumer; `None` = follow `CURRENT` only.
    pub announcements: Option<StreamConsumer>,
    /// The registry the producer's context reports into.
    pub metrics: Metrics,
}

impl std::fmt::Debug for Deps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deps").field("listener", &self.listener).finish_non_exhaustive()
    }
}

impl Deps {
    /// Makes everything `settings` names; `listener` is already bound. Neither
    /// Redis nor Kafka has to be up.
    pub fn connect(settings: &Settings, listener: TcpListener) -> anyhow::Result<Deps> {
        let metrics = Metrics::new()?;
        let redis = common::redis_conn::connect_lazy(&settings.redis)
            .with_context(|| format!("Redis at {}", settings.redis.target()))?;
        let producer = impressions::producer(settings, &metrics).context("creating the impression producer")?;
        let instance = format!("{}-{:x}", std::process::id(), rand::random::<u64>());
        let announcements =
            watch::announcement_consumer(settings, &instance).context("creating the announcement consumer")?;
        Ok(Deps { listener, redis, producer, announcements: Some(announcements), metrics })
    }
}

/// Serves until `shutdown` resolves; then stops accepting connections, lets
/// in-flight requests finish and flushes the impressions.
pub async fn run(
    settings: Settings,
    deps: Deps,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Deps { listener, redis, producer, announcements, metrics } = deps;
    let (publisher, impressions_task) = impressions::start(
        producer,
        settings.kafka.topic(schemas::topics::IMPRESSIONS),
        settings.serving.impression_queue,
        metrics.clone(),
        Duration::from_millis(settings.serving.impression_timeout_ms),
    );
    let state = AppState::new(
        settings.serving.clone(),
        settings.redis.keys(),
        redis,
        CatalogHandle::default(),
        publisher,
        metrics.clone(),
    )
    .with_admin(state::Admin {
        auth: settings.admin.resolve().map_err(|e| anyhow::anyhow!(e))?,
        model_root: settings.model.artifacts_dir.clone(),
    })
    .with_popularity(settings.popularity.clone());
    let live_catalog = std::sync::Arc::new(live_catalog::LiveCatalog::new(settings.serving.live_catalog));
    let state = state.with_live_catalog(live_catalog.clone());
    let root = settings.model.artifacts_dir.clone();
    match watch::load_current(&root).await {
        Ok(Some(c)) => watch::serve(&state, c).await,
        Ok(None) => tracing::warn!(
            dir = %root.display(),
            "no model yet: popular answers come from the live popularity ranking until the first one"
        ),
        Err(e) => {
            metrics.model_loads.with_label_values(&["refused"]).inc();
            tracing::error!(error = %e, "the CURRENT model cannot be served; waiting for another");
        }
    }
    // One stop for the API and its background tasks: the caller's shutdown,
    // or a task's panic (a stale model or popular list must not be served
    // quietly), or the server's end.
    let stop = common::Shutdown::new().with_drain_deadline(Duration::from_secs(settings.serving.drain_deadline_s));
    stop.cancel_on(shutdown);
    let impressions_task = stop.adopt("impression producer", impressions_task);
    let models = stop.spawn(
        "model watch",
        watch::watch_models(
            root,
            Duration::from_secs(settings.serving.model_poll_interval_s),
            announcements,
            state.clone(),
            stop.cancelled(),
        ),
    );
    let popular = stop.spawn(
        "popular lists",
        watch::watch_popular(
            state.clone(),
            Duration::from_millis(settings.serving.popular_refresh_ms),
            stop.cancelled(),
        ),
    );
    let items = settings.serving.live_catalog.then(|| {
        let config =
            settings.live_catalog_consumer_config(&format!("{}-{:x}", std::process::id(), rand::random::<u64>()));
        stop.spawn(
            "live catalog",
            live_catalog::run(
                move || config.create(),
                settings.kafka.topic(schemas::topics::ITEMS),
                live_catalog,
                metrics.clone(),
                stop.cancelled(),
            ),
        )
    });
    let app = http::router(state);
    tracing::info!(addr = %listener.local_addr()?, redis = %settings.redis.target(), "recsys-serving listening");
    let server = stop.spawn_essential(
        "http server",
        axum::serve(listener, app).with_graceful_shutdown(stop.cancelled()).into_future(),
    );
    // Serves until the first stop; then in-flight requests finish, the
    // router (and with it the last Publisher) is gone: the impression task
    // flushes and ends.
    stop.cancelled().await;
    let drained = stop.drain().await;
    impressions_task.join().await?;
    server.join().await??;
    models.join().await?;
    popular.join().await?;
    if let Some(items) = items {
        items.join().await?;
    }
    drained.into_result()
}
