//! The synthetic preference world (v2): determinism per seed, a total and finite r*, and the
//! statistics the world promises, each measured against what its definition predicts:
//! SFT answers that say the target with probability q (then Poisson edits), on-policy pairs of
//! distinct SFT draws, Bradley-Terry labels per family with their true probability, scores
//! whose calibrated γ reproduces it, useless scores that change nothing but the scores, the
//! near-miss stress world, the oracle `World::label`, and files that the TRL loader reads
//! without a bad row. Which task, q, T or role a family has is read from the configuration.

use poc_runtime::data::Tok;
use poc_runtime::data::world::{
    Candidates, Family, PreferenceRow, Prompt, REWARD_MAX, REWARD_MIN, Role, SCORE_SLOPE, SftRow,
    Task, USELESS_SCORE_NOISE, World, WorldConfig, is_heldout_word, reward, sigmoid, to_jsonl,
};
use rand::{Rng, SeedableRng};
use std::collections::HashSet;

/// Every file of a world, as text (what `poc world` writes).
fn files(seed: u64, n: usize) -> Vec<String> {
    let w = World::new(seed);
    let useless = world_with(seed, |c| c.score_noise = USELESS_SCORE_NOISE);
    let sft = w.sft_rows(n);
    let train = w.train_pairs(n);
    let stats = w.family_stats(&sft, &train);
    vec![
        w.manifest(&[("train.jsonl", n)], &stats).to_string(),
        to_jsonl(sft.iter().map(|r| r.to_json())),
        to_jsonl(w.heldout_sft_rows(n).iter().map(|r| r.to_json())),
        to_jsonl(train.iter().map(|r| r.to_json())),
        to_jsonl(useless.train_pairs(n).iter().map(|r| r.to_json())),
        to_jsonl(w.heldout_pairs(n).iter().map(|r| r.to_json())),
        to_jsonl(w.eval_prompts(n).iter().map(|r| r.to_json())),
    ]
}

/// The default world of `seed` with `edit` applied to its configuration.
fn world_with(seed: u64, edit: impl FnOnce(&mut WorldConfig)) -> World {
    let mut c = WorldConfig::new(seed);
    edit(&mut c);
    World::with_config(c).unwrap()
}

/// The parsed prompt of a row (every generated row has a world prompt).
fn parse(prompt: &str) -> Prompt {
    Prompt::parse(prompt).unwrap_or_else(|| panic!("not a world prompt: {prompt:?}"))
}

/// P(Poisson(λ) = 0): an SFT answer without edits.
fn unedited(lambda: f64) -> f64 {
    (-lambda).exp()
}

/// The family whose role is `role` (the default world has one of each).
fn family_of(w: &World, role: Role) -> (usize, &Family) {
    w.config()
        .families
        .iter()
        .enumerate()
        .find(|(_, f)| f.role == role)
        .unwrap_or_else(|| panic!("no {role:?} family"))
}

/// Unrestricted Damerau-Levenshtein distance (insertions, deletions, substitutions, swaps of
/// neighbours; a metric, so k random edits of `corrupt` stay within distance k).
fn damerau(a: &[u8], b: &[u8]) -> usize {
    let (n, m) = (a.len(), b.len());
    let inf = n + m;
    let mut d = vec![vec![0usize; m + 2]; n + 2];
    d[0][0] = inf;
    for i in 0..=n {
        d[i + 1][0] = inf;
        d[i + 1][1] = i;
    }
    for j in 0..=m {
        d[0][j + 1] = inf;
        d[1][j + 1] = j;
    }
    let mut last_row = [0usize; 256];
    for i in 1..=n {
        let mut last_col = 0;
        for j in 1..=m {
            let (i1, j1) = (last_row[usize::from(b[j - 1])], last_col);
            let cost = if a[i - 1] == b[j - 1] {
                last_col = j;
                0
            } else {
                1
            };
            d[i + 1][j + 1] = (d[i][j] + cost)
                .min(d[i + 1][j] + 1)
                .min(d[i][j + 1] + 1)
                .min(d[i1][j1] + (i - i1 - 1) + 1 + (j - j1 - 1));
        }
        last_row[usize::from(a[i - 1])] = i;
    }
    d[n + 1][m + 1]
}

fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let cov: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
    cov / (vx * vy).sqrt()
}

/// Pearson correlation of the pairs' scores (both sides) with their true rewards.
fn score_reward_correlation(pairs: &[PreferenceRow]) -> f64 {
    let scores: Vec<f64> = pairs
        .iter()
        .flat_map(|p| [p.score_chosen, p.score_rejected])
        .collect();
    let rewards: Vec<f64> = pairs
        .iter()
        .flat_map(|p| [p.true_reward_chosen, p.true_reward_rejected])
        .collect();
    pearson(&scores, &rewards)
}

/// Checks the labels of `pairs` against Bradley-Terry at each family's temperature: per family,
/// the number of flipped untied labels lies within 4 standard errors of the prediction
/// Σ (1 − σ(|gap| / T)). Returns each family's (untied pairs, flip rate).
fn assert_bradley_terry(
    w: &World,
    pairs: &[PreferenceRow],
    min_untied: usize,
) -> Vec<(usize, f64)> {
    w.config()
        .families
        .iter()
        .enumerate()
        .map(|(id, f)| {
            let untied: Vec<f64> = pairs
                .iter()
                .filter(|p| p.family == id && p.gap() != 0.0)
                .map(PreferenceRow::gap)
                .collect();
            let n = untied.len();
            assert!(n >= min_untied, "family {id}: {n} untied pairs");
            let flips = untied.iter().filter(|g| **g < 0.0).count() as f64;
            let p: Vec<f64> = untied
                .iter()
                .map(|g| 1.0 - sigmoid(g.abs() / f.temperature))
                .collect();
            let predicted: f64 = p.iter().sum();
            let se = p.iter().map(|q| q * (1.0 - q)).sum::<f64>().sqrt().max(0.5);
            assert!(
                (flips - predicted).abs() < 4.0 * se,
                "family {id} (T = {}): {flips} flips of {n}, Bradley-Terry predicts {predicted:.1} ± {se:.1}",
                f.temperature
            );
            (n, flips / n as f64)
        })
        .collect()
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let a = files(5, 300);
    assert_eq!(a, files(5, 300));
    let b = files(6, 300);
    for (x, y) in a.iter().zip(&b) {
        assert_ne!(x, y);
    }
    // Each file has its own stream: more rows extend a file (scores included), whatever the
    // size of the others.
    let w = World::new(5);
    let prefix = |short: Vec<serde_json::Value>, long: Vec<serde_json::Value>| {
        assert_eq!(short.len(), 100);
        assert_eq!(long.len(), 200);
        assert!(to_jsonl(long).starts_with(&to_jsonl(short)));
    };
    let json = |rows: Vec<PreferenceRow>| rows.iter().map(PreferenceRow::to_json).collect();
    let sft = |rows: Vec<SftRow>| rows.iter().map(SftRow::to_json).collect();
    prefix(json(w.train_pairs(100)), json(w.train_pairs(200)));
    prefix(json(w.heldout_pairs(100)), json(w.heldout_pairs(200)));
    prefix(sft(w.sft_rows(100)), sft(w.sft_rows(200)));
    prefix(sft(w.heldout_sft_rows(100)), sft(w.heldout_sft_rows(200)));
    let prompts = |n| w.eval_prompts(n).iter().map(|p| p.to_json()).collect();
    prefix(prompts(100), prompts(200));
    // The streams differ: SFT rows on training and held-out words are not the same draws.
    assert_ne!(w.sft_rows(50), w.heldout_sft_rows(50));
}

#[test]
fn reward_is_total_finite_and_bounded() {
    let prompt = "f3 reverse kqzm ->";
    assert_eq!(reward(prompt, " mzqk"), REWARD_MAX);
    assert_eq!(
        reward(prompt, "mzqk"),
        REWARD_MAX,
        "surrounding whitespace is free"
    );
    assert_eq!(reward(prompt, ""), 0.0);
    assert_eq!(
        reward(prompt, " mzqx"),
        REWARD_MAX * 0.75,
        "one edit in four"
    );
    assert_eq!(reward("not a world prompt", " mzqk"), REWARD_MIN);
    assert_eq!(reward(prompt, &"x".repeat(1 << 20)), REWARD_MIN);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut texts: Vec<String> = vec![
        String::new(),
        " ".into(),
        "\n\t ".into(),
        "\u{0}".into(),
        "é∂😀".into(),
        "<|end_of_text|>".into(),
        " mzqk".repeat(100_000),
    ];
    for _ in 0..2000 {
        let len = rng.random_range(0..80);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        texts.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    let prompts = [
        prompt,
        "f0 copy abcd ->",
        "f4 double abcdefg ->",
        "f1 upper zzzz ->",
        "",
        "f9 sort qq ->",
    ];
    for p in prompts {
        for t in &texts {
            let r = reward(p, t);
            assert!(
                r.is_finite() && (REWARD_MIN..=REWARD_MAX).contains(&r),
                "r*({p:?}, {t:?}) = {r}"
            );
            assert_eq!(r, reward(p, t), "pure");
        }
    }
}

#[test]
fn rows_carry_their_family_true_rewards_and_probabilities() {
    let w = World::new(11);
    for p in w.train_pairs(600).iter().chain(&w.heldout_pairs(120)) {
        let prompt = parse(&p.prompt);
        assert_eq!(prompt.family, p.family);
        let f = &w.config().families[p.family];
        assert_eq!(prompt.task, f.task, "{}", p.prompt);
        assert_eq!(
            (p.temperature, p.q, p.edit_rate),
            (f.temperature, f.q, f.edit_rate)
        );
        assert_eq!(p.true_reward_chosen, reward(&p.prompt, &p.chosen));
        assert_eq!(p.true_reward_rejected, reward(&p.prompt, &p.rejected));
        assert_eq!(p.label_flipped(), p.gap() < 0.0);
        assert_eq!(p.bt_prob(), sigmoid(p.gap() / f.temperature));
        assert_eq!(p.bt_prob() < 0.5, p.label_flipped());
        let gamma = 1.0 / ((9.0 / 4.0) * f.temperature);
        assert!((p.calibrated_gamma() - gamma).abs() < 1e-12 * gamma);
        assert_eq!(p.calibrated_gamma(), f.calibrated_gamma());
        assert_ne!(p.chosen, p.rejected);
        for s in [p.score_chosen, p.score_rejected] {
            assert!((1.0..=10.0).contains(&s) && (s * 2.0).fract() == 0.0, "{s}");
        }
        // The JSON row says the same.
        let j = p.to_json();
        assert_eq!(j["label_flipped"], u8::from(p.label_flipped()));
        assert_eq!(j["bt_prob"].as_f64(), Some(p.bt_prob()));
        assert_eq!(j["calibrated_gamma"].as_f64(), Some(p.calibrated_gamma()));
        assert_eq!(j["temperature"].as_f64(), Some(f.temperature));
    }
    for r in w.sft_rows(120).iter().chain(&w.heldout_sft_rows(120)) {
        assert_eq!(r.true_reward, reward(&r.prompt, &r.completion));
        let prompt = parse(&r.prompt);
        assert_eq!(prompt.family, r.family);
        assert_eq!(prompt.task, w.config().families[r.family].task);
    }
}

#[test]
fn on_policy_pairs_are_distinct_sft_draws_of_one_prompt() {
    let w = World::new(12);
    assert_eq!(w.config().candidates, Candidates::OnPolicy);
    let draws = w.config().samples_per_prompt;
    let most = draws * (draws - 1) / 2;
    let pairs = w.train_pairs(6000);
    // Prompts come in runs (a prompt's pairs are consecutive; neighbouring prompts are of
    // different families).
    let mut runs: Vec<&[PreferenceRow]> = pairs.chunk_by(|a, b| a.prompt == b.prompt).collect();
    let last = runs.pop().unwrap();
    let mut sizes = vec![0usize; most + 1];
    for (i, run) in runs.iter().chain([&last]).enumerate() {
        let prompt = parse(&run[0].prompt);
        let target = prompt.target();
        let mut completions: Vec<&str> = Vec::new();
        let mut seen = HashSet::new();
        for p in *run {
            assert_ne!(p.chosen, p.rejected, "{p:?}");
            let key = if p.chosen < p.rejected {
                (&p.chosen, &p.rejected)
            } else {
                (&p.rejected, &p.chosen)
            };
            assert!(seen.insert(key), "a pair twice: {p:?}");
            for c in [&p.chosen, &p.rejected] {
                if !completions.contains(&c.as_str()) {
                    completions.push(c);
                }
                // What the SFT process can say: the target or the echoed word, within 4
                // random edits, in the case of its base.
                let answer = c.strip_prefix(' ').expect("a leading space").as_bytes();
                let near = |base: &str| damerau(answer, base.as_bytes()) <= 4;
                assert!(near(&target) || near(&prompt.word), "{c:?} for {prompt:?}");
                assert!(
                    !answer.is_empty()
                        && (answer.iter().all(u8::is_ascii_lowercase)
                            || answer.iter().all(u8::is_ascii_uppercase)),
                    "{c:?}"
                );
            }
        }
        let m = completions.len();
        assert!(m <= draws, "{m} distinct completions of {draws} draws");
        let complete = m * (m - 1) / 2;
        if i < runs.len() {
            // Every pair of the prompt's distinct draws (only the file's last prompt may be cut).
            assert_eq!(run.len(), complete, "{run:?}");
            sizes[run.len()] += 1;
        } else {
            assert!(run.len() <= complete);
        }
    }
    eprintln!("prompts by number of pairs (0..={most}): {sizes:?}");
    // Draws do repeat (1 or 3 pairs) and do all differ (6 pairs): both happen often.
    assert!(sizes[1] > 50 && sizes[most] > 50, "{sizes:?}");
    assert!(damerau(b"ca", b"abc") == 2 && damerau(b"kqzm", b"qkmz") == 2);
}

/// Checks that `rows` (SFT rows of one kind) say the exact target as often as the SFT process
/// predicts: an unedited answer (P(Poisson(edit_rate) = 0)) of the target (probability q) or of
/// the echoed word where the word is its own target (a sorted word for `sort`, ...). Within 4
/// binomial standard errors per family; returns each family's rate.
fn assert_target_rates(w: &World, rows: &[SftRow]) -> Vec<f64> {
    let k = w.config().families.len();
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r.family, i % k, "families in turn");
    }
    w.config()
        .families
        .iter()
        .enumerate()
        .map(|(id, f)| {
            let mine: Vec<&SftRow> = rows.iter().filter(|r| r.family == id).collect();
            let mut hits = 0.0;
            let mut predicted = 0.0;
            let mut variance = 0.0;
            for r in &mine {
                let prompt = parse(&r.prompt);
                let target = prompt.target();
                let habit_is_target = prompt.word == target;
                let p = unedited(f.edit_rate) * if habit_is_target { 1.0 } else { f.q };
                predicted += p;
                variance += p * (1.0 - p);
                if r.completion == format!(" {target}") {
                    hits += 1.0;
                }
            }
            let n = mine.len() as f64;
            let se = variance.sqrt().max(1.0);
            assert!(
                (hits - predicted).abs() < 4.0 * se,
                "family {id} (q = {}, edit rate {}): {hits} of {n} SFT answers are the target, predicted {predicted:.1} ± {se:.1}",
                f.q,
                f.edit_rate
            );
            hits / n
        })
        .collect()
}

#[test]
fn sft_answers_say_the_target_with_probability_q_then_edits() {
    let w = World::new(4);
    let sft = w.sft_rows(12_000);
    let rates = assert_target_rates(&w, &sft);
    eprintln!("SFT target rates per family: {rates:?}");
    // The held-out SFT rows come from the same process.
    assert_target_rates(&w, &w.heldout_sft_rows(6000));
    // The edit rate alone: an answer is unedited (exactly the target or the echoed word) with
    // probability P(Poisson(edit_rate) = 0), whatever q.
    for (id, f) in w.config().families.iter().enumerate() {
        let mine: Vec<&SftRow> = sft.iter().filter(|r| r.family == id).collect();
        let n = mine.len() as f64;
        let clean = mine
            .iter()
            .filter(|r| {
                let p = parse(&r.prompt);
                r.completion == format!(" {}", p.target()) || r.completion == format!(" {}", p.word)
            })
            .count() as f64;
        let p = unedited(f.edit_rate);
        // An edit can give the answer back (a swap of two equal letters): allow 1% of bias.
        let se = (n * p * (1.0 - p)).sqrt();
        assert!(
            (clean - n * p).abs() < 4.0 * se + 0.01 * n,
            "family {id} (edit rate {}): {clean} of {n} unedited, predicted {:.1} ± {se:.1}",
            f.edit_rate,
            n * p
        );
    }
    // Aligned families' references are far better than misaligned ones'.
    let stats = w.family_stats(&sft, &[]);
    let mean = |role: Role| {
        let s: Vec<_> = stats.iter().filter(|s| s.role == role).collect();
        assert!(!s.is_empty(), "{role:?}");
        s.iter().map(|s| s.mean_sft_reward).sum::<f64>() / s.len() as f64
    };
    assert!(
        mean(Role::Aligned) - mean(Role::Misaligned) > 1.0,
        "{stats:?}"
    );
    // Of two families that differ in q alone, the better aligned has the better answers.
    let fams = &w.config().families;
    let mut compared = 0;
    for (i, a) in fams.iter().enumerate() {
        for (j, b) in fams.iter().enumerate() {
            let twins =
                a.task == b.task && a.temperature == b.temperature && a.edit_rate == b.edit_rate;
            if twins && a.q > b.q {
                let (ra, rb) = (stats[i].mean_sft_reward, stats[j].mean_sft_reward);
                assert!(
                    ra > rb + 0.5,
                    "f{i} (q = {}) {ra} vs f{j} (q = {}) {rb}",
                    a.q,
                    b.q
                );
                compared += 1;
            }
        }
    }
    assert!(compared > 0, "no two families differ in q alone");
}

#[test]
fn the_hard_family_almost_never_says_the_target() {
    let w = World::new(13);
    let (hard, f) = family_of(&w, Role::Hard);
    let sft = w.sft_rows(12_000);
    let mine: Vec<&SftRow> = sft.iter().filter(|r| r.family == hard).collect();
    let says = |r: &&&SftRow| r.completion == format!(" {}", parse(&r.prompt).target());
    let rate = mine.iter().filter(says).count() as f64 / mine.len() as f64;
    // Where the echoed word is not already the target (a sorted word is its own `sort`), the
    // target comes with probability q unedited, or when an edit happens to give it (a swap in
    // a nearly sorted word): q is near zero, and so is the rate.
    let proper: Vec<&&SftRow> = mine
        .iter()
        .filter(|r| {
            let p = parse(&r.prompt);
            p.word != p.target()
        })
        .collect();
    let proper_rate = proper.iter().filter(|r| says(r)).count() as f64 / proper.len() as f64;
    let p = f.q * unedited(f.edit_rate);
    eprintln!(
        "hard family f{hard}: {rate:.4} of SFT answers are the target, {proper_rate:.4} where the word is not its own target ({} rows), q·P0 = {p:.4}",
        proper.len()
    );
    assert!(f.q < 0.1, "{f:?}");
    assert!(proper_rate < 0.04, "{proper_rate}");
    assert!(rate < 0.12, "{rate}");
    // Its pairs rarely contain the target, unlike every other family's.
    let pairs = w.train_pairs(12_000);
    let stats = w.family_stats(&sft, &pairs);
    let hard_fraction = stats[hard].target_pair_fraction;
    for s in &stats {
        eprintln!(
            "f{}: {:.3} of pairs with the target",
            s.family, s.target_pair_fraction
        );
        if s.family != hard {
            assert!(s.target_pair_fraction > hard_fraction, "{stats:?}");
        }
    }
    assert!(hard_fraction < 0.2, "{stats:?}");
}

#[test]
fn labels_follow_bradley_terry_per_family() {
    let w = World::new(1);
    let pairs = w.train_pairs(24_000);
    let rates = assert_bradley_terry(&w, &pairs, 1000);
    eprintln!("(untied pairs, flip rate) per family: {rates:?}");
    // The temperature matters: of two families that differ in T alone (the decoupled control
    // and its aligned twin), the hotter one flips far more often.
    let fams = &w.config().families;
    let mut compared = 0;
    for (i, a) in fams.iter().enumerate() {
        for (j, b) in fams.iter().enumerate() {
            let twins = a.task == b.task && a.q == b.q && a.edit_rate == b.edit_rate;
            if twins && a.temperature < b.temperature {
                let (ra, rb) = (rates[i].1, rates[j].1);
                assert!(
                    rb > 3.0 * ra + 0.05,
                    "f{i} (T = {}) flips {ra}, f{j} (T = {}) {rb}",
                    a.temperature,
                    b.temperature
                );
                compared += 1;
            }
        }
    }
    assert!(compared > 0, "no two families differ in T alone");
    // Ties are fair coins: neither side is flipped, and the stats count them apart.
    let stats = w.family_stats(&[], &pairs);
    for (s, (untied, _)) in stats.iter().zip(&rates) {
        assert_eq!(s.pairs - s.ties, *untied);
        assert!((s.flip_rate - s.predicted_flip_rate).abs() < 0.05, "{s:?}");
    }
}

#[test]
fn the_calibrated_gamma_reproduces_the_true_probability_from_noise_free_scores() {
    let w = world_with(14, |c| c.score_noise = 0.0);
    let pairs = w.train_pairs(6000);
    let mut worst_logit: f64 = 0.0;
    let mut abs_error = 0.0;
    let mut worst_prob: f64 = 0.0;
    for p in &pairs {
        let f = &w.config().families[p.family];
        assert!((f.calibrated_gamma() - 1.0 / ((9.0 / 4.0) * f.temperature)).abs() < 1e-12);
        assert!((SCORE_SLOPE - 9.0 / 4.0).abs() < 1e-12);
        // Noise-free scores are the linear map of r* rounded to halves: each is off by at most
        // 1/4, so the score gap is (9/4)·gap ± 1/2 ...
        let score_gap = p.score_chosen - p.score_rejected;
        let err = (score_gap - SCORE_SLOPE * p.gap()).abs();
        assert!(err <= 0.5 + 1e-9, "{p:?}: score gap {score_gap}");
        // ... and σ(γ·Δscore) is σ(gap / T) up to the change of σ over γ/2 around gap / T.
        let gamma = p.calibrated_gamma();
        let z = p.gap() / p.temperature;
        let est = sigmoid(gamma * score_gap);
        let slack = gamma * 0.5;
        let bound = (sigmoid(z + slack) - sigmoid(z)).max(sigmoid(z) - sigmoid(z - slack));
        assert!(
            (est - p.bt_prob()).abs() <= bound + 1e-12,
            "{p:?}: σ(γΔs) = {est}, bt_prob = {}",
            p.bt_prob()
        );
        worst_logit = worst_logit.max((gamma * score_gap - z).abs());
        worst_prob = worst_prob.max((est - p.bt_prob()).abs());
        abs_error += (est - p.bt_prob()).abs();
    }
    let mean_error = abs_error / pairs.len() as f64;
    eprintln!(
        "calibrated γ: worst logit error {worst_logit:.3}, worst probability error {worst_prob:.3}, mean {mean_error:.4}"
    );
    // Rounding errors of the two scores mostly cancel: on average the estimate is close.
    assert!(mean_error < 0.02, "{mean_error}");
}

#[test]
fn useless_scores_keep_the_pairs_and_lose_the_information() {
    let informative = World::new(3);
    let useless = world_with(3, |c| c.score_noise = USELESS_SCORE_NOISE);
    let (a, b) = (informative.train_pairs(6000), useless.train_pairs(6000));
    let (ha, hb) = (informative.heldout_pairs(600), useless.heldout_pairs(600));
    for (x, y) in a.iter().zip(&b).chain(ha.iter().zip(&hb)) {
        assert_eq!(
            (
                &x.prompt,
                &x.chosen,
                &x.rejected,
                x.label_flipped(),
                x.bt_prob()
            ),
            (
                &y.prompt,
                &y.chosen,
                &y.rejected,
                y.label_flipped(),
                y.bt_prob()
            )
        );
    }
    assert_eq!((a.len(), ha.len()), (b.len(), hb.len()));
    assert_eq!(informative.sft_rows(300), useless.sft_rows(300));
    let (rho, rho_useless) = (score_reward_correlation(&a), score_reward_correlation(&b));
    eprintln!("Pearson(score, r*): informative {rho:.3}, useless {rho_useless:.3}");
    assert!(rho > 0.9 && rho_useless < 0.8, "{rho} vs {rho_useless}");
    assert!(rho - rho_useless > 0.2, "{rho} vs {rho_useless}");
    // Informative scores are still noisy: not a function of r* ...
    let clean = |r: f64| ((1.0 + SCORE_SLOPE * (r - REWARD_MIN)) * 2.0).round() / 2.0;
    let sides = |p: &PreferenceRow| {
        [
            (p.score_chosen, p.true_reward_chosen),
            (p.score_rejected, p.true_reward_rejected),
        ]
    };
    let off = a
        .iter()
        .flat_map(sides)
        .filter(|(s, r)| *s != clean(*r))
        .count() as f64
        / (2 * a.len()) as f64;
    // ... and sometimes disagree with r* on the order of the pair; useless ones far more often.
    let disagree = |pairs: &[PreferenceRow]| {
        let untied: Vec<&PreferenceRow> = pairs.iter().filter(|p| p.gap() != 0.0).collect();
        let wrong = untied
            .iter()
            .filter(|p| (p.score_chosen - p.score_rejected) * p.gap() < 0.0)
            .count();
        wrong as f64 / untied.len() as f64
    };
    let (da, db) = (disagree(&a), disagree(&b));
    eprintln!(
        "noisy scores {off:.3}; score order against r*: informative {da:.3}, useless {db:.3}"
    );
    assert!(off > 0.3, "{off}");
    assert!(da > 0.005 && db > 4.0 * da, "{da} vs {db}");
}

#[test]
fn near_miss_candidates_give_one_pair_per_prompt_with_mostly_small_gaps() {
    let w = world_with(2, |c| c.candidates = Candidates::NearMiss);
    let pairs = w.train_pairs(6000);
    let k = w.config().families.len();
    for (i, p) in pairs.iter().enumerate() {
        assert_eq!(p.family, i % k, "one pair per prompt, families in turn");
        assert_ne!(p.chosen, p.rejected);
    }
    assert!(pairs.windows(2).all(|x| x[0].prompt != x[1].prompt));
    let small = pairs.iter().filter(|p| p.gap().abs() < 1.0).count() as f64 / 6000.0;
    let large = pairs.iter().filter(|p| p.gap().abs() >= 2.0).count() as f64 / 6000.0;
    eprintln!("near-miss: {small:.3} of |gap| < 1, {large:.3} of |gap| ≥ 2");
    // World v2's misaligned and hard habits are far from the target, so only about 38% of
    // the gaps are small (v1 had a majority); the easy pairs exist too.
    assert!(small > 0.3, "{small} of |gap| < 1");
    assert!(large > 0.1, "{large} of |gap| ≥ 2");
    assert_bradley_terry(&w, &pairs, 500);
    // Off-policy candidates bring the target to the hard family, whose own samples lack it.
    let (hard, _) = family_of(&w, Role::Hard);
    let on_policy = World::new(2);
    let on_policy = on_policy.family_stats(&[], &on_policy.train_pairs(6000));
    let near_miss = w.family_stats(&[], &pairs);
    let (a, b) = (
        near_miss[hard].target_pair_fraction,
        on_policy[hard].target_pair_fraction,
    );
    eprintln!("hard family: {a:.3} of near-miss pairs with the target, {b:.3} on-policy");
    assert!(a > b + 0.1, "{a} vs {b}");
    // Its manifest says which candidates it has.
    let m = w.manifest(&[], &w.family_stats(&[], &pairs));
    assert_eq!(m["candidates"], "near-miss");
    assert_eq!(World::new(2).manifest(&[], &[])["candidates"], "on-policy");
}

fn rows(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(p, c)| ((*p).to_string(), (*c).to_string()))
        .collect()
}

#[test]
fn label_pairs_every_distinct_completion_of_a_prompt() {
    let w = World::new(1);
    // Read the tasks from the world: a prompt of family 0 and one of the last family.
    let last = w.config().families.len() - 1;
    let prompt = |family: usize, word: &str| Prompt {
        family,
        task: w.config().families[family].task,
        word: word.into(),
    };
    let (p0, p1) = (prompt(0, "kqzm"), prompt(last, "bdca"));
    let (a, b) = (p0.text(), p1.text());
    let t0 = format!(" {}", p0.target());
    let input = rows(&[
        (&a, &t0),
        (&b, " bdca"),
        (&a, " kqzm"),
        (&a, &t0), // a repeat: no pair with itself
        (&b, &format!(" {}", p1.target())),
        (&a, " x"),
        (&b, " bdca"),
    ]);
    let out = w.label(&input).unwrap();
    // Prompts in first-seen order; 3 distinct completions of `a` (3 pairs), 2 of `b` (1 pair).
    let prompts: Vec<&str> = out.iter().map(|p| p.prompt.as_str()).collect();
    assert_eq!(prompts, [&a, &a, &a, &b]);
    let unordered = |p: &PreferenceRow| {
        let mut v = [p.chosen.clone(), p.rejected.clone()];
        v.sort();
        v
    };
    let mut got: Vec<[String; 2]> = out[..3].iter().map(unordered).collect();
    got.sort();
    let mut want = vec![
        [t0.clone(), " kqzm".to_string()],
        [t0.clone(), " x".to_string()],
        [" kqzm".to_string(), " x".to_string()],
    ];
    for v in &mut want {
        v.sort();
    }
    want.sort();
    assert_eq!(got, want);
    for p in &out {
        let f = &w.config().families[p.family];
        assert_eq!(p.family, parse(&p.prompt).family);
        assert_eq!(p.temperature, f.temperature);
        assert_eq!(p.true_reward_chosen, reward(&p.prompt, &p.chosen));
        assert_eq!(p.true_reward_rejected, reward(&p.prompt, &p.rejected));
        for s in [p.score_chosen, p.score_rejected] {
            assert!((1.0..=10.0).contains(&s) && (s * 2.0).fract() == 0.0, "{s}");
        }
    }
    // Deterministic, and a function of the seed.
    assert_eq!(out, w.label(&input).unwrap());
    assert_eq!(w.label(&[]).unwrap(), vec![]);
    assert_eq!(w.label(&rows(&[(&a, " x")])).unwrap(), vec![]);
}

#[test]
fn label_rejects_a_prompt_of_another_world_naming_its_row() {
    let w = World::new(1);
    let good = Prompt {
        family: 0,
        task: w.config().families[0].task,
        word: "kqzm".into(),
    }
    .text();
    let k = w.config().families.len();
    let beyond = format!("f{k} copy kqzm ->");
    for bad in ["hello", "f0 upper KQZM ->", "", beyond.as_str()] {
        let input = rows(&[(&good, " a"), (&good, " b"), (bad, " c")]);
        let err = w.label(&input).unwrap_err().to_string();
        assert!(err.contains("row 3") && err.contains(bad), "{bad:?}: {err}");
    }
}

#[test]
fn label_follows_bradley_terry_with_its_own_scores() {
    let w = World::new(6);
    // Four fixed answers per evaluation prompt: the target, the echoed word, a near miss and
    // an empty answer; every family's gaps span small and large.
    let mut input = Vec::new();
    for e in w.eval_prompts(3000) {
        let word = parse(&e.prompt).word;
        let near = format!(" {}x", &e.target[1..]);
        for c in [
            format!(" {}", e.target),
            format!(" {word}"),
            near,
            String::new(),
        ] {
            input.push((e.prompt.clone(), c));
        }
    }
    let out = w.label(&input).unwrap();
    assert!(out.len() > 15_000, "{}", out.len());
    assert_bradley_terry(&w, &out, 1500);
    // The score noise of the labelling world sets the scores only.
    let useless = world_with(6, |c| c.score_noise = USELESS_SCORE_NOISE);
    let other = useless.label(&input).unwrap();
    for (x, y) in out.iter().zip(&other) {
        assert_eq!((&x.chosen, &x.rejected), (&y.chosen, &y.rejected));
    }
    let (rho, rho_useless) = (
        score_reward_correlation(&out),
        score_reward_correlation(&other),
    );
    assert!(
        rho > 0.9 && rho_useless < rho - 0.2,
        "{rho} vs {rho_useless}"
    );
}

#[test]
fn heldout_words_never_train() {
    let w = World::new(8);
    let word = |prompt: &str| Prompt::parse(prompt).map(|p| p.word).unwrap_or_default();
    let train: HashSet<String> = w
        .train_pairs(3000)
        .iter()
        .map(|p| word(&p.prompt))
        .chain(w.sft_rows(3000).iter().map(|r| word(&r.prompt)))
        .collect();
    assert!(train.iter().all(|x| !x.is_empty() && !is_heldout_word(x)));
    let heldout: Vec<String> = w
        .heldout_pairs(600)
        .iter()
        .map(|p| word(&p.prompt))
        .chain(w.eval_prompts(600).iter().map(|p| word(&p.prompt)))
        .chain(w.heldout_sft_rows(600).iter().map(|r| word(&r.prompt)))
        .collect();
    assert_eq!(heldout.len(), 1800);
    assert!(
        heldout
            .iter()
            .all(|x| is_heldout_word(x) && !train.contains(x))
    );
    let k = w.config().families.len();
    let prompts = w.eval_prompts(10 * k);
    for f in 0..k {
        assert_eq!(prompts.iter().filter(|p| p.family == f).count(), 10);
    }
    for p in prompts {
        assert_eq!(reward(&p.prompt, &p.target), REWARD_MAX);
        assert_eq!(parse(&p.prompt).task, w.config().families[p.family].task);
    }
}

#[test]
fn the_trl_loader_reads_every_file_without_a_bad_row() {
    let w = World::new(9);
    let useless = world_with(9, |c| c.score_noise = USELESS_SCORE_NOISE);
    let dir = tempfile::tempdir().unwrap();
    let tok = Tok::tiny();
    let texts = [
        (
            "sft.jsonl",
            to_jsonl(w.sft_rows(600).iter().map(|r| r.to_json())),
        ),
        (
            "sft_heldout.jsonl",
            to_jsonl(w.heldout_sft_rows(600).iter().map(|r| r.to_json())),
        ),
        (
            "train.jsonl",
            to_jsonl(w.train_pairs(600).iter().map(|r| r.to_json())),
        ),
        (
            "train_useless_scores.jsonl",
            to_jsonl(useless.train_pairs(600).iter().map(|r| r.to_json())),
        ),
        (
            "heldout.jsonl",
            to_jsonl(w.heldout_pairs(600).iter().map(|r| r.to_json())),
        ),
    ];
    for (name, text) in texts {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let (pairs, bad) = poc_runtime::data::load_pairs(&path, &tok, 64, true).unwrap();
        assert!(bad.is_empty(), "{name}: {bad:?}");
        assert_eq!(pairs.len(), 600, "{name}");
        // sft*.jsonl are TRL's SFT format: demonstration rows; the rest are preference pairs.
        let sft = name.starts_with("sft");
        assert!(pairs.iter().all(|p| p.demonstration == sft), "{name}");
        let expected: &[&str] = if sft {
            &["family", "true_reward"]
        } else {
            &[
                "bt_prob",
                "calibrated_gamma",
                "edit_rate",
                "family",
                "label_flipped",
                "q",
                "score_chosen",
                "score_rejected",
                "temperature",
                "true_reward_chosen",
                "true_reward_rejected",
            ]
        };
        for p in &pairs {
            let columns: Vec<&String> = p.columns.keys().collect();
            assert_eq!(columns, expected, "{name}: every extra column is numeric");
        }
    }
}

#[test]
fn configurations_are_checked() {
    let rejects = |edit: &dyn Fn(&mut WorldConfig), words: &[&str]| {
        let mut c = WorldConfig::new(0);
        edit(&mut c);
        let err = World::with_config(c).unwrap_err().to_string();
        assert!(words.iter().all(|w| err.contains(w)), "{err}");
    };
    assert!(World::with_config(WorldConfig::new(0)).is_ok());
    rejects(
        &|c| c.families[2].temperature = 0.0,
        &["family 2", "temperature"],
    );
    rejects(
        &|c| c.families[1].temperature = f64::NAN,
        &["family 1", "temperature"],
    );
    rejects(&|c| c.families[3].q = 1.5, &["family 3", "q"]);
    rejects(&|c| c.families[3].q = -0.1, &["family 3", "q"]);
    rejects(
        &|c| c.families[4].edit_rate = 5.0,
        &["family 4", "edit_rate"],
    );
    rejects(
        &|c| c.families[4].edit_rate = -1.0,
        &["family 4", "edit_rate"],
    );
    rejects(&|c| c.families.clear(), &["families"]);
    rejects(&|c| c.score_noise = -1.0, &["score_noise"]);
    rejects(&|c| c.score_noise = f64::INFINITY, &["score_noise"]);
    rejects(&|c| c.samples_per_prompt = 1, &["samples_per_prompt"]);
    rejects(&|c| c.samples_per_prompt = 17, &["samples_per_prompt"]);
    for len in [(1, 3), (5, 3), (3, 13)] {
        rejects(&|c| c.word_len = len, &["word length"]);
    }
    // A one-family world of a single task works: all pairs and rows are of family 0, and a
    // reference that always says the target (q = 1, no edits) is perfect.
    let sort = |q: f64, edit_rate: f64| Family {
        task: Task::Sort,
        temperature: 1.0,
        q,
        edit_rate,
        role: Role::Aligned,
    };
    let mut c = WorldConfig::new(0);
    c.families = vec![sort(1.0, 0.5)];
    let w = World::with_config(c.clone()).unwrap();
    assert!(w.train_pairs(50).iter().all(|p| p.family == 0));
    c.families = vec![sort(1.0, 0.0)];
    c.candidates = Candidates::NearMiss;
    let w = World::with_config(c.clone()).unwrap();
    assert!(w.sft_rows(50).iter().all(|r| r.true_reward == REWARD_MAX));
    assert_eq!(w.train_pairs(50).len(), 50);
    // On-policy, such a world could never draw two different answers: no pair would ever
    // come, so it is refused rather than looping.
    c.candidates = Candidates::OnPolicy;
    let err = World::with_config(c).unwrap_err().to_string();
    assert!(err.contains("different"), "{err}");
}
