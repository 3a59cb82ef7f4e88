//! `config.json` as Hugging Face writes it for Llama models, in both the published form
//! (`rope_theta` and `rope_scaling` at the top level) and transformers-5's
//! `rope_parameters`; and the presets `tiny`, `llama3-8b`, `llama3.1-8b`, `llama3.2-1b`,
//! `llama3.2-3b`.

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

/// The fields of an HF Llama `config.json` that define the network. Unknown fields are kept
/// (`extra`) so that a saved checkpoint's config is the loaded one plus our changes.
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
}

impl LlamaConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let cfg: LlamaConfig =
            serde_json::from_str(&text).map_err(|e| ModelError::format(path, e.to_string()))?;
        cfg.validate().map_err(|m| ModelError::format(path, m))?;
        Ok(cfg)
    }

    /// Checks that the shapes are consistent.
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
        if !self.head_dim().is_multiple_of(2) {
            return Err(format!(
                "head_dim ({}) must be even for RoPE",
                self.head_dim()
            ));
        }
        self.rope().map(|_| ())
    }

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
                            "unsupported rope_type `{other}` (poc supports default and llama3)"
                        ));
                    }
                }
            }
        };
        Ok(Rope { theta, llama3 })
    }

    /// Parameter count.
    pub fn num_params(&self) -> usize {
        let (h, i, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let (q, kv) = (
            self.num_attention_heads * self.head_dim(),
            self.kv_heads() * self.head_dim(),
        );
        let block = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h;
        let head = if self.tie_word_embeddings { 0 } else { v * h };
        v * h + self.num_hidden_layers * block + h + head
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
            _ => return None,
        })
    }

    /// The preset names.
    pub const PRESETS: [&'static str; 5] = [
        "tiny",
        "llama3-8b",
        "llama3.1-8b",
        "llama3.2-1b",
        "llama3.2-3b",
    ];
}

/// Inverse RoPE frequencies for `head_dim`, with Llama-3 scaling applied as transformers does
/// (`_compute_llama3_parameters`).
pub fn inv_frequencies(rope: &Rope, head_dim: usize) -> Vec<f64> {
    let base: Vec<f64> = (0..head_dim / 2)
        .map(|i| 1.0 / rope.theta.powf((2 * i) as f64 / head_dim as f64))
        .collect();
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
