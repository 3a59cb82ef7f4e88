//! HF-layout checkpoints: `config.json` plus `model.safetensors`, or sharded
//! `model-0000k-of-0000n.safetensors` files listed by `model.safetensors.index.json`.
//!
//! Loading memory-maps the files and moves one tensor at a time to the device (converted to
//! f32 from F32, BF16, F16 or F64), so the host never holds more than the tensor in flight.
//! Saving streams tensors the same way, one at a time from the device into the file, and
//! writes every file atomically (a temporary file in the same directory, then a rename).

use super::config::{LlamaConfig, ModelError};
use super::llama::{
    Adapter, Block, BlockAdapters, BlockBiases, Compute, Llama, LoraConfig, Target,
};
use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};
use std::collections::{HashMap, HashSet};
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
    /// The tensors read so far (what the model consumed).
    used: HashSet<String>,
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
            used: HashSet::new(),
        })
    }

    /// Marks `name` as consumed without reading it.
    fn mark_used(&mut self, name: &str) {
        self.used.insert(name.to_string());
    }

    /// The tensors of the checkpoint nobody read (sorted), RoPE buffers aside.
    fn unused(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .files
            .keys()
            .filter(|n| !self.used.contains(*n) && !ignorable(n))
            .cloned()
            .collect();
        out.sort();
        out
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
            used: HashSet::new(),
        })
    }

    /// The tensor `name` as f32 values, checked to have shape `want`.
    fn read(&mut self, name: &str, want: &[usize]) -> Result<Vec<f32>, ModelError> {
        self.used.insert(name.to_string());
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

/// The HF name of the bias of block `layer`'s projection `part`.
fn bias_name(layer: usize, part: &str) -> String {
    format!("model.layers.{layer}.{part}.bias")
}

/// Phi-3's fused projections: `self_attn.qkv_proj` holds q, k and v (in that order, by rows)
/// and `mlp.gate_up_proj` holds gate and up.
const FUSED_QKV: &str = "self_attn.qkv_proj";
const FUSED_GATE_UP: &str = "mlp.gate_up_proj";

/// Tensors transformers itself skips when loading (non-persistent RoPE buffers of old
/// checkpoints), which a checkpoint may hold without poc consuming them.
fn ignorable(name: &str) -> bool {
    name.ends_with(".rotary_emb.inv_freq")
}

/// Loads the HF checkpoint in `dir` (`config.json` and its safetensors) onto `device`, in f32.
///
/// The configuration must describe an architecture poc implements ([`super::arch::Arch::of`]),
/// and every tensor in the checkpoint must be one the model consumes: an unexpected tensor
/// (a bias, a norm, a head the architecture does not have) is an error naming it, because
/// dropping it would compute a different network. A missing tensor or one of the wrong shape is
/// an error that names the tensor and the file. The only tensors read and not used are an
/// `lm_head.weight` of a tied model (transformers ties it to the embedding) and old RoPE
/// buffers.
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
    let config_path = dir.join("config.json");
    let config = LlamaConfig::from_file(&config_path)?;
    let arch = config
        .arch()
        .map_err(|m| ModelError::format(&config_path, m))?;
    let mut shards = Shards::open(dir)?;
    let reward_model = shards.files.contains_key("score.weight");
    let has_lm_head = shards.files.contains_key("lm_head.weight");
    let (h, i, v, dh) = (
        config.hidden_size,
        config.intermediate_size,
        config.vocab_size,
        config.head_dim(),
    );
    let q = config.num_attention_heads * dh;
    let kv = config.kv_heads() * dh;
    let to_device = |data: Vec<f32>, shape: [usize; 2], transpose: bool| {
        let t = Tensor::<2>::from_data(TensorData::new(data, shape), device);
        let t = match matrices {
            Some(d) => t.cast(d),
            None => t,
        };
        // HF stores linear weights [out, in]; the model multiplies by [in, out]. The
        // transpose is a view on the device, not a copy.
        Param::from_tensor(if transpose { t.transpose() } else { t })
    };
    let vector = |data: Vec<f32>| {
        let n = data.len();
        Param::from_tensor(Tensor::<1>::from_data(TensorData::new(data, [n]), device))
    };
    let embed = to_device(
        shards.read("model.embed_tokens.weight", &[v, h])?,
        [v, h],
        false,
    );
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for l in 0..config.num_hidden_layers {
        let [attn_in, mlp_in, attn_out, mlp_out] = arch.norm_names(l);
        let mut norm = |name: Option<String>, n: usize| -> Result<_, ModelError> {
            name.map(|name| shards.read(&name, &[n]).map(vector))
                .transpose()
        };
        let attn_norm = norm(attn_in, h)?.expect("every family has an input norm");
        let mlp_norm = norm(mlp_in, h)?.expect("every family has a pre-MLP norm");
        let attn_out_norm = norm(attn_out, h)?;
        let mlp_out_norm = norm(mlp_out, h)?;
        let (q_norm, k_norm) = if arch.qk_norm {
            (
                norm(Some(block_name(l, "self_attn.q_norm")), dh)?,
                norm(Some(block_name(l, "self_attn.k_norm")), dh)?,
            )
        } else {
            (None, None)
        };
        // The projections' [out, in] blocks, split on the host where the family fuses them.
        let mut weights: Vec<(Target, Vec<f32>)> = Vec::with_capacity(7);
        let out_in = |t: Target| match t {
            Target::Q => (q, h),
            Target::K | Target::V => (kv, h),
            Target::O => (h, q),
            Target::Gate | Target::Up => (i, h),
            Target::Down => (h, i),
        };
        if arch.family.fused() {
            for (fused, parts) in [
                (FUSED_QKV, vec![Target::Q, Target::K, Target::V]),
                (FUSED_GATE_UP, vec![Target::Gate, Target::Up]),
            ] {
                let rows: usize = parts.iter().map(|&t| out_in(t).0).sum();
                let data = shards.read(&block_name(l, fused), &[rows, h])?;
                let mut start = 0;
                for t in parts {
                    let n = out_in(t).0 * h;
                    weights.push((t, data[start..start + n].to_vec()));
                    start += n;
                }
            }
            for t in [Target::O, Target::Down] {
                let (out, inp) = out_in(t);
                weights.push((t, shards.read(&block_name(l, t.hf_path()), &[out, inp])?));
            }
        } else {
            for t in Target::ALL {
                let (out, inp) = out_in(t);
                weights.push((t, shards.read(&block_name(l, t.hf_path()), &[out, inp])?));
            }
        }
        let mut take = |t: Target| {
            let pos = weights
                .iter()
                .position(|(w, _)| *w == t)
                .expect("every projection was read above");
            let (out, inp) = out_in(t);
            to_device(weights.swap_remove(pos).1, [out, inp], true)
        };
        let mut block = Block {
            attn_norm,
            wq: take(Target::Q),
            wk: take(Target::K),
            wv: take(Target::V),
            wo: take(Target::O),
            mlp_norm,
            w_gate: take(Target::Gate),
            w_up: take(Target::Up),
            w_down: take(Target::Down),
            biases: BlockBiases::default(),
            q_norm,
            k_norm,
            attn_out_norm,
            mlp_out_norm,
            adapters: BlockAdapters::default(),
        };
        for t in arch.biased() {
            let out = out_in(t).0;
            let data = shards.read(&bias_name(l, t.hf_path()), &[out])?;
            *block.biases.slot_mut(t) = Some(vector(data));
        }
        layers.push(block);
    }
    let norm = vector(shards.read("model.norm.weight", &[h])?);
    // A reward model (`*ForSequenceClassification`) has `score.weight` [1, hidden] and no
    // output head; a causal LM has `lm_head.weight` unless it is tied.
    let score = if reward_model {
        Some(to_device(
            shards.read("score.weight", &[1, h])?,
            [1, h],
            true,
        ))
    } else {
        None
    };
    let lm_head = if config.tie_word_embeddings || (reward_model && !has_lm_head) {
        if has_lm_head {
            // Tied: transformers makes `lm_head.weight` the embedding and ignores the copy.
            shards.mark_used("lm_head.weight");
        }
        None
    } else {
        let data = shards.read("lm_head.weight", &[v, h])?;
        Some(to_device(data, [v, h], true))
    };
    if let Some(tensor) = shards.unused().into_iter().next() {
        return Err(ModelError::UnexpectedTensor {
            tensor,
            path: shards.listing.clone(),
            model_type: arch.family.model_type(),
        });
    }
    Ok(Llama {
        embed,
        layers,
        norm,
        lm_head,
        score,
        value_head: None,
        config,
        arch,
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
    let arch = &model.arch;
    for (l, b) in model.layers.iter().enumerate() {
        let [attn_in, mlp_in, attn_out, mlp_out] = arch.norm_names(l);
        let norms = [
            (attn_in, Some(&b.attn_norm)),
            (attn_out, b.attn_out_norm.as_ref()),
            (mlp_in, Some(&b.mlp_norm)),
            (mlp_out, b.mlp_out_norm.as_ref()),
        ];
        for (name, w) in norms {
            if let (Some(name), Some(w)) = (name, w) {
                out.push(vector(name, w.val()));
            }
        }
        for (part, w) in [
            ("self_attn.q_norm", &b.q_norm),
            ("self_attn.k_norm", &b.k_norm),
        ] {
            if let Some(w) = w {
                out.push(vector(block_name(l, part), w.val()));
            }
        }
        // Adapters (LoRA) are merged into their weights, so other tools load the trained model
        // as a plain checkpoint of its family; the adapters alone go to
        // `adapter_model.safetensors`.
        let merged = |t: Target| model.merged_weight(b, t);
        if arch.family.fused() {
            // [in, out] pieces side by side along `out` are HF's [out, in] blocks stacked.
            for (fused, parts) in [
                (FUSED_QKV, vec![Target::Q, Target::K, Target::V]),
                (FUSED_GATE_UP, vec![Target::Gate, Target::Up]),
            ] {
                let w = Tensor::cat(parts.into_iter().map(merged).collect(), 1);
                out.push(linear(block_name(l, fused), w));
            }
            for t in [Target::O, Target::Down] {
                out.push(linear(block_name(l, t.hf_path()), merged(t)));
            }
        } else {
            for t in Target::ALL {
                out.push(linear(block_name(l, t.hf_path()), merged(t)));
            }
        }
        for t in Target::ALL {
            if let Some(bias) = b.biases.get(t) {
                out.push(vector(bias_name(l, t.hf_path()), bias.val()));
            }
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
        if model.score.is_none() {
            obj.insert(
                "architectures".into(),
                serde_json::json!([model.arch.family.causal_lm_class()]),
            );
        }
        if model.score.is_some() {
            // What transformers needs to load and pool a one-label reward model.
            obj.insert(
                "architectures".into(),
                serde_json::json!([model.arch.family.reward_model_class()]),
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
