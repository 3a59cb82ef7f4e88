//! The alignment benchmark (`poc bench align`): reward–KL frontiers of preference objectives on
//! the synthetic world (docs/WORLD.md), as in the DPO paper's Figure 2, with the validity gates
//! and controls that make a comparison mean something (docs/ALIGN.md):
//!
//! 1. the world (v2: graded strata, on-policy pairs by default);
//! 2. a converged SFT reference, and its **gate**: per family its samples' r* must reach 0.85 of
//!    the SFT data's and fewer than 2% of them may leave the alphabet, else the benchmark stops
//!    with the table;
//! 3. a reward model for the PPO and MPO yardsticks, gated on accuracy against r*;
//! 4. every entrant (objective × β or γ or kl_coef × seed) trained for one epoch with
//!    checkpoints at 1/8, 1/4, 1/2 and 1 of the budget;
//! 5. every checkpoint evaluated on held-out prompts (r*, sampled KL, greedy r*, non-letter
//!    rate) and held-out pairs (log-prob changes, calibration against the true probability),
//!    kept per prompt so the report can cut by stratum; Best-of-N from the reference;
//! 6. the report: envelopes of r* against KL, their values at 1, 3 and 10 nats with intervals
//!    over seeds, per stratum; the validity gates (DPO must gain, Best-of-4 must beat the
//!    reference); each seed paper's claim with its control; plots.
//!
//! The world and training stages run as child `poc` commands ([`crate::stage`]: the same code
//! paths a user runs), `--jobs` of them side by side; evaluation runs in process. Each stage
//! is skipped when its output is already in `--out`, and an interrupted training continues
//! from its latest checkpoint, so an interrupted benchmark resumes.

mod analysis;
mod evaluate;
pub mod frontier;
mod progress;
mod report;
pub mod stats;

use crate::mpo::{MpoOptions, RewardModel};
use crate::stage::{
    Output, RunStage, Runner, Stage, StageError, finished, latest_checkpoint, model_dir,
};
use crate::world::{USELESS_SCORES_FILE, WorldOptions};
use crate::{Error, Result, jsonl, library};
use analysis::{Analysis, Point, Stored};
pub use evaluate::is_non_letter;
use evaluate::{Evaluator, evaluator_for};
use poc_compiler::Compiled;
use poc_runtime::data::world::{Candidates, WorldConfig};
use poc_runtime::model::load::write_atomic;
use progress::Progress;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The prefix of this command's messages.
const COMMAND: &str = "poc bench align";

/// The objectives compared when none are given.
pub const DEFAULT_OBJECTIVES: [&str; 4] = ["dpo", "mipo", "mallows_theta", "mmpo"];

/// The `beta` used for the implicit reward's probability when an objective has none.
pub const DEFAULT_BETA: f64 = 0.1;

/// Version of the evaluation records (a change re-evaluates stored checkpoints).
const EVAL_VERSION: u32 = 2;

/// Fractions of the training budget at which checkpoints are evaluated.
pub const CHECKPOINT_FRACTIONS: [usize; 4] = [1, 2, 4, 8]; // eighths

/// The largest N of Best-of-N.
pub const BEST_OF_MAX: usize = 16;

/// The file in a run directory where the benchmark keeps the training's wall-clock time.
const TIME_FILE: &str = "bench_time.json";

/// Where the training pairs come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairSource {
    /// Draws of the SFT process (what a converged reference samples): the default.
    OnPolicy,
    /// The trained reference's own samples (4 per training prompt), labelled by the world.
    Strict,
    /// World v1's off-policy near-misses: the stress world.
    NearMiss,
}

impl PairSource {
    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            PairSource::OnPolicy => "on-policy",
            PairSource::Strict => "strict",
            PairSource::NearMiss => "near-miss",
        }
    }

    /// The source named `name`.
    pub fn from_name(name: &str) -> Option<PairSource> {
        [
            PairSource::OnPolicy,
            PairSource::Strict,
            PairSource::NearMiss,
        ]
        .into_iter()
        .find(|p| p.name() == name)
    }
}

/// What to compare, with what budget, where. `None` budget fields take the defaults of the
/// full benchmark, or of `quick`.
#[derive(Debug, Clone, PartialEq)]
pub struct AlignOptions {
    /// Pairwise objectives to compare (paths or shipped names); empty: [`DEFAULT_OBJECTIVES`].
    pub objectives: Vec<String>,
    /// Training seeds per entrant.
    pub seeds: Option<usize>,
    /// Training pairs (one epoch of them is the budget of every pairwise entrant).
    pub pairs: Option<usize>,
    /// Optimizer steps of the SFT reference.
    pub sft_steps: Option<usize>,
    /// Optimizer steps of the reward model.
    pub reward_steps: Option<usize>,
    /// Rollout batches of every PPO entrant (MPO: half DPO steps, half rollout batches).
    pub ppo_steps: Option<usize>,
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
    /// Where the training pairs come from.
    pub pairs_from: PairSource,
    /// The full β grid (four values per objective) instead of three.
    pub full_grid: bool,
    /// Leave out the PPO and MPO yardsticks (the slowest entrants).
    pub no_ppo: bool,
    /// Training stages run side by side.
    pub jobs: usize,
    /// Output directory.
    pub out: PathBuf,
    /// A tiny budget, for tests and smoke runs: gates are reported, not enforced.
    pub quick: bool,
}

/// Compiles an entrant given as on the command line (a path or a shipped name); the caller's
/// error for anything else.
pub type Loader<'a> = &'a dyn Fn(&str) -> Result<Compiled>;

/// What a finished benchmark leaves for the user.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The report (Markdown), also in OUT/results.md.
    pub table: String,
    /// Wall-clock seconds of the whole benchmark.
    pub seconds: f64,
    /// The files written: results.md, frontier.png, strata.png.
    pub files: [PathBuf; 3],
}

/// The budget after defaults.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Budget {
    seeds: usize,
    pairs: usize,
    sft_rows: usize,
    sft_steps: usize,
    reward_steps: usize,
    ppo_steps: usize,
    eval_prompts: usize,
    heldout: usize,
    max_new_tokens: usize,
}

impl Budget {
    fn of(args: &AlignOptions) -> Budget {
        let b = if args.quick {
            Budget {
                seeds: 2,
                pairs: 64,
                sft_rows: 96,
                sft_steps: 16,
                reward_steps: 8,
                ppo_steps: 8,
                eval_prompts: 12,
                heldout: 24,
                max_new_tokens: 12,
            }
        } else {
            Budget {
                seeds: 3,
                pairs: 2400,
                sft_rows: 12_000,
                sft_steps: 5000,
                reward_steps: 600,
                ppo_steps: 96,
                eval_prompts: 300,
                heldout: 600,
                max_new_tokens: 14,
            }
        };
        Budget {
            seeds: args.seeds.unwrap_or(b.seeds),
            pairs: args.pairs.unwrap_or(b.pairs),
            sft_steps: args.sft_steps.unwrap_or(b.sft_steps),
            reward_steps: args.reward_steps.unwrap_or(b.reward_steps),
            ppo_steps: args.ppo_steps.unwrap_or(b.ppo_steps),
            eval_prompts: args.eval_prompts.unwrap_or(b.eval_prompts),
            max_new_tokens: args.max_new_tokens.unwrap_or(b.max_new_tokens),
            ..b
        }
    }

    /// One epoch of the pairs, rounded up to whole eighths (checkpoints at 1/8 ... 1).
    fn steps(&self, batch_size: usize) -> usize {
        let s = self.pairs.div_ceil(batch_size.max(1)).max(8);
        s.div_ceil(8) * 8
    }

    fn check(&self, args: &AlignOptions) -> Result<()> {
        let ones = [
            ("--seeds", self.seeds),
            ("--pairs", self.pairs),
            ("--sft-steps", self.sft_steps),
            ("--reward-steps", self.reward_steps),
            ("--ppo-steps", self.ppo_steps),
            ("--eval-prompts", self.eval_prompts),
            ("--max-new-tokens", self.max_new_tokens),
            ("--batch-size", args.batch_size),
            ("--jobs", args.jobs),
        ];
        if let Some((flag, _)) = ones.iter().find(|(_, v)| *v == 0) {
            return Err(Error::user(COMMAND, format!("{flag} must be at least 1")));
        }
        if self.ppo_steps < 2 && !args.no_ppo {
            return Err(Error::user(
                COMMAND,
                "--ppo-steps must be at least 2 (mpo takes half as DPO steps, half as PPO rollout batches)",
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
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// `poc run OBJ --data PAIRS`.
    Pairs {
        /// The training file under the world directory.
        data: String,
    },
    /// `poc run ppo --prompts world/train.jsonl` with the oracle (`--reward world`) or the
    /// reward model.
    Ppo { oracle: bool },
    /// `poc mpo --reward-model RM`, or with the oracle split and reward (`--reward world`).
    Mpo { oracle: bool },
}

/// One training configuration of the comparison (trained once per seed).
#[derive(Debug, Clone)]
struct Entrant {
    /// The envelope it belongs to (`dpo`, `mmpo (γ calibrated)`, `ppo (oracle r*)`, ...).
    group: String,
    /// Its setting within the group (`β=0.1`, `kl_coef=0.05`).
    setting: String,
    /// Directory name of its runs.
    id: String,
    /// The objective as `poc run` takes it.
    objective: String,
    /// `--set` overrides.
    sets: Vec<String>,
    /// β of σ(β·Δ), the implicit reward's probability.
    beta: f64,
    kind: Kind,
}

/// The β grid of a shipped objective: (parameter, small grid, full grid).
fn grid_of(name: &str) -> Option<(&'static str, &'static [f64], &'static [f64])> {
    const DPO: (&[f64], &[f64]) = (&[0.03, 0.1, 0.3], &[0.03, 0.1, 0.3, 1.0]);
    match name {
        "dpo" | "ipo" | "mallows_theta" | "mallows_dpo" | "sft_dpo" => Some(("beta", DPO.0, DPO.1)),
        "mipo" => Some(("beta", &[5.0, 10.0, 20.0], &[2.0, 5.0, 10.0, 20.0])),
        "mmpo" | "mmpo_calibrated" => Some(("beta", &[0.03, 0.1, 0.3], &[0.01, 0.03, 0.1, 0.3])),
        _ => None,
    }
}

/// The `beta` parameter's default, else [`DEFAULT_BETA`].
fn beta_of(c: &Compiled) -> f64 {
    c.objective
        .params
        .iter()
        .find(|p| p.name == "beta")
        .map_or(DEFAULT_BETA, |p| p.default)
}

/// MMPO with the world's calibrated γ: the per-pair column `calibrated_gamma` in place of the
/// global parameter (γ = 1 / ((9/4)·T) makes σ(γ·Δscore) the true label probability).
const MMPO_CALIBRATED: &str = "\
/// MMPO (Kim et al. 2024, \"Margin Matching Preference Optimization\", arXiv 2410.03145) with the
/// soft target's scale per pair instead of one global gamma: the synthetic world's column
/// calibrated_gamma = 1 / ((9/4) T), for which sigmoid(gamma * score gap) equals the true label
/// probability sigmoid(r* gap / T) when the scores are noise-free (written by poc bench align).
objective mmpo_calibrated

param beta = 0.01 in (0, inf)

input policy_chosen_logps
input policy_rejected_logps
input ref_chosen_logps
input ref_rejected_logps
input score_chosen
input score_rejected
input calibrated_gamma from column(\"calibrated_gamma\")

let rho_w = policy_chosen_logps - ref_chosen_logps
let rho_l = policy_rejected_logps - ref_rejected_logps
let p_star = sigmoid(calibrated_gamma * (score_chosen - score_rejected))
let h = beta * (rho_w - rho_l)

loss = -p_star * log_sigmoid(h) - (1 - p_star) * log_sigmoid(-h)

metric rewards/margins = beta * (rho_w - rho_l)
metric rewards/accuracies = rho_w > rho_l
metric logps/chosen = policy_chosen_logps
metric logps/rejected = policy_rejected_logps
metric target/p_star = p_star
";

/// Every entrant: the objectives' grids, the MMPO variants and control, the yardsticks.
fn entrants(
    names: &[String],
    args: &AlignOptions,
    mmpo_calibrated: &Path,
    load: Loader,
) -> Result<Vec<Entrant>> {
    let mut out: Vec<Entrant> = Vec::new();
    let train = "train.jsonl".to_string();
    let fmt = |v: f64| format!("{v}");
    for arg in names {
        let c = load(arg)?;
        let name = c.objective.name.clone();
        if out.iter().any(|e| e.group == name) || ["reference", "mpo"].contains(&name.as_str()) {
            return Err(Error::user(
                COMMAND,
                format!(
                    "`{arg}`: the objective name `{name}` is used twice (or is `reference` or `mpo`)"
                ),
            ));
        }
        if poc_runtime::train::is_on_policy(&c) {
            return Err(Error::user(
                COMMAND,
                format!(
                    "`{arg}` is on-policy: the benchmark runs ppo itself as a yardstick (with the oracle r* and with a reward model); give pairwise objectives"
                ),
            ));
        }
        let mut variants: Vec<(String, String, String, bool)> =
            vec![(name.clone(), arg.clone(), train.clone(), false)];
        if name == "mmpo" {
            // γ calibrated per family (and its control on useless scores) first; the shipped
            // global γ = 2.2 in the full grid.
            let cal = mmpo_calibrated.display().to_string();
            variants = vec![
                (
                    "mmpo (γ calibrated)".into(),
                    cal.clone(),
                    train.clone(),
                    false,
                ),
                (
                    "mmpo (γ calibrated, useless scores)".into(),
                    cal,
                    USELESS_SCORES_FILE.into(),
                    false,
                ),
            ];
            if args.full_grid {
                variants.push(("mmpo (γ 2.2)".into(), arg.clone(), train.clone(), false));
            }
        }
        for (group, objective, data, _) in variants {
            // --quick, and the MMPO control outside the full grid: the middle setting alone.
            let control = data == USELESS_SCORES_FILE && !args.full_grid;
            let grid = grid_of(&name).map(|(p, small, full)| {
                let values = if args.full_grid { full } else { small };
                (
                    p,
                    if args.quick || control {
                        &values[1..2]
                    } else {
                        values
                    },
                )
            });
            let settings: Vec<(String, Vec<String>, f64)> = match grid {
                Some((param, values)) => values
                    .iter()
                    .map(|&v| (format!("β={}", fmt(v)), vec![format!("{param}={v}")], v))
                    .collect(),
                None => {
                    // Someone's own objective: its `beta` scaled by 1/3, 1, 3, else its defaults.
                    let b = beta_of(&c);
                    if c.objective.params.iter().any(|p| p.name == "beta") {
                        [b / 3.0, b, b * 3.0]
                            .iter()
                            .map(|&v| (format!("β={v:.3}"), vec![format!("beta={v}")], v))
                            .collect()
                    } else {
                        vec![("defaults".into(), Vec::new(), b)]
                    }
                }
            };
            for (setting, sets, beta) in settings {
                out.push(Entrant {
                    id: slug(&format!("{group}_{setting}")),
                    group: group.clone(),
                    setting,
                    objective: objective.clone(),
                    sets,
                    beta,
                    kind: Kind::Pairs { data: data.clone() },
                });
            }
        }
    }
    // Yardsticks: SFT on the chosen answers (filtered behaviour cloning), PPO with the oracle
    // reward and with the learned one, MPO.
    out.push(Entrant {
        group: "sft on chosen".into(),
        setting: "lr".into(),
        id: "sft_chosen".into(),
        objective: "sft".into(),
        sets: Vec::new(),
        beta: DEFAULT_BETA,
        kind: Kind::Pairs { data: train },
    });
    if !args.no_ppo {
        let kls: &[f64] = if args.full_grid {
            &[0.02, 0.05, 0.1, 0.2]
        } else if args.quick {
            &[0.05]
        } else {
            &[0.05, 0.2]
        };
        for &k in kls {
            out.push(Entrant {
                group: "ppo (oracle r*)".into(),
                setting: format!("kl_coef={k}"),
                id: slug(&format!("ppo_oracle_kl{k}")),
                objective: "ppo".into(),
                sets: vec![format!("kl_coef={k}")],
                beta: DEFAULT_BETA,
                kind: Kind::Ppo { oracle: true },
            });
        }
        out.push(Entrant {
            group: "ppo (reward model)".into(),
            setting: "kl_coef=0.05".into(),
            id: "ppo_rm_kl0.05".into(),
            objective: "ppo".into(),
            sets: vec!["kl_coef=0.05".into()],
            beta: DEFAULT_BETA,
            kind: Kind::Ppo { oracle: false },
        });
        for (group, id, oracle) in [
            ("mpo", "mpo", false),
            ("mpo (oracle split)", "mpo_oracle", true),
        ] {
            out.push(Entrant {
                group: group.into(),
                setting: "δ=1".into(),
                id: id.into(),
                objective: "mpo".into(),
                sets: Vec::new(),
                beta: DEFAULT_BETA,
                kind: Kind::Mpo { oracle },
            });
        }
    }
    Ok(out)
}

/// A directory name: letters, digits, `.`, `_`, `-`; everything else `_`.
fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' => out.push(c),
            'β' => out.push('b'),
            'γ' => out.push('g'),
            _ => {
                if !out.ends_with('_') {
                    out.push('_');
                }
            }
        }
    }
    out.trim_matches('_').to_string()
}

/// Where everything lives under `--out`.
struct Layout {
    out: PathBuf,
    world: PathBuf,
    /// The reference's run directory.
    reference_run: PathBuf,
    /// The reference's final checkpoint.
    reference: PathBuf,
    /// The reward model's final checkpoint.
    reward_model: PathBuf,
}

impl Layout {
    fn new(out: &Path, budget: &Budget, args: &AlignOptions) -> Layout {
        // The world and reference depend on the world seed (and the pair source) alone, so a
        // second benchmark in the same directory reuses them.
        let base = out.join(format!("world{}", args.world_seed));
        let reference_run = base.join("reference");
        Layout {
            out: out.to_path_buf(),
            world: base.join(format!("world-{}", args.pairs_from.name())),
            reference: reference_run.join(format!("checkpoint-{}", budget.sft_steps)),
            reference_run,
            reward_model: base
                .join(format!("reward_model-{}", args.pairs_from.name()))
                .join(format!("checkpoint-{}", budget.reward_steps)),
        }
    }

    /// The world the reference is trained on (its SFT rows do not depend on the pairs).
    fn sft_world(&self) -> PathBuf {
        self.world
            .parent()
            .map_or_else(|| self.world.clone(), |p| p.join("world-on-policy"))
    }

    fn run_dir(&self, seed: usize, id: &str) -> PathBuf {
        self.out.join("runs").join(format!("seed{seed}")).join(id)
    }

    fn world_file(&self, name: &str) -> PathBuf {
        self.world.join(name)
    }
}

/// A benchmark under way.
struct Bench<'a> {
    args: &'a AlignOptions,
    budget: Budget,
    steps: usize,
    entrants: Vec<Entrant>,
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

/// A training job: what to run, where, and how to tell it is done.
struct Job {
    label: String,
    stage: Stage,
    dir: PathBuf,
}

impl Bench<'_> {
    /// Stage 1: the world (and, for another pair source, the on-policy world the reference
    /// learns from).
    fn world(&mut self) -> Result<()> {
        let mut dirs = vec![(self.files.sft_world(), Candidates::OnPolicy)];
        if self.args.pairs_from == PairSource::NearMiss {
            dirs.push((self.files.world.clone(), Candidates::NearMiss));
        }
        for (dir, candidates) in dirs {
            let stage = Stage::World(WorldOptions {
                out: dir.clone(),
                seed: self.args.world_seed,
                pairs: self.budget.pairs,
                heldout: self.budget.heldout,
                sft: self.budget.sft_rows,
                eval_prompts: self.budget.eval_prompts,
                candidates,
            });
            let done = dir.join("world.json").is_file();
            let what = format!("poc world --candidates {}", candidates.name());
            self.progress.stage("world", &what, done, || {
                child(self.runner, &stage, "poc world")
            })?;
        }
        Ok(())
    }

    /// Stage 2: the reference: SFT of the tiny model on the world's SFT rows, held-out NLL
    /// logged at every quarter.
    fn reference(&mut self) -> Result<()> {
        let (args, budget, files) = (self.args, &self.budget, &self.files);
        let sft = files.reference_run.join("sft.po");
        let sft_world = files.sft_world();
        let steps = budget.sft_steps;
        let resume = latest_checkpoint(&files.reference_run, steps)
            .ok()
            .flatten();
        let stage = Stage::Run(RunStage {
            data: Some(sft_world.join("sft.jsonl")),
            eval_data: Some(sft_world.join("sft_heldout.jsonl")),
            eval_every: (steps / 4).max(1),
            batch_size: 16,
            seed: args.world_seed,
            lr: Some(1e-3),
            save_every: (steps / 4).max(1),
            resume,
            no_progress: true,
            ..RunStage::new(
                sft.display().to_string(),
                files.reference_run.clone(),
                steps,
            )
        });
        let done = model_dir(files.reference.clone()).is_some();
        let what = format!("SFT of tiny, {steps} steps of 16 rows");
        self.progress.stage("reference", &what, done, || {
            let src = library::shipped("sft")
                .ok_or_else(|| Error::Internal("`sft` is not a shipped objective".into()))?;
            std::fs::create_dir_all(&files.reference_run).map_err(|e| Error::user(COMMAND, e))?;
            write_atomic(&sft, src.as_bytes()).map_err(|e| Error::user(COMMAND, e))?;
            child(self.runner, &stage, "poc run sft")
        })
    }

    /// The strict variant's pairs: the trained reference's own samples (4 per training
    /// prompt), labelled by the world's oracle.
    fn strict_pairs(&mut self, evaluator: &mut Option<Evaluator>) -> Result<()> {
        if self.args.pairs_from != PairSource::Strict {
            return Ok(());
        }
        let out = self.files.world_file("train.jsonl");
        let done = out.is_file();
        let (files, budget) = (&self.files, &self.budget);
        self.progress.stage(
            "pairs",
            "4 samples of the reference per training prompt, labelled by r*",
            done,
            || {
                let ev = evaluator_for(
                    evaluator,
                    &files.reference,
                    &files.sft_world().join("prompts.jsonl"),
                    &files.sft_world().join("heldout.jsonl"),
                    budget.max_new_tokens,
                )?;
                analysis::strict_pairs(ev, &files.sft_world(), &files.world, args_seed(self.args))
            },
        )
    }

    /// Stage 3: the reward model of the PPO and MPO yardsticks.
    fn reward_model(&mut self) -> Result<()> {
        if self.args.no_ppo {
            return Ok(());
        }
        let (args, budget, files) = (self.args, &self.budget, &self.files);
        let dir = files
            .reward_model
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let stage = Stage::Run(RunStage {
            model: files.reference.display().to_string(),
            data: Some(files.world_file("train.jsonl")),
            eval_data: Some(files.world_file("heldout.jsonl")),
            batch_size: args.batch_size,
            seed: args.world_seed,
            lr: Some(1e-4),
            no_progress: true,
            ..RunStage::new("bt_reward", dir, budget.reward_steps)
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
        let reference = files.reference.display().to_string();
        let (steps, save_every) = match e.kind {
            Kind::Ppo { .. } => (budget.ppo_steps, (budget.ppo_steps / 8).max(1)),
            _ => (self.steps, self.steps / 8),
        };
        let resume = latest_checkpoint(dir, steps).ok().flatten();
        let run = RunStage {
            model: reference.clone(),
            batch_size: args.batch_size,
            seed: seed as u64,
            lr: Some(args.lr),
            save_every,
            sets: e.sets.clone(),
            max_new_tokens: budget.max_new_tokens,
            resume,
            no_progress: true,
            ..RunStage::new(e.objective.clone(), dir.to_path_buf(), steps)
        };
        match &e.kind {
            Kind::Pairs { data } => Stage::Run(RunStage {
                data: Some(files.world_file(data)),
                ..run
            }),
            Kind::Ppo { oracle } => Stage::Run(RunStage {
                prompts: Some(files.world_file("train.jsonl")),
                world_reward: *oracle,
                reward_model: (!oracle).then(|| files.reward_model.clone()),
                ..run
            }),
            Kind::Mpo { oracle } => {
                let dpo_steps = (self.steps / 2).max(1);
                Stage::Mpo(MpoOptions {
                    data: Some(files.world_file("train.jsonl")),
                    reward: if *oracle {
                        RewardModel::World
                    } else {
                        RewardModel::Given(files.reward_model.clone())
                    },
                    dpo_steps,
                    ppo_steps: (budget.ppo_steps / 2).max(1),
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

    /// The checkpoints of entrant `e`'s run in `dir` that are evaluated: (fraction of the
    /// budget, step, directory); `None` until its training has finished.
    fn checkpoints(&self, e: &Entrant, dir: &Path) -> Option<Vec<(f64, usize, PathBuf)>> {
        match e.kind {
            Kind::Mpo { .. } => {
                let summary = jsonl::read(&dir.join("mpo.json"))?;
                let final_model = PathBuf::from(summary.get("final_model")?.as_str()?);
                Some(vec![(1.0, 0, model_dir(final_model)?)])
            }
            _ => {
                let steps = match e.kind {
                    Kind::Ppo { .. } => self.budget.ppo_steps,
                    _ => self.steps,
                };
                finished(dir, steps)?;
                let every = match e.kind {
                    Kind::Ppo { .. } => (steps / 8).max(1),
                    _ => steps / 8,
                };
                let mut out = Vec::new();
                for eighths in CHECKPOINT_FRACTIONS {
                    let step = if eighths == 8 { steps } else { every * eighths };
                    if let Some(d) = model_dir(dir.join(format!("checkpoint-{step}"))) {
                        out.push((eighths as f64 / 8.0, step, d));
                    }
                }
                Some(out)
            }
        }
    }

    /// Stage 4: every entrant's training runs, `--jobs` at a time, with their wall-clock time.
    fn train(&mut self) -> Result<()> {
        let mut jobs: Vec<Job> = Vec::new();
        for seed in 1..=self.budget.seeds {
            for e in &self.entrants {
                let dir = self.files.run_dir(seed, &e.id);
                let label = format!("{} {} seed {seed}", e.group, e.setting);
                if self.checkpoints(e, &dir).is_some() {
                    self.progress.skip("train", &label);
                    continue;
                }
                jobs.push(Job {
                    label,
                    stage: self.training_stage(e, seed, &dir),
                    dir,
                });
            }
        }
        let runner = self.runner;
        let progress = std::sync::Mutex::new(&mut self.progress);
        let queue = std::sync::Mutex::new(jobs.into_iter());
        let failure: std::sync::Mutex<Option<Error>> = std::sync::Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..self.args.jobs {
                scope.spawn(|| {
                    loop {
                        if failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                            return;
                        }
                        let Some(job) = queue.lock().ok().and_then(|mut q| q.next()) else {
                            return;
                        };
                        if let Ok(mut p) = progress.lock() {
                            p.begin("train", &job.label);
                        }
                        let t = Instant::now();
                        let result = child(runner, &job.stage, &job.label).and_then(|()| {
                            let time = json!({"train_seconds": t.elapsed().as_secs_f64()});
                            save_json(&job.dir.join(TIME_FILE), &time)
                        });
                        match result {
                            Ok(()) => {
                                if let Ok(mut p) = progress.lock() {
                                    p.finished(&job.label, t.elapsed().as_secs_f64());
                                }
                            }
                            Err(e) => {
                                if let Ok(mut f) = failure.lock() {
                                    f.get_or_insert(e);
                                }
                                return;
                            }
                        }
                    }
                });
            }
        });
        match failure.into_inner() {
            Ok(Some(e)) => Err(e),
            Ok(None) => Ok(()),
            Err(_) => Err(Error::Internal("a training thread panicked".into())),
        }
    }

    /// Stage 5: evaluation of the reference, Best-of-N and every checkpoint, cached per key;
    /// `--jobs` evaluations side by side (the evaluator is shared, read-only).
    fn evaluate(&mut self, evaluator: &mut Option<Evaluator>) -> Result<Vec<Point>> {
        let budget = self.budget.clone();
        let eval_dir = self.files.out.join("eval");
        let reference = self.files.reference.clone();
        let key = |model: &str, seed: usize| {
            json!({"model": model, "seed": seed, "prompts": budget.eval_prompts,
                "max_new_tokens": budget.max_new_tokens, "version": EVAL_VERSION})
        };
        let mut tasks: Vec<EvalTask> = Vec::new();
        for seed in 1..=budget.seeds {
            let dir = eval_dir.join(format!("seed{seed}"));
            tasks.push(EvalTask {
                file: dir.join("reference.json"),
                what: format!("reference seed {seed}"),
                key: key(&reference.display().to_string(), seed),
                seed,
                work: Work::Reference,
                point: (
                    REFERENCE_GROUP.into(),
                    String::new(),
                    0.0,
                    DEFAULT_BETA,
                    f64::NAN,
                ),
            });
            tasks.push(EvalTask {
                file: dir.join("best_of_n.json"),
                what: format!("best-of-{BEST_OF_MAX} samples of the reference seed {seed}"),
                key: key(&format!("best-of-{BEST_OF_MAX}"), seed),
                seed,
                work: Work::BestOf,
                point: (String::new(), String::new(), 0.0, f64::NAN, f64::NAN),
            });
            for e in &self.entrants {
                let run = self.files.run_dir(seed, &e.id);
                let checkpoints = self.checkpoints(e, &run).ok_or_else(|| {
                    Error::Internal(format!("no trained model in `{}`", run.display()))
                })?;
                let seconds = jsonl::read(&run.join(TIME_FILE))
                    .and_then(|v| v.get("train_seconds").and_then(Value::as_f64))
                    .unwrap_or(f64::NAN);
                for (fraction, step, ck) in checkpoints {
                    let t = if fraction == 1.0 { seconds } else { f64::NAN };
                    tasks.push(EvalTask {
                        file: dir.join(format!("{}-{step}.json", e.id)),
                        what: format!("{} {} seed {seed} step {step}", e.group, e.setting),
                        key: key(&ck.display().to_string(), seed),
                        seed,
                        point: (e.group.clone(), e.setting.clone(), fraction, e.beta, t),
                        work: Work::Checkpoint(ck),
                    });
                }
            }
        }
        let mut values: Vec<Option<Value>> = Vec::with_capacity(tasks.len());
        for t in &tasks {
            let v = read_eval(&t.file, &t.key);
            if v.is_some() {
                self.progress.skip("evaluate", &t.what);
            }
            values.push(v);
        }
        let pending: Vec<usize> = (0..tasks.len()).filter(|&i| values[i].is_none()).collect();
        if !pending.is_empty() {
            let ev = evaluator_for(
                evaluator,
                &reference,
                &self.files.world_file("prompts.jsonl"),
                &self.files.world_file("heldout.jsonl"),
                budget.max_new_tokens,
            )?;
            let progress = std::sync::Mutex::new(&mut self.progress);
            let queue = std::sync::Mutex::new(pending.into_iter());
            let results = std::sync::Mutex::new(&mut values);
            let failure: std::sync::Mutex<Option<Error>> = std::sync::Mutex::new(None);
            std::thread::scope(|scope| {
                for _ in 0..self.args.jobs {
                    scope.spawn(|| {
                        loop {
                            if failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                                return;
                            }
                            let Some(i) = queue.lock().ok().and_then(|mut q| q.next()) else {
                                return;
                            };
                            let t = &tasks[i];
                            if let Ok(mut p) = progress.lock() {
                                p.begin("evaluate", &t.what);
                            }
                            let started = Instant::now();
                            let seed = t.seed as u64;
                            let v = match &t.work {
                                Work::Reference => ev.evaluate(None, seed, &t.key),
                                Work::BestOf => ev.best_of(seed, BEST_OF_MAX, &t.key),
                                Work::Checkpoint(ck) => ev.evaluate(Some(ck), seed, &t.key),
                            }
                            .and_then(|v| save_json(&t.file, &v).map(|()| v));
                            match v {
                                Ok(v) => {
                                    if let Ok(mut r) = results.lock() {
                                        r[i] = Some(v);
                                    }
                                    if let Ok(mut p) = progress.lock() {
                                        p.finished(&t.what, started.elapsed().as_secs_f64());
                                    }
                                }
                                Err(e) => {
                                    if let Ok(mut f) = failure.lock() {
                                        f.get_or_insert(e);
                                    }
                                    return;
                                }
                            }
                        }
                    });
                }
            });
            match failure.into_inner() {
                Ok(Some(e)) => return Err(e),
                Ok(None) => {}
                Err(_) => return Err(Error::Internal("an evaluation thread panicked".into())),
            }
        }
        let mut points = Vec::new();
        for (t, v) in tasks.iter().zip(values) {
            let v = v.ok_or_else(|| Error::Internal(format!("`{}` was not evaluated", t.what)))?;
            match t.work {
                Work::BestOf => points.extend(Point::best_of_n(&v, t.seed, BEST_OF_MAX)),
                _ => {
                    let (group, setting, fraction, beta, seconds) = &t.point;
                    points.push(Point::new(
                        group, setting, t.seed, *fraction, *beta, v, *seconds,
                    ));
                }
            }
        }
        Ok(points)
    }
}

/// The group name of the reference's points.
const REFERENCE_GROUP: &str = analysis::REFERENCE;

/// What one evaluation computes.
enum Work {
    Reference,
    BestOf,
    Checkpoint(PathBuf),
}

/// One evaluation: where it is stored, under which key, and the point it becomes
/// (group, setting, fraction of the budget, β, training seconds).
struct EvalTask {
    file: PathBuf,
    what: String,
    key: Value,
    seed: usize,
    work: Work,
    point: (String, String, f64, f64, f64),
}

fn args_seed(args: &AlignOptions) -> u64 {
    args.world_seed
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
    let calibrated = args.out.join("objectives").join("mmpo_calibrated.po");
    // Every entrant is checked before anything is written.
    let entrants = entrants(&names, args, &calibrated, load)?;
    if let Some(dir) = calibrated.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::user(COMMAND, format!("cannot create `{}`: {e}", dir.display())))?;
    }
    write_atomic(&calibrated, MMPO_CALIBRATED.as_bytes()).map_err(|e| Error::user(COMMAND, e))?;
    let steps = budget.steps(args.batch_size);
    let files = Layout::new(&args.out, &budget, args);
    let evals: usize = entrants
        .iter()
        .map(|e| {
            if matches!(e.kind, Kind::Mpo { .. }) {
                1
            } else {
                4
            }
        })
        .sum();
    let total = 2
        + usize::from(args.pairs_from != PairSource::OnPolicy)
        + usize::from(!args.no_ppo)
        + entrants.len() * budget.seeds
        + budget.seeds * (2 + evals);
    // The tiny model's kernels are too small for two intra-op threads to pay: one thread per
    // child, and `--jobs` children side by side, is several times faster on two cores.
    let runner = &runner.clone().with_threads(1);
    poc_runtime::device::set_cpu_threads(1);
    let mut bench = Bench {
        args,
        files,
        budget,
        steps,
        entrants,
        runner,
        progress: Progress::new(total),
    };
    let mut evaluator: Option<Evaluator> = None;
    bench.world()?;
    bench.reference()?;
    // The reference gate comes before anything is trained on it.
    let gate = {
        let files = &bench.files;
        let ev = evaluator_for(
            &mut evaluator,
            &files.reference,
            &files.sft_world().join("prompts.jsonl"),
            &files.sft_world().join("heldout.jsonl"),
            bench.budget.max_new_tokens,
        )?;
        analysis::reference_gate(
            ev,
            &files.reference,
            &files.sft_world(),
            &files.reference_run,
        )?
    };
    eprintln!("{}", gate.table());
    if !gate.passed() && !args.quick {
        let text = report::gate_failure(&gate, &bench.budget);
        write_atomic(&args.out.join("results.md"), text.as_bytes())
            .map_err(|e| Error::user(COMMAND, e))?;
        return Err(Error::user(COMMAND, text));
    }
    bench.strict_pairs(&mut evaluator)?;
    // The evaluator reads the pairs' world's held-out files: reload it for another world.
    if args.pairs_from != PairSource::OnPolicy {
        evaluator = None;
    }
    bench.reward_model()?;
    bench.train()?;
    let points = bench.evaluate(&mut evaluator)?;
    let reward_gate = if args.no_ppo {
        None
    } else {
        let ev = evaluator_for(
            &mut evaluator,
            &bench.files.reference,
            &bench.files.world_file("prompts.jsonl"),
            &bench.files.world_file("heldout.jsonl"),
            bench.budget.max_new_tokens,
        )?;
        Some(analysis::reward_model_gate(ev, &bench.files.reward_model)?)
    };
    let families = WorldConfig::new(args.world_seed).families;
    let analysis = Analysis::new(points, &families);
    bench
        .progress
        .begin("report", "results.md, frontier.png, strata.png");
    let out = &bench.files.out;
    let files = [
        out.join("results.md"),
        out.join("frontier.png"),
        out.join("strata.png"),
    ];
    let stored = Stored {
        gate: &gate,
        reward_gate: reward_gate.as_ref(),
        budget: &bench.budget,
        steps,
        args,
    };
    let table = report::markdown(&analysis, &stored);
    write_atomic(&files[0], table.as_bytes()).map_err(|e| Error::user(COMMAND, e))?;
    report::frontier_plot(&files[1], &analysis)?;
    report::strata_plot(&files[2], &analysis)?;
    bench.progress.end();
    Ok(Summary {
        table,
        seconds: bench.progress.started.elapsed().as_secs_f64(),
        files,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_directory_names() {
        assert_eq!(slug("dpo_β=0.1"), "dpo_b_0.1");
        assert_eq!(
            slug("mmpo (γ calibrated)_β=0.03"),
            "mmpo_g_calibrated_b_0.03"
        );
    }

    #[test]
    fn one_epoch_in_whole_eighths() {
        let b = Budget::of(&AlignOptions {
            objectives: Vec::new(),
            seeds: None,
            pairs: Some(2400),
            sft_steps: None,
            reward_steps: None,
            ppo_steps: None,
            world_seed: 1,
            eval_prompts: None,
            max_new_tokens: None,
            batch_size: 8,
            lr: 1e-4,
            pairs_from: PairSource::OnPolicy,
            full_grid: false,
            no_ppo: false,
            jobs: 1,
            out: PathBuf::from("x"),
            quick: false,
        });
        assert_eq!(b.steps(8), 304);
        assert_eq!(b.steps(16), 152);
        assert_eq!(b.steps(10_000), 8);
    }
}
