//! The training core: a policy (or a reward model) trained under any compiled objective,
//! against a reference, on preference pairs or on its own rollouts.
//!
//! Shaped like a recipe of small parts:
//! - [`setup`]: a run description ([`RunSpec`]) becomes a ready run — model, reference,
//!   resume and LoRA rules, data and held-out split, reference cache, run directory,
//!   `run_config.json`;
//! - [`Reference`]: where reference statistics come from (a frozen model, the policy with its
//!   adapters off, a precomputed cache, or none), for both loops;
//! - [`Optimizer`]: AdamW with the learning-rate schedule and global-norm clipping, and its
//!   state for checkpoints;
//! - [`outputs`]: where a program's outputs become the loss, the surrogate and the metrics,
//!   and where a non-finite loss is caught;
//! - [`checkpoint`] and [`metrics`]: checkpoints (bit-exact `--resume`) and `metrics.jsonl`;
//! - the loops, each one function over those parts: [`train_pairs`] (offline pairs) and
//!   [`train_on_policy`] (rollouts).
//!
//! Each step backpropagates the surrogate `Σ detach(∂L/∂x)·x / B` through the policy: the
//! compiler's symbolic gradient applied by burn's autodiff. The objective is only a compiled
//! program here; no loop names an objective's terms.

pub mod checkpoint;
mod forward;
pub mod lock;
pub mod metrics;
pub mod on_policy;
pub mod optimizer;
pub mod outputs;
pub mod pairs;
// burn 0.22 marks its tch backend deprecated (0.23 drops it); poc pins 0.22 for libtorch.
#[allow(deprecated)]
pub mod parallel;
pub mod reference;
pub mod settings;
pub mod setup;

pub use checkpoint::{Resume, load_resume, save_checkpoint};
pub use on_policy::{OnPolicyRun, RolloutOptions, Scorer, is_on_policy, train_on_policy};
pub use optimizer::{Optimizer, lr_at};
pub use pairs::{Eval, PairRun, evaluate, train_pairs};
pub use reference::{RefCache, Reference};
pub use setup::{Notice, Prepared, RunSpec, SetupError, Task};

use std::path::PathBuf;

/// Learning-rate decay after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Schedule {
    /// Cosine to zero.
    Cosine,
    /// Linear to zero.
    Linear,
    /// Constant.
    Constant,
}

/// Everything a loop needs besides the model, data and objective.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainOptions {
    /// Pairs (or prompts) per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Optimizer steps (overrides `epochs` when set).
    pub max_steps: Option<usize>,
    /// Passes over the data.
    pub epochs: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Fraction of steps spent warming up linearly.
    pub warmup_ratio: f64,
    /// Decay after warm-up.
    pub schedule: Schedule,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 disables).
    pub max_grad_norm: f64,
    /// Seed of initialization and data order.
    pub seed: u64,
    /// Save a checkpoint every N steps (0: only at the end).
    pub save_every: usize,
    /// Keep only the newest N `checkpoint-*` directories of `out` (`None`: keep all).
    pub save_total_limit: Option<usize>,
    /// The dtype of saved model weights (`None`: the loaded model's, from its config).
    pub save_dtype: Option<crate::model::SaveDtype>,
    /// Objective parameters after `--set`.
    pub params: Vec<f64>,
    /// The run directory.
    pub out: PathBuf,
    /// What `--model` named (recorded in adapter checkpoints as the base model).
    pub base_model: String,
    /// What the run's trajectory depends on, recorded in every checkpoint for `--resume` to
    /// compare (kept out of `run_config.json`'s `train`, which has them in `settings`).
    #[serde(skip)]
    pub settings: settings::Settings,
    /// The device's dense bf16 peak in TFLOP/s, when known: each step then logs `perf/mfu`.
    pub peak_tflops: Option<f64>,
}

/// One logged step (a line of `metrics.jsonl`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepLog {
    /// 1-based optimizer step.
    pub step: usize,
    /// Fractional epoch.
    pub epoch: f64,
    /// Batch-mean loss.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Completion and prompt tokens processed per second (policy forward+backward).
    pub tokens_per_sec: f64,
    /// The objective's metrics (batch means), by name.
    pub metrics: serde_json::Map<String, serde_json::Value>,
}

/// Why training stopped early.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The loss or gradient became NaN/inf; the last good checkpoint is kept.
    #[error(
        "step {step}: {what} is not finite {at}; stopped. The last good checkpoint is {checkpoint}"
    )]
    NotFinite {
        /// The step.
        step: usize,
        /// Loss or gradient.
        what: String,
        /// Where, and (for a loss) why: the data line and whether the objective or its inputs
        /// are to blame, or the data lines (prompts) of the step.
        at: String,
        /// Path of the last good checkpoint (or "none").
        checkpoint: String,
    },
    /// Ctrl-C: a checkpoint was saved after the step and the run stopped.
    #[error("interrupted at step {step}; saved {checkpoint}")]
    Interrupted {
        /// The last step taken.
        step: usize,
        /// The checkpoint written after it.
        checkpoint: String,
    },
    /// Inputs the objective declares cannot be provided.
    #[error("{0}")]
    Observe(#[from] crate::observe::ObserveError),
    /// An on-policy objective reads something this run does not have (a value head, a
    /// reference, a reward model), or an input that is not a rollout observable.
    #[error("{0}")]
    Rollout(String),
    /// The compiled program rejected its inputs.
    #[error("{0}")]
    Program(#[from] crate::lower::BurnEvalError),
    /// Sampling the rollouts failed.
    #[error("sampling rollouts: {0}")]
    Sampling(String),
    /// Saving or loading model files failed.
    #[error("{0}")]
    Model(#[from] crate::model::ModelError),
    /// The optimizer state could not be written or restored.
    #[error("{0}")]
    OptimizerState(String),
    /// A checkpoint's `trainer_state.json` is missing or inconsistent.
    #[error("{0}")]
    TrainerState(String),
    /// A run file could not be read, written or renamed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The tokenizer could not be saved into a checkpoint.
    #[error("{0}")]
    Tokenizer(String),
    /// A log line or state could not be serialized.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// A collective of a data-parallel run failed (a rank died, a timeout).
    #[error(
        "data parallel: {0}; another process of the job stopped or cannot be reached (its own output says why)"
    )]
    Dist(#[from] poc_dist::DistError),
}

impl TrainError {
    /// An I/O error on `path`.
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
        move |source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
