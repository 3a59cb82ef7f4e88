//! Statistics of the benchmark (pure): win rate, sampled KL, pairwise accuracy, calibration
//! error, and means with t-distribution confidence intervals.

/// Win rate of `policy` over `reference`, paired by index: 1 where the policy's reward is
/// higher, 1/2 on a tie, 0 otherwise, averaged. NaN for no pairs.
pub fn win_rate(policy: &[f64], reference: &[f64]) -> f64 {
    let n = policy.len().min(reference.len());
    let wins: f64 = policy
        .iter()
        .zip(reference)
        .map(|(p, r)| match p.partial_cmp(r) {
            Some(std::cmp::Ordering::Greater) => 1.0,
            Some(std::cmp::Ordering::Equal) => 0.5,
            _ => 0.0,
        })
        .sum();
    wins / n as f64
}

/// The Monte-Carlo estimate of KL(π ‖ π_ref) from samples y ~ π: the mean of
/// log π(y) − log π_ref(y) (`policy_logps[i]`, `reference_logps[i]` of sample i).
pub fn kl_estimate(policy_logps: &[f64], reference_logps: &[f64]) -> f64 {
    let n = policy_logps.len().min(reference_logps.len());
    let sum: f64 = policy_logps
        .iter()
        .zip(reference_logps)
        .map(|(p, r)| p - r)
        .sum();
    sum / n as f64
}

/// Pairwise accuracy of margins against outcomes: the fraction of `margins` whose sign agrees
/// with `outcomes` (true: the first item is better), a zero margin counting 1/2.
pub fn accuracy(margins: &[f64], outcomes: &[bool]) -> f64 {
    let n = margins.len().min(outcomes.len());
    let right: f64 = margins
        .iter()
        .zip(outcomes)
        .map(|(&m, &o)| {
            if m == 0.0 {
                0.5
            } else if (m > 0.0) == o {
                1.0
            } else {
                0.0
            }
        })
        .sum();
    right / n as f64
}

/// Expected calibration error with `bins` equal-width bins on [0, 1]: Σ_b (n_b / n) ·
/// |mean p in b − frequency of the event in b|. A probability of exactly 1 falls in the last
/// bin; non-finite probabilities are left out. NaN when nothing is left.
pub fn ece(probs: &[f64], outcomes: &[bool], bins: usize) -> f64 {
    let bins = bins.max(1);
    let mut count = vec![0usize; bins];
    let mut p_sum = vec![0.0; bins];
    let mut hits = vec![0.0; bins];
    let mut n = 0usize;
    for (&p, &o) in probs.iter().zip(outcomes) {
        if !p.is_finite() {
            continue;
        }
        let p = p.clamp(0.0, 1.0);
        let b = ((p * bins as f64) as usize).min(bins - 1);
        count[b] += 1;
        p_sum[b] += p;
        hits[b] += f64::from(u8::from(o));
        n += 1;
    }
    if n == 0 {
        return f64::NAN;
    }
    (0..bins)
        .filter(|&b| count[b] > 0)
        .map(|b| {
            let c = count[b] as f64;
            c / n as f64 * (p_sum[b] / c - hits[b] / c).abs()
        })
        .sum()
}

/// The 97.5% quantile of Student's t with `dof` degrees of freedom (a table to 30, then the
/// Cornish-Fisher expansion around the normal quantile, within 1e-3 there).
pub fn t975(dof: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706_204_736,
        4.302_652_730,
        3.182_446_305,
        2.776_445_105,
        2.570_581_836,
        2.446_911_851,
        2.364_624_252,
        2.306_004_135,
        2.262_157_163,
        2.228_138_852,
        2.200_985_160,
        2.178_812_830,
        2.160_368_656,
        2.144_786_688,
        2.131_449_546,
        2.119_905_299,
        2.109_815_578,
        2.100_922_040,
        2.093_024_054,
        2.085_963_447,
        2.079_613_845,
        2.073_873_068,
        2.068_657_610,
        2.063_898_562,
        2.059_538_553,
        2.055_529_439,
        2.051_830_516,
        2.048_407_142,
        2.045_229_642,
        2.042_272_456,
    ];
    match dof {
        0 => f64::NAN,
        d if d <= 30 => TABLE[d - 1],
        d => {
            let z: f64 = 1.959_963_985;
            let d = d as f64;
            z + (z.powi(3) + z) / (4.0 * d)
                + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * d * d)
        }
    }
}

/// Mean and the half-width of its 95% confidence interval (t-distribution, n − 1 degrees of
/// freedom) over the finite values of `xs`; no interval for fewer than two.
pub fn mean_ci(xs: &[f64]) -> Option<(f64, Option<f64>)> {
    let v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return Some((mean, None));
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Some((mean, Some(t975(v.len() - 1) * (var / n).sqrt())))
}

/// The plain mean (NaN for nothing).
pub fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use poc_compiler::ops;

    #[test]
    fn win_rate_counts_ties_as_half() {
        assert_eq!(win_rate(&[1.0, 2.0, 3.0, 4.0], &[0.0, 2.0, 5.0, 4.0]), 0.5);
        assert_eq!(win_rate(&[3.0, 3.0], &[1.0, 3.0]), 0.75);
        assert!(win_rate(&[], &[]).is_nan());
    }

    #[test]
    fn kl_estimate_is_exact_on_samples_in_proportion() {
        // p = (3/4, 1/4), q = (1/2, 1/2): four samples in exactly p's proportions give
        // KL(p‖q) = 3/4 ln(3/2) + 1/4 ln(1/2).
        let (p, q) = ([0.75f64, 0.25], [0.5f64, 0.5]);
        let samples = [0, 0, 0, 1];
        let lp: Vec<f64> = samples.iter().map(|&i| p[i].ln()).collect();
        let lq: Vec<f64> = samples.iter().map(|&i| q[i].ln()).collect();
        let exact = 0.75 * 1.5f64.ln() + 0.25 * 0.5f64.ln();
        assert!((kl_estimate(&lp, &lq) - exact).abs() < 1e-12);
        // The same model: zero.
        assert_eq!(kl_estimate(&lp, &lp), 0.0);
    }

    #[test]
    fn ece_of_known_cases() {
        // Always 0.9 when half are true: |0.9 − 0.5| = 0.4.
        let probs = vec![0.9; 100];
        let outcomes: Vec<bool> = (0..100).map(|i| i % 2 == 0).collect();
        assert!((ece(&probs, &outcomes, 10) - 0.4).abs() < 1e-12);
        // Perfectly calibrated: in each bin the frequency equals the probability.
        let mut probs = Vec::new();
        let mut outcomes = Vec::new();
        for k in 0..10 {
            let p = (k as f64 + 0.5) / 10.0;
            for i in 0..100 {
                probs.push(p);
                outcomes.push(i < 10 * k + 5);
            }
        }
        assert!(ece(&probs, &outcomes, 10) < 1e-12);
        // Two bins weighted by their counts: 3 rows at 0.1 all true (0.9 off), 1 row at 0.95
        // true (0.05 off): (3·0.9 + 0.05) / 4.
        let e = ece(&[0.1, 0.1, 0.1, 0.95], &[true, true, true, true], 10);
        assert!((e - (3.0 * 0.9 + 0.05) / 4.0).abs() < 1e-12);
        // p = 1 falls in the last bin; nothing finite is NaN.
        assert_eq!(ece(&[1.0], &[true], 10), 0.0);
        assert!(ece(&[f64::NAN], &[true], 10).is_nan());
    }

    #[test]
    fn accuracy_with_zero_margins() {
        assert_eq!(
            accuracy(&[1.0, -1.0, 0.0, 2.0], &[true, true, false, false]),
            0.375
        );
    }

    #[test]
    fn t_interval_by_hand() {
        // [1, 2, 3]: mean 2, s = 1, t(0.975, 2) = 4.302653: half-width 4.302653 / √3.
        let (m, h) = mean_ci(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!(m, 2.0);
        assert!((h.unwrap() - 2.484_137_7).abs() < 1e-6);
        assert_eq!(mean_ci(&[5.0]), Some((5.0, None)));
        assert_eq!(mean_ci(&[]), None);
        // Beyond the table: close to the exact quantile (t(0.975, 40) = 2.021075, 100: 1.983972).
        assert!((t975(40) - 2.021_075).abs() < 1e-3);
        assert!((t975(100) - 1.983_972).abs() < 1e-4);
        assert!(t975(30) > t975(31));
    }

    #[test]
    fn sigmoid_is_stable() {
        assert_eq!(ops::sigmoid(0.0), 0.5);
        assert!(ops::sigmoid(-800.0) >= 0.0 && ops::sigmoid(800.0) == 1.0);
    }
}
