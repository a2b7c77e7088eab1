//! The background re-fold after a model swap (issue 6): every user with a
//! history gets a list from the new model, at a bounded rate, so nobody keeps
//! an old model's list until their next event (which may never come).
//!
//! - One pass per model version, walking `hist:*` with `SCAN` on every master
//!   (one for a single node; a Redis Cluster's shards in the order of their
//!   lowest slot, which a failover keeps); the shard and its cursor are kept
//!   in `refold:{version}` after every step, so a restarted instance resumes
//!   instead of starting over, and a finished pass is not repeated.
//! - One instance of the group runs a version's pass at a time: it holds
//!   `refold:{version}:lock` (expiring, renewed each step), so N updaters do
//!   not fold every user N times; if the holder dies, another takes over.
//! - A list is only written when the cached one is not already from this
//!   version (checked inside Redis): the live pipeline, which folds with the
//!   served model too, always wins, and a step repeated after a crash changes
//!   nothing.
//! - A newer model aborts the pass of the older one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis_conn::RedisConn;
use schemas::ModelVersion;

use crate::compute::{self, ComputeParams, NewItems};
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::served::{ModelHandle, ServedModel};
use crate::store::{read_histories, RecsList, Store, StoreError};

/// Writes `ARGV[2]` to `KEYS[1]` unless the list there is already from model
/// `ARGV[1]`; `ARGV[3]` is the TTL in seconds (0 = none). Returns 1 if written.
const WRITE_IF_OLDER: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, v = pcall(cjson.decode, cur)
  if ok and type(v) == 'table' and v['model'] == ARGV[1] then return 0 end
end
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1
";

/// Takes or renews the lock `KEYS[1]` for instance `ARGV[1]` for `ARGV[2]` ms.
const LOCK: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
";

/// How long a pass's lock outlives its holder's last step.
const LOCK_MS: u64 = 30_000;
/// How long the progress of a pass is kept.
const STATE_TTL_S: u64 = 30 * 86_400;

/// Starts a pass for each newly served version until `stop` resolves.
pub async fn supervise(
    settings: Arc<Settings>,
    store: Store,
    handle: ModelHandle,
    metrics: Metrics,
    params: ComputeParams,
    stop: impl std::future::Future<Output = ()>,
) {
    if settings.updater.refold_rate_per_s == 0 {
        return;
    }
    let instance = format!("{}-{:016x}", std::process::id(), crate::rand_suffix());
    // The pass of the served version; its handle is taken once it is joined.
    let mut running: Option<(ModelVersion, Option<tokio::task::JoinHandle<()>>)> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = tick.tick() => {}
        }
        if let Some((_, task)) = running.as_mut() {
            if let Some(t) = task.take_if(|t| t.is_finished()) {
                // A pass that panicked stops the process (this task's panic
                // reaches the updater's Shutdown) instead of vanishing.
                if let Err(e) = t.await {
                    if e.is_panic() {
                        std::panic::resume_unwind(e.into_panic());
                    }
                }
            }
        }
        let Some(m) = handle.current() else { continue };
        if running.as_ref().is_some_and(|(v, _)| *v == m.version) {
            continue;
        }
        if let Some((old, task)) = running.take() {
            tracing::info!(old = %old, new = %m.version, "a newer model: abandoning the re-fold of the old one");
            if let Some(t) = task {
                t.abort();
            }
        }
        let pass = Pass {
            store: store.clone(),
            metrics: metrics.clone(),
            params: params.clone(),
            rate: settings.updater.refold_rate_per_s,
            batch: settings.updater.refold_batch,
            ttl_s: store.ttl_s,
            instance: instance.clone(),
        };
        let (version, metrics) = (m.version.clone(), metrics.clone());
        running = Some((
            version.clone(),
            Some(tokio::spawn(async move {
                metrics.refold_running.set(1);
                match pass.run(m).await {
                    Ok(Some(n)) => tracing::info!(version = %version, lists = n, "re-fold finished"),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(version = %version, error = %e, "re-fold stopped; users refresh on their next event")
                    }
                }
                metrics.refold_running.set(0);
            })),
        ));
    }
    if let Some((_, Some(task))) = running {
        task.abort();
        metrics.refold_running.set(0);
    }
}

/// One version's pass.
#[derive(Debug, Clone)]
pub struct Pass {
    pub store: Store,
    pub metrics: Metrics,
    pub params: ComputeParams,
    /// Users per second at most.
    pub rate: u32,
    /// Users per step.
    pub batch: usize,
    pub ttl_s: u64,
    /// Who holds the lock.
    pub instance: String,
}

impl Pass {
    /// Runs (or resumes, or waits out another instance's run of) the pass for
    /// `m`. `Ok(Some(lists written here))` once this instance finished it,
    /// `Ok(None)` if it was already done.
    pub async fn run(&self, m: Arc<ServedModel>) -> Result<Option<u64>, StoreError> {
        let keys = &self.store.keys;
        let mut conn = self.store.conn.clone();
        let state = keys.refold(&m.version);
        let lock = format!("{state}:lock");
        let lock_script = redis::Script::new(LOCK);
        let write_script = redis::Script::new(WRITE_IF_OLDER);
        let pattern = keys.hist_pattern();
        let (started, mut users, mut written) = (Instant::now(), 0u64, 0u64);
        loop {
            let (cursor, shard, done): (Option<u64>, Option<u16>, Option<String>) =
                redis::cmd("HMGET").arg(&state).arg("cursor").arg("shard").arg("done").query_async(&mut conn).await?;
            if done.as_deref() == Some("1") {
                return Ok((users > 0).then_some(written));
            }
            let held: i64 = lock_script.key(&lock).arg(&self.instance).arg(LOCK_MS).invoke_async(&mut conn).await?;
            if held == 0 {
                // Another instance runs it; take over if it goes away.
                tokio::time::sleep(Duration::from_millis(LOCK_MS / 3)).await;
                continue;
            }
            // The shard being walked: the first whose lowest slot is at or
            // past the stored one (the same shard unless the slots moved).
            let targets = conn.scan_targets().await?;
            let shard = shard.unwrap_or(0);
            let Some(at) = targets.iter().position(|t| t.first_slot >= shard) else {
                return Err(StoreError::Reply("re-fold: no master serves the stored shard".into()));
            };
            let cursor = if targets[at].first_slot == shard { cursor.unwrap_or(0) } else { 0 };
            let (next_cursor, found) = conn.scan_step(&targets[at], cursor, &pattern, self.batch).await?;
            // 0 = this master is done: on to the next one; 0 with none left = the pass is done.
            let (next, next_shard) = match (next_cursor, targets.get(at + 1)) {
                (0, Some(t)) => (0, t.first_slot),
                (0, None) => (0, u16::MAX),
                (c, _) => (c, targets[at].first_slot),
            };
            let finished = next_cursor == 0 && at + 1 == targets.len();
            let ids: Vec<_> = found.iter().filter_map(|k| keys.parse_hist(k)).collect();
            let histories = read_histories(&mut conn, keys, &ids).await?;
            let (m2, params) = (m.clone(), self.params.clone());
            let lists = tokio::task::spawn_blocking(move || {
                compute::refresh(&m2, &NewItems::default(), &params, &histories, schemas::now_ms())
            })
            .await
            .map_err(|e| StoreError::Reply(format!("re-fold task: {e}")))?;
            written += write_if_older(&mut conn, keys, &write_script, &m.version, &lists, self.ttl_s).await?;
            users += ids.len() as u64;
            let mut p = redis::pipe();
            p.cmd("HSET").arg(&state).arg("cursor").arg(next).arg("shard").arg(next_shard).ignore();
            p.cmd("HINCRBY").arg(&state).arg("users").arg(ids.len()).ignore();
            if finished {
                p.cmd("HSET").arg(&state).arg("done").arg("1").ignore();
            }
            p.cmd("EXPIRE").arg(&state).arg(STATE_TTL_S).ignore();
            p.query_async::<()>(&mut conn).await?;
            self.metrics.refold_users.inc_by(lists.len() as u64);
            if finished {
                let _: () = redis::cmd("DEL").arg(&lock).query_async(&mut conn).await?;
                return Ok(Some(written));
            }
            // Pace: never more than `rate` users per second on average.
            let due = Duration::from_secs_f64(users as f64 / f64::from(self.rate.max(1)));
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Writes each list unless the cached one is already from `version`; returns
/// how many were written.
async fn write_if_older(
    conn: &mut RedisConn,
    keys: &schemas::RedisKeys,
    script: &redis::Script,
    version: &ModelVersion,
    lists: &[(schemas::UserId, RecsList)],
    ttl_s: u64,
) -> Result<u64, StoreError> {
    if lists.is_empty() {
        return Ok(0);
    }
    // On its own, not in the pipeline: a lone SCRIPT LOAD goes to every node
    // of a cluster, one inside a pipeline to a single node (NOSCRIPT on the others).
    script.load_async(conn).await?;
    let mut p = redis::pipe();
    for (u, l) in lists {
        p.invoke_script(script.key(keys.recs(u)).arg(version.as_str()).arg(l.to_json()).arg(ttl_s));
    }
    let wrote: Vec<i64> = p.query_async(conn).await?;
    Ok(wrote.iter().filter(|&&w| w == 1).count() as u64)
}
