//! `recsys-updater upgrade-keys`: moves the keys a version before the Redis
//! Cluster layout wrote to their current names, so the live rankings and the
//! A/B counters carry over an upgrade instead of starting empty.
//!
//! That layout ran on one Redis node and kept
//!
//! | before | now |
//! | --- | --- |
//! | `trending:{window}` | `trending:{t}:{window}` |
//! | `trending_landmarks` | `trending:{t}:landmarks` |
//! | `stats:{variant}:{version}` | `stats:{s}:{variant}:{version}` (and in `stats_index:{s}`) |
//! | `stats_hourly:{variant}:{version}:{hour}` | `stats_hourly:{s}:{variant}:{version}:{hour}` |
//! | `stats_index` | (replaced by `stats_index:{s}`) |
//!
//! Run with the previous version stopped gracefully (its last commit makes the
//! group's Kafka offsets equal the Redis resume points, so the new version
//! re-reads nothing its per-user and ranking guards, absent in the old layout,
//! would have to skip) and before the new one starts (it
//! would otherwise keep writing the old names, or the new version would start
//! the new keys empty and a later rename would refuse to overwrite them). The
//! resume points (`offsets:…`, `track_offsets:…`) keep their names and stay
//! valid, and the new guards (`trending:{t}:offsets`, `stats_offsets:{s}`)
//! start empty, which applies exactly the events after those resume points:
//! nothing is counted twice. Each move is a `RENAMENX`, so a run that finds a
//! key under both names leaves both and says so, and running it again is
//! harmless. One node only: a Redis Cluster was never written in the old
//! layout, and `RENAME` cannot move a key between slots.

use anyhow::Context;
use common::redis_conn::RedisConn;
use schemas::{ModelVersion, RedisKeys, Variant};

/// What [`upgrade_keys`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Upgrade {
    /// (old name, new name) of every key moved.
    pub moved: Vec<(String, String)>,
    /// (old name, new name) of keys left in place: the new name was taken.
    pub kept: Vec<(String, String)>,
    /// The old `stats_index` was deleted (its members are the new index's now).
    pub old_index_deleted: bool,
}

impl Upgrade {
    /// Nothing of the old layout was found.
    pub fn nothing(&self) -> bool {
        self.moved.is_empty() && self.kept.is_empty() && !self.old_index_deleted
    }
}

/// Moves every key of the old layout under `keys`' prefix to its new name;
/// `dry_run` only reports what it would move.
pub async fn upgrade_keys(conn: &mut RedisConn, keys: &RedisKeys, dry_run: bool) -> anyhow::Result<Upgrade> {
    if conn.is_cluster() {
        anyhow::bail!(
            "upgrade-keys runs against the one Redis node the previous version used ([redis] url), \
             before the keys move to a cluster"
        );
    }
    let p = keys.prefix();
    // (old name, new name, a counter to index)
    let mut moves: Vec<(String, String, bool)> = Vec::new();
    for old in conn.scan_all(&keys.pattern("trending:*")).await.context("scanning trending:*")? {
        let window = &old[p.len() + "trending:".len()..];
        if window.starts_with("{t}") {
            continue; // the current layout
        }
        moves.push((old.clone(), format!("{p}trending:{{t}}:{window}"), false));
    }
    let landmarks = format!("{p}trending_landmarks");
    if exists(conn, &landmarks).await? {
        moves.push((landmarks, keys.trending_landmarks(), false));
    }
    for old in conn.scan_all(&keys.pattern("stats:*")).await.context("scanning stats:*")? {
        let rest = &old[p.len() + "stats:".len()..];
        if rest.starts_with("{s}") {
            continue;
        }
        let parsed = rest
            .split_once(':')
            .and_then(|(v, ver)| Some((v.parse::<Variant>().ok()?, ModelVersion::parse(ver).ok()?)));
        let Some((variant, version)) = parsed else { continue }; // not a counter of ours
        moves.push((old.clone(), keys.stats(variant, &version), true));
    }
    for old in conn.scan_all(&keys.pattern("stats_hourly:*")).await.context("scanning stats_hourly:*")? {
        let rest = &old[p.len() + "stats_hourly:".len()..];
        if rest.starts_with("{s}") {
            continue;
        }
        moves.push((old.clone(), format!("{p}stats_hourly:{{s}}:{rest}"), false));
    }

    let mut out = Upgrade::default();
    for (old, new, counter) in moves {
        let moved = if dry_run {
            !exists(conn, &new).await?
        } else {
            let n: i64 = redis::cmd("RENAMENX")
                .arg(&old)
                .arg(&new)
                .query_async(conn)
                .await
                .with_context(|| format!("renaming {old}"))?;
            n == 1
        };
        if moved {
            if counter && !dry_run {
                let _: i64 = redis::cmd("SADD").arg(keys.stats_index()).arg(&new).query_async(conn).await?;
            }
            out.moved.push((old, new));
        } else {
            out.kept.push((old, new));
        }
    }
    let old_index = format!("{p}stats_index");
    if exists(conn, &old_index).await? {
        if !dry_run {
            let _: i64 = redis::cmd("DEL").arg(&old_index).query_async(conn).await?;
        }
        out.old_index_deleted = true;
    }
    Ok(out)
}

async fn exists(conn: &mut RedisConn, key: &str) -> anyhow::Result<bool> {
    let n: i64 = redis::cmd("EXISTS").arg(key).query_async(conn).await.with_context(|| format!("reading {key}"))?;
    Ok(n == 1)
}
