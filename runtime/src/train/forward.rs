//! Every forward pass training makes, and the observables built from them: the one place
//! where the training core runs a model (through [`crate::observe::stats`]); the declared
//! inputs are then built by [`crate::observe::observe`].

use crate::data::Batch;
use crate::model::Llama;
use crate::observe::{Needs, Rows, Stats, Want, completion_mask, stats};
use burn::tensor::{Device, Tensor};

/// What the objective reads of the trained model over a pair batch (chosen rows, then
/// rejected rows when the batch has them), on `device`.
pub(crate) fn policy_pairs(policy: &Llama, batch: &Batch, need: Needs, device: &Device) -> Stats {
    stats(policy, Rows::from(batch), need.policy, device)
}

/// What `want` asks of a frozen model over a pair batch (sequence log-probs, mean entropies,
/// per-token log-probs).
pub(crate) fn frozen_pairs(model: &Llama, batch: &Batch, want: Want, device: &Device) -> Stats {
    stats(model, Rows::from(batch), want, device)
}

/// Per-token statistics of a rollout batch, `[batch, time−1]` each.
pub(crate) struct RolloutStats {
    /// log p of token j+1 at position j, 0 outside the completion.
    pub token_logps: Tensor<2>,
    /// The value head at position j (masked as the log-probs), when asked for and present.
    pub values: Option<Tensor<2>>,
    /// 1 where token j+1 is a completion token.
    pub mask: Tensor<2>,
}

/// Per-token log-probs (and values when `values`) over a rollout batch.
pub(crate) fn rollout_tokens(
    model: &Llama,
    rollouts: &Batch,
    values: bool,
    device: &Device,
) -> RolloutStats {
    let want = Want {
        token_logps: true,
        values,
        ..Want::NONE
    };
    let s = stats(model, Rows::from(rollouts), want, device);
    let mask = completion_mask(&rollouts.completion, device);
    RolloutStats {
        token_logps: s.token_logps.unwrap_or_else(|| mask.zeros_like()),
        values: s.values,
        mask,
    }
}

/// The reward head's score of every rollout.
pub(crate) fn rollout_scores(
    reward_model: &Llama,
    rollouts: &Batch,
    device: &Device,
) -> Option<Tensor<1>> {
    stats(reward_model, Rows::from(rollouts), Want::REWARDS, device).rewards
}
