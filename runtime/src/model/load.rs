//! HF-layout checkpoints: `config.json` plus `model.safetensors`, or sharded
//! `model-0000k-of-0000n.safetensors` files listed by `model.safetensors.index.json`.
//!
//! Loading memory-maps the files and moves one tensor at a time to the device (converted to
//! f32 from F32, BF16, F16 or F64), so the host never holds more than the tensor in flight.
//! Saving streams tensors the same way, one at a time from the device into the file, and
//! writes every file atomically (a temporary file in the same directory, then a rename).

use super::config::{LlamaConfig, ModelError};
use super::llama::{Adapter, Block, BlockAdapters, Compute, Llama, LoraConfig, Target};
use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

const SINGLE: &str = "model.safetensors";
const INDEX: &str = "model.safetensors.index.json";

/// The checkpoint's files, memory-mapped on first use, and which file holds each tensor.
struct Shards {
    /// Tensor name → file.
    files: HashMap<String, PathBuf>,
    /// The file that lists the tensors (named when one is missing).
    listing: PathBuf,
    maps: HashMap<PathBuf, memmap2::Mmap>,
}

impl Shards {
    fn open(dir: &Path) -> Result<Shards, ModelError> {
        let index = dir.join(INDEX);
        let single = dir.join(SINGLE);
        let mut files = HashMap::new();
        let maps = HashMap::new();
        // An index wins over a single file, as in transformers.
        let listing = if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| ModelError::io(&index, e))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| ModelError::format(&index, e.to_string()))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| ModelError::format(&index, "no `weight_map` object"))?;
            for (name, file) in map {
                let file = file.as_str().ok_or_else(|| {
                    ModelError::format(&index, format!("`{name}` maps to a non-string"))
                })?;
                files.insert(name.clone(), dir.join(file));
            }
            index
        } else if single.exists() {
            return Shards::file(&single);
        } else {
            return Err(ModelError::NoWeights {
                dir: dir.to_path_buf(),
            });
        };
        Ok(Shards {
            files,
            listing,
            maps,
        })
    }

    /// One safetensors file on its own.
    fn file(path: &Path) -> Result<Shards, ModelError> {
        let map = mmap(path)?;
        let st =
            SafeTensors::deserialize(&map).map_err(|e| ModelError::format(path, e.to_string()))?;
        let files = st
            .names()
            .into_iter()
            .map(|name| (name.to_string(), path.to_path_buf()))
            .collect();
        let mut maps = HashMap::new();
        maps.insert(path.to_path_buf(), map);
        Ok(Shards {
            files,
            listing: path.to_path_buf(),
            maps,
        })
    }

    /// The tensor `name` as f32 values, checked to have shape `want`.
    fn read(&mut self, name: &str, want: &[usize]) -> Result<Vec<f32>, ModelError> {
        let path = self
            .files
            .get(name)
            .cloned()
            .ok_or_else(|| ModelError::MissingTensor {
                tensor: name.to_string(),
                path: self.listing.clone(),
            })?;
        if !self.maps.contains_key(&path) {
            let m = mmap(&path)?;
            self.maps.insert(path.clone(), m);
        }
        let map = &self.maps[&path];
        let st =
            SafeTensors::deserialize(map).map_err(|e| ModelError::format(&path, e.to_string()))?;
        let view = st.tensor(name).map_err(|_| ModelError::MissingTensor {
            tensor: name.to_string(),
            path: path.clone(),
        })?;
        if view.shape() != want {
            return Err(ModelError::Shape {
                tensor: name.to_string(),
                path,
                got: view.shape().to_vec(),
                want: want.to_vec(),
            });
        }
        let bytes = view.data();
        Ok(match view.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::F64 => bytes
                .chunks_exact(8)
                .map(|c| {
                    f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
                })
                .collect(),
            other => {
                return Err(ModelError::Dtype {
                    tensor: name.to_string(),
                    path,
                    dtype: format!("{other:?}"),
                });
            }
        })
    }
}

fn mmap(path: &Path) -> Result<memmap2::Mmap, ModelError> {
    let f = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    // SAFETY: the file is opened read-only and poc never writes to a checkpoint while it
    // reads it (saves go to a temporary file and a rename, which leaves this mapping valid).
    unsafe { memmap2::Mmap::map(&f) }.map_err(|e| ModelError::io(path, e))
}

/// The HF name of decoder block `layer`'s parameter `part` (e.g. `self_attn.q_proj`).
fn block_name(layer: usize, part: &str) -> String {
    format!("model.layers.{layer}.{part}.weight")
}

/// Loads the HF checkpoint in `dir` (`config.json` and its safetensors) onto `device`, in f32.
///
/// Tensors the model does not use (e.g. `lm_head.weight` of a tied model, or rotary buffers
/// of old checkpoints) are ignored; a missing one or one of the wrong shape is an error that
/// names the tensor and the file.
pub fn load(dir: &Path, device: &Device) -> Result<Llama, ModelError> {
    load_stored(dir, device, None)
}

/// [`load`] with every matrix stored in `matrices` (e.g. bf16) as soon as it is on the device,
/// so that the whole model never exists in f32: for a base that LoRA freezes.
pub fn load_stored(
    dir: &Path,
    device: &Device,
    matrices: Option<burn::tensor::DType>,
) -> Result<Llama, ModelError> {
    let config = LlamaConfig::from_file(&dir.join("config.json"))?;
    let mut shards = Shards::open(dir)?;
    let reward_model = shards.files.contains_key("score.weight");
    let has_lm_head = shards.files.contains_key("lm_head.weight");
    let (h, i, v) = (
        config.hidden_size,
        config.intermediate_size,
        config.vocab_size,
    );
    let q = config.num_attention_heads * config.head_dim();
    let kv = config.kv_heads() * config.head_dim();
    let mut vector = |name: &str| -> Result<Param<Tensor<1>>, ModelError> {
        let data = shards.read(name, &[h])?;
        Ok(Param::from_tensor(Tensor::from_data(
            TensorData::new(data, [h]),
            device,
        )))
    };
    let mut norms = Vec::with_capacity(config.num_hidden_layers);
    for l in 0..config.num_hidden_layers {
        norms.push((
            vector(&block_name(l, "input_layernorm"))?,
            vector(&block_name(l, "post_attention_layernorm"))?,
        ));
    }
    let norm = vector("model.norm.weight")?;
    // HF stores linear weights [out, in]; the model multiplies by [in, out]. The transpose
    // is a view on the device, not a copy.
    let mut matrix = |name: &str,
                      out: usize,
                      inp: usize,
                      transpose: bool|
     -> Result<Param<Tensor<2>>, ModelError> {
        let data = shards.read(name, &[out, inp])?;
        let t = Tensor::<2>::from_data(TensorData::new(data, [out, inp]), device);
        let t = match matrices {
            Some(d) => t.cast(d),
            None => t,
        };
        Ok(Param::from_tensor(if transpose {
            t.transpose()
        } else {
            t
        }))
    };
    let embed = matrix("model.embed_tokens.weight", v, h, false)?;
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for (l, (attn_norm, mlp_norm)) in norms.into_iter().enumerate() {
        layers.push(Block {
            attn_norm,
            wq: matrix(&block_name(l, "self_attn.q_proj"), q, h, true)?,
            wk: matrix(&block_name(l, "self_attn.k_proj"), kv, h, true)?,
            wv: matrix(&block_name(l, "self_attn.v_proj"), kv, h, true)?,
            wo: matrix(&block_name(l, "self_attn.o_proj"), h, q, true)?,
            mlp_norm,
            w_gate: matrix(&block_name(l, "mlp.gate_proj"), i, h, true)?,
            w_up: matrix(&block_name(l, "mlp.up_proj"), i, h, true)?,
            w_down: matrix(&block_name(l, "mlp.down_proj"), h, i, true)?,
            adapters: BlockAdapters::default(),
        });
    }
    // A reward model (LlamaForSequenceClassification) has `score.weight` [1, hidden] and no
    // output head; a causal LM has `lm_head.weight` unless it is tied.
    let score = if reward_model {
        Some(matrix("score.weight", 1, h, true)?)
    } else {
        None
    };
    let lm_head = if config.tie_word_embeddings || (reward_model && !has_lm_head) {
        None
    } else {
        Some(matrix("lm_head.weight", v, h, true)?)
    };
    Ok(Llama {
        embed,
        layers,
        norm,
        lm_head,
        score,
        value_head: None,
        config,
        lora: None,
        adapters_enabled: true,
        compute: Compute::F32,
    })
}

const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
const ADAPTER_CONFIG: &str = "adapter_config.json";
/// A reward head's name in PEFT's adapter file (a `modules_to_save` module of `SEQ_CLS`).
const ADAPTER_SCORE: &str = "base_model.model.score.weight";

/// PEFT's name of adapter matrix `ab` (`lora_A`/`lora_B`) on projection `t` of block `layer`.
fn adapter_name(layer: usize, t: Target, ab: &str) -> String {
    format!(
        "base_model.model.model.layers.{layer}.{}.{ab}.weight",
        t.hf_path()
    )
}

/// Writes the adapters of a LoRA model to `dir` in PEFT's layout (`adapter_config.json`,
/// `adapter_model.safetensors`, f32), so `peft.PeftModel.from_pretrained` loads them onto the
/// base model. A reward model's head goes with them as PEFT's `SEQ_CLS` task saves it
/// (`modules_to_save: ["score"]`, `base_model.model.score.weight`). Does nothing for a model
/// without adapters.
pub fn save_adapters(model: &Llama, dir: &Path, base_model: &str) -> Result<(), ModelError> {
    let Some(lora) = &model.lora else {
        return Ok(());
    };
    let mut tensors = Vec::new();
    for (l, b) in model.layers.iter().enumerate() {
        for t in Target::ALL {
            if let Some(ad) = b.adapters.get(t) {
                // PEFT stores A as [r, in] and B as [out, r]: the transposes of ours.
                for (ab, w) in [("lora_A", ad.a.val()), ("lora_B", ad.b.val())] {
                    let [rows, cols] = w.dims();
                    tensors.push(HfTensor {
                        name: adapter_name(l, t, ab),
                        shape: vec![cols, rows],
                        tensor: DeviceTensor::Matrix(w, true),
                    });
                }
            }
        }
    }
    if let Some(w) = &model.score {
        let [h, _] = w.val().dims();
        tensors.push(HfTensor {
            name: ADAPTER_SCORE.into(),
            shape: vec![1, h],
            tensor: DeviceTensor::Matrix(w.val(), true),
        });
    }
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let path = dir.join(ADAPTER_WEIGHTS);
    let refs: Vec<&HfTensor> = tensors.iter().collect();
    write_atomic_with(&path, |w| {
        write_safetensors(w, &refs, SaveDtype::F32, &path)
    })?;
    let (task, modules_to_save) = match model.score {
        Some(_) => ("SEQ_CLS", serde_json::json!(["score"])),
        None => ("CAUSAL_LM", serde_json::Value::Null),
    };
    let config = serde_json::json!({
        "peft_type": "LORA",
        "task_type": task,
        "modules_to_save": modules_to_save,
        "base_model_name_or_path": base_model,
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": false,
        "target_modules": lora.targets.iter().map(|t| t.module_name()).collect::<Vec<_>>(),
    });
    write_json(&dir.join(ADAPTER_CONFIG), &config)
}

/// Where a checkpoint keeps its LoRA adapters: a subdirectory, because transformers'
/// `from_pretrained` treats any directory with an `adapter_config.json` as an adapter and loads
/// its base instead of the merged weights beside it.
pub const ADAPTER_SUBDIR: &str = "adapter";

/// The adapter directory of checkpoint `checkpoint` (`checkpoint/adapter`).
pub fn adapter_dir(checkpoint: &Path) -> PathBuf {
    checkpoint.join(ADAPTER_SUBDIR)
}

/// Whether `dir` holds PEFT adapters (`adapter_config.json`).
pub fn has_adapters(dir: &Path) -> bool {
    dir.join(ADAPTER_CONFIG).is_file()
}

/// Reads the LoRA settings and adapters saved by [`save_adapters`] in `dir` and attaches them
/// to `base` (whose base weights are frozen), with the reward head they carry for a `SEQ_CLS`
/// task. The shapes are checked against `base`.
pub fn load_adapters(dir: &Path, base: Llama) -> Result<Llama, ModelError> {
    let cfg_path = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| ModelError::io(&cfg_path, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| ModelError::format(&cfg_path, e.to_string()))?;
    let field = |k: &str| {
        v.get(k)
            .ok_or_else(|| ModelError::format(&cfg_path, format!("lacks `{k}`")))
    };
    let rank = field("r")?
        .as_u64()
        .filter(|&r| r > 0)
        .ok_or_else(|| ModelError::format(&cfg_path, "`r` is not a positive integer"))?
        as usize;
    let alpha = field("lora_alpha")?
        .as_f64()
        .ok_or_else(|| ModelError::format(&cfg_path, "`lora_alpha` is not a number"))?;
    let names: Vec<String> = field("target_modules")?
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let targets =
        Target::parse_list(&names.join(",")).map_err(|e| ModelError::format(&cfg_path, e))?;
    let mut shards = Shards::file(&dir.join(ADAPTER_WEIGHTS))?;
    let device = base.embed.val().device();
    let mut adapters = Vec::with_capacity(base.layers.len());
    for (l, b) in base.layers.iter().enumerate() {
        let mut set = BlockAdapters::default();
        for &t in &targets {
            let [inp, out] = b.weight(t).val().dims();
            let mut matrix = |ab: &str, rows: usize, cols: usize| -> Result<_, ModelError> {
                let data = shards.read(&adapter_name(l, t, ab), &[rows, cols])?;
                // Transposed on the host: a contiguous [cols, rows] tensor, laid out exactly
                // as the adapter was in training, so a resumed run computes bit for bit alike.
                let mut tr = vec![0f32; data.len()];
                for (k, v) in data.iter().enumerate() {
                    tr[(k % cols) * rows + k / cols] = *v;
                }
                let m = Tensor::<2>::from_data(TensorData::new(tr, [cols, rows]), &device);
                Ok(Param::from_tensor(m))
            };
            let a = matrix("lora_A", rank, inp)?;
            let b = matrix("lora_B", out, rank)?;
            *set.slot_mut(t) = Some(Adapter { a, b });
        }
        adapters.push(set);
    }
    let lora = LoraConfig {
        rank,
        alpha,
        targets,
    };
    let mut base = base;
    if v.get("task_type").and_then(|t| t.as_str()) == Some("SEQ_CLS") {
        let h = base.config.hidden_size;
        let w = shards.read(ADAPTER_SCORE, &[1, h])?;
        // [1, h] row-major is [h, 1] row-major.
        let w = Tensor::<2>::from_data(TensorData::new(w, [h, 1]), &device);
        base.score = Some(Param::from_tensor(w));
    }
    Ok(base.with_adapters(lora, adapters))
}

/// The file holding a PPO policy's value head, beside the HF weights (which have no place for
/// it). Its tensors use TRL's `AutoModelForCausalLMWithValueHead` names.
pub const VALUE_HEAD_WEIGHTS: &str = "value_head.safetensors";

/// Writes the value head of `model` (if it has one) to `dir/value_head.safetensors`, f32:
/// `v_head.summary.weight` `[1, hidden]` and a zero `v_head.summary.bias` `[1]` (poc's head has
/// no bias; TRL's has one).
pub fn save_value_head(model: &Llama, dir: &Path) -> Result<(), ModelError> {
    let Some(head) = &model.value_head else {
        return Ok(());
    };
    let w = head.val();
    let [h, _] = w.dims();
    let bias = Tensor::<1>::zeros([1], &w.device());
    let tensors = [
        HfTensor {
            name: "v_head.summary.weight".into(),
            shape: vec![1, h],
            tensor: DeviceTensor::Matrix(w, true),
        },
        HfTensor {
            name: "v_head.summary.bias".into(),
            shape: vec![1],
            tensor: DeviceTensor::Vector(bias),
        },
    ];
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let path = dir.join(VALUE_HEAD_WEIGHTS);
    let refs: Vec<&HfTensor> = tensors.iter().collect();
    write_atomic_with(&path, |w| {
        write_safetensors(w, &refs, SaveDtype::F32, &path)
    })
}

/// Attaches the value head saved by [`save_value_head`] in `dir` to `model`; a non-zero bias
/// (a head poc did not write) is refused rather than dropped.
pub fn load_value_head(dir: &Path, model: Llama) -> Result<Llama, ModelError> {
    let path = dir.join(VALUE_HEAD_WEIGHTS);
    if !path.is_file() {
        return Err(ModelError::format(
            &path,
            "no such file: the checkpoint has no value head",
        ));
    }
    let h = model.config.hidden_size;
    let mut shards = Shards::file(&path)?;
    let w = shards.read("v_head.summary.weight", &[1, h])?;
    let bias = shards.read("v_head.summary.bias", &[1])?;
    if bias.iter().any(|&b| b != 0.0) {
        return Err(ModelError::format(
            &path,
            "the value head has a non-zero bias, which poc's head does not have",
        ));
    }
    let device = model.embed.val().device();
    // [1, h] row-major is [h, 1] row-major: the same values in the same order.
    let head = Tensor::<2>::from_data(TensorData::new(w, [h, 1]), &device);
    let mut model = model;
    model.value_head = Some(Param::from_tensor(head));
    Ok(model)
}

/// The dtype tensors are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SaveDtype {
    /// 32-bit floats: exactly the trained values.
    #[default]
    F32,
    /// bfloat16, as Llama checkpoints are published (half the size; rounds the values).
    Bf16,
}

impl SaveDtype {
    /// The dtype a model's config names (`torch_dtype`, or transformers 4.56's `dtype`), as
    /// transformers saves a model in the dtype it was loaded in: bf16 for `bfloat16`, f32 for
    /// anything else (poc writes no f16) and for a config that names none (the presets).
    pub fn of_config(config: &super::LlamaConfig) -> SaveDtype {
        let named = |key: &str| config.extra.get(key).and_then(|v| v.as_str());
        match named("torch_dtype").or_else(|| named("dtype")) {
            Some("bfloat16") => SaveDtype::Bf16,
            _ => SaveDtype::F32,
        }
    }

    fn bytes_per_value(self) -> usize {
        match self {
            SaveDtype::F32 => 4,
            SaveDtype::Bf16 => 2,
        }
    }
    fn safetensors_name(self) -> &'static str {
        match self {
            SaveDtype::F32 => "F32",
            SaveDtype::Bf16 => "BF16",
        }
    }
    fn torch_name(self) -> &'static str {
        match self {
            SaveDtype::F32 => "float32",
            SaveDtype::Bf16 => "bfloat16",
        }
    }
}

/// How [`save_with`] writes a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaveOptions {
    /// Dtype of the written tensors.
    pub dtype: SaveDtype,
    /// Largest shard in bytes (transformers' default is 5 GB); a checkpoint that fits in one
    /// is written as a single `model.safetensors`. A tensor larger than this gets a shard
    /// of its own.
    pub max_shard_bytes: u64,
}

impl Default for SaveOptions {
    fn default() -> Self {
        SaveOptions {
            dtype: SaveDtype::F32,
            max_shard_bytes: 5_000_000_000,
        }
    }
}

/// A model tensor as HF names and lays it out, not yet read from its device.
struct HfTensor {
    name: String,
    /// The HF shape (`[out, in]` for linear weights).
    shape: Vec<usize>,
    tensor: DeviceTensor,
}

enum DeviceTensor {
    Vector(Tensor<1>),
    /// A matrix; `transpose` when the model stores the transpose of HF's layout.
    Matrix(Tensor<2>, bool),
}

impl HfTensor {
    fn values(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values in HF layout (row-major), read from the device.
    fn read(&self) -> Result<Vec<f32>, ModelError> {
        let t = match &self.tensor {
            DeviceTensor::Vector(t) => t.clone().try_into_vec_as::<f32>(),
            DeviceTensor::Matrix(t, true) => t.clone().transpose().try_into_vec_as::<f32>(),
            DeviceTensor::Matrix(t, false) => t.clone().try_into_vec_as::<f32>(),
        };
        t.map_err(|e| ModelError::Readback {
            tensor: self.name.clone(),
            message: e.to_string(),
        })
    }
}

/// Every tensor of `model` under its HF name, in checkpoint order.
fn hf_tensors(model: &Llama) -> Vec<HfTensor> {
    let vector = |name: String, t: Tensor<1>| HfTensor {
        name,
        shape: t.dims().to_vec(),
        tensor: DeviceTensor::Vector(t),
    };
    let linear = |name: String, t: Tensor<2>| {
        let [inp, out] = t.dims();
        HfTensor {
            name,
            shape: vec![out, inp],
            tensor: DeviceTensor::Matrix(t, true),
        }
    };
    let embed = model.embed.val();
    let mut out = vec![HfTensor {
        name: "model.embed_tokens.weight".into(),
        shape: embed.dims().to_vec(),
        tensor: DeviceTensor::Matrix(embed, false),
    }];
    for (l, b) in model.layers.iter().enumerate() {
        out.push(vector(block_name(l, "input_layernorm"), b.attn_norm.val()));
        out.push(vector(
            block_name(l, "post_attention_layernorm"),
            b.mlp_norm.val(),
        ));
        // Adapters (LoRA) are merged into their weights, so other tools load the trained model
        // as a plain Llama; the adapters alone go to `adapter_model.safetensors`.
        for t in Target::ALL {
            out.push(linear(
                block_name(l, t.hf_path()),
                model.merged_weight(b, t),
            ));
        }
    }
    out.push(vector("model.norm.weight".into(), model.norm.val()));
    if let Some(w) = &model.score {
        // LlamaForSequenceClassification: the reward head replaces the output head.
        out.push(linear("score.weight".into(), w.val()));
    } else if let Some(w) = &model.lm_head {
        out.push(linear("lm_head.weight".into(), w.val()));
    }
    out
}

/// Writes `model` to `dir` in HF layout with the default [`SaveOptions`] (f32, shards of at
/// most 5 GB). See [`save_with`].
pub fn save(model: &Llama, dir: &Path) -> Result<(), ModelError> {
    save_with(model, dir, &SaveOptions::default())
}

/// Writes `model` to `dir` in HF layout: `config.json` and `model.safetensors`, or
/// `model-0000k-of-0000n.safetensors` shards with `model.safetensors.index.json` when the
/// tensors exceed `options.max_shard_bytes`. Each file is written atomically; weight files of
/// an earlier save in `dir` that the new one does not use are removed afterwards, so `dir`
/// always loads as one consistent checkpoint. Other files (tokenizer.json, ...) are the
/// caller's.
pub fn save_with(model: &Llama, dir: &Path, options: &SaveOptions) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let tensors = hf_tensors(model);
    let size = |t: &HfTensor| (t.values() * options.dtype.bytes_per_value()) as u64;
    let mut shards: Vec<Vec<&HfTensor>> = Vec::new();
    let mut current = 0u64;
    for t in &tensors {
        match shards.last_mut() {
            Some(shard) if current + size(t) <= options.max_shard_bytes => shard.push(t),
            _ => {
                shards.push(vec![t]);
                current = 0;
            }
        }
        current += size(t);
    }
    let n = shards.len();
    let names: Vec<String> = if n == 1 {
        vec![SINGLE.to_string()]
    } else {
        (1..=n)
            .map(|k| format!("model-{k:05}-of-{n:05}.safetensors"))
            .collect()
    };
    for (shard, file) in shards.iter().zip(&names) {
        let path = dir.join(file);
        write_atomic_with(&path, |w| write_safetensors(w, shard, options.dtype, &path))?;
    }
    if n > 1 {
        let weight_map: serde_json::Map<String, serde_json::Value> = shards
            .iter()
            .zip(&names)
            .flat_map(|(shard, file)| {
                shard
                    .iter()
                    .map(move |t| (t.name.clone(), file.clone().into()))
            })
            .collect();
        let total: u64 = tensors.iter().map(size).sum();
        let index =
            serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        write_json(&dir.join(INDEX), &index)?;
    }
    let mut config = serde_json::to_value(&model.config)
        .map_err(|e| ModelError::format(&dir.join("config.json"), e.to_string()))?;
    if let Some(obj) = config.as_object_mut() {
        // Spell out the defaults so other tools need not know poc's, and name the dtype under
        // both the transformers-4.56+ key and the older one.
        obj.insert("num_key_value_heads".into(), model.config.kv_heads().into());
        obj.insert("head_dim".into(), model.config.head_dim().into());
        obj.insert("dtype".into(), options.dtype.torch_name().into());
        if model.score.is_some() {
            // What transformers needs to load and pool a one-label reward model.
            obj.insert(
                "architectures".into(),
                serde_json::json!(["LlamaForSequenceClassification"]),
            );
            obj.insert("num_labels".into(), 1.into());
            obj.insert("id2label".into(), serde_json::json!({"0": "LABEL_0"}));
            obj.insert("label2id".into(), serde_json::json!({"LABEL_0": 0}));
            if !obj.contains_key("pad_token_id") || obj["pad_token_id"].is_null() {
                let eos = model.config.eos_ids().first().copied().unwrap_or(0);
                obj.insert("pad_token_id".into(), eos.into());
            }
        }
        obj.insert("torch_dtype".into(), options.dtype.torch_name().into());
    }
    write_json(&dir.join("config.json"), &config)?;
    remove_stale_weights(dir, &names)
}

/// Removes weight files and the index of an earlier save that `keep` does not include.
fn remove_stale_weights(dir: &Path, keep: &[String]) -> Result<(), ModelError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ModelError::io(dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_weights = name == SINGLE
            || (name.starts_with("model-")
                && name.contains("-of-")
                && name.ends_with(".safetensors"))
            || (name == INDEX && keep.len() == 1);
        if is_weights && !keep.contains(&name) {
            std::fs::remove_file(entry.path()).map_err(|e| ModelError::io(&entry.path(), e))?;
        }
    }
    Ok(())
}

/// Streams `tensors` into `w` in the safetensors format: an 8-byte little-endian header
/// length, the JSON header (padded with spaces to a multiple of 8), then the data.
fn write_safetensors(
    w: &mut dyn Write,
    tensors: &[&HfTensor],
    dtype: SaveDtype,
    path: &Path,
) -> Result<(), ModelError> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut offset = 0usize;
    for t in tensors {
        let end = offset + t.values() * dtype.bytes_per_value();
        header.insert(
            t.name.clone(),
            serde_json::json!({"dtype": dtype.safetensors_name(), "shape": t.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut header = serde_json::Value::Object(header).to_string().into_bytes();
    header.resize(header.len().div_ceil(8) * 8, b' ');
    let io = |e| ModelError::io(path, e);
    w.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(io)?;
    w.write_all(&header).map_err(io)?;
    for t in tensors {
        let values = t.read()?;
        let bytes: Vec<u8> = match dtype {
            SaveDtype::F32 => values.iter().flat_map(|x| x.to_le_bytes()).collect(),
            SaveDtype::Bf16 => values
                .iter()
                .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                .collect(),
        };
        w.write_all(&bytes).map_err(io)?;
    }
    Ok(())
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), ModelError> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| ModelError::format(path, e.to_string()))?;
    write_atomic(path, text.as_bytes())
}

/// Writes `bytes` to `path` via a temporary file in the same directory and a rename, so a
/// crash never leaves a half-written file under the final name.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    write_atomic_with(path, |w| {
        w.write_all(bytes).map_err(|e| ModelError::io(path, e))
    })
}

/// [`write_atomic`] for contents produced by `write` (streamed, not held in memory).
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<(), ModelError>,
) -> Result<(), ModelError> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let file = std::fs::File::create(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
        let mut w = std::io::BufWriter::new(file);
        write(&mut w)?;
        let file = w
            .into_inner()
            .map_err(|e| ModelError::io(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| ModelError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| ModelError::io(path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
