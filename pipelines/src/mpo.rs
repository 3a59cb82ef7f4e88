//! Mixed Preference Optimization (Gou & Nguyen 2024, arXiv 2403.19443) as a
//! pipeline of poc's own commands, each stage in its own directory under --out and skipped
//! when its output already exists (so an interrupted pipeline resumes at the stage it stopped):
//!
//! 1. `reward_model/`: `poc run bt_reward` on the data (a reward model; skipped with
//!    `--reward-model DIR`);
//! 2. `split/`: `poc split` by the signed reward gap at δ (easy: gap > δ);
//! 3. `dpo/`: `poc run dpo` on the easy pairs, reference = the starting model;
//! 4. `ppo/`: `poc run ppo` on the hard pairs' prompts, policy initialised from and referenced
//!    to the DPO model, rewards from the reward model.
//!
//! Each stage runs the `poc` binary itself, so what it does is exactly what the stage's own
//! command does (and its log is the command's). A training stage that was stopped part-way
//! (Ctrl-C saves a checkpoint; `--save-every N` saves more) continues from its latest
//! checkpoint with `poc run --resume`.

use crate::split::SplitOptions;
use crate::stage::{Output, RunStage, Runner, Stage, StageError, finished, latest_checkpoint};
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// The prefix of this pipeline's messages.
const COMMAND: &str = "poc mpo";

/// Where the reward model comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum RewardModel {
    /// Trained in stage 1 (`poc run bt_reward`): `steps` optimizer steps at `lr` (else `poc
    /// run`'s default).
    Train {
        /// Optimizer steps.
        steps: usize,
        /// Learning rate.
        lr: Option<f64>,
    },
    /// A trained reward model's directory: stage 1 is skipped.
    Given(PathBuf),
    /// The synthetic world's true reward r* (`--reward world`): the split reads the pairs'
    /// `true_reward_chosen`/`true_reward_rejected` columns and PPO scores rollouts with r*: the
    /// oracle that separates MPO's algorithm from reward-model error.
    World,
}

/// What `poc mpo` trains, from what, where to.
#[derive(Debug, Clone, PartialEq)]
pub struct MpoOptions {
    /// The starting (SFT) model: a directory or a preset.
    pub model: String,
    /// TRL preference JSONL (else 2,048 pairs of the synthetic world).
    pub data: Option<PathBuf>,
    /// Pipeline directory (one subdirectory per stage).
    pub out: PathBuf,
    /// δ of the easy/hard split.
    pub threshold: f64,
    /// The reward model: trained here or given.
    pub reward: RewardModel,
    /// Optimizer steps of DPO on the easy pairs.
    pub dpo_steps: usize,
    /// PPO rollout batches on the hard prompts.
    pub ppo_steps: usize,
    /// Pairs (and prompts) per batch in every stage.
    pub batch_size: usize,
    /// Longest PPO completion, in tokens.
    pub max_new_tokens: usize,
    /// cpu, cuda or cuda:N.
    pub device: String,
    /// Train the reward model and the DPO stage data-parallel in N processes (`poc run
    /// --nproc N`); PPO runs in one.
    pub nproc: Option<usize>,
    /// Seed of every stage.
    pub seed: u64,
    /// Rank of LoRA adapters in every stage, if any.
    pub lora: Option<usize>,
    /// Save a checkpoint every N steps in every training stage (0: only the last).
    pub save_every: usize,
    /// Learning rate of the policy stages (else `poc run`'s default).
    pub lr: Option<f64>,
    /// No progress bars in the training stages.
    pub no_progress: bool,
    /// `STAGE.NAME=VALUE` parameter overrides.
    pub sets: Vec<String>,
}

impl MpoOptions {
    /// `poc mpo`'s defaults for everything but the starting model and the pipeline directory.
    pub fn new(model: impl Into<String>, out: PathBuf) -> MpoOptions {
        MpoOptions {
            model: model.into(),
            data: None,
            out,
            threshold: 1.0,
            reward: RewardModel::Train {
                steps: 100,
                lr: None,
            },
            dpo_steps: 100,
            ppo_steps: 50,
            batch_size: 8,
            max_new_tokens: 24,
            device: "cpu".into(),
            nproc: None,
            seed: 42,
            lora: None,
            save_every: 0,
            lr: None,
            no_progress: false,
            sets: Vec::new(),
        }
    }
}

/// `--set` values of one stage (`dpo.beta=0.2` → `beta=0.2` for stage `dpo`).
fn stage_sets(sets: &[String], stage: &str) -> Vec<String> {
    sets.iter()
        .filter_map(|s| s.strip_prefix(&format!("{stage}.")))
        .map(str::to_string)
        .collect()
}

/// The checkpoint to continue from when the stage writing to `dir` stopped part-way.
fn resume_from(stage: &str, dir: &Path, steps: usize) -> Option<PathBuf> {
    match latest_checkpoint(dir, steps) {
        Ok(Some(ck)) => {
            eprintln!("poc mpo: [{stage}] continuing from {}", ck.display());
            Some(ck)
        }
        Ok(None) => None,
        Err(others) => {
            eprintln!(
                "poc mpo: [{stage}] {} holds checkpoints of a run with another step count ({}); this stage starts afresh",
                dir.display(),
                others
                    .iter()
                    .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            None
        }
    }
}

/// What `mpo.json` names as the reward model under `--reward world`.
const WORLD_REWARD: &str = "world (true reward r*)";

/// MPO's split by the oracle: a pair is easy when its true gap
/// `true_reward_chosen − true_reward_rejected` exceeds `threshold` (the synthetic world's
/// columns), hard otherwise; the rows are copied as they are.
fn oracle_split(data: &Path, dir: &Path, threshold: f64) -> Result<()> {
    let text = std::fs::read_to_string(data)
        .map_err(|e| Error::user(COMMAND, format!("cannot read `{}`: {e}", data.display())))?;
    let (mut easy, mut hard) = (String::new(), String::new());
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            Error::user(
                COMMAND,
                format!("{}:{}: not JSON ({e})", data.display(), i + 1),
            )
        })?;
        let col = |name: &str| v.get(name).and_then(serde_json::Value::as_f64);
        let (Some(c), Some(r)) = (col("true_reward_chosen"), col("true_reward_rejected")) else {
            return Err(Error::user(
                COMMAND,
                format!(
                    "{}:{}: --reward world splits by the true gap and needs the columns true_reward_chosen and true_reward_rejected (pairs written by `poc world`)",
                    data.display(),
                    i + 1
                ),
            ));
        };
        let side = if c - r > threshold {
            &mut easy
        } else {
            &mut hard
        };
        side.push_str(line);
        side.push('\n');
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::user(COMMAND, e))?;
    for (name, rows) in [("easy.jsonl", easy), ("hard.jsonl", hard)] {
        poc_runtime::model::load::write_atomic(&dir.join(name), rows.as_bytes())
            .map_err(|e| Error::user(COMMAND, e))?;
    }
    Ok(())
}

fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count())
        .unwrap_or(0)
}

fn check(args: &MpoOptions) -> Result<()> {
    for s in &args.sets {
        let stage = s.split('.').next().unwrap_or("");
        if !["bt_reward", "dpo", "ppo"].contains(&stage) || !s.contains('=') {
            return Err(Error::user(
                COMMAND,
                format!(
                    "--set {s}: expected STAGE.NAME=VALUE with STAGE one of bt_reward, dpo, ppo"
                ),
            ));
        }
    }
    let reward_steps = match args.reward {
        RewardModel::Train { steps, .. } => steps,
        RewardModel::Given(_) | RewardModel::World => 1,
    };
    if reward_steps == 0 || args.dpo_steps == 0 || args.ppo_steps == 0 {
        return Err(Error::user(
            COMMAND,
            "--reward-steps, --dpo-steps and --ppo-steps must be at least 1",
        ));
    }
    if args.lora == Some(0) {
        return Err(Error::user(COMMAND, "--lora: the rank must be at least 1"));
    }
    if let Some(d) = &args.data
        && !d.is_file()
    {
        return Err(Error::user(
            COMMAND,
            format!("cannot read `{}`: no such file", d.display()),
        ));
    }
    if let RewardModel::Given(d) = &args.reward
        && !d.join("config.json").is_file()
    {
        return Err(Error::user(
            COMMAND,
            format!(
                "--reward-model `{}`: no config.json there (expected a model directory)",
                d.display()
            ),
        ));
    }
    let reward_lr = match args.reward {
        RewardModel::Train { lr, .. } => lr,
        RewardModel::Given(_) | RewardModel::World => None,
    };
    for (flag, lr) in [("--lr", args.lr), ("--reward-lr", reward_lr)] {
        if let Some(lr) = lr
            && !(lr.is_finite() && lr > 0.0)
        {
            return Err(Error::user(
                COMMAND,
                format!("{flag} {lr}: expected a positive number"),
            ));
        }
    }
    Ok(())
}

/// The pipeline's stages, run through `runner`, and what they left.
struct Pipeline<'a> {
    args: &'a MpoOptions,
    runner: &'a Runner,
    /// The stages this invocation ran (the rest were done before and skipped).
    ran: Vec<&'static str>,
}

impl Pipeline<'_> {
    /// Runs a stage, its output streamed; a failure names the stage.
    fn run(&mut self, name: &'static str, stage: &Stage) -> Result<()> {
        eprintln!("poc mpo: [{name}] {}", self.runner.shown(stage));
        match self.runner.run(stage, Output::Stream) {
            Ok(()) => {
                self.ran.push(name);
                Ok(())
            }
            Err(StageError::Spawn(e)) => {
                Err(Error::Internal(format!("cannot run poc for {name}: {e}")))
            }
            Err(StageError::Failed { status, .. }) => Err(Error::user(
                COMMAND,
                format!(
                    "stage `{name}` failed ({status}); fix the cause above and rerun: finished stages are kept"
                ),
            )),
        }
    }

    /// A `poc run` stage of the pipeline: its objective on `data` for `steps` steps to `dir`,
    /// with the pipeline's shared flags, continuing a stopped run.
    fn training(
        &self,
        name: &str,
        objective: &str,
        model: &str,
        dir: &Path,
        steps: usize,
        lr: Option<f64>,
    ) -> RunStage {
        let a = self.args;
        RunStage {
            model: model.to_string(),
            batch_size: a.batch_size,
            seed: a.seed,
            lr,
            device: a.device.clone(),
            save_every: a.save_every,
            lora: a.lora,
            sets: stage_sets(&a.sets, objective),
            resume: resume_from(name, dir, steps),
            no_progress: a.no_progress,
            nproc: a.nproc,
            ..RunStage::new(objective, dir.to_path_buf(), steps)
        }
    }

    /// Runs the training stage `run` unless its final checkpoint exists; returns that
    /// checkpoint.
    fn trained(
        &mut self,
        name: &'static str,
        dir: &Path,
        steps: usize,
        stage: impl FnOnce(&Self) -> RunStage,
    ) -> Result<PathBuf> {
        if let Some(ck) = finished(dir, steps) {
            eprintln!("poc mpo: [{name}] done: {}", ck.display());
            return Ok(ck);
        }
        let stage = Stage::Run(stage(self));
        self.run(name, &stage)?;
        finished(dir, steps).ok_or_else(|| {
            Error::Internal(format!(
                "the {} stage wrote no checkpoint",
                stage_title(name)
            ))
        })
    }
}

/// How an internal message names a stage.
fn stage_title(name: &str) -> &str {
    match name {
        "dpo" => "DPO",
        "ppo" => "PPO",
        other => other,
    }
}

/// Runs the MPO pipeline as `args` asks, its stages through `runner`.
pub fn run(args: &MpoOptions, runner: &Runner) -> Result<()> {
    check(args)?;
    std::fs::create_dir_all(&args.out).map_err(|e| {
        Error::user(
            COMMAND,
            format!("cannot create `{}`: {e}", args.out.display()),
        )
    })?;
    let s = |p: &Path| p.display().to_string();
    // Every stage reads the same pairs; without --data, 2,048 pairs of the synthetic world
    // (`poc world --seed 1`), written once here. Their noisy labels and mostly small reward gaps
    // give the split both easy and hard pairs, as MPO's paper found on HH-RLHF (the bundled
    // pairs of `poc run` are so easy that every pair would be easy and PPO would never run).
    let data = match &args.data {
        Some(d) => d.clone(),
        None => {
            let path = args.out.join("data.jsonl");
            if !path.is_file() {
                let world = poc_runtime::data::world::World::new(1);
                let rows = world.train_pairs(2048);
                let text = poc_runtime::data::world::to_jsonl(rows.iter().map(|r| r.to_json()));
                poc_runtime::model::load::write_atomic(&path, text.as_bytes())
                    .map_err(|e| Error::user(COMMAND, e))?;
            }
            path
        }
    };
    let mut p = Pipeline {
        args,
        runner,
        ran: Vec::new(),
    };

    // 1. Reward model.
    let rm = match &args.reward {
        RewardModel::World => {
            eprintln!("poc mpo: [reward model] none: the world's true reward r* (--reward world)");
            PathBuf::from(WORLD_REWARD)
        }
        RewardModel::Given(given) => {
            eprintln!("poc mpo: [reward model] given: {}", given.display());
            given.clone()
        }
        RewardModel::Train { steps, lr } => {
            let dir = args.out.join("reward_model");
            p.trained("reward model", &dir, *steps, |p| RunStage {
                data: Some(data.clone()),
                ..p.training("reward model", "bt_reward", &args.model, &dir, *steps, *lr)
            })?
        }
    };

    // 2. Easy/hard split.
    let split = args.out.join("split");
    let (easy, hard) = (split.join("easy.jsonl"), split.join("hard.jsonl"));
    if easy.is_file() && hard.is_file() {
        eprintln!("poc mpo: [split] done: {}", split.display());
    } else if args.reward == RewardModel::World {
        oracle_split(&data, &split, args.threshold)?;
        eprintln!("poc mpo: [split] by the true gap: {}", split.display());
    } else {
        let stage = SplitOptions {
            threshold: args.threshold,
            device: args.device.clone(),
            ..SplitOptions::new(rm.clone(), data.clone(), split.clone())
        };
        p.run("split", &Stage::Split(stage))?;
    }
    let (n_easy, n_hard) = (count_lines(&easy), count_lines(&hard));

    // 3. DPO on the easy pairs (reference: the starting model).
    let dpo = if n_easy == 0 {
        eprintln!(
            "poc mpo: [dpo] no easy pairs at δ = {}: PPO starts from the starting model",
            args.threshold
        );
        args.model.clone()
    } else {
        let dir = args.out.join("dpo");
        let ck = p.trained("dpo", &dir, args.dpo_steps, |p| RunStage {
            data: Some(easy.clone()),
            ..p.training("dpo", "dpo", &args.model, &dir, args.dpo_steps, args.lr)
        })?;
        s(&ck)
    };

    // 4. PPO on the hard prompts (policy from and reference = the DPO model).
    let final_model = if n_hard == 0 {
        eprintln!(
            "poc mpo: [ppo] no hard pairs at δ = {}: the DPO model is the result",
            args.threshold
        );
        dpo.clone()
    } else {
        let dir = args.out.join("ppo");
        let lr = args
            .lr
            .or((args.model == "tiny").then_some(poc_runtime::train::setup::TINY_ON_POLICY_LR));
        let oracle = args.reward == RewardModel::World;
        let ck = p.trained("ppo", &dir, args.ppo_steps, |p| RunStage {
            reward_model: (!oracle).then(|| rm.clone()),
            world_reward: oracle,
            prompts: Some(hard.clone()),
            max_new_tokens: args.max_new_tokens,
            // The on-policy loop runs in one process.
            nproc: None,
            ..p.training("ppo", "ppo", &dpo, &dir, args.ppo_steps, lr)
        })?;
        s(&ck)
    };
    let summary = serde_json::json!({
        "reward_model": s(&rm),
        "threshold": args.threshold,
        "easy_pairs": n_easy,
        "hard_pairs": n_hard,
        "dpo_steps": args.dpo_steps,
        "ppo_steps": args.ppo_steps,
        "dpo_model": dpo,
        "final_model": final_model,
        "ran": p.ran,
    });
    let text =
        serde_json::to_string_pretty(&summary).map_err(|e| Error::Internal(e.to_string()))?;
    poc_runtime::model::load::write_atomic(&args.out.join("mpo.json"), text.as_bytes())
        .map_err(|e| Error::user(COMMAND, e))?;
    eprintln!(
        "poc mpo: {n_easy} easy / {n_hard} hard pairs at δ = {}; final model {final_model} (summary in {})",
        args.threshold,
        args.out.join("mpo.json").display()
    );
    Ok(())
}
