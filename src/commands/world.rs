//! `poc world`: the synthetic preference world's files (poc_pipelines::world).

use crate::edge::Failure;
use poc_pipelines::world::{self, WorldOptions};
use std::path::PathBuf;

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

impl From<WorldArgs> for WorldOptions {
    fn from(a: WorldArgs) -> Self {
        WorldOptions {
            out: a.out,
            seed: a.seed,
            pairs: a.pairs,
            heldout: a.heldout,
            sft: a.sft,
            eval_prompts: a.eval_prompts,
        }
    }
}

/// Runs `poc world`.
pub fn run(args: WorldArgs) -> Result<(), Failure> {
    print!("{}", world::run(&args.into())?);
    Ok(())
}
