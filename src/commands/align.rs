//! `poc bench align`: reward–KL frontiers of objectives on the synthetic world, judged by its
//! known true reward (poc_pipelines::align).

use crate::edge::{Failure, load_compiled};
use poc_pipelines::align::{self, AlignOptions, PairSource};
use poc_pipelines::stage::Runner;
use std::path::PathBuf;

/// `poc bench align --help`.
pub const ABOUT: &str = "\
Draw each objective's reward–KL frontier on the synthetic preference world (poc world,
docs/WORLD.md), as the DPO paper's Figure 2 does, judged by the world's known true reward r*,
and test each seed paper's claim in its own stratum with a control (docs/ALIGN.md).

Protocol:
  1. the world (v2): six families graded by reference alignment q, label dispersion T and a
     decoupled control, a hard family; pairs are on-policy (4 draws of the SFT process per
     prompt, every pair of distinct draws, Bradley-Terry labels on r*);
  2. a converged SFT reference (cached per world seed) and its GATE: on every family its
     samples must score at least 0.85 of the SFT data's r* and fewer than 2% may leave the
     alphabet; otherwise the benchmark stops with the per-family table;
  3. a reward model (bt_reward) for the PPO and MPO yardsticks, gated on ordering 80% of
     held-out pairs as r* does;
  4. every entrant trained for one epoch of the pairs with checkpoints at 1/8, 1/4, 1/2, 1:
       dpo, mallows_theta: beta in {0.03, 0.1, 0.3} (--full-grid adds 1)
       mipo: beta in {5, 10, 20} (--full-grid adds 2)
       mmpo: beta in {0.03, 0.1, 0.3} with the calibrated gamma = 1/((9/4) T) per pair, and
             the same on train_useless_scores.jsonl (its control); --full-grid adds the
             shipped gamma 2.2 and beta 0.01
       yardsticks: Best-of-N from the reference (N = 1..16, KL = log N - (N-1)/N), SFT on the
       chosen answers, PPO with the oracle reward (--reward world; kl_coef 0.05, 0.2), PPO
       with the reward model, MPO (poc mpo) with the reward model's split and with the
       oracle's (poc mpo --reward world);
  5. every checkpoint evaluated on held-out prompts: r* of a sample at temperature 1, the
     sampled KL(pi || pi_ref), greedy r*, the share of samples that leave the alphabet; on
     held-out pairs: the change of chosen and rejected log-probs, and the implicit reward's
     calibration against the TRUE probability sigmoid(gap / T);
  6. the report: per entrant the upper envelope of r* within KL 1, 3 and 10 nats (mean and
     95% interval over seeds), the same per stratum, the operating points; VALIDITY GATES
     (DPO at beta 0.1 must gain 0.2 r* within 5 nats, Best-of-4 must beat the reference) —
     if one fails the results are printed as \"invalid world or budget\", never as findings;
     then each seed paper's claim and control with its verdict (a difference counts only
     when it clears its interval); frontier.png and strata.png.

Every stage is skipped when its output is already in --out, and an interrupted training
continues from its latest checkpoint, so an interrupted benchmark resumes. --jobs runs that
many trainings side by side (one intra-op thread each).";

/// Examples under `poc bench align --help`.
pub const EXAMPLES: &str = "Examples:
  poc bench align                             the default benchmark (about 40 minutes on 2 cores)
  poc bench align dpo my_loss.po --seeds 5 --out runs/mine
  poc bench align --pairs-from strict         pairs of the trained reference's own samples
  poc bench align --pairs-from near-miss      the off-policy stress world
  poc bench align --quick --out /tmp/align    a smoke test (a few minutes; numbers mean nothing)";

/// Arguments of `poc bench align`.
#[derive(Debug, Clone, clap::Args)]
pub struct AlignArgs {
    /// Pairwise objectives to compare (paths or shipped names); each gets a beta grid.
    /// Default: dpo mipo mallows_theta mmpo.
    pub objectives: Vec<String>,
    /// Training seeds per entrant (intervals are over seeds).
    #[arg(long)]
    pub seeds: Option<usize>,
    /// Training pairs: one epoch of them is every pairwise entrant's budget.
    #[arg(long)]
    pub pairs: Option<usize>,
    /// Optimizer steps of the SFT reference (batch 16 rows, lr 1e-3).
    #[arg(long)]
    pub sft_steps: Option<usize>,
    /// Optimizer steps of the reward model (batch --batch-size pairs, lr 1e-4).
    #[arg(long)]
    pub reward_steps: Option<usize>,
    /// Rollout batches of every PPO entrant (mpo: half DPO steps, half rollout batches).
    #[arg(long)]
    pub ppo_steps: Option<usize>,
    /// Seed of the world (and of the reference's training).
    #[arg(long, default_value_t = 1)]
    pub world_seed: u64,
    /// Evaluation prompts (one sample at temperature 1 and one greedy completion each).
    #[arg(long)]
    pub eval_prompts: Option<usize>,
    /// The most tokens sampled per prompt (the stop token included).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Examples per training batch: preference pairs, or prompts of a rollout batch.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Learning rate of every entrant's training.
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f64,
    /// Where the training pairs come from: on-policy (draws of the SFT process, what a
    /// converged reference samples), strict (the trained reference's own samples, labelled by
    /// `poc world label`'s oracle) or near-miss (the off-policy stress world).
    #[arg(long, default_value = "on-policy", value_parser = ["on-policy", "strict", "near-miss"])]
    pub pairs_from: String,
    /// Four settings per objective instead of three, four PPO kl_coefs, MMPO's shipped gamma.
    #[arg(long)]
    pub full_grid: bool,
    /// Leave out the PPO and MPO yardsticks (and the reward model).
    #[arg(long)]
    pub no_ppo: bool,
    /// Trainings run side by side (each with one intra-op thread).
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Output directory; finished stages found there are not run again.
    #[arg(long, default_value = "runs/align")]
    pub out: PathBuf,
    /// A tiny budget for tests and smoke runs: the gates are reported, not enforced, and the
    /// numbers mean nothing.
    #[arg(long)]
    pub quick: bool,
}

impl From<AlignArgs> for AlignOptions {
    fn from(a: AlignArgs) -> Self {
        AlignOptions {
            objectives: a.objectives,
            seeds: a.seeds,
            pairs: a.pairs,
            sft_steps: a.sft_steps,
            reward_steps: a.reward_steps,
            ppo_steps: a.ppo_steps,
            world_seed: a.world_seed,
            eval_prompts: a.eval_prompts,
            max_new_tokens: a.max_new_tokens,
            batch_size: a.batch_size,
            lr: a.lr,
            pairs_from: PairSource::from_name(&a.pairs_from).unwrap_or(PairSource::OnPolicy),
            full_grid: a.full_grid,
            no_ppo: a.no_ppo,
            jobs: a.jobs,
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
    let [results, frontier, strata] = &summary.files;
    eprintln!(
        "poc bench align: done in {:.0}s; {}, {}, {}",
        summary.seconds,
        results.display(),
        frontier.display(),
        strata.display()
    );
    Ok(())
}
