//! Sampling and scoring trained policies against the reference: one sample per evaluation
//! prompt, its true reward r*, its log-probs under the policy and the reference, and the
//! implicit reward margins of held-out pairs.

use super::COMMAND;
use super::stats::{accuracy, ece, kl_estimate, mean, win_rate};
use crate::{Error, Result};
use poc_compiler::ops;
use poc_runtime::data::{self, Tok};
use poc_runtime::device::DeviceSpec;
use poc_runtime::lower::to_f64;
use poc_runtime::model::generate::{GenerateOptions, generate};
use poc_runtime::model::{Llama, Resolved, resolve};
use poc_runtime::observe::{self, Rows, Want};
use serde_json::{Value, json};
use std::path::Path;

/// The numbers of array `field` of `v` (NaN for a non-number).
pub(super) fn numbers(v: &Value, field: &str) -> Vec<f64> {
    v.get(field)
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect())
        .unwrap_or_default()
}

/// The `prompt` of every line of a prompts.jsonl.
pub(super) fn read_prompts(path: &Path) -> Result<Vec<String>> {
    let label = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::user(COMMAND, format!("cannot read `{label}`: {e}")))?;
    let mut prompts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let p = serde_json::from_str::<Value>(line)
            .ok()
            .and_then(|v| v.get("prompt").and_then(Value::as_str).map(str::to_string))
            .ok_or_else(|| {
                Error::user(
                    COMMAND,
                    format!("{label}:{}: expected {{\"prompt\": \"...\"}}", i + 1),
                )
            })?;
        prompts.push(p);
    }
    if prompts.is_empty() {
        return Err(Error::user(COMMAND, format!("{label}: no prompts")));
    }
    Ok(prompts)
}

/// What one model's samples say.
pub(super) struct Samples {
    pub(super) completions: Vec<String>,
    pub(super) rewards: Vec<f64>,
    /// Sequence log-probs of each sample under the sampling model and the reference.
    pub(super) logps: Vec<f64>,
    pub(super) ref_logps: Vec<f64>,
}

/// The reference, loaded once, and its held-out log-probs.
pub(super) struct Evaluator {
    device: burn::tensor::Device,
    pub(super) reference: Llama,
    tok: Tok,
    heldout: Vec<data::Pair>,
    /// Σ log π_ref of (chosen, rejected) of every held-out pair.
    ref_heldout: Vec<(f64, f64)>,
}

/// The evaluator in `slot`, made on first use (loading the reference takes a while).
pub(super) fn evaluator_for<'a>(
    slot: &'a mut Option<Evaluator>,
    reference: &Path,
    heldout: &Path,
) -> Result<&'a Evaluator> {
    if slot.is_none() {
        *slot = Some(Evaluator::new(reference, heldout)?);
    }
    slot.as_ref()
        .ok_or_else(|| Error::Internal("the evaluator vanished".into()))
}

/// Pairs per forward when scoring.
const SCORE_BATCH: usize = 16;

impl Evaluator {
    fn new(reference: &Path, heldout: &Path) -> Result<Evaluator> {
        let device = DeviceSpec::Cpu.device();
        let Resolved { model, tok, .. } = resolve(&reference.display().to_string(), false, &device)
            .map_err(|e| Error::user("poc", e))?;
        let (pairs, bad) =
            data::load_pairs(heldout, &tok, 512, false).map_err(|e| Error::user(COMMAND, e))?;
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
    pub(super) fn sample(
        &self,
        model: &Llama,
        prompts: &[String],
        seed: usize,
        max_new_tokens: usize,
    ) -> Result<Samples> {
        let ids: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| {
                self.tok
                    .encode(p, true)
                    .map_err(|e| Error::user(COMMAND, e))
            })
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
        let outs = generate(model, &ids, &opts).map_err(|e| Error::user(COMMAND, e))?;
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
    pub(super) fn evaluate(
        &self,
        path: &Path,
        prompts: &[String],
        seed: usize,
        max_new_tokens: usize,
        key: &Value,
    ) -> Result<Value> {
        let policy = resolve(&path.display().to_string(), false, &self.device)
            .map_err(|e| Error::user("poc", e))?
            .model;
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
        let stats = observe::stats(model, Rows::from(&batch), Want::LOGPS, device);
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
        let rows = Rows {
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
pub(super) struct Metrics {
    pub(super) true_reward: f64,
    pub(super) win_rate: f64,
    pub(super) kl: f64,
    pub(super) accuracy: f64,
    pub(super) ece: f64,
    /// Wall-clock seconds of the training (NaN when unknown).
    pub(super) train_seconds: f64,
}

impl Metrics {
    pub(super) fn of(v: &Value, reference_rewards: &[f64], beta: f64) -> Metrics {
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
