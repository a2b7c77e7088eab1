//! The live popularity rankings (`trending:{window}`): written by the updater
//! inside its exactly-once apply step, read by serving. They answer before any
//! model exists (day one) and are the "trending" lists of `GET /v1/popular`.
//!
//! **Forward decay.** A ranking is a sorted set whose score of an item is
//! `Σ w_e · exp((t_e − L) / W)` over its events `e` (weight `w_e`, time `t_e`),
//! where `W` is the window's time constant and `L` a landmark time stored in
//! `trending_landmarks`. Its value at time `t`, `score · exp(−(t − L) / W)`, is
//! the exponentially decayed count `Σ w_e · exp(−(t − t_e) / W)`: an event
//! counts 1 when it happens and 1/e after one window, and a steady stream of `r`
//! events per unit of time settles at `r · W`, the count of a sliding window of
//! length `W`. The factor `exp(−(t − L) / W)` is common to every item, so the
//! order of the sorted set is the ranking at any moment: nothing is decayed on
//! a write or a read, and an event arriving late or out of order adds exactly
//! what it would have added in order.
//!
//! Scores grow as `exp((t − L) / W)`; once the newest event is more than
//! [`RESCALE_AFTER_WINDOWS`] windows past the landmark, the writer multiplies
//! every score by `exp(−(L' − L) / W)` and moves the landmark to `L'` (one
//! `ZUNIONSTORE` of a bounded set), which changes no decayed count.
//!
//! The lists served from a ranking carry the model version
//! [`LIVE_POPULAR_VERSION`] (`live-popular`): they come from no trained model,
//! and tracking counts their impressions under that name.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::announcement::ModelVersion;

/// The model version of every list served from a live ranking. A valid
/// [`ModelVersion`] so impressions and `stats:{variant}:live-popular` need no
/// special case; the trainer's names are UTC timestamps, which never take it.
pub const LIVE_POPULAR_VERSION: &str = "live-popular";

/// [`LIVE_POPULAR_VERSION`] as a [`ModelVersion`].
pub fn live_popular_version() -> ModelVersion {
    ModelVersion::parse(LIVE_POPULAR_VERSION).unwrap_or_else(|_| unreachable!("the sentinel is a valid version"))
}

/// Scores are rescaled once the newest event is this many windows past the
/// landmark: `exp(32) ≈ 7.9e13`, far from a double's range, while a stored
/// score keeps 16 significant digits.
pub const RESCALE_AFTER_WINDOWS: f64 = 32.0;

/// The window `name` of `GET /v1/popular?window=` that selects the trained
/// model's popular list rather than a live ranking.
pub const MODEL_WINDOW: &str = "model";

/// A ranking's time constant and its name: a positive number and a unit
/// `s`, `m`, `h` or `d` (`"1h"`, `"24h"`, `"7d"`), between one minute and 365
/// days. The name is a segment of the key `trending:{name}` and the value of
/// `window=` in `GET /v1/popular`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    name: String,
    ms: i64,
}

/// Why a string is not a window.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid popularity window {0:?}: use a number and a unit s, m, h or d (e.g. \"1h\", \"24h\", \"7d\"), from 1 minute to 365 days")]
pub struct WindowError(pub String);

impl Window {
    /// Parses and validates a window name.
    pub fn parse(s: &str) -> Result<Window, WindowError> {
        let bad = || WindowError(s.chars().take(20).collect());
        let split = s.len().checked_sub(1).ok_or_else(bad)?;
        let (digits, unit) = s.split_at(split);
        if digits.is_empty()
            || digits.len() > 6
            || !digits.bytes().all(|b| b.is_ascii_digit())
            || digits.starts_with('0')
        {
            return Err(bad());
        }
        let n: i64 = digits.parse().map_err(|_| bad())?;
        let unit_ms = match unit {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        let ms = n * unit_ms;
        if !(60_000..=365 * 86_400_000).contains(&ms) {
            return Err(bad());
        }
        Ok(Window { name: s.to_owned(), ms })
    }

    /// The name, as configured.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The time constant, ms.
    pub fn ms(&self) -> i64 {
        self.ms
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Debug for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Window({:?})", self.name)
    }
}

impl std::str::FromStr for Window {
    type Err = WindowError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Window::parse(s)
    }
}

impl Serialize for Window {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name)
    }
}

impl<'de> Deserialize<'de> for Window {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Window::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `[popularity]`: the live rankings, read by the updater (which keeps them)
/// and serving (which answers from them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PopularityConfig {
    /// One ranking per window (empty = no live rankings).
    pub windows: Vec<Window>,
    /// Items kept in each ranking; the lowest-scored beyond it are trimmed
    /// after every batch.
    pub size: usize,
    /// The ranking that answers `popular` when no model list exists (before
    /// the first model, for every user); one of `windows`.
    pub fallback_window: Window,
}

impl Default for PopularityConfig {
    fn default() -> Self {
        let w = |s: &str| Window::parse(s).unwrap_or_else(|e| unreachable!("{e}"));
        PopularityConfig { windows: vec![w("1h"), w("24h")], size: 1_000, fallback_window: w("24h") }
    }
}

impl PopularityConfig {
    /// Rejects values that cannot work, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=100_000).contains(&self.size) {
            return Err(format!("popularity.size must be in 1..=100000, got {}", self.size));
        }
        for (i, w) in self.windows.iter().enumerate() {
            if let Some(other) = self.windows[..i].iter().find(|o| o.ms == w.ms) {
                return Err(format!("popularity.windows: {w} and {other} are the same window"));
            }
        }
        if !self.windows.is_empty() && !self.windows.contains(&self.fallback_window) {
            return Err(format!(
                "popularity.fallback_window {} is not one of popularity.windows ({})",
                self.fallback_window,
                self.window_names().join(", ")
            ));
        }
        Ok(())
    }

    /// The configured window of this name.
    pub fn window(&self, name: &str) -> Option<&Window> {
        self.windows.iter().find(|w| w.name == name)
    }

    /// The windows' names, in configuration order.
    pub fn window_names(&self) -> Vec<&str> {
        self.windows.iter().map(Window::as_str).collect()
    }
}

/// The forward-decay weight of an event at `ts_ms` against `landmark_ms`:
/// `exp((ts − L) / W)` (the updater's apply script computes the same).
pub fn forward_weight(ts_ms: i64, landmark_ms: i64, window_ms: i64) -> f64 {
    ((ts_ms - landmark_ms) as f64 / window_ms as f64).exp()
}

/// A stored score as the decayed count at `now_ms`: `score · exp(−(now − L) / W)`.
pub fn decayed_count(score: f64, landmark_ms: i64, window_ms: i64, now_ms: i64) -> f64 {
    score * ((landmark_ms - now_ms) as f64 / window_ms as f64).exp()
}

/// The landmark after events up to `newest_ms`: unchanged while they are
/// within [`RESCALE_AFTER_WINDOWS`] windows of it, else `newest_ms`, with the
/// factor every stored score is multiplied by (`None`: no rescale).
pub fn rescale(landmark_ms: i64, newest_ms: i64, window_ms: i64) -> Option<(i64, f64)> {
    if ((newest_ms - landmark_ms) as f64 / window_ms as f64) <= RESCALE_AFTER_WINDOWS {
        return None;
    }
    Some((newest_ms, forward_weight(landmark_ms, newest_ms, window_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    #[test]
    fn windows_parse_and_refuse() {
        let w = Window::parse("24h").unwrap();
        assert_eq!((w.as_str(), w.ms()), ("24h", 24 * H));
        assert_eq!(Window::parse("90s").unwrap().ms(), 90_000);
        assert_eq!(Window::parse("7d").unwrap().ms(), 7 * 24 * H);
        assert_eq!(Window::parse("30m").unwrap().ms(), 30 * 60_000);
        for bad in ["", "h", "1", "0h", "01h", "-1h", "1.5h", "1H", "1w", "59s", "366d", "1h ", "1234567s", "model"] {
            assert!(Window::parse(bad).is_err(), "{bad:?}");
        }
        let e = Window::parse("2x").unwrap_err().to_string();
        assert!(e.contains("\"2x\"") && e.contains("24h"), "{e}");
        let json = serde_json::to_string(&w).unwrap();
        assert_eq!(json, "\"24h\"");
        assert_eq!(serde_json::from_str::<Window>(&json).unwrap(), w);
        assert!(serde_json::from_str::<Window>("\"2x\"").is_err());
    }

    #[test]
    fn config_validation_names_the_key() {
        let c = PopularityConfig::default();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.window_names(), ["1h", "24h"]);
        assert_eq!(c.window("24h").map(Window::ms), Some(24 * H));
        assert_eq!(c.window("2h"), None);
        let mut c2 = c.clone();
        c2.fallback_window = Window::parse("2h").unwrap();
        assert!(c2.validate().unwrap_err().contains("popularity.fallback_window 2h"), "{:?}", c2.validate());
        let mut c3 = c.clone();
        c3.windows.push(Window::parse("60m").unwrap());
        assert!(c3.validate().unwrap_err().contains("60m and 1h"), "{:?}", c3.validate());
        let c4 = PopularityConfig { size: 0, ..c.clone() };
        assert!(c4.validate().unwrap_err().contains("popularity.size"));
        let none = PopularityConfig { windows: vec![], ..c };
        assert_eq!(none.validate(), Ok(()), "no windows: the fallback is not used");
        assert_eq!(live_popular_version().as_str(), LIVE_POPULAR_VERSION);
    }

    /// Σ w · exp(−(now − t) / W), computed directly.
    fn backward(events: &[(i64, f64)], w: i64, now: i64) -> f64 {
        events.iter().map(|&(t, wt)| wt * (-((now - t) as f64) / w as f64).exp()).sum()
    }

    #[test]
    fn forward_decay_equals_the_decayed_count_in_any_order_and_across_rescales() {
        let w = H;
        let t0 = 1_764_000_000_000;
        // Out of order, some before the landmark, weights of every kind.
        let events: Vec<(i64, f64)> =
            vec![(t0 + 10 * 60_000, 1.0), (t0 - 2 * H, 4.0), (t0 + 3 * H, 8.0), (t0 + 90_000, 1.0), (t0 + 3 * H, 1.0)];
        let landmark = t0;
        let score: f64 = events.iter().map(|&(t, wt)| wt * forward_weight(t, landmark, w)).sum();
        for now in [t0 + 3 * H, t0 + 5 * H, t0 + 48 * H] {
            let (f, b) = (decayed_count(score, landmark, w, now), backward(&events, w, now));
            assert!((f - b).abs() <= 1e-12 * b.max(1e-300), "now {now}: forward {f}, backward {b}");
        }
        // One event weighs 1 at its time and 1/e one window later.
        let one = forward_weight(t0, landmark, w);
        assert!((decayed_count(one, landmark, w, t0) - 1.0).abs() < 1e-12);
        assert!((decayed_count(one, landmark, w, t0 + w) - (-1f64).exp()).abs() < 1e-12);
        // A steady rate r per window settles at r (one event per minute for a 1 h window: ≈ 60).
        let steady: Vec<(i64, f64)> = (0..24 * 60).map(|m| (t0 + m * 60_000, 1.0)).collect();
        let s: f64 = steady.iter().map(|&(t, wt)| wt * forward_weight(t, landmark, w)).sum();
        let c = decayed_count(s, landmark, w, t0 + 24 * H);
        assert!((59.0..61.0).contains(&c), "{c}");

        // Months later: rescale, then keep adding; the decayed counts do not move.
        let late = t0 + 40 * H;
        assert_eq!(rescale(landmark, t0 + 32 * H, w), None, "within the bound");
        let (l2, factor) = rescale(landmark, late, w).unwrap();
        assert_eq!(l2, late);
        let rescaled = score * factor;
        let now = late + H;
        let before = decayed_count(score, landmark, w, now);
        let after = decayed_count(rescaled, l2, w, now);
        assert!((before - after).abs() <= 1e-12 * before, "{before} vs {after}");
        let more = rescaled + 2.0 * forward_weight(late + 60_000, l2, w);
        let mut all = events.clone();
        all.push((late + 60_000, 2.0));
        let (f, b) = (decayed_count(more, l2, w, now), backward(&all, w, now));
        assert!((f - b).abs() <= 1e-12 * b, "{f} vs {b}");
    }

    #[test]
    fn the_ranking_is_the_order_of_the_scores() {
        // Item a: many old events; item b: a few recent ones. Which leads
        // depends on the window, and the stored order says so at any `now`.
        let t0 = 1_764_000_000_000;
        let a: Vec<(i64, f64)> = (0..20).map(|i| (t0 + i * 60_000, 1.0)).collect();
        let b: Vec<(i64, f64)> = (0..5).map(|i| (t0 + 6 * H + i * 60_000, 1.0)).collect();
        for (w, b_leads) in [(H, true), (7 * 24 * H, false)] {
            let score = |ev: &[(i64, f64)]| ev.iter().map(|&(t, x)| x * forward_weight(t, t0, w)).sum::<f64>();
            assert_eq!(score(&b) > score(&a), b_leads, "window {w}");
            for now in [t0 + 7 * H, t0 + 30 * H] {
                assert_eq!(backward(&b, w, now) > backward(&a, w, now), b_leads, "window {w}, now {now}");
            }
        }
    }
}
