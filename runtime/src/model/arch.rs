//! The model families poc implements, as data: one [`Arch`] per checkpoint says how the one
//! decoder ([`super::forward`]) differs from Llama for it — norm form, biases, per-head q/k
//! norms, activation, embedding scale, sandwich norms, soft-caps, attention scale, each layer's
//! window and RoPE, fused projections and the tensor names. Nothing else in the runtime knows a
//! family's name.
//!
//! **Refusal.** [`Arch::of`] accepts a `config.json` only when its `model_type` is one of
//! [`Family::ALL`] and every key in it is either implemented or known not to change what the
//! network computes; anything else is refused by name, as is a setting of a known key that poc
//! does not implement (a `rope_scaling` type, an activation, a partial rotary factor, ...). The
//! loader separately refuses any tensor the checkpoint holds that the model does not consume.
//! A silently dropped term would train a different network than the one the checkpoint holds.
//!
//! Missing keys take the defaults transformers' configuration class of the family gives them
//! (Gemma's `tie_word_embeddings` is true, Qwen2's `q/k/v` biases are always on, ...).

use super::config::{LlamaConfig, Rope};
use super::llama::Target;
use serde_json::Value;

/// A model family: the value of `model_type` in `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `llama`: Llama 1, 2, 3, 3.1, 3.2 (and the many models that reuse its layout).
    Llama,
    /// `mistral`: Llama's layout with sliding-window attention.
    Mistral,
    /// `qwen2`: Qwen2 and Qwen2.5 (q/k/v biases).
    Qwen2,
    /// `qwen3`: Qwen3 dense models (per-head q/k RMSNorm).
    Qwen3,
    /// `gemma2`: Gemma 2 ((1 + w) norms, sandwich norms, soft-capping, local/global layers).
    Gemma2,
    /// `gemma3_text`: the Gemma 3 text decoder (Gemma 2's shape with q/k norms, local RoPE).
    Gemma3,
    /// `phi3`: Phi-3 (fused `qkv_proj` and `gate_up_proj`).
    Phi3,
}

impl Family {
    /// Every family, in the order the README lists them.
    pub const ALL: [Family; 7] = [
        Family::Llama,
        Family::Mistral,
        Family::Qwen2,
        Family::Qwen3,
        Family::Gemma2,
        Family::Gemma3,
        Family::Phi3,
    ];

    /// The family of a `model_type`.
    pub fn from_model_type(model_type: &str) -> Option<Family> {
        Family::ALL
            .into_iter()
            .find(|f| f.model_type() == model_type)
    }

    /// The `model_type` transformers writes.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
            Family::Gemma2 => "gemma2",
            Family::Gemma3 => "gemma3_text",
            Family::Phi3 => "phi3",
        }
    }

    /// The class-name prefix of the family's models (`Qwen2` in `Qwen2ForCausalLM`).
    fn class_prefix(self) -> &'static str {
        match self {
            Family::Llama => "Llama",
            Family::Mistral => "Mistral",
            Family::Qwen2 => "Qwen2",
            Family::Qwen3 => "Qwen3",
            Family::Gemma2 => "Gemma2",
            Family::Gemma3 => "Gemma3",
            Family::Phi3 => "Phi3",
        }
    }

    /// The causal-LM class (`architectures` of a policy checkpoint).
    pub fn causal_lm_class(self) -> String {
        format!("{}ForCausalLM", self.class_prefix())
    }

    /// The reward-model class (`architectures` of a one-label sequence classifier).
    pub fn reward_model_class(self) -> String {
        match self {
            // Gemma3ForSequenceClassification is the multimodal model's.
            Family::Gemma3 => "Gemma3TextForSequenceClassification".into(),
            _ => format!("{}ForSequenceClassification", self.class_prefix()),
        }
    }

    /// Whether attention's q/k/v and the MLP's gate/up are fused into one matrix each.
    pub fn fused(self) -> bool {
        self == Family::Phi3
    }
}

/// The activation of the MLP's gate (transformers' `ACT2FN` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `silu` / `swish`: x·σ(x).
    Silu,
    /// `gelu`: the exact x·Φ(x).
    Gelu,
    /// `gelu_pytorch_tanh`, `gelu_new`, `gelu_fast`: the tanh approximation of GELU.
    GeluTanh,
    /// `quick_gelu`: x·σ(1.702x).
    QuickGelu,
    /// `relu`.
    Relu,
}

impl Activation {
    /// The activation transformers calls `name`, if poc implements it.
    pub fn from_name(name: &str) -> Option<Activation> {
        Some(match name {
            "silu" | "swish" => Activation::Silu,
            "gelu" => Activation::Gelu,
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Activation::GeluTanh,
            "quick_gelu" => Activation::QuickGelu,
            "relu" => Activation::Relu,
            _ => return None,
        })
    }

    /// The names [`Activation::from_name`] accepts.
    pub const NAMES: &'static str =
        "silu, swish, gelu, gelu_pytorch_tanh, gelu_new, gelu_fast, quick_gelu, relu";
}

/// How an RMSNorm applies its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormWeight {
    /// `x̂ · w` (Llama, Mistral, Qwen, Phi-3).
    Plain,
    /// `x̂ · (1 + w)` (Gemma: the stored weight is an offset from one).
    OnePlus,
}

/// What one decoder layer attends to and how it rotates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerAttention {
    /// `Some(w)`: a query sees only the `w` most recent positions (itself included).
    pub window: Option<usize>,
    /// Index into [`Arch::ropes`].
    pub rope: usize,
}

/// Everything that makes one family's decoder differ from Llama's, read from `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct Arch {
    /// The family.
    pub family: Family,
    /// The RMSNorms' weight form.
    pub norm: NormWeight,
    /// Biases on the q, k and v projections.
    pub qkv_bias: bool,
    /// A bias on the attention output projection.
    pub o_bias: bool,
    /// Biases on the MLP's gate, up and down projections.
    pub mlp_bias: bool,
    /// Per-head RMSNorm of queries and keys before RoPE (`q_norm`, `k_norm`).
    pub qk_norm: bool,
    /// The MLP gate's activation.
    pub act: Activation,
    /// Whether token embeddings are multiplied by √hidden (Gemma).
    pub embed_scale: bool,
    /// Norms after attention and after the MLP, before each residual add (Gemma's
    /// `post_attention_layernorm`, `pre_feedforward_layernorm`, `post_feedforward_layernorm`).
    pub sandwich: bool,
    /// `Some(c)`: attention scores become `c·tanh(s/c)` before the mask and softmax.
    pub attn_softcap: Option<f64>,
    /// `Some(c)`: logits become `c·tanh(z/c)`.
    pub final_softcap: Option<f64>,
    /// The factor on `q·kᵀ` (1/√head_dim, or Gemma's 1/√query_pre_attn_scalar).
    pub attn_scale: f64,
    /// The distinct RoPE settings of the layers (one, or Gemma 3's global and local).
    pub ropes: Vec<Rope>,
    /// One entry per layer.
    pub layers: Vec<LayerAttention>,
}

/// Keys of every transformers `config.json` that do not change what the network computes:
/// bookkeeping, generation defaults, token ids, dtypes, and dropout (poc trains without
/// dropout, as TRL's trainers do by default).
const HARMLESS: &[&str] = &[
    "architectures",
    "model_type",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "use_cache",
    "initializer_range",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "sep_token_id",
    "decoder_start_token_id",
    "attention_dropout",
    "hidden_dropout",
    "resid_pdrop",
    "embd_pdrop",
    "_name_or_path",
    "name_or_path",
    "auto_map",
    "id2label",
    "label2id",
    "num_labels",
    "problem_type",
    "tokenizer_class",
    "cache_implementation",
    "max_position_embeddings",
    "original_max_position_embeddings",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
    "is_encoder_decoder",
    "is_decoder",
    "add_cross_attention",
    "tie_encoder_decoder",
    "chunk_size_feed_forward",
    "pruned_heads",
    "torchscript",
    "use_return_dict",
    "task_specific_params",
    "finetuning_task",
    "prefix",
    "bad_words_ids",
    "max_length",
    "min_length",
    "do_sample",
    "early_stopping",
    "num_beams",
    "num_beam_groups",
    "diversity_penalty",
    "temperature",
    "top_k",
    "top_p",
    "typical_p",
    "repetition_penalty",
    "length_penalty",
    "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size",
    "num_return_sequences",
    "output_scores",
    "return_dict_in_generate",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "remove_invalid_values",
    "exponential_decay_length_penalty",
    "suppress_tokens",
    "begin_suppress_tokens",
    "tf_legacy_loss",
    "use_bfloat16",
    "cross_attention_hidden_size",
    "chat_template",
    // Llama-2's tensor-parallel pre-training degree: transformers' Llama ignores it.
    "pretraining_tp",
];

/// Keys [`LlamaConfig`] reads itself (shapes, eps, RoPE, tying, token ids).
const SHAPE_KEYS: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "tie_word_embeddings",
];

/// The most decoder layers a configuration may have (the deepest published models have under
/// 200).
pub const MAX_LAYERS: usize = 1 << 16;

/// A configuration poc refuses, with the reason in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// The keys of `config.json` and which of them the family read.
struct Keys<'a> {
    extra: &'a serde_json::Map<String, Value>,
    family: Family,
    read: Vec<&'static str>,
}

impl<'a> Keys<'a> {
    /// The value of `key`, marked as read (JSON null counts as absent, as in transformers).
    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.read.push(key);
        self.extra.get(key).filter(|v| !v.is_null())
    }

    fn bool_or(&mut self, key: &'static str, default: bool) -> Result<bool, Refusal> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.bad(key, v, "true or false")),
        }
    }

    fn f64_opt(&mut self, key: &'static str) -> Result<Option<f64>, Refusal> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.bad(key, v, "a number")),
        }
    }

    fn usize_opt(&mut self, key: &'static str) -> Result<Option<usize>, Refusal> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|n| Some(n as usize))
                .ok_or_else(|| self.bad(key, v, "a non-negative integer")),
        }
    }

    fn str_opt(&mut self, key: &'static str) -> Result<Option<&'a str>, Refusal> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.bad(key, v, "a string")),
        }
    }

    fn bad(&self, key: &str, v: &Value, want: &str) -> Refusal {
        Refusal(format!(
            "`{key}` is {v}; {} configs need {want} there",
            self.family.model_type()
        ))
    }

    /// Refuses `key` if it is set to anything but its default (a feature poc lacks).
    fn refuse_unless(
        &mut self,
        key: &'static str,
        is_default: impl Fn(&Value) -> bool,
        why: &str,
    ) -> Result<(), Refusal> {
        match self.get(key) {
            Some(v) if !is_default(v) => Err(Refusal(format!(
                "`{key}: {v}` is not implemented for {} models ({why})",
                self.family.model_type()
            ))),
            _ => Ok(()),
        }
    }

    /// Every key of the file that neither the shape fields, the family nor the harmless list
    /// account for.
    fn unknown(&self) -> Vec<&'a str> {
        let mut out: Vec<&str> = self
            .extra
            .keys()
            .map(String::as_str)
            .filter(|k| !HARMLESS.contains(k) && !SHAPE_KEYS.contains(k) && !self.read.contains(k))
            .collect();
        out.sort_unstable();
        out
    }
}

impl Arch {
    /// The architecture `config` describes, or why poc refuses it. `config` has passed
    /// [`LlamaConfig::validate`]'s shape checks.
    pub fn of(config: &LlamaConfig) -> Result<Arch, Refusal> {
        let model_type = config
            .extra
            .get("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                Refusal(format!(
                    "config.json has no `model_type`; poc reads {}",
                    supported()
                ))
            })?;
        let family = Family::from_model_type(model_type).ok_or_else(|| {
            let hint = match model_type {
                "gemma3" => " (a multimodal Gemma 3 checkpoint: poc implements its text decoder, `gemma3_text`, as saved by Gemma3ForCausalLM)",
                "gemma" => " (Gemma 1 is not implemented; Gemma 2 and 3 are)",
                "qwen2_moe" | "qwen3_moe" | "mixtral" => " (mixture-of-experts models are not implemented)",
                _ => "",
            };
            Refusal(format!(
                "model_type `{model_type}` is not implemented{hint}; poc implements {}",
                supported()
            ))
        })?;
        // Each layer is planned here (its window and RoPE) before any weight is read: a
        // corrupt layer count must not reach an allocation.
        if config.num_hidden_layers > MAX_LAYERS {
            return Err(Refusal(format!(
                "num_hidden_layers ({}) is more than poc reads (at most {MAX_LAYERS})",
                config.num_hidden_layers
            )));
        }
        let mut keys = Keys {
            extra: &config.extra,
            family,
            read: Vec::new(),
        };
        if let Some(archs) = keys.get("architectures").and_then(Value::as_array) {
            for a in archs.iter().filter_map(Value::as_str) {
                let known = a == family.causal_lm_class() || a == family.reward_model_class();
                if !known {
                    return Err(Refusal(format!(
                        "architecture `{a}` is not implemented for model_type `{model_type}`; poc reads {} and {} checkpoints",
                        family.causal_lm_class(),
                        family.reward_model_class()
                    )));
                }
            }
        }
        keys.refuse_unless(
            "quantization_config",
            |_| false,
            "quantized weights are not implemented; use the unquantized checkpoint",
        )?;
        let gemma = matches!(family, Family::Gemma2 | Family::Gemma3);
        // The activation: `hidden_act` everywhere; Gemma names it `hidden_activation` (and
        // older Gemma 2 configs carry both, `hidden_activation` winning).
        let default_act = if gemma { "gelu_pytorch_tanh" } else { "silu" };
        let act_name = if gemma {
            let act = keys.str_opt("hidden_activation")?;
            let legacy = keys.str_opt("hidden_act")?;
            act.or(legacy).unwrap_or(default_act)
        } else {
            keys.str_opt("hidden_act")?.unwrap_or(default_act)
        };
        let act = Activation::from_name(act_name).ok_or_else(|| {
            Refusal(format!(
                "hidden activation `{act_name}` is not implemented; poc implements {}",
                Activation::NAMES
            ))
        })?;
        // Biases: Llama-style families read `attention_bias` / `mlp_bias`; Qwen2 always has
        // q/k/v biases and never an output one.
        let (qkv_bias, o_bias, mlp_bias) = match family {
            Family::Llama => {
                let a = keys.bool_or("attention_bias", false)?;
                (a, a, keys.bool_or("mlp_bias", false)?)
            }
            Family::Qwen3 | Family::Gemma2 | Family::Gemma3 => {
                let a = keys.bool_or("attention_bias", false)?;
                (a, a, false)
            }
            Family::Qwen2 => (true, false, false),
            Family::Mistral | Family::Phi3 => (false, false, false),
        };
        let head_dim = config.head_dim();
        let (attn_softcap, final_softcap, attn_scale) = if gemma {
            let scalar = keys.f64_opt("query_pre_attn_scalar")?.unwrap_or(256.0);
            if scalar <= 0.0 {
                return Err(Refusal(format!(
                    "`query_pre_attn_scalar` is {scalar}; it must be positive"
                )));
            }
            let (attn_default, final_default) = match family {
                Family::Gemma2 => (Some(50.0), Some(30.0)),
                _ => (None, None),
            };
            let cap = |k: &mut Keys, key, default: Option<f64>| -> Result<Option<f64>, Refusal> {
                let present = k.extra.contains_key(key);
                let v = k.f64_opt(key)?;
                let v = if present { v } else { default };
                match v {
                    Some(c) if c <= 0.0 => Err(Refusal(format!(
                        "`{key}` is {c}; a soft-cap must be positive (or null for none)"
                    ))),
                    v => Ok(v),
                }
            };
            (
                cap(&mut keys, "attn_logit_softcapping", attn_default)?,
                cap(&mut keys, "final_logit_softcapping", final_default)?,
                1.0 / scalar.sqrt(),
            )
        } else {
            (None, None, 1.0 / (head_dim as f64).sqrt())
        };
        if family == Family::Phi3 {
            keys.refuse_unless(
                "partial_rotary_factor",
                |v| v.as_f64() == Some(1.0),
                "RoPE on part of each head is not implemented",
            )?;
        }
        if family == Family::Gemma3 {
            keys.refuse_unless(
                "use_bidirectional_attention",
                |v| v.as_bool() == Some(false),
                "bidirectional attention is not a causal language model",
            )?;
        }
        let global_rope = config.rope().map_err(Refusal)?;
        let mut ropes = vec![global_rope];
        // Gemma 3's sliding layers rotate with their own base and no scaling.
        let local_rope = if family == Family::Gemma3 {
            let theta = keys.f64_opt("rope_local_base_freq")?.unwrap_or(10000.0);
            ropes.push(Rope {
                theta,
                llama3: None,
                linear: None,
            });
            1
        } else {
            0
        };
        let layers = layer_windows(&mut keys, config.num_hidden_layers)?
            .into_iter()
            .map(|window| LayerAttention {
                window,
                rope: if window.is_some() { local_rope } else { 0 },
            })
            .collect();
        let unknown = keys.unknown();
        if !unknown.is_empty() {
            let list = unknown
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Refusal(format!(
                "config key{} {list} {} not known to poc for model_type `{model_type}`; such a key may change what the network computes, so poc refuses the model rather than compute a different one",
                if unknown.len() == 1 { "" } else { "s" },
                if unknown.len() == 1 { "is" } else { "are" },
            )));
        }
        Ok(Arch {
            family,
            norm: if gemma {
                NormWeight::OnePlus
            } else {
                NormWeight::Plain
            },
            qkv_bias,
            o_bias,
            mlp_bias,
            qk_norm: matches!(family, Family::Qwen3 | Family::Gemma3),
            act,
            embed_scale: gemma,
            sandwich: gemma,
            attn_softcap,
            final_softcap,
            attn_scale,
            ropes,
            layers,
        })
    }

    /// The projections that carry a bias, in checkpoint order.
    pub fn biased(&self) -> Vec<Target> {
        Target::ALL
            .into_iter()
            .filter(|t| match t {
                Target::Q | Target::K | Target::V => self.qkv_bias,
                Target::O => self.o_bias,
                Target::Gate | Target::Up | Target::Down => self.mlp_bias,
            })
            .collect()
    }

    /// Whether LoRA adapters can sit on `targets` in this family: a fused projection (Phi-3's
    /// `qkv_proj`, `gate_up_proj`) holds several of poc's projections under one PEFT module,
    /// which poc's adapters (one per projection) cannot express.
    pub fn check_lora_targets(&self, targets: &[Target]) -> Result<(), Refusal> {
        if !self.family.fused() {
            return Ok(());
        }
        let fused: Vec<&str> = targets
            .iter()
            .filter(|t| !matches!(t, Target::O | Target::Down))
            .map(|t| t.module_name())
            .collect();
        if fused.is_empty() {
            return Ok(());
        }
        Err(Refusal(format!(
            "{} fuses q/k/v into `qkv_proj` and gate/up into `gate_up_proj`, so it has no {} module; LoRA on a fused projection is not implemented: use --lora-target-modules o_proj,down_proj",
            self.family.model_type(),
            fused
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }

    /// The HF names of layer `l`'s norms: before attention, before the MLP, and (sandwich
    /// families) after attention and after the MLP.
    pub fn norm_names(&self, l: usize) -> [Option<String>; 4] {
        let name = |part: &str| Some(format!("model.layers.{l}.{part}.weight"));
        if self.sandwich {
            [
                name("input_layernorm"),
                name("pre_feedforward_layernorm"),
                name("post_attention_layernorm"),
                name("post_feedforward_layernorm"),
            ]
        } else {
            [
                name("input_layernorm"),
                name("post_attention_layernorm"),
                None,
                None,
            ]
        }
    }
}

/// Each layer's attention window, from the family's keys: `sliding_window` with, where the
/// family has them, `layer_types`, `use_sliding_window` and `max_window_layers` (Qwen), or the
/// alternation of Gemma 2 (every other layer) and Gemma 3 (`sliding_window_pattern`).
fn layer_windows(keys: &mut Keys, n: usize) -> Result<Vec<Option<usize>>, Refusal> {
    let family = keys.family;
    let default_window = match family {
        Family::Gemma2 => Some(4096),
        Family::Gemma3 => Some(4096),
        Family::Qwen2 | Family::Qwen3 => Some(4096),
        Family::Mistral => Some(4096),
        Family::Llama | Family::Phi3 => None,
    };
    let present = keys.extra.contains_key("sliding_window");
    let window = keys.usize_opt("sliding_window")?;
    let window = if present { window } else { default_window };
    if window == Some(0) {
        return Err(Refusal(
            "`sliding_window` is 0: a query must see at least itself".into(),
        ));
    }
    // Which layers slide, before `layer_types` (which wins where present).
    let sliding: Vec<bool> = match family {
        Family::Llama => {
            if window.is_some() {
                return Err(Refusal(
                    "`sliding_window` is not a Llama setting (transformers' Llama ignores it); a model that needs it is a Mistral (`model_type: mistral`)".into(),
                ));
            }
            vec![false; n]
        }
        Family::Mistral | Family::Phi3 => vec![window.is_some(); n],
        Family::Qwen2 | Family::Qwen3 => {
            let on = keys.bool_or("use_sliding_window", false)?;
            let from = keys.usize_opt("max_window_layers")?.unwrap_or(28);
            (0..n).map(|i| on && i >= from).collect()
        }
        Family::Gemma2 => (0..n).map(|i| (i + 1) % 2 != 0).collect(),
        Family::Gemma3 => {
            // Older configs name the pattern, newer ones list `layer_types` (which wins below).
            let old = keys.usize_opt("sliding_window_pattern")?;
            let pattern = keys
                .usize_opt("_sliding_window_pattern")?
                .or(old)
                .unwrap_or(6);
            (0..n)
                .map(|i| pattern == 0 || (i + 1) % pattern.max(1) != 0)
                .collect()
        }
    };
    let sliding = match keys.get("layer_types") {
        None => sliding,
        Some(v) => {
            let types = v
                .as_array()
                .ok_or_else(|| Refusal(format!("`layer_types` is {v}; expected a list")))?;
            if types.len() != n {
                return Err(Refusal(format!(
                    "`layer_types` lists {} layers but `num_hidden_layers` is {n}",
                    types.len()
                )));
            }
            types
                .iter()
                .map(|t| match t.as_str() {
                    Some("full_attention") => Ok(false),
                    Some("sliding_attention") => Ok(true),
                    _ => Err(Refusal(format!(
                        "layer type {t} is not implemented; poc implements full_attention and sliding_attention"
                    ))),
                })
                .collect::<Result<_, _>>()?
        }
    };
    if sliding.iter().any(|&s| s) && window.is_none() {
        return Err(Refusal(
            "some layers are sliding_attention but `sliding_window` is null".into(),
        ));
    }
    Ok(sliding
        .into_iter()
        .map(|s| if s { window } else { None })
        .collect())
}

/// The implemented model types, for messages.
pub fn supported() -> String {
    Family::ALL
        .iter()
        .map(|f| f.model_type())
        .collect::<Vec<_>>()
        .join(", ")
}
