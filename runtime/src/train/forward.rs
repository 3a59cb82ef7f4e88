//! Every forward pass training makes, and the observables built from them: the one place
//! where the training core calls the model (`Llama::stats`, `sequence_stats`, `token_stats`)
//! and [`crate::observe`].

use crate::data::{Batch, Pair};
use crate::model::{Llama, SequenceStats, TokenStats, Want};
use crate::observe::{Needs, ObserveError, observe};
use burn::tensor::{Device, Tensor};
use poc_compiler::Input;

/// What the objective reads of the trained model over a pair batch (chosen rows, then
/// rejected rows when the batch has them), on `device`.
pub(crate) fn policy_pairs(
    policy: &Llama,
    batch: &Batch,
    need: Needs,
    device: &Device,
) -> SequenceStats {
    policy.stats(
        &batch.tokens,
        &batch.mask,
        &batch.completion,
        need.policy,
        device,
    )
}

/// Sequence log-probs (and mean entropies when `entropy`) of a frozen model over a pair batch.
pub(crate) fn frozen_pairs(
    model: &Llama,
    batch: &Batch,
    entropy: bool,
    device: &Device,
) -> SequenceStats {
    model.sequence_stats(
        &batch.tokens,
        &batch.mask,
        &batch.completion,
        entropy,
        device,
    )
}

/// Per-token log-probs (and values when `values`) over a rollout batch.
pub(crate) fn rollout_tokens(
    model: &Llama,
    rollouts: &Batch,
    values: bool,
    device: &Device,
) -> TokenStats {
    model.token_stats(
        &rollouts.tokens,
        &rollouts.mask,
        &rollouts.completion,
        values,
        device,
    )
}

/// The reward head's score of every rollout.
pub(crate) fn rollout_scores(
    reward_model: &Llama,
    rollouts: &Batch,
    device: &Device,
) -> Option<Tensor<1>> {
    let want = Want {
        rewards: true,
        ..Want::default()
    };
    reward_model
        .stats(
            &rollouts.tokens,
            &rollouts.mask,
            &rollouts.completion,
            want,
            device,
        )
        .rewards
}

/// The objective's declared inputs over a pair batch, on `device`.
pub(crate) fn pair_inputs(
    inputs: &[Input],
    batch: &Batch,
    pairs: &[Pair],
    policy: &SequenceStats,
    reference: Option<&SequenceStats>,
    vocab_size: usize,
    device: &Device,
) -> Result<Vec<Tensor<1>>, ObserveError> {
    observe(inputs, batch, pairs, policy, reference, vocab_size, device)
}
