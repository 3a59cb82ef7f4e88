//! Set-up of a training run: a [`RunSpec`] (what `poc run`'s flags say) becomes a ready run for
//! one of the loops. Small parts, each one decision, used by both paths:
//! - [`check_sizes`], [`devices`], [`compute`], [`lora`], [`reward_task`]: flags → values;
//! - [`run_dir`], [`synthetic_file`], [`write_run_config`]: the run directory;
//! - [`policy`], [`resume_weights`], [`resume_state`]: the starting model, LoRA and `--resume`;
//! - [`Reference::starting`] and [`cached_reference`]: the reference and its cache;
//! - [`training_pairs`], [`held_out`], [`check_demonstrations`]: the data.
//!
//! [`prepare`] composes them. It prints nothing: what a user should hear about arrives as a
//! [`Notice`] for the caller to word.

use super::on_policy::{OnPolicyRun, RolloutOptions, Scorer, is_on_policy};
use super::pairs::{Eval, PairRun};
use super::reference::adapters_off;
use super::settings::{self, Change, Settings};
use super::{RefCache, Reference, Resume, Schedule, TrainError, TrainOptions, load_resume};
use crate::data::{self, DataError, Pair, Tok};
use crate::device::{BadDevice, DeviceSpec};
use crate::model::{
    Compute, Llama, LoraConfig, ModelError, ResolveError, Resolved, Target, load, resolve,
};
use crate::observe::needs;
use crate::plan;
pub use crate::train::parallel::{DataParallel, ParallelSpec};
use burn::module::Module;
use burn::tensor::Device;
use poc_compiler::{Compiled, Rollout, Source};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use std::path::{Path, PathBuf};

/// What is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Decided by the objective: one that reads reward-model outputs trains a reward model.
    Auto,
    /// A policy's log-probs.
    Policy,
    /// A reward model's scalar head and backbone.
    Reward,
}

/// A training run as described by the user (`poc run`'s flags, already parsed).
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// A model directory or a preset name.
    pub model: String,
    /// Preference rows: a file (JSON lines, JSON, Parquet), a directory or a Hub dataset id
    /// (default: bundled synthetic pairs).
    pub data: Option<PathBuf>,
    /// The split read when `data` (or `prompts`) is a directory or a Hub dataset id.
    pub split: String,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Pairs (or prompts) per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Stop after this many optimizer steps (overrides `epochs`).
    pub max_steps: Option<usize>,
    /// Passes over the data.
    pub epochs: usize,
    /// Prompt + completion truncated to this many tokens.
    pub max_length: usize,
    /// Peak learning rate (default: by model and loop).
    pub lr: Option<f64>,
    /// Fraction of steps of linear warm-up.
    pub warmup_ratio: f64,
    /// Decay after warm-up.
    pub schedule: Schedule,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 disables).
    pub max_grad_norm: f64,
    /// Seed of initialization, data order and sampling.
    pub seed: u64,
    /// Save a checkpoint every N steps (besides the last).
    pub save_every: usize,
    /// Keep only the newest N checkpoints (`None`: keep all).
    pub save_total_limit: Option<usize>,
    /// The dtype of saved model weights (`None`: the loaded model's, from its config).
    pub save_dtype: Option<crate::model::SaveDtype>,
    /// Run even when the memory plan exceeds the device's free memory.
    pub skip_memory_check: bool,
    /// Run directory (default `runs/OBJECTIVE`).
    pub out: Option<PathBuf>,
    /// The objective's parameter values (after `--set`).
    pub params: Vec<f64>,
    /// Stop at the first bad data row instead of skipping it.
    pub strict: bool,
    /// Random weights for a preset without local weights.
    pub random_init: bool,
    /// Continue from this checkpoint.
    pub resume: Option<PathBuf>,
    /// Settings (by flag name, `set.NAME`, or `set`) that may differ from the resumed
    /// checkpoint's; any other difference refuses the resume.
    pub allow_change: Vec<String>,
    /// Compute the reference's statistics once and cache them.
    pub precompute_ref: bool,
    /// LoRA rank (none: full fine-tuning).
    pub lora: Option<usize>,
    /// LoRA α (default 2 × rank).
    pub lora_alpha: Option<f64>,
    /// Projections that get adapters, comma-separated (or `all-linear`).
    pub lora_target_modules: String,
    /// Compute dtype (default: bf16 on CUDA, f32 on the CPU).
    pub dtype: Option<Compute>,
    /// Recompute activations in the backward pass.
    pub gradient_checkpointing: bool,
    /// What is trained.
    pub task: Task,
    /// Held-out pairs.
    pub eval_data: Option<PathBuf>,
    /// The split read when `eval_data` is a directory or a Hub dataset id.
    pub eval_split: String,
    /// Hold out this fraction of the data instead.
    pub eval_fraction: Option<f64>,
    /// Evaluate every N steps (besides after the last).
    pub eval_every: usize,
    /// On-policy: the reward model scoring the rollouts.
    pub reward_model: Option<PathBuf>,
    /// On-policy: score rollouts with the synthetic world's true reward r* instead.
    pub world_reward: bool,
    /// On-policy: the prompts to sample from (default: `data`'s, or bundled ones).
    pub prompts: Option<PathBuf>,
    /// On-policy: optimization epochs per rollout batch.
    pub ppo_epochs: usize,
    /// On-policy: the longest sampled completion.
    pub max_new_tokens: usize,
    /// On-policy: sampling temperature.
    pub temperature: f64,
    /// Data parallelism: the launcher's ranks (`torchrun`'s variables) and the timeout of the
    /// collectives; `None` (or a world of one) trains alone.
    pub parallel: Option<ParallelSpec>,
}

/// Something the user should hear about during set-up (the caller words it).
#[derive(Debug, Clone)]
pub enum Notice {
    /// Training continues from checkpoint `dir` at `step`.
    Resuming {
        /// The checkpoint.
        dir: PathBuf,
        /// Its step.
        step: usize,
    },
    /// Bad data rows were skipped (one message each, naming file and line).
    SkippedRows(Vec<String>),
    /// The reference's statistics were read from the cache at this path.
    CachedReference(PathBuf),
    /// The reference's statistics are being computed over this many pairs.
    PrecomputingReference(usize),
    /// The run directory's lock was left by a process that ended without releasing it (its
    /// description); this run took it over.
    StaleLock(String),
    /// Half-written files or checkpoint directories of a killed run, removed.
    RemovedLeftovers(Vec<PathBuf>),
    /// Pairs whose chosen and rejected completions are the same tokens (their lines): they
    /// carry no preference, and are kept.
    DegeneratePairs(Vec<usize>),
    /// The resumed checkpoint records no settings (written before poc recorded them): nothing
    /// was compared.
    UnrecordedSettings(PathBuf),
    /// Settings that differ from the resumed checkpoint's, allowed by `--allow-change`.
    ChangedSettings(Vec<Change>),
}

/// Whether a model is a policy or a reward model, as messages name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A policy.
    Policy,
    /// A reward model.
    RewardModel,
}

impl Kind {
    fn of(reward: bool) -> Kind {
        if reward {
            Kind::RewardModel
        } else {
            Kind::Policy
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Policy => "policy",
            Kind::RewardModel => "reward model",
        })
    }
}

/// Why a run could not be set up; each message names the flag or file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// Batch sizes of zero or a tiny maximum length.
    #[error("--batch-size and --grad-accum must be at least 1, --max-length at least 4")]
    Sizes,
    /// Flags the on-policy loop does not implement.
    #[error("--precompute-ref and --grad-accum are not supported for on-policy objectives yet")]
    OnPolicyUnsupported,
    /// `--resume` with settings that differ from the checkpoint's (each listed), not allowed by
    /// `--allow-change`.
    #[error(
        "--resume {}: this run's settings differ from the checkpoint's, so it would not continue the same run:\n{changes}  = hint: give the checkpoint's values to continue it, or pass --allow-change {keys} to continue with the new ones (recorded in run_config.json's history)",
        dir.display()
    )]
    ResumeChanged {
        /// The checkpoint.
        dir: PathBuf,
        /// One indented line per refused change.
        changes: String,
        /// The refused settings, comma-separated (what `--allow-change` would name).
        keys: String,
    },
    /// `--allow-change` names no setting of the run.
    #[error("--allow-change {key}: not a setting of this run; the settings are {keys}")]
    AllowChange {
        /// The unknown name.
        key: String,
        /// The run's settings.
        keys: String,
    },
    /// The global batch does not split evenly over the ranks.
    #[error(
        "--batch-size {batch} is the global batch per step and must be a multiple of the number of processes ({world}); each process takes {batch}/{world} pairs"
    )]
    BatchNotDivisible {
        /// `--batch-size`.
        batch: usize,
        /// WORLD_SIZE.
        world: usize,
    },
    /// Data parallelism for the on-policy loop.
    #[error(
        "the on-policy loop (objectives with rollout inputs, e.g. ppo) runs in one process for now; run it without torchrun / --nproc"
    )]
    OnPolicyParallel,
    /// Joining the group or one of its collectives failed.
    #[error("data parallel: {0}")]
    Dist(#[from] poc_dist::DistError),
    /// `--precompute-ref` for an objective that reads the reference's per-token log-probs.
    #[error(
        "--precompute-ref caches the reference's sequence log-probs and entropies, but this objective reads its per-token log-probs (reference.token_logps); run without --precompute-ref"
    )]
    PrecomputeTokens,
    /// Sampling flags out of range.
    #[error("--max-new-tokens and --ppo-epochs must be at least 1, --temperature above 0")]
    Sampling,
    /// `--device` names no usable device.
    #[error(transparent)]
    Device(#[from] BadDevice),
    /// `--model` (or `--reward-model`) could not be resolved.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// `--lora 0`.
    #[error("--lora: the rank must be at least 1")]
    LoraRank,
    /// The memory plan clearly exceeds what the device has (checked before loading).
    #[error(
        "the run needs about {need} but {device} has {free}:\n{table}  = hint: what would fit better (estimated totals):\n{remedies}  = hint: `poc run ... --dry-run` prints the plan; --skip-memory-check runs anyway"
    )]
    WontFit {
        /// The estimated total.
        need: String,
        /// The device, as named.
        device: String,
        /// Its free memory.
        free: String,
        /// The plan's table.
        table: String,
        /// One line per remedy.
        remedies: String,
    },
    /// An unknown projection in `--lora-target-modules`.
    #[error("--lora-target-modules: {0}")]
    LoraTargets(String),
    /// `--task reward` for an objective that reads no reward-model output.
    #[error(
        "--task reward: `{0}` reads no reward-model output (declare e.g. `input reward_chosen from reward(chosen)`, as bt_reward.po does)"
    )]
    NotARewardObjective(String),
    /// `--task policy` for an objective that reads reward-model outputs.
    #[error(
        "--task policy: `{0}` reads reward-model outputs; it trains a reward model (--task reward)"
    )]
    RewardObjective(String),
    /// Another run holds the run directory.
    #[error(transparent)]
    Lock(#[from] super::lock::LockError),
    /// The run directory could not be created.
    #[error("cannot create `{}`: {source}", path.display())]
    RunDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A pair run resumed from an on-policy run's checkpoint.
    #[error(
        "--resume {}: a checkpoint of an on-policy run; continue it with the on-policy objective it was trained with",
        .0.display()
    )]
    OnPolicyCheckpoint(PathBuf),
    /// An on-policy run resumed from another kind of checkpoint.
    #[error(
        "--resume {}: not a checkpoint of an on-policy run (its trainer_state.json lacks \"on_policy\": true)",
        .0.display()
    )]
    NotOnPolicyCheckpoint(PathBuf),
    /// The checkpoint's adapters are of the other kind of model.
    #[error("--resume {}: the checkpoint's adapters are a {adapters}'s, but this run trains a {run}", dir.display())]
    AdapterKind {
        /// The checkpoint.
        dir: PathBuf,
        /// What its adapters belong to.
        adapters: Kind,
        /// What this run trains.
        run: Kind,
    },
    /// The checkpoint is the other kind of model.
    #[error("--resume {}: the checkpoint is a {checkpoint}, but this run trains a {run}", dir.display())]
    ModelKind {
        /// The checkpoint.
        dir: PathBuf,
        /// What it holds.
        checkpoint: Kind,
        /// What this run trains.
        run: Kind,
    },
    /// `--lora` with a checkpoint of a full fine-tune.
    #[error(
        "--resume {}: the checkpoint has no LoRA adapters (adapter/adapter_config.json), but --lora was given",
        .0.display()
    )]
    NoAdapters(PathBuf),
    /// A LoRA checkpoint without `--lora`.
    #[error(
        "--resume {}: the checkpoint holds LoRA adapters; give the same --lora flags as the original run",
        .0.display()
    )]
    HasAdapters(PathBuf),
    /// `--reward-model` is not a reward model.
    #[error(
        "--reward-model {}: not a reward model (no `score.weight`); train one with `poc run bt_reward`",
        .0.display()
    )]
    NotARewardModel(PathBuf),
    /// `--reward-model` tokenizes differently from the policy.
    #[error("--reward-model {}: its vocabulary ({reward_model} ids) differs from the policy's ({policy})", dir.display())]
    RewardVocabulary {
        /// The reward model.
        dir: PathBuf,
        /// Its vocabulary size.
        reward_model: usize,
        /// The policy's.
        policy: usize,
    },
    /// The objective reads a score but no `--reward-model` was given.
    #[error(
        "`{0}` reads the reward model's score: pass --reward-model DIR (train one with `poc run bt_reward --out DIR`), or --reward world on the synthetic world's prompts"
    )]
    NoRewardModel(String),
    /// Both ways of holding out pairs.
    #[error("give --eval-data or --eval-fraction, not both")]
    EvalBoth,
    /// `--eval-fraction` outside [0, 1).
    #[error("--eval-fraction {0}: expected a fraction in [0, 1)")]
    EvalFraction(f64),
    /// A demonstration row for an objective that reads the rejected completion.
    #[error(
        "data line {line}: a demonstration row (`prompt`/`completion` or `messages`) has no rejected completion, but `{objective}` reads `{input}` ({reads}); give preference rows (`prompt`, `chosen`, `rejected`) or train an objective that reads only the chosen side, such as sft"
    )]
    Demonstration {
        /// The row's line.
        line: usize,
        /// The objective.
        objective: String,
        /// The input that reads the rejected side.
        input: String,
        /// Its source, as written.
        reads: String,
    },
    /// The data could not be read.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Model files could not be read or written.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The checkpoint's trainer state could not be read.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// A value could not be serialized (a bug).
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

impl SetupError {
    /// Whether this is a bug rather than a problem with the user's flags or files.
    pub fn is_internal(&self) -> bool {
        matches!(self, SetupError::Json(_))
    }
}

/// A run ready for its loop, or (on-policy) waiting for its prompts.
pub enum Prepared<'a> {
    /// A pair run, ready for [`super::train_pairs`].
    Pairs(Box<PairRun<'a>>),
    /// An on-policy run; [`OnPolicySetup::with_prompts`] makes it ready.
    OnPolicy(Box<OnPolicySetup<'a>>),
}

/// The devices of a run: the plain one (frozen models, everything without gradients) and
/// the training one (autodiff, optionally with gradient checkpointing), and their kind.
pub struct Devices {
    /// As named.
    pub spec: DeviceSpec,
    /// Without gradients.
    pub plain: Device,
    /// With gradients: where the trained model lives.
    pub train: Device,
}

/// The sizes every loop needs: at least one pair per batch and micro-batch per step, and room
/// for a prompt and a completion.
pub fn check_sizes(spec: &RunSpec) -> Result<(), SetupError> {
    if spec.batch_size == 0 || spec.grad_accum == 0 || spec.max_length < 4 {
        return Err(SetupError::Sizes);
    }
    Ok(())
}

/// The run's devices, after checking that `spec.device` is usable.
pub fn devices(spec: &RunSpec) -> Result<Devices, SetupError> {
    let kind = DeviceSpec::usable(&spec.device)?;
    let plain = kind.device();
    let train = crate::device::training(&plain, spec.gradient_checkpointing);
    Ok(Devices {
        spec: kind,
        plain,
        train,
    })
}

/// The compute dtype: `spec.dtype`, else bf16 on CUDA and f32 on the CPU.
pub fn compute(spec: &RunSpec, device: DeviceSpec) -> Compute {
    match (spec.dtype, device) {
        (Some(c), _) => c,
        (None, DeviceSpec::Cpu) => Compute::F32,
        (None, DeviceSpec::Cuda(_)) => Compute::Bf16,
    }
}

/// The adapters the LoRA flags ask for, if any.
pub fn lora(spec: &RunSpec) -> Result<Option<LoraConfig>, SetupError> {
    Ok(match spec.lora {
        None => None,
        Some(0) => return Err(SetupError::LoraRank),
        Some(rank) => Some(LoraConfig {
            rank,
            alpha: spec.lora_alpha.unwrap_or(2.0 * rank as f64),
            targets: Target::parse_list(&spec.lora_target_modules)
                .map_err(SetupError::LoraTargets)?,
        }),
    })
}

/// Whether the model's family has the modules `lora` targets.
fn check_lora_targets(model: &Llama, lora: &LoraConfig) -> Result<(), SetupError> {
    model
        .arch
        .check_lora_targets(&lora.targets)
        .map_err(|r| SetupError::LoraTargets(r.0))
}

/// Whether `task` trains a reward model for objective `c`; an objective that reads reward
/// outputs cannot train a policy and vice versa.
pub fn reward_task(c: &Compiled, task: Task) -> Result<bool, SetupError> {
    let reads_rewards = needs(&c.objective.inputs).trains_reward_model();
    match task {
        Task::Auto => Ok(reads_rewards),
        Task::Reward if reads_rewards => Ok(true),
        Task::Policy if !reads_rewards => Ok(false),
        Task::Reward => Err(SetupError::NotARewardObjective(c.objective.name.clone())),
        Task::Policy => Err(SetupError::RewardObjective(c.objective.name.clone())),
    }
}

/// The run directory (`spec.out`, default `runs/OBJECTIVE`), created and, by the process that
/// writes it (`writes`: every process but a data-parallel run's other ranks), locked for the
/// process's life ([`super::lock`]) before anything is written to it; what a killed run left
/// half-written there is removed.
pub fn run_dir(
    c: &Compiled,
    spec: &RunSpec,
    writes: bool,
    notice: &mut dyn FnMut(Notice),
) -> Result<PathBuf, SetupError> {
    let out = out_dir(c, spec);
    std::fs::create_dir_all(&out).map_err(|source| SetupError::RunDir {
        path: out.clone(),
        source,
    })?;
    if writes {
        if let Some(holder) = super::lock::lock_run_dir(&out)? {
            notice(Notice::StaleLock(holder));
        }
        let removed = super::lock::remove_leftovers(&out);
        if !removed.is_empty() {
            notice(Notice::RemovedLeftovers(removed));
        }
    }
    Ok(out)
}

/// The run directory: `--out`, or `runs/OBJECTIVE`.
pub fn out_dir(c: &Compiled, spec: &RunSpec) -> PathBuf {
    spec.out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(&c.objective.name))
}

/// What set-up writes into a run directory before training starts (the lock and the bundled
/// data): a directory holding nothing else was made by a set-up that failed, and is removed.
const SETUP_FILES: [&str; 3] = [super::lock::LOCK_FILE, "data.jsonl", "prompts.jsonl"];

/// Undoes a failed set-up's run directory `out`, which it created: releases the lock and removes
/// the directory when it holds only what set-up wrote (never a checkpoint, metrics or a
/// reference cache).
pub fn abandon(out: &Path) {
    super::lock::release(out);
    let Ok(entries) = std::fs::read_dir(out) else {
        return;
    };
    let only_setup = entries.flatten().all(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        SETUP_FILES.contains(&name.as_ref()) || (name.starts_with('.') && name.contains(".tmp-"))
    });
    if only_setup {
        let _ = std::fs::remove_dir_all(out);
    }
}

/// The bundled synthetic pairs written to `out/name` (the default data and prompts), and
/// their text.
pub fn synthetic_file(out: &Path, name: &str) -> Result<(PathBuf, String), SetupError> {
    let path = out.join(name);
    let text = data::synthetic::synthetic_jsonl(2048, 7);
    // Atomic: the ranks of a data-parallel run each write it.
    load::write_atomic(&path, text.as_bytes())?;
    Ok((path, text))
}

/// Writes `out/run_config.json`: what the run resolved its flags to.
pub fn write_run_config(out: &Path, config: &serde_json::Value) -> Result<(), SetupError> {
    let text = serde_json::to_string_pretty(config)?;
    load::write_atomic(&out.join("run_config.json"), text.as_bytes())?;
    Ok(())
}

/// The starting model (`spec.model`) on the training device in the run's compute dtype, and
/// its tokenizer; `embedded` says whether it is the bundled `tiny`.
pub fn policy(spec: &RunSpec, devices: &Devices) -> Result<Resolved, SetupError> {
    let compute = compute(spec, devices.spec);
    // A LoRA base under bf16 is frozen and stored in bf16: load it so (never all in f32).
    let frozen =
        (spec.lora.is_some() && compute == Compute::Bf16).then_some(burn::tensor::DType::BF16);
    let mut r =
        crate::model::resolve_stored(&spec.model, spec.random_init, &devices.train, frozen)?;
    r.model.compute = compute;
    Ok(r)
}

/// The JSON file at `path`, if it exists and parses.
fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Whether checkpoint `dir` was written by an on-policy run (its trainer state says so).
pub fn is_on_policy_checkpoint(dir: &Path) -> bool {
    read_json(&dir.join("trainer_state.json"))
        .is_some_and(|s| s["on_policy"].as_bool() == Some(true))
}

/// The weights a resumed run continues from: under LoRA (`lora`) the checkpoint's adapters on
/// `policy` (the starting model), else the checkpoint's full model on `device` in `policy`'s
/// compute dtype. A LoRA run needs a LoRA checkpoint and the reverse.
pub fn resume_weights(
    dir: &Path,
    lora: bool,
    policy: Llama,
    device: &Device,
) -> Result<Llama, SetupError> {
    let adapters = load::adapter_dir(dir);
    match (lora, load::has_adapters(&adapters)) {
        (true, true) => Ok(load::load_adapters(&adapters, policy)?),
        (true, false) => Err(SetupError::NoAdapters(dir.to_path_buf())),
        (false, true) => Err(SetupError::HasAdapters(dir.to_path_buf())),
        (false, false) => {
            let mut loaded = load::load(dir, device)?;
            loaded.compute = policy.compute;
            Ok(loaded)
        }
    }
}

/// The trainer state of checkpoint `dir`, with `policy` (its weights) re-keyed to match it.
pub fn resume_state(
    dir: &Path,
    policy: Llama,
    notice: &mut dyn FnMut(Notice),
) -> Result<(Llama, Resume), SetupError> {
    let (policy, resume) = load_resume(dir, policy)?;
    notice(Notice::Resuming {
        dir: dir.to_path_buf(),
        step: resume.step,
    });
    Ok((policy, resume))
}

/// Checks that checkpoint `dir` is one a pair run training a reward model (`reward`) or a
/// policy can continue: not an on-policy run's, and under LoRA the same kind of model (the
/// adapters' PEFT task).
fn check_pair_checkpoint(dir: &Path, reward: bool) -> Result<(), SetupError> {
    if is_on_policy_checkpoint(dir) {
        return Err(SetupError::OnPolicyCheckpoint(dir.to_path_buf()));
    }
    if let Some(cfg) = read_json(&load::adapter_dir(dir).join("adapter_config.json")) {
        let adapters_reward = cfg["task_type"] == "SEQ_CLS";
        if adapters_reward != reward {
            return Err(SetupError::AdapterKind {
                dir: dir.to_path_buf(),
                adapters: Kind::of(adapters_reward),
                run: Kind::of(reward),
            });
        }
    }
    Ok(())
}

/// The training pairs: `spec.data`, or the bundled synthetic pairs (written to
/// `out/data.jsonl`). Bad rows are skipped with a notice (or stop the run under `strict`).
pub fn training_pairs(
    c: &Compiled,
    spec: &RunSpec,
    tok: &Tok,
    out: &Path,
    notice: &mut dyn FnMut(Notice),
) -> Result<Vec<Pair>, SetupError> {
    let columns = columns_read(c);
    let (pairs, bad) = match &spec.data {
        Some(p) => {
            data::load_pairs_reading(p, &spec.split, tok, spec.max_length, spec.strict, &columns)?
        }
        None => {
            let (path, text) = synthetic_file(out, "data.jsonl")?;
            let label = path.display().to_string();
            data::pairs::parse_pairs_reading(
                &text,
                &label,
                tok,
                spec.max_length,
                spec.strict,
                &columns,
            )?
        }
    };
    skipped(bad, notice);
    degenerate(&pairs, notice);
    Ok(pairs)
}

/// The data columns objective `c` reads (every row must hold each as a finite number).
pub fn columns_read(c: &Compiled) -> Vec<String> {
    let mut columns: Vec<String> = c
        .objective
        .inputs
        .iter()
        .filter_map(|i| match &i.source {
            Source::Column(col) => Some(col.clone()),
            _ => None,
        })
        .collect();
    columns.sort();
    columns.dedup();
    columns
}

/// Reports the pairs whose chosen and rejected completions tokenize the same (they carry no
/// preference; kept, as TRL keeps them).
fn degenerate(pairs: &[Pair], notice: &mut dyn FnMut(Notice)) {
    let lines: Vec<usize> = pairs
        .iter()
        .filter(|p| !p.demonstration && p.chosen.ids == p.rejected.ids)
        .map(|p| p.line)
        .collect();
    if !lines.is_empty() {
        notice(Notice::DegeneratePairs(lines));
    }
}

fn skipped(bad: Vec<String>, notice: &mut dyn FnMut(Notice)) {
    if !bad.is_empty() {
        notice(Notice::SkippedRows(bad));
    }
}

/// How `data` is named in the run's records: a file by its path, a directory or a Hub dataset
/// id with its split.
fn data_label(data: &Path, split: &str) -> String {
    if data.is_file() {
        data.display().to_string()
    } else {
        format!("{} (split {split})", data.display())
    }
}

/// Splits off the evaluation pairs: `spec.eval_data`, or a seeded `spec.eval_fraction` of the
/// training pairs (default 0.1 for a reward model, none for a policy). Returns (training,
/// held-out).
pub fn held_out(
    c: &Compiled,
    pairs: Vec<Pair>,
    spec: &RunSpec,
    tok: &Tok,
    reward: bool,
    notice: &mut dyn FnMut(Notice),
) -> Result<(Vec<Pair>, Vec<Pair>), SetupError> {
    if let Some(path) = &spec.eval_data {
        if spec.eval_fraction.is_some() {
            return Err(SetupError::EvalBoth);
        }
        let (eval, bad) = data::load_pairs_reading(
            path,
            &spec.eval_split,
            tok,
            spec.max_length,
            spec.strict,
            &columns_read(c),
        )?;
        skipped(bad, notice);
        degenerate(&eval, notice);
        return Ok((pairs, eval));
    }
    let fraction = spec.eval_fraction.unwrap_or(if reward { 0.1 } else { 0.0 });
    if !(0.0..1.0).contains(&fraction) {
        return Err(SetupError::EvalFraction(fraction));
    }
    let n_eval = (pairs.len() as f64 * fraction).round() as usize;
    if n_eval == 0 {
        return Ok((pairs, Vec::new()));
    }
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(spec.seed ^ 0x6576616c);
    order.shuffle(&mut rng);
    let held: std::collections::HashSet<usize> = order[..n_eval].iter().copied().collect();
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for (i, p) in pairs.into_iter().enumerate() {
        if held.contains(&i) {
            eval.push(p);
        } else {
            train.push(p);
        }
    }
    Ok((train, eval))
}

/// A demonstration row (TRL SFT format) has no rejected completion: an error naming its line
/// when the objective reads one.
pub fn check_demonstrations<'p>(
    c: &Compiled,
    mut pairs: impl Iterator<Item = &'p Pair>,
) -> Result<(), SetupError> {
    let reader = c
        .objective
        .inputs
        .iter()
        .find(|i| needs(std::slice::from_ref(i)).rejected);
    match (reader, pairs.find(|p| p.demonstration)) {
        (Some(input), Some(p)) => Err(SetupError::Demonstration {
            line: p.line,
            objective: c.objective.name.clone(),
            input: input.name.clone(),
            reads: input.source.text(),
        }),
        _ => Ok(()),
    }
}

/// The reference's statistics over `pairs` as a [`Reference::Cached`], from the cache at
/// `path` when it was computed for the same model and data, else computed now (one no-grad
/// pass of `model`) and cached there; no reference for no pairs.
#[allow(clippy::too_many_arguments)]
pub fn cached_reference(
    c: &Compiled,
    spec: &RunSpec,
    pairs: &[Pair],
    tok: &Tok,
    model: &Llama,
    device: &Device,
    path: &Path,
    mut parallel: Option<&mut DataParallel>,
    notice: &mut dyn FnMut(Notice),
) -> Result<Reference, SetupError> {
    if pairs.is_empty() {
        return Ok(Reference::None);
    }
    let entropy = needs(&c.objective.inputs).reference.entropy;
    let fingerprint = format!(
        "model={} seed={} data={} max_length={} pairs={} entropy={entropy}",
        spec.model,
        spec.seed,
        spec.data
            .as_ref()
            .map(|p| data_label(p, &spec.split))
            .unwrap_or_else(|| "synthetic".into()),
        spec.max_length,
        pairs.len(),
    );
    let cached = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<RefCache>(&t).ok())
        .filter(|c| c.fingerprint == fingerprint);
    // The ranks decide together: all read the cache, or all compute it.
    let found_everywhere = match parallel.as_deref_mut() {
        Some(p) => {
            let mut found = [f64::from(u8::from(cached.is_some()))];
            p.sum(&mut found)?;
            found[0] as usize == p.world_size()
        }
        None => cached.is_some(),
    };
    let cache = match cached.filter(|_| found_everywhere) {
        Some(c) => {
            notice(Notice::CachedReference(path.to_path_buf()));
            c
        }
        None => {
            notice(Notice::PrecomputingReference(pairs.len()));
            let c = match parallel {
                None => RefCache::compute(
                    model,
                    pairs,
                    tok.pad,
                    spec.batch_size,
                    entropy,
                    fingerprint,
                    device,
                ),
                // Each rank computes its share of the pairs; a sum gathers them.
                Some(p) => {
                    let n = pairs.len();
                    let (lo, hi) = DataParallel::range(n, p.rank(), p.world_size());
                    let part = RefCache::compute(
                        model,
                        &pairs[lo..hi],
                        tok.pad,
                        spec.batch_size,
                        entropy,
                        fingerprint.clone(),
                        device,
                    );
                    let mut flat = vec![0.0; 4 * n];
                    for (k, lp) in part.logps.iter().enumerate() {
                        flat[2 * (lo + k)..2 * (lo + k) + 2].copy_from_slice(lp);
                    }
                    for (k, e) in part.entropy.iter().flatten().enumerate() {
                        flat[2 * n + 2 * (lo + k)..2 * n + 2 * (lo + k) + 2].copy_from_slice(e);
                    }
                    p.sum(&mut flat)?;
                    let pairs_of = |v: &[f64]| v.chunks(2).map(|c| [c[0], c[1]]).collect();
                    let c = RefCache {
                        fingerprint,
                        logps: pairs_of(&flat[..2 * n]),
                        entropy: entropy.then(|| pairs_of(&flat[2 * n..])),
                    };
                    if p.rank() != 0 {
                        return Ok(Reference::Cached(c));
                    }
                    c
                }
            };
            let text = serde_json::to_string(&c)?;
            load::write_atomic(path, text.as_bytes())?;
            c
        }
    };
    Ok(Reference::Cached(cache))
}

/// The loop's options from the run description (gradient accumulation applies to pair
/// objectives; the on-policy loop takes one rollout batch per update).
fn train_options(spec: &RunSpec, lr: f64, out: &Path) -> TrainOptions {
    TrainOptions {
        batch_size: spec.batch_size,
        grad_accum: spec.grad_accum,
        max_steps: spec.max_steps,
        epochs: spec.epochs,
        lr,
        warmup_ratio: spec.warmup_ratio,
        schedule: spec.schedule,
        weight_decay: spec.weight_decay,
        max_grad_norm: spec.max_grad_norm,
        seed: spec.seed,
        save_every: spec.save_every,
        save_total_limit: spec.save_total_limit,
        save_dtype: spec.save_dtype,
        params: spec.params.clone(),
        out: out.to_path_buf(),
        base_model: spec.model.clone(),
        settings: Settings::default(),
        peak_tflops: peak_tflops(spec),
    }
}

/// The settings both loops record (see [`settings`]): the objective (its name and a digest of its
/// typed form, so an edited formula differs), its parameters, the model and how it is trained,
/// and the optimizer's schedule.
fn common_settings(c: &Compiled, spec: &RunSpec, opts: &TrainOptions, policy: &Llama) -> Settings {
    let typed = poc_compiler::print::typed(&c.objective);
    let mut s = Settings::default();
    s.set(
        "objective",
        format!(
            "{} (formula sha {})",
            c.objective.name,
            settings::digest(typed.as_bytes())
        ),
    );
    for (p, v) in c.objective.params.iter().zip(&spec.params) {
        s.set(&format!("set.{}", p.name), *v);
    }
    let lora = policy.lora.as_ref().map(|l| {
        let targets: Vec<&str> = l.targets.iter().map(|t| t.module_name()).collect();
        format!("rank {}, alpha {}, {}", l.rank, l.alpha, targets.join(","))
    });
    s.set("model", spec.model.clone())
        .set("lora", lora)
        .set("dtype", format!("{:?}", policy.compute).to_lowercase())
        .set("max-length", spec.max_length)
        .set("batch-size", opts.batch_size)
        .set("grad-accum", opts.grad_accum)
        .set("epochs", opts.epochs)
        .set("max-steps", opts.max_steps)
        .set("lr", opts.lr)
        .set("warmup-ratio", opts.warmup_ratio)
        .set("schedule", format!("{:?}", opts.schedule).to_lowercase())
        .set("weight-decay", opts.weight_decay)
        .set("max-grad-norm", opts.max_grad_norm)
        .set("seed", opts.seed);
    s
}

/// The training data as a setting: its rows and a digest of their tokens and columns (not its
/// path: the same file moved, or named from elsewhere, is the same data).
fn data_setting(pairs: &[Pair]) -> String {
    format!(
        "{} rows, sha {}",
        pairs.len(),
        settings::digest_pairs(pairs)
    )
}

/// Where an on-policy run's rewards come from, as a setting.
fn reward_setting(spec: &RunSpec) -> String {
    match (&spec.reward_model, spec.world_reward) {
        (_, true) => "world".into(),
        (Some(dir), false) => dir.display().to_string(),
        (None, false) => "none".into(),
    }
}

/// Compares the settings `now` with those of the checkpoint `spec.resume` (when resuming):
/// returns the differences `spec.allow_change` allows, and refuses any other, listing each.
fn check_resumed_settings(
    spec: &RunSpec,
    now: &Settings,
    notice: &mut dyn FnMut(Notice),
) -> Result<Vec<Change>, SetupError> {
    let keys = now.keys();
    if let Some(unknown) = spec.allow_change.iter().find(|a| !keys.contains(a)) {
        return Err(SetupError::AllowChange {
            key: unknown.clone(),
            keys: keys.join(", "),
        });
    }
    let Some(dir) = &spec.resume else {
        return Ok(Vec::new());
    };
    let Some(was) = Settings::of_checkpoint(dir) else {
        notice(Notice::UnrecordedSettings(dir.clone()));
        return Ok(Vec::new());
    };
    let changes = now.changes(&was);
    let refused: Vec<&Change> = changes
        .iter()
        .filter(|c| !settings::allows(&spec.allow_change, &c.key))
        .collect();
    if !refused.is_empty() {
        return Err(SetupError::ResumeChanged {
            dir: dir.clone(),
            changes: refused.iter().map(|c| format!("    {c}\n")).collect(),
            keys: refused
                .iter()
                .map(|c| c.key.as_str())
                .collect::<Vec<_>>()
                .join(","),
        });
    }
    if !changes.is_empty() {
        notice(Notice::ChangedSettings(changes.clone()));
    }
    Ok(changes)
}

/// `run_config.json`'s history: the earlier entries of the run directory's record (when this
/// run resumes), and one for this resume, naming the checkpoint, its step, the world size and
/// each setting changed.
fn history(
    out: &Path,
    spec: &RunSpec,
    resume: Option<&Resume>,
    changes: &[Change],
    world_size: usize,
) -> serde_json::Value {
    let (Some(dir), Some(r)) = (&spec.resume, resume) else {
        return serde_json::json!([]);
    };
    let mut entries = read_json(&out.join("run_config.json"))
        .and_then(|c| c["history"].as_array().cloned())
        .unwrap_or_default();
    let changed: Vec<serde_json::Value> = changes
        .iter()
        .map(|c| serde_json::json!({"setting": c.key, "was": c.was, "now": c.now}))
        .collect();
    entries.push(serde_json::json!({
        "resumed_from": dir.display().to_string(),
        "step": r.step,
        "world_size": world_size,
        "changed": changed,
    }));
    serde_json::Value::Array(entries)
}

/// The dense bf16 peak (TFLOP/s) that MFU is measured against: `POC_PEAK_TFLOPS` when set,
/// else the CUDA device's by its name; none on the CPU.
fn peak_tflops(spec: &RunSpec) -> Option<f64> {
    if let Some(v) = std::env::var("POC_PEAK_TFLOPS")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v > 0.0)
    {
        return Some(v);
    }
    match DeviceSpec::usable(&spec.device) {
        Ok(DeviceSpec::Cuda(n)) => {
            plan::cuda_device_name(n).and_then(|name| crate::flops::peak_bf16_tflops(&name))
        }
        _ => None,
    }
}

/// The objective's parameters by name, for `run_config.json`.
fn named_params(c: &Compiled, spec: &RunSpec) -> serde_json::Map<String, serde_json::Value> {
    c.objective
        .params
        .iter()
        .zip(&spec.params)
        .map(|(p, v)| (p.name.clone(), serde_json::json!(v)))
        .collect()
}

/// The default learning rate of pair training on the `tiny` preset; 1e-6 for any other model
/// (TRL's default).
pub const TINY_LR: f64 = 1e-3;

/// The default learning rate of on-policy training on the `tiny` preset (its updates are larger
/// per step than a pair run's: several epochs per batch); 1e-6 for any other model.
pub const TINY_ON_POLICY_LR: f64 = 1e-4;

/// Sets up the run `spec` describes for objective `c`: the pair loop, or (for an objective
/// that reads rollouts) the on-policy loop.
pub fn prepare<'a>(
    c: &'a Compiled,
    spec: &'a RunSpec,
    notice: &mut dyn FnMut(Notice),
) -> Result<Prepared<'a>, SetupError> {
    check_sizes(spec)?;
    if let Some(p) = spec.parallel.as_ref().filter(|p| p.launch.world_size > 1) {
        if is_on_policy(c) {
            return Err(SetupError::OnPolicyParallel);
        }
        let world = p.launch.world_size;
        if !spec.batch_size.is_multiple_of(world) {
            return Err(SetupError::BatchNotDivisible {
                batch: spec.batch_size,
                world,
            });
        }
    }
    if !spec.skip_memory_check {
        check_memory(c, spec)?;
    }
    // A run directory this set-up creates is removed again if set-up fails (a bad --data
    // leaves nothing behind).
    let out = out_dir(c, spec);
    let fresh = !out.exists();
    let prepared = if is_on_policy(c) {
        on_policy(c, spec, notice).map(|s| Prepared::OnPolicy(Box::new(s)))
    } else {
        pairs(c, spec, notice).map(|r| Prepared::Pairs(Box::new(r)))
    };
    if prepared.is_err() && fresh {
        abandon(&out);
    }
    prepared
}

/// The shape of `spec`'s training step for the memory plan, read from the model's config alone
/// (no weights are loaded).
pub fn plan_shape(c: &Compiled, spec: &RunSpec) -> Result<plan::Shape, SetupError> {
    let kind = DeviceSpec::usable(&spec.device)?;
    let config = crate::model::resolve_config(&spec.model)?;
    let lora = lora(spec)?;
    let n = needs(&c.objective.inputs);
    let reference = match (n.reads_reference() || is_on_policy(c), &lora) {
        (false, _) => plan::RefPlan::None,
        (true, _) if spec.precompute_ref => plan::RefPlan::Cached,
        (true, Some(_)) => plan::RefPlan::AdaptersOff,
        (true, None) => plan::RefPlan::Frozen,
    };
    let rows = if n.rejected {
        2 * spec.batch_size
    } else {
        spec.batch_size
    };
    Ok(plan::Shape {
        config,
        rows,
        seq_len: spec.max_length,
        compute: compute(spec, kind),
        lora,
        reference,
        gradient_checkpointing: spec.gradient_checkpointing,
    })
}

/// The free memory of the device `spec` names, when it can be read: CUDA's from the driver, the
/// CPU's `MemAvailable`.
pub fn free_memory(spec: &RunSpec) -> Option<u64> {
    match DeviceSpec::usable(&spec.device).ok()? {
        DeviceSpec::Cuda(n) => plan::cuda_free_bytes(n),
        DeviceSpec::Cpu => {
            let info = std::fs::read_to_string("/proc/meminfo").ok()?;
            let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        }
    }
}

/// Stops a run whose memory plan exceeds the device's free memory (on CUDA less
/// [`plan::CUDA_RESERVE_BYTES`]; on the CPU by a quarter), before anything is loaded, with the plan and the flags that would shrink it.
fn check_memory(c: &Compiled, spec: &RunSpec) -> Result<(), SetupError> {
    // A model that cannot be loaded at all says so first.
    crate::model::resolve::available(&spec.model, spec.random_init)?;
    let shape = plan_shape(c, spec)?;
    let plan = plan::Plan::estimate(&shape);
    let Some(free) = free_memory(spec) else {
        return Ok(());
    };
    // CUDA cannot overcommit: the plan must fit what is free less a reserve for what it does
    // not count. The CPU's virtual memory bends (page cache, lazily touched pages): a plan may
    // exceed the available memory by a quarter before it is refused.
    let cuda = matches!(DeviceSpec::usable(&spec.device), Ok(DeviceSpec::Cuda(_)));
    let fits = if cuda {
        plan.total() + plan::CUDA_RESERVE_BYTES <= free
    } else {
        (plan.total() as f64) <= 1.25 * free as f64
    };
    if fits {
        return Ok(());
    }
    Err(SetupError::WontFit {
        need: plan::bytes(plan.total()),
        device: spec.device.clone(),
        free: if cuda {
            format!(
                "{} free, of which {} is kept in reserve for CUDA's workspaces,",
                plan::bytes(free),
                plan::bytes(plan::CUDA_RESERVE_BYTES)
            )
        } else {
            format!("{} free", plan::bytes(free))
        },
        table: plan.table(Some(free)),
        remedies: plan::remedies(&shape)
            .iter()
            .map(|r| format!("    {r}\n"))
            .collect(),
    })
}

/// The pair run: a policy (or reward model) against the starting model as the reference.
fn pairs<'a>(
    c: &'a Compiled,
    spec: &'a RunSpec,
    notice: &mut dyn FnMut(Notice),
) -> Result<PairRun<'a>, SetupError> {
    if spec.precompute_ref && needs(&c.objective.inputs).reference.token_logps {
        return Err(SetupError::PrecomputeTokens);
    }
    let devices = devices(spec)?;
    let lora = lora(spec)?;
    let reward = reward_task(c, spec.task)?;
    // Every rank joins before anything is loaded: a missing rank is found in seconds.
    let mut parallel = match spec.parallel.as_ref().filter(|p| p.launch.world_size > 1) {
        Some(p) => {
            let cuda = matches!(DeviceSpec::usable(&spec.device)?, DeviceSpec::Cuda(_));
            Some(DataParallel::join(p, cuda)?)
        }
        None => None,
    };
    let main = parallel.as_ref().is_none_or(|p| p.rank() == 0);
    let out = run_dir(c, spec, main, notice)?;
    let Resolved {
        model: mut policy,
        tok,
        embedded,
    } = self::policy(spec, &devices)?;
    if reward && policy.score.is_none() {
        policy = policy.with_score_head(spec.seed);
        // transformers pools a reward model at the last token that is not padding.
        policy
            .config
            .extra
            .insert("pad_token_id".into(), tok.pad.into());
    }
    // One starting model on every rank: rank 0's.
    if let Some(p) = &mut parallel {
        p.broadcast_model(&policy)?;
    }
    // The reference is the starting model, also when resuming.
    let wants_reference = needs(&c.objective.inputs).reads_reference();
    let reference = Reference::starting(&policy, wants_reference, lora.is_some());
    let (policy, resume) = match &spec.resume {
        Some(dir) => {
            check_pair_checkpoint(dir, reward)?;
            let policy = resume_weights(dir, lora.is_some(), policy, &devices.train)?;
            if lora.is_none() && reward != policy.score.is_some() {
                return Err(SetupError::ModelKind {
                    dir: dir.clone(),
                    checkpoint: Kind::of(!reward),
                    run: Kind::of(reward),
                });
            }
            let (policy, resume) = resume_state(dir, policy, notice)?;
            (policy, Some(resume))
        }
        None => match lora.clone() {
            Some(l) => {
                check_lora_targets(&policy, &l)?;
                (policy.with_lora(l, spec.seed), None)
            }
            None => (policy, None),
        },
    };
    let pairs = training_pairs(c, spec, &tok, &out, notice)?;
    let (pairs, eval_pairs) = held_out(c, pairs, spec, &tok, reward, notice)?;
    check_demonstrations(c, pairs.iter().chain(eval_pairs.iter()))?;
    let lr = spec.lr.unwrap_or(if embedded { TINY_LR } else { 1e-6 });
    let mut opts = train_options(spec, lr, &out);
    let world_size = parallel.as_ref().map_or(1, |p| p.world_size());
    // Before anything costly: a resume that would not continue the same run is refused.
    let mut settings = common_settings(c, spec, &opts, &policy);
    settings
        .set("task", Kind::of(reward).to_string())
        .set("data", data_setting(&pairs));
    let changes = check_resumed_settings(spec, &settings, notice)?;
    opts.settings = settings;
    // Training and evaluation compare with the same reference, in the same way.
    let mut cache_both = |model: &Llama| -> Result<(Reference, Reference), SetupError> {
        let mut cache = |pairs: &[Pair], name: &str| {
            let path = out.join(name);
            cached_reference(
                c,
                spec,
                pairs,
                &tok,
                model,
                &devices.plain,
                &path,
                parallel.as_mut(),
                notice,
            )
        };
        Ok((
            cache(&pairs, "ref_cache.json")?,
            cache(&eval_pairs, "ref_cache_eval.json")?,
        ))
    };
    let (reference, eval_reference) = match reference {
        Reference::AdaptersOff if spec.precompute_ref => {
            cache_both(&adapters_off(&policy.valid()))?
        }
        Reference::Model(r) if spec.precompute_ref => cache_both(&r)?,
        Reference::Model(r) => (Reference::Model(r.clone()), Reference::Model(r)),
        Reference::AdaptersOff => (Reference::AdaptersOff, Reference::AdaptersOff),
        _ => (Reference::None, Reference::None),
    };
    // Rank 0 evaluates the held-out pairs; the others go on to the next step's collectives.
    let eval = (main && !eval_pairs.is_empty()).then(|| Eval {
        pairs: eval_pairs,
        reference: eval_reference,
        every: spec.eval_every,
    });
    let compute = policy.compute;
    if main {
        let history = history(&out, spec, resume.as_ref(), &changes, world_size);
        write_run_config(
            &out,
            &serde_json::json!({
                "objective": c.objective.name,
                "params": named_params(c, spec),
                "world_size": world_size,
                "model": spec.model,
                "model_config": policy.config,
                "data": spec.data.as_ref().map(|p| data_label(p, &spec.split)).unwrap_or_else(|| "embedded synthetic (data.jsonl)".into()),
                "pairs": pairs.len(),
                "device": spec.device,
                "max_length": spec.max_length,
                "lora": policy.lora,
                "dtype": format!("{compute:?}").to_lowercase(),
                "gradient_checkpointing": spec.gradient_checkpointing,
                "train": opts,
                "settings": opts.settings.0,
                "history": history,
            }),
        )?;
    }
    Ok(PairRun {
        compiled: c,
        policy,
        reference,
        tok,
        pairs,
        eval,
        opts,
        device: devices.plain,
        resume,
        parallel,
    })
}

/// An on-policy run set up but for its prompts (tokenized by the caller, who knows the prompt
/// file formats): [`OnPolicySetup::with_prompts`] completes it.
pub struct OnPolicySetup<'a> {
    compiled: &'a Compiled,
    spec: &'a RunSpec,
    policy: Llama,
    reference: Reference,
    reward_model: Option<Scorer>,
    tok: Tok,
    embedded: bool,
    device: Device,
    resume: Option<Resume>,
    out: PathBuf,
    prompt_file: PathBuf,
}

impl<'a> OnPolicySetup<'a> {
    /// The prompts to sample from: `spec.prompts`, `spec.data` (a file, or a directory or Hub
    /// dataset id read as `spec.split`), or the bundled synthetic pairs (written to
    /// `OUT/prompts.jsonl`).
    pub fn prompt_file(&self) -> &Path {
        &self.prompt_file
    }

    /// The tokenizer prompts are tokenized with.
    pub fn tok(&self) -> &Tok {
        &self.tok
    }

    /// The policy (its configuration says how prompts are rendered and where they stop).
    pub fn policy(&self) -> &Llama {
        &self.policy
    }

    /// The run, given its tokenized `prompts` and the tokens `eos` that end a completion;
    /// writes `run_config.json`.
    pub fn with_prompts(
        self,
        prompts: Vec<Vec<u32>>,
        eos: Vec<u32>,
    ) -> Result<OnPolicyRun<'a>, SetupError> {
        let (c, spec) = (self.compiled, self.spec);
        // On-policy updates are larger per step (several epochs per batch): a lower default.
        let lr = spec.lr.unwrap_or(if self.embedded {
            TINY_ON_POLICY_LR
        } else {
            1e-6
        });
        let mut opts = train_options(spec, lr, &self.out);
        let rollout = RolloutOptions {
            epochs: spec.ppo_epochs,
            max_new_tokens: spec.max_new_tokens,
            temperature: spec.temperature,
            eos,
            pad: self.tok.pad,
        };
        let mut settings = common_settings(c, spec, &opts, &self.policy);
        settings
            .set(
                "prompts",
                format!(
                    "{} prompts, sha {}",
                    prompts.len(),
                    settings::digest_tokens(prompts.iter().map(Vec::as_slice))
                ),
            )
            .set("reward", reward_setting(spec))
            .set("ppo-epochs", spec.ppo_epochs)
            .set("max-new-tokens", spec.max_new_tokens)
            .set("temperature", spec.temperature);
        let changes = check_resumed_settings(spec, &settings, &mut |_| {})?;
        opts.settings = settings;
        let history = history(&self.out, spec, self.resume.as_ref(), &changes, 1);
        write_run_config(
            &self.out,
            &serde_json::json!({
                "objective": c.objective.name,
                "params": named_params(c, spec),
                "model": spec.model,
                "reward_model": spec.reward_model.as_ref().map(|p| p.display().to_string()),
                "world_reward": spec.world_reward,
                "lora": self.policy.lora,
                "prompts": self.prompt_file.display().to_string(),
                "device": spec.device,
                "train": opts,
                "rollout": rollout,
                "settings": opts.settings.0,
                "history": history,
            }),
        )?;
        Ok(OnPolicyRun {
            compiled: c,
            policy: self.policy,
            reference: self.reference,
            reward_model: self.reward_model,
            prompts,
            tok: self.tok,
            opts,
            rollout,
            device: self.device,
            resume: self.resume,
        })
    }
}

/// The on-policy run: samples from the policy, scores with the reward model, and optimizes
/// against the starting model as the reference.
fn on_policy<'a>(
    c: &'a Compiled,
    spec: &'a RunSpec,
    notice: &mut dyn FnMut(Notice),
) -> Result<OnPolicySetup<'a>, SetupError> {
    if spec.precompute_ref || spec.grad_accum != 1 {
        return Err(SetupError::OnPolicyUnsupported);
    }
    let lora = lora(spec)?;
    if spec.max_new_tokens == 0
        || spec.ppo_epochs == 0
        || spec.temperature.is_nan()
        || spec.temperature <= 0.0
    {
        return Err(SetupError::Sampling);
    }
    let reads = |r: Rollout| {
        c.objective
            .inputs
            .iter()
            .any(|i| i.source == Source::Rollout(r))
    };
    let devices = devices(spec)?;
    let Resolved {
        model: mut policy,
        tok,
        embedded,
    } = self::policy(spec, &devices)?;
    // The reference is the starting model, also when resuming.
    let reference =
        Reference::starting(&policy, reads(Rollout::ReferenceTokenLogps), lora.is_some());
    let value_head = reads(Rollout::Values) || reads(Rollout::OldValues);
    let mut resume = None;
    if let Some(dir) = &spec.resume {
        if !is_on_policy_checkpoint(dir) {
            return Err(SetupError::NotOnPolicyCheckpoint(dir.clone()));
        }
        policy = resume_weights(dir, lora.is_some(), policy, &devices.train)?;
        // The value head trains with the adapters: attached after them (which freeze the rest).
        if value_head {
            policy = load::load_value_head(dir, policy)?;
        }
        let (p, r) = resume_state(dir, policy, notice)?;
        policy = p;
        resume = Some(r);
    } else {
        if let Some(l) = lora {
            check_lora_targets(&policy, &l)?;
            policy = policy.with_lora(l, spec.seed);
        }
        if value_head {
            policy = policy.with_value_head();
        }
    }
    let reward_model = match (&spec.reward_model, spec.world_reward, reads(Rollout::Score)) {
        (_, true, true) => Some(Scorer::World),
        (Some(dir), false, true) => Some(Scorer::Model(Box::new(reward_model(
            dir,
            &policy,
            &devices.plain,
        )?))),
        (None, false, true) => return Err(SetupError::NoRewardModel(c.objective.name.clone())),
        (_, _, false) => None,
    };
    let out = run_dir(c, spec, true, notice)?;
    let prompt_file = match (&spec.prompts, &spec.data) {
        (Some(p), _) | (None, Some(p)) => p.clone(),
        (None, None) => synthetic_file(&out, "prompts.jsonl")?.0,
    };
    Ok(OnPolicySetup {
        compiled: c,
        spec,
        policy,
        reference,
        reward_model,
        tok,
        embedded,
        device: devices.plain,
        resume,
        out,
        prompt_file,
    })
}

/// The frozen reward model at `dir`, on `device`: it must have a score head and the policy's
/// vocabulary.
fn reward_model(dir: &Path, policy: &Llama, device: &Device) -> Result<Llama, SetupError> {
    let rm = resolve(&dir.display().to_string(), false, device)?.model;
    if rm.score.is_none() {
        return Err(SetupError::NotARewardModel(dir.to_path_buf()));
    }
    if rm.config.vocab_size != policy.config.vocab_size {
        return Err(SetupError::RewardVocabulary {
            dir: dir.to_path_buf(),
            reward_model: rm.config.vocab_size,
            policy: policy.config.vocab_size,
        });
    }
    Ok(rm)
}
