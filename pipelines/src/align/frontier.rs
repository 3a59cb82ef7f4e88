//! Reward–KL frontiers (pure): strata of the world, per-stratum summaries of an evaluated
//! policy, upper envelopes of r* against KL, their values at KL budgets with intervals over
//! seeds, paired comparisons, and Best-of-N's KL.

use super::stats::{mean, mean_ci};

/// KL(π_BoN ‖ π_ref) of best-of-N sampling from the reference, the standard value
/// log N − (N − 1)/N (Beirami et al. 2024 show it is an upper bound).
pub fn best_of_n_kl(n: usize) -> f64 {
    let n = n.max(1) as f64;
    n.ln() - (n - 1.0) / n
}

/// A set of families the report cuts by, with its name.
#[derive(Debug, Clone, PartialEq)]
pub struct Stratum {
    /// The stratum's name in tables (`all`, `low q`, `f3`, ...).
    pub name: String,
    /// Its families (every family for `all`).
    pub families: Vec<usize>,
}

impl Stratum {
    /// Whether family `f` (as a stored number) belongs to the stratum.
    pub fn has(&self, f: f64) -> bool {
        f >= 0.0 && self.families.contains(&(f as usize))
    }
}

/// The mean of `xs` over the items whose family (`family[i]`) is in `s`.
pub fn stratum_mean(xs: &[f64], family: &[f64], s: &Stratum) -> f64 {
    let v: Vec<f64> = xs
        .iter()
        .zip(family)
        .filter(|(x, f)| x.is_finite() && s.has(**f))
        .map(|(x, _)| *x)
        .collect();
    if v.is_empty() { f64::NAN } else { mean(&v) }
}

/// Calibration error of predicted probabilities against the **true** probabilities (not 0/1
/// outcomes): with `bins` equal-width bins on the predicted p, Σ_b (n_b/n) · |mean p − mean
/// p_true| in b. Non-finite entries are left out; NaN when nothing is left.
pub fn ece_against_truth(probs: &[f64], truth: &[f64], bins: usize) -> f64 {
    let bins = bins.max(1);
    let mut count = vec![0usize; bins];
    let mut p_sum = vec![0.0; bins];
    let mut t_sum = vec![0.0; bins];
    let mut n = 0;
    for (&p, &t) in probs.iter().zip(truth) {
        if !(p.is_finite() && t.is_finite()) {
            continue;
        }
        let p = p.clamp(0.0, 1.0);
        let b = ((p * bins as f64) as usize).min(bins - 1);
        count[b] += 1;
        p_sum[b] += p;
        t_sum[b] += t;
        n += 1;
    }
    if n == 0 {
        return f64::NAN;
    }
    (0..bins)
        .filter(|&b| count[b] > 0)
        .map(|b| count[b] as f64 / n as f64 * ((p_sum[b] - t_sum[b]) / count[b] as f64).abs())
        .sum()
}

/// The upper envelope of r* against KL at `budget`: the best r* of any point whose KL is at
/// most `budget` (the points include the reference at KL 0); NaN when none qualifies.
pub fn envelope_at(points: &[(f64, f64)], budget: f64) -> f64 {
    points
        .iter()
        .filter(|(kl, r)| kl.is_finite() && r.is_finite() && *kl <= budget)
        .map(|&(_, r)| r)
        .fold(f64::NAN, f64::max)
}

/// The index of the point with the best r* within `budget` of KL, if any.
pub fn operating_point(points: &[(f64, f64)], budget: f64) -> Option<usize> {
    points
        .iter()
        .enumerate()
        .filter(|(_, (kl, r))| kl.is_finite() && r.is_finite() && *kl <= budget)
        .max_by(|a, b| a.1.1.total_cmp(&b.1.1))
        .map(|(i, _)| i)
}

/// The staircase of the upper envelope: (KL, best r* so far) at every point that raises it,
/// in increasing KL.
pub fn envelope_steps(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(k, r)| k.is_finite() && r.is_finite())
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out: Vec<(f64, f64)> = Vec::new();
    for (k, r) in v {
        if out.last().is_none_or(|&(_, best)| r > best) {
            out.push((k, r));
        }
    }
    out
}

/// What a paired comparison of two entrants over seeds says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// The difference is positive by more than its 95% interval.
    Higher,
    /// The difference is negative by more than its 95% interval.
    Lower,
    /// The interval holds zero.
    Within,
    /// Fewer than two finite paired differences: no interval.
    Unknown,
}

/// The mean of the paired differences `a[i] − b[i]` (seed by seed), its 95% half-width, and
/// the verdict.
pub fn compare(a: &[f64], b: &[f64]) -> (f64, f64, Verdict) {
    let d: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(x, y)| x - y)
        .filter(|d| d.is_finite())
        .collect();
    match mean_ci(&d) {
        Some((m, Some(h))) => {
            let v = if m - h > 0.0 {
                Verdict::Higher
            } else if m + h < 0.0 {
                Verdict::Lower
            } else {
                Verdict::Within
            };
            (m, h, v)
        }
        Some((m, None)) => (m, f64::NAN, Verdict::Unknown),
        None => (f64::NAN, f64::NAN, Verdict::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_of_n_kl_by_hand() {
        assert_eq!(best_of_n_kl(1), 0.0);
        assert!((best_of_n_kl(2) - (2f64.ln() - 0.5)).abs() < 1e-15);
        assert!((best_of_n_kl(16) - (16f64.ln() - 15.0 / 16.0)).abs() < 1e-15);
        // It grows like log N and stays below it.
        for n in [2, 4, 8, 16, 64] {
            assert!(best_of_n_kl(n) < (n as f64).ln() && best_of_n_kl(n) > best_of_n_kl(n / 2));
        }
    }

    #[test]
    fn best_of_n_kl_bounds_the_exact_kl_of_a_discrete_reference() {
        // Best-of-N over K equally likely answers with distinct rewards: the i-th best of K
        // (i = 1 the best) is picked with probability ((K−i+1)/K)^N − ((K−i)/K)^N; its exact KL
        // to the uniform reference is at most log N − (N−1)/N, and close to it for large K.
        let k = 2000usize;
        for n in [2usize, 4, 16] {
            let kl: f64 = (1..=k)
                .map(|i| {
                    let hi = ((k - i + 1) as f64 / k as f64).powi(n as i32);
                    let lo = ((k - i) as f64 / k as f64).powi(n as i32);
                    let p = hi - lo;
                    if p > 0.0 {
                        p * (p * k as f64).ln()
                    } else {
                        0.0
                    }
                })
                .sum();
            assert!(kl <= best_of_n_kl(n) + 1e-12, "N = {n}: {kl}");
            assert!(best_of_n_kl(n) - kl < 0.01, "N = {n}: {kl}");
        }
    }

    #[test]
    fn envelopes_of_known_points() {
        let pts = [(0.0, 1.0), (0.5, 1.4), (2.0, 1.2), (3.0, 2.0), (12.0, 2.5)];
        assert_eq!(envelope_at(&pts, 1.0), 1.4);
        assert_eq!(envelope_at(&pts, 3.0), 2.0);
        assert_eq!(envelope_at(&pts, 10.0), 2.0);
        assert!(envelope_at(&pts[1..], 0.1).is_nan());
        assert_eq!(operating_point(&pts, 2.5), Some(1));
        assert_eq!(
            envelope_steps(&pts),
            vec![(0.0, 1.0), (0.5, 1.4), (3.0, 2.0), (12.0, 2.5)]
        );
    }

    #[test]
    fn calibration_against_the_truth() {
        // Predicting the true probability exactly: zero; always 0.5 against a truth of 0.9:
        // 0.4 whatever the outcomes would have been.
        let truth = [0.05, 0.35, 0.65, 0.95];
        assert!(ece_against_truth(&truth, &truth, 10) < 1e-15);
        assert!((ece_against_truth(&[0.5; 4], &[0.9; 4], 10) - 0.4).abs() < 1e-12);
        // Two bins, weighted by their counts.
        let e = ece_against_truth(&[0.1, 0.1, 0.8], &[0.3, 0.1, 0.8], 10);
        assert!((e - 2.0 / 3.0 * 0.1).abs() < 1e-12);
        assert!(ece_against_truth(&[f64::NAN], &[0.5], 10).is_nan());
    }

    #[test]
    fn strata_and_paired_comparisons() {
        let s = Stratum {
            name: "low q".into(),
            families: vec![1, 3],
        };
        let xs = [1.0, 2.0, 3.0, 4.0];
        let fam = [0.0, 1.0, 3.0, 5.0];
        assert_eq!(stratum_mean(&xs, &fam, &s), 2.5);
        // Differences 1, 1.2, 0.8: mean 1, clearly above zero.
        let (m, h, v) = compare(&[2.0, 2.2, 1.8], &[1.0, 1.0, 1.0]);
        assert!((m - 1.0).abs() < 1e-12 && h > 0.0 && h < 1.0);
        assert_eq!(v, Verdict::Higher);
        assert_eq!(compare(&[1.0, 0.0], &[0.0, 1.0]).2, Verdict::Within);
        assert_eq!(
            compare(&[0.0, 0.1, 0.0], &[1.0, 1.0, 1.1]).2,
            Verdict::Lower
        );
        assert_eq!(compare(&[1.0], &[0.0]).2, Verdict::Unknown);
    }
}
