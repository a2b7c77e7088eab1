//! The statistics of `GET /v1/stats`: Wilson score intervals of rates, and the
//! pooled two-proportion z-test of treatment against control.
//!
//! Rates are proportions of impressions (an impression counts at most once
//! per outcome, see `tracking`), so binomial methods apply. Wilson rather than
//! the normal ("Wald") interval because CTR and conversion rates are small and
//! arms can be small: Wald's interval then leaves [0, 1] or collapses to a
//! point at 0 events; Wilson's does neither.

/// Two-sided 95 % standard normal quantile, Φ⁻¹(0.975).
pub const Z95: f64 = 1.959_963_984_540_054;

/// A closed interval of rates.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

/// The Wilson score interval of `successes / trials` at the normal quantile
/// `z`; `None` without trials.
pub fn wilson(successes: u64, trials: u64, z: f64) -> Option<Interval> {
    if trials == 0 {
        return None;
    }
    let n = trials as f64;
    let p = (successes.min(trials)) as f64 / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denom;
    let half = z / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Some(Interval { low: (center - half).max(0.0), high: (center + half).min(1.0) })
}

/// The complementary error function, erfc(x) = 1 − erf(x), by the Chebyshev
/// fit of Numerical Recipes (§6.2, `erfcc`): fractional error below 1.2e-7
/// everywhere, ample for p-values.
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// The result of a two-proportion z-test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ZTest {
    /// (p_treatment − p_control) / pooled standard error.
    pub z: f64,
    /// Two-sided p-value, 2·(1 − Φ(|z|)) = erfc(|z| / √2).
    pub p_value: f64,
}

/// The pooled two-proportion z-test of `x_t / n_t` (treatment) against
/// `x_c / n_c` (control). `None` when it is undefined: an arm without trials,
/// or a pooled rate of exactly 0 or 1 (no variance).
pub fn two_proportion_z(x_c: u64, n_c: u64, x_t: u64, n_t: u64) -> Option<ZTest> {
    if n_c == 0 || n_t == 0 {
        return None;
    }
    let (nc, nt) = (n_c as f64, n_t as f64);
    let (pc, pt) = (x_c.min(n_c) as f64 / nc, x_t.min(n_t) as f64 / nt);
    let pooled = (x_c.min(n_c) + x_t.min(n_t)) as f64 / (nc + nt);
    let se = (pooled * (1.0 - pooled) * (1.0 / nc + 1.0 / nt)).sqrt();
    if se <= 0.0 || !se.is_finite() {
        return None;
    }
    let z = (pt - pc) / se;
    Some(ZTest { z, p_value: erfc(z.abs() / std::f64::consts::SQRT_2).clamp(0.0, 1.0) })
}

/// (treatment − control) / control; `None` when the control rate is 0.
pub fn relative_lift(control: f64, treatment: f64) -> Option<f64> {
    (control > 0.0).then(|| (treatment - control) / control)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn wilson_matches_hand_computed_intervals() {
        // 20 / 200: p = 0.1, z² / n = 0.019207294, centre = 0.107538, half-width = 0.041868 → [0.065670, 0.149406]
        // (computed by hand from the formula, checked with Python's math module).
        let i = wilson(20, 200, Z95).unwrap();
        assert!(close(i.low, 0.065_670_4, 1e-6), "{i:?}");
        assert!(close(i.high, 0.149_405_8, 1e-6), "{i:?}");
        // 0 / 50: the interval starts at 0 and is not empty (Wald's would be [0, 0]).
        let i = wilson(0, 50, Z95).unwrap();
        assert_eq!(i.low, 0.0);
        assert!(close(i.high, 0.071_347_6, 1e-6), "{i:?}");
        // 1 / 1: [0.206549, 1].
        let i = wilson(1, 1, Z95).unwrap();
        assert!(close(i.low, 0.206_549_3, 1e-6) && i.high == 1.0, "{i:?}");
        assert_eq!(wilson(0, 0, Z95), None);
        // Symmetry: the interval of x / n mirrors that of (n − x) / n.
        let (a, b) = (wilson(7, 90, Z95).unwrap(), wilson(83, 90, Z95).unwrap());
        assert!(close(a.low, 1.0 - b.high, 1e-12) && close(a.high, 1.0 - b.low, 1e-12));
    }

    #[test]
    fn erfc_matches_known_values() {
        assert!(close(erfc(0.0), 1.0, 2e-7));
        assert!(close(erfc(Z95 / std::f64::consts::SQRT_2), 0.05, 1e-7));
        assert!(close(erfc(1.0), 0.157_299_207_050_285_1, 2e-8));
        assert!(close(erfc(-1.0), 1.842_700_792_949_715, 2e-8));
        assert!(close(erfc(3.0) / 2.209_049_699_858_544e-5, 1.0, 1.2e-7));
    }

    #[test]
    fn two_proportion_test_matches_hand_computed_values() {
        // Control 100 / 1000, treatment 130 / 1000: pooled 0.115,
        // se = sqrt(0.115 · 0.885 · 0.002) = 0.0142671, z = 0.03 / se = 2.102741,
        // p = erfc(2.102741 / √2) = 0.035488 (checked with Python's math.erfc).
        let t = two_proportion_z(100, 1000, 130, 1000).unwrap();
        assert!(close(t.z, 2.102_740_6, 1e-6), "{t:?}");
        assert!(close(t.p_value, 0.035_488_5, 1e-6), "{t:?}");
        assert!(close(relative_lift(0.1, 0.13).unwrap(), 0.3, 1e-12));
        // Treatment worse: negative z, the same two-sided p-value.
        let r = two_proportion_z(130, 1000, 100, 1000).unwrap();
        assert!(close(r.z, -t.z, 1e-12) && close(r.p_value, t.p_value, 1e-12));
        // Unequal sizes: 20 / 200 against 45 / 300. pooled 0.13, se = 0.0307002, z = 1.628656, p = 0.103386.
        let u = two_proportion_z(20, 200, 45, 300).unwrap();
        assert!(close(u.z, 1.628_655_9, 1e-6), "{u:?}");
        assert!(close(u.p_value, 0.103_385_9, 1e-6), "{u:?}");
        // Equal rates: z = 0, p = 1.
        let e = two_proportion_z(5, 50, 10, 100).unwrap();
        assert!(close(e.z, 0.0, 1e-12) && close(e.p_value, 1.0, 2e-7));
        // Undefined: no trials, or no variance.
        assert_eq!(two_proportion_z(0, 0, 1, 10), None);
        assert_eq!(two_proportion_z(0, 10, 0, 10), None);
        assert_eq!(two_proportion_z(10, 10, 20, 20), None);
        assert_eq!(relative_lift(0.0, 0.1), None);
    }
}
