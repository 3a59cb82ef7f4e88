//! Sampling and scoring models against the reference: samples at temperature 1 and greedy
//! completions of the evaluation prompts with their true reward r* and log-probs under the model
//! and the reference, and the log-prob changes of held-out pairs (displacement, the implicit
//! reward). Everything is kept per prompt and per pair, so the report can cut it by stratum.

use super::COMMAND;
use crate::{Error, Result};
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

/// One evaluation prompt: its text and family.
#[derive(Debug, Clone)]
pub(super) struct EvalPrompt {
    pub(super) prompt: String,
    pub(super) family: usize,
}

/// The `prompt` and `family` of every line of a prompts.jsonl.
pub(super) fn read_prompts(path: &Path) -> Result<Vec<EvalPrompt>> {
    let label = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::user(COMMAND, format!("cannot read `{label}`: {e}")))?;
    let mut prompts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v = serde_json::from_str::<Value>(line).ok();
        let prompt = v
            .as_ref()
            .and_then(|v| v.get("prompt").and_then(Value::as_str).map(str::to_string));
        let family = v
            .as_ref()
            .and_then(|v| v.get("family").and_then(Value::as_u64));
        let (Some(prompt), Some(family)) = (prompt, family) else {
            return Err(Error::user(
                COMMAND,
                format!(
                    "{label}:{}: expected {{\"prompt\": \"...\", \"family\": N}}",
                    i + 1
                ),
            ));
        };
        prompts.push(EvalPrompt {
            prompt,
            family: family as usize,
        });
    }
    if prompts.is_empty() {
        return Err(Error::user(COMMAND, format!("{label}: no prompts")));
    }
    Ok(prompts)
}

/// Whether a sample has left the world's alphabet: its trimmed text holds a byte that is not
/// an ASCII letter (the signature of mass leaking to never-trained tokens).
pub fn is_non_letter(completion: &str) -> bool {
    completion.trim().bytes().any(|b| !b.is_ascii_alphabetic())
}

/// What one model's samples say, per prompt.
pub(super) struct Samples {
    pub(super) completions: Vec<String>,
    pub(super) rewards: Vec<f64>,
    /// Sequence log-probs of each sample under the sampling model and the reference.
    pub(super) logps: Vec<f64>,
    pub(super) ref_logps: Vec<f64>,
}

/// The reference, loaded once, with the evaluation prompts and the held-out pairs.
pub(super) struct Evaluator {
    device: burn::tensor::Device,
    pub(super) reference: Llama,
    tok: Tok,
    prompts: Vec<EvalPrompt>,
    prompt_ids: Vec<Vec<u32>>,
    heldout: Vec<data::Pair>,
    /// Σ log π_ref of (chosen, rejected) of every held-out pair.
    ref_heldout: Vec<(f64, f64)>,
    max_new_tokens: usize,
}

/// The evaluator in `slot`, made on first use (loading the reference takes a while).
pub(super) fn evaluator_for<'a>(
    slot: &'a mut Option<Evaluator>,
    reference: &Path,
    prompts: &Path,
    heldout: &Path,
    max_new_tokens: usize,
) -> Result<&'a Evaluator> {
    if slot.is_none() {
        *slot = Some(Evaluator::new(reference, prompts, heldout, max_new_tokens)?);
    }
    slot.as_ref()
        .ok_or_else(|| Error::Internal("the evaluator vanished".into()))
}

/// A reward model's (chosen, rejected) scores of the held-out pairs, their true gaps and their
/// true probabilities.
pub(super) type RewardScores = (Vec<(f64, f64)>, Vec<f64>, Vec<f64>);

/// Pairs per forward when scoring.
const SCORE_BATCH: usize = 16;

/// The column `name` of every pair (NaN where missing).
fn column(pairs: &[data::Pair], name: &str) -> Vec<f64> {
    pairs
        .iter()
        .map(|p| p.columns.get(name).copied().unwrap_or(f64::NAN))
        .collect()
}

impl Evaluator {
    fn new(
        reference: &Path,
        prompts: &Path,
        heldout: &Path,
        max_new_tokens: usize,
    ) -> Result<Evaluator> {
        let device = DeviceSpec::Cpu.device();
        let Resolved { model, tok, .. } = resolve(&reference.display().to_string(), false, &device)
            .map_err(|e| Error::user("poc", e))?;
        let prompts = read_prompts(prompts)?;
        let prompt_ids = prompts
            .iter()
            .map(|p| {
                tok.encode(&p.prompt, true)
                    .map_err(|e| Error::user(COMMAND, e))
            })
            .collect::<Result<Vec<_>>>()?;
        let (pairs, bad) =
            data::load_pairs(heldout, &tok, 512, false).map_err(|e| Error::user(COMMAND, e))?;
        if !bad.is_empty() {
            eprintln!("{COMMAND}: skipped {} bad held-out row(s)", bad.len());
        }
        let ref_heldout = pair_logps(&model, &pairs, tok.pad, &device);
        Ok(Evaluator {
            device,
            reference: model,
            tok,
            prompts,
            prompt_ids,
            heldout: pairs,
            ref_heldout,
            max_new_tokens,
        })
    }

    /// The most tokens sampled per prompt.
    pub(super) fn max_new_tokens(&self) -> usize {
        self.max_new_tokens
    }

    /// The evaluation prompts.
    pub(super) fn prompts(&self) -> &[EvalPrompt] {
        &self.prompts
    }

    /// The family of every evaluation prompt and every held-out pair.
    pub(super) fn families(&self) -> (Vec<f64>, Vec<f64>) {
        (
            self.prompts.iter().map(|p| p.family as f64).collect(),
            column(&self.heldout, "family"),
        )
    }

    /// One completion per prompt from `model` (temperature 0: greedy; every prompt has its own
    /// stream of `seed`), its r*, and its log-probs under `model` and the reference.
    pub(super) fn sample(&self, model: &Llama, seed: u64, temperature: f64) -> Result<Samples> {
        let mut eos = model.config.eos_ids();
        eos.push(self.tok.eos);
        eos.retain(|&id| (id as usize) < model.config.vocab_size);
        let opts = GenerateOptions {
            max_new_tokens: self.max_new_tokens,
            temperature,
            top_p: 1.0,
            seed,
            eos,
            pad: self.tok.pad,
            batch_size: 32,
        };
        let outs = generate(model, &self.prompt_ids, &opts).map_err(|e| Error::user(COMMAND, e))?;
        let completions: Vec<String> = outs.iter().map(|t| self.tok.decode(t)).collect();
        let rewards = self
            .prompts
            .iter()
            .zip(&completions)
            .map(|(p, c)| data::world::reward(&p.prompt, c))
            .collect();
        let logps = sample_logps(model, &self.prompt_ids, &outs, self.tok.pad, &self.device);
        let ref_logps = sample_logps(
            &self.reference,
            &self.prompt_ids,
            &outs,
            self.tok.pad,
            &self.device,
        );
        Ok(Samples {
            completions,
            rewards,
            logps,
            ref_logps,
        })
    }

    /// Everything the report needs of the model at `path` (the reference itself when `None`),
    /// sampled with `seed`, under `key`.
    pub(super) fn evaluate(&self, path: Option<&Path>, seed: u64, key: &Value) -> Result<Value> {
        let loaded;
        let model = match path {
            Some(p) => {
                loaded = resolve(&p.display().to_string(), false, &self.device)
                    .map_err(|e| Error::user("poc", e))?
                    .model;
                &loaded
            }
            None => &self.reference,
        };
        let s = self.sample(model, seed, 1.0)?;
        let greedy = self.sample(model, seed, 0.0)?;
        let held = match path {
            Some(_) => pair_logps(model, &self.heldout, self.tok.pad, &self.device),
            None => self.ref_heldout.clone(),
        };
        let d_chosen: Vec<f64> = held
            .iter()
            .zip(&self.ref_heldout)
            .map(|((pc, _), (rc, _))| pc - rc)
            .collect();
        let d_rejected: Vec<f64> = held
            .iter()
            .zip(&self.ref_heldout)
            .map(|((_, pr), (_, rr))| pr - rr)
            .collect();
        let gap: Vec<f64> = column(&self.heldout, "true_reward_chosen")
            .iter()
            .zip(column(&self.heldout, "true_reward_rejected"))
            .map(|(c, r)| c - r)
            .collect();
        let kl: Vec<f64> = s
            .logps
            .iter()
            .zip(&s.ref_logps)
            .map(|(p, r)| p - r)
            .collect();
        let non_letter: Vec<u8> = s
            .completions
            .iter()
            .map(|c| u8::from(is_non_letter(c)))
            .collect();
        let (family, pair_family) = self.families();
        Ok(json!({
            "key": key,
            "family": family,
            "pair_family": pair_family,
            "rewards": s.rewards,
            "kl": kl,
            "greedy_rewards": greedy.rewards,
            "non_letter": non_letter,
            "completions": s.completions,
            "greedy_completions": greedy.completions,
            "d_chosen": d_chosen,
            "d_rejected": d_rejected,
            "pair_gap": gap,
            "pair_bt_prob": column(&self.heldout, "bt_prob"),
        }))
    }

    /// Best-of-N from the reference: for each prompt, the r* of `n_max` samples (streams
    /// `seed·1000 + k`), so best-of-N for every N ≤ `n_max` is read off the first N.
    pub(super) fn best_of(&self, seed: u64, n_max: usize, key: &Value) -> Result<Value> {
        let mut draws: Vec<Vec<f64>> = Vec::with_capacity(n_max);
        for k in 0..n_max {
            let s = self.sample(&self.reference, seed * 1000 + k as u64, 1.0)?;
            draws.push(s.rewards);
        }
        Ok(json!({"key": key, "family": self.families().0, "draws": draws}))
    }

    /// One completion (temperature 1, streams of `seed`) of each of `prompts` by the reference.
    pub(super) fn sample_texts(&self, prompts: &[String], seed: u64) -> Result<Vec<String>> {
        let ids = prompts
            .iter()
            .map(|p| {
                self.tok
                    .encode(p, true)
                    .map_err(|e| Error::user(COMMAND, e))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut eos = self.reference.config.eos_ids();
        eos.push(self.tok.eos);
        eos.retain(|&id| (id as usize) < self.reference.config.vocab_size);
        let opts = GenerateOptions {
            max_new_tokens: self.max_new_tokens,
            temperature: 1.0,
            top_p: 1.0,
            seed,
            eos,
            pad: self.tok.pad,
            batch_size: 32,
        };
        let outs = generate(&self.reference, &ids, &opts).map_err(|e| Error::user(COMMAND, e))?;
        Ok(outs.iter().map(|t| self.tok.decode(t)).collect())
    }

    /// The reward model at `dir`'s scores of (chosen, rejected) of every held-out pair, with
    /// the pairs' true gaps and true probabilities.
    pub(super) fn reward_scores(&self, dir: &Path) -> Result<RewardScores> {
        let rm = resolve(&dir.display().to_string(), false, &self.device)
            .map_err(|e| Error::user("poc", e))?
            .model;
        let mut out = Vec::with_capacity(self.heldout.len());
        let idx: Vec<usize> = (0..self.heldout.len()).collect();
        for chunk in idx.chunks(SCORE_BATCH) {
            let batch = data::pairs::batch_of(&self.heldout, chunk, self.tok.pad);
            let stats = observe::stats(&rm, Rows::from(&batch), Want::REWARDS, &self.device);
            let r = stats.rewards.map(to_f64).ok_or_else(|| {
                Error::user(COMMAND, format!("`{}` has no score head", dir.display()))
            })?;
            let b = chunk.len();
            out.extend((0..b).map(|j| (r[j], r[b + j])));
        }
        let gap = column(&self.heldout, "true_reward_chosen")
            .iter()
            .zip(column(&self.heldout, "true_reward_rejected"))
            .map(|(c, r)| c - r)
            .collect();
        Ok((out, gap, column(&self.heldout, "bt_prob")))
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
