//! The floating-point operations of a training step, counted from the model's shapes and the
//! step's own sequences: what MFU (model FLOPs utilisation) divides by the device's peak.
//!
//! Counted as model FLOPs (PaLM's appendix B convention): a multiply-add is 2 FLOPs; work
//! repeated by gradient checkpointing is not counted. Per token, a matrix of `n` parameters
//! costs `2n` forward, `2n` for the gradient of its input and `2n` for the gradient of its
//! weight, which only a trained matrix needs: with every matrix trained (a full fine-tune) and
//! a live reference that is `8N` per token; under LoRA, whose base is frozen, `6N` plus the
//! adapters' own work. `N` counts the matrices that multiply (every projection of every block
//! and the output head, tied or not), not the input embedding, which is a lookup. Causal
//! attention adds, per layer and sequence of `T` tokens, `2·T²·d` forward (scores and values,
//! half the square; `d` = heads × head width) and twice that backward.

use crate::model::{LlamaConfig, LoraConfig};

/// What a step's FLOPs depend on besides its sequences.
#[derive(Debug, Clone)]
pub struct StepCost {
    /// Parameters of the matrices that multiply, per token (blocks and head; no embedding).
    pub matmul_params: f64,
    /// Parameters of the LoRA adapters (0 for a full fine-tune).
    pub adapter_params: f64,
    /// Whether the base matrices are trained (a full fine-tune) and need weight gradients.
    pub full: bool,
    /// Whether a reference model runs a forward pass each step (a frozen copy, or the base
    /// with its adapters off; not when its statistics are cached or unread).
    pub reference: bool,
    /// Σ over layers of the attention width (query heads × head width).
    pub attention_width: f64,
}

/// Parameters of the matrices of `config` that multiply each token (no input embedding).
pub fn matmul_params(config: &LlamaConfig) -> f64 {
    let (h, i) = (config.hidden_size as f64, config.intermediate_size as f64);
    let q = (config.num_attention_heads * config.head_dim()) as f64;
    let kv = (config.kv_heads() * config.head_dim()) as f64;
    let per_layer = h * q + 2.0 * h * kv + q * h + 3.0 * h * i;
    per_layer * config.num_hidden_layers as f64 + h * config.vocab_size as f64
}

impl StepCost {
    /// The cost model of training `config` (with adapters `lora`, or fully), with or without
    /// a reference forward pass per step.
    pub fn new(config: &LlamaConfig, lora: Option<&LoraConfig>, reference: bool) -> StepCost {
        StepCost {
            matmul_params: matmul_params(config),
            adapter_params: lora.map_or(0.0, |l| crate::plan::lora_params(config, l) as f64),
            full: lora.is_none(),
            reference,
            attention_width: (config.num_attention_heads
                * config.head_dim()
                * config.num_hidden_layers) as f64,
        }
    }

    /// FLOPs of one forward pass over a sequence of `t` tokens (adapters excluded).
    fn forward(&self, t: f64) -> f64 {
        2.0 * self.matmul_params * t + 2.0 * self.attention_width * t * t
    }

    /// FLOPs of a training step over sequences of the given lengths (real tokens, padding
    /// excluded): the policy's forward and backward, the adapters' share, the reference's
    /// forward.
    pub fn step(&self, lengths: impl IntoIterator<Item = usize>) -> f64 {
        let mut total = 0.0;
        for t in lengths {
            let t = t as f64;
            let forward = self.forward(t);
            // The backward's input gradients cost what the forward did, attention twice.
            let input_grads = 2.0 * self.matmul_params * t + 4.0 * self.attention_width * t * t;
            let weight_grads = if self.full {
                2.0 * self.matmul_params * t
            } else {
                0.0
            };
            // Each adapter (A then B) forward, input and weight gradients.
            let adapters = 6.0 * self.adapter_params * t;
            let reference = if self.reference { forward } else { 0.0 };
            total += forward + input_grads + weight_grads + adapters + reference;
        }
        total
    }
}

/// The dense bf16 peak (TFLOP/s, without sparsity) of a GPU named as `nvidia-smi` or
/// `torch.cuda.get_device_name` names it, from the vendors' data sheets; `None` for a device
/// this table does not know (give the peak yourself then).
pub fn peak_bf16_tflops(name: &str) -> Option<f64> {
    let n = name.to_ascii_uppercase();
    let table: [(&[&str], f64); 9] = [
        (&["H200"], 989.0),
        (&["H100", "PCIE"], 756.0),
        (&["H100", "NVL"], 835.0),
        (&["H100"], 989.0),
        (&["H800"], 989.0),
        (&["GH200"], 989.0),
        (&["A100"], 312.0),
        (&["L40S"], 362.0),
        (&["B200"], 2250.0),
    ];
    table
        .iter()
        .find(|(words, _)| words.iter().all(|w| n.contains(w)))
        .map(|&(_, peak)| peak)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LlamaConfig {
        LlamaConfig::preset("tiny").unwrap()
    }

    #[test]
    fn a_full_fine_tune_with_a_reference_is_eight_n_per_token_and_lora_six_n() {
        let c = config();
        let n = matmul_params(&c);
        // One token: the attention term (2·d·1²·3 + ...) is negligible next to N only for
        // large models, so compare with it removed.
        let no_attention = |mut s: StepCost| {
            s.attention_width = 0.0;
            s
        };
        let full = no_attention(StepCost::new(&c, None, true));
        assert!((full.step([1]) - 8.0 * n).abs() < 1e-6 * n);
        let lora = LoraConfig {
            rank: 4,
            alpha: 8.0,
            targets: crate::model::Target::ALL.to_vec(),
        };
        let l = no_attention(StepCost::new(&c, Some(&lora), true));
        let adapters = crate::plan::lora_params(&c, &lora) as f64;
        assert!((l.step([1]) - (6.0 * n + 6.0 * adapters)).abs() < 1e-6 * n);
        let no_ref = no_attention(StepCost::new(&c, Some(&lora), false));
        assert!((no_ref.step([1]) - (4.0 * n + 6.0 * adapters)).abs() < 1e-6 * n);
    }

    #[test]
    fn the_embedding_is_not_counted_and_the_head_is() {
        let c = config();
        let (h, v) = (c.hidden_size as f64, c.vocab_size as f64);
        let mut bigger = c.clone();
        bigger.vocab_size *= 2;
        // Doubling the vocabulary adds one head's worth (h·V), not two (head + embedding).
        assert_eq!(matmul_params(&bigger) - matmul_params(&c), h * v);
    }

    #[test]
    fn attention_grows_with_the_square_of_the_length() {
        let c = config();
        let s = StepCost::new(&c, None, false);
        let d = s.attention_width;
        let linear = |t: f64| 6.0 * s.matmul_params * t;
        // Forward 2·d·T², backward 4·d·T².
        for t in [16usize, 64] {
            let tf = t as f64;
            let attention = s.step([t]) - linear(tf);
            assert!((attention - 6.0 * d * tf * tf).abs() < 1e-6 * attention);
        }
        // Two sequences cost the sum of each.
        assert_eq!(s.step([16, 64]), s.step([16]) + s.step([64]));
    }

    #[test]
    fn peaks_are_chosen_by_device_name() {
        assert_eq!(peak_bf16_tflops("NVIDIA H100 80GB HBM3"), Some(989.0));
        assert_eq!(peak_bf16_tflops("NVIDIA H100 PCIe"), Some(756.0));
        assert_eq!(peak_bf16_tflops("NVIDIA H100 NVL"), Some(835.0));
        assert_eq!(peak_bf16_tflops("NVIDIA H200"), Some(989.0));
        assert_eq!(peak_bf16_tflops("NVIDIA A100-SXM4-80GB"), Some(312.0));
        assert_eq!(peak_bf16_tflops("Tesla T4"), None);
    }
}
