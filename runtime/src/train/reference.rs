//! The reference a policy is compared with, for both loops: a frozen model, the policy itself
//! with its LoRA adapters switched off, statistics precomputed once, or none.

use super::forward;
use crate::data::{Batch, Pair};
use crate::lower::to_f64;
use crate::model::Llama;
use crate::observe::{Stats, Want};
use burn::tensor::{Device, Tensor};

/// Where reference statistics come from.
pub enum Reference {
    /// No reference (reference-free objectives).
    None,
    /// A frozen model, run on every batch.
    Model(Box<Llama>),
    /// The policy itself with its LoRA adapters switched off: no second copy of the weights.
    AdaptersOff,
    /// Precomputed once (`--precompute-ref`); no reference model is held during training.
    Cached(RefCache),
}

/// `policy` with its LoRA adapters switched off: its frozen base, the reference of a LoRA run.
pub fn adapters_off(policy: &Llama) -> Llama {
    let mut base = policy.clone();
    base.adapters_enabled = false;
    base
}

impl Reference {
    /// The starting model as the reference of a run whose objective reads one (`wanted`): a
    /// frozen copy of `policy` (no gradients; its matrices in the compute dtype), or under LoRA (`lora`) the policy with its
    /// adapters off.
    pub fn starting(policy: &Llama, wanted: bool, lora: bool) -> Reference {
        match (wanted, lora) {
            (false, _) => Reference::None,
            (true, true) => Reference::AdaptersOff,
            (true, false) => {
                Reference::Model(Box::new(burn::module::Module::valid(policy).store_frozen()))
            }
        }
    }

    /// The model that gives this reference's statistics, `policy` being the trained model on a
    /// plain (no-gradient) device; `None` for no reference or a cache.
    fn model<'a>(&'a self, policy: &Llama) -> Option<std::borrow::Cow<'a, Llama>> {
        match self {
            Reference::None | Reference::Cached(_) => None,
            Reference::Model(m) => Some(std::borrow::Cow::Borrowed(m)),
            Reference::AdaptersOff => Some(std::borrow::Cow::Owned(adapters_off(policy))),
        }
    }

    /// The statistics `want` asks of the reference over a pair batch; `policy` is the trained
    /// model on a plain device. (A cache holds sequence log-probs and entropies: setup refuses
    /// to cache a reference whose per-token log-probs are read.)
    pub fn pair_stats(
        &self,
        policy: &Llama,
        batch: &Batch,
        want: Want,
        device: &Device,
    ) -> Option<Stats> {
        match self {
            Reference::Cached(cache) => Some(cache.stats(batch, device)),
            other => other
                .model(policy)
                .map(|m| forward::frozen_pairs(&m, batch, want, device)),
        }
    }

    /// Per-token log-probs of a rollout batch; `policy` is the trained model on a plain
    /// device. A cache (of pairs) has none.
    pub(crate) fn rollout_stats(
        &self,
        policy: &Llama,
        rollouts: &Batch,
        device: &Device,
    ) -> Option<forward::RolloutStats> {
        self.model(policy)
            .map(|m| forward::rollout_tokens(&m, rollouts, false, device))
    }
}

/// Reference log-probs (and entropies) of every pair, computed in one no-grad pass.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct RefCache {
    /// What the cache was computed for (model, data, max length); a mismatch recomputes.
    pub fingerprint: String,
    /// Per pair: [chosen_logps, rejected_logps].
    pub logps: Vec<[f64; 2]>,
    /// Per pair: [chosen_entropy, rejected_entropy], if computed.
    pub entropy: Option<Vec<[f64; 2]>>,
}

impl RefCache {
    /// One no-grad pass of `reference` over `pairs`, `batch_size` pairs at a time.
    pub fn compute(
        reference: &Llama,
        pairs: &[Pair],
        pad: u32,
        batch_size: usize,
        entropy: bool,
        fingerprint: String,
        device: &Device,
    ) -> RefCache {
        let mut logps = Vec::with_capacity(pairs.len());
        let mut ents = Vec::with_capacity(pairs.len());
        let idx: Vec<usize> = (0..pairs.len()).collect();
        let want = Want {
            entropy,
            ..Want::LOGPS
        };
        for chunk in idx.chunks(batch_size.max(1)) {
            let batch = crate::data::pairs::batch_of(pairs, chunk, pad);
            let st = forward::frozen_pairs(reference, &batch, want, device);
            let lp = st.logps.map(to_f64).unwrap_or_default();
            let en = st.entropy.map(to_f64);
            let b = chunk.len();
            for j in 0..b {
                logps.push([lp[j], lp[b + j]]);
                if let Some(e) = &en {
                    ents.push([e[j], e[b + j]]);
                }
            }
        }
        RefCache {
            fingerprint,
            logps,
            entropy: entropy.then_some(ents),
        }
    }

    /// The cached statistics of `batch`, shaped like a reference forward's (chosen rows, then
    /// rejected rows).
    pub fn stats(&self, batch: &Batch, device: &Device) -> Stats {
        let col = |k: usize, v: &[[f64; 2]]| -> Vec<f32> {
            batch.pairs.iter().map(|&i| v[i][k] as f32).collect()
        };
        // The batch's rows: chosen, then rejected unless it holds the chosen rows alone.
        let rejected = batch.tokens.len() > batch.pairs.len();
        let both = |v: &[[f64; 2]]| {
            let mut x = col(0, v);
            if rejected {
                x.extend(col(1, v));
            }
            let n = x.len();
            Tensor::<1>::from_data(burn::tensor::TensorData::new(x, [n]), device)
        };
        Stats {
            logps: Some(both(&self.logps)),
            entropy: self.entropy.as_deref().map(both),
            ..Stats::default()
        }
    }
}
