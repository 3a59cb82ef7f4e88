//! The synthetic preference world: determinism per seed, a total and finite r*, and the
//! statistics the world promises (Bradley-Terry label noise per family, mostly small gaps,
//! noisy scores that track r*, SFT answers aligned on some families only), and files that the
//! TRL loader reads without a bad row.

use poc_runtime::data::Tok;
use poc_runtime::data::world::{
    Family, Prompt, REWARD_MAX, REWARD_MIN, Task, World, WorldConfig, is_heldout_word, reward,
    sigmoid, to_jsonl,
};
use rand::{Rng, SeedableRng};
use std::collections::HashSet;

/// Every file of a world, as text (what `poc world` writes).
fn files(seed: u64, n: usize) -> Vec<String> {
    let w = World::new(seed);
    let sft = w.sft_rows(n);
    let train = w.train_pairs(n);
    let stats = w.family_stats(&sft, &train);
    vec![
        w.manifest(&[("train.jsonl", n)], &stats).to_string(),
        to_jsonl(sft.iter().map(|r| r.to_json())),
        to_jsonl(train.iter().map(|r| r.to_json())),
        to_jsonl(w.heldout_pairs(n).iter().map(|r| r.to_json())),
        to_jsonl(w.eval_prompts(n).iter().map(|r| r.to_json())),
    ]
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let a = files(5, 300);
    assert_eq!(a, files(5, 300));
    let b = files(6, 300);
    for (x, y) in a.iter().zip(&b) {
        assert_ne!(x, y);
    }
    // Each file has its own stream: more pairs extend the file, and leave the others alone.
    let w = World::new(5);
    let short = to_jsonl(w.train_pairs(100).iter().map(|r| r.to_json()));
    let long = to_jsonl(w.train_pairs(200).iter().map(|r| r.to_json()));
    assert!(long.starts_with(&short));
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
fn rows_carry_their_true_rewards_and_labels() {
    let w = World::new(11);
    for p in w.train_pairs(600) {
        assert_eq!(p.true_reward_chosen, reward(&p.prompt, &p.chosen));
        assert_eq!(p.true_reward_rejected, reward(&p.prompt, &p.rejected));
        assert_eq!(p.label_flipped, p.gap() < 0.0);
        assert_ne!(p.chosen, p.rejected);
        for s in [p.score_chosen, p.score_rejected] {
            assert!((1.0..=10.0).contains(&s) && (s * 2.0).fract() == 0.0, "{s}");
        }
        let prompt = Prompt::parse(&p.prompt).expect("a world prompt");
        assert_eq!(prompt.family, p.family);
    }
    for r in w.sft_rows(120) {
        assert_eq!(r.true_reward, reward(&r.prompt, &r.completion));
    }
}

#[test]
fn label_flips_follow_bradley_terry_per_family() {
    let w = World::new(1);
    let pairs = w.train_pairs(12_000);
    for (id, f) in w.config().families.iter().enumerate() {
        let untied: Vec<f64> = pairs
            .iter()
            .filter(|p| p.family == id && p.gap() != 0.0)
            .map(|p| p.gap())
            .collect();
        let n = untied.len() as f64;
        assert!(n > 1500.0, "family {id}: {n} untied pairs");
        let flips = untied.iter().filter(|g| **g < 0.0).count() as f64;
        let p: Vec<f64> = untied
            .iter()
            .map(|g| 1.0 - sigmoid(g.abs() / f.temperature))
            .collect();
        let predicted: f64 = p.iter().sum();
        let se = p.iter().map(|q| q * (1.0 - q)).sum::<f64>().sqrt();
        assert!(
            (flips - predicted).abs() < 4.0 * se,
            "family {id} (T = {}): {flips} flips, Bradley-Terry predicts {predicted:.1} ± {se:.1}",
            f.temperature
        );
    }
    // The temperatures matter: the near-deterministic families flip far less often.
    let stats = w.family_stats(&[], &pairs);
    let rate = |t: f64| {
        let s: Vec<_> = stats.iter().filter(|s| s.temperature == t).collect();
        s.iter().map(|s| s.flip_rate).sum::<f64>() / s.len() as f64
    };
    assert!(rate(0.25) < 0.1 && rate(4.0) > 0.35, "{stats:?}");
}

#[test]
fn most_gaps_are_small_but_not_all() {
    let pairs = World::new(2).train_pairs(6000);
    let small = pairs.iter().filter(|p| p.gap().abs() < 1.0).count() as f64 / 6000.0;
    let large = pairs.iter().filter(|p| p.gap().abs() >= 2.0).count() as f64 / 6000.0;
    assert!(small > 0.5, "{small} of |gap| < 1");
    assert!(
        large > 0.05,
        "{large} of |gap| ≥ 2: the easy pairs exist too"
    );
}

fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let cov: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
    cov / (vx * vy).sqrt()
}

#[test]
fn scores_track_the_true_reward_with_noise() {
    let pairs = World::new(3).train_pairs(3000);
    let scores: Vec<f64> = pairs
        .iter()
        .flat_map(|p| [p.score_chosen, p.score_rejected])
        .collect();
    let rewards: Vec<f64> = pairs
        .iter()
        .flat_map(|p| [p.true_reward_chosen, p.true_reward_rejected])
        .collect();
    let rho = pearson(&scores, &rewards);
    assert!(rho > 0.5, "Pearson {rho}");
    // Noisy: the score is not a function of r* (equal rewards get different scores) ...
    let clean =
        |r: f64| ((1.0 + 9.0 * (r - REWARD_MIN) / (REWARD_MAX - REWARD_MIN)) * 2.0).round() / 2.0;
    let off = scores
        .iter()
        .zip(&rewards)
        .filter(|(s, r)| **s != clean(**r))
        .count();
    assert!(off as f64 > 0.3 * scores.len() as f64, "{off} noisy scores");
    assert!(rho < 0.99, "Pearson {rho}");
    // ... and sometimes disagrees with the label.
    let disagree = pairs
        .iter()
        .filter(|p| p.score_chosen < p.score_rejected)
        .count();
    assert!(disagree > 100, "{disagree}");
}

#[test]
fn sft_answers_are_aligned_on_some_families_only() {
    let w = World::new(4);
    let sft = w.sft_rows(3000);
    let stats = w.family_stats(&sft, &[]);
    let mean = |aligned: bool| {
        let s: Vec<_> = stats.iter().filter(|s| s.aligned == aligned).collect();
        assert!(!s.is_empty());
        s.iter().map(|s| s.mean_sft_reward).sum::<f64>() / s.len() as f64
    };
    let worst_aligned = stats
        .iter()
        .filter(|s| s.aligned)
        .map(|s| s.mean_sft_reward)
        .fold(f64::INFINITY, f64::min);
    let best_misaligned = stats
        .iter()
        .filter(|s| !s.aligned)
        .map(|s| s.mean_sft_reward)
        .fold(f64::NEG_INFINITY, f64::max);
    assert!(mean(true) - mean(false) > 1.5, "{stats:?}");
    assert!(worst_aligned - best_misaligned > 1.0, "{stats:?}");
    // The SFT spread grows with the temperature: the aligned family at T = 4 has more edited
    // (imperfect) answers than the one at T = 0.25.
    let edited = |family: usize| {
        sft.iter()
            .filter(|r| r.family == family && r.true_reward != REWARD_MAX)
            .count()
    };
    assert!(w.config().families[0].aligned && w.config().families[4].aligned);
    assert!(3 * edited(0) < edited(4), "{} vs {}", edited(0), edited(4));
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
        .collect();
    assert!(
        heldout
            .iter()
            .all(|x| is_heldout_word(x) && !train.contains(x))
    );
    let prompts = w.eval_prompts(60);
    for f in 0..6 {
        assert_eq!(prompts.iter().filter(|p| p.family == f).count(), 10);
    }
    for p in prompts {
        assert_eq!(reward(&p.prompt, &p.target), REWARD_MAX);
    }
}

#[test]
fn the_trl_loader_reads_every_file_without_a_bad_row() {
    let w = World::new(9);
    let dir = tempfile::tempdir().unwrap();
    let tok = Tok::tiny();
    let texts = [
        (
            "sft.jsonl",
            to_jsonl(w.sft_rows(600).iter().map(|r| r.to_json())),
        ),
        (
            "train.jsonl",
            to_jsonl(w.train_pairs(600).iter().map(|r| r.to_json())),
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
        // sft.jsonl is TRL's SFT format: demonstration rows; the rest are preference pairs.
        assert!(
            pairs
                .iter()
                .all(|p| p.demonstration == (name == "sft.jsonl")),
            "{name}"
        );
        let columns: Vec<&String> = pairs[0].columns.keys().collect();
        let expected: &[&str] = if name == "sft.jsonl" {
            &["family", "true_reward"]
        } else {
            &[
                "family",
                "label_flipped",
                "score_chosen",
                "score_rejected",
                "true_reward_chosen",
                "true_reward_rejected",
            ]
        };
        assert_eq!(columns, expected, "{name}: every extra column is numeric");
    }
}

#[test]
fn configurations_are_checked() {
    let mut c = WorldConfig::new(0);
    assert!(World::with_config(c.clone()).is_ok());
    c.families[2].temperature = 0.0;
    let err = World::with_config(c.clone()).unwrap_err().to_string();
    assert!(
        err.contains("family 2") && err.contains("temperature"),
        "{err}"
    );
    c.families = vec![];
    assert!(World::with_config(c.clone()).is_err());
    let mut c = WorldConfig::new(0);
    c.reference_share = 1.5;
    assert!(World::with_config(c).is_err());
    // A one-family world of a single task works: all pairs are of family 0.
    let mut c = WorldConfig::new(0);
    c.families = vec![Family {
        task: Task::Sort,
        temperature: 1.0,
        aligned: true,
        sft_edit_rate: 0.0,
    }];
    let w = World::with_config(c).unwrap();
    assert!(w.train_pairs(50).iter().all(|p| p.family == 0));
    assert!(w.sft_rows(50).iter().all(|r| r.true_reward == REWARD_MAX));
}
