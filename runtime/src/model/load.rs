//! HF-layout checkpoints: `config.json`, `model.safetensors` or sharded
//! `model-0000k-of-0000n.safetensors` with `model.safetensors.index.json`. Tensors are read one
//! at a time from memory-mapped files (never two full copies of the model in memory) and saved
//! atomically (temporary file in the same directory, then rename).

use super::config::{LlamaConfig, ModelError};
use super::llama::{Block, Llama};
use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The files a tensor name lives in.
struct Shards {
    files: HashMap<String, PathBuf>,
    maps: HashMap<PathBuf, memmap2::Mmap>,
}

impl Shards {
    fn open(dir: &Path) -> Result<Shards, ModelError> {
        let index = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let mut files = HashMap::new();
        if index.exists() {
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
        } else if single.exists() {
            let map = mmap(&single)?;
            let st = SafeTensors::deserialize(&map)
                .map_err(|e| ModelError::format(&single, e.to_string()))?;
            for name in st.names() {
                files.insert(name.to_string(), single.clone());
            }
        } else {
            return Err(ModelError::Other(format!(
                "{}: no model.safetensors or model.safetensors.index.json",
                dir.display()
            )));
        }
        Ok(Shards {
            files,
            maps: HashMap::new(),
        })
    }

    /// The tensor `name` as f32 values and its shape.
    fn read(&mut self, name: &str) -> Result<(Vec<f32>, Vec<usize>), ModelError> {
        let path = self
            .files
            .get(name)
            .cloned()
            .ok_or_else(|| ModelError::Other(format!("checkpoint lacks tensor `{name}`")))?;
        if !self.maps.contains_key(&path) {
            let m = mmap(&path)?;
            self.maps.insert(path.clone(), m);
        }
        let map = &self.maps[&path];
        let st =
            SafeTensors::deserialize(map).map_err(|e| ModelError::format(&path, e.to_string()))?;
        let view = st
            .tensor(name)
            .map_err(|e| ModelError::format(&path, format!("`{name}`: {e}")))?;
        let bytes = view.data();
        let values: Vec<f32> = match view.dtype() {
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
            other => {
                return Err(ModelError::format(
                    &path,
                    format!("`{name}` has unsupported dtype {other:?}"),
                ));
            }
        };
        Ok((values, view.shape().to_vec()))
    }
}

fn mmap(path: &Path) -> Result<memmap2::Mmap, ModelError> {
    let f = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    // SAFETY: the file is opened read-only; poc never writes to a checkpoint it is reading.
    unsafe { memmap2::Mmap::map(&f) }.map_err(|e| ModelError::io(path, e))
}

/// Loads `dir` (config.json + safetensors) onto `device`.
pub fn load(dir: &Path, device: &Device) -> Result<Llama, ModelError> {
    let config = LlamaConfig::from_file(&dir.join("config.json"))?;
    let mut shards = Shards::open(dir)?;
    let (h, i, v) = (
        config.hidden_size,
        config.intermediate_size,
        config.vocab_size,
    );
    let q = config.num_attention_heads * config.head_dim();
    let kv = config.kv_heads() * config.head_dim();
    let mut vector = |name: &str, n: usize| -> Result<Param<Tensor<1>>, ModelError> {
        let (data, shape) = shards.read(name)?;
        check_shape(name, &shape, &[n])?;
        Ok(Param::from_tensor(Tensor::from_data(
            TensorData::new(data, [n]),
            device,
        )))
    };
    let mut norms = Vec::new();
    for l in 0..config.num_hidden_layers {
        norms.push((
            vector(&format!("model.layers.{l}.input_layernorm.weight"), h)?,
            vector(
                &format!("model.layers.{l}.post_attention_layernorm.weight"),
                h,
            )?,
        ));
    }
    let norm = vector("model.norm.weight", h)?;
    // HF stores linear weights [out, in]; burn multiplies by [in, out].
    let mut matrix = |name: &str,
                      out: usize,
                      inp: usize,
                      transpose: bool|
     -> Result<Param<Tensor<2>>, ModelError> {
        let (data, shape) = shards.read(name)?;
        check_shape(name, &shape, &[out, inp])?;
        let t = Tensor::<2>::from_data(TensorData::new(data, [out, inp]), device);
        Ok(Param::from_tensor(if transpose {
            t.transpose()
        } else {
            t
        }))
    };
    let embed = matrix("model.embed_tokens.weight", v, h, false)?;
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for (l, (attn_norm, mlp_norm)) in norms.into_iter().enumerate() {
        let p = |s: &str| format!("model.layers.{l}.{s}.weight");
        layers.push(Block {
            attn_norm,
            wq: matrix(&p("self_attn.q_proj"), q, h, true)?,
            wk: matrix(&p("self_attn.k_proj"), kv, h, true)?,
            wv: matrix(&p("self_attn.v_proj"), kv, h, true)?,
            wo: matrix(&p("self_attn.o_proj"), h, q, true)?,
            mlp_norm,
            w_gate: matrix(&p("mlp.gate_proj"), i, h, true)?,
            w_up: matrix(&p("mlp.up_proj"), i, h, true)?,
            w_down: matrix(&p("mlp.down_proj"), h, i, true)?,
        });
    }
    let lm_head = if config.tie_word_embeddings {
        None
    } else {
        Some(matrix("lm_head.weight", v, h, true)?)
    };
    Ok(Llama {
        embed,
        layers,
        norm,
        lm_head,
        config,
    })
}

fn check_shape(name: &str, got: &[usize], want: &[usize]) -> Result<(), ModelError> {
    if got != want {
        return Err(ModelError::Other(format!(
            "tensor `{name}` has shape {got:?}, the config implies {want:?}"
        )));
    }
    Ok(())
}

/// HF names and `[out, in]` host values of every tensor of `model`, in f32.
pub fn hf_tensors(model: &Llama) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let host2 = |t: Tensor<2>, transpose: bool| {
        let t = if transpose { t.transpose() } else { t };
        let dims = t.dims().to_vec();
        (
            dims,
            t.into_data().try_into_vec_as::<f32>().unwrap_or_default(),
        )
    };
    let host1 = |t: Tensor<1>| {
        let dims = t.dims().to_vec();
        (
            dims,
            t.into_data().try_into_vec_as::<f32>().unwrap_or_default(),
        )
    };
    let mut out = Vec::new();
    let mut push =
        |name: String, (dims, data): (Vec<usize>, Vec<f32>)| out.push((name, dims, data));
    push(
        "model.embed_tokens.weight".into(),
        host2(model.embed.val(), false),
    );
    for (l, b) in model.layers.iter().enumerate() {
        let p = |s: &str| format!("model.layers.{l}.{s}.weight");
        push(p("input_layernorm"), host1(b.attn_norm.val()));
        push(p("post_attention_layernorm"), host1(b.mlp_norm.val()));
        push(p("self_attn.q_proj"), host2(b.wq.val(), true));
        push(p("self_attn.k_proj"), host2(b.wk.val(), true));
        push(p("self_attn.v_proj"), host2(b.wv.val(), true));
        push(p("self_attn.o_proj"), host2(b.wo.val(), true));
        push(p("mlp.gate_proj"), host2(b.w_gate.val(), true));
        push(p("mlp.up_proj"), host2(b.w_up.val(), true));
        push(p("mlp.down_proj"), host2(b.w_down.val(), true));
    }
    push("model.norm.weight".into(), host1(model.norm.val()));
    if let Some(w) = &model.lm_head {
        push("lm_head.weight".into(), host2(w.val(), true));
    }
    out
}

/// Writes `model` to `dir` in HF layout (config.json + model.safetensors, f32), each file
/// atomically. Extra files (e.g. tokenizer.json) are the caller's.
pub fn save(model: &Llama, dir: &Path) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let tensors = hf_tensors(model);
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dims, data)| {
            let bytes: &[u8] = bytemuck_f32(data);
            safetensors::tensor::TensorView::new(Dtype::F32, dims.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| ModelError::Other(format!("tensor `{name}`: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(views, Some(meta.into_iter().collect()))
        .map_err(|e| ModelError::Other(e.to_string()))?;
    write_atomic(&dir.join("model.safetensors"), &bytes)?;
    let mut config = model.config.clone();
    config
        .extra
        .insert("torch_dtype".into(), serde_json::json!("float32"));
    let text =
        serde_json::to_string_pretty(&config).map_err(|e| ModelError::Other(e.to_string()))?;
    write_atomic(&dir.join("config.json"), text.as_bytes())
}

fn bytemuck_f32(data: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and any byte pattern is a valid u8; little-endian hosts
    // (x86-64, aarch64) store f32 exactly as safetensors' F32 little-endian layout.
    unsafe { std::slice::from_raw_parts(data.as_ptr() as *const u8, std::mem::size_of_val(data)) }
}

/// Writes `bytes` to `path` via a temporary file in the same directory and a rename, so a
/// crash never leaves a half-written file under the final name.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).map_err(|e| ModelError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| ModelError::io(path, e))
}
