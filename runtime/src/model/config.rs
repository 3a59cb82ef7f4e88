//! `config.json` as Hugging Face writes it for the decoder families poc implements
//! ([`super::arch::Family`]), in both the published form (`rope_theta` and `rope_scaling` at
//! the top level) and transformers-5's `rope_parameters`; the shape fields every family shares
//! (what the family changes is [`super::arch::Arch`], read from the same file); and the presets.

use super::arch::{Arch, Family};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Errors of model configuration, loading and saving; each names the file, and the tensor
/// where one is at fault.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file's contents are malformed (JSON, safetensors header) or inconsistent.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A directory holds neither `model.safetensors` nor `model.safetensors.index.json`.
    #[error("{}: no model.safetensors or model.safetensors.index.json", dir.display())]
    NoWeights {
        /// The checkpoint directory.
        dir: PathBuf,
    },
    /// The configuration implies a tensor the checkpoint lacks.
    #[error("{}: checkpoint lacks tensor `{tensor}`", path.display())]
    MissingTensor {
        /// The HF name of the tensor.
        tensor: String,
        /// The file that should list it (`model.safetensors` or the index).
        path: PathBuf,
    },
    /// The checkpoint holds a tensor the architecture does not have (a bias, a norm, a head):
    /// loading without it would compute a different network.
    #[error("{}: tensor `{tensor}` is not part of a {model_type} model as poc implements it (its config.json has no setting that uses it); poc refuses the checkpoint rather than drop a term", path.display())]
    UnexpectedTensor {
        /// The HF name of the tensor.
        tensor: String,
        /// The file that lists it.
        path: PathBuf,
        /// The model type of the configuration.
        model_type: &'static str,
    },
    /// A tensor's shape disagrees with the configuration.
    #[error("{}: tensor `{tensor}` has shape {got:?}, config.json implies {want:?}", path.display())]
    Shape {
        /// The HF name of the tensor.
        tensor: String,
        /// The file holding it.
        path: PathBuf,
        /// Its shape in the file.
        got: Vec<usize>,
        /// The shape the configuration implies.
        want: Vec<usize>,
    },
    /// A tensor is stored in a dtype poc does not read.
    #[error("{}: tensor `{tensor}` has dtype {dtype}; poc reads F32, F16, BF16 and F64", path.display())]
    Dtype {
        /// The HF name of the tensor.
        tensor: String,
        /// The file holding it.
        path: PathBuf,
        /// The dtype as safetensors names it.
        dtype: String,
    },
    /// A model tensor could not be read back from its device (saving).
    #[error("reading tensor `{tensor}` from the device: {message}")]
    Readback {
        /// The HF name of the tensor.
        tensor: String,
        /// Why.
        message: String,
    },
}

impl ModelError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    pub(crate) fn format(path: &Path, message: impl Into<String>) -> Self {
        ModelError::Format {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// Llama-3 frequency scaling of RoPE (`rope_type: "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Llama3Scaling {
    /// Overall factor (8 for Llama-3.1).
    pub factor: f64,
    /// Wavelengths above `original_max_position_embeddings / low_freq_factor` are scaled.
    pub low_freq_factor: f64,
    /// Wavelengths below `original_max_position_embeddings / high_freq_factor` are kept.
    pub high_freq_factor: f64,
    /// The pre-training context length.
    pub original_max_position_embeddings: usize,
}

/// A token id or a list of them (`eos_token_id` is either).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    /// One id.
    One(u32),
    /// Several ids.
    Many(Vec<u32>),
}

impl TokenIds {
    /// The ids as a list.
    pub fn ids(&self) -> Vec<u32> {
        match self {
            TokenIds::One(i) => vec![*i],
            TokenIds::Many(v) => v.clone(),
        }
    }
}

/// The shape fields of an HF decoder's `config.json` (every family has them). The other fields
/// are kept verbatim (`extra`): [`super::arch::Arch::of`] reads the family's own keys from
/// them (and refuses what it does not know), and a saved checkpoint's config is the loaded one
/// plus our changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Vocabulary size (logits width).
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// SwiGLU inner width.
    pub intermediate_size: usize,
    /// Number of decoder blocks.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); defaults to the query heads.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Per-head width; defaults to hidden / heads.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base (published form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// RoPE scaling (published form): `{"rope_type": "llama3", "factor": ..., ...}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<serde_json::Value>,
    /// transformers-5 form: `{"rope_theta": ..., "rope_type": "llama3", ...}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<serde_json::Value>,
    /// Longest supported context.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// Whether the output projection is the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Beginning-of-text token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<u32>,
    /// End-of-text token(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<TokenIds>,
    /// Everything else in the file, kept verbatim.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_max_pos() -> usize {
    8192
}

/// RoPE as the model uses it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rope {
    /// Base θ.
    pub theta: f64,
    /// Llama-3 scaling, if any.
    pub llama3: Option<Llama3Scaling>,
    /// Linear (position-interpolation) scaling: every frequency divided by this factor
    /// (`rope_type: "linear"`, as Gemma 3's global layers use).
    pub linear: Option<f64>,
}

impl LlamaConfig {
    /// Reads and validates `config.json`: its shapes, and its architecture
    /// ([`Arch::of`], which refuses what poc does not implement, by name).
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::format(path, e.to_string()))?;
        LlamaConfig::from_json(value).map_err(|m| ModelError::format(path, m))
    }

    /// [`LlamaConfig::from_file`] on the parsed file. Keys the file omits take the defaults of
    /// the family's transformers configuration class (transformers omits a key from a saved
    /// config when it has the base class's default: Gemma's `tie_word_embeddings: true` is
    /// never written).
    pub fn from_json(mut value: serde_json::Value) -> Result<Self, String> {
        let family = value
            .get("model_type")
            .and_then(|v| v.as_str())
            .and_then(Family::from_model_type);
        if let (Some(family), Some(obj)) = (family, value.as_object_mut()) {
            for (key, default) in family_defaults(family) {
                if obj.get(key).is_none_or(|v| v.is_null()) && !default.is_null() {
                    obj.insert(key.to_string(), default);
                }
            }
        }
        let cfg: LlamaConfig = serde_json::from_value(value).map_err(|e| e.to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The architecture this configuration describes ([`Arch::of`]).
    pub fn arch(&self) -> Result<Arch, String> {
        Arch::of(self).map_err(|r| r.0)
    }

    /// Checks that the shapes are consistent and that poc implements the architecture.
    pub fn validate(&self) -> Result<(), String> {
        if self.num_attention_heads == 0 || self.hidden_size == 0 || self.vocab_size == 0 {
            return Err("hidden_size, vocab_size and num_attention_heads must be positive".into());
        }
        if self.kv_heads() == 0 || !self.num_attention_heads.is_multiple_of(self.kv_heads()) {
            return Err(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({})",
                self.num_attention_heads,
                self.kv_heads()
            ));
        }
        if self.head_dim() == 0 {
            return Err(match self.head_dim {
                Some(_) => "head_dim must be positive".to_string(),
                None => format!(
                    "head_dim (hidden_size / num_attention_heads = {} / {}) must be positive",
                    self.hidden_size, self.num_attention_heads
                ),
            });
        }
        if !self.head_dim().is_multiple_of(2) {
            return Err(format!(
                "head_dim ({}) must be even for RoPE",
                self.head_dim()
            ));
        }
        self.rope()?;
        self.arch()?;
        // A corrupt shape must not reach the products sized from it (weights, plans).
        if self
            .checked_num_params()
            .is_none_or(|n| n > Self::MAX_PARAMS)
        {
            return Err(format!(
                "the shapes (vocab_size {}, hidden_size {}, intermediate_size {}, {} layers, {} heads of {}) imply more than 2^48 parameters, more than poc reads",
                self.vocab_size,
                self.hidden_size,
                self.intermediate_size,
                self.num_hidden_layers,
                self.num_attention_heads,
                self.head_dim(),
            ));
        }
        Ok(())
    }

    /// The most parameters a configuration may imply: 2^48 (2.8·10^14, a petabyte in f32; the
    /// largest published models have about 10^12), so that byte counts of the weights, their
    /// gradients and optimizer moments fit in 64 bits.
    pub const MAX_PARAMS: usize = 1 << 48;

    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Per-head width.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// End-of-text ids (the first is appended to completions).
    pub fn eos_ids(&self) -> Vec<u32> {
        self.eos_token_id
            .as_ref()
            .map(|e| e.ids())
            .unwrap_or_default()
    }

    /// RoPE parameters from either config form.
    pub fn rope(&self) -> Result<Rope, String> {
        let (theta, scaling) = match &self.rope_parameters {
            // transformers 5 moves rope_theta into rope_parameters; accept it at either place.
            Some(p) => (
                p.get("rope_theta")
                    .and_then(|v| v.as_f64())
                    .or(self.rope_theta),
                Some(p),
            ),
            None => (self.rope_theta, self.rope_scaling.as_ref()),
        };
        let theta = theta.unwrap_or(10000.0);
        let scaling = scaling.filter(|s| !s.is_null());
        let mut linear = None;
        let llama3 = match scaling {
            None => None,
            Some(s) => {
                let kind = s
                    .get("rope_type")
                    .or_else(|| s.get("type"))
                    .and_then(|v| v.as_str())
                    .unwrap_or("default");
                match kind {
                    "default" => None,
                    "linear" => {
                        let factor = s
                            .get("factor")
                            .and_then(|v| v.as_f64())
                            .filter(|f| *f > 0.0)
                            .ok_or("linear rope scaling needs a positive `factor`")?;
                        linear = Some(factor);
                        None
                    }
                    "llama3" => {
                        let f = |k: &str| {
                            s.get(k)
                                .and_then(|v| v.as_f64())
                                .ok_or_else(|| format!("rope scaling lacks `{k}`"))
                        };
                        let scaling = Llama3Scaling {
                            factor: f("factor")?,
                            low_freq_factor: f("low_freq_factor")?,
                            high_freq_factor: f("high_freq_factor")?,
                            original_max_position_embeddings: f("original_max_position_embeddings")?
                                as usize,
                        };
                        // The smooth band between the two wavelengths divides by their gap.
                        if !(scaling.factor > 0.0
                            && scaling.low_freq_factor > 0.0
                            && scaling.low_freq_factor < scaling.high_freq_factor)
                        {
                            return Err(format!(
                                "llama3 rope scaling needs factor > 0 and 0 < low_freq_factor < high_freq_factor, got {scaling:?}"
                            ));
                        }
                        Some(scaling)
                    }
                    other => {
                        return Err(format!(
                            "rope_type `{other}` is not implemented (poc implements default, linear and llama3)"
                        ));
                    }
                }
            }
        };
        Ok(Rope {
            theta,
            llama3,
            linear,
        })
    }

    /// Parameter count ([`usize::MAX`] for shapes whose count overflows, which
    /// [`LlamaConfig::validate`] refuses).
    pub fn num_params(&self) -> usize {
        self.checked_num_params().unwrap_or(usize::MAX)
    }

    /// Parameter count, or `None` where it overflows: then no product of two of the shapes
    /// (a weight matrix's size) is safe to compute either.
    fn checked_num_params(&self) -> Option<usize> {
        let (h, i, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let dh = self.head_dim();
        let q = self.num_attention_heads.checked_mul(dh)?;
        let kv = self.kv_heads().checked_mul(dh)?;
        // Sums of products, each term `factors` multiplied: None on overflow.
        let sum = |terms: &[&[usize]]| {
            terms.iter().try_fold(0usize, |acc, factors| {
                let term = factors.iter().try_fold(1usize, |p, &f| p.checked_mul(f))?;
                acc.checked_add(term)
            })
        };
        let mut block = sum(&[&[h, q], &[2, h, kv], &[q, h], &[3, h, i], &[2, h]])?;
        if let Ok(arch) = self.arch() {
            block = block.checked_add(sum(&[
                &[usize::from(arch.qkv_bias), q],
                &[usize::from(arch.qkv_bias), 2, kv],
                &[usize::from(arch.o_bias), h],
                &[usize::from(arch.mlp_bias), 2, i],
                &[usize::from(arch.mlp_bias), h],
                &[usize::from(arch.qk_norm), 2, dh],
                &[usize::from(arch.sandwich), 2, h],
            ])?)?;
        }
        let head = if self.tie_word_embeddings { 0 } else { 1 };
        sum(&[
            &[v, h],
            &[self.num_hidden_layers, block],
            &[h],
            &[head, v, h],
        ])
    }

    /// A named preset. `tiny` is the embedded default (byte-level vocabulary).
    pub fn preset(name: &str) -> Option<LlamaConfig> {
        let llama3_scaling = |factor: f64| {
            serde_json::json!({"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
        };
        let base =
            |v, h, i, l, heads, kv, theta, scaling: Option<serde_json::Value>, tie, max_pos| {
                LlamaConfig {
                    vocab_size: v,
                    hidden_size: h,
                    intermediate_size: i,
                    num_hidden_layers: l,
                    num_attention_heads: heads,
                    num_key_value_heads: Some(kv),
                    head_dim: None,
                    rms_norm_eps: 1e-5,
                    rope_theta: Some(theta),
                    rope_scaling: scaling,
                    rope_parameters: None,
                    max_position_embeddings: max_pos,
                    tie_word_embeddings: tie,
                    bos_token_id: Some(128000),
                    eos_token_id: Some(TokenIds::One(128001)),
                    extra: serde_json::Map::from_iter([
                        (
                            "architectures".to_string(),
                            serde_json::json!(["LlamaForCausalLM"]),
                        ),
                        ("model_type".to_string(), serde_json::json!("llama")),
                    ]),
                }
            };
        Some(match name {
            "tiny" => {
                let mut c = base(
                    crate::data::tiny_vocab_size(),
                    256,
                    704,
                    4,
                    8,
                    4,
                    10000.0,
                    None,
                    true,
                    512,
                );
                c.bos_token_id = Some(crate::data::BOS);
                c.eos_token_id = Some(TokenIds::One(crate::data::EOS));
                c
            }
            "llama3-8b" => base(128256, 4096, 14336, 32, 32, 8, 500000.0, None, false, 8192),
            "llama3.1-8b" => base(
                128256,
                4096,
                14336,
                32,
                32,
                8,
                500000.0,
                Some(llama3_scaling(8.0)),
                false,
                131072,
            ),
            "llama3.2-1b" => base(
                128256,
                2048,
                8192,
                16,
                32,
                8,
                500000.0,
                Some(llama3_scaling(32.0)),
                true,
                131072,
            ),
            "llama3.2-3b" => base(
                128256,
                3072,
                8192,
                28,
                24,
                8,
                500000.0,
                Some(llama3_scaling(32.0)),
                true,
                131072,
            ),
            other => return family_preset(other),
        })
    }

    /// The preset names: the embedded `tiny`, then the published shapes (random weights under
    /// `--random-init`, for `--dry-run` and the benchmarks).
    pub const PRESETS: [&'static str; 10] = [
        "tiny",
        "llama3-8b",
        "llama3.1-8b",
        "llama3.2-1b",
        "llama3.2-3b",
        "qwen2.5-0.5b",
        "qwen2.5-7b",
        "qwen3-0.6b",
        "gemma-2-2b",
        "mistral-7b",
    ];
}

/// The published `config.json` shapes of the non-Llama presets (Qwen2.5-0.5B-Instruct,
/// Qwen2.5-7B-Instruct, Qwen3-0.6B, gemma-2-2b, Mistral-7B-v0.3), as their model cards ship them.
fn family_preset(name: &str) -> Option<LlamaConfig> {
    use serde_json::json;
    let qwen25 = |v: usize, h: usize, i: usize, l: usize, heads: usize, kv: usize, tie: bool| {
        json!({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"],
               "vocab_size": v, "hidden_size": h, "intermediate_size": i,
               "num_hidden_layers": l, "num_attention_heads": heads, "num_key_value_heads": kv,
               "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": tie,
               "max_position_embeddings": 32768, "sliding_window": 32768,
               "use_sliding_window": false, "max_window_layers": l,
               "bos_token_id": 151643, "eos_token_id": 151645})
    };
    let value = match name {
        "qwen2.5-0.5b" => qwen25(151936, 896, 4864, 24, 14, 2, true),
        "qwen2.5-7b" => qwen25(152064, 3584, 18944, 28, 28, 4, false),
        "qwen3-0.6b" => json!({"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"],
            "vocab_size": 151936, "hidden_size": 1024, "intermediate_size": 3072,
            "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8,
            "head_dim": 128, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
            "tie_word_embeddings": true, "max_position_embeddings": 40960,
            "sliding_window": null, "use_sliding_window": false, "max_window_layers": 28,
            "bos_token_id": 151643, "eos_token_id": 151645}),
        "gemma-2-2b" => json!({"model_type": "gemma2", "architectures": ["Gemma2ForCausalLM"],
            "vocab_size": 256000, "hidden_size": 2304, "intermediate_size": 9216,
            "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
            "head_dim": 256, "query_pre_attn_scalar": 256, "sliding_window": 4096,
            "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
            "hidden_activation": "gelu_pytorch_tanh", "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0, "max_position_embeddings": 8192,
            "bos_token_id": 2, "eos_token_id": [1, 107], "pad_token_id": 0}),
        "mistral-7b" => json!({"model_type": "mistral", "architectures": ["MistralForCausalLM"],
            "vocab_size": 32768, "hidden_size": 4096, "intermediate_size": 14336,
            "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
            "head_dim": 128, "rope_theta": 1000000.0, "rms_norm_eps": 1e-5,
            "sliding_window": null, "max_position_embeddings": 32768,
            "bos_token_id": 1, "eos_token_id": 2}),
        _ => return None,
    };
    LlamaConfig::from_json(value).ok()
}

/// Inverse RoPE frequencies for `head_dim`, with Llama-3 scaling applied as transformers does
/// (`_compute_llama3_parameters`).
pub fn inv_frequencies(rope: &Rope, head_dim: usize) -> Vec<f64> {
    let base: Vec<f64> = (0..head_dim / 2)
        .map(|i| 1.0 / rope.theta.powf((2 * i) as f64 / head_dim as f64))
        .collect();
    if let Some(factor) = rope.linear {
        return base.into_iter().map(|f| f / factor).collect();
    }
    let Some(s) = rope.llama3 else { return base };
    let old = s.original_max_position_embeddings as f64;
    let low_wavelen = old / s.low_freq_factor;
    let high_wavelen = old / s.high_freq_factor;
    base.into_iter()
        .map(|f| {
            let wavelen = 2.0 * std::f64::consts::PI / f;
            if wavelen < high_wavelen {
                f
            } else if wavelen > low_wavelen {
                f / s.factor
            } else {
                let smooth =
                    (old / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                (1.0 - smooth) * f / s.factor + smooth * f
            }
        })
        .collect()
}

/// The defaults of the keys [`LlamaConfig`] reads, per family, as transformers' configuration
/// classes set them (`null`: the shared default, e.g. head_dim = hidden / heads).
fn family_defaults(family: Family) -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    let (eps, theta, tied, head_dim, kv) = match family {
        Family::Llama => (1e-6, 10000.0, false, json!(null), json!(null)),
        Family::Mistral => (1e-6, 10000.0, false, json!(null), json!(8)),
        Family::Qwen2 => (1e-6, 10000.0, false, json!(null), json!(32)),
        Family::Qwen3 => (1e-6, 10000.0, false, json!(128), json!(32)),
        Family::Gemma2 => (1e-6, 10000.0, true, json!(256), json!(4)),
        Family::Gemma3 => (1e-6, 1_000_000.0, true, json!(256), json!(4)),
        Family::Phi3 => (1e-5, 10000.0, false, json!(null), json!(null)),
    };
    vec![
        ("rms_norm_eps", json!(eps)),
        ("tie_word_embeddings", json!(tied)),
        ("head_dim", head_dim),
        ("num_key_value_heads", kv),
        // `rope_theta` may live inside transformers-5's `rope_parameters` instead.
        ("rope_theta", json!(theta)),
    ]
}
