//! The HTTP API (docs/design.md §8): recommendations with their fallbacks and A/B
//! arms, similar items, popular items, stats, health, readiness, metrics and
//! the OpenAPI document.

use std::borrow::Cow;
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::error_handling::HandleErrorLayer;
use axum::extract::rejection::PathRejection;
use axum::extract::{MatchedPath, Path, RawQuery, Request, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use redis::aio::ConnectionManager;
use rustc_hash::{FxHashMap, FxHashSet};
use schemas::{Impression, ItemId, ModelVersion, RecId, RecItem, RecsList, RedisKeys, Source, UserId, Variant};
use serde::Serialize;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::{BoxError, ServiceBuilder};
use utoipa::{OpenApi, ToSchema};

use crate::catalog::{Catalog, CatalogHandle, IdList};
use crate::config::{ServingConfig, MAX_K};
use crate::error::{ApiError, ErrorBody};
use crate::impressions::Publisher;
use crate::metrics::Metrics;
use crate::stats::{self, Interval};

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

/// Shared by every request.
#[derive(Clone)]
pub struct AppState {
    pub inner: Arc<Inner>,
}

/// See [`AppState`].
pub struct Inner {
    pub cfg: ServingConfig,
    pub keys: RedisKeys,
    pub redis: ConnectionManager,
    pub catalog: CatalogHandle,
    pub overrides: ArcSwap<Overrides>,
    /// The live popularity rankings, re-read in the background ([`crate::live`]).
    pub live: ArcSwap<crate::live::LiveRankings>,
    /// `[popularity]`: which rankings exist and which one answers without a model.
    pub popularity: schemas::PopularityConfig,
    pub publisher: Publisher,
    pub metrics: Metrics,
    /// The admin routes' token check and what they act on.
    pub admin: Admin,
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
        redis: ConnectionManager,
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
                live: ArcSwap::from_pointee(crate::live::LiveRankings::default()),
                popularity: schemas::PopularityConfig::default(),
                publisher,
                metrics,
                admin: Admin::default(),
                rec_prefix: format!("r{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff),
                rec_counter: AtomicU64::new(0),
            }),
        }
    }
}

impl AppState {
    /// Turns the admin routes on (call before the state is shared).
    pub fn with_admin(mut self, admin: Admin) -> AppState {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.admin = admin,
            None => panic!("AppState::with_admin called after the state was shared"),
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
    fn rec_id(&self) -> RecId {
        let n = self.rec_counter.fetch_add(1, Ordering::Relaxed);
        let text = format!("{}-{n:x}", self.rec_prefix);
        RecId::parse(&text).unwrap_or_else(|_| unreachable_rec_id())
    }

    /// The global popular list: Redis's when present, else the model's, else
    /// (no model yet) the live ranking of `[popularity] fallback_window`.
    fn popular(&self, cat: Option<&Catalog>) -> Option<PopList> {
        self.model_popular(cat).or_else(|| self.live_list(self.popularity.fallback_window.as_str()))
    }

    /// The global popular list of the model: Redis's when present, else the served model's.
    fn model_popular(&self, cat: Option<&Catalog>) -> Option<PopList> {
        if let Some(p) = &self.overrides.load().global {
            return Some(p.clone());
        }
        cat.map(|c| PopList { model: c.version.clone(), items: c.popular.clone() })
    }

    /// The live ranking of one window, as last read.
    fn live_list(&self, window: &str) -> Option<PopList> {
        self.live.load().lists.get(window).cloned()
    }

    /// Publishes what `/similar` or `/popular` showed to `user` (in the
    /// user's sticky arm, so `/v1/stats` counts it there); without a user
    /// there is nobody to attribute later events to, which is counted.
    fn impression(
        &self,
        user: Option<UserId>,
        route: &'static str,
        rec_id: &RecId,
        items: &[ScoredItem],
        model: &ModelVersion,
        source: Source,
    ) {
        let Some(user) = user else {
            self.metrics.impressions_anonymous.with_label_values(&[route]).inc();
            return;
        };
        let variant = variant_of(&self.cfg.ab_salt, user.as_str(), self.cfg.treatment_percent);
        self.publish_impression(user, variant, rec_id, items, model, source);
    }

    /// Queues the impression of one answer (never waits on Kafka).
    fn publish_impression(
        &self,
        user: UserId,
        variant: Variant,
        rec_id: &RecId,
        items: &[ScoredItem],
        model: &ModelVersion,
        source: Source,
    ) {
        self.publisher.publish(Impression {
            rec_id: rec_id.clone(),
            ts: now_ms(),
            user_id: user,
            items: items.iter().map(|i| i.item_id.clone()).collect(),
            variant,
            model_version: model.clone(),
            source,
        });
    }

    fn popular_of(&self, cat: Option<&Catalog>, category: u64) -> Option<PopList> {
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

/// A/B arm: `fnv1a64(salt ‖ 0xff ‖ user_id) % 100 < treatment_percent` → `als`.
/// Sticky per user and the same in every instance (no process-random seed).
pub fn variant_of(salt: &str, user: &str, treatment_percent: u8) -> Variant {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in salt.bytes().chain(std::iter::once(0xff)).chain(user.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    if h % 100 < u64::from(treatment_percent) {
        Variant::Als
    } else {
        Variant::Popular
    }
}

/// One recommended item.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, ToSchema)]
pub struct ScoredItem {
    #[schema(value_type = String)]
    pub item_id: ItemId,
    pub score: f32,
}

impl From<RecItem> for ScoredItem {
    fn from(r: RecItem) -> Self {
        ScoredItem { item_id: r.item_id, score: r.score }
    }
}

/// `GET /v1/recommendations/{user_id}`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct RecommendationsResponse {
    pub user_id: String,
    /// Echo it on the events that follow (attribution).
    pub rec_id: String,
    /// A/B arm: `als` (treatment) or `popular` (control).
    pub variant: String,
    /// The model the list comes from; `live-popular` for a live popularity
    /// ranking (before the first model).
    pub model_version: String,
    /// `personal`, `category_popular` or `popular`.
    pub source: String,
    /// True when Redis failed and the list came from memory.
    pub degraded: bool,
    pub items: Vec<ScoredItem>,
}

/// `GET /v1/items/{item_id}/similar`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct SimilarResponse {
    pub item_id: String,
    pub rec_id: String,
    pub model_version: String,
    /// Cosine similarity of item factors.
    pub items: Vec<ScoredItem>,
}

/// `GET /v1/popular`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct PopularResponse {
    pub rec_id: String,
    /// The model the list belongs to; `live-popular` for a live ranking.
    pub model_version: String,
    /// Where the list came from: `model` (the trained model's popular list) or
    /// the name of a live ranking (e.g. `1h`, `24h`).
    pub window: String,
    pub category: Option<u64>,
    /// A live ranking's scores are decayed event counts (weighted by kind).
    pub items: Vec<ScoredItem>,
}

/// One A/B arm and model version in `GET /v1/stats`. Rates are shares of
/// impressions (each impression counts at most once per outcome), with 95 %
/// Wilson score intervals.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, ToSchema)]
pub struct ArmStats {
    pub variant: String,
    pub model_version: String,
    pub impressions: u64,
    /// Impressions with a click.
    pub clicks: u64,
    /// Impressions with an add-to-cart.
    pub carts: u64,
    /// Impressions with a purchase.
    pub purchases: u64,
    /// Revenue of the attributed transactions.
    pub revenue: f64,
    /// clicks / impressions (null without impressions).
    pub ctr: Option<f64>,
    /// 95 % Wilson interval of `ctr`.
    pub ctr_ci95: Option<Interval>,
    /// carts / impressions.
    pub add_to_cart_rate: Option<f64>,
    /// 95 % Wilson interval of `add_to_cart_rate`.
    pub add_to_cart_rate_ci95: Option<Interval>,
    /// purchases / impressions.
    pub conversion_rate: Option<f64>,
    /// 95 % Wilson interval of `conversion_rate`.
    pub conversion_rate_ci95: Option<Interval>,
    /// revenue / impressions.
    pub revenue_per_impression: Option<f64>,
}

impl ArmStats {
    /// The rates and intervals of raw counters.
    pub fn new(
        variant: Variant,
        model_version: &ModelVersion,
        impressions: u64,
        clicks: u64,
        carts: u64,
        purchases: u64,
        revenue: f64,
    ) -> ArmStats {
        let rate = |n: u64| (impressions > 0).then(|| n as f64 / impressions as f64);
        let ci = |n: u64| stats::wilson(n, impressions, stats::Z95);
        ArmStats {
            variant: variant.as_str().to_owned(),
            model_version: model_version.to_string(),
            impressions,
            clicks,
            carts,
            purchases,
            revenue,
            ctr: rate(clicks),
            ctr_ci95: ci(clicks),
            add_to_cart_rate: rate(carts),
            add_to_cart_rate_ci95: ci(carts),
            conversion_rate: rate(purchases),
            conversion_rate_ci95: ci(purchases),
            revenue_per_impression: (impressions > 0).then(|| revenue / impressions as f64),
        }
    }
}

/// Treatment (`als`) against control (`popular`) on one rate.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, ToSchema)]
pub struct Comparison {
    /// The model version both arms were served under; null = every version
    /// pooled per arm.
    pub model_version: Option<String>,
    /// `ctr`, `add_to_cart_rate` or `conversion_rate`.
    pub metric: String,
    pub control_impressions: u64,
    pub treatment_impressions: u64,
    pub control_rate: f64,
    pub treatment_rate: f64,
    /// (treatment − control) / control; null when the control rate is 0.
    pub relative_lift: Option<f64>,
    /// Pooled two-proportion z statistic (positive: treatment higher); null
    /// when undefined (both rates 0, or both 1).
    pub z: Option<f64>,
    /// Two-sided p-value of the z-test.
    pub p_value: Option<f64>,
}

/// `GET /v1/stats`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct StatsResponse {
    /// Every arm and model version with counters, by variant then version.
    pub arms: Vec<ArmStats>,
    /// Treatment against control per model version served in both arms, then
    /// pooled over versions (`model_version` null), for each of the three rates.
    pub comparisons: Vec<Comparison>,
}

/// The comparisons of [`StatsResponse`].
pub fn compare_arms(arms: &[ArmStats]) -> Vec<Comparison> {
    type Rates = [u64; 4]; // impressions, clicks, carts, purchases
    let mut by_version: std::collections::BTreeMap<&str, [Option<Rates>; 2]> = Default::default();
    let mut pooled: [Rates; 2] = [[0; 4]; 2];
    for a in arms {
        let side = match a.variant.parse::<Variant>() {
            Ok(Variant::Popular) => 0,
            Ok(Variant::Als) => 1,
            Err(_) => continue,
        };
        let r = [a.impressions, a.clicks, a.carts, a.purchases];
        by_version.entry(a.model_version.as_str()).or_default()[side] = Some(r);
        for (p, v) in pooled[side].iter_mut().zip(r) {
            *p += v;
        }
    }
    let mut out = Vec::new();
    let mut push = |version: Option<&str>, c: Rates, t: Rates| {
        if c[0] == 0 || t[0] == 0 {
            return;
        }
        for (i, metric) in [(1, "ctr"), (2, "add_to_cart_rate"), (3, "conversion_rate")] {
            let (cr, tr) = (c[i] as f64 / c[0] as f64, t[i] as f64 / t[0] as f64);
            let test = stats::two_proportion_z(c[i], c[0], t[i], t[0]);
            out.push(Comparison {
                model_version: version.map(str::to_owned),
                metric: metric.to_owned(),
                control_impressions: c[0],
                treatment_impressions: t[0],
                control_rate: cr,
                treatment_rate: tr,
                relative_lift: stats::relative_lift(cr, tr),
                z: test.map(|t| t.z),
                p_value: test.map(|t| t.p_value),
            });
        }
    };
    for (v, [c, t]) in &by_version {
        if let (Some(c), Some(t)) = (c, t) {
            push(Some(v), *c, *t);
        }
    }
    push(None, pooled[0], pooled[1]);
    out
}

/// `GET /ready`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct ReadyResponse {
    pub ready: bool,
    pub redis: bool,
    pub model: Option<String>,
    /// The live ranking that answers while no model exists has been read.
    pub live_popular: bool,
}

/// The route-level `source` label of a response (for the request counter).
#[derive(Debug, Clone, Copy)]
struct SourceLabel(&'static str);

/// The whole application. The `/v1/*` routes get the request timeout and the
/// concurrency limit (excess requests are shed at once with 503 and
/// `Retry-After`); health, readiness and metrics stay responsive.
pub fn router(state: AppState) -> Router {
    router_with_routes(state, Router::new())
}

/// [`router`] with `extra` routes behind the same layers, for tests that need
/// a handler no production router has (one that panics); production code
/// passes none. A request id and a span wrap everything; a handler's panic is
/// answered 500 inside the layer that records status codes.
pub fn router_with_routes(state: AppState, extra: Router<AppState>) -> Router {
    let cfg = &state.inner.cfg;
    let (timeout_ms, retry_after_s) = (cfg.request_timeout_ms, cfg.retry_after_s);
    let guarded = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(move |e: BoxError| async move { middleware_error(e, timeout_ms, retry_after_s) }))
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::new(cfg.concurrency_limit))
        .timeout(cfg.request_timeout());
    let metrics = state.inner.metrics.clone();
    let v1 = Router::new()
        .route("/v1/recommendations/{user_id}", get(recommendations))
        .route("/v1/items/{item_id}/similar", get(similar))
        .route("/v1/popular", get(popular))
        .route("/v1/stats", get(stats))
        .route_layer(guarded);
    let app = Router::new()
        .merge(v1)
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(render_metrics))
        .route("/openapi.json", get(openapi_json))
        .route("/admin/v1/reload", post(admin_reload))
        .merge(extra)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(common::http::catch_panic())
        .layer(middleware::from_fn_with_state(metrics, track))
        .with_state(state);
    common::http::traced(app)
}

fn middleware_error(e: BoxError, timeout_ms: u64, retry_after_s: u64) -> ApiError {
    if e.is::<tower::timeout::error::Elapsed>() {
        ApiError::Timeout(timeout_ms)
    } else if e.is::<tower::load_shed::error::Overloaded>() {
        ApiError::Overloaded { retry_after_s }
    } else {
        ApiError::Internal(e.to_string())
    }
}

/// Records every response under its route template (never a raw path).
async fn track(State(metrics): State<Metrics>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    // MatchedPath holds an Arc<str>: cloning it costs no allocation per request.
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", |m| m.as_str());
    let resp = next.run(req).await;
    let status = resp.status();
    let source = resp.extensions().get::<SourceLabel>().map_or("none", |s| s.0);
    metrics.request_duration.with_label_values(&[route, status.as_str()]).observe(start.elapsed().as_secs_f64());
    metrics.requests.with_label_values(&[route, status.as_str(), source]).inc();
    resp
}

fn query_param<'a>(q: &'a Option<String>, name: &str) -> Option<Cow<'a, str>> {
    form_urlencoded::parse(q.as_deref()?.as_bytes()).find(|(n, _)| n == name).map(|(_, v)| v)
}

fn shorten(s: &str) -> String {
    s.chars().take(80).collect()
}

/// `k` in 1..=100, the configured default when absent.
fn parse_k(q: &Option<String>, default: usize) -> Result<usize, ApiError> {
    match query_param(q, "k") {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(k) if (1..=MAX_K).contains(&k) => Ok(k),
            _ => Err(ApiError::InvalidParameter("k", format!("must be an integer in 1..=100, got {:?}", shorten(&v)))),
        },
    }
}

/// The optional `user_id` query parameter of `/similar` and `/popular`.
fn query_user(q: &Option<String>) -> Result<Option<UserId>, ApiError> {
    query_param(q, "user_id")
        .map(|u| UserId::parse(&u).map_err(|e| ApiError::InvalidParameter("user_id", e.to_string())))
        .transpose()
}

fn path_id(p: Result<Path<String>, PathRejection>, name: &'static str) -> Result<String, ApiError> {
    p.map(|Path(s)| s).map_err(|e| ApiError::InvalidParameter(name, e.body_text()))
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One history entry `views,carts,purchases,last_ts` (what the updater writes).
fn parse_hist(v: &str) -> Option<[u64; 3]> {
    let mut it = v.split(',');
    let mut out = [0u64; 3];
    for o in &mut out {
        *o = it.next()?.parse().ok()?;
    }
    Some(out)
}

/// `recs:{user}` read lazily: ids are borrowed from the reply (no string per
/// item), and once `k` items passed the filter the rest of the list is not
/// read at all when the list is in the updater's canonical form (`model`
/// before `items`, ending in `}]}`: a value cut short fails that check and
/// gets the strict reading); otherwise the rest is skipped over and checked.
/// A list whose ids need JSON unescaping (no valid id does) goes through the
/// strict [`RecsList`] parser and is refused.
struct CachedList<'a> {
    model: ModelVersion,
    items: Vec<BorrowedItem<'a>>,
}

#[derive(serde::Deserialize)]
struct BorrowedItem<'a> {
    #[serde(borrow)]
    item_id: &'a str,
    score: f32,
}

/// What a reading stopped early (by an error, serde's only way out of a
/// visitor) had found by then.
#[derive(Default)]
struct Found<'a> {
    model: Cell<Option<&'a str>>,
    items: Cell<Option<Vec<BorrowedItem<'a>>>>,
}

/// The message of the deliberate stop; never shown (see [`CachedList::parse`]).
const ENOUGH: &str = "k items found";

/// The first `k` items of the list that `keep` accepts.
struct ItemsSeed<'f, 'a> {
    k: usize,
    keep: &'f dyn Fn(&str) -> bool,
    /// `Some`: stop once `k` items are found and leave them here.
    stop: Option<&'f Found<'a>>,
}

impl<'a> serde::de::DeserializeSeed<'a> for ItemsSeed<'_, 'a> {
    type Value = Vec<BorrowedItem<'a>>;
    fn deserialize<D: serde::Deserializer<'a>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'a> serde::de::Visitor<'a> for ItemsSeed<'_, 'a> {
    type Value = Vec<BorrowedItem<'a>>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of {item_id, score}")
    }
    fn visit_seq<A: serde::de::SeqAccess<'a>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(self.k);
        while out.len() < self.k {
            match seq.next_element::<BorrowedItem<'a>>()? {
                Some(it) if (self.keep)(it.item_id) => out.push(it),
                Some(_) => {}
                None => return Ok(out),
            }
        }
        if let Some(found) = self.stop {
            found.items.set(Some(out));
            return Err(serde::de::Error::custom(ENOUGH));
        }
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(out)
    }
}

/// The top-level object `{"model", "updated_ms", "items"}`.
struct ListVisitor<'f, 'a>(ItemsSeed<'f, 'a>);

impl<'a> serde::de::Visitor<'a> for ListVisitor<'_, 'a> {
    type Value = (Option<&'a str>, Option<Vec<BorrowedItem<'a>>>);
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a cached list")
    }
    fn visit_map<A: serde::de::MapAccess<'a>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut model, mut items) = (None, None);
        let mut seed = Some(self.0);
        while let Some(key) = map.next_key::<&'a str>()? {
            match (key, seed.take()) {
                ("model", s) => {
                    let m = map.next_value::<&'a str>()?;
                    if let Some(found) = s.as_ref().and_then(|s| s.stop) {
                        found.model.set(Some(m));
                    }
                    model = Some(m);
                    seed = s;
                }
                ("items", Some(s)) => items = Some(map.next_value_seed(s)?),
                (_, s) => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    seed = s;
                }
            }
        }
        Ok((model, items))
    }
}

impl<'a> CachedList<'a> {
    fn parse(bytes: &'a [u8], k: usize, keep: &dyn Fn(&str) -> bool) -> Result<CachedList<'a>, String> {
        use serde::Deserializer;
        let found = Found::default();
        // Stopping early is safe only when what is not read is known to be
        // whole: the writer's form ends with the last item, the array and
        // the object; a value cut short anywhere does not.
        let canonical = bytes.trim_ascii_end().ends_with(b"}]}");
        let seed = ItemsSeed { k, keep, stop: canonical.then_some(&found) };
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let parsed = de.deserialize_map(ListVisitor(seed)).and_then(|v| de.end().map(|()| v));
        let parsed = match (parsed, found.model.take(), found.items.take()) {
            // Stopped once k items were found, the model already read.
            (Err(_), Some(model), Some(items)) => Ok((Some(model), Some(items))),
            // Stopped before the model was read (not the writer's order):
            // read it all.
            (Err(_), None, Some(_)) => {
                let mut de = serde_json::Deserializer::from_slice(bytes);
                de.deserialize_map(ListVisitor(ItemsSeed { k, keep, stop: None })).and_then(|v| de.end().map(|()| v))
            }
            (parsed, _, _) => parsed,
        };
        match parsed {
            Ok((Some(model), Some(items))) => {
                Ok(CachedList { model: ModelVersion::parse(model).map_err(|e| e.to_string())?, items })
            }
            Ok(_) => Err("a cached list needs model and items".into()),
            // Escaped strings cannot be borrowed: the strict parser decides.
            Err(_) => RecsList::parse_json(bytes).map_err(|e| e.to_string()).and(Err("ids need unescaping".into())),
        }
    }
}

/// Where a recommendation came from, and its list.
struct Answer {
    source: Source,
    model: ModelVersion,
    items: Vec<ScoredItem>,
    degraded: bool,
}

#[utoipa::path(
    get,
    path = "/v1/recommendations/{user_id}",
    params(
        ("user_id" = String, Path, description = "1–64 characters [A-Za-z0-9._:-]"),
        ("k" = Option<u32>, Query, description = "How many items, 1..=100 (default serving.default_k)"),
    ),
    responses(
        (status = 200, description = "The user's list (personal, category_popular or popular; degraded when Redis failed). Before the first model, and for a user without a model list while no model popular list exists, popular answers come from the live ranking of `[popularity] fallback_window` with model_version `live-popular`", body = RecommendationsResponse),
        (status = 400, description = "Invalid user_id or k", body = ErrorBody),
        (status = 503, description = "Nothing to answer with: no model and no live popularity ranking yet; overloaded (Retry-After) or timed out", body = ErrorBody),
    )
)]
/// A user's recommendations.
pub async fn recommendations(
    State(s): State<AppState>,
    user: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let s = &s.inner;
    let user = path_id(user, "user_id")?;
    let user = UserId::parse(&user).map_err(|e| ApiError::InvalidParameter("user_id", e.to_string()))?;
    let k = parse_k(&q, s.cfg.default_k)?;
    let variant = variant_of(&s.cfg.ab_salt, user.as_str(), s.cfg.treatment_percent);
    let cat = s.catalog.current();
    let answer = match variant {
        Variant::Popular => popular_answer(s, cat.as_deref(), k, false, &FxHashSet::default())?,
        Variant::Als => treatment(s, cat.as_deref(), &user, k).await?,
    };
    let m = &s.metrics;
    m.recommendations.with_label_values(&[variant.as_str(), answer.source.as_str()]).inc();
    let rec_id = s.rec_id();
    s.publish_impression(user.clone(), variant, &rec_id, &answer.items, &answer.model, answer.source);
    let body = RecommendationsResponse {
        user_id: user.into_string(),
        rec_id: rec_id.into_string(),
        variant: variant.as_str().to_owned(),
        model_version: answer.model.to_string(),
        source: answer.source.as_str().to_owned(),
        degraded: answer.degraded,
        items: answer.items,
    };
    let mut resp = Json(body).into_response();
    resp.extensions_mut().insert(SourceLabel(answer.source.as_str()));
    Ok(resp)
}

/// The global popular list (the model's, or a live ranking while there is
/// none), without `exclude` (the user's purchases).
fn popular_answer(
    s: &Inner,
    cat: Option<&Catalog>,
    k: usize,
    degraded: bool,
    exclude: &FxHashSet<&str>,
) -> Result<Answer, ApiError> {
    let p = s.popular(cat).ok_or(ApiError::NoPopularList)?;
    let items = available(cat, &p.items, exclude, k);
    Ok(Answer { source: Source::Popular, model: p.model, items, degraded })
}

type Reply = (Option<Vec<u8>>, Vec<(String, String)>);

/// The treatment arm: cached list → category popular → global popular;
/// from memory when Redis fails.
async fn treatment(s: &Inner, cat: Option<&Catalog>, user: &UserId, k: usize) -> Result<Answer, ApiError> {
    let mut conn = s.redis.clone();
    let mut pipe = redis::pipe();
    pipe.cmd("GET").arg(s.keys.recs(user)).cmd("HGETALL").arg(s.keys.hist(user));
    let reply: Reply = match tokio::time::timeout(s.cfg.redis_timeout(), pipe.query_async::<Reply>(&mut conn)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            s.metrics.redis_errors.with_label_values(&["recommendations"]).inc();
            s.metrics.degraded.with_label_values(&["error"]).inc();
            tracing::debug!(error = %e, "redis read failed; serving popular from memory");
            return popular_answer(s, cat, k, true, &FxHashSet::default());
        }
        Err(_) => {
            s.metrics.degraded.with_label_values(&["timeout"]).inc();
            return popular_answer(s, cat, k, true, &FxHashSet::default());
        }
    };
    let (recs, hist) = reply;
    let m = &s.metrics;
    let entries: Vec<(&str, [u64; 3])> =
        hist.iter().filter_map(|(item, v)| parse_hist(v).map(|c| (item.as_str(), c))).collect();
    let purchased: FxHashSet<&str> = entries.iter().filter(|(_, c)| c[2] > 0).map(|(i, _)| *i).collect();

    if let Some(bytes) = recs {
        let unavailable = |id: &str| cat.and_then(|c| c.row(id).map(|r| !c.available[r as usize])).unwrap_or(false);
        let keep = |id: &str| !purchased.contains(id) && !unavailable(id);
        match CachedList::parse(&bytes, k, &keep) {
            Ok(list) => {
                m.cache_lookups.with_label_values(&["hit"]).inc();
                let items: Vec<ScoredItem> = list
                    .items
                    .iter()
                    .filter_map(|r| Some(ScoredItem { item_id: ItemId::parse(r.item_id).ok()?, score: r.score }))
                    .collect();
                if !items.is_empty() {
                    m.users.with_label_values(&["warm"]).inc();
                    return Ok(Answer { source: Source::Personal, model: list.model, items, degraded: false });
                }
            }
            Err(e) => {
                m.redis_errors.with_label_values(&["bad_list"]).inc();
                tracing::warn!(user = %user, error = %e, "unreadable cached list; falling back");
            }
        }
    } else {
        m.cache_lookups.with_label_values(&["miss"]).inc();
    }
    if entries.is_empty() {
        m.users.with_label_values(&["cold"]).inc();
        return popular_answer(s, cat, k, false, &purchased);
    }
    m.users.with_label_values(&["history"]).inc();
    match category_popular(s, cat, &entries, &purchased, k) {
        Some(a) => Ok(a),
        // No model categories (or no model yet): popular, minus the purchases.
        None => popular_answer(s, cat, k, false, &purchased),
    }
}

/// The popular items of the user's most-weighted categories, interleaved, then
/// global popular items to fill `k`; `None` when no category is known.
fn category_popular(
    s: &Inner,
    cat: Option<&Catalog>,
    entries: &[(&str, [u64; 3])],
    purchased: &FxHashSet<&str>,
    k: usize,
) -> Option<Answer> {
    let c = cat?;
    let w = c.weights;
    let mut by_cat: FxHashMap<u64, f32> = FxHashMap::default();
    for (item, n) in entries {
        if let Some(category) = c.row(item).and_then(|r| c.category[r as usize]) {
            *by_cat.entry(category).or_default() +=
                n[0] as f32 * w.view + n[1] as f32 * w.addtocart + n[2] as f32 * w.transaction;
        }
    }
    let mut cats: Vec<(u64, f32)> = by_cat.into_iter().collect();
    cats.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    cats.truncate(s.cfg.history_categories);
    let lists: Vec<PopList> = cats.iter().filter_map(|(id, _)| s.popular_of(Some(c), *id)).collect();
    let first = lists.first()?;
    let model = first.model.clone();
    let mut taken: FxHashSet<ItemId> = FxHashSet::default();
    let mut items = Vec::with_capacity(k);
    let mut cursors = vec![0usize; lists.len()];
    let mut push = |r: &RecItem, items: &mut Vec<ScoredItem>| {
        if !purchased.contains(r.item_id.as_str()) && taken.insert(r.item_id.clone()) {
            items.push(ScoredItem::from(r.clone()));
        }
    };
    // Round robin over the categories, best category first.
    while items.len() < k && lists.iter().zip(&cursors).any(|(l, &c)| c < l.items.len()) {
        for (l, cur) in lists.iter().zip(cursors.iter_mut()) {
            if items.len() >= k {
                break;
            }
            if let Some(r) = l.items.get(*cur) {
                *cur += 1;
                push(r, &mut items);
            }
        }
    }
    if items.len() < k {
        if let Some(p) = s.popular(Some(c)) {
            for r in p.items.iter() {
                if items.len() >= k {
                    break;
                }
                push(r, &mut items);
            }
        }
    }
    Some(Answer { source: Source::CategoryPopular, model, items, degraded: false })
}

#[utoipa::path(
    get,
    path = "/v1/items/{item_id}/similar",
    params(
        ("item_id" = String, Path, description = "1–64 characters [A-Za-z0-9._:-]"),
        ("k" = Option<u32>, Query, description = "How many items, 1..=100"),
        ("user_id" = Option<String>, Query, description = "Who is shown the list: with it an impression is published (attribution, /v1/stats); without it none is"),
    ),
    responses(
        (status = 200, description = "Nearest items by cosine of item factors", body = SimilarResponse),
        (status = 400, description = "Invalid item_id or k", body = ErrorBody),
        (status = 404, description = "Item unknown to the served model", body = ErrorBody),
        (status = 503, description = "No model, or its neighbours are still being computed", body = ErrorBody),
    )
)]
/// The items nearest to an item.
pub async fn similar(
    State(s): State<AppState>,
    item: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Result<Json<SimilarResponse>, ApiError> {
    let s = &s.inner;
    let item = path_id(item, "item_id")?;
    let item = ItemId::parse(&item).map_err(|e| ApiError::InvalidParameter("item_id", e.to_string()))?;
    let k = parse_k(&q, s.cfg.default_k)?;
    let user = query_user(&q)?;
    let cat = s.catalog.current().ok_or(ApiError::ModelUnavailable)?;
    let row = cat.row(item.as_str()).ok_or_else(|| ApiError::ItemNotFound(item.to_string()))?;
    let lists = cat.similar.get().ok_or_else(|| ApiError::SimilarNotReady(cat.version.to_string()))?;
    let items: Vec<ScoredItem> = lists[row as usize]
        .iter()
        .take(k)
        .map(|sc| ScoredItem { item_id: cat.items[sc.item as usize].clone(), score: sc.score })
        .collect();
    let rec_id = s.rec_id();
    s.impression(user, "similar", &rec_id, &items, &cat.version, Source::Similar);
    Ok(Json(SimilarResponse {
        item_id: item.into_string(),
        rec_id: rec_id.into_string(),
        model_version: cat.version.to_string(),
        items,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/popular",
    params(
        ("k" = Option<u32>, Query, description = "How many items, 1..=100"),
        ("category" = Option<u64>, Query, description = "A category id (the model's lists only); absent = all items"),
        ("window" = Option<String>, Query, description = "`model`: the trained model's popular list; a live ranking's name from `[popularity] windows` (`1h`, `24h` by default): what is trending, as decayed event counts. Absent: the model's list, or while no model exists the live ranking of `[popularity] fallback_window`"),
        ("user_id" = Option<String>, Query, description = "Who is shown the list: with it an impression is published (attribution, /v1/stats); without it none is"),
    ),
    responses(
        (status = 200, description = "Popular items: the model's (Redis's list when present, else the served model's) or a live ranking's (model_version `live-popular`)", body = PopularResponse),
        (status = 400, description = "Invalid k, category or window (the detail lists the valid windows), or a category with a live window", body = ErrorBody),
        (status = 404, description = "No list for this category", body = ErrorBody),
        (status = 503, description = "No such list yet: no model (window=model or a category), or no event in the live ranking", body = ErrorBody),
    )
)]
/// Popular items, overall or in one category; trending items of a live window.
pub async fn popular(State(s): State<AppState>, RawQuery(q): RawQuery) -> Result<Json<PopularResponse>, ApiError> {
    let s = &s.inner;
    let k = parse_k(&q, s.cfg.default_k)?;
    let user = query_user(&q)?;
    let category = match query_param(&q, "category") {
        None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            ApiError::InvalidParameter("category", format!("must be a non-negative integer, got {:?}", shorten(&v)))
        })?),
    };
    let window = match query_param(&q, "window") {
        None => None,
        Some(w) if w == schemas::popularity::MODEL_WINDOW => Some(None),
        Some(w) => match s.popularity.window(&w) {
            Some(w) => Some(Some(w.as_str())),
            None => {
                let mut valid = vec![schemas::popularity::MODEL_WINDOW];
                valid.extend(s.popularity.window_names());
                return Err(ApiError::InvalidParameter(
                    "window",
                    format!("unknown window {:?}; valid: {}", shorten(&w), valid.join(", ")),
                ));
            }
        },
    };
    let cat = s.catalog.current();
    let list = match (category, window) {
        (Some(_), Some(Some(w))) => {
            return Err(ApiError::InvalidParameter(
                "category",
                format!("live rankings cover all items; category needs window=model or no window, not {w:?}"),
            ))
        }
        (None, Some(Some(w))) => s.live_list(w).ok_or_else(|| ApiError::PopularNotReady(w.to_owned()))?,
        (None, Some(None)) => s.model_popular(cat.as_deref()).ok_or(ApiError::ModelUnavailable)?,
        (None, None) => s.popular(cat.as_deref()).ok_or(ApiError::NoPopularList)?,
        (Some(c), _) => match s.popular_of(cat.as_deref(), c) {
            Some(l) => l,
            None if cat.is_none() && s.overrides.load().global.is_none() => return Err(ApiError::ModelUnavailable),
            None => return Err(ApiError::CategoryNotFound(c)),
        },
    };
    let items = available(cat.as_deref(), &list.items, &FxHashSet::default(), k);
    let window = match window {
        Some(Some(w)) => w,
        _ if list.model.as_str() == schemas::LIVE_POPULAR_VERSION => s.popularity.fallback_window.as_str(),
        _ => schemas::popularity::MODEL_WINDOW,
    };
    let rec_id = s.rec_id();
    s.impression(user, "popular", &rec_id, &items, &list.model, Source::Popular);
    Ok(Json(PopularResponse {
        rec_id: rec_id.into_string(),
        model_version: list.model.to_string(),
        window: window.to_owned(),
        category,
        items,
    }))
}

/// The first `k` items of `list` that are not known to be unavailable (a live
/// ranking holds whatever had events) and not in `exclude`.
fn available(cat: Option<&Catalog>, list: &[RecItem], exclude: &FxHashSet<&str>, k: usize) -> Vec<ScoredItem> {
    let unavailable = |id: &str| cat.and_then(|c| c.row(id).map(|r| !c.available[r as usize])).unwrap_or(false);
    list.iter()
        .filter(|r| !exclude.contains(r.item_id.as_str()) && !unavailable(r.item_id.as_str()))
        .take(k)
        .map(|r| ScoredItem::from(r.clone()))
        .collect()
}

#[utoipa::path(
    get,
    path = "/v1/stats",
    responses(
        (status = 200, description = "Tracking counters per A/B arm and model version (empty until tracking writes them), rates with 95 % Wilson intervals, treatment vs control lift with two-proportion z-test p-values", body = StatsResponse),
        (status = 503, description = "Redis unavailable", body = ErrorBody),
    )
)]
/// Live impressions, CTR, add-to-cart and conversion rates (95 % Wilson
/// intervals), revenue, revenue per impression, and treatment (`als`) vs
/// control (`popular`) relative lift with two-proportion z-test p-values.
pub async fn stats(State(s): State<AppState>) -> Result<Json<StatsResponse>, ApiError> {
    let s = &s.inner;
    let work = read_stats(s);
    match tokio::time::timeout(s.cfg.stats_timeout(), work).await {
        Ok(Ok(arms)) => {
            let comparisons = compare_arms(&arms);
            Ok(Json(StatsResponse { arms, comparisons }))
        }
        Ok(Err(e)) => {
            s.metrics.redis_errors.with_label_values(&["stats"]).inc();
            Err(ApiError::RedisUnavailable(e.to_string()))
        }
        Err(_) => {
            s.metrics.redis_errors.with_label_values(&["stats"]).inc();
            Err(ApiError::RedisUnavailable(format!("no answer within {} ms", s.cfg.stats_timeout_ms)))
        }
    }
}

async fn read_stats(s: &Inner) -> redis::RedisResult<Vec<ArmStats>> {
    let mut conn = s.redis.clone();
    // The index the tracking script maintains: no SCAN over a keyspace that
    // holds every user's history.
    let members: Vec<String> = redis::cmd("SMEMBERS").arg(s.keys.stats_index()).query_async(&mut conn).await?;
    let mut keys: Vec<(String, (Variant, ModelVersion))> =
        members.into_iter().filter_map(|k| s.keys.parse_stats(&k).map(|p| (k, p))).collect();
    keys.sort_by(|a, b| a.1.cmp(&b.1));
    keys.dedup_by(|a, b| a.0 == b.0);
    let mut pipe = redis::pipe();
    for (k, _) in &keys {
        pipe.cmd("HGETALL").arg(k);
    }
    let hashes: Vec<FxHashMap<String, String>> =
        if keys.is_empty() { Vec::new() } else { pipe.query_async(&mut conn).await? };
    Ok(keys
        .into_iter()
        .zip(hashes)
        // An indexed key whose hash is gone (deleted by an operator) shows nothing.
        .filter(|(_, h)| !h.is_empty())
        .map(|((_, (variant, version)), h)| {
            let int = |f: &str| h.get(f).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            let revenue = h.get("revenue").and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            ArmStats::new(variant, &version, int("impressions"), int("clicks"), int("carts"), int("purchases"), revenue)
        })
        .collect())
}

#[utoipa::path(get, path = "/health", responses((status = 200, description = "The process is alive")))]
/// Alive.
pub async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

#[utoipa::path(
    get,
    path = "/ready",
    responses(
        (status = 200, description = "Redis answers, and a model version is known or the live popularity ranking answers", body = ReadyResponse),
        (status = 503, description = "Redis does not answer, or there is neither a model nor a live ranking yet", body = ReadyResponse),
    )
)]
/// Ready to serve: Redis reachable, and a model version known or (day one,
/// before the first model) the live popularity ranking loaded.
pub async fn ready(State(s): State<AppState>) -> impl IntoResponse {
    let s = &s.inner;
    let mut conn = s.redis.clone();
    let mut pipe = redis::pipe();
    pipe.cmd("PING").cmd("GET").arg(s.keys.model_current());
    let probe = tokio::time::timeout(s.cfg.stats_timeout(), pipe.query_async::<(String, Option<String>)>(&mut conn));
    let (redis_ok, redis_model) = match probe.await {
        Ok(Ok((_, m))) => (true, m),
        _ => (false, None),
    };
    let model = s.catalog.current().map(|c| c.version.to_string()).or(redis_model);
    let live_popular = s.live_list(s.popularity.fallback_window.as_str()).is_some();
    let ready = redis_ok && (model.is_some() || live_popular);
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(ReadyResponse { ready, redis: redis_ok, model, live_popular }))
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text exposition")))]
/// Prometheus metrics.
pub async fn render_metrics(State(s): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.inner.metrics.render())
}

/// The OpenAPI document, generated from the handlers' annotations.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "recsys-serving", description = "Real-time recommendations over Redis (docs/design.md §7–8)"),
    paths(recommendations, similar, popular, stats, health, ready, render_metrics, admin_reload),
    modifiers(&BearerAuth),
    components(schemas(
        ReloadResponse,
        RecommendationsResponse,
        SimilarResponse,
        PopularResponse,
        StatsResponse,
        ArmStats,
        Comparison,
        Interval,
        ScoredItem,
        ReadyResponse,
        ErrorBody
    ))
)]
pub struct ApiDoc;

/// Declares the `bearer` scheme the admin routes name.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

async fn openapi_json() -> Response {
    static DOC: OnceLock<String> = OnceLock::new();
    let doc =
        DOC.get_or_init(|| ApiDoc::openapi().to_pretty_json().unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")));
    ([(header::CONTENT_TYPE, "application/json")], doc.as_str()).into_response()
}

/// `POST /admin/v1/reload`: serve `CURRENT` now (after `recsys-trainer models
/// promote --no-publish`, or when an announcement was missed) and re-read the
/// Redis popular lists. Bearer token required.
#[utoipa::path(
    post,
    path = "/admin/v1/reload",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The served version after the reload, and whether it changed", body = ReloadResponse),
        (status = 401, description = "Missing or wrong bearer token", body = ErrorBody),
        (status = 403, description = "No admin token configured: admin routes are off", body = ErrorBody),
        (status = 409, description = "CURRENT names a version that cannot be served; the old one stays", body = ErrorBody),
    )
)]
async fn admin_reload(
    State(s): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<Json<ReloadResponse>, ApiError> {
    let auth = headers.get(axum::http::header::AUTHORIZATION).map(|v| v.as_bytes());
    if let Err(e) = s.inner.admin.auth.check(auth) {
        s.inner.metrics.admin_requests.with_label_values(&["reload", "refused"]).inc();
        return Err(e.into());
    }
    let r = crate::watch::reload_current(&s.inner.admin.model_root, &s).await;
    let outcome = if r.is_ok() { "ok" } else { "failed" };
    s.inner.metrics.admin_requests.with_label_values(&["reload", outcome]).inc();
    let reloaded = r.map_err(ApiError::ReloadRefused)?;
    let popular_refreshed = crate::watch::refresh_popular(&s).await.is_ok();
    tracing::info!(?reloaded, popular_refreshed, "admin reload");
    let (model_version, changed) = match reloaded {
        crate::watch::Reloaded::Swapped(v) => (Some(v), true),
        crate::watch::Reloaded::Unchanged(v) => (Some(v), false),
        crate::watch::Reloaded::NoModel => (None, false),
    };
    Ok(Json(ReloadResponse { model_version, changed, popular_refreshed }))
}

/// `POST /admin/v1/reload`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct ReloadResponse {
    /// The version served after the reload (null: no `CURRENT` yet).
    pub model_version: Option<String>,
    /// True when the reload swapped the served version.
    pub changed: bool,
    /// False when the Redis popular lists could not be re-read (the old ones stay).
    pub popular_refreshed: bool,
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().chars().take(200).collect())
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(l: &CachedList<'_>) -> Vec<String> {
        l.items.iter().map(|i| i.item_id.to_owned()).collect()
    }

    #[test]
    fn cached_lists_are_read_lazily_and_filtered() {
        let json = br#"{"model":"v3","updated_ms":5,"items":[{"item_id":"a","score":3},{"item_id":"b","score":2},{"item_id":"c","score":1},{"item_id":"d","score":0.5}]}"#;
        let all = |_: &str| true;
        let l = CachedList::parse(json, 2, &all).unwrap();
        assert_eq!((l.model.as_str(), ids(&l)), ("v3", vec!["a".to_owned(), "b".to_owned()]));
        let no_b = |id: &str| id != "b";
        assert_eq!(ids(&CachedList::parse(json, 3, &no_b).unwrap()), ["a", "c", "d"]);
        assert_eq!(ids(&CachedList::parse(json, 10, &all).unwrap()).len(), 4, "short lists end early");
        // Field order does not matter; a broken tail or trailing bytes are refused.
        let reordered = br#"{"items":[{"score":1,"item_id":"x"}],"updated_ms":1,"model":"v1"}"#;
        assert_eq!(ids(&CachedList::parse(reordered, 5, &all).unwrap()), ["x"]);
        let model_last = br#"{"items":[{"item_id":"x","score":2},{"item_id":"y","score":1}],"model":"v2"}"#;
        let l = CachedList::parse(model_last, 1, &all).unwrap();
        assert_eq!((l.model.as_str(), ids(&l)), ("v2", vec!["x".to_owned()]), "stopped early, model read after");
        // The canonical form's tail is not read once k items are found...
        let canonical = br#"{"model":"v1","updated_ms":1,"items":[{"item_id":"a","score":1},{"bad":[}]}"#;
        assert_eq!(ids(&CachedList::parse(canonical, 1, &all).unwrap()), ["a"]);
        // ...but is when the head has fewer than k.
        assert!(CachedList::parse(canonical, 2, &all).is_err());
        assert!(CachedList::parse(br#"{"model":"v1","updated_ms":1,"items":[{"item_id":"a","score":1},{"#, 1, &all)
            .is_err());
        assert!(CachedList::parse(br#"{"model":"v1","updated_ms":1,"items":[]} x"#, 1, &all).is_err());
        assert!(CachedList::parse(br#"{"model":"v1","updated_ms":1}"#, 1, &all).is_err());
        assert!(CachedList::parse(br#"{"model":"../x","updated_ms":1,"items":[]}"#, 1, &all).is_err());
        assert!(CachedList::parse(
            br#"{"model":"v1","updated_ms":1,"items":[{"item_id":"\u0061","score":1}]}"#,
            1,
            &all
        )
        .is_err());
    }

    #[test]
    fn arm_rates_intervals_and_comparisons() {
        let v1 = ModelVersion::parse("v1").unwrap();
        let v2 = ModelVersion::parse("v2").unwrap();
        let als = ArmStats::new(Variant::Als, &v1, 1000, 130, 40, 12, 300.0);
        assert_eq!(als.ctr, Some(0.13));
        assert_eq!(als.revenue_per_impression, Some(0.3));
        let ci = als.ctr_ci95.unwrap();
        assert!(ci.low < 0.13 && 0.13 < ci.high, "{ci:?}");
        let empty = ArmStats::new(Variant::Popular, &v2, 0, 0, 0, 0, 0.0);
        assert_eq!((empty.ctr, empty.ctr_ci95, empty.revenue_per_impression), (None, None, None));
        let arms = vec![
            als,
            ArmStats::new(Variant::Als, &v2, 200, 20, 0, 0, 0.0),
            ArmStats::new(Variant::Popular, &v1, 1000, 100, 40, 0, 0.0),
            empty,
        ];
        let c = compare_arms(&arms);
        // v1 (both arms), then pooled; v2 has no control impressions.
        let keys: Vec<(Option<&str>, &str)> =
            c.iter().map(|c| (c.model_version.as_deref(), c.metric.as_str())).collect();
        assert_eq!(
            keys,
            [
                (Some("v1"), "ctr"),
                (Some("v1"), "add_to_cart_rate"),
                (Some("v1"), "conversion_rate"),
                (None, "ctr"),
                (None, "add_to_cart_rate"),
                (None, "conversion_rate"),
            ]
        );
        // v1 CTR: 130/1000 vs 100/1000 (the hand-computed case of stats.rs).
        assert!((c[0].relative_lift.unwrap() - 0.3).abs() < 1e-12);
        assert!((c[0].z.unwrap() - 2.102_740_6).abs() < 1e-6);
        assert!((c[0].p_value.unwrap() - 0.035_488_5).abs() < 1e-6);
        // Equal cart rates: no lift, p = 1. Control converts nothing: lift undefined, the test is not.
        assert_eq!(c[1].relative_lift, Some(0.0));
        assert!((c[1].p_value.unwrap() - 1.0).abs() < 1e-6);
        assert_eq!(c[2].relative_lift, None);
        assert!(c[2].p_value.unwrap() < 0.001);
        // Pooled: treatment 150 / 1200 against 100 / 1000.
        assert_eq!((c[3].treatment_impressions, c[3].control_impressions), (1200, 1000));
        assert!((c[3].treatment_rate - 0.125).abs() < 1e-12 && (c[3].control_rate - 0.1).abs() < 1e-12);
        assert!(compare_arms(&arms[..2]).is_empty(), "no control arm, nothing to compare");
    }

    #[test]
    fn arms_are_sticky_and_split_by_the_percentage() {
        let als = (0..10_000).filter(|n| variant_of("s", &format!("u{n}"), 30) == Variant::Als).count();
        assert!((2_700..3_300).contains(&als), "{als}");
        assert_eq!(variant_of("s", "u1", 30), variant_of("s", "u1", 30));
        assert!((0..100).all(|n| variant_of("s", &format!("u{n}"), 0) == Variant::Popular));
        assert!((0..100).all(|n| variant_of("s", &format!("u{n}"), 100) == Variant::Als));
    }
}
