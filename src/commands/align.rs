//! `poc bench align`: objectives compared by the synthetic world's true reward
//! (poc_pipelines::align).

use crate::edge::{Failure, load_compiled};
use poc_pipelines::align::{self, AlignOptions};
use poc_pipelines::stage::Runner;
use std::path::PathBuf;

/// `poc bench align --help`.
pub const ABOUT: &str = "\
Train each objective from the same SFT reference with the same budget and several seeds on the
synthetic preference world (poc world, docs/WORLD.md), sample every trained policy, and report
per objective, as mean and 95% confidence interval over the seeds (t-distribution):

  true reward   mean r*(x, y) of one sample (temperature 1) per evaluation prompt
  win rate      fraction of prompts where the policy's sample beats the reference's by r*
                (ties count 1/2)
  KL            KL(π || π_ref) estimated as the mean over the policy's samples of
                log π(y|x) − log π_ref(y|x) (sequence log-probs, the stop token included)
  accuracy      held-out pairs (heldout.jsonl) whose implicit reward margin
                Δ = log π/π_ref(chosen) − log π/π_ref(rejected) orders them as r* does
                (pairs tied in r* are left out; Δ = 0 counts 1/2)
  ECE           expected calibration error (10 equal-width bins) of p = σ(β·Δ) against the
                event \"chosen has the higher r*\", β the objective's `beta` (0.1 without one)
  train s       wall-clock seconds of the entrant's training (all its stages)

Entrants are pairwise objectives (dpo, my_loss.po, ...), on-policy objectives (ppo: rollouts
scored by a reward model) and the pipeline `mpo` (poc mpo: split by the reward model's gap, DPO
on the easy pairs, then PPO on the hard prompts from the DPO model). Every entrant gets the same
budget of --steps batches of --batch-size training examples: pairs for a pairwise objective,
prompts (rollout batches, each of 4 PPO epochs) for an on-policy one, and for mpo the first
half as DPO steps and the rest as PPO rollout batches. On-policy entrants and mpo share one
reward model (bt_reward, trained once from the reference on world/train.jsonl).

Stages, each skipped when its output is already in --out (so the benchmark resumes):
  1. OUT/world                     poc world --seed W
  2. OUT/reference                 SFT of the tiny model on world/sft.jsonl (sft.po)
  3. OUT/reward_model              poc run bt_reward from the reference (only for ppo, mpo)
  4. OUT/runs/seedS/OBJ            poc run OBJ --model OUT/reference/checkpoint-N --seed S
                                   (mpo: poc mpo --reward-model OUT/reward_model/...)
  5. OUT/eval/seedS/OBJ.json       samples, r*, log-probs, held-out margins
  6. OUT/results.md, OUT/frontier.png (true reward against KL), OUT/curves.png (training
     curves of the first seed; mpo's are in its stage directories), and the table on stdout.";

/// Examples under `poc bench align --help`.
pub const EXAMPLES: &str = "Examples:
  poc bench align                             dpo ipo mipo mallows_theta mmpo, 3 seeds
  poc bench align dpo my_loss.po --seeds 5 --out runs/mine
  poc bench align dpo ppo mpo --lr 2e-5       MPO against DPO-only and PPO-only
  poc bench align --quick --out /tmp/align    a small budget (a smoke test, about a minute)";

/// Arguments of `poc bench align`.
#[derive(Debug, Clone, clap::Args)]
pub struct AlignArgs {
    /// Objectives to compare (paths or shipped names). Default: dpo ipo mipo mallows_theta mmpo.
    pub objectives: Vec<String>,
    /// Training seeds per objective (data order and sampling streams).
    #[arg(long)]
    pub seeds: Option<usize>,
    /// Training batches of every entrant: optimizer steps of a pairwise objective, rollout
    /// batches of an on-policy one, and for mpo half DPO steps, half PPO rollout batches.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Optimizer steps of the SFT reference (batch 16 rows).
    #[arg(long)]
    pub sft_steps: Option<usize>,
    /// Optimizer steps of the reward model that ppo and mpo entrants use (batch --batch-size
    /// pairs, lr 1e-4).
    #[arg(long)]
    pub reward_steps: Option<usize>,
    /// Seed of the world (and of the reference's training).
    #[arg(long, default_value_t = 1)]
    pub world_seed: u64,
    /// Evaluation prompts (one sample each per model and seed).
    #[arg(long)]
    pub eval_prompts: Option<usize>,
    /// The most tokens sampled per prompt (the stop token included), in the evaluation and in
    /// the rollouts of on-policy entrants and mpo.
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Examples per training batch: preference pairs, or prompts of a rollout batch.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Learning rate of every entrant's training (the SFT reference uses 1e-3, the reward
    /// model 1e-4).
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// Output directory; finished stages found there are not run again.
    #[arg(long, default_value = "runs/align")]
    pub out: PathBuf,
    /// A tiny budget (a small world, 2 seeds, a few steps): for tests and smoke runs; the
    /// numbers mean nothing.
    #[arg(long)]
    pub quick: bool,
}

impl From<AlignArgs> for AlignOptions {
    fn from(a: AlignArgs) -> Self {
        AlignOptions {
            objectives: a.objectives,
            seeds: a.seeds,
            steps: a.steps,
            sft_steps: a.sft_steps,
            reward_steps: a.reward_steps,
            world_seed: a.world_seed,
            eval_prompts: a.eval_prompts,
            max_new_tokens: a.max_new_tokens,
            batch_size: a.batch_size,
            lr: a.lr,
            out: a.out,
            quick: a.quick,
        }
    }
}

/// Runs `poc bench align`, its training stages as child `poc` commands.
pub fn run(args: AlignArgs) -> Result<(), Failure> {
    let runner = Runner::this_executable(crate::stages::command_line)?;
    let load = |arg: &str| load_compiled(arg).map_err(Into::into);
    let summary = align::run(&args.into(), &load, &runner)?;
    print!("{}", summary.table);
    let [results, frontier, curves] = &summary.files;
    eprintln!(
        "poc bench align: done in {:.0}s; {}, {}, {}",
        summary.seconds,
        results.display(),
        frontier.display(),
        curves.display()
    );
    Ok(())
}
