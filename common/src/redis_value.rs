//! Readers of raw Redis replies (`redis::Value`), for the Lua scripts whose
//! answers are nested arrays that no `FromRedisValue` impl describes: the
//! updater's apply script and tracking's attribution script; and the error
//! of both stores.

use redis::Value;

/// Redis failed, or answered something this code did not write: the error
/// of the updater's and tracking's stores.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply from Redis: {0}")]
    Reply(String),
    /// `WAIT` ([`crate::redis_conn::RedisConn::wait_replicas`]) came back with
    /// fewer replicas than required: the writes may exist on their master
    /// only, so the step is not done (retried) and no progress moves past it.
    #[error("writes acknowledged by {acked} replica(s), {wanted} required (redis.min_replicas_acked)")]
    NotReplicated { acked: u32, wanted: u32 },
    /// A slot written in this step changed master while the step ran (a
    /// failover): the writes, or what the step read to decide to skip them,
    /// may be on the old master only, so the step is retried on the new one.
    #[error("the master of slot {slot} changed from {before} to {now} during the step (failover); retried")]
    MasterChanged { slot: u16, before: String, now: String },
}

/// An integer reply.
pub fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        _ => None,
    }
}

/// A string reply (bulk or simple); `None` for anything else or bytes that
/// are not UTF-8.
pub fn as_str(v: &Value) -> Option<&str> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// The field/value pairs of an `HGETALL` reply: a flat array under RESP2
/// (and from inside a script), a map under RESP3. `None` when the reply is
/// neither or holds a non-string.
pub fn as_pairs(v: &Value) -> Option<Vec<(&str, &str)>> {
    match v {
        Value::Array(a) => a.chunks_exact(2).map(|c| Some((as_str(&c[0])?, as_str(&c[1])?))).collect(),
        Value::Map(m) => m.iter().map(|(k, v)| Some((as_str(k)?, as_str(v)?))).collect(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ints_strings_and_hash_replies_of_both_protocols() {
        assert_eq!(as_int(&Value::Int(-1)), Some(-1));
        assert_eq!(as_int(&Value::BulkString(b"1".to_vec())), None);
        assert_eq!(as_str(&Value::BulkString(b"a".to_vec())), Some("a"));
        assert_eq!(as_str(&Value::SimpleString("b".into())), Some("b"));
        assert_eq!(as_str(&Value::BulkString(vec![0xff])), None);
        assert_eq!(as_str(&Value::Int(1)), None);
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let flat = Value::Array(vec![bulk("k"), bulk("v"), bulk("k2"), bulk("v2")]);
        assert_eq!(as_pairs(&flat), Some(vec![("k", "v"), ("k2", "v2")]));
        let map = Value::Map(vec![(bulk("k"), bulk("v"))]);
        assert_eq!(as_pairs(&map), Some(vec![("k", "v")]));
        assert_eq!(as_pairs(&Value::Array(vec![bulk("k"), Value::Int(1)])), None);
        assert_eq!(as_pairs(&Value::Int(1)), None);
    }
}
