//! Cron expressions of `[trainer.schedule] cron`: parsing (which the
//! configuration's validation needs) and the next firing time (which the
//! schedule needs). A leaf: it depends on nothing else in the crate, so the
//! configuration does not import the schedule.

use chrono::{DateTime, Utc};
pub use croner::Cron;

/// Parses a 5-field cron expression (minute hour day-of-month month day-of-week).
pub fn parse_cron(expr: &str) -> Result<Cron, croner::errors::CronError> {
    expr.parse()
}

/// The next time `cron` fires strictly after `after`.
pub fn next_after(cron: &Cron, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&after, false).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_fires_strictly_after() {
        let c = parse_cron("0 3 * * *").unwrap();
        let t = DateTime::parse_from_rfc3339("2026-11-29T02:59:59Z").unwrap().with_timezone(&Utc);
        assert_eq!(next_after(&c, t).unwrap().to_rfc3339(), "2026-11-29T03:00:00+00:00");
        let t = DateTime::parse_from_rfc3339("2026-11-29T03:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(next_after(&c, t).unwrap().to_rfc3339(), "2026-11-30T03:00:00+00:00", "strictly after");
        assert!(parse_cron("every night").is_err());
    }
}
