//! What the evaluations say: evaluated points cut by stratum, envelopes over seeds, the
//! reference's gate and the reward model's, and the strict variant's pairs.

use super::evaluate::{Evaluator, numbers};
use super::frontier::{
    Stratum, best_of_n_kl, ece_against_truth, envelope_at, operating_point, stratum_mean,
};
use super::stats::mean;
use super::{AlignOptions, Budget, COMMAND, save_json};
use crate::world::USELESS_SCORES_FILE;
use crate::{Error, Result, jsonl};
use poc_runtime::data::world::{
    Family, Role, USELESS_SCORE_NOISE, World, WorldConfig, sigmoid, to_jsonl,
};
use poc_runtime::model::load::write_atomic;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::Path;

/// The group name of Best-of-N points.
pub const BEST_OF_N: &str = "best-of-N";
/// The group name of the reference's points.
pub const REFERENCE: &str = "reference";

/// One evaluated policy (a checkpoint of an entrant's run, the reference, or Best-of-N).
#[derive(Debug, Clone)]
pub struct Point {
    /// The envelope it belongs to.
    pub group: String,
    /// Its setting within the group (`β=0.1`).
    pub setting: String,
    /// The training (and sampling) seed.
    pub seed: usize,
    /// The fraction of the training budget (0 for the reference and Best-of-N).
    pub fraction: f64,
    /// β of the implicit reward σ(β·Δ).
    pub beta: f64,
    /// Per evaluation prompt: family, r* of the sample, log π − log π_ref of the sample,
    /// greedy r*, 1 when the sample left the alphabet.
    pub family: Vec<f64>,
    pub rewards: Vec<f64>,
    pub kl: Vec<f64>,
    pub greedy: Vec<f64>,
    pub non_letter: Vec<f64>,
    /// Per held-out pair: family, Δ log π of chosen and rejected against the reference, true
    /// gap, true probability that chosen is preferred.
    pub pair_family: Vec<f64>,
    pub d_chosen: Vec<f64>,
    pub d_rejected: Vec<f64>,
    pub pair_gap: Vec<f64>,
    pub pair_bt: Vec<f64>,
    /// Wall-clock seconds of the training (final checkpoints only; NaN otherwise).
    pub train_seconds: f64,
}

/// A point's numbers on one stratum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cut {
    pub reward: f64,
    pub kl: f64,
    pub greedy: f64,
    pub non_letter: f64,
    pub d_chosen: f64,
    pub d_rejected: f64,
    /// Calibration error of σ(β·Δ) against the true probability.
    pub ece: f64,
    /// Accuracy of the implicit reward's order against r* on pairs with 0 < |gap| < 0.5.
    pub tie_accuracy: f64,
}

impl Point {
    /// A point of an evaluation record (`Evaluator::evaluate`).
    pub fn new(
        group: &str,
        setting: &str,
        seed: usize,
        fraction: f64,
        beta: f64,
        v: Value,
        train_seconds: f64,
    ) -> Point {
        Point {
            group: group.into(),
            setting: setting.into(),
            seed,
            fraction,
            beta,
            family: numbers(&v, "family"),
            rewards: numbers(&v, "rewards"),
            kl: numbers(&v, "kl"),
            greedy: numbers(&v, "greedy_rewards"),
            non_letter: numbers(&v, "non_letter"),
            pair_family: numbers(&v, "pair_family"),
            d_chosen: numbers(&v, "d_chosen"),
            d_rejected: numbers(&v, "d_rejected"),
            pair_gap: numbers(&v, "pair_gap"),
            pair_bt: numbers(&v, "pair_bt_prob"),
            train_seconds,
        }
    }

    /// Best-of-N for N = 1, 2, 4, ... ≤ `n_max` from a record of `Evaluator::best_of`: the best
    /// r* of the first N draws per prompt, at KL log N − (N−1)/N.
    pub fn best_of_n(v: &Value, seed: usize, n_max: usize) -> Vec<Point> {
        let family = numbers(v, "family");
        let draws: Vec<Vec<f64>> = v
            .get("draws")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|d| {
                        d.as_array()
                            .map(|x| x.iter().map(|y| y.as_f64().unwrap_or(f64::NAN)).collect())
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut out = Vec::new();
        let mut n = 1;
        while n <= n_max.min(draws.len()) {
            let best: Vec<f64> = (0..family.len())
                .map(|i| {
                    draws[..n]
                        .iter()
                        .filter_map(|d| d.get(i).copied())
                        .fold(f64::NEG_INFINITY, f64::max)
                })
                .collect();
            out.push(Point {
                group: BEST_OF_N.into(),
                setting: format!("N={n}"),
                seed,
                fraction: 0.0,
                beta: f64::NAN,
                kl: vec![best_of_n_kl(n); family.len()],
                greedy: vec![f64::NAN; family.len()],
                non_letter: vec![f64::NAN; family.len()],
                family: family.clone(),
                rewards: best,
                pair_family: Vec::new(),
                d_chosen: Vec::new(),
                d_rejected: Vec::new(),
                pair_gap: Vec::new(),
                pair_bt: Vec::new(),
                train_seconds: f64::NAN,
            });
            n *= 2;
        }
        out
    }

    /// The point's numbers on stratum `s`.
    pub fn cut(&self, s: &Stratum) -> Cut {
        let on = |xs: &[f64]| stratum_mean(xs, &self.family, s);
        let pairs: Vec<usize> = (0..self.pair_family.len())
            .filter(|&i| s.has(self.pair_family[i]))
            .collect();
        let margin = |i: usize| self.d_chosen[i] - self.d_rejected[i];
        let probs: Vec<f64> = pairs
            .iter()
            .map(|&i| sigmoid(self.beta * margin(i)))
            .collect();
        let truth: Vec<f64> = pairs.iter().map(|&i| self.pair_bt[i]).collect();
        let ties: Vec<f64> = pairs
            .iter()
            .filter(|&&i| self.pair_gap[i] != 0.0 && self.pair_gap[i].abs() < 0.5)
            .map(|&i| {
                let m = margin(i);
                if m == 0.0 {
                    0.5
                } else {
                    f64::from(u8::from((m > 0.0) == (self.pair_gap[i] > 0.0)))
                }
            })
            .collect();
        let pair_mean = |xs: &[f64]| {
            let v: Vec<f64> = pairs
                .iter()
                .map(|&i| xs[i])
                .filter(|x| x.is_finite())
                .collect();
            if v.is_empty() { f64::NAN } else { mean(&v) }
        };
        Cut {
            reward: on(&self.rewards),
            kl: on(&self.kl),
            greedy: on(&self.greedy),
            non_letter: on(&self.non_letter),
            d_chosen: pair_mean(&self.d_chosen),
            d_rejected: pair_mean(&self.d_rejected),
            ece: ece_against_truth(&probs, &truth, 10),
            tie_accuracy: if ties.is_empty() {
                f64::NAN
            } else {
                mean(&ties)
            },
        }
    }
}

/// The strata of a world's families: all, the mechanism strata (by q, by dispersion, the
/// decoupled control, the hard family) and each family.
pub fn strata(families: &[Family]) -> Vec<Stratum> {
    let ids = |keep: &dyn Fn(&Family) -> bool| -> Vec<usize> {
        families
            .iter()
            .enumerate()
            .filter(|(_, f)| keep(f))
            .map(|(i, _)| i)
            .collect()
    };
    let mut out = vec![
        Stratum {
            name: "all".into(),
            families: (0..families.len()).collect(),
        },
        Stratum {
            name: "high q".into(),
            families: ids(&|f| f.role != Role::Hard && f.q >= 0.5),
        },
        Stratum {
            name: "low q".into(),
            families: ids(&|f| f.role == Role::Misaligned),
        },
        Stratum {
            name: "low dispersion".into(),
            families: ids(&|f| {
                f.role != Role::Decoupled && f.role != Role::Hard && f.temperature < 1.0
            }),
        },
        Stratum {
            name: "high dispersion".into(),
            families: ids(&|f| f.role != Role::Decoupled && f.temperature >= 1.0),
        },
        Stratum {
            name: "decoupled".into(),
            families: ids(&|f| f.role == Role::Decoupled),
        },
        Stratum {
            name: "hard".into(),
            families: ids(&|f| f.role == Role::Hard),
        },
    ];
    out.retain(|s| !s.families.is_empty());
    for (i, f) in families.iter().enumerate() {
        out.push(Stratum {
            name: format!("f{i} {} ({})", f.task.name(), f.role.name()),
            families: vec![i],
        });
    }
    out
}

/// All points of a benchmark, with its strata.
pub struct Analysis {
    pub points: Vec<Point>,
    pub strata: Vec<Stratum>,
    /// Entrant groups in order of appearance (the reference excluded).
    pub groups: Vec<String>,
    pub seeds: Vec<usize>,
}

impl Analysis {
    /// The analysis of `points` on the strata of `families`.
    pub fn new(points: Vec<Point>, families: &[Family]) -> Analysis {
        let mut groups: Vec<String> = Vec::new();
        let mut seeds: Vec<usize> = Vec::new();
        for p in &points {
            if p.group != REFERENCE && !groups.contains(&p.group) {
                groups.push(p.group.clone());
            }
            if !seeds.contains(&p.seed) {
                seeds.push(p.seed);
            }
        }
        Analysis {
            points,
            strata: strata(families),
            groups,
            seeds,
        }
    }

    /// The stratum named `name`.
    pub fn stratum(&self, name: &str) -> Option<&Stratum> {
        self.strata.iter().find(|s| s.name == name)
    }

    /// The reference's point of `seed`.
    pub fn reference(&self, seed: usize) -> Option<&Point> {
        self.points
            .iter()
            .find(|p| p.group == REFERENCE && p.seed == seed)
    }

    /// The points of `group` with `seed`.
    pub fn of(&self, group: &str, seed: usize) -> Vec<&Point> {
        self.points
            .iter()
            .filter(|p| p.group == group && p.seed == seed)
            .collect()
    }

    /// Whether `group` has points.
    pub fn has(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// (KL, r*) on stratum `s` of `group`'s points of `seed`, the reference's first.
    fn frontier(&self, group: &str, seed: usize, s: &Stratum) -> Vec<(f64, f64)> {
        let mut v: Vec<(f64, f64)> = self
            .reference(seed)
            .map(|r| {
                let c = r.cut(s);
                vec![(0.0, c.reward)]
            })
            .unwrap_or_default();
        v.extend(self.of(group, seed).iter().map(|p| {
            let c = p.cut(s);
            (c.kl, c.reward)
        }));
        v
    }

    /// Per seed: `group`'s envelope on stratum `s` at `budget` nats (stratum KL).
    pub fn envelope(&self, group: &str, s: &Stratum, budget: f64) -> Vec<f64> {
        self.seeds
            .iter()
            .map(|&seed| envelope_at(&self.frontier(group, seed, s), budget))
            .collect()
    }

    /// Per seed: `group`'s envelope on stratum `s` at `budget` minus the reference's r* there.
    pub fn gain(&self, group: &str, s: &Stratum, budget: f64) -> Vec<f64> {
        self.seeds
            .iter()
            .map(|&seed| {
                let f = self.frontier(group, seed, s);
                envelope_at(&f, budget) - f.first().map_or(f64::NAN, |p| p.1)
            })
            .collect()
    }

    /// Per seed: the operating point of `group` — its best point by overall r* within
    /// `budget` nats of overall KL (the reference when none is).
    pub fn operating(&self, group: &str, budget: f64) -> Vec<Option<&Point>> {
        let all = &self.strata[0];
        self.seeds
            .iter()
            .map(|&seed| {
                let pts = self.of(group, seed);
                let f: Vec<(f64, f64)> = pts
                    .iter()
                    .map(|p| {
                        let c = p.cut(all);
                        (c.kl, c.reward)
                    })
                    .collect();
                operating_point(&f, budget).map(|i| pts[i])
            })
            .collect()
    }

    /// Per seed: `f` of `group`'s operating point (at `budget`) on stratum `s`.
    pub fn at_operating(
        &self,
        group: &str,
        budget: f64,
        s: &Stratum,
        f: fn(&Cut) -> f64,
    ) -> Vec<f64> {
        self.operating(group, budget)
            .into_iter()
            .map(|p| p.map_or(f64::NAN, |p| f(&p.cut(s))))
            .collect()
    }

    /// Per seed: over-optimisation of `group` on stratum `s`: the best r* over its checkpoints
    /// minus the final checkpoint's, for its setting `setting`.
    pub fn overoptimisation(&self, group: &str, setting: &str, s: &Stratum) -> Vec<f64> {
        self.seeds
            .iter()
            .map(|&seed| {
                let pts: Vec<&Point> = self
                    .of(group, seed)
                    .into_iter()
                    .filter(|p| p.setting == setting)
                    .collect();
                let best = pts.iter().map(|p| p.cut(s).reward).fold(f64::NAN, f64::max);
                let last = pts
                    .iter()
                    .find(|p| p.fraction == 1.0)
                    .map_or(f64::NAN, |p| p.cut(s).reward);
                best - last
            })
            .collect()
    }

    /// The settings of `group` (in order of appearance).
    pub fn settings(&self, group: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in self.points.iter().filter(|p| p.group == group) {
            if !out.contains(&p.setting) {
                out.push(p.setting.clone());
            }
        }
        out
    }
}

/// One family's line of the reference gate.
#[derive(Debug, Clone)]
pub struct GateRow {
    pub name: String,
    pub sft_reward: f64,
    pub reference_reward: f64,
    pub non_letter: f64,
    /// Samples of the family behind the numbers.
    pub samples: usize,
}

/// The reference gate: its samples' r* per family against the SFT data's, and how many left
/// the alphabet; with its held-out NLL along the training.
#[derive(Debug, Clone)]
pub struct Gate {
    pub rows: Vec<GateRow>,
    /// (step, held-out NLL per token) of the reference's training.
    pub nll: Vec<(usize, f64)>,
}

/// The reference must reach this share of the SFT data's r* on every family.
pub const GATE_SHARE: f64 = 0.85;
/// The most samples of the reference per family that may leave the alphabet.
pub const GATE_NON_LETTER: f64 = 0.02;
/// Sampling passes over the evaluation prompts for the gate.
const GATE_PASSES: u64 = 4;

impl GateRow {
    /// Whether the family passes.
    pub fn passed(&self) -> bool {
        self.reference_reward >= GATE_SHARE * self.sft_reward && self.non_letter < GATE_NON_LETTER
    }
}

impl Gate {
    /// Whether every family passes.
    pub fn passed(&self) -> bool {
        !self.rows.is_empty() && self.rows.iter().all(GateRow::passed)
    }

    /// The per-family table (Markdown).
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "| family | SFT data r* | reference samples r* | share | non-letter samples | samples | gate |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---|");
        for r in &self.rows {
            let _ = writeln!(
                s,
                "| {} | {:.2} | {:.2} | {:.2} | {:.1}% | {} | {} |",
                r.name,
                r.sft_reward,
                r.reference_reward,
                r.reference_reward / r.sft_reward,
                100.0 * r.non_letter,
                r.samples,
                if r.passed() { "pass" } else { "FAIL" }
            );
        }
        if !self.nll.is_empty() {
            let curve: Vec<String> = self
                .nll
                .iter()
                .map(|(step, nll)| format!("{nll:.3} (step {step})"))
                .collect();
            let _ = writeln!(
                s,
                "\nHeld-out NLL per token of the reference along its training: {}.",
                curve.join(", ")
            );
        }
        s
    }
}

/// Mean `true_reward` per family of an sft.jsonl.
fn sft_rewards(path: &Path, families: usize) -> Result<Vec<f64>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::user(COMMAND, format!("cannot read `{}`: {e}", path.display())))?;
    let mut sums = vec![(0.0, 0usize); families];
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let (Some(f), Some(r)) = (
            v.get("family").and_then(Value::as_u64),
            v.get("true_reward").and_then(Value::as_f64),
        ) else {
            continue;
        };
        if let Some(s) = sums.get_mut(f as usize) {
            s.0 += r;
            s.1 += 1;
        }
    }
    Ok(sums
        .iter()
        .map(|(s, n)| if *n == 0 { f64::NAN } else { s / *n as f64 })
        .collect())
}

/// The reference gate of the reference `ev` holds, against the SFT data in `sft_world`; cached
/// in the reference's run directory.
pub fn reference_gate(
    ev: &Evaluator,
    reference: &Path,
    sft_world: &Path,
    reference_run: &Path,
) -> Result<Gate> {
    let families = WorldConfig::new(1).families;
    let sft = sft_rewards(&sft_world.join("sft.jsonl"), families.len())?;
    let cache = reference_run.join("gate.json");
    let key = json!({"model": reference.display().to_string(), "prompts": ev.prompts().len(),
        "passes": GATE_PASSES, "max_new_tokens": ev.max_new_tokens()});
    let samples = match jsonl::read(&cache).filter(|v| v.get("key") == Some(&key)) {
        Some(v) => v,
        None => {
            let mut rewards = Vec::new();
            let mut non_letter = Vec::new();
            let mut family = Vec::new();
            for pass in 0..GATE_PASSES {
                let s = ev.sample(&ev.reference, 7_000 + pass, 1.0)?;
                rewards.extend(s.rewards);
                non_letter.extend(
                    s.completions
                        .iter()
                        .map(|c| f64::from(u8::from(super::is_non_letter(c)))),
                );
                family.extend(ev.prompts().iter().map(|p| p.family as f64));
            }
            let v =
                json!({"key": key, "rewards": rewards, "non_letter": non_letter, "family": family});
            save_json(&cache, &v)?;
            v
        }
    };
    let (rewards, non_letter, family) = (
        numbers(&samples, "rewards"),
        numbers(&samples, "non_letter"),
        numbers(&samples, "family"),
    );
    let rows = families
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let s = Stratum {
                name: String::new(),
                families: vec![i],
            };
            GateRow {
                name: format!("f{i} {} ({}, q {})", f.task.name(), f.role.name(), f.q),
                sft_reward: sft[i],
                reference_reward: stratum_mean(&rewards, &family, &s),
                non_letter: stratum_mean(&non_letter, &family, &s),
                samples: family.iter().filter(|&&x| s.has(x)).count(),
            }
        })
        .collect();
    Ok(Gate {
        rows,
        nll: eval_losses(&reference_run.join("metrics.jsonl")),
    })
}

/// (step, eval/loss) of every evaluation in a run's metrics.jsonl.
fn eval_losses(metrics: &Path) -> Vec<(usize, f64)> {
    let Ok(text) = std::fs::read_to_string(metrics) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            let loss = v.get("metrics")?.get("eval/loss")?.as_f64()?;
            Some((v.get("step")?.as_u64()? as usize, loss))
        })
        .collect()
}

/// The reward model's accuracy against r* on the held-out pairs, next to the best any model
/// can reach against the labels.
#[derive(Debug, Clone)]
pub struct RewardGate {
    /// Fraction of held-out pairs untied in r* that the reward model orders as r* does.
    pub accuracy: f64,
    /// Its accuracy against the held-out labels.
    pub label_accuracy: f64,
    /// The Bayes ceiling against the labels: mean of max(p, 1 − p) of the true probability.
    pub label_ceiling: f64,
}

/// The reward model must order this share of held-out pairs as r* does.
pub const REWARD_GATE: f64 = 0.8;

impl RewardGate {
    /// Whether the reward model passes.
    pub fn passed(&self) -> bool {
        self.accuracy >= REWARD_GATE
    }
}

/// The reward gate of the reward model at `dir`.
pub fn reward_model_gate(ev: &Evaluator, dir: &Path) -> Result<RewardGate> {
    let (scores, gaps, bt) = ev.reward_scores(dir)?;
    let mut right = 0.0;
    let mut untied = 0usize;
    let mut label_right = 0.0;
    for ((c, r), g) in scores.iter().zip(&gaps) {
        let agree = |positive: bool| {
            if c == r {
                0.5
            } else if (c > r) == positive {
                1.0
            } else {
                0.0
            }
        };
        label_right += agree(true);
        if *g != 0.0 && g.is_finite() {
            untied += 1;
            right += agree(*g > 0.0);
        }
    }
    let ceiling: Vec<f64> = bt
        .iter()
        .filter(|p| p.is_finite())
        .map(|p| p.max(1.0 - p))
        .collect();
    Ok(RewardGate {
        accuracy: right / untied.max(1) as f64,
        label_accuracy: label_right / scores.len().max(1) as f64,
        label_ceiling: if ceiling.is_empty() {
            f64::NAN
        } else {
            mean(&ceiling)
        },
    })
}

/// The strict variant's training pairs: 4 samples of the reference for each prompt of the
/// on-policy world's train.jsonl, labelled by the world's oracle, into `world`
/// (train.jsonl, the useless-score copy, and the on-policy world's evaluation files).
pub fn strict_pairs(ev: &Evaluator, sft_world: &Path, world: &Path, seed: u64) -> Result<()> {
    let text = std::fs::read_to_string(sft_world.join("train.jsonl"))
        .map_err(|e| Error::user(COMMAND, e))?;
    let mut prompts: Vec<String> = Vec::new();
    for line in text.lines() {
        if let Some(p) = serde_json::from_str::<Value>(line)
            .ok()
            .and_then(|v| v.get("prompt").and_then(Value::as_str).map(str::to_string))
            && prompts.last() != Some(&p)
            && !prompts.contains(&p)
        {
            prompts.push(p);
        }
    }
    let mut rows: Vec<(String, String)> = Vec::new();
    for k in 0..4u64 {
        let completions = ev.sample_texts(&prompts, 9_000 + k)?;
        rows.extend(prompts.iter().cloned().zip(completions));
    }
    // Group each prompt's four samples together (the labeller pairs within a prompt).
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    std::fs::create_dir_all(world).map_err(|e| Error::user(COMMAND, e))?;
    for (file, noise) in [
        (
            "train.jsonl",
            poc_runtime::data::world::INFORMATIVE_SCORE_NOISE,
        ),
        (USELESS_SCORES_FILE, USELESS_SCORE_NOISE),
    ] {
        let w = World::with_config(WorldConfig {
            score_noise: noise,
            ..WorldConfig::new(seed)
        })
        .map_err(|e| Error::Internal(e.to_string()))?;
        let pairs = w.label(&rows).map_err(|e| Error::user(COMMAND, e))?;
        write_atomic(
            &world.join(file),
            to_jsonl(pairs.iter().map(|r| r.to_json())).as_bytes(),
        )
        .map_err(|e| Error::user(COMMAND, e))?;
    }
    for file in ["prompts.jsonl", "heldout.jsonl", "world.json"] {
        std::fs::copy(sft_world.join(file), world.join(file))
            .map_err(|e| Error::user(COMMAND, format!("cannot copy {file}: {e}")))?;
    }
    Ok(())
}

/// What the report needs besides the points.
pub struct Stored<'a> {
    pub gate: &'a Gate,
    pub reward_gate: Option<&'a RewardGate>,
    pub budget: &'a Budget,
    pub steps: usize,
    pub args: &'a AlignOptions,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(group: &str, seed: usize, rewards: [f64; 2], kl: [f64; 2]) -> Point {
        Point {
            group: group.into(),
            setting: "β=0.1".into(),
            seed,
            fraction: 1.0,
            beta: 0.1,
            family: vec![0.0, 1.0],
            rewards: rewards.to_vec(),
            kl: kl.to_vec(),
            greedy: rewards.to_vec(),
            non_letter: vec![0.0, 1.0],
            pair_family: vec![0.0, 1.0, 1.0],
            d_chosen: vec![1.0, 0.0, -2.0],
            d_rejected: vec![-1.0, 0.0, -1.0],
            pair_gap: vec![1.0, 0.25, 0.25],
            pair_bt: vec![0.9, 0.6, 0.55],
            train_seconds: f64::NAN,
        }
    }

    #[test]
    fn cuts_and_envelopes_on_known_points() {
        let families = WorldConfig::new(1).families;
        let mut pts = Vec::new();
        for seed in [1, 2] {
            pts.push(point(REFERENCE, seed, [1.0, 2.0], [0.0, 0.0]));
            pts.push(point("dpo", seed, [2.0, 2.0], [1.0, 3.0]));
            pts.push(point("dpo", seed, [3.0, 2.0], [4.0, 6.0]));
        }
        let a = Analysis::new(pts, &families);
        let all = a.stratum("all").unwrap().clone();
        let f0 = Stratum {
            name: "f0".into(),
            families: vec![0],
        };
        let p = &a.of("dpo", 1)[0];
        let c = p.cut(&all);
        assert_eq!((c.reward, c.kl, c.non_letter), (2.0, 2.0, 0.5));
        // Pairs: Δ margins 2, 0, −1; p = σ(0.2), 0.5, σ(−0.1) against 0.9, 0.6, 0.55.
        assert!((c.d_chosen - (-1.0 / 3.0)).abs() < 1e-12);
        // Near ties (|gap| < 0.5): margin 0 counts 1/2, margin −1 against a positive gap 0.
        assert_eq!(c.tie_accuracy, 0.25);
        // The envelope: the reference (1.5 at 0), dpo (2 at 2), dpo (2.5 at 5).
        assert_eq!(a.envelope("dpo", &all, 1.0), vec![1.5, 1.5]);
        assert_eq!(a.envelope("dpo", &all, 3.0), vec![2.0, 2.0]);
        assert_eq!(a.gain("dpo", &all, 10.0), vec![1.0, 1.0]);
        // On f0 alone, KL 1 already buys 2.
        assert_eq!(a.envelope("dpo", &f0, 1.0), vec![2.0, 2.0]);
        let op = a.operating("dpo", 3.0);
        assert_eq!(op[0].map(|p| p.cut(&all).reward), Some(2.0));
        assert_eq!(a.groups, vec!["dpo".to_string()]);
    }

    #[test]
    fn best_of_n_points_read_the_first_draws() {
        let v =
            json!({"family": [0, 1], "draws": [[1.0, 0.0], [2.0, -1.0], [0.5, 3.0], [0.0, 0.0]]});
        let pts = Point::best_of_n(&v, 1, 16);
        let rewards: Vec<Vec<f64>> = pts.iter().map(|p| p.rewards.clone()).collect();
        assert_eq!(
            rewards,
            vec![vec![1.0, 0.0], vec![2.0, 0.0], vec![2.0, 3.0]]
        );
        assert_eq!(pts[1].kl[0], best_of_n_kl(2));
        assert_eq!(pts[2].setting, "N=4");
    }

    #[test]
    fn the_default_world_has_every_stratum() {
        let s = strata(&WorldConfig::new(1).families);
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            &names[..7],
            [
                "all",
                "high q",
                "low q",
                "low dispersion",
                "high dispersion",
                "decoupled",
                "hard"
            ]
        );
        let by = |n: &str| s.iter().find(|s| s.name == n).unwrap().families.clone();
        assert_eq!(by("high q"), vec![0, 2, 4]);
        assert_eq!(by("low q"), vec![1, 3]);
        assert_eq!(by("low dispersion"), vec![0, 1]);
        assert_eq!(by("high dispersion"), vec![2, 3]);
        assert_eq!(by("decoupled"), vec![4]);
        assert_eq!(by("hard"), vec![5]);
    }

    #[test]
    fn the_gate_needs_every_family() {
        let row = |r: f64, nl: f64| GateRow {
            name: "f0".into(),
            sft_reward: 2.0,
            reference_reward: r,
            non_letter: nl,
            samples: 100,
        };
        assert!(
            Gate {
                rows: vec![row(1.8, 0.0), row(1.7, 0.01)],
                nll: vec![]
            }
            .passed()
        );
        assert!(
            !Gate {
                rows: vec![row(1.8, 0.0), row(1.69, 0.0)],
                nll: vec![]
            }
            .passed()
        );
        assert!(
            !Gate {
                rows: vec![row(2.0, 0.02)],
                nll: vec![]
            }
            .passed()
        );
        assert!(
            !Gate {
                rows: vec![],
                nll: vec![]
            }
            .passed()
        );
    }
}
