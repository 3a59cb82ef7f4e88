//! `poc bench align`: trains objectives from one SFT reference on the synthetic world (docs/WORLD.md)
//! with the same budget and several seeds, samples every trained policy, and reports what the
//! world's known true reward r* says about each: mean r*, win rate against the reference, the
//! sampled KL to the reference, held-out reward accuracy and the calibration (ECE) of the
//! implicit reward. See docs/ALIGN.md for the protocol and every convention.
//!
//! The stages run the `poc` binary itself for `world`, `run` and `plot` (the same code paths a
//! user runs), and evaluate in process (sampling and log-probs need both models at once). Each
//! stage is skipped when its output is already in `--out`, so an interrupted benchmark resumes.

use crate::Failure;
use crate::run::resolve_model;
use plotters::prelude::*;
use poc_compiler::ops;
use poc_runtime::data::{self, Tok};
use poc_runtime::device::DeviceSpec;
use poc_runtime::lower::to_f64;
use poc_runtime::model::Llama;
use poc_runtime::model::generate::{GenerateOptions, generate};
use poc_runtime::model::load::write_atomic;
use poc_runtime::observe::{self, Want};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

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

/// The objectives compared when none are given.
pub const DEFAULT_OBJECTIVES: [&str; 5] = ["dpo", "ipo", "mipo", "mallows_theta", "mmpo"];

/// The `beta` used for the implicit reward's probability when an objective has none.
pub const DEFAULT_BETA: f64 = 0.1;

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

/// The budget after defaults.
#[derive(Debug, Clone, PartialEq)]
struct Budget {
    seeds: usize,
    steps: usize,
    sft_steps: usize,
    reward_steps: usize,
    eval_prompts: usize,
    max_new_tokens: usize,
    /// Sizes of the world's files: (pairs, heldout, sft).
    world_rows: Option<(usize, usize, usize)>,
}

impl Budget {
    fn of(args: &AlignArgs) -> Budget {
        let (seeds, steps, sft_steps, reward_steps, prompts, tokens, rows) = if args.quick {
            (2, 4, 12, 8, 12, 12, Some((96, 48, 96)))
        } else {
            (3, 120, 300, 600, 240, 20, None)
        };
        Budget {
            seeds: args.seeds.unwrap_or(seeds),
            steps: args.steps.unwrap_or(steps),
            sft_steps: args.sft_steps.unwrap_or(sft_steps),
            reward_steps: args.reward_steps.unwrap_or(reward_steps),
            eval_prompts: args.eval_prompts.unwrap_or(prompts),
            max_new_tokens: args.max_new_tokens.unwrap_or(tokens),
            world_rows: rows,
        }
    }
}

fn user(e: impl std::fmt::Display) -> Failure {
    Failure::User(format!("poc bench align: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Metrics (pure).

/// Win rate of `policy` over `reference`, paired by index: 1 where the policy's reward is
/// higher, 1/2 on a tie, 0 otherwise, averaged. NaN for no pairs.
pub fn win_rate(policy: &[f64], reference: &[f64]) -> f64 {
    let n = policy.len().min(reference.len());
    let wins: f64 = policy
        .iter()
        .zip(reference)
        .map(|(p, r)| match p.partial_cmp(r) {
            Some(std::cmp::Ordering::Greater) => 1.0,
            Some(std::cmp::Ordering::Equal) => 0.5,
            _ => 0.0,
        })
        .sum();
    wins / n as f64
}

/// The Monte-Carlo estimate of KL(π ‖ π_ref) from samples y ~ π: the mean of
/// log π(y) − log π_ref(y) (`policy_logps[i]`, `reference_logps[i]` of sample i).
pub fn kl_estimate(policy_logps: &[f64], reference_logps: &[f64]) -> f64 {
    let n = policy_logps.len().min(reference_logps.len());
    let sum: f64 = policy_logps
        .iter()
        .zip(reference_logps)
        .map(|(p, r)| p - r)
        .sum();
    sum / n as f64
}

/// Pairwise accuracy of margins against outcomes: the fraction of `margins` whose sign agrees
/// with `outcomes` (true: the first item is better), a zero margin counting 1/2.
pub fn accuracy(margins: &[f64], outcomes: &[bool]) -> f64 {
    let n = margins.len().min(outcomes.len());
    let right: f64 = margins
        .iter()
        .zip(outcomes)
        .map(|(&m, &o)| {
            if m == 0.0 {
                0.5
            } else if (m > 0.0) == o {
                1.0
            } else {
                0.0
            }
        })
        .sum();
    right / n as f64
}

/// Expected calibration error with `bins` equal-width bins on [0, 1]: Σ_b (n_b / n) ·
/// |mean p in b − frequency of the event in b|. A probability of exactly 1 falls in the last
/// bin; non-finite probabilities are left out. NaN when nothing is left.
pub fn ece(probs: &[f64], outcomes: &[bool], bins: usize) -> f64 {
    let bins = bins.max(1);
    let mut count = vec![0usize; bins];
    let mut p_sum = vec![0.0; bins];
    let mut hits = vec![0.0; bins];
    let mut n = 0usize;
    for (&p, &o) in probs.iter().zip(outcomes) {
        if !p.is_finite() {
            continue;
        }
        let p = p.clamp(0.0, 1.0);
        let b = ((p * bins as f64) as usize).min(bins - 1);
        count[b] += 1;
        p_sum[b] += p;
        hits[b] += f64::from(u8::from(o));
        n += 1;
    }
    if n == 0 {
        return f64::NAN;
    }
    (0..bins)
        .filter(|&b| count[b] > 0)
        .map(|b| {
            let c = count[b] as f64;
            c / n as f64 * (p_sum[b] / c - hits[b] / c).abs()
        })
        .sum()
}

/// The 97.5% quantile of Student's t with `dof` degrees of freedom (a table to 30, then the
/// Cornish-Fisher expansion around the normal quantile, within 1e-3 there).
pub fn t975(dof: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706_204_736,
        4.302_652_730,
        3.182_446_305,
        2.776_445_105,
        2.570_581_836,
        2.446_911_851,
        2.364_624_252,
        2.306_004_135,
        2.262_157_163,
        2.228_138_852,
        2.200_985_160,
        2.178_812_830,
        2.160_368_656,
        2.144_786_688,
        2.131_449_546,
        2.119_905_299,
        2.109_815_578,
        2.100_922_040,
        2.093_024_054,
        2.085_963_447,
        2.079_613_845,
        2.073_873_068,
        2.068_657_610,
        2.063_898_562,
        2.059_538_553,
        2.055_529_439,
        2.051_830_516,
        2.048_407_142,
        2.045_229_642,
        2.042_272_456,
    ];
    match dof {
        0 => f64::NAN,
        d if d <= 30 => TABLE[d - 1],
        d => {
            let z: f64 = 1.959_963_985;
            let d = d as f64;
            z + (z.powi(3) + z) / (4.0 * d)
                + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * d * d)
        }
    }
}

/// Mean and the half-width of its 95% confidence interval (t-distribution, n − 1 degrees of
/// freedom) over the finite values of `xs`; no interval for fewer than two.
pub fn mean_ci(xs: &[f64]) -> Option<(f64, Option<f64>)> {
    let v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return Some((mean, None));
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Some((mean, Some(t975(v.len() - 1) * (var / n).sqrt())))
}

// ---------------------------------------------------------------------------------------------
// Stages.

/// The entrant name that means the MPO pipeline (`poc mpo`) rather than an objective.
pub const MPO: &str = "mpo";

/// How an entrant trains.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// `poc run OBJ --data world/train.jsonl`.
    Pairs,
    /// `poc run OBJ --reward-model RM --prompts world/train.jsonl`.
    OnPolicy,
    /// `poc mpo --reward-model RM --data world/train.jsonl`.
    Mpo,
    /// MPO's model after its DPO stage: trained by the `Mpo` entrant, evaluated on its own to
    /// show what each stage adds.
    MpoDpoStage,
}

/// One objective (or pipeline) of the comparison.
struct Entrant {
    /// As given on the command line (passed on to `poc run`).
    arg: String,
    /// The objective's declared name (directory names, table rows).
    name: String,
    /// β of σ(β·Δ): the `beta` parameter's default, else [`DEFAULT_BETA`].
    beta: f64,
    kind: Kind,
}

impl Entrant {
    /// The directory name of the run that trains this entrant (`runs/seedS/NAME`).
    fn run_name(&self) -> &str {
        match self.kind {
            Kind::MpoDpoStage => MPO,
            _ => &self.name,
        }
    }
}

/// The table row of MPO's model after its DPO stage.
pub const MPO_DPO_STAGE: &str = "mpo_dpo_stage";

/// MPO's share of a budget of `steps` batches: (DPO steps, PPO rollout batches).
fn mpo_steps(steps: usize) -> (usize, usize) {
    let dpo = steps / 2;
    (dpo, steps - dpo)
}

/// Runs `poc bench align`.
pub fn run(args: AlignArgs) -> Result<(), Failure> {
    let budget = Budget::of(&args);
    if budget.seeds == 0
        || budget.steps == 0
        || budget.sft_steps == 0
        || budget.eval_prompts == 0
        || budget.max_new_tokens == 0
        || args.batch_size == 0
    {
        return Err(user(
            "--seeds, --steps, --sft-steps, --eval-prompts, --max-new-tokens and --batch-size must be at least 1",
        ));
    }
    if !(args.lr.is_finite() && args.lr > 0.0) {
        return Err(user(format!(
            "--lr {}: expected a positive number",
            args.lr
        )));
    }
    let names: Vec<String> = if args.objectives.is_empty() {
        DEFAULT_OBJECTIVES.iter().map(|s| s.to_string()).collect()
    } else {
        args.objectives.clone()
    };
    let mut entrants: Vec<Entrant> = Vec::new();
    for arg in &names {
        if arg == MPO {
            if entrants.iter().any(|e| e.kind == Kind::Mpo) {
                return Err(user("`mpo` is given twice"));
            }
            if budget.steps < 2 {
                return Err(user("mpo needs --steps of at least 2 (half DPO, half PPO)"));
            }
            let dpo = crate::library::shipped("dpo").unwrap_or(DPO_SOURCE);
            let c = crate::cli::compile("dpo", dpo)?;
            for (name, kind) in [(MPO, Kind::Mpo), (MPO_DPO_STAGE, Kind::MpoDpoStage)] {
                entrants.push(Entrant {
                    arg: arg.clone(),
                    name: name.into(),
                    beta: beta_of(&c),
                    kind,
                });
            }
            continue;
        }
        let (label, src) = crate::cli::load(arg)?;
        let c = crate::cli::compile(&label, &src)?;
        let name = c.objective.name.clone();
        if ["reference", MPO, MPO_DPO_STAGE].contains(&name.as_str())
            || entrants.iter().any(|e| e.name == name)
        {
            return Err(user(format!(
                "`{arg}`: the objective name `{name}` is used twice (or is `reference`, `{MPO}` or `{MPO_DPO_STAGE}`); each objective needs its own name"
            )));
        }
        let kind = if poc_runtime::train::is_on_policy(&c) {
            Kind::OnPolicy
        } else {
            Kind::Pairs
        };
        entrants.push(Entrant {
            arg: arg.clone(),
            name,
            beta: beta_of(&c),
            kind,
        });
    }
    let needs_reward_model = entrants.iter().any(|e| e.kind != Kind::Pairs);
    if needs_reward_model && budget.reward_steps == 0 {
        return Err(user("--reward-steps must be at least 1"));
    }
    let exe = std::env::current_exe()
        .map_err(|e| Failure::Internal(format!("cannot find the poc binary: {e}")))?;
    let out = &args.out;
    std::fs::create_dir_all(out)
        .map_err(|e| user(format!("cannot create `{}`: {e}", out.display())))?;
    let started = Instant::now();
    let total = 2
        + usize::from(needs_reward_model)
        + trained(&entrants).count() * budget.seeds
        + budget.seeds * (1 + entrants.len())
        + 1;
    let mut progress = Progress {
        done: 0,
        total,
        started,
    };

    // 1. The world.
    let world = out.join("world");
    progress.stage(
        "world",
        "poc world",
        world.join("world.json").is_file(),
        || {
            let mut cmd = Command::new(&exe);
            cmd.arg("world")
                .arg("--out")
                .arg(&world)
                .args(["--seed", &args.world_seed.to_string()])
                .args(["--eval-prompts", &budget.eval_prompts.to_string()]);
            if let Some((pairs, heldout, sft)) = budget.world_rows {
                cmd.args(["--pairs", &pairs.to_string()])
                    .args(["--heldout", &heldout.to_string()])
                    .args(["--sft", &sft.to_string()]);
            }
            child(cmd, "poc world")
        },
    )?;

    // 2. The reference.
    let reference = out
        .join("reference")
        .join(format!("checkpoint-{}", budget.sft_steps));
    progress.stage(
        "reference",
        &format!("SFT of tiny, {} steps", budget.sft_steps),
        reference.join("config.json").is_file(),
        || {
            let sft = out.join("sft.po");
            let src = crate::library::shipped("sft").unwrap_or(SFT_SOURCE);
            write_atomic(&sft, src.as_bytes()).map_err(user)?;
            let mut cmd = Command::new(&exe);
            cmd.arg("run")
                .arg(&sft)
                .arg("--data")
                .arg(world.join("sft.jsonl"))
                .args(["--max-steps", &budget.sft_steps.to_string()])
                .args(["--batch-size", "16"])
                .args(["--seed", &args.world_seed.to_string()])
                .args(["--lr", "1e-3", "--no-progress", "--out"])
                .arg(out.join("reference"));
            child(cmd, "poc run sft")
        },
    )?;

    // 3. The reward model of the on-policy entrants.
    let reward_model = out
        .join("reward_model")
        .join(format!("checkpoint-{}", budget.reward_steps));
    if needs_reward_model {
        progress.stage(
            "reward model",
            &format!(
                "bt_reward from the reference, {} steps",
                budget.reward_steps
            ),
            reward_model.join("config.json").is_file(),
            || {
                let mut cmd = Command::new(&exe);
                cmd.args(["run", "bt_reward", "--model"])
                    .arg(&reference)
                    .arg("--data")
                    .arg(world.join("train.jsonl"))
                    .arg("--eval-data")
                    .arg(world.join("heldout.jsonl"))
                    .args(["--max-steps", &budget.reward_steps.to_string()])
                    .args(["--batch-size", &args.batch_size.to_string()])
                    .args(["--seed", &args.world_seed.to_string()])
                    .args(["--lr", "1e-4", "--no-progress", "--out"])
                    .arg(out.join("reward_model"));
                child(cmd, "poc run bt_reward")
            },
        )?;
    }

    // 4. The training runs.
    let run_dir = |seed: usize, name: &str| out.join("runs").join(format!("seed{seed}")).join(name);
    for seed in 1..=budget.seeds {
        for e in trained(&entrants) {
            let dir = run_dir(seed, &e.name);
            let what = match e.kind {
                Kind::Pairs => format!("{} seed {seed}, {} steps", e.name, budget.steps),
                Kind::OnPolicy => {
                    format!("{} seed {seed}, {} rollout batches", e.name, budget.steps)
                }
                Kind::Mpo | Kind::MpoDpoStage => {
                    let (d, p) = mpo_steps(budget.steps);
                    format!("mpo seed {seed}, {d} DPO steps + {p} PPO rollout batches")
                }
            };
            let done = policy_of(e, &dir, budget.steps).is_some();
            progress.stage("train", &what, done, || {
                let mut cmd = Command::new(&exe);
                let common = |cmd: &mut Command| {
                    cmd.arg("--model")
                        .arg(&reference)
                        .args(["--batch-size", &args.batch_size.to_string()])
                        .args(["--seed", &seed.to_string()])
                        .args(["--lr", &args.lr.to_string(), "--out"])
                        .arg(&dir);
                };
                match e.kind {
                    Kind::Pairs => {
                        cmd.arg("run").arg(&e.arg).arg("--data");
                    }
                    Kind::OnPolicy => {
                        cmd.arg("run")
                            .arg(&e.arg)
                            .arg("--reward-model")
                            .arg(&reward_model)
                            .args(["--max-new-tokens", &budget.max_new_tokens.to_string()])
                            .arg("--prompts");
                    }
                    Kind::Mpo | Kind::MpoDpoStage => {
                        let (d, p) = mpo_steps(budget.steps);
                        cmd.arg("mpo")
                            .arg("--reward-model")
                            .arg(&reward_model)
                            .args(["--dpo-steps", &d.to_string()])
                            .args(["--ppo-steps", &p.to_string()])
                            .args(["--max-new-tokens", &budget.max_new_tokens.to_string()])
                            .arg("--data");
                    }
                }
                cmd.arg(world.join("train.jsonl")).arg("--no-progress");
                if e.kind != Kind::Mpo {
                    cmd.args(["--max-steps", &budget.steps.to_string()]);
                }
                common(&mut cmd);
                let t = Instant::now();
                child(
                    cmd,
                    &format!(
                        "poc {} {}",
                        if e.kind == Kind::Mpo { "mpo" } else { "run" },
                        e.arg
                    ),
                )?;
                // A pipeline whose stages were all done before (an mpo.json of an older poc
                // lacked its budget) trained nothing now: its recorded time stands.
                let mpo_ran_nothing = e.kind == Kind::Mpo
                    && crate::jsonl::read(&dir.join("mpo.json"))
                        .and_then(|v| v.get("ran").and_then(Value::as_array).map(Vec::is_empty))
                        .unwrap_or(false);
                if mpo_ran_nothing && dir.join(TIME_FILE).is_file() {
                    return Ok(());
                }
                let time = json!({"train_seconds": t.elapsed().as_secs_f64()});
                save_json(&dir.join(TIME_FILE), &time)
            })?;
        }
    }

    // 5. Evaluation.
    let eval_dir = out.join("eval");
    let prompts = read_prompts(&world.join("prompts.jsonl"))?;
    let heldout = world.join("heldout.jsonl");
    let mut evaluator: Option<Evaluator> = None;
    let mut results: Vec<Vec<Metrics>> = vec![Vec::new(); entrants.len()];
    let mut reference_rewards: Vec<f64> = Vec::new();
    for seed in 1..=budget.seeds {
        let dir = eval_dir.join(format!("seed{seed}"));
        let ref_file = dir.join("reference.json");
        let key = |model: &Path| {
            json!({"model": model.display().to_string(), "seed": seed,
                "prompts": prompts.len(), "max_new_tokens": budget.max_new_tokens})
        };
        let ref_key = key(&reference);
        let cached = read_eval(&ref_file, &ref_key);
        let ref_eval = match cached {
            Some(v) => {
                progress.skip("sample", &format!("reference seed {seed}"));
                v
            }
            None => {
                progress.begin("sample", &format!("reference seed {seed}"));
                let ev = evaluator_for(&mut evaluator, &reference, &heldout)?;
                let s = ev.sample(&ev.reference, &prompts, seed, budget.max_new_tokens)?;
                let v = json!({"key": ref_key, "rewards": s.rewards, "completions": s.completions});
                save_json(&ref_file, &v)?;
                progress.end();
                v
            }
        };
        let ref_rewards = numbers(&ref_eval, "rewards");
        reference_rewards.push(mean(&ref_rewards));
        for (k, e) in entrants.iter().enumerate() {
            let trained = run_dir(seed, e.run_name());
            let policy = policy_of(e, &trained, budget.steps).ok_or_else(|| {
                Failure::Internal(format!("no trained model in `{}`", trained.display()))
            })?;
            let file = dir.join(format!("{}.json", e.name));
            let key = key(&policy);
            let v = match read_eval(&file, &key) {
                Some(v) => {
                    progress.skip("evaluate", &format!("{} seed {seed}", e.name));
                    v
                }
                None => {
                    progress.begin("evaluate", &format!("{} seed {seed}", e.name));
                    let ev = evaluator_for(&mut evaluator, &reference, &heldout)?;
                    let v = ev.evaluate(&policy, &prompts, seed, budget.max_new_tokens, &key)?;
                    save_json(&file, &v)?;
                    progress.end();
                    v
                }
            };
            let mut m = Metrics::of(&v, &ref_rewards, e.beta);
            m.train_seconds = crate::jsonl::read(&trained.join(TIME_FILE))
                .filter(|_| e.kind != Kind::MpoDpoStage)
                .and_then(|v| v.get("train_seconds").and_then(Value::as_f64))
                .unwrap_or(f64::NAN);
            results[k].push(m);
        }
    }

    // 6. Report.
    progress.begin("report", "results.md, frontier.png, curves.png");
    let reward_note = needs_reward_model
        .then(|| reward_model_accuracy(&out.join("reward_model").join("metrics.jsonl")))
        .flatten()
        .map(|a| format!("; held-out pair accuracy {a:.3} against the world's labels"));
    let table = table(
        &entrants,
        &results,
        &reference_rewards,
        &budget,
        &args,
        reward_note,
    );
    write_atomic(&out.join("results.md"), table.as_bytes()).map_err(user)?;
    frontier(
        &out.join("frontier.png"),
        &entrants,
        &results,
        &reference_rewards,
    )?;
    let mut cmd = Command::new(&exe);
    cmd.arg("plot");
    let single_runs = || {
        entrants
            .iter()
            .filter(|e| matches!(e.kind, Kind::Pairs | Kind::OnPolicy))
    };
    for e in single_runs() {
        cmd.arg(run_dir(1, &e.name));
    }
    cmd.arg("--out").arg(out.join("curves.png"));
    if single_runs().next().is_some() {
        child(cmd, "poc plot")?;
    }
    progress.end();
    print!("{table}");
    eprintln!(
        "poc bench align: done in {:.0}s; {}, {}, {}",
        started.elapsed().as_secs_f64(),
        out.join("results.md").display(),
        out.join("frontier.png").display(),
        out.join("curves.png").display()
    );
    Ok(())
}

/// The SFT objective, for a binary whose library does not ship it.
const SFT_SOURCE: &str = include_str!("../objectives/sft.po");

/// The DPO objective (MPO's β), likewise.
const DPO_SOURCE: &str = include_str!("../objectives/dpo.po");

/// The file in a run directory where the benchmark keeps the training's wall-clock time.
const TIME_FILE: &str = "bench_time.json";

/// β of σ(β·Δ): the objective's `beta` default, else [`DEFAULT_BETA`].
fn beta_of(c: &poc_compiler::Compiled) -> f64 {
    c.objective
        .params
        .iter()
        .find(|p| p.name == "beta")
        .map_or(DEFAULT_BETA, |p| p.default)
}

/// The trained policy of entrant `e` in `dir`, once its training has finished.
fn policy_of(e: &Entrant, dir: &Path, steps: usize) -> Option<PathBuf> {
    let finished = |ck: PathBuf| ck.join("config.json").is_file().then_some(ck);
    match e.kind {
        Kind::Pairs | Kind::OnPolicy => finished(dir.join(format!("checkpoint-{steps}"))),
        // poc mpo names its models in its summary (the final one is the DPO model when nothing
        // was hard, the DPO model the starting one when nothing was easy).
        // A pipeline run with another budget (an earlier --steps) does not count.
        Kind::Mpo | Kind::MpoDpoStage => {
            let summary = crate::jsonl::read(&dir.join("mpo.json"))?;
            let (d, p) = mpo_steps(steps);
            if summary.get("dpo_steps")?.as_u64()? != d as u64
                || summary.get("ppo_steps")?.as_u64()? != p as u64
            {
                return None;
            }
            let key = if e.kind == Kind::Mpo {
                "final_model"
            } else {
                "dpo_model"
            };
            finished(PathBuf::from(summary.get(key)?.as_str()?))
        }
    }
}

/// The entrants that have a training run of their own.
fn trained(entrants: &[Entrant]) -> impl Iterator<Item = &Entrant> {
    entrants.iter().filter(|e| e.kind != Kind::MpoDpoStage)
}

/// The stage line on stderr: `[align 3/20 0:41] train dpo seed 1, 150 steps ... done (12s)`.
struct Progress {
    done: usize,
    total: usize,
    started: Instant,
}

impl Progress {
    fn head(&self, stage: &str, what: &str) -> String {
        let s = self.started.elapsed().as_secs();
        format!(
            "[align {}/{} {}:{:02}] {stage}: {what}",
            self.done + 1,
            self.total,
            s / 60,
            s % 60
        )
    }

    fn skip(&mut self, stage: &str, what: &str) {
        eprintln!("{} (done before, skipped)", self.head(stage, what));
        self.done += 1;
    }

    fn begin(&mut self, stage: &str, what: &str) {
        eprintln!("{} ...", self.head(stage, what));
    }

    fn end(&mut self) {
        self.done += 1;
    }

    fn stage(
        &mut self,
        stage: &str,
        what: &str,
        done: bool,
        work: impl FnOnce() -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        if done {
            self.skip(stage, what);
            return Ok(());
        }
        self.begin(stage, what);
        let t = Instant::now();
        work()?;
        eprintln!("    finished in {:.0}s", t.elapsed().as_secs_f64());
        self.end();
        Ok(())
    }
}

/// Runs a child `poc` command; its output is shown only when it fails.
fn child(mut cmd: Command, what: &str) -> Result<(), Failure> {
    let output = cmd
        .output()
        .map_err(|e| Failure::Internal(format!("cannot start `{what}`: {e}")))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(20).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(user(format!(
        "`{what}` failed ({}):\n{}",
        output.status,
        tail.join("\n")
    )))
}

fn save_json(path: &Path, v: &Value) -> Result<(), Failure> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| user(format!("cannot create `{}`: {e}", dir.display())))?;
    }
    write_atomic(path, v.to_string().as_bytes()).map_err(user)
}

/// A stored evaluation when it was made with the same `key` (model, seed, budget).
fn read_eval(path: &Path, key: &Value) -> Option<Value> {
    let v = crate::jsonl::read(path)?;
    (v.get("key") == Some(key)).then_some(v)
}

fn numbers(v: &Value, field: &str) -> Vec<f64> {
    v.get(field)
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect())
        .unwrap_or_default()
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn read_prompts(path: &Path) -> Result<Vec<String>, Failure> {
    let label = path.display();
    let text =
        std::fs::read_to_string(path).map_err(|e| user(format!("cannot read `{label}`: {e}")))?;
    let mut prompts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let p = serde_json::from_str::<Value>(line)
            .ok()
            .and_then(|v| v.get("prompt").and_then(Value::as_str).map(str::to_string))
            .ok_or_else(|| {
                user(format!(
                    "{label}:{}: expected {{\"prompt\": \"...\"}}",
                    i + 1
                ))
            })?;
        prompts.push(p);
    }
    if prompts.is_empty() {
        return Err(user(format!("{label}: no prompts")));
    }
    Ok(prompts)
}

/// What one model's samples say.
struct Samples {
    completions: Vec<String>,
    rewards: Vec<f64>,
    /// Sequence log-probs of each sample under the sampling model and the reference.
    logps: Vec<f64>,
    ref_logps: Vec<f64>,
}

/// The reference, loaded once, and its held-out log-probs.
struct Evaluator {
    device: burn::tensor::Device,
    reference: Llama,
    tok: Tok,
    heldout: Vec<data::Pair>,
    /// Σ log π_ref of (chosen, rejected) of every held-out pair.
    ref_heldout: Vec<(f64, f64)>,
}

fn evaluator_for<'a>(
    slot: &'a mut Option<Evaluator>,
    reference: &Path,
    heldout: &Path,
) -> Result<&'a Evaluator, Failure> {
    if slot.is_none() {
        *slot = Some(Evaluator::new(reference, heldout)?);
    }
    slot.as_ref()
        .ok_or_else(|| Failure::Internal("the evaluator vanished".into()))
}

/// Pairs per forward when scoring.
const SCORE_BATCH: usize = 16;

impl Evaluator {
    fn new(reference: &Path, heldout: &Path) -> Result<Evaluator, Failure> {
        let device = DeviceSpec::Cpu.device();
        let (model, tok, _) = resolve_model(&reference.display().to_string(), false, 0, &device)?;
        let (pairs, bad) = data::load_pairs(heldout, &tok, 512, false).map_err(user)?;
        if !bad.is_empty() {
            eprintln!("poc bench align: skipped {} bad held-out row(s)", bad.len());
        }
        let ref_heldout = pair_logps(&model, &pairs, tok.pad, &device);
        Ok(Evaluator {
            device,
            reference: model,
            tok,
            heldout: pairs,
            ref_heldout,
        })
    }

    /// One sample per prompt (temperature 1, seeded), its r*, and its log-probs under `model`
    /// and the reference.
    fn sample(
        &self,
        model: &Llama,
        prompts: &[String],
        seed: usize,
        max_new_tokens: usize,
    ) -> Result<Samples, Failure> {
        let ids: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| self.tok.encode(p, true).map_err(user))
            .collect::<Result<_, _>>()?;
        let mut eos = model.config.eos_ids();
        eos.push(self.tok.eos);
        eos.retain(|&id| (id as usize) < model.config.vocab_size);
        let opts = GenerateOptions {
            max_new_tokens,
            temperature: 1.0,
            top_p: 1.0,
            seed: seed as u64,
            eos,
            pad: self.tok.pad,
            batch_size: 16,
        };
        let outs = generate(model, &ids, &opts).map_err(user)?;
        let completions: Vec<String> = outs.iter().map(|t| self.tok.decode(t)).collect();
        let rewards = prompts
            .iter()
            .zip(&completions)
            .map(|(p, c)| data::world::reward(p, c))
            .collect();
        let logps = sample_logps(model, &ids, &outs, self.tok.pad, &self.device);
        let ref_logps = sample_logps(&self.reference, &ids, &outs, self.tok.pad, &self.device);
        Ok(Samples {
            completions,
            rewards,
            logps,
            ref_logps,
        })
    }

    /// Samples and held-out margins of the policy checkpoint `path`.
    fn evaluate(
        &self,
        path: &Path,
        prompts: &[String],
        seed: usize,
        max_new_tokens: usize,
        key: &Value,
    ) -> Result<Value, Failure> {
        let (policy, _, _) = resolve_model(&path.display().to_string(), false, 0, &self.device)?;
        let s = self.sample(&policy, prompts, seed, max_new_tokens)?;
        let held = pair_logps(&policy, &self.heldout, self.tok.pad, &self.device);
        let margins: Vec<f64> = held
            .iter()
            .zip(&self.ref_heldout)
            .map(|((pc, pr), (rc, rr))| (pc - rc) - (pr - rr))
            .collect();
        let truth: Vec<Value> = self
            .heldout
            .iter()
            .map(|p| {
                match (
                    p.columns.get("true_reward_chosen"),
                    p.columns.get("true_reward_rejected"),
                ) {
                    (Some(c), Some(r)) => json!(c - r),
                    _ => Value::Null,
                }
            })
            .collect();
        Ok(json!({
            "key": key,
            "rewards": s.rewards,
            "logps": s.logps,
            "ref_logps": s.ref_logps,
            "completions": s.completions,
            "heldout_margins": margins,
            "heldout_true_gaps": truth,
        }))
    }
}

/// Σ log p of each pair's (chosen, rejected) completion under `model`.
fn pair_logps(
    model: &Llama,
    pairs: &[data::Pair],
    pad: u32,
    device: &burn::tensor::Device,
) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(pairs.len());
    let idx: Vec<usize> = (0..pairs.len()).collect();
    for chunk in idx.chunks(SCORE_BATCH) {
        let batch = data::pairs::batch_of(pairs, chunk, pad);
        let stats = observe::stats(model, observe::Rows::from(&batch), Want::LOGPS, device);
        let lp = stats.logps.map(to_f64).unwrap_or_default();
        let b = chunk.len();
        out.extend((0..b).map(|j| (lp[j], lp[b + j])));
    }
    out
}

/// Σ log p of each sampled completion (`completions[i]` after `prompts[i]`) under `model`.
fn sample_logps(
    model: &Llama,
    prompts: &[Vec<u32>],
    completions: &[Vec<u32>],
    pad: u32,
    device: &burn::tensor::Device,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(prompts.len());
    let idx: Vec<usize> = (0..prompts.len()).collect();
    for chunk in idx.chunks(2 * SCORE_BATCH) {
        let t = chunk
            .iter()
            .map(|&i| prompts[i].len() + completions[i].len())
            .max()
            .unwrap_or(1);
        let (mut tokens, mut mask, mut completion) = (Vec::new(), Vec::new(), Vec::new());
        for &i in chunk {
            let (p, c) = (prompts[i].len(), completions[i].len());
            let mut row: Vec<u32> = prompts[i].iter().chain(&completions[i]).copied().collect();
            row.resize(t, pad);
            tokens.push(row);
            mask.push((0..t).map(|j| j < p + c).collect());
            completion.push((0..t).map(|j| j >= p && j < p + c).collect());
        }
        let rows = observe::Rows {
            tokens: &tokens,
            mask: &mask,
            completion: &completion,
        };
        let stats = observe::stats(model, rows, Want::LOGPS, device);
        out.extend(stats.logps.map(to_f64).unwrap_or_default());
    }
    out
}

/// One seed's numbers for one objective.
#[derive(Debug, Clone)]
struct Metrics {
    true_reward: f64,
    win_rate: f64,
    kl: f64,
    accuracy: f64,
    ece: f64,
    /// Wall-clock seconds of the training (NaN when unknown).
    train_seconds: f64,
}

impl Metrics {
    fn of(v: &Value, reference_rewards: &[f64], beta: f64) -> Metrics {
        let rewards = numbers(v, "rewards");
        let margins = numbers(v, "heldout_margins");
        let gaps = numbers(v, "heldout_true_gaps");
        // Pairs tied in r* say nothing about which completion is better.
        let (m, o): (Vec<f64>, Vec<bool>) = margins
            .iter()
            .zip(&gaps)
            .filter(|(m, g)| m.is_finite() && g.is_finite() && **g != 0.0)
            .map(|(&m, &g)| (m, g > 0.0))
            .unzip();
        let probs: Vec<f64> = m.iter().map(|&d| ops::sigmoid(beta * d)).collect();
        Metrics {
            true_reward: mean(&rewards),
            win_rate: win_rate(&rewards, reference_rewards),
            kl: kl_estimate(&numbers(v, "logps"), &numbers(v, "ref_logps")),
            accuracy: accuracy(&m, &o),
            ece: ece(&probs, &o, 10),
            train_seconds: f64::NAN,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Report.

/// The last `eval/accuracy` in a run's metrics.jsonl.
fn reward_model_accuracy(metrics: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(metrics).ok()?;
    text.lines().rev().find_map(|l| {
        serde_json::from_str::<Value>(l)
            .ok()?
            .get("metrics")?
            .get("eval/accuracy")?
            .as_f64()
    })
}

/// `mean ± half-width` (or the mean alone, or `—`).
fn cell(xs: &[f64], digits: usize) -> String {
    match mean_ci(xs) {
        None => "—".into(),
        Some((m, None)) => format!("{m:.digits$}"),
        Some((m, Some(h))) => format!("{m:.digits$} ± {h:.digits$}"),
    }
}

fn table(
    entrants: &[Entrant],
    results: &[Vec<Metrics>],
    reference_rewards: &[f64],
    budget: &Budget,
    args: &AlignArgs,
    reward_note: Option<String>,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| objective | β | true reward r* | win rate vs ref | KL(π‖π_ref) | reward acc. (held-out) | ECE | train s |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        s,
        "| reference (SFT) | | {} | 0.5 | 0 | | | |",
        cell(reference_rewards, 3)
    );
    for (e, r) in entrants.iter().zip(results) {
        let col = |f: fn(&Metrics) -> f64| r.iter().map(f).collect::<Vec<f64>>();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            e.name,
            e.beta,
            cell(&col(|m| m.true_reward), 3),
            cell(&col(|m| m.win_rate), 3),
            cell(&col(|m| m.kl), 2),
            cell(&col(|m| m.accuracy), 3),
            cell(&col(|m| m.ece), 3),
            cell(&col(|m| m.train_seconds), 0),
        );
    }
    let _ = writeln!(
        s,
        "\nMean ± 95% CI half-width over {} seed(s) (t-distribution); world seed {}, reference {} SFT steps, {} preference steps of {} pairs at lr {}, {} prompts × 1 sample at temperature 1 (≤ {} new tokens). Win rate by r* with ties 1/2; KL sampled; accuracy and ECE (10 bins, p = σ(β·Δ)) on held-out pairs untied in r*. See docs/ALIGN.md.",
        budget.seeds,
        args.world_seed,
        budget.sft_steps,
        budget.steps,
        args.batch_size,
        args.lr,
        budget.eval_prompts,
        budget.max_new_tokens
    );
    if entrants.iter().any(|e| e.kind != Kind::Pairs) {
        let (d, p) = mpo_steps(budget.steps);
        let _ = writeln!(
            s,
            "\nEqual budget: {} batches of {} examples per entrant — pairs for a pairwise objective, prompts for an on-policy one ({} rollout batches, 4 PPO epochs each), and for mpo {d} DPO steps on its easy pairs then {p} PPO rollout batches on its hard prompts ({MPO_DPO_STAGE}: mpo's model after its DPO stage, not a separate run). On-policy entrants and mpo score with one reward model (bt_reward, {} steps from the reference{}), whose training is not in their train time.",
            budget.steps,
            args.batch_size,
            budget.steps,
            budget.reward_steps,
            reward_note.unwrap_or_default()
        );
    }
    s
}

/// A labelled, coloured set of (KL, true reward) points of the frontier plot.
type Points = (String, RGBColor, Vec<(f64, f64)>);

/// OUT/frontier.png: mean true reward against KL, every seed as a small point, the mean with
/// 95% CI bars in both directions, the reference at KL 0.
fn frontier(
    out: &Path,
    entrants: &[Entrant],
    results: &[Vec<Metrics>],
    reference_rewards: &[f64],
) -> Result<(), Failure> {
    use crate::plot::{COLORS, FONT, draw_error, render};
    // The axes hold every seed's point and every mean's interval.
    let with_intervals = |per_objective: Vec<Vec<f64>>| -> Vec<f64> {
        let mut all: Vec<f64> = per_objective.iter().flatten().copied().collect();
        for v in &per_objective {
            if let Some((m, Some(h))) = mean_ci(v) {
                all.extend([m - h, m + h]);
            }
        }
        all.into_iter().filter(|v| v.is_finite()).collect()
    };
    let column = |f: fn(&Metrics) -> f64| -> Vec<Vec<f64>> {
        results.iter().map(|r| r.iter().map(f).collect()).collect()
    };
    let mut xs = with_intervals(column(|m| m.kl));
    xs.push(0.0);
    let mut ys = column(|m| m.true_reward);
    ys.push(reference_rewards.to_vec());
    let ys = with_intervals(ys);
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if !(lo.is_finite() && hi.is_finite()) {
            return (-1.0, 1.0);
        }
        let pad = ((hi - lo) * 0.1).max(0.05);
        (lo - pad, hi + pad)
    };
    let (x0, x1) = range(&xs);
    let (y0, y1) = range(&ys);
    render(out, (960, 640), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "true reward r* against KL(π‖π_ref) (mean ± 95% CI; small dots: seeds)",
                (FONT, 20),
            )
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .x_desc("KL(π‖π_ref), nats per completion (sampled)")
            .y_desc("mean r*")
            .label_style((FONT, 14))
            .draw()
            .map_err(draw_error)?;
        let mut series: Vec<Points> = vec![(
            "reference (SFT)".into(),
            RGBColor(0, 0, 0),
            reference_rewards.iter().map(|&r| (0.0, r)).collect(),
        )];
        for (k, (e, r)) in entrants.iter().zip(results).enumerate() {
            series.push((
                e.name.clone(),
                COLORS[k % COLORS.len()],
                r.iter().map(|m| (m.kl, m.true_reward)).collect(),
            ));
        }
        for (name, color, points) in &series {
            let points: Vec<(f64, f64)> = points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            let color = *color;
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|&p| Circle::new(p, 3, color.mix(0.5).filled())),
                )
                .map_err(draw_error)?;
            let xs: Vec<f64> = points.iter().map(|p| p.0).collect();
            let ys: Vec<f64> = points.iter().map(|p| p.1).collect();
            let (Some((mx, hx)), Some((my, hy))) = (mean_ci(&xs), mean_ci(&ys)) else {
                continue;
            };
            let (hx, hy) = (hx.unwrap_or(0.0), hy.unwrap_or(0.0));
            chart
                .draw_series([
                    PathElement::new(vec![(mx - hx, my), (mx + hx, my)], color.stroke_width(2)),
                    PathElement::new(vec![(mx, my - hy), (mx, my + hy)], color.stroke_width(2)),
                ])
                .map_err(draw_error)?;
            chart
                .draw_series(std::iter::once(Circle::new((mx, my), 6, color.filled())))
                .map_err(draw_error)?
                .label(name.clone())
                .legend(move |(x, y)| Circle::new((x + 10, y), 5, color.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT, 15))
            .draw()
            .map_err(draw_error)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn win_rate_counts_ties_as_half() {
        assert_eq!(win_rate(&[1.0, 2.0, 3.0, 4.0], &[0.0, 2.0, 5.0, 4.0]), 0.5);
        assert_eq!(win_rate(&[3.0, 3.0], &[1.0, 3.0]), 0.75);
        assert!(win_rate(&[], &[]).is_nan());
    }

    #[test]
    fn kl_estimate_is_exact_on_samples_in_proportion() {
        // p = (3/4, 1/4), q = (1/2, 1/2): four samples in exactly p's proportions give
        // KL(p‖q) = 3/4 ln(3/2) + 1/4 ln(1/2).
        let (p, q) = ([0.75f64, 0.25], [0.5f64, 0.5]);
        let samples = [0, 0, 0, 1];
        let lp: Vec<f64> = samples.iter().map(|&i| p[i].ln()).collect();
        let lq: Vec<f64> = samples.iter().map(|&i| q[i].ln()).collect();
        let exact = 0.75 * 1.5f64.ln() + 0.25 * 0.5f64.ln();
        assert!((kl_estimate(&lp, &lq) - exact).abs() < 1e-12);
        // The same model: zero.
        assert_eq!(kl_estimate(&lp, &lp), 0.0);
    }

    #[test]
    fn ece_of_known_cases() {
        // Always 0.9 when half are true: |0.9 − 0.5| = 0.4.
        let probs = vec![0.9; 100];
        let outcomes: Vec<bool> = (0..100).map(|i| i % 2 == 0).collect();
        assert!((ece(&probs, &outcomes, 10) - 0.4).abs() < 1e-12);
        // Perfectly calibrated: in each bin the frequency equals the probability.
        let mut probs = Vec::new();
        let mut outcomes = Vec::new();
        for k in 0..10 {
            let p = (k as f64 + 0.5) / 10.0;
            for i in 0..100 {
                probs.push(p);
                outcomes.push(i < 10 * k + 5);
            }
        }
        assert!(ece(&probs, &outcomes, 10) < 1e-12);
        // Two bins weighted by their counts: 3 rows at 0.1 all true (0.9 off), 1 row at 0.95
        // true (0.05 off): (3·0.9 + 0.05) / 4.
        let e = ece(&[0.1, 0.1, 0.1, 0.95], &[true, true, true, true], 10);
        assert!((e - (3.0 * 0.9 + 0.05) / 4.0).abs() < 1e-12);
        // p = 1 falls in the last bin; nothing finite is NaN.
        assert_eq!(ece(&[1.0], &[true], 10), 0.0);
        assert!(ece(&[f64::NAN], &[true], 10).is_nan());
    }

    #[test]
    fn accuracy_with_zero_margins() {
        assert_eq!(
            accuracy(&[1.0, -1.0, 0.0, 2.0], &[true, true, false, false]),
            0.375
        );
    }

    #[test]
    fn t_interval_by_hand() {
        // [1, 2, 3]: mean 2, s = 1, t(0.975, 2) = 4.302653: half-width 4.302653 / √3.
        let (m, h) = mean_ci(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!(m, 2.0);
        assert!((h.unwrap() - 2.484_137_7).abs() < 1e-6);
        assert_eq!(mean_ci(&[5.0]), Some((5.0, None)));
        assert_eq!(mean_ci(&[]), None);
        // Beyond the table: close to the exact quantile (t(0.975, 40) = 2.021075, 100: 1.983972).
        assert!((t975(40) - 2.021_075).abs() < 1e-3);
        assert!((t975(100) - 1.983_972).abs() < 1e-4);
        assert!(t975(30) > t975(31));
    }

    #[test]
    fn sigmoid_is_stable() {
        assert_eq!(ops::sigmoid(0.0), 0.5);
        assert!(ops::sigmoid(-800.0) >= 0.0 && ops::sigmoid(800.0) == 1.0);
    }
}
