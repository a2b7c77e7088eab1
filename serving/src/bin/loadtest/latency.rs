//! The load tool's latency bookkeeping: the send schedule of `--rate`, the two
//! latency views (service time, and latency from the scheduled send time) and
//! their percentiles. Pure, so the arithmetic is tested without a server.

use std::time::{Duration, Instant};

use serde::Serialize;

/// A request is counted late when it left more than this after its scheduled
/// time. Tokio's timer ticks each millisecond, so sends on an idle machine are
/// up to ~1 ms off by construction; past this margin, the tool or the server
/// was behind.
pub const LATE_AFTER: Duration = Duration::from_millis(2);

/// How long before its scheduled time a connection asks the timer to wake it.
/// Tokio rounds a deadline up to its next millisecond tick and the poller's
/// timeout up again, so a sleep until the exact time wakes ~1.5 ms late on
/// average, which would show as queueing that is only the tool's own timer.
/// Waking a tick early centres the sends on the schedule instead.
pub const TIMER_LEAD: Duration = Duration::from_millis(1);

/// When slot `slot` of a fixed-rate schedule is due, from the schedule's start.
/// Computed from the slot number rather than by adding intervals, so rounding
/// does not drift over a long run.
pub fn scheduled_offset(slot: u64, rate: f64) -> Duration {
    Duration::from_secs_f64(slot as f64 / rate)
}

/// Latency samples of one view, in microseconds (exact percentiles; 4 bytes a
/// request is 24 MB for 100 s at 60,000 requests/s).
#[derive(Debug, Default)]
pub struct Latencies {
    us: Vec<u32>,
}

impl Latencies {
    pub fn record(&mut self, d: Duration) {
        self.us.push(u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
    }

    pub fn len(&self) -> usize {
        self.us.len()
    }

    pub fn merge(&mut self, other: Latencies) {
        self.us.extend(other.us);
    }

    pub fn summary(mut self) -> LatencySummary {
        self.us.sort_unstable();
        let lat = &self.us;
        // Nearest rank: the smallest sample at or above share p of all.
        let pct = |p: f64| -> f64 {
            if lat.is_empty() {
                return 0.0;
            }
            let i = ((p * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1;
            f64::from(lat[i]) / 1000.0
        };
        LatencySummary {
            count: lat.len() as u64,
            p50_ms: pct(0.50),
            p90_ms: pct(0.90),
            p95_ms: pct(0.95),
            p99_ms: pct(0.99),
            p999_ms: pct(0.999),
            max_ms: lat.last().map_or(0.0, |v| f64::from(*v) / 1000.0),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl std::fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.3}  p90 {:.3}  p95 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            self.p50_ms, self.p90_ms, self.p95_ms, self.p99_ms, self.p999_ms, self.max_ms
        )
    }
}

/// Both views of the measured requests. `corrected` exists only on a schedule
/// (`--rate`): a closed loop sends when the previous answer arrived, so it has
/// no send time to be late against.
#[derive(Debug, Default)]
pub struct Recorder {
    /// Sent → last body byte.
    pub service: Latencies,
    /// Scheduled → last body byte: includes the wait when the tool or server fell behind.
    pub corrected: Option<Latencies>,
    /// Requests sent more than [`LATE_AFTER`] after their scheduled time.
    pub late: u64,
    /// The longest a request waited past its scheduled time before it was sent.
    pub max_send_lag: Duration,
}

impl Recorder {
    pub fn new(scheduled: bool) -> Self {
        Recorder { corrected: scheduled.then(Latencies::default), ..Recorder::default() }
    }

    /// One answered (or failed) request; `scheduled` is its slot's time on a
    /// schedule. A request the timer sent a little early (see [`TIMER_LEAD`])
    /// waited for nothing: its corrected latency is its service time.
    pub fn record(&mut self, scheduled: Option<Instant>, sent: Instant, done: Instant) {
        self.service.record(done.saturating_duration_since(sent));
        if let (Some(c), Some(due)) = (self.corrected.as_mut(), scheduled) {
            c.record(done.saturating_duration_since(due.min(sent)));
            let lag = sent.saturating_duration_since(due);
            self.max_send_lag = self.max_send_lag.max(lag);
            if lag > LATE_AFTER {
                self.late += 1;
            }
        }
    }

    pub fn merge(&mut self, other: Recorder) {
        self.service.merge(other.service);
        match (self.corrected.as_mut(), other.corrected) {
            (Some(a), Some(b)) => a.merge(b),
            (None, Some(b)) => self.corrected = Some(b),
            _ => {}
        }
        self.late += other.late;
        self.max_send_lag = self.max_send_lag.max(other.max_send_lag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_start_plus_slot_over_rate_without_drift() {
        assert_eq!(scheduled_offset(0, 100.0), Duration::ZERO);
        assert_eq!(scheduled_offset(1, 100.0), Duration::from_millis(10));
        assert_eq!(scheduled_offset(250, 100.0), Duration::from_millis(2500));
        // A third of a second does not add up to rounding error over a million slots.
        assert_eq!(scheduled_offset(3_000_000, 3.0), Duration::from_secs(1_000_000));
        let a = scheduled_offset(7, 3.0);
        let b = scheduled_offset(8, 3.0);
        assert!(b > a && (b - a).as_secs_f64() - 1.0 / 3.0 < 1e-9);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut l = Latencies::default();
        for ms in 1..=1000u64 {
            l.record(Duration::from_millis(ms));
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        assert_eq!((s.p50_ms, s.p90_ms, s.p99_ms, s.p999_ms, s.max_ms), (500.0, 900.0, 990.0, 999.0, 1000.0));
        assert_eq!(Latencies::default().summary().p99_ms, 0.0);
    }

    /// One connection on a 100 requests/s schedule for 10 s against a server
    /// that answers in 1 ms, except that it stalls for 1 s at t = 5 s: the one
    /// request in flight then takes 1 s, and the ~100 requests due during the
    /// stall wait for the connection and go out late, back to back. A closed
    /// loop's view (sent → answered) sees one slow request in 1,000; the view
    /// from the schedule sees every request the stall delayed.
    #[test]
    fn a_one_second_stall_shows_in_the_corrected_tail_only() {
        let t0 = Instant::now();
        let rate = 100.0;
        let service = Duration::from_millis(1);
        let (stall_from, stall_to) = (Duration::from_secs(5), Duration::from_secs(6));
        let mut rec = Recorder::new(true);
        let mut free_at = Duration::ZERO;
        for slot in 0..1000 {
            let due = scheduled_offset(slot, rate);
            let sent = due.max(free_at);
            let done = if sent >= stall_from && sent < stall_to { stall_to + service } else { sent + service };
            free_at = done;
            rec.record(Some(t0 + due), t0 + sent, t0 + done);
        }
        let late = rec.late;
        let lag = rec.max_send_lag;
        let service = rec.service.summary();
        let corrected = rec.corrected.expect("a schedule keeps the corrected view").summary();
        assert_eq!((service.count, corrected.count), (1000, 1000));
        // Service time: one 1 s answer, everything else 1 ms.
        assert!((service.p99_ms - 1.0).abs() < 1e-9, "{service}");
        assert!((service.p999_ms - 1.0).abs() < 1e-9, "{service}");
        assert!((service.max_ms - 1001.0).abs() < 1e-9, "{service}");
        // From the schedule: ~110 requests waited, from ~1 s down to a few ms,
        // so the slowest 1 % are all over 900 ms and the p90 is well above 1 ms.
        assert!(corrected.p99_ms > 900.0, "{corrected}");
        assert!(corrected.p90_ms > 10.0, "{corrected}");
        assert!((corrected.max_ms - 1001.0).abs() < 1e-9, "{corrected}");
        assert!((corrected.p50_ms - 1.0).abs() < 1e-9, "{corrected}");
        assert!((100..=115).contains(&late), "late {late}");
        assert!(lag > Duration::from_millis(980) && lag <= Duration::from_secs(1), "lag {lag:?}");
    }

    #[test]
    fn a_closed_loop_has_only_the_service_view() {
        let t0 = Instant::now();
        let mut rec = Recorder::new(false);
        rec.record(None, t0, t0 + Duration::from_millis(3));
        assert!(rec.corrected.is_none());
        assert_eq!((rec.late, rec.service.len()), (0, 1));
        let mut all = Recorder::new(true);
        all.merge(rec);
        assert_eq!(all.service.summary().max_ms, 3.0);
    }

    #[test]
    fn early_on_time_and_late_sends() {
        let t0 = Instant::now();
        let due = t0 + Duration::from_millis(10);
        let ms = Duration::from_millis;
        let mut rec = Recorder::new(true);
        // Woken 0.5 ms early: no wait to charge, corrected = service.
        rec.record(Some(due), due - Duration::from_micros(500), due + ms(1));
        // 1.5 ms late: within the timer's slack, not counted late, but charged.
        rec.record(Some(due), due + Duration::from_micros(1500), due + ms(3));
        // 5 ms late: counted.
        rec.record(Some(due), due + ms(5), due + ms(6));
        assert_eq!(rec.late, 1);
        assert_eq!(rec.max_send_lag, ms(5));
        let c = rec.corrected.expect("scheduled").summary();
        let s = rec.service.summary();
        assert_eq!((c.p50_ms, c.max_ms), (3.0, 6.0));
        assert_eq!((s.p50_ms, s.max_ms), (1.5, 1.5));
    }
}
