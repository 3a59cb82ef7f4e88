//! `poc mpo`: Mixed Preference Optimization (Gou & Nguyen 2024, arXiv 2403.19443) as a
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

use crate::Failure;
use std::path::{Path, PathBuf};
use std::process::Command;

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
    /// No progress bars in the training stages (they show only on a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
    /// Override a parameter of a stage's objective, e.g. `--set dpo.beta=0.2` or
    /// `--set ppo.kl_coef=0.1` (repeatable).
    #[arg(long = "set", value_name = "STAGE.NAME=VALUE")]
    pub sets: Vec<String>,
}

fn user(e: impl std::fmt::Display) -> Failure {
    Failure::User(format!("poc mpo: {e}"))
}

/// Runs `poc ARGS`, streaming its output; a failure names the stage.
fn poc(stage: &str, args: &[String]) -> Result<(), Failure> {
    let exe = std::env::current_exe()
        .map_err(|e| Failure::Internal(format!("cannot find the poc binary: {e}")))?;
    eprintln!("poc mpo: [{stage}] poc {}", args.join(" "));
    let status = Command::new(exe)
        .args(args)
        .status()
        .map_err(|e| Failure::Internal(format!("cannot run poc for {stage}: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(user(format!(
            "stage `{stage}` failed ({status}); fix the cause above and rerun: finished stages are kept"
        )))
    }
}

/// `--set` values of one stage (`dpo.beta=0.2` → `beta=0.2` for stage `dpo`).
fn stage_sets(sets: &[String], stage: &str) -> Vec<String> {
    sets.iter()
        .filter_map(|s| s.strip_prefix(&format!("{stage}.")))
        .flat_map(|s| ["--set".to_string(), s.to_string()])
        .collect()
}

/// Whether a `poc run` to `dir` with `steps` steps has finished.
fn done(dir: &Path, steps: usize) -> Option<PathBuf> {
    let ck = dir.join(format!("checkpoint-{steps}"));
    ck.join("config.json").is_file().then_some(ck)
}

/// The latest resumable checkpoint before step `steps` of a `poc run` of `steps` steps to
/// `dir`, if it stopped part-way: `checkpoint-K` with K < `steps` whose `trainer_state.json`
/// says the run was to take `steps` steps (a checkpoint of a run with another budget, whose
/// learning-rate schedule differs, is not continued). `Err` lists such other checkpoints.
fn latest_checkpoint(dir: &Path, steps: usize) -> Result<Option<PathBuf>, Vec<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(None);
    };
    let mut mine = Vec::new();
    let mut others = Vec::new();
    for e in entries.flatten() {
        let Some(k) = e
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("checkpoint-"))
            .and_then(|k| k.parse::<usize>().ok())
        else {
            continue;
        };
        let total = crate::jsonl::read(&e.path().join("trainer_state.json"))
            .and_then(|s| s["total_steps"].as_u64());
        match total {
            Some(t) if t as usize == steps && k < steps => mine.push((k, e.path())),
            // This run's final checkpoint: finished, not a point to continue from.
            Some(t) if t as usize == steps => {}
            Some(_) => others.push(e.path()),
            None => {}
        }
    }
    match mine.into_iter().max_by_key(|(k, _)| *k) {
        Some((_, p)) => Ok(Some(p)),
        None if others.is_empty() => Ok(None),
        None => Err(others),
    }
}

/// `--resume CKPT` when the stage writing to `dir` stopped part-way, else nothing.
fn resume_args(stage: &str, dir: &Path, steps: usize) -> Vec<String> {
    match latest_checkpoint(dir, steps) {
        Ok(Some(ck)) => {
            eprintln!("poc mpo: [{stage}] continuing from {}", ck.display());
            vec!["--resume".into(), ck.display().to_string()]
        }
        Ok(None) => Vec::new(),
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
            Vec::new()
        }
    }
}

fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count())
        .unwrap_or(0)
}

/// The `poc mpo` command.
pub fn run(args: MpoArgs) -> Result<(), Failure> {
    for s in &args.sets {
        let stage = s.split('.').next().unwrap_or("");
        if !["bt_reward", "dpo", "ppo"].contains(&stage) || !s.contains('=') {
            return Err(user(format!(
                "--set {s}: expected STAGE.NAME=VALUE with STAGE one of bt_reward, dpo, ppo"
            )));
        }
    }
    if args.reward_steps == 0 || args.dpo_steps == 0 || args.ppo_steps == 0 {
        return Err(user(
            "--reward-steps, --dpo-steps and --ppo-steps must be at least 1",
        ));
    }
    if args.lora == Some(0) {
        return Err(user("--lora: the rank must be at least 1"));
    }
    if let Some(d) = &args.data
        && !d.is_file()
    {
        return Err(user(format!("cannot read `{}`: no such file", d.display())));
    }
    if let Some(d) = &args.reward_model
        && !d.join("config.json").is_file()
    {
        return Err(user(format!(
            "--reward-model `{}`: no config.json there (expected a model directory)",
            d.display()
        )));
    }
    for (flag, lr) in [("--lr", args.lr), ("--reward-lr", args.reward_lr)] {
        if let Some(lr) = lr
            && !(lr.is_finite() && lr > 0.0)
        {
            return Err(user(format!("{flag} {lr}: expected a positive number")));
        }
    }
    std::fs::create_dir_all(&args.out)
        .map_err(|e| user(format!("cannot create `{}`: {e}", args.out.display())))?;
    let s = |p: &Path| p.display().to_string();
    let common = |steps: usize, lr: Option<f64>| -> Vec<String> {
        let mut a = vec![
            "--max-steps".into(),
            steps.to_string(),
            "--batch-size".into(),
            args.batch_size.to_string(),
            "--device".into(),
            args.device.clone(),
            "--seed".into(),
            args.seed.to_string(),
            "--save-every".into(),
            args.save_every.to_string(),
        ];
        if let Some(lr) = lr {
            a.extend(["--lr".into(), lr.to_string()]);
        }
        if args.no_progress {
            a.push("--no-progress".into());
        }
        a
    };
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
                poc_runtime::model::load::write_atomic(&path, text.as_bytes()).map_err(user)?;
            }
            path
        }
    };

    // The stages this invocation ran (the rest were done before and skipped).
    let mut ran: Vec<&str> = Vec::new();
    let lora: Vec<String> = args
        .lora
        .map(|r| vec!["--lora".to_string(), r.to_string()])
        .unwrap_or_default();

    // 1. Reward model.
    let rm_dir = args.out.join("reward_model");
    let rm = match (&args.reward_model, done(&rm_dir, args.reward_steps)) {
        (Some(given), _) => {
            eprintln!("poc mpo: [reward model] given: {}", given.display());
            given.clone()
        }
        (None, Some(ck)) => {
            eprintln!("poc mpo: [reward model] done: {}", ck.display());
            ck
        }
        (None, None) => {
            let mut a = vec![
                "run".into(),
                "bt_reward".into(),
                "--model".into(),
                args.model.clone(),
            ];
            a.extend(["--data".into(), s(&data), "--out".into(), s(&rm_dir)]);
            a.extend(common(args.reward_steps, args.reward_lr));
            a.extend(stage_sets(&args.sets, "bt_reward"));
            a.extend(lora.clone());
            a.extend(resume_args("reward model", &rm_dir, args.reward_steps));
            poc("reward model", &a)?;
            ran.push("reward model");
            done(&rm_dir, args.reward_steps).ok_or_else(|| {
                Failure::Internal("the reward model stage wrote no checkpoint".into())
            })?
        }
    };

    // 2. Easy/hard split.
    let split = args.out.join("split");
    let (easy, hard) = (split.join("easy.jsonl"), split.join("hard.jsonl"));
    if easy.is_file() && hard.is_file() {
        eprintln!("poc mpo: [split] done: {}", split.display());
    } else {
        let a: Vec<String> = vec![
            "split".into(),
            "--reward-model".into(),
            s(&rm),
            "--data".into(),
            s(&data),
            "--threshold".into(),
            args.threshold.to_string(),
            "--out".into(),
            s(&split),
            "--device".into(),
            args.device.clone(),
        ];
        poc("split", &a)?;
        ran.push("split");
    }
    let (n_easy, n_hard) = (count_lines(&easy), count_lines(&hard));

    // 3. DPO on the easy pairs (reference: the starting model).
    let dpo_dir = args.out.join("dpo");
    let dpo = if n_easy == 0 {
        eprintln!(
            "poc mpo: [dpo] no easy pairs at δ = {}: PPO starts from the starting model",
            args.threshold
        );
        args.model.clone()
    } else {
        match done(&dpo_dir, args.dpo_steps) {
            Some(ck) => {
                eprintln!("poc mpo: [dpo] done: {}", ck.display());
                s(&ck)
            }
            None => {
                let mut a = vec![
                    "run".into(),
                    "dpo".into(),
                    "--model".into(),
                    args.model.clone(),
                ];
                a.extend(["--data".into(), s(&easy), "--out".into(), s(&dpo_dir)]);
                a.extend(common(args.dpo_steps, args.lr));
                a.extend(stage_sets(&args.sets, "dpo"));
                a.extend(lora.clone());
                a.extend(resume_args("dpo", &dpo_dir, args.dpo_steps));
                poc("dpo", &a)?;
                ran.push("dpo");
                let ck = done(&dpo_dir, args.dpo_steps)
                    .ok_or_else(|| Failure::Internal("the DPO stage wrote no checkpoint".into()))?;
                s(&ck)
            }
        }
    };

    // 4. PPO on the hard prompts (policy from and reference = the DPO model).
    let ppo_dir = args.out.join("ppo");
    let final_model = if n_hard == 0 {
        eprintln!(
            "poc mpo: [ppo] no hard pairs at δ = {}: the DPO model is the result",
            args.threshold
        );
        dpo.clone()
    } else {
        match done(&ppo_dir, args.ppo_steps) {
            Some(ck) => {
                eprintln!("poc mpo: [ppo] done: {}", ck.display());
                s(&ck)
            }
            None => {
                let mut a = vec!["run".into(), "ppo".into(), "--model".into(), dpo.clone()];
                a.extend([
                    "--reward-model".into(),
                    s(&rm),
                    "--prompts".into(),
                    s(&hard),
                ]);
                a.extend(["--out".into(), s(&ppo_dir)]);
                // The PPO stage starts from the DPO checkpoint, a directory, whose `poc run`
                // default lr is a real model's; a pipeline on `tiny` keeps tiny's.
                if args.lr.is_none() && args.model == "tiny" {
                    a.extend(["--lr".into(), crate::run::TINY_ON_POLICY_LR.to_string()]);
                }
                a.extend(["--max-new-tokens".into(), args.max_new_tokens.to_string()]);
                a.extend(common(args.ppo_steps, args.lr));
                a.extend(stage_sets(&args.sets, "ppo"));
                a.extend(lora.clone());
                a.extend(resume_args("ppo", &ppo_dir, args.ppo_steps));
                poc("ppo", &a)?;
                ran.push("ppo");
                let ck = done(&ppo_dir, args.ppo_steps)
                    .ok_or_else(|| Failure::Internal("the PPO stage wrote no checkpoint".into()))?;
                s(&ck)
            }
        }
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
        "ran": ran,
    });
    let text =
        serde_json::to_string_pretty(&summary).map_err(|e| Failure::Internal(e.to_string()))?;
    poc_runtime::model::load::write_atomic(&args.out.join("mpo.json"), text.as_bytes())
        .map_err(user)?;
    eprintln!(
        "poc mpo: {n_easy} easy / {n_hard} hard pairs at δ = {}; final model {final_model} (summary in {})",
        args.threshold,
        args.out.join("mpo.json").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(dir: &Path, step: usize, total: usize) {
        let ck = dir.join(format!("checkpoint-{step}"));
        std::fs::create_dir_all(&ck).unwrap();
        let state = serde_json::json!({"step": step, "total_steps": total});
        std::fs::write(ck.join("trainer_state.json"), state.to_string()).unwrap();
    }

    #[test]
    fn a_stage_continues_only_a_run_with_its_own_budget() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        assert_eq!(latest_checkpoint(&dir.join("none"), 10), Ok(None));
        // A run of 10 steps stopped after 4 (checkpoints 2 and 4): continue from 4.
        checkpoint(dir, 2, 10);
        checkpoint(dir, 4, 10);
        assert_eq!(
            latest_checkpoint(dir, 10),
            Ok(Some(dir.join("checkpoint-4")))
        );
        // Asked for 20 steps: those checkpoints belong to another schedule.
        assert_eq!(
            latest_checkpoint(dir, 20).map_err(|v| v.len()),
            Err(2),
            "checkpoints of a 10-step run are not continued by a 20-step one"
        );
        // The finished step is not a resume point.
        checkpoint(dir, 10, 10);
        assert_eq!(
            latest_checkpoint(dir, 10),
            Ok(Some(dir.join("checkpoint-4")))
        );
    }
}
