//! The synthetic preference world (poc_runtime::data::world) written to a directory, with its
//! per-family statistics (`poc world`).

use crate::{Error, Result};
use poc_runtime::data::world::{
    Candidates, FamilyStats, PreferenceRow, USELESS_SCORE_NOISE, World, WorldConfig, to_jsonl,
};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The most rows one file may have (a guard against a stray extra digit).
const MAX_ROWS: usize = 10_000_000;

/// train.jsonl's pairs and labels with nearly useless scores (noise
/// [`USELESS_SCORE_NOISE`]): MMPO's control.
pub const USELESS_SCORES_FILE: &str = "train_useless_scores.jsonl";

/// What `poc world` writes: where, from which seed, and how many rows of each file.
#[derive(Debug, Clone, PartialEq)]
pub struct WorldOptions {
    /// Directory of world.json, sft.jsonl, sft_heldout.jsonl, train.jsonl,
    /// train_useless_scores.jsonl, heldout.jsonl, prompts.jsonl.
    pub out: PathBuf,
    /// Seed of every generator; the same seed writes byte-identical files.
    pub seed: u64,
    /// Training preference pairs (train.jsonl).
    pub pairs: usize,
    /// Held-out preference pairs (heldout.jsonl).
    pub heldout: usize,
    /// SFT rows (sft.jsonl).
    pub sft: usize,
    /// Evaluation prompts (prompts.jsonl).
    pub eval_prompts: usize,
    /// Where the pairs' candidates come from (on-policy draws of the SFT process, or the
    /// off-policy near-miss stress world).
    pub candidates: Candidates,
}

impl Default for WorldOptions {
    /// `poc world` with no flags.
    fn default() -> Self {
        WorldOptions {
            out: PathBuf::from("world"),
            seed: 1,
            pairs: 6000,
            heldout: 600,
            sft: 6000,
            eval_prompts: 600,
            candidates: Candidates::OnPolicy,
        }
    }
}

/// Generates the world of `args.seed` and writes it to `args.out`; returns the per-family
/// summary table to show the user.
pub fn run(args: &WorldOptions) -> Result<String> {
    for (flag, n) in [
        ("--pairs", args.pairs),
        ("--heldout", args.heldout),
        ("--sft", args.sft),
        ("--eval-prompts", args.eval_prompts),
    ] {
        if n == 0 || n > MAX_ROWS {
            return Err(Error::User(format!(
                "poc: `{flag} {n}`: the number of rows must be between 1 and {MAX_ROWS}"
            )));
        }
    }
    let world = World::with_config(WorldConfig {
        candidates: args.candidates,
        ..WorldConfig::new(args.seed)
    })
    .map_err(|e| Error::Internal(e.to_string()))?;
    let useless = World::with_config(WorldConfig {
        score_noise: USELESS_SCORE_NOISE,
        ..world.config().clone()
    })
    .map_err(|e| Error::Internal(e.to_string()))?;
    let sft = world.sft_rows(args.sft);
    let sft_heldout = world.heldout_sft_rows(args.heldout);
    let train = world.train_pairs(args.pairs);
    let train_useless = useless.train_pairs(args.pairs);
    let heldout = world.heldout_pairs(args.heldout);
    let prompts = world.eval_prompts(args.eval_prompts);
    let stats = world.family_stats(&sft, &train);
    let counts = [
        ("sft.jsonl", sft.len()),
        ("sft_heldout.jsonl", sft_heldout.len()),
        ("train.jsonl", train.len()),
        (USELESS_SCORES_FILE, train_useless.len()),
        ("heldout.jsonl", heldout.len()),
        ("prompts.jsonl", prompts.len()),
    ];
    let manifest = world.manifest(&counts, &stats);
    let manifest = serde_json::to_string_pretty(&manifest)
        .map_err(|e| Error::Internal(format!("world.json: {e}")))?;
    let files = [
        ("world.json", manifest + "\n"),
        ("sft.jsonl", to_jsonl(sft.iter().map(|r| r.to_json()))),
        (
            "sft_heldout.jsonl",
            to_jsonl(sft_heldout.iter().map(|r| r.to_json())),
        ),
        ("train.jsonl", to_jsonl(train.iter().map(|r| r.to_json()))),
        (
            USELESS_SCORES_FILE,
            to_jsonl(train_useless.iter().map(|r| r.to_json())),
        ),
        (
            "heldout.jsonl",
            to_jsonl(heldout.iter().map(|r| r.to_json())),
        ),
        (
            "prompts.jsonl",
            to_jsonl(prompts.iter().map(|r| r.to_json())),
        ),
    ];
    write_all(&args.out, &files)?;
    Ok(summary(args, &stats, train.len()))
}

/// Creates `dir` and writes each file through a temporary name, so a reader never sees half a
/// file.
fn write_all(dir: &Path, files: &[(&str, String)]) -> Result<()> {
    let unwritable = |what: &Path, e: std::io::Error| {
        Error::User(format!(
            "poc: cannot write `{}`: {e}\n  = hint: --out names a directory poc can create or write into",
            what.display()
        ))
    };
    if dir.exists() && !dir.is_dir() {
        return Err(Error::User(format!(
            "poc: `--out {}` is a file, not a directory",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| unwritable(dir, e))?;
    for (name, text) in files {
        let path = dir.join(name);
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, text).map_err(|e| unwritable(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| unwritable(&path, e))?;
    }
    Ok(())
}

/// The table `poc world` prints: one line per family, then the overall gap statistics.
fn summary(args: &WorldOptions, stats: &[FamilyStats], pairs: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "world v2 (seed {}, {} pairs) written to {}: {} train pairs, {} held-out pairs, {} SFT rows, {} eval prompts",
        args.seed,
        args.candidates.name(),
        args.out.display(),
        args.pairs,
        args.heldout,
        args.sft,
        args.eval_prompts
    );
    let _ = writeln!(
        s,
        "{:<7} {:<8} {:>5} {:>5}  {:<10} {:>6} {:>6} {:>8} {:>9} {:>8} {:>7}",
        "family",
        "task",
        "T",
        "q",
        "role",
        "pairs",
        "flips",
        "BT pred",
        "mean|gap|",
        "target",
        "SFT r*"
    );
    for f in stats {
        let _ = writeln!(
            s,
            "{:<7} {:<8} {:>5} {:>5}  {:<10} {:>6} {:>6} {:>8} {:>9} {:>8} {:>7}",
            format!("f{}", f.family),
            f.task.name(),
            f.temperature,
            f.q,
            f.role.name(),
            f.pairs,
            fixed(f.flip_rate, 3),
            fixed(f.predicted_flip_rate, 3),
            fixed(f.mean_abs_gap, 2),
            fixed(f.target_pair_fraction, 2),
            fixed(f.mean_sft_reward, 2)
        );
    }
    let small: f64 = stats
        .iter()
        .filter(|f| f.pairs > 0)
        .map(|f| f.small_gap_fraction * f.pairs as f64)
        .sum();
    let flips: usize = stats.iter().map(|f| f.flips).sum();
    let untied: usize = stats.iter().map(|f| f.pairs - f.ties).sum();
    let _ = writeln!(
        s,
        "all pairs: {} of untied labels flipped, {} with |gap| < 1 (flips: the label disagrees with r*; target: pairs with the exact target on one side; see world.json, docs/WORLD.md)",
        fixed(flips as f64 / untied as f64, 3),
        fixed(small / pairs as f64, 2)
    );
    s
}

/// `x` with `digits` decimals, or `-` where there was nothing to average.
fn fixed(x: f64, digits: usize) -> String {
    if x.is_finite() {
        format!("{x:.digits$}")
    } else {
        "-".into()
    }
}

/// What `poc world label` reads and writes.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelOptions {
    /// JSONL rows `{prompt, completion}` (other fields are ignored).
    pub data: PathBuf,
    /// The labelled pairs (TRL preference JSONL with the oracle's columns).
    pub out: PathBuf,
    /// The world's seed (labels and scores are drawn from its streams).
    pub seed: u64,
    /// Noise of the 1-10 scores.
    pub score_noise: f64,
}

/// Labels `{prompt, completion}` rows with the world's oracle: every pair of distinct
/// completions of a prompt, Bradley-Terry labels on r*, scores, the true probability; returns
/// a one-line summary.
pub fn label(args: &LabelOptions) -> Result<String> {
    let label = args.data.display();
    let text = std::fs::read_to_string(&args.data)
        .map_err(|e| Error::User(format!("poc: cannot read `{label}`: {e}")))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: &str| Error::User(format!("poc: {label}:{}: {why}", i + 1));
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(&format!("not JSON ({e})")))?;
        let field = |name: &str| {
            v.get(name)
                .and_then(serde_json::Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| bad(&format!("expected a string field `{name}`")))
        };
        rows.push((field("prompt")?, field("completion")?));
    }
    if rows.is_empty() {
        return Err(Error::User(format!("poc: {label}: no rows")));
    }
    if !(args.score_noise.is_finite() && args.score_noise >= 0.0) {
        return Err(Error::User(format!(
            "poc: `--score-noise {}`: expected a finite number ≥ 0",
            args.score_noise
        )));
    }
    let world = World::with_config(WorldConfig {
        score_noise: args.score_noise,
        ..WorldConfig::new(args.seed)
    })
    .map_err(|e| Error::Internal(e.to_string()))?;
    let pairs: Vec<PreferenceRow> = world
        .label(&rows)
        .map_err(|e| Error::User(format!("poc: {label}: {e}")))?;
    let out_dir = args
        .out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = args
        .out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::User(format!("poc: `--out {}` names no file", args.out.display())))?;
    write_all(
        out_dir,
        &[(&name, to_jsonl(pairs.iter().map(|r| r.to_json())))],
    )?;
    let flipped = pairs.iter().filter(|p| p.label_flipped()).count();
    Ok(format!(
        "labelled {} pairs from {} rows ({} labels disagree with r*) into {}\n",
        pairs.len(),
        rows.len(),
        flipped,
        args.out.display()
    ))
}
