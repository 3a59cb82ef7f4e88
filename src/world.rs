//! `poc world`: writes the synthetic preference world (poc_runtime::data::world) to a directory
//! and prints its per-family statistics.

use crate::Failure;
use poc_runtime::data::world::{FamilyStats, World, to_jsonl};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The most rows one file may have (a guard against a stray extra digit).
const MAX_ROWS: usize = 10_000_000;

/// `poc world --help`.
pub const ABOUT: &str = "\
Write the synthetic preference world: data with a known true reward r*(x, y), small enough
for the embedded tiny model on CPU, built to probe what MallowsPO, MMPO, MPO and MIPO claim.

Prompts come in six families, each a string task on a short word: `f3 reverse kqzm ->`
wants ` mzqk`. The true reward of ANY completion is a graded edit-distance score:
  r* = 3 * (1 - lev(answer, target) / max(|answer|, |target|)) - min(1, max(0, |y| - 16) / 8)
(answer = the completion without surrounding whitespace; r* lies in [-1, 3]).

  - labels: chosen/rejected are a Bradley-Terry draw, P(y1 > y2) = sigmoid(gap / T), with
    a temperature T per family (0.25, 1, 4): from near-deterministic to near-random (MallowsPO);
  - score_chosen/score_rejected: r* as a noisy 1-10 rating (MMPO);
  - gaps: candidates are near-misses of the target, so over half of the pairs differ by
    less than 1 in r* (MPO's easy/hard split);
  - sft.jsonl answers three families correctly and echoes the word on the other three, so a
    reference trained on it is aligned on some families and not on others (MIPO).

Files written to --out:
  world.json     the definition (seed, version, formula, families, temperatures, which are
                 aligned) and the statistics of the generated data
  sft.jsonl      TRL SFT rows {prompt, completion, family, true_reward} (poc run sft)
  train.jsonl    TRL pairs {prompt, chosen, rejected} + numeric columns score_chosen,
                 score_rejected, family, true_reward_chosen, true_reward_rejected,
                 label_flipped (1 when the label disagrees with r*)
  heldout.jsonl  the same, on words never used in training
  prompts.jsonl  {prompt, family, target} on held-out words, for evaluating a policy with r*

The same seed writes byte-identical files. The summary printed per family: temperature,
aligned reference or not, fraction of labels flipped against what Bradley-Terry predicts,
mean |gap|, fraction of |gap| < 1, mean r* of the SFT answers. See docs/WORLD.md.";

/// Examples under `poc world --help`.
pub const EXAMPLES: &str = "Examples:
  poc world                                  the default world (seed 1) in ./world
  poc world --out /tmp/w --seed 7 --pairs 20000
  poc run dpo --data world/train.jsonl       train against the world's labels";

/// Arguments of `poc world`.
#[derive(Debug, Clone, clap::Args)]
pub struct WorldArgs {
    /// Directory to write world.json, sft.jsonl, train.jsonl, heldout.jsonl, prompts.jsonl
    /// into (created if missing; files of an earlier world are overwritten).
    #[arg(long, default_value = "world")]
    pub out: PathBuf,
    /// Seed of every generator; the same seed writes byte-identical files.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Training preference pairs (train.jsonl).
    #[arg(long, default_value_t = 6000)]
    pub pairs: usize,
    /// Held-out preference pairs on words never seen in training (heldout.jsonl).
    #[arg(long, default_value_t = 600)]
    pub heldout: usize,
    /// SFT rows for the reference model (sft.jsonl).
    #[arg(long, default_value_t = 6000)]
    pub sft: usize,
    /// Evaluation prompts on held-out words (prompts.jsonl).
    #[arg(long, default_value_t = 240)]
    pub eval_prompts: usize,
}

/// Generates the world of `args.seed` and writes it to `args.out`.
pub fn run(args: WorldArgs) -> Result<(), Failure> {
    for (flag, n) in [
        ("--pairs", args.pairs),
        ("--heldout", args.heldout),
        ("--sft", args.sft),
        ("--eval-prompts", args.eval_prompts),
    ] {
        if n == 0 || n > MAX_ROWS {
            return Err(Failure::User(format!(
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
        .map_err(|e| Failure::Internal(format!("world.json: {e}")))?;
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
    print!("{}", summary(&args, &stats, train.len()));
    Ok(())
}

/// Creates `dir` and writes each file through a temporary name, so a reader never sees half a
/// file.
fn write_all(dir: &Path, files: &[(&str, String)]) -> Result<(), Failure> {
    let unwritable = |what: &Path, e: std::io::Error| {
        Failure::User(format!(
            "poc: cannot write `{}`: {e}\n  = hint: --out names a directory poc can create or write into",
            what.display()
        ))
    };
    if dir.exists() && !dir.is_dir() {
        return Err(Failure::User(format!(
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
fn summary(args: &WorldArgs, stats: &[FamilyStats], pairs: usize) -> String {
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
