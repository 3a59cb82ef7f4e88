//! The bundled synthetic preference data of the embedded demo: short prompts about animals,
//! a kind completion preferred to an unkind one, with a graded quality score. Deterministic per
//! seed; easy enough that a tiny model learns the preference in a few hundred steps on CPU.

use rand::{Rng, SeedableRng};

const ANIMALS: [&str; 16] = [
    "cat", "dog", "owl", "fox", "bee", "cow", "elk", "yak", "bat", "eel", "hen", "ant", "ram",
    "emu", "pig", "ape",
];
const GOOD: [&str; 6] = ["kind", "calm", "brave", "wise", "gentle", "clever"];
const BAD: [&str; 6] = ["rude", "mean", "cruel", "vile", "nasty", "dull"];

/// `n` preference rows in TRL's JSONL form (one JSON object per line).
pub fn synthetic_jsonl(n: usize, seed: u64) -> String {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = String::new();
    for _ in 0..n {
        let a = ANIMALS[rng.random_range(0..ANIMALS.len())];
        let g = GOOD[rng.random_range(0..GOOD.len())];
        let b = BAD[rng.random_range(0..BAD.len())];
        let good_score = rng.random_range(6.0..10.0f64);
        let bad_score = rng.random_range(1.0..5.0f64);
        let row = serde_json::json!({
            "prompt": format!("The {a} is"),
            "chosen": format!(" {g}."),
            "rejected": format!(" {b}."),
            "score_chosen": (good_score * 10.0).round() / 10.0,
            "score_rejected": (bad_score * 10.0).round() / 10.0,
        });
        out.push_str(&row.to_string());
        out.push('\n');
    }
    out
}
