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
    /// Low-rank adapters on this block's projections (all `None` without LoRA).
    pub adapters: BlockAdapters,
}

/// A low-rank adapter on one linear layer (LoRA, Hu et al. 2021, arXiv 2106.09685): the
/// layer computes `x·W + (α/r)·(x·A)·B`. `B` starts at zero, so a fresh adapter leaves the
/// model unchanged.
#[derive(Module, Debug)]
pub struct Adapter {
    /// Down-projection `[in, rank]` (PEFT's `lora_A.weight`, transposed).
    pub a: Param<Tensor<2>>,
    /// Up-projection `[rank, out]` (PEFT's `lora_B.weight`, transposed).
    pub b: Param<Tensor<2>>,
}

/// The adapters of one block, by target projection.
#[derive(Module, Debug, Default)]
pub struct BlockAdapters {
    /// On `self_attn.q_proj`.
    pub q: Option<Adapter>,
    /// On `self_attn.k_proj`.
    pub k: Option<Adapter>,
    /// On `self_attn.v_proj`.
    pub v: Option<Adapter>,
    /// On `self_attn.o_proj`.
    pub o: Option<Adapter>,
    /// On `mlp.gate_proj`.
    pub gate: Option<Adapter>,
    /// On `mlp.up_proj`.
    pub up: Option<Adapter>,
    /// On `mlp.down_proj`.
    pub down: Option<Adapter>,
}

/// A projection of a decoder block that can carry an adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Target {
    /// `self_attn.q_proj`
    Q,
    /// `self_attn.k_proj`
    K,
    /// `self_attn.v_proj`
    V,
    /// `self_attn.o_proj`
    O,
    /// `mlp.gate_proj`
    Gate,
    /// `mlp.up_proj`
    Up,
    /// `mlp.down_proj`
    Down,
}

impl Target {
    /// Every target, in checkpoint order.
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    /// The HF module path inside a block (`self_attn.q_proj`, ...).
    pub fn hf_path(self) -> &'static str {
        match self {
            Target::Q => "self_attn.q_proj",
            Target::K => "self_attn.k_proj",
            Target::V => "self_attn.v_proj",
            Target::O => "self_attn.o_proj",
            Target::Gate => "mlp.gate_proj",
            Target::Up => "mlp.up_proj",
            Target::Down => "mlp.down_proj",
        }
    }

    /// The PEFT target-module name (`q_proj`, ...).
    pub fn module_name(self) -> &'static str {
        self.hf_path()
            .rsplit('.')
            .next()
            .unwrap_or_else(|| self.hf_path())
    }

    /// Parses PEFT-style target lists: `q_proj,v_proj`, `all-linear`.
    pub fn parse_list(s: &str) -> Result<Vec<Target>, String> {
        if s.trim() == "all-linear" {
            return Ok(Target::ALL.to_vec());
        }
        let mut out = Vec::new();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let t = Target::ALL
                .into_iter()
                .find(|t| t.module_name() == name)
                .ok_or_else(|| {
                    format!(
                        "unknown LoRA target module `{name}`: expected a comma-separated list of {} or `all-linear`",
                        Target::ALL.map(|t| t.module_name()).join(", ")
                    )
                })?;
            if !out.contains(&t) {
                out.push(t);
            }
        }
        if out.is_empty() {
            return Err("no LoRA target modules given".into());
        }
        Ok(out)
    }
}

impl Block {
    /// The base weight of projection `t`.
    pub fn weight(&self, t: Target) -> &Param<Tensor<2>> {
        match t {
            Target::Q => &self.wq,
            Target::K => &self.wk,
            Target::V => &self.wv,
            Target::O => &self.wo,
            Target::Gate => &self.w_gate,
            Target::Up => &self.w_up,
            Target::Down => &self.w_down,
        }
    }
}

impl BlockAdapters {
    /// The adapter on projection `t`, if any.
    pub fn get(&self, t: Target) -> Option<&Adapter> {
        match t {
            Target::Q => self.q.as_ref(),
            Target::K => self.k.as_ref(),
            Target::V => self.v.as_ref(),
            Target::O => self.o.as_ref(),
            Target::Gate => self.gate.as_ref(),
            Target::Up => self.up.as_ref(),
            Target::Down => self.down.as_ref(),
        }
    }

    /// The slot of projection `t`'s adapter.
    pub fn slot_mut(&mut self, t: Target) -> &mut Option<Adapter> {
        match t {
            Target::Q => &mut self.q,
            Target::K => &mut self.k,
            Target::V => &mut self.v,
            Target::O => &mut self.o,
            Target::Gate => &mut self.gate,
            Target::Up => &mut self.up,
            Target::Down => &mut self.down,
        }
    }
}

/// LoRA settings: rank, scaling numerator α and the projections that get adapters.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoraConfig {
    /// Rank r of every adapter.
    pub rank: usize,
    /// α; adapters are scaled by α / r.
    pub alpha: f64,
    /// Which projections of every block get an adapter.
    pub targets: Vec<Target>,
}

/// The float type the forward pass computes in. Parameters stay f32 either way (the master
/// weights the optimizer updates); under `Bf16` each weight is cast on use, norms, softmax and
/// log-probs are computed in f32, as mixed-precision training does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Compute {
    /// Everything in f32.
    #[default]
    F32,
    /// Matrix products and activations in bfloat16.
    Bf16,
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
    /// Scalar reward head `[hidden, 1]` of a reward model (HF's
    /// `LlamaForSequenceClassification` with one label: `score.weight`); `None` for a policy.
    pub score: Option<Param<Tensor<2>>>,
    /// Per-token value head `[hidden, 1]` of a PPO policy (trained, not saved in the HF files).
    pub value_head: Option<Param<Tensor<2>>>,
    /// The configuration (not trained).
    #[module(skip)]
    pub config: LlamaConfig,
    /// The LoRA settings when the blocks carry adapters.
    #[module(skip)]
    pub lora: Option<LoraConfig>,
    /// Whether the adapters take part in the forward pass (off: the base model, which is
    /// the reference under LoRA, with no second copy of the weights).
    #[module(skip)]
    pub adapters_enabled: bool,
    /// The float type of the forward pass.
    #[module(skip)]
    pub compute: Compute,
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
    /// The reward head's output at each row's last real token, `[batch]`, if asked for.
    pub rewards: Option<Tensor<1>>,
}

/// Per-token statistics of completions ([`Llama::token_stats`]).
#[derive(Debug, Clone)]
pub struct TokenStats {
    /// `[batch, time−1]` log-probabilities of the completion tokens (0 elsewhere).
    pub logps: Tensor<2>,
    /// `[batch, time−1]` value estimates at the same positions, if asked for.
    pub values: Option<Tensor<2>>,
    /// `[batch, time−1]` 1 at completion tokens, 0 elsewhere.
    pub mask: Tensor<2>,
}

/// Which statistics [`Llama::stats`] computes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Want {
    /// Completion log-probs (needs the output head over the whole vocabulary).
    pub logps: bool,
    /// Mean next-token entropies (implies the log-softmax of `logps`).
    pub entropy: bool,
    /// Reward-head outputs (needs a reward model).
    pub rewards: bool,
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
                adapters: BlockAdapters::default(),
            })
            .collect();
        let lm_head = (!config.tie_word_embeddings).then(|| param(normal(h, config.vocab_size)));
        Llama {
            embed,
            layers,
            norm: param(ones(h)),
            lm_head,
            score: None,
            value_head: None,
            config: config.clone(),
            lora: None,
            adapters_enabled: true,
            compute: Compute::F32,
        }
    }

    /// Freezes every base parameter and attaches fresh adapters (A ~ U(±1/√in), B = 0, PEFT's
    /// initialization) on `lora.targets` of every block, seeded. Only the adapters train
    /// afterwards, and a reward head if there is one (PEFT's `modules_to_save`); the model
    /// computes exactly what it did before until B moves.
    pub fn with_lora(self, lora: LoraConfig, seed: u64) -> Llama {
        let mut model = self.frozen_base();
        let device = model.embed.val().device();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x4c6f5241);
        let r = lora.rank;
        for layer in &mut model.layers {
            for &t in &lora.targets {
                let [inp, out] = layer.weight(t).val().dims();
                let bound = 1.0 / (inp as f64).sqrt();
                let a: Vec<f32> = (0..inp * r)
                    .map(|_| rand::Rng::random_range(&mut rng, -bound..bound) as f32)
                    .collect();
                let a = Tensor::<2>::from_data(TensorData::new(a, [inp, r]), &device);
                *layer.adapters.slot_mut(t) = Some(Adapter {
                    a: param(a),
                    b: param(Tensor::zeros([r, out], &device)),
                });
            }
        }
        model.lora = Some(lora);
        model.adapters_enabled = true;
        model
    }

    /// Replaces the adapters with `adapters` (one per block, e.g. read from a checkpoint) and
    /// freezes the base parameters (a reward head stays trainable, as in [`Llama::with_lora`]).
    pub fn with_adapters(self, lora: LoraConfig, adapters: Vec<BlockAdapters>) -> Llama {
        let mut model = self.frozen_base();
        for (layer, a) in model.layers.iter_mut().zip(adapters) {
            layer.adapters = a;
        }
        model.lora = Some(lora);
        model.adapters_enabled = true;
        model
    }

    /// Every parameter frozen but the reward head: what LoRA trains besides its adapters.
    fn frozen_base(self) -> Llama {
        let mut model = self.no_grad();
        model.score = model.score.map(|s| s.set_require_grad(true));
        model
    }

    /// The scale α / r of the adapters when they take part in the forward pass.
    fn adapter_scale(&self) -> Option<f64> {
        let lora = self.lora.as_ref()?;
        self.adapters_enabled
            .then(|| lora.alpha / lora.rank.max(1) as f64)
    }

    /// Projection `t` of block `l` applied to `x` `[b, t, in]`, with its adapter when enabled.
    pub(crate) fn proj(&self, l: &Block, t: Target, x: Tensor<3>) -> Tensor<3> {
        let [b, n, i] = x.dims();
        let w = self.cast(l.weight(t).val());
        let o = w.dims()[1];
        let x = x.reshape([b * n, i]);
        let mut y = x.clone().matmul(w);
        if let (Some(scale), Some(ad)) = (self.adapter_scale(), l.adapters.get(t)) {
            let low = x.matmul(self.cast(ad.a.val()));
            y = y + low.matmul(self.cast(ad.b.val())) * scale;
        }
        y.reshape([b, n, o])
    }

    /// `t` in the compute dtype.
    pub(crate) fn cast<const D: usize>(&self, t: Tensor<D>) -> Tensor<D> {
        match self.compute {
            Compute::F32 => t,
            Compute::Bf16 => t.cast(burn::tensor::DType::BF16),
        }
    }

    /// `t` back in f32 (for norms, softmax and log-probs).
    pub(crate) fn widen<const D: usize>(&self, t: Tensor<D>) -> Tensor<D> {
        match self.compute {
            Compute::F32 => t,
            Compute::Bf16 => t.cast(burn::tensor::DType::F32),
        }
    }

    /// Weight `t` of `l` with its adapter merged in: `W + (α/r)·A·B` (just `W` without one).
    pub fn merged_weight(&self, l: &Block, t: Target) -> Tensor<2> {
        let w = l.weight(t).val();
        match (&self.lora, l.adapters.get(t)) {
            (Some(lora), Some(ad)) => {
                w + ad.a.val().matmul(ad.b.val()) * (lora.alpha / lora.rank.max(1) as f64)
            }
            _ => w,
        }
    }

    /// Logits `[batch, time, vocab]` for `tokens` `[batch, time]`. `mask` (`[batch][time]`)
    /// marks real tokens: attention is causal and never looks at a padding token. Rows are
    /// right-padded, so positions (for RoPE) are `0..time` in every row; logits at padding
    /// positions are meaningless.
    pub fn forward(&self, tokens: Tensor<2, Int>, mask: &[Vec<bool>]) -> Tensor<3> {
        self.logits(self.hidden(tokens, mask))
    }

    /// The final hidden states `[batch, time, hidden]` (after the last RMSNorm, in the compute
    /// dtype), which the output head and the reward head read.
    pub fn hidden(&self, tokens: Tensor<2, Int>, mask: &[Vec<bool>]) -> Tensor<3> {
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
        // The residual stream stays f32; each sublayer computes in the compute dtype.
        for layer in &self.layers {
            let a = self.cast(rms_norm(
                x.clone(),
                &layer.attn_norm.val(),
                cfg.rms_norm_eps,
            ));
            x = x + self.widen(self.attention(layer, a, &cos, &sin, &allowed));
            let m = self.cast(rms_norm(x.clone(), &layer.mlp_norm.val(), cfg.rms_norm_eps));
            let gate = silu(self.proj(layer, Target::Gate, m.clone()));
            let up = self.proj(layer, Target::Up, m);
            x = x + self.widen(self.proj(layer, Target::Down, gate * up));
        }
        self.cast(rms_norm(x, &self.norm.val(), cfg.rms_norm_eps))
    }

    /// Next-token logits `[batch, time, vocab]` (f32) from final hidden states.
    pub fn logits(&self, x: Tensor<3>) -> Tensor<3> {
        let h = self.config.hidden_size;
        let head = match &self.lm_head {
            Some(w) => w.val(),
            None => self.embed.val().transpose(),
        };
        let [b, t, _] = x.dims();
        let v = head.dims()[1];
        self.widen(x.reshape([b * t, h]).matmul(self.cast(head)))
            .reshape([b, t, v])
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
        let heads = |target: Target, n: usize| {
            self.proj(l, target, x.clone())
                .reshape([b, t, n, dh])
                .swap_dims(1, 2)
        };
        let (cos, sin) = (self.cast(cos.clone()), self.cast(sin.clone()));
        let q = rope(heads(Target::Q, nh), &cos, &sin);
        let k = rope(heads(Target::K, nkv), &cos, &sin);
        let v = heads(Target::V, nkv);
        let (k, v) = (repeat_kv(k, nh / nkv), repeat_kv(v, nh / nkv));
        // Scores and softmax in f32 (bf16 loses too much in the exponent's argument).
        let scores = self.widen(q.matmul(k.swap_dims(2, 3))) / (dh as f64).sqrt();
        let scores = scores.mask_fill(allowed.clone().bool_not().expand([b, nh, t, t]), -1e9);
        let out = self.cast(softmax(scores, 3)).matmul(v);
        self.proj(l, Target::O, out.swap_dims(1, 2).reshape([b, t, nh * dh]))
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
    /// the next-token distribution at the positions that predict them. See [`Llama::stats`].
    pub fn sequence_stats(
        &self,
        tokens: &[Vec<u32>],
        mask: &[Vec<bool>],
        completion: &[Vec<bool>],
        want_entropy: bool,
        device: &Device,
    ) -> SequenceStats {
        let want = Want {
            logps: true,
            entropy: want_entropy,
            rewards: false,
        };
        self.stats(tokens, mask, completion, want, device)
    }

    /// The statistics `want` asks for, from one forward pass over a batch.
    ///
    /// `tokens`, `mask` and `completion` are `[batch][time]`, every row of the same length
    /// (a [`crate::data::Batch`] is); `mask` marks real tokens and `completion[b][t]` marks
    /// token `t` of row `b` as a completion token (a subset of the real ones). Token `t` is
    /// scored by the distribution at position `t - 1`, so a completion token at position 0
    /// is never counted. One `log_softmax` serves the log-probs and the entropies. The reward
    /// is the reward head at the row's last real token (rows are right-padded), as
    /// transformers' `LlamaForSequenceClassification` pools. Token counts are always given;
    /// log-probs are zeros unless asked for. On an autodiff device everything computed from
    /// the model carries gradients.
    pub fn stats(
        &self,
        tokens: &[Vec<u32>],
        mask: &[Vec<bool>],
        completion: &[Vec<bool>],
        want: Want,
        device: &Device,
    ) -> SequenceStats {
        let b = tokens.len();
        let t = tokens.first().map(|r| r.len()).unwrap_or(0);
        let zeros = || Tensor::<1>::zeros([b], device);
        let cm: Vec<f32> = completion
            .iter()
            .flat_map(|r| r.iter().skip(1).map(|&c| if c { 1.0 } else { 0.0 }))
            .collect();
        let cm = Tensor::<2>::from_data(TensorData::new(cm, [b, t.saturating_sub(1)]), device);
        let counts = if t < 2 {
            zeros()
        } else {
            cm.clone().sum_dim(1).reshape([b])
        };
        let mut stats = SequenceStats {
            logps: zeros(),
            tokens: counts.clone(),
            entropy: None,
            rewards: None,
        };
        if b == 0 || t == 0 {
            stats.entropy = want.entropy.then(zeros);
            stats.rewards = want.rewards.then(zeros);
            return stats;
        }
        let flat: Vec<i64> = tokens
            .iter()
            .flat_map(|r| r.iter().map(|&x| x as i64))
            .collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(flat, [b, t]), device);
        let hidden = self.hidden(ids, mask);
        if want.rewards {
            stats.rewards = Some(self.rewards_at_last_token(hidden.clone(), mask, device));
        }
        if !(want.logps || want.entropy) {
            return stats;
        }
        if t < 2 {
            // Nothing is predicted: no completion token can be scored.
            stats.entropy = want.entropy.then(zeros);
            return stats;
        }
        let (logp, tok_logp) =
            self.next_token_logps(hidden.slice([0..b, 0..t - 1]), tokens, device);
        stats.logps = (tok_logp * cm.clone()).sum_dim(1).reshape([b]);
        stats.entropy = want.entropy.then(|| {
            let h = (logp.clone().exp() * logp)
                .sum_dim(2)
                .reshape([b, t - 1])
                .neg();
            (h * cm).sum_dim(1).reshape([b]) / counts.clamp_min(1.0)
        });
        stats
    }

    /// The reward head applied to each row's last real token: `[batch]`, f32. A model without
    /// a reward head gives zeros (callers check [`Llama::score`] first).
    fn rewards_at_last_token(
        &self,
        hidden: Tensor<3>,
        mask: &[Vec<bool>],
        device: &Device,
    ) -> Tensor<1> {
        let [b, _, h] = hidden.dims();
        let Some(score) = &self.score else {
            return Tensor::zeros([b], device);
        };
        let last: Vec<i64> = mask
            .iter()
            .map(|r| r.iter().rposition(|&m| m).unwrap_or(0) as i64)
            .collect();
        let idx =
            Tensor::<3, Int>::from_data(TensorData::new(last, [b, 1, 1]), device).expand([b, 1, h]);
        let pooled = hidden.gather(1, idx).reshape([b, h]);
        self.widen(pooled.matmul(self.cast(score.val())))
            .reshape([b])
    }

    /// From hidden states `[b, t−1, hidden]` at positions 0..t−1 of `tokens` (`[b][≥t]`, shorter
    /// rows read as id 0): the log-softmax over the vocabulary `[b, t−1, vocab]` and the
    /// log-probability of each next token, `tokens[·][j+1]` at position j, `[b, t−1]`.
    fn next_token_logps(
        &self,
        hidden: Tensor<3>,
        tokens: &[Vec<u32>],
        device: &Device,
    ) -> (Tensor<3>, Tensor<2>) {
        let [b, n, _] = hidden.dims();
        let logp = log_softmax(self.logits(hidden), 2);
        let targets: Vec<i64> = tokens
            .iter()
            .flat_map(|r| (1..=n).map(|j| r.get(j).copied().unwrap_or(0) as i64))
            .collect();
        let targets = Tensor::<3, Int>::from_data(TensorData::new(targets, [b, n, 1]), device);
        let tok = logp.clone().gather(2, targets).reshape([b, n]);
        (logp, tok)
    }

    /// Per-token statistics of the completion tokens, for on-policy objectives: `[batch, time−1]`
    /// log-probabilities of token t+1 at position t, the value head's output there (when
    /// `values`), and the completion mask, all zero outside the completion.
    pub fn token_stats(
        &self,
        tokens: &[Vec<u32>],
        mask: &[Vec<bool>],
        completion: &[Vec<bool>],
        values: bool,
        device: &Device,
    ) -> TokenStats {
        let b = tokens.len();
        let t = tokens.first().map(|r| r.len()).unwrap_or(0).max(2);
        let cm: Vec<f32> = completion
            .iter()
            .flat_map(|r| (1..t).map(|j| if r.get(j) == Some(&true) { 1.0 } else { 0.0 }))
            .collect();
        let cm = Tensor::<2>::from_data(TensorData::new(cm, [b, t - 1]), device);
        let flat: Vec<i64> = tokens
            .iter()
            .flat_map(|r| (0..t).map(|j| r.get(j).copied().unwrap_or(0) as i64))
            .collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(flat, [b, t]), device);
        let full_mask: Vec<Vec<bool>> = mask
            .iter()
            .map(|r| (0..t).map(|j| r.get(j).copied().unwrap_or(false)).collect())
            .collect();
        let hidden = self.hidden(ids, &full_mask).slice([0..b, 0..t - 1]);
        let (_, tok_logp) = self.next_token_logps(hidden.clone(), tokens, device);
        let logps = tok_logp * cm.clone();
        let values = match (&self.value_head, values) {
            (Some(head), true) => {
                let h = self.config.hidden_size;
                let out = self.widen(
                    hidden
                        .reshape([b * (t - 1), h])
                        .matmul(self.cast(head.val())),
                );
                Some(out.reshape([b, t - 1]) * cm.clone())
            }
            _ => None,
        };
        TokenStats {
            logps,
            values,
            mask: cm,
        }
    }

    /// A PPO policy from this model: a fresh per-token value head `[hidden, 1]`, zero at
    /// initialization (so the first value estimates are 0), trained with the policy.
    pub fn with_value_head(mut self) -> Llama {
        let device = self.embed.val().device();
        let h = self.config.hidden_size;
        self.value_head = Some(param(Tensor::zeros([h, 1], &device)));
        self
    }

    /// A reward model from this model: a fresh scalar head `[hidden, 1]` (N(0, 0.02), HF's
    /// initialization of `score`), seeded. The output head stays but is not trained or saved.
    pub fn with_score_head(mut self, seed: u64) -> Llama {
        let device = self.embed.val().device();
        let h = self.config.hidden_size;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x53636f72);
        let w: Vec<f32> = (0..h)
            .map(|_| (0.02 * sample_normal(&mut rng)) as f32)
            .collect();
        self.score = Some(param(Tensor::from_data(
            TensorData::new(w, [h, 1]),
            &device,
        )));
        self
    }
}

/// HF's RMSNorm: `x / sqrt(mean(x²) + eps) · weight`.
pub(crate) fn rms_norm(x: Tensor<3>, weight: &Tensor<1>, eps: f64) -> Tensor<3> {
    let ms = x.clone().powf_scalar(2.0).mean_dim(2);
    x * (ms + eps).sqrt().recip() * weight.clone().unsqueeze::<3>()
}

/// `x·cos + rotate_half(x)·sin`, rotate_half(x) = [-x₂, x₁].
pub(crate) fn rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let [b, h, t, d] = x.dims();
    let x1 = x.clone().slice([0..b, 0..h, 0..t, 0..d / 2]);
    let x2 = x.clone().slice([0..b, 0..h, 0..t, d / 2..d]);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos.clone() + rotated * sin.clone()
}

/// `[b, kv, t, d]` → `[b, kv·n, t, d]`, each kv head repeated n times (HF's repeat_kv).
pub(crate) fn repeat_kv(x: Tensor<4>, n: usize) -> Tensor<4> {
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
