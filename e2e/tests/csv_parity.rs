//! The trainer's loader and `recsys-ingest replay` read the same CSV file alike:
//! the same clock, the same rows kept, the same rejections by reason with the
//! same example lines. No broker needed: replay's reading half is compared.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the right failure

use std::path::Path;

use batch_trainer::load::{self, LoadOptions};
use ingest::replay::{self, Outcome, ReplayFormat};
use schemas::csv::{ClockOption, ColumnMap, Reason, TimeUnit};
use schemas::EventLimits;

const NOW: i64 = 1_800_000_000_000;

/// A shop export with a bit of everything wrong, in the given clock.
fn messy_log(dir: &Path, ts: impl Fn(i64) -> String) -> std::path::PathBuf {
    let t = 1_433_221_332_000_i64;
    let mut s = String::from("\u{FEFF}sku,customer,action,when,order,comment\r\n");
    for i in 0..200 {
        s.push_str(&format!("SKU-{},c-{},view,{},,\"note, with comma\"\r\n", i % 17, i % 11, ts(t + i * 1000)));
    }
    let bad = [
        format!("SKU-1,c-1,view,{},", ts(t)),                   // wrong_columns
        format!("SKU-1,,view,{},,", ts(t)),                     // empty_field
        "SKU-1,c-1,view,not-a-time,,".to_owned(),               // bad_timestamp
        format!("SKU-1,c-1,click,{},,", ts(t)),                 // unknown_event
        format!("SKU-1,\"c 1\",view,{},,", ts(t)),              // bad_user_id
        format!("SKU/1,c-1,view,{},,", ts(t)),                  // bad_item_id
        format!("SKU-1,c-1,transaction,{},#1,", ts(t)),         // bad_transaction_id
        format!("SKU-1,c-1,view,{},o-1,", ts(t)),               // transaction_id_not_on_transaction
        format!("SKU-2,c-3,transaction,{},o-2,", ts(t + 5000)), // kept
        format!("SKU-1,c-1,click,{},,", ts(t)),                 // unknown_event again
    ];
    for b in bad {
        s.push_str(&b);
        s.push_str("\r\n");
    }
    let path = dir.join("events.csv");
    std::fs::write(&path, s).unwrap();
    path
}

#[test]
fn replay_and_trainer_count_the_same_rejections() {
    let columns = "item_id=sku,user_id=customer,event=action,ts=when,transaction_id=order";
    for (unit, ts) in [
        (TimeUnit::Milliseconds, Box::new(|ms: i64| ms.to_string()) as Box<dyn Fn(i64) -> String>),
        (TimeUnit::Seconds, Box::new(|ms: i64| (ms / 1000).to_string())),
        (
            TimeUnit::Iso8601,
            Box::new(|ms: i64| {
                time::OffsetDateTime::from_unix_timestamp(ms / 1000)
                    .unwrap()
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap()
            }),
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = messy_log(dir.path(), ts);

        let opts = LoadOptions {
            columns: ColumnMap::parse(columns).unwrap(),
            clock: ClockOption::Auto,
            ..LoadOptions::default()
        };
        let ds = load::read_dir(dir.path(), &opts).unwrap();
        let trainer = &ds.events.report;

        let format = ReplayFormat {
            clock: ClockOption::Auto,
            columns: ColumnMap::parse(columns).unwrap(),
            // No window on either side.
            limits: EventLimits { min_ts: i64::MIN, ..EventLimits::default() },
        };
        let mut sent = 0u64;
        let (rejections, clock) = replay::read_file(
            &path,
            &format,
            || NOW,
            |o, _| {
                if let Outcome::Event { .. } = o {
                    sent += 1;
                }
                true
            },
        )
        .unwrap();

        assert_eq!((trainer.clock, clock), (Some(unit), unit));
        assert_eq!(rejections, trainer.rejected, "{unit:?}: same counts and the same example lines");
        assert_eq!(rejections.total(), 9);
        assert_eq!(rejections.count(Reason::UnknownEvent), 2);
        for r in Reason::ALL {
            if !matches!(r, Reason::BadValue | Reason::OutsideWindow) {
                assert!(rejections.count(r) > 0, "{r} not exercised");
            }
        }
        // Replay sends every accepted row; the trainer then drops exact duplicates.
        assert_eq!(sent, trainer.kept + trainer.duplicate);
        assert_eq!(sent, 201);
    }
}
