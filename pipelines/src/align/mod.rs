//! The alignment benchmark (`poc bench align`): trains objectives from one SFT reference on the
//! synthetic world (docs/WORLD.md) with the same budget and several seeds, samples every trained
//! policy, and reports what the world's known true reward r* says about each: mean r*, win rate
//! against the reference, the sampled KL to the reference, held-out reward accuracy and the
//! calibration (ECE) of the implicit reward. See docs/ALIGN.md for the protocol and every
//! convention.
//!
//! The world and training stages run as child `poc` commands ([`crate::stage`]: the same code
//! paths a user runs); evaluation runs in process (sampling and log-probs need both models at
//! once), and so do the report's table and plots. Each stage is skipped when its output is
//! already in `--out`, so an interrupted benchmark resumes.
//!
//! The parts: [`stats`] (pure statistics), `evaluate` (sampling and scoring), `report`
//! (table and frontier plot), `progress` (the stage lines), and here the stages in order.

mod evaluate;
mod progress;
mod report;
pub mod stats;

use crate::mpo::{MpoOptions, RewardModel};
use crate::plot::{self, PlotOptions};
use crate::stage::{Output, RunStage, Runner, Stage, StageError, finished, model_dir};
use crate::world::WorldOptions;
use crate::{Error, Result, jsonl, library};
use evaluate::{Evaluator, Metrics, evaluator_for, numbers, read_prompts};
use poc_compiler::Compiled;
use poc_runtime::model::load::write_atomic;
use progress::Progress;
use serde_json::{Value, json};
use stats::mean;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The prefix of this command's messages.
const COMMAND: &str = "poc bench align";

/// The objectives compared when none are given.
pub const DEFAULT_OBJECTIVES: [&str; 5] = ["dpo", "ipo", "mipo", "mallows_theta", "mmpo"];

/// The `beta` used for the implicit reward's probability when an objective has none.
pub const DEFAULT_BETA: f64 = 0.1;

/// The entrant name that means the MPO pipeline (`poc mpo`) rather than an objective.
pub const MPO: &str = "mpo";

/// The table row of MPO's model after its DPO stage.
pub const MPO_DPO_STAGE: &str = "mpo_dpo_stage";

/// The file in a run directory where the benchmark keeps the training's wall-clock time.
const TIME_FILE: &str = "bench_time.json";

/// What to compare, with what budget, where. `None` budget fields take the defaults of the
/// full benchmark, or of `quick`.
#[derive(Debug, Clone, PartialEq)]
pub struct AlignOptions {
    /// Objectives to compare (paths or shipped names, or `mpo`); empty: [`DEFAULT_OBJECTIVES`].
    pub objectives: Vec<String>,
    /// Training seeds per objective.
    pub seeds: Option<usize>,
    /// Training batches of every entrant.
    pub steps: Option<usize>,
    /// Optimizer steps of the SFT reference.
    pub sft_steps: Option<usize>,
    /// Optimizer steps of the reward model of on-policy entrants and mpo.
    pub reward_steps: Option<usize>,
    /// Seed of the world (and of the reference's training).
    pub world_seed: u64,
    /// Evaluation prompts.
    pub eval_prompts: Option<usize>,
    /// The most tokens sampled per prompt.
    pub max_new_tokens: Option<usize>,
    /// Examples per training batch.
    pub batch_size: usize,
    /// Learning rate of every entrant's training.
    pub lr: f64,
    /// Output directory.
    pub out: PathBuf,
    /// A tiny budget, for tests and smoke runs.
    pub quick: bool,
}

/// Compiles an entrant given as on the command line (a path or a shipped name); the caller's
/// error for anything else.
pub type Loader<'a> = &'a dyn Fn(&str) -> Result<Compiled>;

/// What a finished benchmark leaves for the user.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The results table (Markdown), also in OUT/results.md.
    pub table: String,
    /// Wall-clock seconds of the whole benchmark.
    pub seconds: f64,
    /// The files written: results.md, frontier.png, curves.png.
    pub files: [PathBuf; 3],
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
    fn of(args: &AlignOptions) -> Budget {
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

    fn check(&self, args: &AlignOptions) -> Result<()> {
        if self.seeds == 0
            || self.steps == 0
            || self.sft_steps == 0
            || self.eval_prompts == 0
            || self.max_new_tokens == 0
            || args.batch_size == 0
        {
            return Err(Error::user(
                COMMAND,
                "--seeds, --steps, --sft-steps, --eval-prompts, --max-new-tokens and --batch-size must be at least 1",
            ));
        }
        if !(args.lr.is_finite() && args.lr > 0.0) {
            return Err(Error::user(
                COMMAND,
                format!("--lr {}: expected a positive number", args.lr),
            ));
        }
        Ok(())
    }
}

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

/// MPO's share of a budget of `steps` batches: (DPO steps, PPO rollout batches).
fn mpo_steps(steps: usize) -> (usize, usize) {
    let dpo = steps / 2;
    (dpo, steps - dpo)
}

/// β of σ(β·Δ): the objective's `beta` default, else [`DEFAULT_BETA`].
fn beta_of(c: &Compiled) -> f64 {
    c.objective
        .params
        .iter()
        .find(|p| p.name == "beta")
        .map_or(DEFAULT_BETA, |p| p.default)
}

/// The entrants of `names` (mpo as two rows: the pipeline and its DPO stage), each checked.
fn entrants(names: &[String], budget: &Budget, load: Loader) -> Result<Vec<Entrant>> {
    let mut entrants: Vec<Entrant> = Vec::new();
    for arg in names {
        if arg == MPO {
            if entrants.iter().any(|e| e.kind == Kind::Mpo) {
                return Err(Error::user(COMMAND, "`mpo` is given twice"));
            }
            if budget.steps < 2 {
                return Err(Error::user(
                    COMMAND,
                    "mpo needs --steps of at least 2 (half DPO, half PPO)",
                ));
            }
            let beta = beta_of(&library::compiled("dpo")?);
            for (name, kind) in [(MPO, Kind::Mpo), (MPO_DPO_STAGE, Kind::MpoDpoStage)] {
                entrants.push(Entrant {
                    arg: arg.clone(),
                    name: name.into(),
                    beta,
                    kind,
                });
            }
            continue;
        }
        let c = load(arg)?;
        let name = c.objective.name.clone();
        if ["reference", MPO, MPO_DPO_STAGE].contains(&name.as_str())
            || entrants.iter().any(|e| e.name == name)
        {
            return Err(Error::user(
                COMMAND,
                format!(
                    "`{arg}`: the objective name `{name}` is used twice (or is `reference`, `{MPO}` or `{MPO_DPO_STAGE}`); each objective needs its own name"
                ),
            ));
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
    Ok(entrants)
}

/// The entrants that have a training run of their own.
fn trained(entrants: &[Entrant]) -> impl Iterator<Item = &Entrant> {
    entrants.iter().filter(|e| e.kind != Kind::MpoDpoStage)
}

/// Where everything lives under `--out`.
struct Layout {
    out: PathBuf,
    world: PathBuf,
    /// The reference's final checkpoint.
    reference: PathBuf,
    /// The reward model's final checkpoint.
    reward_model: PathBuf,
}

impl Layout {
    fn new(out: &Path, budget: &Budget) -> Layout {
        Layout {
            out: out.to_path_buf(),
            world: out.join("world"),
            reference: out
                .join("reference")
                .join(format!("checkpoint-{}", budget.sft_steps)),
            reward_model: out
                .join("reward_model")
                .join(format!("checkpoint-{}", budget.reward_steps)),
        }
    }

    /// The run directory of entrant `name`'s training with `seed`.
    fn run_dir(&self, seed: usize, name: &str) -> PathBuf {
        self.out.join("runs").join(format!("seed{seed}")).join(name)
    }

    fn world_file(&self, name: &str) -> PathBuf {
        self.world.join(name)
    }
}

/// A benchmark under way: its options, budget, entrants, files and stage lines.
struct Bench<'a> {
    args: &'a AlignOptions,
    budget: Budget,
    entrants: Vec<Entrant>,
    needs_reward_model: bool,
    files: Layout,
    runner: &'a Runner,
    progress: Progress,
}

/// Runs a child stage; its output is shown only when it fails.
fn child(runner: &Runner, stage: &Stage, what: &str) -> Result<()> {
    match runner.run(stage, Output::OnFailure) {
        Ok(()) => Ok(()),
        Err(StageError::Spawn(e)) => Err(Error::Internal(format!("cannot start `{what}`: {e}"))),
        Err(StageError::Failed {
            status,
            stderr_tail,
        }) => Err(Error::user(
            COMMAND,
            format!("`{what}` failed ({status}):\n{stderr_tail}"),
        )),
    }
}

impl Bench<'_> {
    /// Stage 1: The world.
    fn world(&mut self) -> Result<()> {
        let (args, budget, files) = (self.args, &self.budget, &self.files);
        let defaults = WorldOptions::default();
        let (pairs, heldout, sft) =
            budget
                .world_rows
                .unwrap_or((defaults.pairs, defaults.heldout, defaults.sft));
        let stage = Stage::World(WorldOptions {
            out: files.world.clone(),
            seed: args.world_seed,
            pairs,
            heldout,
            sft,
            eval_prompts: budget.eval_prompts,
        });
        let done = files.world_file("world.json").is_file();
        self.progress.stage("world", "poc world", done, || {
            child(self.runner, &stage, "poc world")
        })
    }

    /// Stage 2: The reference: SFT of the tiny model on the world's SFT rows.
    fn reference(&mut self) -> Result<()> {
        let (args, budget, files) = (self.args, &self.budget, &self.files);
        let sft = files.out.join("sft.po");
        let stage = Stage::Run(RunStage {
            data: Some(files.world_file("sft.jsonl")),
            batch_size: 16,
            seed: args.world_seed,
            lr: Some(1e-3),
            no_progress: true,
            ..RunStage::new(
                sft.display().to_string(),
                files.out.join("reference"),
                budget.sft_steps,
            )
        });
        let done = model_dir(files.reference.clone()).is_some();
        let what = format!("SFT of tiny, {} steps", budget.sft_steps);
        self.progress.stage("reference", &what, done, || {
            let src = library::shipped("sft")
                .ok_or_else(|| Error::Internal("`sft` is not a shipped objective".into()))?;
            write_atomic(&sft, src.as_bytes()).map_err(|e| Error::user(COMMAND, e))?;
            child(self.runner, &stage, "poc run sft")
        })
    }

    /// Stage 3: The reward model of the on-policy entrants and mpo.
    fn reward_model(&mut self) -> Result<()> {
        if !self.needs_reward_model {
            return Ok(());
        }
        let (args, budget, files) = (self.args, &self.budget, &self.files);
        let stage = Stage::Run(RunStage {
            model: files.reference.display().to_string(),
            data: Some(files.world_file("train.jsonl")),
            eval_data: Some(files.world_file("heldout.jsonl")),
            batch_size: args.batch_size,
            seed: args.world_seed,
            lr: Some(1e-4),
            no_progress: true,
            ..RunStage::new(
                "bt_reward",
                files.out.join("reward_model"),
                budget.reward_steps,
            )
        });
        let done = model_dir(files.reward_model.clone()).is_some();
        let what = format!(
            "bt_reward from the reference, {} steps",
            budget.reward_steps
        );
        self.progress.stage("reward model", &what, done, || {
            child(self.runner, &stage, "poc run bt_reward")
        })
    }

    /// The stage that trains entrant `e` with `seed` into `dir`.
    fn training_stage(&self, e: &Entrant, seed: usize, dir: &Path) -> Stage {
        let (args, budget, files) = (self.args, &self.budget, &self.files);
        let train = files.world_file("train.jsonl");
        let reference = files.reference.display().to_string();
        match e.kind {
            Kind::Pairs | Kind::OnPolicy => {
                let run = RunStage {
                    model: reference,
                    batch_size: args.batch_size,
                    seed: seed as u64,
                    lr: Some(args.lr),
                    no_progress: true,
                    ..RunStage::new(e.arg.clone(), dir.to_path_buf(), budget.steps)
                };
                Stage::Run(if e.kind == Kind::Pairs {
                    RunStage {
                        data: Some(train),
                        ..run
                    }
                } else {
                    RunStage {
                        reward_model: Some(files.reward_model.clone()),
                        prompts: Some(train),
                        max_new_tokens: budget.max_new_tokens,
                        ..run
                    }
                })
            }
            Kind::Mpo | Kind::MpoDpoStage => {
                let (dpo_steps, ppo_steps) = mpo_steps(budget.steps);
                Stage::Mpo(MpoOptions {
                    data: Some(train),
                    reward: RewardModel::Given(files.reward_model.clone()),
                    dpo_steps,
                    ppo_steps,
                    batch_size: args.batch_size,
                    max_new_tokens: budget.max_new_tokens,
                    seed: seed as u64,
                    lr: Some(args.lr),
                    no_progress: true,
                    ..MpoOptions::new(reference, dir.to_path_buf())
                })
            }
        }
    }

    /// Stage 4: The training runs, with their wall-clock time.
    fn train(&mut self) -> Result<()> {
        for seed in 1..=self.budget.seeds {
            for e in trained(&self.entrants) {
                let dir = self.files.run_dir(seed, &e.name);
                let steps = self.budget.steps;
                let what = match e.kind {
                    Kind::Pairs => format!("{} seed {seed}, {steps} steps", e.name),
                    Kind::OnPolicy => format!("{} seed {seed}, {steps} rollout batches", e.name),
                    Kind::Mpo | Kind::MpoDpoStage => {
                        let (d, p) = mpo_steps(steps);
                        format!("mpo seed {seed}, {d} DPO steps + {p} PPO rollout batches")
                    }
                };
                let done = policy_of(e, &dir, steps).is_some();
                let stage = self.training_stage(e, seed, &dir);
                let command = if e.kind == Kind::Mpo { "mpo" } else { "run" };
                let label = format!("poc {command} {}", e.arg);
                self.progress.stage("train", &what, done, || {
                    let t = Instant::now();
                    child(self.runner, &stage, &label)?;
                    // A pipeline whose stages were all done before trained nothing now: its
                    // recorded time stands.
                    let mpo_ran_nothing = e.kind == Kind::Mpo
                        && jsonl::read(&dir.join("mpo.json"))
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
        Ok(())
    }

    /// Stage 5: Evaluation: per entrant, one [`Metrics`] per seed; and the reference's mean
    /// reward per seed.
    fn evaluate(&mut self) -> Result<(Vec<Vec<Metrics>>, Vec<f64>)> {
        let budget = &self.budget;
        let eval_dir = self.files.out.join("eval");
        let prompts = read_prompts(&self.files.world_file("prompts.jsonl"))?;
        let heldout = self.files.world_file("heldout.jsonl");
        let reference = &self.files.reference;
        let mut evaluator: Option<Evaluator> = None;
        let mut results: Vec<Vec<Metrics>> = vec![Vec::new(); self.entrants.len()];
        let mut reference_rewards: Vec<f64> = Vec::new();
        for seed in 1..=budget.seeds {
            let dir = eval_dir.join(format!("seed{seed}"));
            let key = |model: &Path| {
                json!({"model": model.display().to_string(), "seed": seed,
                    "prompts": prompts.len(), "max_new_tokens": budget.max_new_tokens})
            };
            let ref_key = key(reference);
            let ref_eval = match read_eval(&dir.join("reference.json"), &ref_key) {
                Some(v) => {
                    self.progress
                        .skip("sample", &format!("reference seed {seed}"));
                    v
                }
                None => {
                    self.progress
                        .begin("sample", &format!("reference seed {seed}"));
                    let ev = evaluator_for(&mut evaluator, reference, &heldout)?;
                    let s = ev.sample(&ev.reference, &prompts, seed, budget.max_new_tokens)?;
                    let v =
                        json!({"key": ref_key, "rewards": s.rewards, "completions": s.completions});
                    save_json(&dir.join("reference.json"), &v)?;
                    self.progress.end();
                    v
                }
            };
            let ref_rewards = numbers(&ref_eval, "rewards");
            reference_rewards.push(mean(&ref_rewards));
            for (k, e) in self.entrants.iter().enumerate() {
                let trained = self.files.run_dir(seed, e.run_name());
                let policy = policy_of(e, &trained, budget.steps).ok_or_else(|| {
                    Error::Internal(format!("no trained model in `{}`", trained.display()))
                })?;
                let file = dir.join(format!("{}.json", e.name));
                let key = key(&policy);
                let v = match read_eval(&file, &key) {
                    Some(v) => {
                        self.progress
                            .skip("evaluate", &format!("{} seed {seed}", e.name));
                        v
                    }
                    None => {
                        self.progress
                            .begin("evaluate", &format!("{} seed {seed}", e.name));
                        let ev = evaluator_for(&mut evaluator, reference, &heldout)?;
                        let v =
                            ev.evaluate(&policy, &prompts, seed, budget.max_new_tokens, &key)?;
                        save_json(&file, &v)?;
                        self.progress.end();
                        v
                    }
                };
                let mut m = Metrics::of(&v, &ref_rewards, e.beta);
                m.train_seconds = jsonl::read(&trained.join(TIME_FILE))
                    .filter(|_| e.kind != Kind::MpoDpoStage)
                    .and_then(|v| v.get("train_seconds").and_then(Value::as_f64))
                    .unwrap_or(f64::NAN);
                results[k].push(m);
            }
        }
        Ok((results, reference_rewards))
    }

    /// Stage 6: The report: results.md, frontier.png, curves.png (the single runs of the first
    /// seed).
    fn report(&mut self, results: &[Vec<Metrics>], reference_rewards: &[f64]) -> Result<Summary> {
        let out = &self.files.out;
        let files = [
            out.join("results.md"),
            out.join("frontier.png"),
            out.join("curves.png"),
        ];
        self.progress
            .begin("report", "results.md, frontier.png, curves.png");
        let reward_note = self
            .needs_reward_model
            .then(|| report::reward_model_accuracy(&out.join("reward_model").join("metrics.jsonl")))
            .flatten()
            .map(|a| format!("; held-out pair accuracy {a:.3} against the world's labels"));
        let table = report::table(
            &self.entrants,
            results,
            reference_rewards,
            &self.budget,
            self.args,
            reward_note,
        );
        write_atomic(&files[0], table.as_bytes()).map_err(|e| Error::user(COMMAND, e))?;
        report::frontier(&files[1], &self.entrants, results, reference_rewards)?;
        let single_runs: Vec<PathBuf> = self
            .entrants
            .iter()
            .filter(|e| matches!(e.kind, Kind::Pairs | Kind::OnPolicy))
            .map(|e| self.files.run_dir(1, &e.name))
            .collect();
        if !single_runs.is_empty() {
            let options = PlotOptions {
                out: Some(files[2].clone()),
                ..PlotOptions::default()
            };
            plot::runs::plot(&single_runs, &options)?;
        }
        self.progress.end();
        Ok(Summary {
            table,
            seconds: self.progress.started.elapsed().as_secs_f64(),
            files,
        })
    }
}

/// Runs the benchmark as `args` asks: entrants compiled by `load`, child stages through
/// `runner`.
pub fn run(args: &AlignOptions, load: Loader, runner: &Runner) -> Result<Summary> {
    let budget = Budget::of(args);
    budget.check(args)?;
    let names: Vec<String> = if args.objectives.is_empty() {
        DEFAULT_OBJECTIVES.iter().map(|s| s.to_string()).collect()
    } else {
        args.objectives.clone()
    };
    let entrants = entrants(&names, &budget, load)?;
    let needs_reward_model = entrants.iter().any(|e| e.kind != Kind::Pairs);
    if needs_reward_model && budget.reward_steps == 0 {
        return Err(Error::user(COMMAND, "--reward-steps must be at least 1"));
    }
    std::fs::create_dir_all(&args.out).map_err(|e| {
        Error::user(
            COMMAND,
            format!("cannot create `{}`: {e}", args.out.display()),
        )
    })?;
    let total = 2
        + usize::from(needs_reward_model)
        + trained(&entrants).count() * budget.seeds
        + budget.seeds * (1 + entrants.len())
        + 1;
    let mut bench = Bench {
        args,
        files: Layout::new(&args.out, &budget),
        budget,
        entrants,
        needs_reward_model,
        runner,
        progress: Progress::new(total),
    };
    bench.world()?;
    bench.reference()?;
    bench.reward_model()?;
    bench.train()?;
    let (results, reference_rewards) = bench.evaluate()?;
    bench.report(&results, &reference_rewards)
}

/// The trained policy of entrant `e` in `dir`, once its training has finished.
fn policy_of(e: &Entrant, dir: &Path, steps: usize) -> Option<PathBuf> {
    match e.kind {
        Kind::Pairs | Kind::OnPolicy => finished(dir, steps),
        // poc mpo names its models in its summary (the final one is the DPO model when nothing
        // was hard, the DPO model the starting one when nothing was easy).
        // A pipeline run with another budget (an earlier --steps) does not count.
        Kind::Mpo | Kind::MpoDpoStage => {
            let summary = jsonl::read(&dir.join("mpo.json"))?;
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
            model_dir(PathBuf::from(summary.get(key)?.as_str()?))
        }
    }
}

fn save_json(path: &Path, v: &Value) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::user(COMMAND, format!("cannot create `{}`: {e}", dir.display())))?;
    }
    write_atomic(path, v.to_string().as_bytes()).map_err(|e| Error::user(COMMAND, e))
}

/// A stored evaluation when it was made with the same `key` (model, seed, budget).
fn read_eval(path: &Path, key: &Value) -> Option<Value> {
    let v = jsonl::read(path)?;
    (v.get("key") == Some(key)).then_some(v)
}
