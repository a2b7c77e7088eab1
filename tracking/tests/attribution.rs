//! The attribution steps against the real local Redis (`RECSYS_TEST_REDIS`, or
//! the Redis Cluster of `RECSYS_TEST_REDIS_CLUSTER`), without Kafka: the
//! scripted scenario in several batchings and orders, replays, interrupted
//! batches, two owners of a partition, and the memory bounds. Each test has
//! its own key prefix.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;

use common::redis_conn::RedisConn;
use schemas::{Event, EventKind, ItemId, RedisKeys, Variant};
use support::*;
use tracking::store::{Guard, Outcome, Record, StopAfter, Store};
use tracking::TrackingConfig;

const TOPICS: [&str; 2] = ["imp", "ev"];
const PARTITIONS: i32 = 3;

async fn store(prefix: &str, cfg: &TrackingConfig) -> (Store, RedisConn) {
    let rc = redis_config(prefix);
    let conn = common::redis_conn::connect(&rc).await.unwrap();
    (Store::new(conn.clone(), rc.keys(), cfg.windows()), conn)
}

/// Gives each record Kafka coordinates the way a producer would: partition
/// by user, offsets increasing per topic-partition in production order.
fn place(recs: Vec<Rec>) -> Vec<Record> {
    let mut next: HashMap<(usize, i32), i64> = HashMap::new();
    recs.into_iter()
        .map(|r| {
            let partition = (r.user().as_str().bytes().map(u32::from).sum::<u32>() % PARTITIONS as u32) as i32;
            let topic = usize::from(matches!(r, Rec::Ev(_)));
            let n = next.entry((topic, partition)).or_insert(0);
            let offset = *n;
            *n += 1;
            match r {
                Rec::Imp(impression) => Record::Impression { topic, partition, offset, impression },
                Rec::Ev(event) => Record::Event { topic, partition, offset, event },
            }
        })
        .collect()
}

fn coords(r: &Record) -> ((usize, i32), i64) {
    match r {
        Record::Impression { topic, partition, offset, .. } | Record::Event { topic, partition, offset, .. } => {
            ((*topic, *partition), *offset)
        }
    }
}

async fn apply(s: &Store, batch: &[Record]) -> Outcome {
    let mut highest: HashMap<(usize, i32), i64> = HashMap::new();
    for r in batch {
        let (k, o) = coords(r);
        let e = highest.entry(k).or_insert(o);
        *e = (*e).max(o);
    }
    let highest: Vec<_> = highest.into_iter().collect();
    s.attribute(&TOPICS, batch, &highest).await.unwrap()
}

#[tokio::test]
async fn the_scenario_gives_the_expected_counts_however_it_is_batched() {
    let cfg = TrackingConfig::default();
    // (name, batch size, events of a batch before its impressions?)
    for (name, batch) in [("one batch", usize::MAX), ("one record per batch", 1), ("batches of 4", 4)] {
        let t = tag();
        let prefix = format!("tt-{t}:");
        let (s, mut conn) = store(&prefix, &cfg).await;
        let records = place(interleaved(&t));
        let n = records.len() as u64;
        let mut applied = 0;
        for b in records.chunks(batch.min(records.len())) {
            let o = apply(&s, b).await;
            applied += o.impressions_applied + o.events_applied;
        }
        assert_eq!(applied, n, "{name}");
        assert_counters(&mut conn, &RedisKeys::new(prefix.clone())).await;

        // Replaying everything (a restart whose Kafka commit was lost) changes nothing.
        let again = apply(&s, &records).await;
        assert_eq!(again.impressions_applied + again.events_applied, 0, "{name}");
        assert_eq!(again.impressions_duplicate + again.events_duplicate, n, "{name}");
        assert!(again.deltas.is_empty(), "{name}: {:?}", again.deltas);
        assert_counters(&mut conn, &RedisKeys::new(prefix.clone())).await;
        cleanup(&mut conn, &prefix).await;
    }
}

#[tokio::test]
async fn events_consumed_before_their_impressions_are_attributed_late() {
    let cfg = TrackingConfig::default();
    let t = tag();
    let prefix = format!("tt-{t}:");
    let (s, mut conn) = store(&prefix, &cfg).await;
    let records = place(interleaved(&t));
    // Worst case interleaving: every event of every partition first, one by one.
    let (events, imps): (Vec<Record>, Vec<Record>) =
        records.into_iter().partition(|r| matches!(r, Record::Event { .. }));
    let mut late = 0;
    let mut on_event = 0;
    for r in events.iter().chain(&imps) {
        let o = apply(&s, std::slice::from_ref(r)).await;
        late += o.attributed_late;
        on_event += o.attributed_on_event;
    }
    assert_eq!(on_event, 0, "no impression was known when the events came");
    // u1: 5 events, u3: 2, u4: 2, u5: 3, u6: 1, u7: 1 (u2's and u8's match nothing).
    assert_eq!(late, 14, "events attributed when their impression came");
    assert_counters(&mut conn, &RedisKeys::new(prefix.clone())).await;
    cleanup(&mut conn, &prefix).await;
}

#[tokio::test]
async fn overlapping_replays_after_a_crash_count_each_record_once() {
    let cfg = TrackingConfig::default();
    let t = tag();
    let prefix = format!("tt-{t}:");
    let (s, mut conn) = store(&prefix, &cfg).await;
    let records = place(interleaved(&t));
    let half = records.len() / 2;
    for b in records[..half].chunks(3) {
        apply(&s, b).await;
    }
    // The "restarted" consumer re-reads from an older commit in other batch sizes.
    let mut dup = 0;
    for b in records[half / 2..].chunks(5) {
        let o = apply(&s, b).await;
        dup += o.impressions_duplicate + o.events_duplicate;
    }
    assert_eq!(dup as usize, half - half / 2);
    assert_counters(&mut conn, &RedisKeys::new(prefix.clone())).await;
    cleanup(&mut conn, &prefix).await;
}

fn highest(batch: &[Record]) -> Vec<((usize, i32), i64)> {
    let mut h: HashMap<(usize, i32), i64> = HashMap::new();
    for r in batch {
        let (k, o) = coords(r);
        let e = h.entry(k).or_insert(o);
        *e = (*e).max(o);
    }
    h.into_iter().collect()
}

/// Every user of the scenario has no counter deltas waiting in its state.
async fn outboxes_are_empty(conn: &mut RedisConn, keys: &RedisKeys, t: &str) {
    for group in scenario(t) {
        let u = group[0].user();
        let v = tracking::store::read_state(conn, &keys.track(u)).await.unwrap().unwrap();
        // An empty Lua table is `{}` in JSON.
        let empty = match &v["o"] {
            serde_json::Value::Array(a) => a.is_empty(),
            serde_json::Value::Object(m) => m.is_empty(),
            _ => false,
        };
        assert!(empty, "{u}: {}", v["o"]);
    }
}

/// A crash after a batch's per-user states (no counter moved) or after its
/// counters (no resume point moved): the replay, in other batch sizes,
/// completes it — the counters see each record's deltas once, and once the
/// resume points pass them no state keeps them.
#[tokio::test]
async fn batches_interrupted_between_their_steps_are_completed_by_the_replay() {
    let cfg = TrackingConfig::default();
    for stops in [&[StopAfter::UserStates][..], &[StopAfter::Counters], &[StopAfter::UserStates, StopAfter::Counters]] {
        let t = tag();
        let prefix = format!("tt-{t}:");
        let keys = RedisKeys::new(prefix.clone());
        let (s, mut conn) = store(&prefix, &cfg).await;
        let records = place(interleaved(&t));
        let n = records.len() as u64;
        // Every batch of 4 is cut short; the restarted task re-reads from an
        // older commit (2 records back) in batches of 3 up to its end, before
        // the next batch (a task retries a batch until it is done).
        let mut applied = 0;
        for (i, b) in records.chunks(4).enumerate() {
            let stop = stops[i % stops.len()];
            s.attribute_interrupted(&TOPICS, b, &highest(b), stop).await.unwrap();
            let end = (i * 4 + b.len()).min(records.len());
            for replay in records[(i * 4).saturating_sub(2)..end].chunks(3) {
                let o = apply(&s, replay).await;
                applied += o.impressions_applied + o.events_applied;
            }
        }
        assert_eq!(applied, n, "{stops:?}: every record completed by the replay");
        assert_counters(&mut conn, &keys).await;
        let again = apply(&s, &records).await;
        assert_eq!(again.impressions_duplicate + again.events_duplicate, n, "{stops:?}");
        assert!(again.deltas.is_empty(), "{stops:?}: {:?}", again.deltas);
        assert_counters(&mut conn, &keys).await;
        outboxes_are_empty(&mut conn, &keys, &t).await;
        cleanup(&mut conn, &prefix).await;
    }
}

/// The old owner of the partitions finishes its batches while the new one,
/// started at the committed offset, reads on — at once, in other batch sizes
/// (one task each, so their steps interleave per user): each record is
/// counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_owners_of_the_partitions_count_each_record_once() {
    let cfg = TrackingConfig::default();
    for (old_size, new_size) in [(4, 5), (2, 7), (1, 3)] {
        let t = tag();
        let prefix = format!("tt-{t}:");
        let keys = RedisKeys::new(prefix.clone());
        let (old, mut conn) = store(&prefix, &cfg).await;
        let (new, _) = store(&prefix, &cfg).await;
        let records = place(interleaved(&t));
        let third = records.len() / 3;
        for b in records[..third].chunks(3) {
            apply(&old, b).await;
        }
        let (a, b) = (records[third..2 * third].to_vec(), records[third..].to_vec());
        let finishing = tokio::spawn(async move {
            for batch in a.chunks(old_size) {
                apply(&old, batch).await;
            }
        });
        let starting = tokio::spawn(async move {
            for batch in b.chunks(new_size) {
                apply(&new, batch).await;
            }
        });
        finishing.await.unwrap();
        starting.await.unwrap();
        assert_counters(&mut conn, &keys).await;
        cleanup(&mut conn, &prefix).await;
    }
}

/// No resume point for a partition whose batch starts past its log start:
/// Redis lost the state; nothing of that partition is applied, the others are.
#[tokio::test]
async fn a_partition_without_its_resume_point_is_reported_lost() {
    let cfg = TrackingConfig::default();
    let t = tag();
    let prefix = format!("tt-{t}:");
    let keys = RedisKeys::new(prefix.clone());
    let (s, mut conn) = store(&prefix, &cfg).await;
    let records = place(interleaved(&t));
    let (first, rest) = records.split_at(records.len() / 2);
    apply(&s, first).await;
    // A partition with records in both halves.
    let min_in_rest = |tp: (usize, i32)| rest.iter().map(coords).filter(|(q, _)| *q == tp).map(|(_, o)| o).min();
    let lost = rest.iter().map(|r| coords(r).0).find(|&tp| min_in_rest(tp) > Some(0)).expect("a partition in both");
    let _: () = redis::cmd("DEL").arg(keys.track_offsets(TOPICS[lost.0], lost.1)).query_async(&mut conn).await.unwrap();
    let mut guards = rustc_hash::FxHashMap::default();
    guards.insert(lost, Guard { log_start: 0, first: min_in_rest(lost).unwrap() });
    let o = s.attribute_guarded(&TOPICS, rest, &highest(rest), &guards).await.unwrap();
    assert_eq!(o.lost, [lost]);
    let of_lost = rest.iter().filter(|r| coords(r).0 == lost).count() as u64;
    assert_eq!(o.impressions_applied + o.events_applied, rest.len() as u64 - of_lost);
    let resume: Option<i64> =
        redis::cmd("GET").arg(keys.track_offsets(TOPICS[lost.0], lost.1)).query_async(&mut conn).await.unwrap();
    assert_eq!(resume, None, "the lost partition's resume point stays missing until it is re-read");
    cleanup(&mut conn, &prefix).await;
}

#[tokio::test]
async fn windows_are_configurable() {
    // A 40-minute click window makes u2's view after 31 minutes a click, and
    // a 26-hour conversion window its add-to-cart after 25 hours a cart.
    let cfg = TrackingConfig { click_window_s: 40 * 60, conversion_window_s: 26 * 3600, ..TrackingConfig::default() };
    let t = tag();
    let prefix = format!("tt-{t}:");
    let (s, mut conn) = store(&prefix, &cfg).await;
    apply(&s, &place(interleaved(&t))).await;
    let keys = RedisKeys::new(prefix.clone());
    let got =
        tracking::store::read_counters(&mut conn, &keys.stats(Variant::Als, &"v1".parse_version())).await.unwrap();
    let want = &expected()[0].2;
    assert_eq!((got.clicks, got.carts), (want.clicks + 1, want.carts + 1));
    cleanup(&mut conn, &prefix).await;
}

trait ParseVersion {
    fn parse_version(&self) -> schemas::ModelVersion;
}

impl ParseVersion for str {
    fn parse_version(&self) -> schemas::ModelVersion {
        schemas::ModelVersion::parse(self).unwrap()
    }
}

#[tokio::test]
async fn state_stays_bounded_under_a_flood_of_impressions_or_events() {
    let cfg = TrackingConfig { max_impressions_per_user: 5, max_pending_events_per_user: 4, ..Default::default() };
    let t = tag();
    let prefix = format!("tt-{t}:");
    let (s, mut conn) = store(&prefix, &cfg).await;
    let keys = RedisKeys::new(prefix.clone());
    let scenario = scenario(&t);
    let Rec::Imp(template) = &scenario[0][0] else { panic!("u1 starts with an impression") };
    // 2,000 impressions of one user, no events, in batches of 200.
    let flood: Vec<Rec> = (0..2_000)
        .map(|n| {
            let mut i = template.clone();
            i.rec_id = schemas::RecId::parse(&format!("flood-{n}")).unwrap();
            i.ts = T0 + n * 1_000;
            Rec::Imp(i)
        })
        .collect();
    let placed = place(flood);
    for b in placed.chunks(200) {
        apply(&s, b).await;
    }
    let v = tracking::store::read_state(&mut conn, &keys.track(&template.user_id)).await.unwrap().unwrap();
    let kept: Vec<&str> = v["i"].as_array().unwrap().iter().map(|i| i["r"].as_str().unwrap()).collect();
    assert_eq!(kept, ["flood-1995", "flood-1996", "flood-1997", "flood-1998", "flood-1999"], "the newest are kept");
    let ttl: i64 = redis::cmd("TTL").arg(keys.track(&template.user_id)).query_async(&mut conn).await.unwrap();
    assert!(ttl > 0 && ttl as u64 <= cfg.windows().state_ttl_s, "{ttl}");
    let c = tracking::store::read_counters(&mut conn, &keys.stats(Variant::Als, &"v1".parse_version())).await.unwrap();
    assert_eq!(c.impressions, 2_000, "every impression is still counted");

    // Events of a user nobody showed anything: at most 4 wait.
    let u = user(&t, "lonely");
    let evs: Vec<Rec> =
        (0..300).map(|n| Rec::Ev(Event::new(T0 + n, u.clone(), ItemId::from_u64(n as u64), EventKind::View))).collect();
    for b in place(evs).chunks(64) {
        apply(&s, b).await;
    }
    let v = tracking::store::read_state(&mut conn, &keys.track(&u)).await.unwrap().unwrap();
    assert_eq!(v["e"].as_array().unwrap().len(), 4);
    // Impressions older than the longest window before the user's latest impression go.
    let mut late = template.clone();
    late.rec_id = schemas::RecId::parse("late").unwrap();
    late.ts = T0 + 1_999 * 1_000 + 86_400_001;
    let Record::Impression { topic, partition, impression, .. } = place(vec![Rec::Imp(late)]).remove(0) else {
        unreachable!()
    };
    apply(&s, &[Record::Impression { topic, partition, offset: 1_000_000, impression }]).await;
    let v = tracking::store::read_state(&mut conn, &keys.track(&template.user_id)).await.unwrap().unwrap();
    let kept: Vec<&str> = v["i"].as_array().unwrap().iter().map(|i| i["r"].as_str().unwrap()).collect();
    assert_eq!(kept, ["late"], "impressions past the longest window are dropped");
    cleanup(&mut conn, &prefix).await;
}

#[tokio::test]
async fn a_json_state_written_by_an_earlier_version_is_still_read() {
    let cfg = TrackingConfig::default();
    let t = tag();
    let prefix = format!("tt-{t}:");
    let (s, mut conn) = store(&prefix, &cfg).await;
    let keys = RedisKeys::new(prefix.clone());
    let u = user(&t, "upgraded");
    // What the JSON-state version left: one impression of items 7 and 8.
    let old = format!(
        r#"{{"l":{T0},"i":[{{"r":"{t}-r0","t":{T0},"v":"als","m":"v1","s":",7,8,","c":0,"a":0,"p":0}}],"e":[],"x":[]}}"#
    );
    let _: () = redis::cmd("SET").arg(keys.track(&u)).arg(&old).query_async(&mut conn).await.unwrap();
    let click = Rec::Ev(Event::new(T0 + MIN, u.clone(), ItemId::from_u64(8), EventKind::View));
    let o = apply(&s, &place(vec![click])).await;
    assert_eq!(o.attributed_on_event, 1, "the click matched the impression of the old state");
    let c = tracking::store::read_counters(&mut conn, &keys.stats(Variant::Als, &"v1".parse_version())).await.unwrap();
    assert_eq!(c.clicks, 1);
    let raw: Vec<u8> = redis::cmd("GET").arg(keys.track(&u)).query_async(&mut conn).await.unwrap();
    assert_ne!(raw.first(), Some(&b'{'), "rewritten as MessagePack");
    let v = tracking::store::read_state(&mut conn, &keys.track(&u)).await.unwrap().unwrap();
    assert_eq!(v["i"][0]["c"], 1, "the impression is marked clicked");
    assert_eq!(v["e"].as_array().unwrap().len(), 1, "the click waits for impressions read later");
    cleanup(&mut conn, &prefix).await;
}
