//! Implicit-feedback weight of each event kind: `r` of a (user, item) pair is
//! the sum of its events' weights, and confidence is `alpha · r`.

use schemas::EventKind;
use serde::{Deserialize, Serialize};

/// Weight of one event of each kind.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EventWeights {
    pub view: f32,
    pub addtocart: f32,
    pub transaction: f32,
}

impl Default for EventWeights {
    /// view 1, addtocart 4, transaction 8 (the original system's weights).
    fn default() -> Self {
        Self { view: 1.0, addtocart: 4.0, transaction: 8.0 }
    }
}

impl EventWeights {
    /// The weight of one event of kind `kind`.
    pub fn of(&self, kind: EventKind) -> f32 {
        match kind {
            EventKind::View => self.view,
            EventKind::AddToCart => self.addtocart,
            EventKind::Transaction => self.transaction,
        }
    }
}

/// Milliseconds in a day: half-lives are configured in days, timestamps are epoch ms.
const DAY_MS: f64 = 86_400_000.0;

/// Exponential recency decay of event weights: an event `a` days older than
/// `reference_ms` counts `2^(−a / half_life_days)` of its kind's weight.
/// Off (`half_life_days` 0, the default and what manifests without the field
/// read as) leaves every weight exactly as it was.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Recency {
    /// Half-life in days; 0 = off.
    pub half_life_days: f64,
    /// Time ages are measured from (epoch ms): the newest training event, so
    /// the trainer and the updater decay against the same instant.
    pub reference_ms: i64,
}

impl Recency {
    /// Decay with `half_life_days` against the newest of `ts` (off when the
    /// half-life is not positive or there is no timestamp).
    pub fn from_newest(half_life_days: f64, ts: impl Iterator<Item = i64>) -> Recency {
        match ts.max() {
            Some(reference_ms) if half_life_days > 0.0 => Recency { half_life_days, reference_ms },
            _ => Recency::default(),
        }
    }

    /// No decay.
    pub fn is_off(&self) -> bool {
        // NaN is off too (validation rejects it anyway).
        self.half_life_days.is_nan() || self.half_life_days <= 0.0
    }

    /// The factor of an event at `ts`. Events newer than the reference (the
    /// updater sees events after training) count fully rather than more than
    /// fully, so no weight ever exceeds its kind's.
    pub fn factor(&self, ts: i64) -> f32 {
        if self.is_off() {
            return 1.0;
        }
        let age_days = (self.reference_ms.saturating_sub(ts)).max(0) as f64 / DAY_MS;
        (-age_days / self.half_life_days).exp2() as f32
    }
}

impl EventWeights {
    /// The confidence contribution `weight(kind) · 2^(−age / half-life)` of one
    /// event at `ts`: the one place the trainer and the updater weigh events.
    /// With decay off this is exactly [`EventWeights::of`].
    pub fn decayed(&self, kind: EventKind, ts: i64, recency: &Recency) -> f32 {
        if recency.is_off() {
            self.of(kind)
        } else {
            self.of(kind) * recency.factor(ts)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_halves_at_one_half_life() {
        let w = EventWeights::default();
        let r = Recency { half_life_days: 7.0, reference_ms: 100 * DAY_MS as i64 };
        let at = |days: f64| r.reference_ms - (days * DAY_MS) as i64;
        assert_eq!(w.decayed(EventKind::AddToCart, r.reference_ms, &r), 4.0);
        assert_eq!(w.decayed(EventKind::AddToCart, at(7.0), &r), 2.0);
        assert_eq!(w.decayed(EventKind::Transaction, at(14.0), &r), 2.0);
        assert!((w.decayed(EventKind::View, at(3.5), &r) - 0.5f32.sqrt()).abs() < 1e-6);
        // Newer than the reference: full weight, never more.
        assert_eq!(w.decayed(EventKind::View, r.reference_ms + 1_000_000, &r), 1.0);
    }

    #[test]
    fn off_is_the_undecayed_weight_bit_for_bit() {
        let w = EventWeights { view: 0.3, addtocart: 4.7, transaction: 1.0 / 3.0 };
        for r in [
            Recency::default(),
            Recency { half_life_days: 0.0, reference_ms: 5 },
            Recency::from_newest(7.0, [].into_iter()),
        ] {
            assert!(r.is_off());
            for k in EventKind::ALL {
                for ts in [i64::MIN, 0, 1_433_221_332_117, i64::MAX] {
                    assert_eq!(w.decayed(k, ts, &r).to_bits(), w.of(k).to_bits());
                    assert_eq!(r.factor(ts).to_bits(), 1.0f32.to_bits());
                }
            }
        }
    }

    #[test]
    fn absent_recency_reads_as_off() {
        let r: Recency = serde_json::from_str("{}").unwrap();
        assert!(r.is_off());
    }
}
