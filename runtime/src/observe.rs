//! Observables: what an objective's declared inputs are, computed from the models' outputs.
//!
//! The model gives hidden states ([`Llama::hidden`]) and the heads on them (logits, the reward
//! head, the value head). This module turns them into the statistics objectives read
//! ([`stats`]: sequence log-probs, entropies, rewards, per-token log-probs, values), with the
//! token counts and completion masks that come from the data alone ([`token_counts`],
//! [`completion_mask`]), and maps statistics to an objective's inputs by their [`Source`]
//! ([`observe`]). What each model's forward must give is decided once, from the objective's
//! sources ([`needs`]); nothing is computed that no input reads.

use crate::data::{Batch, Pair};
use crate::kernels;
use crate::lower::TensorColumn;
use crate::model::Llama;
use burn::tensor::{Device, IndexingUpdateOp, Int, Tensor, TensorData};
use poc_compiler::{Input, Rollout, Side, Source};

/// Which statistics one forward pass over a batch gives ([`stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Want {
    /// Σ log p over each row's completion tokens (needs the output head over the whole
    /// vocabulary).
    pub logps: bool,
    /// Each row's mean next-token entropy over its completion positions (shares the
    /// log-softmax of `logps`).
    pub entropy: bool,
    /// The reward head at each row's last real token (a reward model).
    pub rewards: bool,
    /// The log-probability of each completion token (on-policy objectives).
    pub token_logps: bool,
    /// The value head at each position predicting a completion token (a PPO policy).
    pub values: bool,
    /// `log Σ_v p(v)²` of each completion position's next-token distribution, without
    /// gradient (WPO's weights).
    pub collision: bool,
}

impl Want {
    /// Nothing.
    pub const NONE: Want = Want {
        logps: false,
        entropy: false,
        rewards: false,
        token_logps: false,
        values: false,
        collision: false,
    };
    /// Sequence log-probs alone.
    pub const LOGPS: Want = Want {
        logps: true,
        ..Want::NONE
    };
    /// Rewards alone.
    pub const REWARDS: Want = Want {
        rewards: true,
        ..Want::NONE
    };

    /// Whether anything is wanted (else no forward pass is needed).
    pub fn any(self) -> bool {
        self != Want::NONE
    }

    /// What either wants.
    pub fn or(self, other: Want) -> Want {
        Want {
            logps: self.logps || other.logps,
            entropy: self.entropy || other.entropy,
            rewards: self.rewards || other.rewards,
            token_logps: self.token_logps || other.token_logps,
            values: self.values || other.values,
            collision: self.collision || other.collision,
        }
    }
}

/// What an objective's inputs require of each model.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    /// The trained model's forward (differentiable): log-probs and/or reward-head outputs of
    /// pair objectives; per-token log-probs and values of on-policy ones.
    pub policy: Want,
    /// The frozen reference's forward: log-probs, entropies or per-token log-probs.
    pub reference: Want,
    /// On-policy: the policy as it sampled the rollouts (old per-token log-probs and values).
    pub rollout_policy: Want,
    /// On-policy: the frozen reward model that scores the rollouts.
    pub reward_model: Want,
    /// Anything of the rejected completion from a forward pass (log-probs, token counts,
    /// entropies, rewards): without it, batches hold the chosen rows alone.
    pub rejected: bool,
}

impl Needs {
    /// Whether the trained model is a reward model (the objective reads reward outputs).
    pub fn trains_reward_model(&self) -> bool {
        self.policy.rewards
    }

    /// Whether the objective reads anything of a reference model.
    pub fn reads_reference(&self) -> bool {
        self.reference.any()
    }
}

/// What `inputs` require of the models.
pub fn needs(inputs: &[Input]) -> Needs {
    let mut n = Needs::default();
    for i in inputs {
        if let Source::PolicyLogps(Side::Rejected)
        | Source::Tokens(Side::Rejected)
        | Source::ReferenceLogps(Side::Rejected)
        | Source::ReferenceEntropy(Side::Rejected)
        | Source::Reward(Side::Rejected)
        | Source::PolicyTokenLogps(Side::Rejected)
        | Source::ReferenceTokenLogps(Side::Rejected)
        | Source::PolicyTokenCollision(Side::Rejected)
        | Source::TokenMask(Side::Rejected) = i.source
        {
            n.rejected = true;
        }
        match i.source {
            Source::PolicyLogps(_) => n.policy.logps = true,
            Source::PolicyTokenLogps(_) => n.policy.token_logps = true,
            Source::ReferenceTokenLogps(_) => n.reference.token_logps = true,
            Source::PolicyTokenCollision(_) => n.policy.collision = true,
            Source::TokenMask(_) | Source::TokenPosition => {}
            Source::Reward(_) => n.policy.rewards = true,
            Source::ReferenceLogps(_) => n.reference.logps = true,
            Source::ReferenceEntropy(_) => n.reference.entropy = true,
            Source::Rollout(r) => match r {
                Rollout::PolicyTokenLogps => n.policy.token_logps = true,
                Rollout::Values => n.policy.values = true,
                Rollout::OldPolicyTokenLogps => n.rollout_policy.token_logps = true,
                Rollout::OldValues => n.rollout_policy.values = true,
                Rollout::ReferenceTokenLogps => n.reference.token_logps = true,
                Rollout::Score => n.reward_model.rewards = true,
                Rollout::Mask => {}
            },
            Source::Tokens(_) | Source::VocabSize | Source::Column(_) => {}
        }
    }
    n
}

/// The rows of a batch one forward pass runs over, each `[batch][time]` (rows of one length,
/// as a [`Batch`]'s are; shorter rows read as padding).
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    /// Token ids.
    pub tokens: &'a [Vec<u32>],
    /// Real tokens (not padding); rows are right-padded.
    pub mask: &'a [Vec<bool>],
    /// Completion tokens (a subset of the real ones).
    pub completion: &'a [Vec<bool>],
}

impl<'a> From<&'a Batch> for Rows<'a> {
    fn from(b: &'a Batch) -> Rows<'a> {
        Rows {
            tokens: &b.tokens,
            mask: &b.mask,
            completion: &b.completion,
        }
    }
}

/// The statistics of one forward pass over [`Rows`]: those its [`Want`] asked for (`None`
/// otherwise, and for a head the model lacks). Token `t` of a row is scored by the
/// distribution at position `t - 1`, so a completion token at position 0 never counts.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Σ log p(token) over each row's completion tokens, `[batch]`.
    pub logps: Option<Tensor<1>>,
    /// Mean next-token entropy (nats) over each row's completion positions, `[batch]`.
    pub entropy: Option<Tensor<1>>,
    /// The reward head at each row's last real token (as transformers'
    /// `LlamaForSequenceClassification` pools), `[batch]`.
    pub rewards: Option<Tensor<1>>,
    /// `[batch, time−1]`: log p of token j+1 at position j, 0 outside the completion.
    pub token_logps: Option<Tensor<2>>,
    /// `[batch, time−1]`: the value head at position j, 0 where token j+1 is not a completion
    /// token.
    pub values: Option<Tensor<2>>,
    /// `[batch, time−1]`: `log Σ_v p(v)²` of the distribution at position j (no gradient), 0
    /// outside the completion.
    pub collision: Option<Tensor<2>>,
}

/// The width a forward over `rows` runs at: the longest row, at least 2 (one prediction).
fn width(rows: &[Vec<bool>]) -> usize {
    rows.iter().map(Vec::len).max().unwrap_or(0).max(2)
}

/// `[batch, time−1]` (time: the longest row, at least 2): 1 where token j+1 of a row is a
/// completion token, the positions whose predictions completion statistics read.
pub fn completion_mask(completion: &[Vec<bool>], device: &Device) -> Tensor<2> {
    completion_mask_at(completion, width(completion), device)
}

/// [`completion_mask`] for rows of width `t` ≥ 2.
fn completion_mask_at(completion: &[Vec<bool>], t: usize, device: &Device) -> Tensor<2> {
    let b = completion.len();
    let cm: Vec<f32> = completion
        .iter()
        .flat_map(|r| (1..t).map(|j| if r.get(j) == Some(&true) { 1.0 } else { 0.0 }))
        .collect();
    Tensor::<2>::from_data(TensorData::new(cm, [b, t - 1]), device)
}

/// The number of scored completion tokens of each row (those after position 0), `[batch]`.
pub fn token_counts(completion: &[Vec<bool>], device: &Device) -> Tensor<1> {
    let b = completion.len();
    completion_mask(completion, device).sum_dim(1).reshape([b])
}

/// The statistics `want` asks for, from one forward pass of `model` over `rows` (none when
/// nothing is wanted). One pass of the chunked head ([`kernels::token_logps`]) serves log-probs,
/// entropies and per-token log-probs, over completion positions only.
/// On an autodiff device everything computed from the model carries gradients.
pub fn stats(model: &Llama, rows: Rows<'_>, want: Want, device: &Device) -> Stats {
    let b = rows.tokens.len();
    let longest = |r: &[Vec<u32>]| r.iter().map(Vec::len).max().unwrap_or(0);
    let t = longest(rows.tokens)
        .max(width(rows.mask))
        .max(width(rows.completion));
    let mut out = Stats::default();
    if !want.any() {
        return out;
    }
    let cm = completion_mask_at(rows.completion, t, device);
    if longest(rows.tokens) == 0 {
        // No tokens at all: nothing to run, nothing scored.
        let zeros = || Tensor::<1>::zeros([b], device);
        out.logps = want.logps.then(zeros);
        out.entropy = want.entropy.then(zeros);
        out.rewards = (want.rewards && model.score.is_some()).then(zeros);
        out.token_logps = want.token_logps.then(|| cm.clone());
        out.values = (want.values && model.value_head.is_some()).then(|| cm.clone());
        out.collision = want.collision.then(|| cm.clone());
        return out;
    }
    let flat: Vec<i64> = rows
        .tokens
        .iter()
        .flat_map(|r| (0..t).map(|j| i64::from(r.get(j).copied().unwrap_or(0))))
        .collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(flat, [b, t]), device);
    // Every index the head and the reward head gather with is uploaded before the forward pass
    // is queued: a copy from host memory waits for the device's queue, so one made afterwards
    // would stall a GPU until the whole forward had run.
    let heads_wanted = want.logps || want.entropy || want.token_logps;
    let indices = heads_wanted.then(|| head_indices(&rows, t, want.token_logps, device));
    let last = want
        .rewards
        .then(|| last_tokens(rows.mask, model.config.hidden_size, device));
    let hidden = model.hidden(ids, rows.mask, None);
    if let Some(last) = last {
        out.rewards = model
            .rewards(hidden.clone().gather(1, last))
            .map(|r| r.reshape([b]));
    }
    // Positions 0..t−1 predict tokens 1..t.
    let scored = hidden.narrow(1, 0, t - 1);
    if want.values {
        out.values = model.values(scored.clone()).map(|v| v * cm.clone());
    }
    if want.collision {
        out.collision = Some(
            kernels::token_collision(
                scored.clone().detach(),
                model.output_head().detach(),
                model.arch.final_softcap,
            ) * cm.clone(),
        );
    }
    if let Some(indices) = indices {
        let heads = head_stats(model, scored, indices, &cm, device);
        let counts = cm.clone().sum_dim(1).reshape([b]);
        out.logps = want.logps.then(|| heads.logps.clone());
        out.entropy = want
            .entropy
            .then(|| heads.entropy.clone() / counts.clamp_min(1.0));
        out.token_logps = heads.per_token;
    }
    out
}

/// What the log-prob head gives per row: Σ log p and Σ entropy over completion positions, and
/// (when asked) each position's log-prob.
struct HeadStats {
    logps: Tensor<1>,
    entropy: Tensor<1>,
    per_token: Option<Tensor<2>>,
}

/// The head's gather indices and targets for a batch, built on the host and uploaded before
/// the forward pass is queued.
enum HeadIndices {
    /// Every scored position (per-token values wanted): `[b·n]` targets.
    All(Tensor<1, Int>),
    /// The completion positions alone: their flat indices and targets, `[m]` each.
    Picked(Tensor<1, Int>, Tensor<1, Int>),
    /// No completion position at all.
    Nothing,
}

/// The head's indices over rows of width `t` (`n = t − 1` scored positions each): every
/// position when `per_token`, else the completion positions.
fn head_indices(rows: &Rows<'_>, t: usize, per_token: bool, device: &Device) -> HeadIndices {
    let (b, n) = (rows.tokens.len(), t - 1);
    // Token j+1 of each row is scored at position j.
    let target = |r: usize, j: usize| i64::from(rows.tokens[r].get(j + 1).copied().unwrap_or(0));
    if per_token {
        let targets: Vec<i64> = (0..b)
            .flat_map(|r| (0..n).map(move |j| target(r, j)))
            .collect();
        return HeadIndices::All(Tensor::<1, Int>::from_data(
            TensorData::new(targets, [b * n]),
            device,
        ));
    }
    let picked: Vec<(usize, usize)> = (0..b)
        .flat_map(|r| (0..n).map(move |j| (r, j)))
        .filter(|&(r, j)| rows.completion[r].get(j + 1) == Some(&true))
        .collect();
    let m = picked.len();
    if m == 0 {
        return HeadIndices::Nothing;
    }
    let index: Vec<i64> = picked.iter().map(|&(r, j)| (r * n + j) as i64).collect();
    let targets: Vec<i64> = picked.iter().map(|&(r, j)| target(r, j)).collect();
    HeadIndices::Picked(
        Tensor::<1, Int>::from_data(TensorData::new(index, [m]), device),
        Tensor::<1, Int>::from_data(TensorData::new(targets, [m]), device),
    )
}

/// The chunked head ([`kernels::token_logps`]) over the scored positions `indices` names: the
/// completion positions alone, or every position when per-token values are wanted (masked to
/// the completion afterwards). `scored` is `[b, t−1, hidden]`, `cm` the completion mask.
fn head_stats(
    model: &Llama,
    scored: Tensor<3>,
    indices: HeadIndices,
    cm: &Tensor<2>,
    device: &Device,
) -> HeadStats {
    let [b, n, h] = scored.dims();
    let flat = scored.reshape([b * n, h]);
    let head = model.output_head();
    // The chunked kernel has no logit soft-cap; a soft-capped model (Gemma 2) scores through
    // the composition, whole.
    let token_logps = |hidden: Tensor<2>, head: Tensor<2>, targets: Tensor<1, Int>| match model
        .arch
        .final_softcap
    {
        None => kernels::token_logps(hidden, head, targets),
        cap => kernels::capped_token_logps(hidden, head, targets, cap),
    };
    let (index, targets) = match indices {
        HeadIndices::All(targets) => {
            let (tok, ent) = token_logps(flat, head, targets);
            let tok = tok.reshape([b, n]) * cm.clone();
            let ent = ent.reshape([b, n]) * cm.clone();
            return HeadStats {
                logps: tok.clone().sum_dim(1).reshape([b]),
                entropy: ent.sum_dim(1).reshape([b]),
                per_token: Some(tok),
            };
        }
        HeadIndices::Nothing => {
            let zeros = Tensor::<1>::zeros([b], device);
            return HeadStats {
                logps: zeros.clone(),
                entropy: zeros,
                per_token: None,
            };
        }
        HeadIndices::Picked(index, targets) => (index, targets),
    };
    let (tok, ent) = token_logps(flat.select(0, index.clone()), head, targets);
    // Per-row sums over the row's own positions, as if every other position held 0: the same
    // additions whatever else is in the batch (a row's statistics must not depend on its batch).
    let per_row = |x: Tensor<1>| {
        Tensor::<1>::zeros([b * n], device)
            .select_assign(0, index.clone(), x, IndexingUpdateOp::Add)
            .reshape([b, n])
            .sum_dim(1)
            .reshape([b])
    };
    HeadStats {
        logps: per_row(tok),
        entropy: per_row(ent),
        per_token: None,
    }
}

/// The gather index of each row's last real token (`mask`; the first column of a row with
/// none), `[batch, 1, hidden]`: where the reward head reads, as transformers pools.
fn last_tokens(mask: &[Vec<bool>], h: usize, device: &Device) -> Tensor<3, Int> {
    let b = mask.len();
    let last: Vec<i64> = mask
        .iter()
        .map(|r| r.iter().rposition(|&m| m).unwrap_or(0) as i64)
        .collect();
    Tensor::<3, Int>::from_data(TensorData::new(last, [b, 1, 1]), device).expand([b, 1, h])
}

/// An input the runtime cannot provide for these rows.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ObserveError(pub String);

/// `[B, …]` halves of a `[2B, …]` statistic (per row or per token): chosen rows first (a
/// chosen-only batch's `[B]` statistic is its chosen half).
fn half<const D: usize>(t: &Tensor<D>, side: Side, b: usize) -> Tensor<D> {
    match side {
        Side::Chosen => t.clone().narrow(0, 0, b),
        Side::Rejected => t.clone().narrow(0, b, b),
    }
}

/// Moves a statistic computed elsewhere (the reference, on a plain device) onto `device` as a
/// constant.
pub(crate) fn constant<const D: usize>(t: Tensor<D>, device: &Device) -> Tensor<D> {
    let shape = t.dims();
    let v: Vec<f32> = t.into_data().try_into_vec_as::<f32>().unwrap_or_default();
    Tensor::from_data(TensorData::new(v, shape), device)
}

/// The completion tokens of each row: the first scored position (`j` with token `j+1` a
/// completion token) and how many there are.
fn completion_spans(completion: &[Vec<bool>]) -> Vec<(usize, usize)> {
    completion
        .iter()
        .map(|r| {
            let scored: Vec<usize> = (1..r.len()).filter(|&j| r[j]).map(|j| j - 1).collect();
            (scored.first().copied().unwrap_or(0), scored.len())
        })
        .collect()
}

/// The longest completion of the batch (at least 1): the token axis of per-token pair inputs.
fn completion_width(completion: &[Vec<bool>]) -> usize {
    completion_spans(completion)
        .iter()
        .map(|s| s.1)
        .max()
        .unwrap_or(0)
        .max(1)
}

/// `[rows, W]` with W the longest completion: 1 at each row's completion tokens, counted from
/// the completion's first token.
fn relative_mask(completion: &[Vec<bool>], device: &Device) -> Tensor<2> {
    let w = completion_width(completion);
    let spans = completion_spans(completion);
    let m: Vec<f32> = spans
        .iter()
        .flat_map(|&(_, n)| (0..w).map(move |k| if k < n { 1.0 } else { 0.0 }))
        .collect();
    Tensor::<2>::from_data(TensorData::new(m, [spans.len(), w]), device)
}

/// A `[rows, time−1]` statistic at absolute positions as `[rows, W]` at completion positions
/// (token k of the completion at column k), 0 after each row's completion; gradients flow
/// through the gather.
fn completion_relative(t: Tensor<2>, completion: &[Vec<bool>], device: &Device) -> Tensor<2> {
    let [rows, n] = t.dims();
    let w = completion_width(completion);
    let spans = completion_spans(completion);
    let idx: Vec<i64> = spans
        .iter()
        .flat_map(|&(start, _)| (0..w).map(move |k| (start + k).min(n.saturating_sub(1)) as i64))
        .collect();
    let idx = Tensor::<2, Int>::from_data(TensorData::new(idx, [rows, w]), device);
    t.gather(1, idx) * relative_mask(completion, device)
}

/// Every declared input of a pair objective for `batch`, on `device`, from the statistics of
/// the policy's forward (`policy`, asked for [`Needs::policy`]) and the reference's
/// (`reference`, asked for [`Needs::reference`]): policy log-probs and rewards differentiable
/// (they come from the policy's forward on an autodiff device), the rest constants. Per-token
/// inputs are `[B, W]`, W the batch's longest completion (either side), token k of each
/// completion at column k, 0 after its end (each side's mask says where).
pub fn observe(
    inputs: &[Input],
    batch: &Batch,
    pairs: &[Pair],
    policy: &Stats,
    reference: Option<&Stats>,
    vocab_size: usize,
    device: &Device,
) -> Result<Vec<TensorColumn>, ObserveError> {
    let b = batch.pairs.len();
    let counts = token_counts(&batch.completion, device);
    let asked = |what: &str| ObserveError(format!("the forward pass was not asked for {what}"));
    let relative = |t: &Tensor<2>, side: Side| {
        half(
            &completion_relative(t.clone(), &batch.completion, device),
            side,
            b,
        )
    };
    inputs
        .iter()
        .map(|inp| {
            Ok(TensorColumn::Scalar(match &inp.source {
                Source::PolicyLogps(s) => {
                    half(policy.logps.as_ref().ok_or_else(|| asked("log-probs"))?, *s, b)
                }
                Source::Tokens(s) => half(&counts, *s, b),
                Source::ReferenceLogps(s) => {
                    let r = reference.ok_or_else(|| ObserveError("no reference model".into()))?;
                    let logps = r.logps.as_ref().ok_or_else(|| asked("reference log-probs"))?;
                    constant(half(logps, *s, b), device)
                }
                Source::ReferenceEntropy(s) => {
                    let r = reference.and_then(|r| r.entropy.as_ref()).ok_or_else(|| ObserveError("no reference entropies".into()))?;
                    constant(half(r, *s, b), device)
                }
                Source::VocabSize => Tensor::full([b], vocab_size as f64, device),
                Source::Column(c) => {
                    let mut v = Vec::with_capacity(b);
                    for &i in &batch.pairs {
                        let x = pairs[i].columns.get(c).ok_or_else(|| {
                            ObserveError(format!(
                                "line {}: the objective reads `{}` from column `{c}`, which the row lacks",
                                pairs[i].line, inp.name
                            ))
                        })?;
                        v.push(*x as f32);
                    }
                    Tensor::from_data(TensorData::new(v, [b]), device)
                }
                Source::Reward(s) => {
                    let r = policy.rewards.as_ref().ok_or_else(|| {
                        ObserveError(format!(
                            "`{}` is a reward-model output, but the model has no reward head (train with `--task reward`)",
                            inp.name
                        ))
                    })?;
                    half(r, *s, b)
                }
                Source::PolicyTokenLogps(s) => {
                    let t = policy.token_logps.as_ref().ok_or_else(|| asked("per-token log-probs"))?;
                    return Ok(TensorColumn::Tokens(relative(t, *s)));
                }
                Source::ReferenceTokenLogps(s) => {
                    let r = reference.ok_or_else(|| ObserveError("no reference model".into()))?;
                    let t = r.token_logps.as_ref().ok_or_else(|| asked("reference per-token log-probs"))?;
                    return Ok(TensorColumn::Tokens(constant(relative(t, *s), device)));
                }
                Source::PolicyTokenCollision(s) => {
                    let t = policy.collision.as_ref().ok_or_else(|| asked("per-token collision probabilities"))?;
                    return Ok(TensorColumn::Tokens(constant(relative(t, *s), device)));
                }
                Source::TokenMask(s) => {
                    return Ok(TensorColumn::Tokens(half(&relative_mask(&batch.completion, device), *s, b)));
                }
                Source::TokenPosition => {
                    let w = completion_width(&batch.completion);
                    let pos: Vec<f32> = (0..b).flat_map(|_| (0..w).map(|k| k as f32)).collect();
                    return Ok(TensorColumn::Tokens(Tensor::from_data(TensorData::new(pos, [b, w]), device)));
                }
                Source::Rollout(_) => {
                    return Err(ObserveError(format!(
                        "`{}` ({}) is an on-policy rollout observable; `poc run` trains on preference pairs and does not sample completions",
                        inp.name,
                        inp.source.text()
                    )));
                }
            }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs_of(src: &str) -> Needs {
        let c = poc_compiler::compile(src).expect("the objective compiles");
        needs(&c.objective.inputs)
    }

    #[test]
    fn what_the_shipped_objectives_need() {
        // sft reads the chosen side of the policy alone: chosen-only batches, no reference.
        let sft = needs_of(include_str!("../../objectives/sft.po"));
        assert!(sft.policy == Want::LOGPS && !sft.rejected && !sft.reads_reference());
        let dpo = needs_of(include_str!("../../objectives/dpo.po"));
        assert!(dpo.policy == Want::LOGPS && dpo.rejected && dpo.reference == Want::LOGPS);
        // MallowsPO-θ reads the reference's entropies; MIPO its log-probs only; bt_reward is a
        // reward model of both sides.
        let mallows = needs_of(include_str!("../../objectives/mallows_theta.po"));
        assert!(mallows.reference.entropy && mallows.rejected);
        let mipo = needs_of(include_str!("../../objectives/mipo.po"));
        assert!(mipo.reads_reference() && !mipo.reference.entropy && mipo.rejected);
        let rm = needs_of(include_str!("../../objectives/bt_reward.po"));
        assert!(rm.trains_reward_model() && rm.rejected && !rm.reads_reference());
        assert_eq!(rm.policy, Want::REWARDS);
        // PPO: per-token log-probs and values of the policy now and as it sampled, the
        // reference's per-token log-probs, the reward model's score.
        let ppo = needs_of(include_str!("../../objectives/ppo.po"));
        let tokens = Want {
            token_logps: true,
            ..Want::NONE
        };
        let with_values = Want {
            values: true,
            ..tokens
        };
        assert_eq!(ppo.policy, with_values);
        assert_eq!(ppo.rollout_policy, with_values);
        assert_eq!(ppo.reference, tokens);
        assert_eq!(ppo.reward_model, Want::REWARDS);
        assert!(!ppo.rejected && !ppo.trains_reward_model());
        // A score column of the rejected side is data, not a forward of it.
        let chosen_only = needs_of(
            "/// Test.\nobjective t\ninput policy_chosen_logps\ninput score_rejected\nloss = -policy_chosen_logps * score_rejected\n",
        );
        assert!(!chosen_only.rejected);
    }
}
