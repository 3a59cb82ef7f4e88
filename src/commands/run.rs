//! `poc run` and `poc logps`: the flags become a run description for the runtime's training
//! core (`poc_runtime::train`), which sets the run up and trains; this module words what it
//! reports, draws the progress bar and handles Ctrl-C.

use crate::edge::{Failure, progress_bar};
use poc_compiler::Compiled;
use poc_runtime::data;
use poc_runtime::device::DeviceSpec;
use poc_runtime::model::Compute;
use poc_runtime::train::setup::ParallelSpec;
use poc_runtime::train::{
    self, Notice, OnPolicyRun, PairRun, Prepared, RunSpec, Schedule, SetupError, Task,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Arguments of `poc run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// A directory with config.json, model*.safetensors, tokenizer.json; a Hugging Face Hub id
    /// ORG/NAME[@REVISION] (e.g. meta-llama/Llama-3.2-1B-Instruct), taken from the HF cache
    /// (HF_HUB_CACHE, HF_HOME) and downloaded when missing (HF_TOKEN for gated models,
    /// HF_HUB_OFFLINE=1 for the cache alone); or a preset: tiny, llama3-8b, llama3.1-8b,
    /// llama3.2-1b, llama3.2-3b.
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// TRL preference rows (`prompt`, `chosen`, `rejected`: strings or message lists;
    /// extra numeric columns reach the objective; or SFT demonstrations) in a .jsonl, .json or
    /// .parquet file, or a directory or Hub dataset id ORG/NAME[@REVISION] (e.g.
    /// trl-lib/ultrafeedback_binarized) read as --split. Default: bundled synthetic pairs.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// The split of a directory or Hub dataset given as --data (or --prompts): its files are
    /// found as `datasets` finds them (data/SPLIT-00000-of-0000N.parquet, SPLIT/*.parquet,
    /// SPLIT.jsonl, ...).
    #[arg(long, default_value = "train")]
    pub split: String,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Pairs per micro-batch. With several processes (torchrun, --nproc) this is the global
    /// batch per micro-batch: each process takes BATCH_SIZE / N of it, so the run trains as
    /// one process would (BATCH_SIZE must be a multiple of N).
    #[arg(long, default_value_t = 8, value_parser = crate::args::at_least_one)]
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1, value_parser = crate::args::at_least_one)]
    pub grad_accum: usize,
    /// Stop after N optimizer steps (overrides --epochs).
    #[arg(long, value_parser = crate::args::at_least_one)]
    pub max_steps: Option<usize>,
    /// Passes over the data.
    #[arg(long, default_value_t = 1, value_parser = crate::args::at_least_one)]
    pub epochs: usize,
    /// Truncate prompt+completion to this many tokens (longer prompts are skipped).
    #[arg(long, default_value_t = 512, value_parser = crate::args::max_length)]
    pub max_length: usize,
    /// Peak learning rate (default 1e-3 for the tiny model, 1e-6 otherwise, as TRL).
    #[arg(long, value_parser = crate::args::positive)]
    pub lr: Option<f64>,
    /// Fraction of steps of linear warm-up.
    #[arg(long, default_value_t = 0.1, value_parser = crate::args::fraction)]
    pub warmup_ratio: f64,
    /// Decay after warm-up.
    #[arg(long, value_enum, default_value_t = ScheduleArg::Cosine)]
    pub schedule: ScheduleArg,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.0, value_parser = crate::args::non_negative)]
    pub weight_decay: f64,
    /// Clip the global gradient norm (0 disables).
    #[arg(long, default_value_t = 1.0, value_parser = crate::args::non_negative)]
    pub max_grad_norm: f64,
    /// Train data-parallel in N processes on this machine (as `torchrun --nproc-per-node N
    /// --no-python poc run ...`): Gloo on the CPU, NCCL on CUDA (each process on cuda:RANK).
    /// Under torchrun, poc reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT
    /// itself; leave this out.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub nproc: Option<u64>,
    /// Seconds a process waits for the others in a collective (and to join) before it stops
    /// with an error naming the rank.
    #[arg(long, value_name = "SECS", default_value_t = 300.0, value_parser = crate::args::positive)]
    pub dist_timeout: f64,
    /// Seed of the data order and of what the run adds to the model (LoRA adapters, a reward
    /// head). A preset's random weights do not depend on it: `--model tiny` is one model.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Save a checkpoint every N steps (besides the last).
    #[arg(long, default_value_t = 0)]
    pub save_every: usize,
    /// Keep only the newest N checkpoints of the run, deleting older ones after each save
    /// (transformers' `save_total_limit`; an 8B checkpoint is 16 GB). Default: keep all.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub save_total_limit: Option<u64>,
    /// The dtype of the saved model weights. Default: the loaded model's (`torch_dtype` in its
    /// config.json, as transformers saves: bf16 for Llama-3 checkpoints, f32 for the presets).
    /// `f32` keeps the exact trained values (a bf16 save rounds them, so a full fine-tune
    /// resumed from it does not continue bit for bit). LoRA adapters are always saved in f32.
    #[arg(long, value_enum, value_name = "DTYPE")]
    pub save_dtype: Option<SaveDtypeArg>,
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
    /// rate schedule and optimizer state, so the loss curve continues exactly. The checkpoint
    /// records the run's settings (objective and --set values, model, data, batch, learning
    /// rate schedule, seed, ...); a resume with any other value is refused, each difference
    /// listed, unless --allow-change names it. The number of processes may change (the batch
    /// is global).
    #[arg(long, value_name = "CHECKPOINT_DIR")]
    pub resume: Option<PathBuf>,
    /// With --resume: settings that may differ from the checkpoint's, by flag name
    /// (comma-separated or repeated: `--allow-change lr,max-steps`, `set.beta`, or `set` for
    /// every objective parameter). Each change is recorded in run_config.json's history.
    #[arg(
        long,
        value_name = "SETTINGS",
        value_delimiter = ',',
        requires = "resume"
    )]
    pub allow_change: Vec<String>,
    /// Compute the reference's log-probs (and entropies) once, cache them in
    /// OUT/ref_cache.json (reused by later runs on the same model and data), and train
    /// without holding a reference model.
    #[arg(long)]
    pub precompute_ref: bool,
    /// Train LoRA adapters of this rank instead of the full model (the base weights are
    /// frozen; the reference is the policy with its adapters switched off, so no second copy of
    /// the model is held). Checkpoints hold the merged model and, in PEFT's layout, the
    /// adapters alone.
    #[arg(long, value_name = "RANK", value_parser = crate::args::at_least_one)]
    pub lora: Option<usize>,
    /// LoRA scaling numerator α (adapters are scaled by α / rank). Default: 2 x rank.
    #[arg(long, value_name = "ALPHA", requires = "lora", value_parser = crate::args::positive)]
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
    /// Print the memory plan (weights, reference, optimizer state, gradients, activations, the
    /// log-prob head; the device's free memory) for these flags and exit without loading
    /// anything. A real run whose plan clearly exceeds the device stops with the same table.
    #[arg(long)]
    pub dry_run: bool,
    /// Run even when the memory plan exceeds the device's free memory.
    #[arg(long)]
    pub skip_memory_check: bool,
    /// What is trained: a policy (log-probs against a reference) or a reward model (a scalar
    /// head on the decoder, HF's LlamaForSequenceClassification). `auto` decides from the
    /// objective: one that reads reward-model outputs (`input r from reward(chosen)`) trains a
    /// reward model.
    #[arg(long, value_enum, default_value_t = TaskArg::Auto)]
    pub task: TaskArg,
    /// Held-out pairs to evaluate the objective's loss and metrics on (logged as `eval/...`):
    /// a file, or a directory or Hub dataset id read as --eval-split.
    #[arg(long, value_name = "FILE")]
    pub eval_data: Option<PathBuf>,
    /// The split of a directory or Hub dataset given as --eval-data.
    #[arg(long, default_value = "test")]
    pub eval_split: String,
    /// Hold out this fraction of --data for evaluation instead (seeded). Default: 0.1 for a
    /// reward model (held-out pair accuracy), 0 for a policy.
    #[arg(long, value_name = "F", value_parser = crate::args::held_out_fraction)]
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
    /// On-policy objectives: score rollouts with an oracle instead of a reward model. `world`:
    /// the synthetic world's true reward r* of the prompt and completion (poc world; any
    /// other prompt scores -1), to separate the algorithm from reward-model error.
    #[arg(
        long,
        value_name = "ORACLE",
        value_parser = ["world"],
        conflicts_with = "reward_model",
        help_heading = "On-policy objectives (ppo.po)"
    )]
    pub reward: Option<String>,
    /// On-policy objectives: prompts to sample rollouts from (rows with a `prompt`: a string or
    /// chat messages; preference files work too), in any form --data takes. Default: --data's
    /// prompts, or the bundled ones.
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
        value_parser = crate::args::at_least_one,
        help_heading = "On-policy objectives (ppo.po)"
    )]
    pub ppo_epochs: usize,
    /// On-policy objectives: the longest sampled completion, in tokens.
    #[arg(
        long,
        default_value_t = 24,
        value_parser = crate::args::at_least_one,
        help_heading = "On-policy objectives (ppo.po)"
    )]
    pub max_new_tokens: usize,
    /// On-policy objectives: sampling temperature of the rollouts.
    #[arg(
        long,
        default_value_t = 1.0,
        value_parser = crate::args::positive,
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

/// `--save-dtype`.
#[derive(Copy, Clone, Debug, clap::ValueEnum)]
pub enum SaveDtypeArg {
    /// 32-bit floats (exact).
    F32,
    /// bfloat16 (half the size).
    Bf16,
}

/// `--dtype`.
#[derive(Copy, Clone, Debug, clap::ValueEnum)]
pub enum ComputeArg {
    /// 32-bit floats throughout.
    F32,
    /// bfloat16 compute, f32 master weights.
    Bf16,
}

/// The run description `args` and the objective's parameter values `params` give; `parallel`
/// is the launcher's description of a data-parallel job, if any.
fn run_spec(args: &RunArgs, params: Vec<f64>, parallel: Option<ParallelSpec>) -> RunSpec {
    // Under a launcher, `--device cuda` is this process's GPU: cuda:LOCAL_RANK.
    let device = match parallel.as_ref().and_then(|p| p.launch.local_rank) {
        Some(local) if args.device == "cuda" => format!("cuda:{local}"),
        _ => args.device.clone(),
    };
    RunSpec {
        model: args.model.clone(),
        data: args.data.clone(),
        split: args.split.clone(),
        device,
        batch_size: args.batch_size,
        grad_accum: args.grad_accum,
        max_steps: args.max_steps,
        epochs: args.epochs,
        max_length: args.max_length,
        lr: args.lr,
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
        save_total_limit: args.save_total_limit.map(|n| n as usize),
        save_dtype: args.save_dtype.map(|d| match d {
            SaveDtypeArg::F32 => poc_runtime::model::SaveDtype::F32,
            SaveDtypeArg::Bf16 => poc_runtime::model::SaveDtype::Bf16,
        }),
        out: args.out.clone(),
        params,
        strict: args.strict,
        random_init: args.random_init,
        resume: args.resume.clone(),
        allow_change: args.allow_change.clone(),
        precompute_ref: args.precompute_ref,
        lora: args.lora,
        lora_alpha: args.lora_alpha,
        lora_target_modules: args.lora_target_modules.clone(),
        dtype: args.dtype.map(|d| match d {
            ComputeArg::F32 => Compute::F32,
            ComputeArg::Bf16 => Compute::Bf16,
        }),
        gradient_checkpointing: args.gradient_checkpointing,
        skip_memory_check: args.skip_memory_check,
        task: match args.task {
            TaskArg::Auto => Task::Auto,
            TaskArg::Policy => Task::Policy,
            TaskArg::Reward => Task::Reward,
        },
        eval_data: args.eval_data.clone(),
        eval_split: args.eval_split.clone(),
        eval_fraction: args.eval_fraction,
        eval_every: args.eval_every,
        reward_model: args.reward_model.clone(),
        world_reward: args.reward.as_deref() == Some("world"),
        prompts: args.prompts.clone(),
        ppo_epochs: args.ppo_epochs,
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        parallel,
    }
}

/// A set-up error as the CLI reports it.
fn setup_failure(e: SetupError) -> Failure {
    if e.is_internal() {
        Failure::Internal(e.to_string())
    } else {
        Failure::user("poc", e)
    }
}

/// Says what set-up reports, on stderr.
fn tell(notice: Notice) {
    match notice {
        Notice::Resuming { dir, step } => {
            eprintln!("poc run: resuming from {} at step {step}", dir.display())
        }
        Notice::SkippedRows(bad) => report_bad(&bad),
        Notice::CachedReference(path) => {
            eprintln!("poc run: reference log-probs from {}", path.display())
        }
        Notice::PrecomputingReference(n) => {
            eprintln!("poc run: precomputing reference log-probs over {n} pairs")
        }
        Notice::StaleLock(holder) => eprintln!(
            "poc run: the run directory's lock was left by a run that did not exit cleanly ({holder}); taking it over"
        ),
        Notice::RemovedLeftovers(paths) => {
            eprintln!(
                "poc run: removed {} half-written file(s) of an interrupted run:",
                paths.len()
            );
            for p in paths {
                eprintln!("  {}", p.display());
            }
        }
        Notice::UnrecordedSettings(dir) => eprintln!(
            "poc run: warning: {} records no run settings (written by an earlier poc): the resumed run's flags cannot be compared with the original's",
            dir.display()
        ),
        Notice::ChangedSettings(changes) => {
            eprintln!("poc run: resuming with changed settings (--allow-change):");
            for c in changes {
                eprintln!("  {c}");
            }
        }
        Notice::DegeneratePairs(lines) => {
            let shown: Vec<String> = lines.iter().take(10).map(|l| l.to_string()).collect();
            let more = if lines.len() > 10 { ", ..." } else { "" };
            eprintln!(
                "poc run: {} pair(s) have the same chosen and rejected tokens (row {}{more}): they carry no preference; kept, as TRL keeps them",
                lines.len(),
                shown.join(", ")
            );
        }
    }
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

/// The `poc run` command.
pub fn run(c: &Compiled, args: RunArgs) -> Result<(), Failure> {
    let params = c
        .objective
        .params_with(&args.sets)
        .map_err(|d| Failure::User(poc_grammar::diag::render_all(&d, "poc", "")))?;
    if let Some(n) = args.nproc {
        return launch_local(n as usize);
    }
    let parallel = parallel_spec(&args)?;
    let rank = parallel.as_ref().map_or(0, |p| p.launch.rank);
    let spec = run_spec(&args, params, parallel);
    if args.dry_run {
        return dry_run(c, &spec);
    }
    if rank != 0 {
        // The other ranks train in silence; rank 0 reports for all, and errors name the rank.
        return match train::setup::prepare(c, &spec, &mut |_| {})
            .map_err(|e| on_rank(rank, setup_failure(e)))?
        {
            Prepared::Pairs(run) => train::train_pairs(*run, &stop_on_ctrl_c(), |_, _| {})
                .map(|_| ())
                .map_err(|e| on_rank(rank, Failure::user("poc", e))),
            Prepared::OnPolicy(_) => Err(setup_failure(SetupError::OnPolicyParallel)),
        };
    }
    let out = train::setup::out_dir(c, &spec);
    let fresh = !out.exists();
    match train::setup::prepare(c, &spec, &mut tell).map_err(setup_failure)? {
        Prepared::Pairs(run) => train_pairs(&args, *run),
        Prepared::OnPolicy(setup) => {
            let ready = poc_pipelines::prompts::load(
                setup.prompt_file(),
                &args.split,
                setup.tok(),
                &setup.policy().config,
                &args.model,
            )
            .map_err(Failure::from)
            .and_then(|(prompts, eos)| setup.with_prompts(prompts, eos).map_err(setup_failure));
            match ready {
                Ok(run) => train_on_policy(&args, run),
                Err(e) => {
                    // Unusable prompts leave no run directory behind.
                    if fresh {
                        train::setup::abandon(&out);
                    }
                    Err(e)
                }
            }
        }
    }
}

/// The data-parallel job this process is part of, from the launcher's variables (`torchrun`
/// sets WORLD_SIZE; without it, `None`). A variable that is missing or malformed is an error
/// here, before anything is loaded.
fn parallel_spec(args: &RunArgs) -> Result<Option<ParallelSpec>, Failure> {
    if std::env::var_os("WORLD_SIZE").is_none() {
        return Ok(None);
    }
    if !(args.dist_timeout.is_finite() && args.dist_timeout > 0.0) {
        return Err(Failure::User(
            "poc: --dist-timeout must be a positive number of seconds\n".into(),
        ));
    }
    let launch = poc_dist::Launch::from_env().map_err(|e| Failure::User(format!("poc: {e}\n")))?;
    Ok(Some(ParallelSpec {
        launch,
        timeout: std::time::Duration::from_secs_f64(args.dist_timeout),
    }))
}

/// A failure as rank `rank` reports it: its message prefixed with the rank.
fn on_rank(rank: usize, f: Failure) -> Failure {
    match f {
        Failure::User(m) => Failure::User(format!("[rank {rank}] {m}")),
        Failure::Internal(m) => Failure::Internal(format!("[rank {rank}] {m}")),
    }
}

/// `poc run --nproc N`: this command line again in N processes on this machine, as torchrun
/// starts them (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1 and a
/// free MASTER_PORT). When one fails the others are stopped (their errors are on stderr).
fn launch_local(n: usize) -> Result<(), Failure> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Failure::User(format!("poc: no free port for the process group: {e}\n")))?;
    let exe = std::env::current_exe().map_err(|e| Failure::Internal(e.to_string()))?;
    let args = without_nproc(std::env::args().skip(1));
    let mut children = Vec::with_capacity(n);
    for rank in 0..n {
        let child = std::process::Command::new(&exe)
            .args(&args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", n.to_string())
            .env("LOCAL_WORLD_SIZE", n.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .spawn()
            .map_err(|e| Failure::User(format!("poc: cannot start rank {rank}: {e}\n")))?;
        children.push(child);
    }
    let mut failed: Option<(usize, i32)> = None;
    let mut running: Vec<Option<std::process::Child>> = children.into_iter().map(Some).collect();
    let mut since_failure = None;
    while running.iter().any(Option::is_some) {
        for (rank, slot) in running.iter_mut().enumerate() {
            if let Some(child) = slot
                && let Ok(Some(status)) = child.try_wait()
            {
                if !status.success() && failed.is_none() {
                    failed = Some((rank, status.code().unwrap_or(1)));
                    since_failure = Some(std::time::Instant::now());
                }
                *slot = None;
            }
        }
        // The others stop on their own (their next collective fails); after a grace period
        // they are stopped.
        if since_failure.is_some_and(|t| t.elapsed() > std::time::Duration::from_secs(10)) {
            for child in running.iter_mut().flatten() {
                let _ = child.kill();
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    match failed {
        None => Ok(()),
        Some((rank, code)) => Err(Failure::User(format!(
            "poc run: rank {rank} of {n} failed (exit code {code}); the others were stopped\n"
        ))),
    }
}

/// The command line without `--nproc N` / `--nproc=N`.
fn without_nproc(args: impl Iterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip = false;
    for a in args {
        if skip {
            skip = false;
        } else if a == "--nproc" {
            skip = true;
        } else if !a.starts_with("--nproc=") {
            out.push(a);
        }
    }
    out
}

/// `--dry-run`: the memory plan, on stdout.
fn dry_run(c: &Compiled, spec: &RunSpec) -> Result<(), Failure> {
    use poc_runtime::plan;
    train::setup::check_sizes(spec).map_err(setup_failure)?;
    let shape = train::setup::plan_shape(c, spec).map_err(setup_failure)?;
    let p = plan::Plan::estimate(&shape);
    let lora = shape.lora.as_ref().map_or_else(
        || "full fine-tune".to_string(),
        |l| format!("LoRA r={}", l.rank),
    );
    println!(
        "memory plan: {} on {} ({:.2}B parameters), {} rows x {} tokens per micro-batch, {:?}, {lora}, reference {:?}{}",
        c.objective.name,
        spec.model,
        shape.config.num_params() as f64 / 1e9,
        shape.rows,
        shape.seq_len,
        shape.compute,
        shape.reference,
        if shape.gradient_checkpointing {
            ", gradient checkpointing"
        } else {
            ""
        },
    );
    print!("{}", p.table(train::setup::free_memory(spec)));
    println!("to shrink it (estimated totals):");
    for r in plan::remedies(&shape) {
        println!("  {r}");
    }
    Ok(())
}

/// Trains a pair run, with a progress bar, and sums it up.
fn train_pairs(args: &RunArgs, run: PairRun) -> Result<(), Failure> {
    let stop = stop_on_ctrl_c();
    let out = run.opts.out.clone();
    eprintln!(
        "poc run: {} on {} ({:.1}M parameters), {} pairs, lr {:e}, batch {}x{} -> {}",
        run.compiled.objective.name,
        args.model,
        run.policy.config.num_params() as f64 / 1e6,
        run.pairs.len(),
        run.opts.lr,
        args.batch_size,
        args.grad_accum,
        out.display()
    );
    let bar = progress_bar(0, args.no_progress, TRAIN_BAR);
    let result = train::train_pairs(run, &stop, |log, total| {
        bar.set_length(total as u64);
        bar.set_position(log.step as u64);
        let acc = accuracy(&log.metrics, "")
            .map(|a| format!(" acc {a:.2}"))
            .unwrap_or_default();
        bar.set_message(format!(
            "loss {:.4}{acc} |g| {:.2} lr {:.1e} {:.0} tok/s",
            log.loss, log.grad_norm, log.lr, log.tokens_per_sec
        ));
    });
    bar.finish();
    let logs = result.map_err(|e| Failure::user("poc", e))?;
    summarize(&logs, &out);
    Ok(())
}

/// Trains an on-policy run, with a progress bar, and sums it up.
fn train_on_policy(args: &RunArgs, run: OnPolicyRun) -> Result<(), Failure> {
    let out = run.opts.out.clone();
    eprintln!(
        "poc run: {} on {} (on-policy: {} prompts, {} per rollout batch, {} epochs each) -> {}",
        run.compiled.objective.name,
        args.model,
        run.prompts.len(),
        args.batch_size,
        args.ppo_epochs,
        out.display()
    );
    let stop = stop_on_ctrl_c();
    let bar = progress_bar(0, args.no_progress, TRAIN_BAR);
    let result = train::train_on_policy(run, &stop, |log, total| {
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
    });
    bar.finish();
    let logs = result.map_err(|e| Failure::user("poc", e))?;
    summarize(&logs, &out);
    Ok(())
}

/// A flag Ctrl-C or SIGTERM (what job schedulers send before killing a job) sets: the training
/// loop saves a checkpoint after the current step and stops. A second signal quits at once,
/// with `_exit`: `exit` would run libtorch's static destructors while the training thread still
/// calls into libtorch, which then fails inside a tensor operation.
fn stop_on_ctrl_c() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!(
                "\npoc: interrupted again; exiting now without a checkpoint (the last saved one is intact)"
            );
            // SAFETY: `_exit` ends the process without running any destructor or handler; it
            // is async-signal-safe and touches no state of the other threads.
            unsafe { libc::_exit(130) };
        }
        eprintln!(
            "\npoc: interrupted (Ctrl-C or SIGTERM); saving a checkpoint after this step (interrupt again to quit now)"
        );
    });
    stop
}

/// The template of a training run's progress bar (its message is set per step).
const TRAIN_BAR: &str = "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}";

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
    split: &str,
    device: &str,
    max_length: usize,
    batch_size: usize,
) -> Result<(), Failure> {
    let spec = DeviceSpec::usable(device).map_err(|e| Failure::user("poc", e))?;
    let device = spec.device();
    let poc_runtime::model::Resolved { model: m, tok, .. } =
        poc_runtime::model::resolve(model, false, &device).map_err(|e| Failure::user("poc", e))?;
    let (pairs, bad) = data::load_pairs_split(data_path, split, &tok, max_length, false)
        .map_err(|e| Failure::user("poc", e))?;
    for b in &bad {
        eprintln!("poc: skipped {b}");
    }
    let mut out = String::new();
    for chunk in (0..pairs.len())
        .collect::<Vec<_>>()
        .chunks(batch_size.max(1))
    {
        let batch = data::pairs::batch_of(&pairs, chunk, tok.pad);
        let rows = poc_runtime::observe::Rows::from(&batch);
        let stats =
            poc_runtime::observe::stats(&m, rows, poc_runtime::observe::Want::LOGPS, &device);
        let lp = stats
            .logps
            .map(poc_runtime::lower::to_f64)
            .unwrap_or_default();
        let n = poc_runtime::lower::to_f64(poc_runtime::observe::token_counts(
            &batch.completion,
            &device,
        ));
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
