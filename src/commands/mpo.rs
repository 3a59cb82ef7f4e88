//! `poc mpo`: Mixed Preference Optimization end to end (poc_pipelines::mpo).

use crate::edge::Failure;
use poc_pipelines::mpo::{self, MpoOptions, RewardModel};
use poc_pipelines::stage::Runner;
use std::path::PathBuf;

/// Examples under `poc mpo --help`.
pub const EXAMPLES: &str = "Examples:
  poc mpo                                      tiny + 2,048 synthetic-world pairs, CPU (~40 s)
  poc mpo --model ./Llama-3.2-1B-sft --data prefs.jsonl --threshold 1 --out runs/mpo
  poc mpo --model ./sft --data prefs.jsonl --lora 16 --device cuda --lr 5e-6
  poc mpo --model ./sft --data prefs.jsonl --reward-model runs/rm/checkpoint-500
  poc mpo --set dpo.beta=0.2 --set ppo.kl_coef=0.1 --out runs/mpo-tuned";

/// Arguments of `poc mpo`.
#[derive(Debug, Clone, clap::Args)]
pub struct MpoArgs {
    /// The starting (SFT) model: a directory or a preset, as `poc run --model`.
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// TRL preference JSONL. Default: 2,048 pairs of the synthetic world (`poc world --seed 1`).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Pipeline directory (one subdirectory per stage).
    #[arg(long, default_value = "runs/mpo")]
    pub out: PathBuf,
    /// δ of the easy/hard split (easy: reward gap > δ).
    #[arg(long, value_name = "DELTA", default_value_t = 1.0)]
    pub threshold: f64,
    /// Optimizer steps of the reward model.
    #[arg(long, default_value_t = 100, conflicts_with = "reward_model")]
    pub reward_steps: usize,
    /// Optimizer steps of DPO on the easy pairs.
    #[arg(long, default_value_t = 100)]
    pub dpo_steps: usize,
    /// PPO steps (rollout batches) on the hard prompts.
    #[arg(long, default_value_t = 50)]
    pub ppo_steps: usize,
    /// Pairs (and prompts) per batch in every stage.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Longest PPO completion, in tokens.
    #[arg(long, default_value_t = 24)]
    pub max_new_tokens: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Train the reward model and the DPO stage data-parallel in N processes (as `poc run
    /// --nproc N`; --batch-size is then the global batch). PPO runs in one process.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub nproc: Option<u64>,
    /// Seed of every stage.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Train rank-R LoRA adapters in every stage (`poc run --lora R`) instead of every weight
    /// (the reward model's head trains in full). PPO then adapts the merged DPO model, which is
    /// its reference with the adapters off.
    #[arg(long, value_name = "R")]
    pub lora: Option<usize>,
    /// Save a checkpoint every N steps in every training stage (besides the last, and the one
    /// Ctrl-C writes); a rerun resumes a stopped stage from its latest checkpoint.
    #[arg(long, default_value_t = 0)]
    pub save_every: usize,
    /// Learning rate of the policy stages (DPO and PPO). Default: `poc run`'s: 1e-6 for a model
    /// directory, the preset's own for `--model tiny` (in the PPO stage too, although it starts
    /// from the DPO checkpoint).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Learning rate of the reward model. Default: `poc run`'s.
    #[arg(long, conflicts_with = "reward_model")]
    pub reward_lr: Option<f64>,
    /// Use this trained reward model (a `poc run bt_reward` checkpoint, or any
    /// LlamaForSequenceClassification directory) instead of training one: stage 1 is skipped.
    #[arg(long, value_name = "DIR")]
    pub reward_model: Option<PathBuf>,
    /// `world`: no reward model: split by the synthetic world's true gap (its
    /// true_reward_chosen/rejected columns) and score PPO's rollouts with its true reward r*,
    /// an oracle that separates MPO's algorithm from reward-model error.
    #[arg(long, value_name = "ORACLE", value_parser = ["world"],
        conflicts_with_all = ["reward_model", "reward_steps", "reward_lr"])]
    pub reward: Option<String>,
    /// No progress bars in the training stages (they show only on a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
    /// Override a parameter of a stage's objective, e.g. `--set dpo.beta=0.2` or
    /// `--set ppo.kl_coef=0.1` (repeatable).
    #[arg(long = "set", value_name = "STAGE.NAME=VALUE")]
    pub sets: Vec<String>,
}

impl From<MpoArgs> for MpoOptions {
    fn from(a: MpoArgs) -> Self {
        let reward = match (a.reward_model, a.reward) {
            (_, Some(_)) => RewardModel::World,
            (Some(dir), None) => RewardModel::Given(dir),
            (None, None) => RewardModel::Train {
                steps: a.reward_steps,
                lr: a.reward_lr,
            },
        };
        MpoOptions {
            model: a.model,
            data: a.data,
            out: a.out,
            threshold: a.threshold,
            reward,
            dpo_steps: a.dpo_steps,
            ppo_steps: a.ppo_steps,
            batch_size: a.batch_size,
            max_new_tokens: a.max_new_tokens,
            device: a.device,
            nproc: a.nproc.map(|n| n as usize),
            seed: a.seed,
            lora: a.lora,
            save_every: a.save_every,
            lr: a.lr,
            no_progress: a.no_progress,
            sets: a.sets,
        }
    }
}

/// Runs `poc mpo`, its stages as child `poc` commands.
pub fn run(args: MpoArgs) -> Result<(), Failure> {
    let runner = Runner::this_executable(crate::stages::command_line)?;
    Ok(mpo::run(&args.into(), &runner)?)
}
