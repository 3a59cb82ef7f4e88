//! The synthetic preference world (poc_runtime::data::world) written to a directory, with its
//! per-family statistics (`poc world`).

use crate::{Error, Result};
use poc_runtime::data::world::{FamilyStats, World, to_jsonl};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The most rows one file may have (a guard against a stray extra digit).
const MAX_ROWS: usize = 10_000_000;

/// What `poc world` writes: where, from which seed, and how many rows of each file.
#[derive(Debug, Clone, PartialEq)]
pub struct WorldOptions {
    /// Directory of world.json, sft.jsonl, train.jsonl, heldout.jsonl, prompts.jsonl.
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
            eval_prompts: 240,
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
    let world = World::new(args.seed);
    let sft = world.sft_rows(args.sft);
    let train = world.train_pairs(args.pairs);
    let heldout = world.heldout_pairs(args.heldout);
    let prompts = world.eval_prompts(args.eval_prompts);
    let stats = world.family_stats(&sft, &train);
    let counts = [
        ("sft.jsonl", sft.len()),
        ("train.jsonl", train.len()),
        ("heldout.jsonl", heldout.len()),
        ("prompts.jsonl", prompts.len()),
    ];
    let manifest = world.manifest(&counts, &stats);
    let manifest = serde_json::to_string_pretty(&manifest)
        .map_err(|e| Error::Internal(format!("world.json: {e}")))?;
    let files = [
        ("world.json", manifest + "\n"),
        ("sft.jsonl", to_jsonl(sft.iter().map(|r| r.to_json()))),
        ("train.jsonl", to_jsonl(train.iter().map(|r| r.to_json()))),
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
        "world (seed {}) written to {}: {} train pairs, {} held-out pairs, {} SFT rows, {} eval prompts",
        args.seed,
        args.out.display(),
        args.pairs,
        args.heldout,
        args.sft,
        args.eval_prompts
    );
    let _ = writeln!(
        s,
        "{:<7} {:<8} {:>5}  {:<10} {:>6} {:>8} {:>9} {:>8} {:>7}",
        "family", "task", "T", "reference", "flips", "BT pred", "mean|gap|", "|gap|<1", "SFT r*"
    );
    for f in stats {
        let _ = writeln!(
            s,
            "{:<7} {:<8} {:>5}  {:<10} {:>6} {:>8} {:>9} {:>8} {:>7}",
            format!("f{}", f.family),
            f.task.name(),
            f.temperature,
            if f.aligned { "aligned" } else { "misaligned" },
            fixed(f.flip_rate, 3),
            fixed(f.predicted_flip_rate, 3),
            fixed(f.mean_abs_gap, 2),
            fixed(f.small_gap_fraction, 2),
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
        "all pairs: {} of untied labels flipped, {} with |gap| < 1 (flips = label disagrees with r*; see world.json, docs/WORLD.md)",
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
