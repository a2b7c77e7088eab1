//! Redis keys (DESIGN.md §5), built in one place so writers and readers agree.

use crate::id::UserId;

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

    /// `offsets:{topic}:{partition}`: last event offset applied to Redis.
    pub fn offsets(&self, topic: &str, partition: i32) -> String {
        format!("{}offsets:{}:{}", self.prefix, topic, partition)
    }

    /// `popular`: the global popular list (JSON).
    pub fn popular(&self) -> String {
        format!("{}popular", self.prefix)
    }

    /// `popular:cat:{cat}`: the popular list of one category (JSON).
    pub fn popular_category(&self, category: u64) -> String {
        format!("{}popular:cat:{}", self.prefix, category)
    }

    /// `model:current`: the served model version.
    pub fn model_current(&self) -> String {
        format!("{}model:current", self.prefix)
    }

    /// `stats:{variant}:{model_version}`: the tracking counters of one A/B arm
    /// and model version (a hash of impressions, clicks, carts, purchases, revenue).
    pub fn stats(&self, variant: &str, model_version: &str) -> String {
        format!("{}stats:{}:{}", self.prefix, variant, model_version)
    }
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
        assert_eq!(k.stats("als", "v1"), "recsys:stats:als:v1");
        assert_eq!(RedisKeys::new("t42:").recs(&u), "t42:recs:257597");
    }
}
