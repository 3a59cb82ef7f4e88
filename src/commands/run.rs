//! `poc run` and `poc logps`: the training runtime behind the CLI. Model and data resolution,
//! the run directory, the progress bar, Ctrl-C.

use crate::edge::Failure;
use burn::module::Module;
use poc_compiler::Compiled;
use poc_runtime::data::{self, Pair, Tok};
use poc_runtime::device::DeviceSpec;
use poc_runtime::model::{Compute, Llama, LoraConfig, Target, load};
use poc_runtime::train::{self, Schedule, TrainOptions};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Arguments of `poc run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// A directory with config.json, model*.safetensors, tokenizer.json; or a preset:
    /// tiny, llama3-8b, llama3.1-8b, llama3.2-1b, llama3.2-3b.
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// TRL preference JSONL (`prompt`, `chosen`, `rejected`: strings or message lists;
    /// extra numeric columns reach the objective). Default: bundled synthetic pairs.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Pairs per micro-batch.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Stop after N optimizer steps (overrides --epochs).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Passes over the data.
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Truncate prompt+completion to this many tokens (longer prompts are skipped).
    #[arg(long, default_value_t = 512)]
    pub max_length: usize,
    /// Peak learning rate (default 1e-3 for the tiny model, 1e-6 otherwise, as TRL).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Fraction of steps of linear warm-up.
    #[arg(long, default_value_t = 0.1)]
    pub warmup_ratio: f64,
    /// Decay after warm-up.
    #[arg(long, value_enum, default_value_t = ScheduleArg::Cosine)]
    pub schedule: ScheduleArg,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Clip the global gradient norm (0 disables).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Seed of initialization and data order.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Save a checkpoint every N steps (besides the last).
    #[arg(long, default_value_t = 0)]
    pub save_every: usize,
    /// Run directory (default runs/OBJECTIVE).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Override an objective parameter (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub sets: Vec<String>,
    /// Stop at the first bad data row instead of skipping it.
    #[arg(long)]
    pub strict: bool,
    /// Random weights for a preset without local weights (benchmarks).
    #[arg(long)]
    pub random_init: bool,
    /// No progress bar (logs still go to metrics.jsonl).
    #[arg(long)]
    pub no_progress: bool,
    /// Continue from a checkpoint of this run (OUT/checkpoint-N): same data order, learning
    /// rate schedule and optimizer state, so the loss curve continues exactly. Give the
    /// same flags as the original run.
    #[arg(long, value_name = "CHECKPOINT_DIR")]
    pub resume: Option<PathBuf>,
    /// Compute the reference's log-probs (and entropies) once, cache them in
    /// OUT/ref_cache.json (reused by later runs on the same model and data), and train
    /// without holding a reference model.
    #[arg(long)]
    pub precompute_ref: bool,
    /// Train LoRA adapters of this rank instead of the full model (the base weights are
    /// frozen; the reference is the policy with its adapters switched off, so no second copy of
    /// the model is held). Checkpoints hold the merged model and, in PEFT's layout, the
    /// adapters alone.
    #[arg(long, value_name = "RANK")]
    pub lora: Option<usize>,
    /// LoRA scaling numerator α (adapters are scaled by α / rank). Default: 2 x rank.
    #[arg(long, value_name = "ALPHA", requires = "lora")]
    pub lora_alpha: Option<f64>,
    /// Projections that get adapters: a comma-separated list of q_proj, k_proj, v_proj,
    /// o_proj, gate_proj, up_proj, down_proj, or `all-linear`.
    #[arg(
        long,
        value_name = "MODULES",
        default_value = "q_proj,k_proj,v_proj,o_proj",
        requires = "lora"
    )]
    pub lora_target_modules: String,
    /// Float type of the forward pass: f32, or bf16 with f32 master weights (the optimizer
    /// updates f32 parameters; matrix products run in bf16, norms and log-probs in f32).
    /// Default: bf16 on CUDA, f32 on CPU.
    #[arg(long, value_enum)]
    pub dtype: Option<ComputeArg>,
    /// Recompute memory-bound activations during the backward pass instead of keeping
    /// them (burn's balanced gradient checkpointing): less memory, more compute.
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// What is trained: a policy (log-probs against a reference) or a reward model (a scalar
    /// head on the decoder, HF's LlamaForSequenceClassification). `auto` decides from the
    /// objective: one that reads reward-model outputs (`input r from reward(chosen)`) trains a
    /// reward model.
    #[arg(long, value_enum, default_value_t = TaskArg::Auto)]
    pub task: TaskArg,
    /// Held-out pairs to evaluate the objective's loss and metrics on (logged as `eval/...`).
    #[arg(long, value_name = "FILE")]
    pub eval_data: Option<PathBuf>,
    /// Hold out this fraction of --data for evaluation instead (seeded). Default: 0.1 for a
    /// reward model (held-out pair accuracy), 0 for a policy.
    #[arg(long, value_name = "F")]
    pub eval_fraction: Option<f64>,
    /// Evaluate every N steps (besides after the last).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub eval_every: usize,
    /// On-policy objectives (ppo.po): the frozen reward model that scores the rollouts (a
    /// directory written by `poc run bt_reward.po`).
    #[arg(
        long,
        value_name = "DIR",
        help_heading = "On-policy objectives (ppo.po)"
    )]
    pub reward_model: Option<PathBuf>,
    /// On-policy objectives: JSONL prompts to sample rollouts from (`prompt`: a string or chat
    /// messages; preference files work too). Default: --data's prompts, or the bundled ones.
    #[arg(
        long,
        value_name = "FILE",
        help_heading = "On-policy objectives (ppo.po)"
    )]
    pub prompts: Option<PathBuf>,
    /// On-policy objectives: optimization epochs over each rollout batch (TRL's num_ppo_epochs).
    #[arg(
        long,
        default_value_t = 4,
        help_heading = "On-policy objectives (ppo.po)"
    )]
    pub ppo_epochs: usize,
    /// On-policy objectives: the longest sampled completion, in tokens.
    #[arg(
        long,
        default_value_t = 24,
        help_heading = "On-policy objectives (ppo.po)"
    )]
    pub max_new_tokens: usize,
    /// On-policy objectives: sampling temperature of the rollouts.
    #[arg(
        long,
        default_value_t = 1.0,
        help_heading = "On-policy objectives (ppo.po)"
    )]
    pub temperature: f64,
}

/// `--task`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TaskArg {
    /// From the objective's inputs.
    Auto,
    /// Train a policy's log-probs.
    Policy,
    /// Train a reward model's scalar head and backbone.
    Reward,
}

/// Learning-rate decay after warm-up.
#[derive(Copy, Clone, Debug, clap::ValueEnum)]
pub enum ScheduleArg {
    /// Cosine to zero.
    Cosine,
    /// Linear to zero.
    Linear,
    /// Constant.
    Constant,
}

/// `--dtype`.
#[derive(Copy, Clone, Debug, clap::ValueEnum)]
pub enum ComputeArg {
    /// 32-bit floats throughout.
    F32,
    /// bfloat16 compute, f32 master weights.
    Bf16,
}

fn user(e: impl std::fmt::Display) -> Failure {
    Failure::User(format!("poc: {e}"))
}

/// A model, its tokenizer, and whether it is the embedded tiny default.
pub fn resolve_model(
    name: &str,
    random_init: bool,
    seed: u64,
    device: &burn::tensor::Device,
) -> Result<(Llama, Tok, bool), Failure> {
    let r = poc_runtime::model::resolve(name, random_init, seed, device).map_err(user)?;
    Ok((r.model, r.tok, r.embedded))
}

fn load_data(args: &RunArgs, tok: &Tok, out: &Path) -> Result<Vec<Pair>, Failure> {
    let (pairs, bad) = match &args.data {
        Some(p) => load_file(p, tok, args)?,
        None => {
            let text = data::synthetic::synthetic_jsonl(2048, 7);
            let path = out.join("data.jsonl");
            std::fs::write(&path, &text).map_err(|e| user(format!("{}: {e}", path.display())))?;
            data::pairs::parse_pairs(
                &text,
                &path.display().to_string(),
                tok,
                args.max_length,
                args.strict,
            )
            .map_err(user)?
        }
    };
    report_bad(&bad);
    Ok(pairs)
}

/// A demonstration row (TRL SFT format) has no rejected completion: an error naming its line
/// when the objective reads one.
fn demonstrations_fit<'a>(
    c: &Compiled,
    mut pairs: impl Iterator<Item = &'a Pair>,
) -> Result<(), Failure> {
    let reader = c
        .objective
        .inputs
        .iter()
        .find(|i| poc_runtime::observe::needs(std::slice::from_ref(i)).rejected);
    match (reader, pairs.find(|p| p.demonstration)) {
        (Some(input), Some(p)) => Err(user(format!(
            "data line {}: a demonstration row (`prompt`/`completion` or `messages`) has no rejected completion, but `{}` reads `{}` ({}); give preference rows (`prompt`, `chosen`, `rejected`) or train an objective that reads only the chosen side, such as sft",
            p.line,
            c.objective.name,
            input.name,
            input.source.text()
        ))),
        _ => Ok(()),
    }
}

fn load_file(path: &Path, tok: &Tok, args: &RunArgs) -> Result<(Vec<Pair>, Vec<String>), Failure> {
    data::load_pairs(path, tok, args.max_length, args.strict).map_err(user)
}

fn report_bad(bad: &[String]) {
    if !bad.is_empty() {
        eprintln!(
            "poc: skipped {} bad row(s) (use --strict to stop instead):",
            bad.len()
        );
        for b in bad.iter().take(10) {
            eprintln!("  {b}");
        }
        if bad.len() > 10 {
            eprintln!("  ... and {} more", bad.len() - 10);
        }
    }
}

/// Splits off the evaluation pairs: --eval-data, or a seeded --eval-fraction of the training
/// pairs (default 0.1 for a reward model, none for a policy).
fn held_out(
    pairs: Vec<Pair>,
    args: &RunArgs,
    tok: &Tok,
    reward: bool,
) -> Result<(Vec<Pair>, Vec<Pair>), Failure> {
    if let Some(path) = &args.eval_data {
        if args.eval_fraction.is_some() {
            return Err(user("give --eval-data or --eval-fraction, not both"));
        }
        let (eval, bad) = load_file(path, tok, args)?;
        report_bad(&bad);
        return Ok((pairs, eval));
    }
    let fraction = args.eval_fraction.unwrap_or(if reward { 0.1 } else { 0.0 });
    if !(0.0..1.0).contains(&fraction) {
        return Err(user(format!(
            "--eval-fraction {fraction}: expected a fraction in [0, 1)"
        )));
    }
    let n_eval = (pairs.len() as f64 * fraction).round() as usize;
    if n_eval == 0 {
        return Ok((pairs, Vec::new()));
    }
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed ^ 0x6576616c);
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

/// Whether `task` trains a reward model for objective `c`; an objective that reads reward
/// outputs cannot train a policy and vice versa.
fn reward_task(c: &Compiled, task: TaskArg) -> Result<bool, Failure> {
    let needs = poc_runtime::observe::needs(&c.objective.inputs);
    let reads_rewards = needs.reward_model();
    match task {
        TaskArg::Auto => Ok(reads_rewards),
        TaskArg::Reward if reads_rewards => Ok(true),
        TaskArg::Policy if !reads_rewards => Ok(false),
        TaskArg::Reward => Err(user(format!(
            "--task reward: `{}` reads no reward-model output (declare e.g. `input reward_chosen from reward(chosen)`, as bt_reward.po does)",
            c.objective.name
        ))),
        TaskArg::Policy => Err(user(format!(
            "--task policy: `{}` reads reward-model outputs; it trains a reward model (--task reward)",
            c.objective.name
        ))),
    }
}

/// The loop's options from the flags (gradient accumulation applies to pair objectives; the
/// on-policy loop takes one rollout batch per update).
fn train_options(args: &RunArgs, lr: f64, params: Vec<f64>, out: &Path) -> TrainOptions {
    TrainOptions {
        batch_size: args.batch_size,
        grad_accum: args.grad_accum,
        max_steps: args.max_steps,
        epochs: args.epochs,
        lr,
        warmup_ratio: args.warmup_ratio,
        schedule: match args.schedule {
            ScheduleArg::Cosine => Schedule::Cosine,
            ScheduleArg::Linear => Schedule::Linear,
            ScheduleArg::Constant => Schedule::Constant,
        },
        weight_decay: args.weight_decay,
        max_grad_norm: args.max_grad_norm,
        seed: args.seed,
        save_every: args.save_every,
        params,
        out: out.to_path_buf(),
        base_model: args.model.clone(),
    }
}

/// `poc run` on an objective that reads rollouts (ppo.po): samples from the policy, scores
/// with the reward model, and optimizes against the starting model as the reference.
fn run_on_policy(c: &Compiled, args: RunArgs, params: Vec<f64>) -> Result<(), Failure> {
    if args.precompute_ref || args.grad_accum != 1 {
        return Err(user(
            "--precompute-ref and --grad-accum are not supported for on-policy objectives yet",
        ));
    }
    let lora = lora_config(&args)?;
    if args.max_new_tokens == 0
        || args.ppo_epochs == 0
        || args.temperature.is_nan()
        || args.temperature <= 0.0
    {
        return Err(user(
            "--max-new-tokens and --ppo-epochs must be at least 1, --temperature above 0",
        ));
    }
    let reads = |r: poc_compiler::Rollout| {
        c.objective
            .inputs
            .iter()
            .any(|i| i.source == poc_compiler::Source::Rollout(r))
    };
    let spec = DeviceSpec::usable(&args.device).map_err(user)?;
    let device = spec.device();
    let train_device = poc_runtime::device::training(&device, args.gradient_checkpointing);
    let (mut policy, tok, tiny) =
        resolve_model(&args.model, args.random_init, args.seed, &train_device)?;
    policy.compute = compute_of(&args, spec);
    // The reference is the starting model (--model), also when resuming: a frozen copy, or
    // under LoRA the policy with its adapters off.
    let wants_reference = reads(poc_compiler::Rollout::ReferenceTokenLogps);
    let reference = (wants_reference && lora.is_none()).then(|| policy.valid());
    let value_head =
        reads(poc_compiler::Rollout::Values) || reads(poc_compiler::Rollout::OldValues);
    let mut resume = None;
    if let Some(dir) = &args.resume {
        if !on_policy_checkpoint(dir) {
            return Err(user(format!(
                "--resume {}: not a checkpoint of an on-policy run (its trainer_state.json lacks \"on_policy\": true)",
                dir.display()
            )));
        }
        let adapters = load::adapter_dir(dir);
        policy = match (&lora, load::has_adapters(&adapters)) {
            (Some(_), true) => load::load_adapters(&adapters, policy).map_err(user)?,
            (None, false) => {
                let compute = policy.compute;
                let mut loaded = load::load(dir, &train_device).map_err(user)?;
                loaded.compute = compute;
                loaded
            }
            (Some(_), false) => {
                return Err(user(format!(
                    "--resume {}: the checkpoint has no LoRA adapters (adapter/adapter_config.json), but --lora was given",
                    dir.display()
                )));
            }
            (None, true) => {
                return Err(user(format!(
                    "--resume {}: the checkpoint holds LoRA adapters; give the same --lora flags as the original run",
                    dir.display()
                )));
            }
        };
        // The value head trains with the adapters: attached after them (which freeze the rest).
        if value_head {
            policy = load::load_value_head(dir, policy).map_err(user)?;
        }
        let (p, r) = poc_runtime::train::load_resume(dir, policy).map_err(user)?;
        eprintln!(
            "poc run: resuming from {} at step {}",
            dir.display(),
            r.step
        );
        policy = p;
        resume = Some(r);
    } else {
        if let Some(l) = lora.clone() {
            policy = policy.with_lora(l, args.seed);
        }
        if value_head {
            policy = policy.with_value_head();
        }
    }
    let reward_model = match (&args.reward_model, reads(poc_compiler::Rollout::Score)) {
        (Some(dir), true) => {
            let (rm, _, _) = resolve_model(&dir.display().to_string(), false, 0, &device)?;
            if rm.score.is_none() {
                return Err(user(format!(
                    "--reward-model {}: not a reward model (no `score.weight`); train one with `poc run bt_reward`",
                    dir.display()
                )));
            }
            if rm.config.vocab_size != policy.config.vocab_size {
                return Err(user(format!(
                    "--reward-model {}: its vocabulary ({} ids) differs from the policy's ({})",
                    dir.display(),
                    rm.config.vocab_size,
                    policy.config.vocab_size
                )));
            }
            Some(rm)
        }
        (None, true) => {
            return Err(user(format!(
                "`{}` reads the reward model's score: pass --reward-model DIR (train one with `poc run bt_reward --out DIR`)",
                c.objective.name
            )));
        }
        (_, false) => None,
    };
    let out = run_dir(c, &args)?;
    let prompt_file = match (&args.prompts, &args.data) {
        (Some(p), _) | (None, Some(p)) => p.clone(),
        (None, None) => {
            let path = out.join("prompts.jsonl");
            let text = data::synthetic::synthetic_jsonl(2048, 7);
            std::fs::write(&path, &text).map_err(|e| user(format!("{}: {e}", path.display())))?;
            path
        }
    };
    let (prompts, eos) =
        poc_pipelines::prompts::load(&prompt_file, &tok, &policy.config, &args.model)?;
    // On-policy updates are larger per step (several epochs per batch): a lower default.
    let lr = args
        .lr
        .unwrap_or(if tiny { TINY_ON_POLICY_LR } else { 1e-6 });
    let opts = train_options(&args, lr, params.clone(), &out);
    let rollout = poc_runtime::ppo::RolloutOptions {
        epochs: args.ppo_epochs,
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        eos,
        pad: tok.pad,
    };
    let resolved = serde_json::json!({
        "objective": c.objective.name,
        "params": c.objective.params.iter().zip(&params).map(|(p, v)| (p.name.clone(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
        "model": args.model,
        "reward_model": args.reward_model.as_ref().map(|p| p.display().to_string()),
        "lora": policy.lora,
        "prompts": prompt_file.display().to_string(),
        "device": args.device,
        "train": opts,
        "rollout": rollout,
    });
    let text =
        serde_json::to_string_pretty(&resolved).map_err(|e| Failure::Internal(e.to_string()))?;
    load::write_atomic(&out.join("run_config.json"), text.as_bytes()).map_err(user)?;
    eprintln!(
        "poc run: {} on {} (on-policy: {} prompts, {} per rollout batch, {} epochs each) -> {}",
        c.objective.name,
        args.model,
        prompts.len(),
        args.batch_size,
        args.ppo_epochs,
        out.display()
    );
    let models = poc_runtime::ppo::Models {
        policy,
        reference,
        reference_is_base: wants_reference && lora.is_some(),
        reward_model,
    };
    let stop = stop_on_ctrl_c();
    let bar = progress_bar(0, args.no_progress, TRAIN_BAR);
    let result = poc_runtime::ppo::train_on_policy(
        c,
        models,
        &prompts,
        &tok,
        &opts,
        &rollout,
        &device,
        resume,
        stop,
        |log, total| {
            bar.set_length(total as u64);
            bar.set_position(log.step as u64);
            let score = log
                .metrics
                .get("objective/scores")
                .and_then(|v| v.as_f64())
                .map(|s| format!(" score {s:.3}"))
                .unwrap_or_default();
            bar.set_message(format!(
                "loss {:.4}{score} |g| {:.2}",
                log.loss, log.grad_norm
            ));
        },
    );
    bar.finish();
    let logs = result.map_err(|e| Failure::User(format!("poc: {e}")))?;
    summarize(&logs, &out);
    Ok(())
}

/// The run directory (`--out`, default runs/OBJECTIVE), created.
fn run_dir(c: &Compiled, args: &RunArgs) -> Result<PathBuf, Failure> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(&c.objective.name));
    std::fs::create_dir_all(&out)
        .map_err(|e| user(format!("cannot create `{}`: {e}", out.display())))?;
    Ok(out)
}

/// The compute dtype: `--dtype`, else bf16 on CUDA and f32 on the CPU.
fn compute_of(args: &RunArgs, spec: DeviceSpec) -> Compute {
    match (args.dtype, spec) {
        (Some(ComputeArg::F32), _) | (None, DeviceSpec::Cpu) => Compute::F32,
        (Some(ComputeArg::Bf16), _) | (None, DeviceSpec::Cuda(_)) => Compute::Bf16,
    }
}

/// A flag Ctrl-C sets: the training loop saves a checkpoint after the current step and stops.
/// A second Ctrl-C quits at once.
fn stop_on_ctrl_c() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!(
            "\npoc: interrupted; saving a checkpoint after this step (Ctrl-C again to quit now)"
        );
    });
    stop
}

/// The template of a training run's progress bar (its message is set per step).
const TRAIN_BAR: &str = "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}";

/// A progress bar on stderr in `template`; indicatif draws it only on a terminal, and
/// `hidden` (`--no-progress`) turns it off.
pub(crate) fn progress_bar(len: u64, hidden: bool, template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    if hidden {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Whether checkpoint `dir` was written by an on-policy run (its trainer state says so).
fn on_policy_checkpoint(dir: &Path) -> bool {
    poc_pipelines::jsonl::read(&dir.join("trainer_state.json"))
        .is_some_and(|s| s["on_policy"].as_bool() == Some(true))
}

/// Whether checkpoint `dir` is one a pairwise run training a reward model (`reward`) or a
/// policy can continue: not an on-policy run's, and under LoRA the same kind of model (the
/// adapters' PEFT task).
fn check_pair_checkpoint(dir: &Path, reward: bool) -> Result<(), Failure> {
    if on_policy_checkpoint(dir) {
        return Err(user(format!(
            "--resume {}: a checkpoint of an on-policy run; continue it with the on-policy objective it was trained with",
            dir.display()
        )));
    }
    if let Some(cfg) =
        poc_pipelines::jsonl::read(&load::adapter_dir(dir).join("adapter_config.json"))
    {
        let adapters_reward = cfg["task_type"] == "SEQ_CLS";
        if adapters_reward != reward {
            return Err(user(format!(
                "--resume {}: the checkpoint's adapters are a {}'s, but this run trains a {}",
                dir.display(),
                if adapters_reward {
                    "reward model"
                } else {
                    "policy"
                },
                if reward { "reward model" } else { "policy" }
            )));
        }
    }
    Ok(())
}

/// The default learning rate of on-policy training on the `tiny` preset (its updates are larger
/// per step than a pairwise run's: several epochs per batch); 1e-6 for any other model.
pub(crate) const TINY_ON_POLICY_LR: f64 = 1e-4;

/// The adapters `--lora`, `--lora-alpha` and `--lora-target-modules` ask for, if any.
fn lora_config(args: &RunArgs) -> Result<Option<LoraConfig>, Failure> {
    Ok(match args.lora {
        None => None,
        Some(0) => return Err(user("--lora: the rank must be at least 1")),
        Some(rank) => Some(LoraConfig {
            rank,
            alpha: args.lora_alpha.unwrap_or(2.0 * rank as f64),
            targets: Target::parse_list(&args.lora_target_modules)
                .map_err(|e| user(format!("--lora-target-modules: {e}")))?,
        }),
    })
}

/// The `poc run` command.
pub fn run(c: &Compiled, args: RunArgs) -> Result<(), Failure> {
    let params = c
        .objective
        .params_with(&args.sets)
        .map_err(|d| Failure::User(poc_grammar::diag::render_all(&d, "poc", "")))?;
    if args.batch_size == 0 || args.grad_accum == 0 || args.max_length < 4 {
        return Err(user(
            "--batch-size and --grad-accum must be at least 1, --max-length at least 4",
        ));
    }
    if poc_runtime::ppo::is_on_policy(c) {
        return run_on_policy(c, args, params);
    }
    let spec = DeviceSpec::usable(&args.device).map_err(user)?;
    let device = spec.device();
    let lora = lora_config(&args)?;
    let reward = reward_task(c, args.task)?;
    let compute = compute_of(&args, spec);
    let out = run_dir(c, &args)?;
    // The policy lives on the training device (autodiff, optionally checkpointing); the
    // reference and everything without gradients on the plain one.
    let train_device = poc_runtime::device::training(&device, args.gradient_checkpointing);
    let (mut policy, tok, tiny) =
        resolve_model(&args.model, args.random_init, args.seed, &train_device)?;
    policy.compute = compute;
    if reward && policy.score.is_none() {
        policy = policy.with_score_head(args.seed);
        // transformers pools a reward model at the last token that is not padding.
        policy
            .config
            .extra
            .insert("pad_token_id".into(), tok.pad.into());
    }
    let wants_reference = poc_runtime::observe::needs(&c.objective.inputs).reference;
    // The reference is the starting model (--model), also when resuming: a frozen copy, or
    // under LoRA the policy with its adapters off.
    let reference = (wants_reference && lora.is_none()).then(|| policy.valid());
    if let Some(dir) = &args.resume {
        check_pair_checkpoint(dir, reward)?;
    }
    let policy = match (&args.resume, lora.clone()) {
        (Some(dir), Some(_)) if load::has_adapters(&load::adapter_dir(dir)) => {
            load::load_adapters(&load::adapter_dir(dir), policy).map_err(user)?
        }
        (Some(dir), Some(_)) => {
            return Err(user(format!(
                "--resume {}: the checkpoint has no LoRA adapters (adapter/adapter_config.json), but --lora was given",
                dir.display()
            )));
        }
        (Some(dir), None) if load::has_adapters(&load::adapter_dir(dir)) => {
            return Err(user(format!(
                "--resume {}: the checkpoint holds LoRA adapters; give the same --lora flags as the original run",
                dir.display()
            )));
        }
        (Some(dir), None) => {
            let mut loaded = load::load(dir, &train_device).map_err(user)?;
            loaded.compute = compute;
            if reward != loaded.score.is_some() {
                return Err(user(format!(
                    "--resume {}: the checkpoint is a {}, but this run trains a {}",
                    dir.display(),
                    if reward { "policy" } else { "reward model" },
                    if reward { "reward model" } else { "policy" }
                )));
            }
            loaded
        }
        (None, Some(l)) => policy.with_lora(l, args.seed),
        (None, None) => policy,
    };
    let (policy, resume) = match &args.resume {
        None => (policy, None),
        Some(dir) => {
            let (p, r) = train::load_resume(dir, policy).map_err(user)?;
            eprintln!(
                "poc run: resuming from {} at step {}",
                dir.display(),
                r.step
            );
            (p, Some(r))
        }
    };
    let pairs = load_data(&args, &tok, &out)?;
    let (pairs, eval_pairs) = held_out(pairs, &args, &tok, reward)?;
    demonstrations_fit(c, pairs.iter().chain(eval_pairs.iter()))?;
    // The reference of training and of evaluation: the same strategy for both.
    let cache_both = |r: &Llama| -> Result<_, Failure> {
        Ok((
            precompute(
                c,
                &args,
                &pairs,
                &tok,
                r,
                &device,
                &out.join("ref_cache.json"),
            )?,
            precompute(
                c,
                &args,
                &eval_pairs,
                &tok,
                r,
                &device,
                &out.join("ref_cache_eval.json"),
            )?,
        ))
    };
    let (reference, eval_reference) = match reference {
        None if wants_reference && args.precompute_ref => {
            // LoRA: the reference is the policy with adapters off.
            let mut base = policy.valid();
            base.adapters_enabled = false;
            cache_both(&base)?
        }
        None if wants_reference => (train::Reference::AdaptersOff, train::Reference::AdaptersOff),
        None => (train::Reference::None, train::Reference::None),
        Some(r) if args.precompute_ref => cache_both(&r)?,
        Some(r) => (
            train::Reference::Model(Box::new(r.clone())),
            train::Reference::Model(Box::new(r)),
        ),
    };
    let eval = (!eval_pairs.is_empty()).then(|| train::Eval {
        pairs: eval_pairs,
        reference: eval_reference,
        every: args.eval_every,
    });
    let lr = args.lr.unwrap_or(if tiny { 1e-3 } else { 1e-6 });
    let opts = train_options(&args, lr, params.clone(), &out);
    let resolved = serde_json::json!({
        "objective": c.objective.name,
        "params": c.objective.params.iter().zip(&params).map(|(p, v)| (p.name.clone(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
        "model": args.model,
        "model_config": policy.config,
        "data": args.data.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "embedded synthetic (data.jsonl)".into()),
        "pairs": pairs.len(),
        "device": args.device,
        "max_length": args.max_length,
        "lora": policy.lora,
        "dtype": format!("{compute:?}").to_lowercase(),
        "gradient_checkpointing": args.gradient_checkpointing,
        "train": opts,
    });
    let text =
        serde_json::to_string_pretty(&resolved).map_err(|e| Failure::Internal(e.to_string()))?;
    load::write_atomic(&out.join("run_config.json"), text.as_bytes()).map_err(user)?;

    let stop = stop_on_ctrl_c();
    eprintln!(
        "poc run: {} on {} ({:.1}M parameters), {} pairs, lr {lr:e}, batch {}x{} -> {}",
        c.objective.name,
        args.model,
        policy.config.num_params() as f64 / 1e6,
        pairs.len(),
        args.batch_size,
        args.grad_accum,
        out.display()
    );
    let bar = progress_bar(0, args.no_progress, TRAIN_BAR);
    let result = train::train(
        c,
        policy,
        reference,
        &tok,
        &pairs,
        &opts,
        &device,
        stop,
        resume,
        eval,
        |log, total| {
            bar.set_length(total as u64);
            bar.set_position(log.step as u64);
            let acc = accuracy(&log.metrics, "")
                .map(|a| format!(" acc {a:.2}"))
                .unwrap_or_default();
            bar.set_message(format!(
                "loss {:.4}{acc} |g| {:.2} lr {:.1e} {:.0} tok/s",
                log.loss, log.grad_norm, log.lr, log.tokens_per_sec
            ));
        },
    );
    bar.finish();
    let logs = result.map_err(|e| Failure::User(format!("poc: {e}")))?;
    summarize(&logs, &out);
    Ok(())
}

/// The reference's statistics over `pairs`, from OUT/ref_cache.json when it was computed for
/// the same model and data, else computed now (one no-grad pass) and cached there.
fn precompute(
    c: &Compiled,
    args: &RunArgs,
    pairs: &[Pair],
    tok: &Tok,
    r: &Llama,
    device: &burn::tensor::Device,
    path: &Path,
) -> Result<train::Reference, Failure> {
    if pairs.is_empty() {
        return Ok(train::Reference::None);
    }
    let needs = poc_runtime::observe::needs(&c.objective.inputs);
    let fingerprint = format!(
        "model={} seed={} data={} max_length={} pairs={} entropy={}",
        args.model,
        args.seed,
        args.data
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "synthetic".into()),
        args.max_length,
        pairs.len(),
        needs.entropy
    );
    let cached = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<train::RefCache>(&t).ok())
        .filter(|c| c.fingerprint == fingerprint);
    let cache = match cached {
        Some(c) => {
            eprintln!("poc run: reference log-probs from {}", path.display());
            c
        }
        None => {
            eprintln!(
                "poc run: precomputing reference log-probs over {} pairs",
                pairs.len()
            );
            let c = train::RefCache::compute(
                r,
                pairs,
                tok.pad,
                args.batch_size,
                needs.entropy,
                fingerprint,
                device,
            );
            let text = serde_json::to_string(&c).map_err(|e| Failure::Internal(e.to_string()))?;
            load::write_atomic(path, text.as_bytes()).map_err(user)?;
            c
        }
    };
    // The reference model is dropped by the caller: training holds only the policy.
    Ok(train::Reference::Cached(cache))
}

/// A step's pairwise accuracy: TRL's `rewards/accuracies` (policies) or `accuracy` (reward
/// models), under `prefix` (`""` or `"eval/"`).
fn accuracy(metrics: &serde_json::Map<String, serde_json::Value>, prefix: &str) -> Option<f64> {
    ["rewards/accuracies", "accuracy"].iter().find_map(|k| {
        metrics
            .get(&format!("{prefix}{k}"))
            .and_then(|v| v.as_f64())
    })
}

fn summarize(logs: &[train::StepLog], out: &Path) {
    let n = logs.len();
    if n == 0 {
        return;
    }
    let k = (n / 10).max(1);
    let mean = |xs: &[train::StepLog], f: &dyn Fn(&train::StepLog) -> Option<f64>| {
        let v: Vec<f64> = xs.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let acc = |l: &train::StepLog| accuracy(&l.metrics, "");
    let loss = |l: &train::StepLog| Some(l.loss);
    let mut line = format!(
        "poc run: loss {:.4} -> {:.4}",
        mean(&logs[..k], &loss).unwrap_or(f64::NAN),
        mean(&logs[n - k..], &loss).unwrap_or(f64::NAN),
    );
    if let (Some(a), Some(b)) = (mean(&logs[..k], &acc), mean(&logs[n - k..], &acc)) {
        line.push_str(&format!(", accuracy {a:.2} -> {b:.2}"));
    }
    line.push_str(&format!(" (first vs last {k} steps)"));
    if let Some(e) = accuracy(&logs[n - 1].metrics, "eval/") {
        line.push_str(&format!(", held-out accuracy {e:.2}"));
    }
    eprintln!("{line}; metrics in {}", out.join("metrics.jsonl").display());
}

/// The `poc logps` command: per-row sequence log-probs and lengths under a model.
pub fn logps(
    model: &str,
    data_path: &Path,
    device: &str,
    max_length: usize,
    batch_size: usize,
) -> Result<(), Failure> {
    let spec = DeviceSpec::usable(device).map_err(user)?;
    let device = spec.device();
    let (m, tok, _) = resolve_model(model, false, 0, &device)?;
    let (pairs, bad) = data::load_pairs(data_path, &tok, max_length, false).map_err(user)?;
    for b in &bad {
        eprintln!("poc: skipped {b}");
    }
    let mut out = String::new();
    for chunk in (0..pairs.len())
        .collect::<Vec<_>>()
        .chunks(batch_size.max(1))
    {
        let batch = data::pairs::batch_of(&pairs, chunk, tok.pad);
        let stats = m.sequence_stats(
            &batch.tokens,
            &batch.mask,
            &batch.completion,
            false,
            &device,
        );
        let lp = poc_runtime::objective::to_f64(stats.logps);
        let n = poc_runtime::objective::to_f64(stats.tokens);
        let b = chunk.len();
        for (j, &i) in chunk.iter().enumerate() {
            out.push_str(&serde_json::json!({"line": pairs[i].line, "chosen_logps": lp[j], "rejected_logps": lp[b + j],
                "chosen_len": n[j], "rejected_len": n[b + j]}).to_string());
            out.push('\n');
        }
    }
    print!("{out}");
    Ok(())
}
