//! Background work, never on the request path:
//! - the served model's metadata, followed by [`common::follow`] (`CURRENT`
//!   at start, then announcements on `recsys.models` and a periodic look at
//!   `CURRENT`; a version that fails verification is refused and the old one
//!   keeps serving);
//! - the Redis `popular` / `popular:cat:{c}` lists and the live rankings
//!   `trending:{window}` ([`crate::live`]), re-read periodically.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::follow::{self, Follower};
use rdkafka::consumer::StreamConsumer;
use rustc_hash::FxHashMap;
use schemas::RecsList;

pub use common::follow::Reloaded;

use crate::catalog::Catalog;
use crate::state::{AppState, Overrides, PopList};

/// Serving's side of the model follower ([`common::follow`]): a version's
/// metadata, swapped into the state.
#[derive(Debug, Clone)]
pub struct Models(pub AppState);

impl Follower for Models {
    type Model = Catalog;

    fn current_version(root: &Path) -> Result<Option<String>, String> {
        model::artifact::current_version(root).map_err(|e| e.to_string())
    }

    fn load(dir: &Path) -> Result<Catalog, String> {
        Catalog::load(dir).map_err(|e| e.to_string())
    }

    fn load_announced(dir: &Path, version: &str, manifest_sha256: &str) -> Result<Catalog, String> {
        let c = Catalog::load_announced(dir, manifest_sha256).map_err(|e| e.to_string())?;
        if c.version.as_str() != version {
            return Err(format!("directory holds {}, announced {version}", c.version));
        }
        Ok(c)
    }

    fn version(c: &Catalog) -> String {
        c.version.to_string()
    }

    fn served(&self) -> Option<(String, String)> {
        self.0.inner.catalog.current().map(|c| (c.version.to_string(), c.manifest_sha256.clone()))
    }

    fn install(&self, c: Catalog) -> impl Future<Output = ()> + Send {
        serve(&self.0, c)
    }

    fn refused(&self) {
        self.0.inner.metrics.model_loads.with_label_values(&["refused"]).inc();
    }
}

/// Loads the version `CURRENT` names, if any.
pub async fn load_current(root: &Path) -> Result<Option<Catalog>, String> {
    follow::load_current::<Models>(root).await
}

/// Serves `c` from the next request on (its neighbours are the trainer's
/// `similar:{item}` lists: nothing to compute first).
pub async fn serve(state: &AppState, c: Catalog) {
    let s = &state.inner;
    let c = Arc::new(c);
    tracing::info!(version = %c.version, items = c.items.len(), "serving model metadata");
    s.metrics.model_served(c.version.as_str());
    s.catalog.swap(c);
}

/// Follows announcements (when a consumer is given) and `CURRENT` until `stop` resolves.
pub async fn watch_models(
    root: PathBuf,
    poll_every: Duration,
    consumer: Option<StreamConsumer>,
    state: AppState,
    stop: impl Future<Output = ()>,
) {
    follow::follow(Models(state), root, poll_every, consumer, stop).await;
}

/// Serves `CURRENT`'s version unless it is served already; an unusable
/// version is refused (counted) and the served one stays.
pub async fn reload_current(root: &Path, state: &AppState) -> Result<Reloaded, String> {
    follow::reload_current(&Models(state.clone()), root).await
}

/// The announcement consumer, subscribed to `recsys.models`.
pub fn announcement_consumer(
    settings: &crate::Settings,
    instance: &str,
) -> rdkafka::error::KafkaResult<StreamConsumer> {
    follow::announcement_consumer(
        &settings.announcement_consumer_config(instance),
        &settings.kafka.topic(schemas::topics::MODELS),
    )
}

/// Reads `popular` and `popular:cat:{c}` (for the served model's categories)
/// and the live rankings once and installs what exists; on a Redis failure
/// the previous lists stay.
pub async fn refresh_popular(state: &AppState) -> redis::RedisResult<()> {
    let s = &state.inner;
    let mut conn = s.redis.clone();
    let cats: Vec<u64> =
        s.catalog.current().map(|c| c.popular_by_category.keys().copied().collect()).unwrap_or_default();
    let global: Option<Vec<u8>> = redis::cmd("GET").arg(s.keys.popular()).query_async(&mut conn).await?;
    let mut by_category = FxHashMap::default();
    for chunk in cats.chunks(500) {
        let mut cmd = redis::cmd("MGET");
        for c in chunk {
            cmd.arg(s.keys.popular_category(*c));
        }
        let vals: Vec<Option<Vec<u8>>> = cmd.query_async(&mut conn).await?;
        for (c, v) in chunk.iter().zip(vals) {
            if let Some(l) = v.as_deref().and_then(parse_list) {
                by_category.insert(*c, l);
            }
        }
    }
    let global = global.as_deref().and_then(parse_list);
    s.overrides.store(Arc::new(Overrides { global, by_category }));
    crate::live::refresh(state).await
}

fn parse_list(bytes: &[u8]) -> Option<PopList> {
    match RecsList::parse_json(bytes) {
        Ok(l) => Some(PopList { model: l.model, items: Arc::new(l.items) }),
        Err(e) => {
            tracing::warn!(error = %e, "unreadable popular list in Redis; using the model's");
            None
        }
    }
}

/// Re-reads the Redis popular lists and live rankings every `every` until
/// `stop` resolves.
pub async fn watch_popular(state: AppState, every: Duration, stop: impl Future<Output = ()>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = tick.tick() => {
                let budget = state.inner.cfg.stats_timeout();
                match tokio::time::timeout(budget, refresh_popular(&state)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        state.inner.metrics.redis_errors.with_label_values(&["popular"]).inc();
                        tracing::debug!(error = %e, "popular lists not refreshed");
                    }
                    Err(_) => {
                        state.inner.metrics.redis_errors.with_label_values(&["popular"]).inc();
                    }
                }
            }
        }
    }
}
