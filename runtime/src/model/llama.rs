//! The decoder in burn, as parameters: embedding, blocks (attention and gated-MLP projections
//! with their optional biases, RMSNorm weights, the optional per-head q/k norms and sandwich
//! norms, LoRA adapters), final norm, tied or untied output head, and the reward or value head;
//! their initialization. Which optional parts a model has is its [`Arch`] (the family, read
//! from `config.json`). The forward pass over them is [`super::forward`].
//!
//! Linear weights are stored `[in, out]` (burn's layout); the loader transposes HF's
//! `[out, in]`.

use super::arch::Arch;
use super::config::LlamaConfig;
use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorData};
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
    /// Biases of the projections that have one ([`Arch`]'s `qkv_bias`, `o_bias`, `mlp_bias`).
    pub biases: BlockBiases,
    /// Per-head RMSNorm of queries, `[head_dim]` (Qwen3, Gemma 3).
    pub q_norm: Option<Param<Tensor<1>>>,
    /// Per-head RMSNorm of keys, `[head_dim]`.
    pub k_norm: Option<Param<Tensor<1>>>,
    /// RMSNorm of the attention output before the residual add, `[hidden]` (Gemma).
    pub attn_out_norm: Option<Param<Tensor<1>>>,
    /// RMSNorm of the MLP output before the residual add, `[hidden]` (Gemma).
    pub mlp_out_norm: Option<Param<Tensor<1>>>,
    /// Low-rank adapters on this block's projections (all `None` without LoRA).
    pub adapters: BlockAdapters,
}

/// The biases of one block's projections, `[out]` each; `None` where the family has none.
#[derive(Module, Debug, Default)]
pub struct BlockBiases {
    /// On the query projection.
    pub q: Option<Param<Tensor<1>>>,
    /// On the key projection.
    pub k: Option<Param<Tensor<1>>>,
    /// On the value projection.
    pub v: Option<Param<Tensor<1>>>,
    /// On the output projection.
    pub o: Option<Param<Tensor<1>>>,
    /// On the MLP's gate.
    pub gate: Option<Param<Tensor<1>>>,
    /// On the MLP's up projection.
    pub up: Option<Param<Tensor<1>>>,
    /// On the MLP's down projection.
    pub down: Option<Param<Tensor<1>>>,
}

impl BlockBiases {
    /// The bias of projection `t`, if it has one.
    pub fn get(&self, t: Target) -> Option<&Param<Tensor<1>>> {
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

    /// The slot of projection `t`'s bias.
    pub fn slot_mut(&mut self, t: Target) -> &mut Option<Param<Tensor<1>>> {
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

/// The float type the forward pass computes in. Trained parameters stay f32 either way (the
/// master weights the optimizer updates) and are cast on use; frozen matrices are stored in this
/// dtype ([`Llama::store_frozen`]); norms, softmax statistics and log-probs are computed in f32,
/// as mixed-precision training does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Compute {
    /// Everything in f32.
    #[default]
    F32,
    /// Matrix products and activations in bfloat16.
    Bf16,
}

impl Compute {
    /// `t` in this dtype.
    pub(crate) fn cast<const D: usize>(self, t: Tensor<D>) -> Tensor<D> {
        match self {
            Compute::F32 => t,
            Compute::Bf16 => t.cast(burn::tensor::DType::BF16),
        }
    }

    /// `t` back in f32 (for norms, softmax and log-probs).
    pub(crate) fn widen<const D: usize>(self, t: Tensor<D>) -> Tensor<D> {
        match self {
            Compute::F32 => t,
            Compute::Bf16 => t.cast(burn::tensor::DType::F32),
        }
    }
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
    /// The family's differences from Llama, read from `config` (not trained).
    #[module(skip)]
    pub arch: Arch,
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
    /// A randomly initialized model (HF's scheme: N(0, 0.02) weights, unit norms (zero
    /// offsets for a `(1 + w)` norm), zero biases), the same for the same seed.
    ///
    /// # Panics
    /// If `config` would not pass [`LlamaConfig::validate`] (presets and
    /// [`LlamaConfig::from_file`] do).
    pub fn random(config: &LlamaConfig, seed: u64, device: &Device) -> Llama {
        Llama::random_stored(config, seed, device, None)
    }

    /// [`Llama::random`] with every matrix stored in `matrices` (e.g. bf16) as soon as it is
    /// drawn, so that the whole model never exists in f32: for a base that LoRA freezes (its
    /// values are the f32 draws rounded, as [`Llama::store_frozen`] would round them).
    pub fn random_stored(
        config: &LlamaConfig,
        seed: u64,
        device: &Device,
        matrices: Option<burn::tensor::DType>,
    ) -> Llama {
        let arch = config
            .arch()
            .unwrap_or_else(|e| panic!("Llama::random on an unchecked config: {e}"));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut normal = |rows: usize, cols: usize| -> Tensor<2> {
            let data: Vec<f32> = (0..rows * cols)
                .map(|_| (0.02 * sample_normal(&mut rng)) as f32)
                .collect();
            let t = Tensor::<2>::from_data(TensorData::new(data, [rows, cols]), device);
            match matrices {
                Some(d) => t.cast(d),
                None => t,
            }
        };
        // A norm's identity: weight 1, or offset 0 for a `(1 + w)` norm.
        let unit = match arch.norm {
            super::arch::NormWeight::Plain => 1.0,
            super::arch::NormWeight::OnePlus => 0.0,
        };
        let norm = |n: usize| param(Tensor::<1>::full([n], unit, device));
        let zeros = |n: usize| param(Tensor::<1>::zeros([n], device));
        let (h, i, dh) = (
            config.hidden_size,
            config.intermediate_size,
            config.head_dim(),
        );
        let q = config.num_attention_heads * dh;
        let kv = config.kv_heads() * dh;
        let embed = param(normal(config.vocab_size, h));
        let layers = (0..config.num_hidden_layers)
            .map(|_| {
                let mut block = Block {
                    attn_norm: norm(h),
                    wq: param(normal(h, q)),
                    wk: param(normal(h, kv)),
                    wv: param(normal(h, kv)),
                    wo: param(normal(q, h)),
                    mlp_norm: norm(h),
                    w_gate: param(normal(h, i)),
                    w_up: param(normal(h, i)),
                    w_down: param(normal(i, h)),
                    biases: BlockBiases::default(),
                    q_norm: arch.qk_norm.then(|| norm(dh)),
                    k_norm: arch.qk_norm.then(|| norm(dh)),
                    attn_out_norm: arch.sandwich.then(|| norm(h)),
                    mlp_out_norm: arch.sandwich.then(|| norm(h)),
                    adapters: BlockAdapters::default(),
                };
                for t in arch.biased() {
                    let out = block.weight(t).val().dims()[1];
                    *block.biases.slot_mut(t) = Some(zeros(out));
                }
                block
            })
            .collect();
        let lm_head = (!config.tie_word_embeddings).then(|| param(normal(h, config.vocab_size)));
        Llama {
            embed,
            layers,
            norm: norm(h),
            lm_head,
            score: None,
            value_head: None,
            config: config.clone(),
            arch,
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

    /// Every parameter frozen but the reward head: what LoRA trains besides its adapters. The
    /// frozen matrices are stored in the compute dtype ([`Llama::store_frozen`]).
    fn frozen_base(self) -> Llama {
        let mut model = self.no_grad();
        model.score = model.score.map(|s| s.set_require_grad(true));
        model.store_frozen()
    }

    /// Stores every frozen matrix (embedding, projections, output head: what does not train)
    /// in the compute dtype, as PyTorch users hold a bf16 base: under `Compute::Bf16` the LoRA
    /// base and a frozen reference take half the memory of f32, and the forward pass computes
    /// what it computed casting f32 weights on use. Norm weights (vectors) and trained
    /// parameters keep f32; nothing changes under `Compute::F32`.
    pub fn store_frozen(mut self) -> Llama {
        let dtype = match self.compute {
            Compute::F32 => return self,
            Compute::Bf16 => burn::tensor::DType::BF16,
        };
        let store = |p: Param<Tensor<2>>| {
            if p.is_require_grad() {
                p
            } else {
                p.map(|t| t.cast(dtype))
            }
        };
        self.embed = store(self.embed);
        self.lm_head = self.lm_head.map(store);
        self.layers = self
            .layers
            .into_iter()
            .map(|l| Block {
                wq: store(l.wq),
                wk: store(l.wk),
                wv: store(l.wv),
                wo: store(l.wo),
                w_gate: store(l.w_gate),
                w_up: store(l.w_up),
                w_down: store(l.w_down),
                ..l
            })
            .collect();
        self
    }

    /// The scale α / r of the adapters when they take part in the forward pass.
    pub(crate) fn adapter_scale(&self) -> Option<f64> {
        let lora = self.lora.as_ref()?;
        self.adapters_enabled
            .then(|| lora.alpha / lora.rank.max(1) as f64)
    }

    /// Weight `t` of `l` with its adapter merged in: `W + (α/r)·A·B` (just `W` without one).
    pub fn merged_weight(&self, l: &Block, t: Target) -> Tensor<2> {
        // f32 whatever the base is stored in (a frozen base may be bf16).
        let w = l.weight(t).val().cast(burn::tensor::DType::F32);
        match (&self.lora, l.adapters.get(t)) {
            (Some(lora), Some(ad)) => {
                w + ad.a.val().matmul(ad.b.val()) * (lora.alpha / lora.rank.max(1) as f64)
            }
            _ => w,
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
