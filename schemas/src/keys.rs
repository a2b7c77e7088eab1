//! Redis keys (docs/design.md §5), built in one place so writers and readers agree.
//!
//! | key | value |
//! | --- | --- |
//! | `recs:{user}` | JSON `{"model", "updated_ms", "items": [{"item_id","score"}]}`, with a TTL |
//! | `hist:{user}` | the user's (item → weight) history used for fold-in, capped |
//! | `offsets:{topic}:{partition}` | last event offset applied to Redis, written in the same MULTI/EXEC as the histories |
//! | `item_users:{item}` | users with events on an item the served model does not know |
//! | `new_items:{model_version}` | factors of items folded in against that version |
//! | `popular`, `popular:cat:{cat}` | JSON top lists |
//! | `trending:{window}` | sorted set item → forward-decayed event weight (see [`crate::popularity`]), bounded, written in the apply step |
//! | `trending_landmarks` | hash window → landmark time (epoch ms) of that ranking's scores |
//! | `model:current` | the served model version |
//! | `model:published` | JSON `{"version", "manifest_sha256", "published_ms"}`: the trainer's last complete publication |
//! | `similar:{item}` | JSON `{"model", "updated_ms", "items": [{"item_id","score"}]}`: the item's nearest items |
//! | `stats:{s}:{variant}:{model_version}` | tracking counters of one A/B arm and model version |
//! | `stats_hourly:{s}:{variant}:{model_version}:{hour}` | the same counters for one hour (epoch hours, by impression time) |
//! | `stats_index:{s}`, `stats_offsets:{s}` | the set of the `stats:` keys; the counters' own per-partition guard |
//! | `track_offsets:{topic}:{partition}` | tracking's resume point and lost-state witness (its own consumer group) |
//! | `track:{user}` | tracking's join state of one user: recent impressions, not-yet-attributed events, its guards |
//!
//! Every variable segment is a validated type ([`UserId`], [`Variant`],
//! [`ModelVersion`]) or a number, so no producer input can smuggle glob
//! characters, spaces or another key's shape into a key; a variable segment that
//! may contain `:` (an id) is always the last one.

use crate::announcement::ModelVersion;
use crate::id::{ItemId, UserId};
use crate::impression::Variant;
use crate::popularity::Window;

/// Builds every Redis key under a configurable prefix (default `recsys:`), so
/// several deployments or test runs can share one Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisKeys {
    prefix: String,
}

impl Default for RedisKeys {
    fn default() -> Self {
        RedisKeys::new("recsys:")
    }
}

impl RedisKeys {
    /// Keys under `prefix` (used verbatim: include the separator).
    pub fn new(prefix: impl Into<String>) -> Self {
        RedisKeys { prefix: prefix.into() }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `recs:{user}`: the user's cached top-N list (JSON).
    pub fn recs(&self, user: &UserId) -> String {
        format!("{}recs:{}", self.prefix, user)
    }

    /// `hist:{user}`: the user's (item → weight) history used for fold-in.
    pub fn hist(&self, user: &UserId) -> String {
        format!("{}hist:{}", self.prefix, user)
    }

    /// A `SCAN MATCH` pattern for every `hist:{user}` key under this prefix
    /// (glob characters in the prefix escaped): the users with a history.
    pub fn hist_pattern(&self) -> String {
        format!("{}hist:*", escape_glob(&self.prefix))
    }

    /// The user of a key built by [`RedisKeys::hist`], or `None` for any other key.
    pub fn parse_hist(&self, key: &str) -> Option<UserId> {
        let user = key.strip_prefix(self.prefix.as_str())?.strip_prefix("hist:")?;
        UserId::parse(user).ok()
    }

    /// `refold:{version}`: progress of the background pass that gives every
    /// user with a history a list from this model version (hash: `cursor`,
    /// `done`, `users`); `refold:{version}:lock` names the instance running it.
    pub fn refold(&self, model_version: &ModelVersion) -> String {
        format!("{}refold:{}", self.prefix, model_version)
    }

    /// `offsets:{topic}:{partition}`: last event offset applied to Redis.
    pub fn offsets(&self, topic: &str, partition: i32) -> String {
        format!("{}offsets:{}:{}", self.prefix, topic, partition)
    }

    /// `item_users:{item}`: users with events on an item the served model does
    /// not know (the evidence for folding the item in).
    pub fn item_users(&self, item: &ItemId) -> String {
        format!("{}item_users:{}", self.prefix, item)
    }

    /// `new_items:{model_version}`: factors of items folded in against that
    /// model version (hash: item → user count and factors).
    pub fn new_items(&self, model_version: &ModelVersion) -> String {
        format!("{}new_items:{}", self.prefix, model_version)
    }

    /// `popular`: the global popular list (JSON).
    pub fn popular(&self) -> String {
        format!("{}popular", self.prefix)
    }

    /// `popular:cat:{cat}`: the popular list of one category (JSON).
    pub fn popular_category(&self, category: u64) -> String {
        format!("{}popular:cat:{}", self.prefix, category)
    }

    /// `trending:{t}:{window}`: the live popularity ranking of one window, a
    /// sorted set of item → forward-decayed event weight (see
    /// [`crate::popularity`]); kept to a bounded size. Every live-ranking key
    /// carries the hash tag `{t}` (after the prefix), so one Redis Cluster
    /// slot holds them all and one script updates them atomically.
    pub fn trending(&self, window: &Window) -> String {
        format!("{}trending:{{t}}:{}", self.prefix, window)
    }

    /// `trending:{t}:landmarks`: hash of window name → the landmark (epoch ms)
    /// the scores of `trending:{t}:{window}` are relative to.
    pub fn trending_landmarks(&self) -> String {
        format!("{}trending:{{t}}:landmarks", self.prefix)
    }

    /// `trending:{t}:offsets`: hash of `topic:partition` → the last event
    /// offset added to the live rankings (their own exactly-once guard).
    pub fn trending_offsets(&self) -> String {
        format!("{}trending:{{t}}:offsets", self.prefix)
    }

    /// `model:current`: the served model version.
    pub fn model_current(&self) -> String {
        format!("{}model:current", self.prefix)
    }

    /// `similar:{item}`: the item's nearest items by cosine of the model's item
    /// factors (JSON, the `recs:{user}` shape), written by the trainer.
    pub fn similar(&self, item: &ItemId) -> String {
        format!("{}similar:{}", self.prefix, item)
    }

    /// `model:published`: the trainer's last complete publication (JSON).
    pub fn model_published(&self) -> String {
        format!("{}model:published", self.prefix)
    }

    /// A `SCAN MATCH` pattern for every `similar:{item}` key under this prefix.
    pub fn similar_pattern(&self) -> String {
        format!("{}similar:*", self.escaped_prefix())
    }

    /// A `SCAN MATCH` pattern for every `popular:cat:{cat}` key under this prefix.
    pub fn popular_category_pattern(&self) -> String {
        format!("{}popular:cat:*", self.escaped_prefix())
    }

    /// A `SCAN MATCH` pattern for keys under this prefix: the prefix with its
    /// glob characters escaped, then `rest` as given (a glob).
    pub fn pattern(&self, rest: &str) -> String {
        format!("{}{rest}", self.escaped_prefix())
    }

    /// The prefix with glob characters escaped, for `SCAN MATCH`.
    fn escaped_prefix(&self) -> String {
        let mut p = String::with_capacity(self.prefix.len() + 8);
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                p.push('\\');
            }
            p.push(c);
        }
        p
    }

    /// `stats:{s}:{variant}:{model_version}`: the tracking counters of one A/B
    /// arm and model version (a hash of impressions, clicks, carts, purchases,
    /// revenue). `{s}` is a literal Redis Cluster hash tag: every counter key,
    /// [`RedisKeys::stats_index`] and [`RedisKeys::stats_offsets`] live in one
    /// slot, so one script moves them together with their guard.
    pub fn stats(&self, variant: Variant, model_version: &ModelVersion) -> String {
        format!("{}stats:{{s}}:{}:{}", self.prefix, variant.as_str(), model_version)
    }

    /// `stats_hourly:{s}:{variant}:{model_version}:{hour}`: the tracking counters
    /// of one A/B arm and model version for the impressions served in one hour
    /// (`hour` = epoch milliseconds / 3,600,000). Not matched by
    /// [`RedisKeys::stats_pattern`] (`stats_hourly:` is not `stats:`).
    pub fn stats_hourly(&self, variant: Variant, model_version: &ModelVersion, hour: i64) -> String {
        format!("{}stats_hourly:{{s}}:{}:{}:{}", self.prefix, variant.as_str(), model_version, hour)
    }

    /// `stats_offsets:{s}`: hash `topic:partition` → the last offset whose
    /// counter deltas are in the `stats:` hashes (the counters' own
    /// exactly-once guard, in their slot).
    pub fn stats_offsets(&self) -> String {
        format!("{}stats_offsets:{{s}}", self.prefix)
    }

    /// `track:{user}`: the tracking task's join state of one user (recent
    /// impressions with their "already counted" flags, events not attributed
    /// yet), capped and with a TTL.
    pub fn track(&self, user: &UserId) -> String {
        format!("{}track:{}", self.prefix, user)
    }

    /// `track_offsets:{topic}:{partition}`: the last offset of a partition whose
    /// records the tracking task applied completely (moved after the per-user
    /// states and the counters: the resume point and lost-state witness;
    /// separate from the updater's `offsets:` because it is another consumer group).
    pub fn track_offsets(&self, topic: &str, partition: i32) -> String {
        format!("{}track_offsets:{}:{}", self.prefix, topic, partition)
    }

    /// `stats_index:{s}`: a set of every `stats:{s}:{variant}:{model_version}`
    /// key (written with the counters, in their slot), so `GET /v1/stats` reads
    /// them without scanning a keyspace that holds every user's history.
    pub fn stats_index(&self) -> String {
        format!("{}stats_index:{{s}}", self.prefix)
    }

    /// A `SCAN MATCH` pattern for every stats key under this prefix (glob
    /// characters in the prefix are escaped).
    pub fn stats_pattern(&self) -> String {
        format!("{}stats:*", escape_glob(&self.prefix))
    }

    /// The arm and model version of a key built by [`RedisKeys::stats`], or
    /// `None` for any other key.
    pub fn parse_stats(&self, key: &str) -> Option<(Variant, ModelVersion)> {
        let rest = key.strip_prefix(self.prefix.as_str())?.strip_prefix("stats:{s}:")?;
        let (variant, version) = rest.split_once(':')?;
        Some((variant.parse().ok()?, ModelVersion::parse(version).ok()?))
    }
}

/// `s` with the glob characters of `SCAN MATCH` escaped.
fn escape_glob(s: &str) -> String {
    let mut p = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_design() {
        let k = RedisKeys::default();
        let u = UserId::parse("257597").unwrap();
        assert_eq!(k.recs(&u), "recsys:recs:257597");
        assert_eq!(k.hist(&u), "recsys:hist:257597");
        assert_eq!(k.offsets("recsys.events", 3), "recsys:offsets:recsys.events:3");
        assert_eq!(k.popular(), "recsys:popular");
        assert_eq!(k.popular_category(12), "recsys:popular:cat:12");
        assert_eq!(k.model_current(), "recsys:model:current");
        assert_eq!(k.item_users(&ItemId::parse("9").unwrap()), "recsys:item_users:9");
        assert_eq!(k.new_items(&ModelVersion::parse("v2").unwrap()), "recsys:new_items:v2");
        let v1 = ModelVersion::parse("v1").unwrap();
        assert_eq!(k.stats(Variant::Als, &v1), "recsys:stats:{s}:als:v1");
        assert_eq!(k.stats(Variant::Popular, &v1), "recsys:stats:{s}:popular:v1");
        assert_eq!(k.stats_hourly(Variant::Als, &v1, 494_000), "recsys:stats_hourly:{s}:als:v1:494000");
        assert_eq!(k.stats_offsets(), "recsys:stats_offsets:{s}");
        assert_eq!(k.track(&u), "recsys:track:257597");
        assert_eq!(k.track_offsets("recsys.impressions", 2), "recsys:track_offsets:recsys.impressions:2");
        assert_eq!(k.parse_stats(&k.stats_hourly(Variant::Als, &v1, 494_000)), None, "hourly keys are not totals");
        assert_eq!(RedisKeys::new("t42:").recs(&u), "t42:recs:257597");
        assert_eq!(RedisKeys::new("t42:").prefix(), "t42:");
        assert_eq!(k.similar(&ItemId::parse("355908").unwrap()), "recsys:similar:355908");
        assert_eq!(k.model_published(), "recsys:model:published");
        assert_eq!(k.similar_pattern(), "recsys:similar:*");
        assert_eq!(RedisKeys::new("t*1:").popular_category_pattern(), "t\\*1:popular:cat:*");
        assert_eq!(k.trending(&Window::parse("24h").unwrap()), "recsys:trending:{t}:24h");
        assert_eq!(k.trending_landmarks(), "recsys:trending:{t}:landmarks");
        assert_eq!(k.trending_offsets(), "recsys:trending:{t}:offsets");
    }

    #[test]
    fn stats_keys_parse_back() {
        let k = RedisKeys::new("t*1:");
        let v = ModelVersion::parse("2026.11-28_x").unwrap();
        for variant in Variant::ALL {
            assert_eq!(k.parse_stats(&k.stats(variant, &v)), Some((variant, v.clone())));
        }
        assert_eq!(k.stats_pattern(), "t\\*1:stats:*");
        assert_eq!(RedisKeys::default().stats_pattern(), "recsys:stats:*");
        assert_eq!(RedisKeys::default().stats_index(), "recsys:stats_index:{s}");
        assert_eq!(RedisKeys::default().parse_stats(&RedisKeys::default().stats_offsets()), None);
        assert_eq!(RedisKeys::default().parse_stats(&RedisKeys::default().stats_index()), None);
        for other in [
            "t*1:stats:{s}:als",
            "t*1:stats:{s}:ctr:v1",
            "t*1:stats:{s}:als:.x",
            "recsys:stats:{s}:als:v1",
            "t*1:popular",
            // The layout before the `{s}` tag.
            "t*1:stats:als:v1",
        ] {
            assert_eq!(k.parse_stats(other), None, "{other}");
        }
    }

    #[test]
    fn history_keys_parse_back() {
        let k = RedisKeys::new("t[2]:");
        let u = UserId::parse("u-77").unwrap();
        assert_eq!(k.parse_hist(&k.hist(&u)), Some(u));
        assert_eq!(k.hist_pattern(), "t\\[2\\]:hist:*");
        assert_eq!(k.parse_hist("t[2]:recs:u-77"), None);
        assert_eq!(k.parse_hist("other:hist:u-77"), None);
        assert_eq!(k.refold(&ModelVersion::parse("v3").unwrap()), "t[2]:refold:v3");
    }
}
