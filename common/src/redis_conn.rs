//! The one Redis connection of every process: [`RedisConn`], a single node
//! (`[redis] url`) or a Redis Cluster (`[redis] cluster_nodes`) behind one
//! type, so every caller has one code path for both.
//!
//! Both reconnect by themselves (so recovery after a Redis restart or a
//! failover needs no process restart) and never wait longer than the configured
//! response timeout. In cluster mode every command goes to the master of its
//! key's slot (following MOVED / ASK); a script or MULTI must therefore touch
//! keys of one slot only (docs/design.md §5), while a plain pipeline may mix
//! slots: it is sent as one request per command (concurrent on the multiplexed
//! connections, so still one round trip's worth of waiting). A keyspace walk
//! goes through [`RedisConn::scan_step`] (or [`RedisConn::scan_all`]), which visits every master.
//! A writer that must not move its progress past writes a failover could lose
//! asks [`RedisConn::wait_replicas`] first (`WAIT` on every master it wrote to).

use std::time::Duration;

use futures::future::{try_join_all, BoxFuture, FutureExt};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, RedisFuture, RedisResult, Value};

use crate::config::RedisConfig;
use crate::redis_value::StoreError;

/// A connection to one Redis node or to a Redis Cluster. Cheap to clone: the
/// clones share the multiplexed connections underneath.
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    /// The connection, and the key prefix its replication probes are written
    /// under (see [`RedisConn::wait_replicas`]).
    Cluster(ClusterConnection, std::sync::Arc<str>),
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RedisConn::Single(_) => "RedisConn::Single",
            RedisConn::Cluster(..) => "RedisConn::Cluster",
        })
    }
}

/// Connects now (fails fast when Redis is unreachable at start-up).
pub async fn connect(cfg: &RedisConfig) -> RedisResult<RedisConn> {
    if cfg.is_cluster() {
        let client = cluster_client(cfg)?;
        Ok(RedisConn::Cluster(
            client.get_async_connection_with_config(cluster_config(cfg)).await?,
            cfg.prefix.as_str().into(),
        ))
    } else {
        let client = redis::Client::open(cfg.url.as_str())?;
        Ok(RedisConn::Single(ConnectionManager::new_with_config(client, manager_config(cfg)).await?))
    }
}

/// Connects on first use (for processes that must start while Redis is down).
pub fn connect_lazy(cfg: &RedisConfig) -> RedisResult<RedisConn> {
    if cfg.is_cluster() {
        let client = cluster_client(cfg)?;
        Ok(RedisConn::Cluster(
            client.get_pending_async_connection_with_config(cluster_config(cfg)),
            cfg.prefix.as_str().into(),
        ))
    } else {
        let client = redis::Client::open(cfg.url.as_str())?;
        Ok(RedisConn::Single(ConnectionManager::new_lazy_with_config(client, manager_config(cfg))?))
    }
}

fn manager_config(cfg: &RedisConfig) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(cfg.connect_timeout()))
        .set_response_timeout(Some(cfg.response_timeout()))
        // A handful of quick reconnect attempts per command; the caller's own
        // retry loop (with backoff) covers longer outages.
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(200))
}

fn cluster_client(cfg: &RedisConfig) -> RedisResult<redis::cluster::ClusterClient> {
    ClusterClientBuilder::new(cfg.cluster_nodes.iter().map(String::as_str))
        .connection_timeout(cfg.connect_timeout())
        .response_timeout(cfg.response_timeout())
        // As the single node's: a few quick retries (they also follow MOVED /
        // ASK and a failover's new master), the caller's loop does the rest.
        .retries(2)
        .max_retry_wait(200)
        .build()
}

fn cluster_config(cfg: &RedisConfig) -> ClusterConfig {
    ClusterConfig::new().set_connection_timeout(cfg.connect_timeout()).set_response_timeout(cfg.response_timeout())
}

impl RedisConn {
    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisConn::Cluster(..))
    }

    /// The masters to walk for a keyspace pass, in a stable order (a
    /// cluster's shards by their lowest slot, which a failover does not
    /// change); one entry for a single node.
    pub async fn scan_targets(&mut self) -> RedisResult<Vec<ScanTarget>> {
        let RedisConn::Cluster(c, _) = self else { return Ok(vec![ScanTarget { first_slot: 0, addr: None }]) };
        let reply: Value = c
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?;
        let mut out = parse_cluster_slots(&reply).ok_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "CLUSTER SLOTS: unexpected reply"))
        })?;
        out.sort_by_key(|t| t.first_slot);
        // A master owning several slot ranges appears once, at its lowest.
        let mut seen = std::collections::HashSet::new();
        out.retain(|t| seen.insert(t.addr.clone()));
        Ok(out)
    }

    /// One `SCAN cursor MATCH pattern COUNT count` step on `target`'s node:
    /// (next cursor, keys); 0 = that node is done.
    pub async fn scan_step(
        &mut self,
        target: &ScanTarget,
        cursor: u64,
        pattern: &str,
        count: usize,
    ) -> RedisResult<(u64, Vec<String>)> {
        let cmd = redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(count).clone();
        match (self, &target.addr) {
            (RedisConn::Cluster(c, _), Some((host, port))) => {
                let v = c
                    .route_command(
                        cmd,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host: host.clone(), port: *port }),
                    )
                    .await?;
                Ok(redis::from_redis_value(v)?)
            }
            (conn, _) => cmd.query_async(conn).await,
        }
    }

    /// Every key matching `pattern` on every master (tests, tools; a pass over
    /// a large keyspace steps with [`RedisConn::scan_step`] instead).
    pub async fn scan_all(&mut self, pattern: &str) -> RedisResult<Vec<String>> {
        let mut keys = Vec::new();
        for t in self.scan_targets().await? {
            let mut cursor = 0;
            loop {
                let (next, found) = self.scan_step(&t, cursor, pattern, 1000).await?;
                keys.extend(found);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }
}

impl RedisConn {
    /// `WAIT replicas timeout` on every master holding one of `keys` (on a
    /// single node: on it): blocks until that many of each master's replicas
    /// acknowledged every write this connection sent it before, or until
    /// `timeout`. Returns the fewest replicas any of those masters reported
    /// (`replicas` when `keys` is empty: nothing to wait for); fewer than
    /// `replicas` means some writes may exist on their master only, and a
    /// failover now would lose them.
    ///
    /// What it promises and what not: `WAIT` counts the replicas that
    /// received the writes (in memory, not fsynced). Each master first gets
    /// a probe write on the same connection, so the WAIT covers everything
    /// that master held even when this attempt wrote nothing there; a master
    /// that died since fails the call, and [`RedisConn::require_replicas`]
    /// also fails a step whose slots changed master since it began.
    ///
    /// `since` ([`RedisConn::masters`] before the writes): each slot's WAIT is
    /// sent to the node that was its master then, by address — never to a
    /// successor that took over meanwhile, which would vouch for its own data
    /// instead of the writes (a dead or demoted old master fails the call).
    pub async fn wait_replicas<'k>(
        &mut self,
        keys: impl IntoIterator<Item = &'k str>,
        replicas: u32,
        timeout: Duration,
        since: &Masters,
    ) -> RedisResult<u32> {
        let wait = redis::cmd("WAIT").arg(replicas).arg(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)).clone();
        let mut slots: Vec<u16> = keys.into_iter().map(|k| key_slot(k.as_bytes())).collect();
        if slots.is_empty() {
            return Ok(replicas);
        }
        let (c, prefix) = match self {
            // One node: one connection carried the writes and carries the WAIT
            // (a reconnect in between is the case the cluster's probe covers).
            RedisConn::Single(c) => {
                let n: i64 = wait.query_async(c).await?;
                return Ok(u32::try_from(n.max(0)).unwrap_or(u32::MAX));
            }
            RedisConn::Cluster(c, prefix) => (c, prefix.clone()),
        };
        slots.sort_unstable();
        slots.dedup();
        // One touched slot per master of `since` (where the WAIT goes): a
        // WAIT there stands for all of them, since replication is one stream
        // per master.
        let mut masters = std::collections::HashSet::new();
        let mut asked: Vec<u16> = Vec::new();
        for &slot in &slots {
            match since.master_of(slot) {
                Some(m) if !masters.insert(m) => {}
                // A new master, or a slot no master serves (the cluster is
                // being changed): asked by slot, the client routes it or fails.
                _ => asked.push(slot),
            }
        }
        // WAIT counts the replicas holding the asking connection's last
        // write. Retried work may write nothing to a master (its guards skip
        // what is there), and the connection may be a new one since the
        // writes (a reconnect, a failover): WAIT would then pass at once
        // without saying anything about them. So each master first gets a
        // write of its own on the same connection, in one pipeline with the
        // WAIT: a replica at that offset holds everything the master had.
        let asks = asked.into_iter().map(|slot| {
            let (mut c, wait, probe) = (c.clone(), wait.clone(), probe_key(&prefix, slot));
            let route = match since.master_of(slot) {
                Some((host, port)) => SingleNodeRoutingInfo::ByAddress { host: host.clone(), port: *port },
                None => SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master)),
            };
            async move {
                let mut p = redis::pipe();
                p.cmd("SET").arg(&probe).arg(std::process::id()).arg("PX").arg(60_000);
                p.add_command(wait);
                let v = c.route_pipeline(p, 1, 1, route).await?;
                let n: i64 = redis::from_redis_value(v.into_iter().next().unwrap_or(Value::Nil))?;
                Ok::<u32, redis::RedisError>(u32::try_from(n.max(0)).unwrap_or(u32::MAX))
            }
        });
        Ok(try_join_all(asks).await?.into_iter().min().unwrap_or(replicas))
    }

    /// Which node serves each slot now (`CLUSTER SLOTS`); empty on one node.
    /// Taken before a step's first write, it is what
    /// [`RedisConn::require_replicas`] checks the step's slots against.
    pub async fn masters(&mut self) -> RedisResult<Masters> {
        let RedisConn::Cluster(c, _) = self else { return Ok(Masters::default()) };
        let reply: Value = c
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?;
        parse_slot_ranges(&reply).map(Masters).ok_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "CLUSTER SLOTS: unexpected reply"))
        })
    }

    /// [`RedisConn::wait_replicas`] for `wanted` replicas (0: nothing to do);
    /// fewer by the timeout is [`StoreError::NotReplicated`], and the caller
    /// must not move its progress past the writes. On a cluster, a slot of
    /// `keys` whose master is no longer the one in `since` (taken before the
    /// step's first write) is [`StoreError::MasterChanged`]: a failover in
    /// between may have lost the step's writes, or the state the step read to
    /// skip them, while the new master's replicas (the old master rejoined,
    /// say) acknowledge everything it has — so WAIT alone cannot tell.
    pub async fn require_replicas<'k>(
        &mut self,
        keys: impl IntoIterator<Item = &'k str>,
        wanted: u32,
        timeout: Duration,
        since: &Masters,
    ) -> Result<(), StoreError> {
        if wanted == 0 {
            return Ok(());
        }
        let keys: Vec<&str> = keys.into_iter().collect();
        let acked = self.wait_replicas(keys.iter().copied(), wanted, timeout, since).await?;
        if self.is_cluster() {
            let now = self.masters().await?;
            let mut slots: Vec<u16> = keys.iter().map(|k| key_slot(k.as_bytes())).collect();
            slots.sort_unstable();
            slots.dedup();
            for slot in slots {
                let (before, after) = (since.master_of(slot), now.master_of(slot));
                if before != after {
                    let show =
                        |m: Option<&(String, u16)>| m.map_or_else(|| "none".to_owned(), |(h, p)| format!("{h}:{p}"));
                    return Err(StoreError::MasterChanged { slot, before: show(before), now: show(after) });
                }
            }
        }
        if acked < wanted {
            return Err(StoreError::NotReplicated { acked, wanted });
        }
        Ok(())
    }
}

/// A key under `prefix` in cluster slot `slot`: `{prefix}replication_probe:{tag}`
/// with the first decimal tag that hashes there (found once per slot).
pub fn probe_key(prefix: &str, slot: u16) -> String {
    static TAGS: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<u16, u32>>> =
        std::sync::OnceLock::new();
    let tags = TAGS.get_or_init(Default::default);
    let mut known = tags.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let tag = *known
        .entry(slot)
        .or_insert_with(|| (0u32..).find(|n| key_slot(format!("{{{n}}}").as_bytes()) == slot).unwrap_or_default());
    format!("{prefix}replication_probe:{{{tag}}}")
}

/// The cluster slot of `key` (CRC16-XMODEM of the key or of its `{hash tag}`,
/// mod 16384), as Redis and the client compute it.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter().position(|&b| b == b'}').map(|close| &rest[..close])
        })
        .filter(|tag| !tag.is_empty());
    let mut crc: u16 = 0;
    for &b in tagged.unwrap_or(key) {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc % 16384
}

/// A slot range of `CLUSTER SLOTS`: first slot, last slot, its master's host and port.
type SlotRange = (u16, u16, (String, u16));

/// The master of every slot range at one moment ([`RedisConn::masters`]);
/// empty for one node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Masters(Vec<SlotRange>);

impl Masters {
    /// The master (host, port) serving `slot`, if any.
    pub fn master_of(&self, slot: u16) -> Option<&(String, u16)> {
        self.0.iter().find(|r| r.0 <= slot && slot <= r.1).map(|r| &r.2)
    }
}

/// `CLUSTER SLOTS` → one [`SlotRange`] per range.
fn parse_slot_ranges(v: &Value) -> Option<Vec<SlotRange>> {
    let Value::Array(ranges) = v else { return None };
    let mut out = Vec::with_capacity(ranges.len());
    for r in ranges {
        let Value::Array(parts) = r else { return None };
        let first = u16::try_from(crate::redis_value::as_int(parts.first()?)?).ok()?;
        let last = u16::try_from(crate::redis_value::as_int(parts.get(1)?)?).ok()?;
        let Value::Array(master) = parts.get(2)? else { return None };
        let host = match master.first()? {
            Value::BulkString(b) => String::from_utf8(b.clone()).ok()?,
            Value::SimpleString(s) => s.clone(),
            _ => return None,
        };
        let port = u16::try_from(crate::redis_value::as_int(master.get(1)?)?).ok()?;
        out.push((first, last, (host, port)));
    }
    Some(out)
}

/// One master of a keyspace pass ([`RedisConn::scan_targets`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanTarget {
    /// The lowest slot the master serves (0 for a single node): names the
    /// shard across failovers, for a pass that keeps its progress.
    pub first_slot: u16,
    /// host and port of a cluster's master; None for a single node.
    pub addr: Option<(String, u16)>,
}

/// `CLUSTER SLOTS` → one target per slot range (its master).
fn parse_cluster_slots(v: &Value) -> Option<Vec<ScanTarget>> {
    let Value::Array(ranges) = v else { return None };
    let mut out = Vec::with_capacity(ranges.len());
    for r in ranges {
        let Value::Array(parts) = r else { return None };
        let first = crate::redis_value::as_int(parts.first()?)?;
        let Value::Array(master) = parts.get(2)? else { return None };
        let host = match master.first()? {
            Value::BulkString(b) => String::from_utf8(b.clone()).ok()?,
            Value::SimpleString(s) => s.clone(),
            _ => return None,
        };
        let port = crate::redis_value::as_int(master.get(1)?)?;
        out.push(ScanTarget { first_slot: u16::try_from(first).ok()?, addr: Some((host, u16::try_from(port).ok()?)) });
    }
    Some(out)
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c, _) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            // A plain pipeline (every reply wanted) may mix slots: one request
            // per command, all in flight at once, replies in order. A
            // transaction (MULTI/EXEC: offset past the commands) stays one
            // request and must keep to one slot.
            RedisConn::Cluster(c, _) if offset == 0 && count == pipeline.len() => {
                let c = c.clone();
                split_pipeline(c, pipeline)
            }
            RedisConn::Cluster(c, _) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c, _) => c.get_db(),
        }
    }
}

fn split_pipeline(c: ClusterConnection, pipeline: &redis::Pipeline) -> BoxFuture<'_, RedisResult<Vec<Value>>> {
    async move {
        try_join_all(pipeline.cmd_iter().map(|cmd| {
            let mut c = c.clone();
            // A command's error fails the whole request, as a broken
            // connection would; callers retry the step.
            async move { c.req_packed_command(cmd).await }
        }))
        .await
    }
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_slots_reply_names_each_masters_first_slot() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let range = |a: i64, b: i64, port: i64| {
            Value::Array(vec![Value::Int(a), Value::Int(b), node("127.0.0.1", port), node("127.0.0.1", port + 3)])
        };
        let reply = Value::Array(vec![range(5461, 10922, 7001), range(0, 5460, 7000), range(10923, 16383, 7002)]);
        let got = parse_cluster_slots(&reply).unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[1], ScanTarget { first_slot: 0, addr: Some(("127.0.0.1".into(), 7000)) });
        assert_eq!(parse_cluster_slots(&Value::Int(1)), None);
    }

    #[test]
    fn key_slot_is_the_clients_and_redis_slot() {
        // Known values (CLUSTER KEYSLOT), then the client's own routing.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        for k in ["a", "recsys:hist:u1", "x{t}y", "{}", "{a", "p:{t}:trending:1h", "foo{}{bar}"] {
            assert_eq!(
                Route::new(key_slot(k.as_bytes()), SlotAddr::Master),
                Route::with_key(k, SlotAddr::Master),
                "{k}"
            );
        }
    }

    #[test]
    fn slot_ranges_name_first_last_and_master() {
        let node = |port: i64| Value::Array(vec![Value::BulkString(b"127.0.0.1".to_vec()), Value::Int(port)]);
        let reply = Value::Array(vec![Value::Array(vec![Value::Int(0), Value::Int(5460), node(7000), node(7003)])]);
        assert_eq!(parse_slot_ranges(&reply), Some(vec![(0, 5460, ("127.0.0.1".to_owned(), 7000))]));
        assert_eq!(parse_slot_ranges(&Value::Nil), None);
    }
}
