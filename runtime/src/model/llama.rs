//! The Llama-3 decoder in burn: embedding, RMSNorm, RoPE (with Llama-3.1 frequency scaling),
//! grouped-query causal attention, SwiGLU, final norm, tied or untied output head; and the
//! per-sequence statistics objectives read (completion log-probs, token counts, entropies).
//!
//! Linear weights are stored `[in, out]` (burn's layout); the loader transposes HF's
//! `[out, in]`.

use super::config::{LlamaConfig, inv_frequencies};
use burn::module::{Module, Param};
use burn::tensor::activation::{log_softmax, silu, softmax};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand_distr_normal::sample_normal;

/// One decoder block.
#[derive(Module, Debug)]
pub struct Block {
    /// RMSNorm before attention, `[hidden]`.
    pub attn_norm: Param<Tensor<1>>,
    /// Query projection `[hidden, heads·head_dim]`.
    pub wq: Param<Tensor<2>>,
    /// Key projection `[hidden, kv_heads·head_dim]`.
    pub wk: Param<Tensor<2>>,
    /// Value projection `[hidden, kv_heads·head_dim]`.
    pub wv: Param<Tensor<2>>,
    /// Output projection `[heads·head_dim, hidden]`.
    pub wo: Param<Tensor<2>>,
    /// RMSNorm before the MLP, `[hidden]`.
    pub mlp_norm: Param<Tensor<1>>,
    /// SwiGLU gate `[hidden, inter]`.
    pub w_gate: Param<Tensor<2>>,
    /// SwiGLU up `[hidden, inter]`.
    pub w_up: Param<Tensor<2>>,
    /// SwiGLU down `[inter, hidden]`.
    pub w_down: Param<Tensor<2>>,
}

/// The whole decoder.
#[derive(Module, Debug)]
pub struct Llama {
    /// Token embedding `[vocab, hidden]`.
    pub embed: Param<Tensor<2>>,
    /// Decoder blocks.
    pub layers: Vec<Block>,
    /// Final RMSNorm `[hidden]`.
    pub norm: Param<Tensor<1>>,
    /// Output head `[hidden, vocab]`; `None` when tied to the embedding.
    pub lm_head: Option<Param<Tensor<2>>>,
    /// The configuration (not trained).
    #[module(skip)]
    pub config: LlamaConfig,
}

/// Per-sequence statistics over the completion tokens.
#[derive(Debug, Clone)]
pub struct SequenceStats {
    /// Σ log p(token) over completion tokens, `[batch]`.
    pub logps: Tensor<1>,
    /// Number of completion tokens, `[batch]`.
    pub tokens: Tensor<1>,
    /// Mean next-token entropy (nats) over completion positions, `[batch]`, if asked for.
    pub entropy: Option<Tensor<1>>,
}

mod rand_distr_normal {
    use rand::Rng;
    /// A standard-normal sample by Box-Muller (keeps the dependency list short).
    pub fn sample_normal(rng: &mut impl Rng) -> f64 {
        let u1: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
        let u2: f64 = rng.random();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

fn param<const D: usize>(t: Tensor<D>) -> Param<Tensor<D>> {
    Param::from_tensor(t)
}

impl Llama {
    /// A randomly initialized model (HF's scheme: N(0, 0.02) weights, unit norms), the same
    /// for the same seed. `config` should have passed [`LlamaConfig::validate`] (presets and
    /// [`LlamaConfig::from_file`] do).
    pub fn random(config: &LlamaConfig, seed: u64, device: &Device) -> Llama {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut normal = |rows: usize, cols: usize| -> Tensor<2> {
            let data: Vec<f32> = (0..rows * cols)
                .map(|_| (0.02 * sample_normal(&mut rng)) as f32)
                .collect();
            Tensor::from_data(TensorData::new(data, [rows, cols]), device)
        };
        let ones = |n: usize| Tensor::<1>::ones([n], device);
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let q = config.num_attention_heads * config.head_dim();
        let kv = config.kv_heads() * config.head_dim();
        let embed = param(normal(config.vocab_size, h));
        let layers = (0..config.num_hidden_layers)
            .map(|_| Block {
                attn_norm: param(ones(h)),
                wq: param(normal(h, q)),
                wk: param(normal(h, kv)),
                wv: param(normal(h, kv)),
                wo: param(normal(q, h)),
                mlp_norm: param(ones(h)),
                w_gate: param(normal(h, i)),
                w_up: param(normal(h, i)),
                w_down: param(normal(i, h)),
            })
            .collect();
        let lm_head = (!config.tie_word_embeddings).then(|| param(normal(h, config.vocab_size)));
        Llama {
            embed,
            layers,
            norm: param(ones(h)),
            lm_head,
            config: config.clone(),
        }
    }

    /// Logits `[batch, time, vocab]` for `tokens` `[batch, time]`. `mask` (`[batch][time]`)
    /// marks real tokens: attention is causal and never looks at a padding token. Rows are
    /// right-padded, so positions (for RoPE) are `0..time` in every row; logits at padding
    /// positions are meaningless.
    pub fn forward(&self, tokens: Tensor<2, Int>, mask: &[Vec<bool>]) -> Tensor<3> {
        let [b, t] = tokens.dims();
        let cfg = &self.config;
        let device = tokens.device();
        let h = cfg.hidden_size;
        let mut x = self
            .embed
            .val()
            .select(0, tokens.reshape([b * t]))
            .reshape([b, t, h]);
        let (cos, sin) = self.rope_tables(t, &device);
        let allowed = attention_mask(mask, t, &device);
        for layer in &self.layers {
            let a = rms_norm(x.clone(), &layer.attn_norm.val(), cfg.rms_norm_eps);
            x = x + self.attention(layer, a, &cos, &sin, &allowed);
            let m = rms_norm(x.clone(), &layer.mlp_norm.val(), cfg.rms_norm_eps);
            let gate = silu(linear(m.clone(), &layer.w_gate));
            let up = linear(m, &layer.w_up);
            x = x + linear(gate * up, &layer.w_down);
        }
        let x = rms_norm(x, &self.norm.val(), cfg.rms_norm_eps);
        let head = match &self.lm_head {
            Some(w) => w.val(),
            None => self.embed.val().transpose(),
        };
        let [b, t, _] = x.dims();
        let v = head.dims()[1];
        x.reshape([b * t, h]).matmul(head).reshape([b, t, v])
    }

    fn attention(
        &self,
        l: &Block,
        x: Tensor<3>,
        cos: &Tensor<4>,
        sin: &Tensor<4>,
        allowed: &Tensor<4, Bool>,
    ) -> Tensor<3> {
        let cfg = &self.config;
        let [b, t, _] = x.dims();
        let (nh, nkv, dh) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
        let heads = |w: &Param<Tensor<2>>, n: usize| {
            x.clone()
                .matmul(w.val().unsqueeze())
                .reshape([b, t, n, dh])
                .swap_dims(1, 2)
        };
        let q = rope(heads(&l.wq, nh), cos, sin);
        let k = rope(heads(&l.wk, nkv), cos, sin);
        let v = heads(&l.wv, nkv);
        let (k, v) = (repeat_kv(k, nh / nkv), repeat_kv(v, nh / nkv));
        let scores = q.matmul(k.swap_dims(2, 3)) / (dh as f64).sqrt();
        let scores = scores.mask_fill(allowed.clone().bool_not().expand([b, nh, t, t]), -1e9);
        let out = softmax(scores, 3).matmul(v);
        out.swap_dims(1, 2)
            .reshape([b, t, nh * dh])
            .matmul(l.wo.val().unsqueeze())
    }

    /// `cos`, `sin` of shape `[1, 1, time, head_dim]` in HF's rotate-half layout.
    fn rope_tables(&self, t: usize, device: &Device) -> (Tensor<4>, Tensor<4>) {
        let dh = self.config.head_dim();
        let rope = self.config.rope().unwrap_or(super::config::Rope {
            theta: 10000.0,
            llama3: None,
        });
        let inv = inv_frequencies(&rope, dh);
        let mut cos = Vec::with_capacity(t * dh);
        let mut sin = Vec::with_capacity(t * dh);
        for pos in 0..t {
            // Both halves of a head share the frequencies (rotate-half layout).
            for _half in 0..2 {
                for f in &inv {
                    let angle = pos as f64 * f;
                    cos.push(angle.cos() as f32);
                    sin.push(angle.sin() as f32);
                }
            }
        }
        let make = |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, [1, 1, t, dh]), device);
        (make(cos), make(sin))
    }

    /// The observables of a batch: per row, the summed log-probability of its completion
    /// tokens, their count, and (only when `want_entropy`) the mean full-vocabulary entropy of
    /// the next-token distribution at the positions that predict them.
    ///
    /// `tokens`, `mask` and `completion` are `[batch][time]`, every row of the same length
    /// (a [`crate::data::Batch`] is); `mask` marks real tokens and `completion[b][t]` marks
    /// token `t` of row `b` as a completion token (a subset of the real ones). Token `t` is
    /// scored by the distribution at position `t - 1`, so a completion token at position 0
    /// is never counted. One `log_softmax` serves the log-probs and the entropies. On an
    /// autodiff device the log-probs (and entropies) carry gradients.
    pub fn sequence_stats(
        &self,
        tokens: &[Vec<u32>],
        mask: &[Vec<bool>],
        completion: &[Vec<bool>],
        want_entropy: bool,
        device: &Device,
    ) -> SequenceStats {
        let b = tokens.len();
        let t = tokens.first().map(|r| r.len()).unwrap_or(0);
        if b == 0 || t < 2 {
            // Nothing is predicted: no completion token can be scored.
            let zeros = || Tensor::<1>::zeros([b], device);
            return SequenceStats {
                logps: zeros(),
                tokens: zeros(),
                entropy: want_entropy.then(zeros),
            };
        }
        let flat: Vec<i64> = tokens
            .iter()
            .flat_map(|r| r.iter().map(|&x| x as i64))
            .collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(flat, [b, t]), device);
        let logits = self.forward(ids, mask);
        let v = self.config.vocab_size;
        let logp = log_softmax(logits.slice([0..b, 0..t - 1, 0..v]), 2);
        let targets: Vec<i64> = tokens
            .iter()
            .flat_map(|r| r[1..].iter().map(|&x| x as i64))
            .collect();
        let targets = Tensor::<3, Int>::from_data(TensorData::new(targets, [b, t - 1, 1]), device);
        let tok_logp = logp.clone().gather(2, targets).reshape([b, t - 1]);
        let cm: Vec<f32> = completion
            .iter()
            .flat_map(|r| r[1..].iter().map(|&c| if c { 1.0 } else { 0.0 }))
            .collect();
        let cm = Tensor::<2>::from_data(TensorData::new(cm, [b, t - 1]), device);
        let counts = cm.clone().sum_dim(1).reshape([b]);
        let logps = (tok_logp * cm.clone()).sum_dim(1).reshape([b]);
        let entropy = want_entropy.then(|| {
            let h = (logp.clone().exp() * logp)
                .sum_dim(2)
                .reshape([b, t - 1])
                .neg();
            (h * cm).sum_dim(1).reshape([b]) / counts.clone().clamp_min(1.0)
        });
        SequenceStats {
            logps,
            tokens: counts,
            entropy,
        }
    }
}

/// `x · w` for `x` `[b, t, in]` and `w` `[in, out]`, as one 2-D matrix product.
fn linear(x: Tensor<3>, w: &Param<Tensor<2>>) -> Tensor<3> {
    let [b, t, i] = x.dims();
    let w = w.val();
    let o = w.dims()[1];
    x.reshape([b * t, i]).matmul(w).reshape([b, t, o])
}

/// HF's RMSNorm: `x / sqrt(mean(x²) + eps) · weight`.
fn rms_norm(x: Tensor<3>, weight: &Tensor<1>, eps: f64) -> Tensor<3> {
    let ms = x.clone().powf_scalar(2.0).mean_dim(2);
    x * (ms + eps).sqrt().recip() * weight.clone().unsqueeze::<3>()
}

/// `x·cos + rotate_half(x)·sin`, rotate_half(x) = [-x₂, x₁].
fn rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let [b, h, t, d] = x.dims();
    let x1 = x.clone().slice([0..b, 0..h, 0..t, 0..d / 2]);
    let x2 = x.clone().slice([0..b, 0..h, 0..t, d / 2..d]);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos.clone() + rotated * sin.clone()
}

/// `[b, kv, t, d]` → `[b, kv·n, t, d]`, each kv head repeated n times (HF's repeat_kv).
fn repeat_kv(x: Tensor<4>, n: usize) -> Tensor<4> {
    if n == 1 {
        return x;
    }
    let [b, kv, t, d] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([b, kv, n, t, d])
        .reshape([b, kv * n, t, d])
}

/// `[b, 1, t, t]`: query i may attend to key j when j ≤ i and j is a real token.
fn attention_mask(mask: &[Vec<bool>], t: usize, device: &Device) -> Tensor<4, Bool> {
    let b = mask.len();
    let mut data = Vec::with_capacity(b * t * t);
    for row in mask {
        for i in 0..t {
            for j in 0..t {
                data.push(j <= i && row.get(j).copied().unwrap_or(false));
            }
        }
    }
    Tensor::<4, Bool>::from_data(TensorData::new(data, [b, 1, t, t]), device)
}
