//! Background work, never on the request path:
//! - the served model's metadata: `CURRENT` at start, then announcements on
//!   `recsys.models` and a periodic look at `CURRENT` (a version that fails
//!   verification is refused; the old one keeps serving); each new version's
//!   item neighbours are computed on a blocking thread;
//! - the Redis `popular` / `popular:cat:{c}` lists and the live rankings
//!   `trending:{window}` ([`crate::live`]), re-read periodically.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Message;
use rustc_hash::FxHashMap;
use schemas::{ModelAnnouncement, RecsList};
use tokio::sync::watch;

use crate::catalog::{Catalog, LoadError};
use crate::http::{AppState, Overrides, PopList};

/// Loads the version `CURRENT` names, if any.
pub async fn load_current(root: &Path) -> Result<Option<Catalog>, LoadError> {
    let root = root.to_owned();
    tokio::task::spawn_blocking(move || {
        let Some(v) = model::artifact::current_version(&root)? else { return Ok(None) };
        Catalog::load(&root.join(v)).map(Some)
    })
    .await
    .unwrap_or_else(|e| Err(LoadError::Unusable { version: "?".into(), reason: e.to_string() }))
}

/// Serves `c`. The first model is served at once and its neighbours follow
/// in the background (`/similar` answers 503 `similar_not_ready` meanwhile);
/// a replacement is served only once its neighbours exist, so a swap never
/// turns a working `/similar` into an error.
pub async fn serve(state: &AppState, c: Catalog) {
    let s = &state.inner;
    let c = Arc::new(c);
    let k = s.cfg.similar_size;
    let compute = {
        let c = c.clone();
        move || {
            let t = std::time::Instant::now();
            c.compute_similar(k);
            tracing::info!(version = %c.version, seconds = t.elapsed().as_secs_f64(), "item neighbours ready");
        }
    };
    if s.catalog.current().is_none() {
        swap_in(state, c);
        // A panic here is logged (by join) and /similar keeps answering
        // similar_not_ready, as when a replacement's neighbours fail below.
        tokio::spawn(common::tasks::join("item neighbours", tokio::task::spawn_blocking(compute)));
    } else {
        if let Err(e) = tokio::task::spawn_blocking(compute).await {
            tracing::error!(error = %e, version = %c.version, "computing item neighbours panicked; serving without them");
        }
        swap_in(state, c);
    }
}

fn swap_in(state: &AppState, c: Arc<Catalog>) {
    let s = &state.inner;
    tracing::info!(version = %c.version, items = c.items.len(), "serving model metadata");
    s.metrics.model_served(c.version.as_str());
    s.catalog.swap(c);
}

/// Where an announced version lives: its announced path when that holds a
/// manifest on this machine, else the version under our own artifacts root.
pub fn resolve(a: &ModelAnnouncement, root: &Path) -> PathBuf {
    let announced = PathBuf::from(&a.path);
    if announced.join("manifest.json").is_file() {
        announced
    } else {
        root.join(a.version.as_str())
    }
}

/// Handles one `recsys.models` message: `Ok(true)` when a new version is served.
pub async fn on_announcement(payload: &[u8], root: &Path, state: &AppState) -> Result<bool, String> {
    let a = ModelAnnouncement::parse_json(payload).map_err(|e| e.to_string())?;
    if let Some(cur) = state.inner.catalog.current() {
        if cur.version == a.version && cur.manifest_sha256 == a.manifest_sha256.as_str() {
            return Ok(false);
        }
    }
    let dir = resolve(&a, root);
    let sha = a.manifest_sha256.to_string();
    let loaded =
        tokio::task::spawn_blocking(move || Catalog::load_announced(&dir, &sha)).await.map_err(|e| e.to_string())?;
    match loaded {
        Ok(c) if c.version != a.version => Err(format!("directory holds {}, announced {}", c.version, a.version)),
        Ok(c) => {
            serve(state, c).await;
            Ok(true)
        }
        Err(e) => Err(format!("model {} refused: {e}", a.version)),
    }
}

/// Follows announcements (when a consumer is given) and `CURRENT` until `stop` turns true.
pub async fn watch_models(
    root: PathBuf,
    poll_every: Duration,
    consumer: Option<StreamConsumer>,
    state: AppState,
    mut stop: watch::Receiver<bool>,
) {
    let mut poll = tokio::time::interval(poll_every);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            m = recv(&consumer) => match m {
                Ok(payload) => {
                    if let Err(reason) = on_announcement(&payload, &root, &state).await {
                        state.inner.metrics.model_loads.with_label_values(&["refused"]).inc();
                        tracing::error!(%reason, "model announcement refused; the served model stays");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "model announcement consumer error");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            },
            _ = poll.tick() => poll_current(&root, &state).await,
        }
    }
    if let Some(c) = consumer {
        c.unsubscribe();
    }
}

async fn recv(c: &Option<StreamConsumer>) -> rdkafka::error::KafkaResult<Vec<u8>> {
    match c {
        Some(c) => c.recv().await.map(|m| m.payload().unwrap_or_default().to_vec()),
        None => std::future::pending().await,
    }
}

/// Serves `CURRENT`'s version if it is not the served one.
pub async fn poll_current(root: &Path, state: &AppState) {
    if let Err(e) = reload_current(root, state).await {
        tracing::error!(error = %e, "CURRENT names a model that cannot be served");
    }
}

/// What a reload found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// `CURRENT` names the served version already.
    Unchanged(String),
    /// This version is served now.
    Swapped(String),
    /// No `CURRENT` yet.
    NoModel,
}

/// Serves `CURRENT`'s version unless it is served already; an unusable
/// version is refused (counted) and the served one stays.
pub async fn reload_current(root: &Path, state: &AppState) -> Result<Reloaded, String> {
    let v = match model::artifact::current_version(root) {
        Ok(Some(v)) => v,
        Ok(None) => return Ok(Reloaded::NoModel),
        Err(e) => return Err(format!("reading {}: {e}", root.display())),
    };
    if state.inner.catalog.current().is_some_and(|c| c.version.as_str() == v) {
        return Ok(Reloaded::Unchanged(v));
    }
    match load_current(root).await {
        Ok(Some(c)) => {
            let version = c.version.to_string();
            serve(state, c).await;
            Ok(Reloaded::Swapped(version))
        }
        Ok(None) => Ok(Reloaded::NoModel),
        Err(e) => {
            state.inner.metrics.model_loads.with_label_values(&["refused"]).inc();
            Err(format!("model {v} refused: {e}"))
        }
    }
}

/// The announcement consumer, subscribed to `recsys.models`.
pub fn announcement_consumer(
    settings: &crate::Settings,
    instance: &str,
) -> rdkafka::error::KafkaResult<StreamConsumer> {
    let c: StreamConsumer = settings.announcement_consumer_config(instance).create()?;
    c.subscribe(&[&settings.kafka.topic(schemas::topics::MODELS)])?;
    Ok(c)
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
/// `stop` turns true.
pub async fn watch_popular(state: AppState, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
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
