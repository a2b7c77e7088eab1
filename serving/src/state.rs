//! What every request shares ([`AppState`]): configuration, the Redis
//! connection, the served catalog, the lists the background tasks re-read
//! ([`Overrides`], [`LiveRankings`]), the impression publisher and the metrics,
//! and the lookups of the popular lists the routes answer from.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use common::redis_conn::RedisConn;
use rustc_hash::FxHashMap;
use schemas::{ModelVersion, RecId, RedisKeys};

use crate::catalog::{Catalog, CatalogHandle, IdList};
use crate::config::ServingConfig;
use crate::impressions::Publisher;
use crate::live_catalog::LiveCatalog;
use crate::metrics::Metrics;

/// A popular list and the model version it belongs to.
#[derive(Debug, Clone)]
pub struct PopList {
    pub model: ModelVersion,
    pub items: Arc<IdList>,
}

/// Popular lists found in Redis (`popular`, `popular:cat:{c}`), re-read in the
/// background; they take precedence over the model's own lists.
#[derive(Debug, Default)]
pub struct Overrides {
    pub global: Option<PopList>,
    pub by_category: FxHashMap<u64, PopList>,
}

/// The live rankings read at the last refresh ([`crate::live`]), by window
/// name; a window whose ranking holds nothing yet is absent.
#[derive(Debug, Default)]
pub struct LiveRankings {
    pub lists: FxHashMap<String, PopList>,
}

/// Shared by every request.
#[derive(Clone)]
pub struct AppState {
    pub inner: Arc<Inner>,
}

/// See [`AppState`].
pub struct Inner {
    pub cfg: ServingConfig,
    pub keys: RedisKeys,
    pub redis: RedisConn,
    pub catalog: CatalogHandle,
    pub overrides: ArcSwap<Overrides>,
    /// The live popularity rankings, re-read in the background ([`crate::live`]).
    pub live: ArcSwap<LiveRankings>,
    /// `[popularity]`: which rankings exist and which one answers without a model.
    pub popularity: schemas::PopularityConfig,
    pub publisher: Publisher,
    pub metrics: Metrics,
    /// The admin routes' token check and what they act on.
    pub admin: Admin,
    /// Availability and categories from `recsys.items` ([`crate::live_catalog`]).
    pub live_catalog: Arc<LiveCatalog>,
    rec_prefix: String,
    rec_counter: AtomicU64,
}

/// What the admin routes need.
#[derive(Debug, Clone, Default)]
pub struct Admin {
    /// Bearer-token check (disabled by default: admin routes answer 403).
    pub auth: common::AdminAuth,
    /// The artifacts root whose `CURRENT` a reload reads.
    pub model_root: std::path::PathBuf,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner").field("keys", &self.keys).field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("keys", &self.inner.keys).finish_non_exhaustive()
    }
}

impl AppState {
    pub fn new(
        cfg: ServingConfig,
        keys: RedisKeys,
        redis: RedisConn,
        catalog: CatalogHandle,
        publisher: Publisher,
        metrics: Metrics,
    ) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                cfg,
                keys,
                redis,
                catalog,
                overrides: ArcSwap::from_pointee(Overrides::default()),
                live: ArcSwap::from_pointee(LiveRankings::default()),
                popularity: schemas::PopularityConfig::default(),
                publisher,
                metrics,
                admin: Admin::default(),
                live_catalog: Arc::new(LiveCatalog::new(false)),
                rec_prefix: format!("r{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff),
                rec_counter: AtomicU64::new(0),
            }),
        }
    }

    /// Turns the admin routes on (call before the state is shared).
    pub fn with_admin(mut self, admin: Admin) -> AppState {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.admin = admin,
            None => panic!("AppState::with_admin called after the state was shared"),
        }
        self
    }

    /// Answers within the live catalog `live` (call before the state is shared).
    pub fn with_live_catalog(mut self, live: Arc<LiveCatalog>) -> AppState {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.live_catalog = live,
            None => panic!("AppState::with_live_catalog called after the state was shared"),
        }
        self
    }

    /// Serves the live rankings of `popularity` (call before the state is shared).
    pub fn with_popularity(mut self, popularity: schemas::PopularityConfig) -> AppState {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.popularity = popularity,
            None => panic!("AppState::with_popularity called after the state was shared"),
        }
        self
    }
}

impl Inner {
    /// A fresh response id: this process's random prefix and a counter.
    pub fn rec_id(&self) -> RecId {
        let n = self.rec_counter.fetch_add(1, Ordering::Relaxed);
        let text = format!("{}-{n:x}", self.rec_prefix);
        RecId::parse(&text).unwrap_or_else(|_| unreachable_rec_id())
    }

    /// The global popular list: Redis's when present, else the model's, else
    /// (no model yet) the live ranking of `[popularity] fallback_window`.
    pub fn popular(&self, cat: Option<&Catalog>) -> Option<PopList> {
        self.model_popular(cat).or_else(|| self.live_list(self.popularity.fallback_window.as_str()))
    }

    /// The global popular list of the model: Redis's when present, else the served model's.
    pub fn model_popular(&self, cat: Option<&Catalog>) -> Option<PopList> {
        if let Some(p) = &self.overrides.load().global {
            return Some(p.clone());
        }
        cat.map(|c| PopList { model: c.version.clone(), items: c.popular.clone() })
    }

    /// The live ranking of one window, as last read.
    pub fn live_list(&self, window: &str) -> Option<PopList> {
        self.live.load().lists.get(window).cloned()
    }

    /// The popular list of one category: Redis's when present, else the served model's.
    pub fn popular_of(&self, cat: Option<&Catalog>, category: u64) -> Option<PopList> {
        if let Some(p) = self.overrides.load().by_category.get(&category) {
            return Some(p.clone());
        }
        let c = cat?;
        c.popular_by_category.get(&category).map(|l| PopList { model: c.version.clone(), items: l.clone() })
    }
}

#[cold]
fn unreachable_rec_id() -> RecId {
    // The prefix is hex and the counter hex: always a valid id. Kept total anyway.
    RecId::parse("r").unwrap_or_else(|_| unreachable!("\"r\" is a valid id"))
}
