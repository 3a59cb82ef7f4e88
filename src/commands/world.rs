//! `poc world`: the synthetic preference world's files, and `poc world label`: its oracle
//! applied to any completions (poc_pipelines::world).

use crate::edge::Failure;
use poc_pipelines::world::{self, LabelOptions, WorldOptions};
use poc_runtime::data::world::{Candidates, INFORMATIVE_SCORE_NOISE};
use std::path::PathBuf;

/// `poc world --help`.
pub const ABOUT: &str = "\
Write the synthetic preference world (v2): data with a known true reward r*(x, y), small
enough for the embedded tiny model on CPU, graded so that each seed paper's mechanism has a
stratum of its own and a control where it should not help.

Prompts come in six families, each a string task on a short word: `f2 reverse kqzm ->`
wants ` mzqk`. The true reward of ANY completion is a graded edit-distance score:
  r* = 3 * (1 - lev(answer, target) / max(|answer|, |target|)) - min(1, max(0, |y| - 16) / 8)
(answer = the completion without surrounding whitespace; r* lies in [-1, 3]).

  family  task     T     q     edits  role
  f0      upper    0.25  0.85  0.1    aligned, low dispersion
  f1      upper    0.25  0.25  0.1    misaligned, low dispersion
  f2      reverse  2     0.85  0.8    aligned, high dispersion
  f3      reverse  2     0.25  0.8    misaligned, high dispersion
  f4      upper    2     0.85  0.1    decoupled: noisy labels, a confident reference
  f5      sort     0.5   0.02  0.3    hard: the target is rarely sampled

f0/f1 and f2/f3 differ in q alone, f0/f4 in T alone.

  - q (reference alignment, MIPO): an SFT answer is the target with probability q, else the
    word echoed; then Poisson(edits) random edits. A converged reference says the same.
  - T (dispersion, MallowsPO): labels are Bradley-Terry draws P(y1 > y2) = sigmoid(gap / T);
    the SFT edit rate (the reference's entropy) goes with T except in f4.
  - scores (MMPO): 1 + (9/4)(r* + 1) + N(0, 0.5^2) on 1-10 in halves; train_useless_scores.jsonl
    has the same pairs with noise 3. calibrated_gamma = 1 / ((9/4) T) per row.
  - pairs are on-policy: 4 draws of the SFT process per prompt, every pair of distinct draws
    (--candidates near-miss: world v1's off-policy near-misses of the target, a stress world).

Files written to --out:
  world.json                 the definition (seed, version, formula, families and their oracle
                             constants) and the statistics of the generated data
  sft.jsonl                  TRL SFT rows {prompt, completion, family, true_reward}
  sft_heldout.jsonl          the same on held-out words (--heldout rows): a reference's
                             held-out NLL
  train.jsonl                TRL pairs {prompt, chosen, rejected} + numeric columns
                             score_chosen, score_rejected, family, true_reward_chosen,
                             true_reward_rejected, label_flipped, bt_prob (the true probability
                             that chosen is preferred), temperature, q, edit_rate,
                             calibrated_gamma
  train_useless_scores.jsonl train.jsonl with scores of noise 3 (MMPO's control)
  heldout.jsonl              pairs on words never used in training
  prompts.jsonl              {prompt, family, target} on held-out words, for evaluation

The same seed writes byte-identical files. `poc world label` applies the oracle (r*, labels,
scores) to completions of any origin, e.g. a model's own samples. See docs/WORLD.md.";

/// Examples under `poc world --help`.
pub const EXAMPLES: &str = "Examples:
  poc world                                  the default world (seed 1) in ./world
  poc world --out /tmp/w --seed 7 --pairs 20000
  poc world --candidates near-miss --out /tmp/stress
  poc run dpo --data world/train.jsonl       train against the world's labels
  poc world label --data samples.jsonl --out pairs.jsonl   label a model's own samples";

/// Arguments of `poc world`.
#[derive(Debug, Clone, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct WorldArgs {
    /// Label completions of any origin instead of writing a world.
    #[command(subcommand)]
    pub command: Option<WorldCommand>,
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
    #[arg(long, default_value_t = 600)]
    pub eval_prompts: usize,
    /// Where pair candidates come from: on-policy (4 draws of the SFT process per prompt, all
    /// 6 pairs of distinct draws) or near-miss (off-policy: the target with random edits).
    #[arg(long, default_value = "on-policy", value_parser = ["on-policy", "near-miss"])]
    pub candidates: String,
}

/// `poc world`'s subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum WorldCommand {
    /// Apply the world's oracle to {prompt, completion} rows: every pair of distinct completions
    /// of a prompt, labelled by Bradley-Terry on r*, with scores and the true probability.
    ///
    /// Example: poc world label --data samples.jsonl --seed 1 --out pairs.jsonl
    Label(LabelArgs),
}

/// Arguments of `poc world label`.
#[derive(Debug, Clone, clap::Args)]
pub struct LabelArgs {
    /// JSONL rows {\"prompt\": \"f0 upper kqzm ->\", \"completion\": \" KQZM\"} (several rows per
    /// prompt; other fields are ignored).
    #[arg(long)]
    pub data: PathBuf,
    /// The labelled pairs: TRL preference JSONL with the columns of train.jsonl.
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of the world whose labels and scores are drawn.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Standard deviation of the scores' noise (3 makes them nearly useless).
    #[arg(long, default_value_t = INFORMATIVE_SCORE_NOISE)]
    pub score_noise: f64,
}

impl From<WorldArgs> for WorldOptions {
    fn from(a: WorldArgs) -> Self {
        WorldOptions {
            out: a.out,
            seed: a.seed,
            pairs: a.pairs,
            heldout: a.heldout,
            sft: a.sft,
            eval_prompts: a.eval_prompts,
            candidates: Candidates::from_name(&a.candidates).unwrap_or(Candidates::OnPolicy),
        }
    }
}

/// Runs `poc world` or `poc world label`.
pub fn run(args: WorldArgs) -> Result<(), Failure> {
    match args.command {
        Some(WorldCommand::Label(l)) => {
            let summary = world::label(&LabelOptions {
                data: l.data,
                out: l.out,
                seed: l.seed,
                score_noise: l.score_noise,
            })?;
            eprint!("{summary}");
        }
        None => print!("{}", world::run(&args.into())?),
    }
    Ok(())
}
