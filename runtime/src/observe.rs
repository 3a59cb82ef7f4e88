//! Observables: from one forward of the policy (and of the reference) over a batch's chosen
//! and rejected rows, every input an objective declares, by its [`Source`]. Only what the
//! objective reads is computed (entropies only when declared).

use crate::data::{Batch, Pair};
use crate::model::SequenceStats;
use crate::model::llama::Want;
use burn::tensor::{Device, Tensor, TensorData};
use poc_compiler::{Input, Side, Source};

/// Which expensive statistics the objective needs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    /// What the trained model's forward must give: log-probs and/or reward-head outputs.
    pub policy: Want,
    /// Any reference input (log-probs or entropies).
    pub reference: bool,
    /// Reference entropies.
    pub entropy: bool,
    /// Anything of the rejected completion from a forward pass (log-probs, token counts,
    /// entropies, rewards): without it, batches hold the chosen rows alone.
    pub rejected: bool,
}

impl Needs {
    /// Whether the trained model is a reward model (the objective reads reward outputs).
    pub fn reward_model(&self) -> bool {
        self.policy.rewards
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
        | Source::Reward(Side::Rejected) = i.source
        {
            n.rejected = true;
        }
        match i.source {
            Source::PolicyLogps(_) => n.policy.logps = true,
            Source::Reward(_) => n.policy.rewards = true,
            Source::ReferenceLogps(_) => n.reference = true,
            Source::ReferenceEntropy(_) => {
                n.reference = true;
                n.entropy = true;
            }
            _ => {}
        }
    }
    n
}

/// An input the runtime cannot provide for these rows.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ObserveError(pub String);

/// `[B]` halves of a `[2B]` statistic: chosen rows first (a chosen-only batch's `[B]` statistic
/// is its chosen half).
fn half(t: &Tensor<1>, side: Side, b: usize) -> Tensor<1> {
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

/// Every declared input for `batch`, on `device`: policy log-probs differentiable (they come
/// from the policy's forward on an autodiff device), the rest constants.
pub fn observe(
    inputs: &[Input],
    batch: &Batch,
    pairs: &[Pair],
    policy: &SequenceStats,
    reference: Option<&SequenceStats>,
    vocab_size: usize,
    device: &Device,
) -> Result<Vec<Tensor<1>>, ObserveError> {
    let b = batch.pairs.len();
    inputs
        .iter()
        .map(|inp| {
            Ok(match &inp.source {
                Source::PolicyLogps(s) => half(&policy.logps, *s, b),
                Source::Tokens(s) => constant(half(&policy.tokens, *s, b), device),
                Source::ReferenceLogps(s) => {
                    let r = reference.ok_or_else(|| ObserveError("no reference model".into()))?;
                    constant(half(&r.logps, *s, b), device)
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
                Source::Rollout(_) => {
                    return Err(ObserveError(format!(
                        "`{}` ({}) is an on-policy rollout observable; `poc run` trains on preference pairs and does not sample completions",
                        inp.name,
                        inp.source.text()
                    )));
                }
            })
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
        assert!(sft.policy.logps && !sft.rejected && !sft.reference && !sft.entropy);
        let dpo = needs_of(include_str!("../../objectives/dpo.po"));
        assert!(dpo.policy.logps && dpo.rejected && dpo.reference && !dpo.entropy);
        // MallowsPO-θ reads the reference's entropies; MIPO its log-probs only; bt_reward is a
        // reward model of both sides.
        let mallows = needs_of(include_str!("../../objectives/mallows_theta.po"));
        assert!(mallows.reference && mallows.entropy && mallows.rejected);
        let mipo = needs_of(include_str!("../../objectives/mipo.po"));
        assert!(mipo.reference && !mipo.entropy && mipo.rejected);
        let rm = needs_of(include_str!("../../objectives/bt_reward.po"));
        assert!(rm.reward_model() && rm.rejected && !rm.reference);
        // A score column of the rejected side is data, not a forward of it.
        let chosen_only = needs_of(
            "/// Test.\nobjective t\ninput policy_chosen_logps\ninput score_rejected\nloss = -policy_chosen_logps * score_rejected\n",
        );
        assert!(!chosen_only.rejected);
    }
}
