//! The memory plan of a training run (`poc run --dry-run`): an estimate, before anything is
//! loaded, of what the weights, the optimizer state, the gradients, the activations kept for the
//! backward pass and the log-prob head take, from the model's shape and the run's flags.
//!
//! The estimate counts bytes the way the runtime holds them: frozen matrices in the compute
//! dtype ([`crate::model::Llama::store_frozen`]), trained parameters, their gradients and AdamW's
//! two moments in f32; activations per token and layer from what burn's autodiff keeps for one
//! decoder block with fused attention (the f32 residual stream and norm statistics, the
//! projections' inputs and outputs in the compute dtype, no `[T, T]` scores); the head as a few
//! chunk buffers ([`crate::kernels::HEAD_CHUNK_ELEMENTS`]). `poc bench memory` compares it with
//! the measured peak on the CPU.

use crate::kernels::HEAD_CHUNK_ELEMENTS;
use crate::model::{Compute, LlamaConfig, LoraConfig, Target};

/// How the reference's statistics are obtained (what it costs in memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefPlan {
    /// The objective reads no reference.
    None,
    /// A frozen copy of the starting model (full fine-tuning).
    Frozen,
    /// The LoRA base with adapters off: no second copy.
    AdaptersOff,
    /// Precomputed once (`--precompute-ref`): no model during training.
    Cached,
}

/// What a run's memory depends on.
#[derive(Debug, Clone)]
pub struct Shape {
    /// The model.
    pub config: LlamaConfig,
    /// Sequences per micro-batch (pairs × 2 when the objective reads the rejected side).
    pub rows: usize,
    /// Tokens per sequence (`--max-length`, the padded width).
    pub seq_len: usize,
    /// The compute dtype (and the dtype of frozen weights).
    pub compute: Compute,
    /// LoRA, when only adapters train.
    pub lora: Option<LoraConfig>,
    /// The reference strategy.
    pub reference: RefPlan,
    /// Burn's balanced gradient checkpointing (`--gradient-checkpointing`).
    pub gradient_checkpointing: bool,
}

/// One line of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// What it is (`weights`, `optimizer`, ...).
    pub name: &'static str,
    /// Estimated bytes.
    pub bytes: u64,
    /// How it was counted.
    pub note: String,
}

/// The estimate, item by item.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Weights, reference, optimizer state, gradients, activations, head.
    pub items: Vec<Item>,
}

/// Bytes per value of the compute dtype.
fn width(c: Compute) -> u64 {
    match c {
        Compute::F32 => 4,
        Compute::Bf16 => 2,
    }
}

/// Parameters of the adapters `lora` adds to `config`.
pub fn lora_params(config: &LlamaConfig, lora: &LoraConfig) -> u64 {
    let (h, i) = (config.hidden_size, config.intermediate_size);
    let q = config.num_attention_heads * config.head_dim();
    let kv = config.kv_heads() * config.head_dim();
    let per_layer: usize = lora
        .targets
        .iter()
        .map(|t| {
            let (inp, out) = match t {
                Target::Q => (h, q),
                Target::K | Target::V => (h, kv),
                Target::O => (q, h),
                Target::Gate | Target::Up => (h, i),
                Target::Down => (i, h),
            };
            lora.rank * (inp + out)
        })
        .sum();
    (per_layer * config.num_hidden_layers) as u64
}

/// Bytes burn's autodiff keeps per token and decoder layer for the backward pass, with fused
/// attention: twelve f32 vectors of the hidden width around the residual stream (each RMSNorm's
/// input, square, statistics and scaled values, the sublayers' widened outputs: 12 × 4h bytes,
/// calibrated on `poc bench memory`) and, in the compute dtype, the projections' inputs and
/// outputs (normed input h, q/k/v before and after RoPE 2(q + 2kv), the attention output and the
/// o-projection's input 2h, the MLP's gate, up, silu and product 4i and the down-projection's
/// input i). Burn's balanced checkpointing recomputes some memory-bound ones (norm
/// intermediates); measured, it keeps about 88% as much (`poc bench memory`), as the matrix
/// products' inputs and outputs dominate.
fn activation_bytes_per_token_layer(config: &LlamaConfig, c: Compute, checkpointing: bool) -> u64 {
    let (h, i) = (config.hidden_size as u64, config.intermediate_size as u64);
    let q = (config.num_attention_heads * config.head_dim()) as u64;
    let kv = (config.kv_heads() * config.head_dim()) as u64;
    let w = width(c);
    let f32_vectors = if checkpointing { 8 } else { 12 };
    f32_vectors * 4 * h + w * (h + 2 * (q + 2 * kv) + 2 * h + 5 * i)
}

impl Plan {
    /// The estimate for `shape`.
    pub fn estimate(shape: &Shape) -> Plan {
        let cfg = &shape.config;
        let n = cfg.num_params() as u64;
        let w = width(shape.compute);
        let h = cfg.hidden_size as u64;
        let vocab = cfg.vocab_size as u64;
        // Norm weights stay f32 and train in a full fine-tune; they are few.
        let vectors = h * (2 * cfg.num_hidden_layers as u64 + 1);
        let mut items = Vec::new();
        let (weights, trainable) = match &shape.lora {
            Some(l) => {
                let a = lora_params(cfg, l);
                items.push(Item {
                    name: "weights",
                    bytes: (n - vectors) * w + vectors * 4 + a * 4,
                    note: format!(
                        "{} frozen base in {}, {} LoRA parameters (r={}) in f32",
                        count(n),
                        dtype_name(shape.compute),
                        count(a),
                        l.rank
                    ),
                });
                (n, a)
            }
            None => {
                items.push(Item {
                    name: "weights",
                    bytes: n * 4,
                    note: format!("{} trained parameters in f32 (master weights)", count(n)),
                });
                (n, n)
            }
        };
        let _ = weights;
        let reference = match shape.reference {
            RefPlan::Frozen => (n - vectors) * w + vectors * 4,
            RefPlan::None | RefPlan::AdaptersOff | RefPlan::Cached => 0,
        };
        items.push(Item {
            name: "reference",
            bytes: reference,
            note: match shape.reference {
                RefPlan::None => "none (the objective reads no reference)".into(),
                RefPlan::Frozen => format!("a frozen copy in {}", dtype_name(shape.compute)),
                RefPlan::AdaptersOff => "the LoRA base with adapters off (no copy)".into(),
                RefPlan::Cached => "precomputed statistics (--precompute-ref)".into(),
            },
        });
        items.push(Item {
            name: "optimizer",
            bytes: trainable * 8,
            note: "AdamW: two f32 moments per trained parameter".into(),
        });
        items.push(Item {
            name: "gradients",
            bytes: trainable * 4,
            note: "one f32 gradient per trained parameter".into(),
        });
        let tokens = (shape.rows * shape.seq_len) as u64;
        let per =
            activation_bytes_per_token_layer(cfg, shape.compute, shape.gradient_checkpointing);
        // The embedding output and the final norm's input also stay (f32 residual stream).
        let activations = tokens * (per * cfg.num_hidden_layers as u64 + 2 * 4 * h);
        items.push(Item {
            name: "activations",
            bytes: activations,
            note: format!(
                "{} tokens ({} rows × {}) × {} layers × {} per token{}",
                count(tokens),
                shape.rows,
                shape.seq_len,
                cfg.num_hidden_layers,
                bytes(per),
                if shape.gradient_checkpointing {
                    ", balanced checkpointing"
                } else {
                    ""
                }
            ),
        });
        // Chunk buffers: f32 logits, log-probs, probabilities, the logits' gradient and its
        // compute-dtype copy, at most HEAD_CHUNK_ELEMENTS each.
        // A trained head (a full fine-tune: the output matrix, or the tied embedding) also holds
        // its weight gradient's f32 accumulator and one chunk's product in the compute dtype
        // while the backward pass runs, beside the gradient counted above.
        let chunk = (HEAD_CHUNK_ELEMENTS as u64).min(tokens.max(1) * vocab);
        let head_matrix = cfg.hidden_size as u64 * vocab;
        let weight_grad = if shape.lora.is_none() {
            head_matrix * (4 + w)
        } else {
            0
        };
        items.push(Item {
            name: "head",
            bytes: chunk * (4 * 4 + w) + weight_grad,
            note: format!(
                "chunks of {} positions × {} vocabulary, recomputed in the backward pass{}",
                (chunk / vocab.max(1)).max(1),
                vocab,
                if weight_grad > 0 {
                    ", the weight gradient's f32 accumulator and one chunk's product"
                } else {
                    ""
                }
            ),
        });
        Plan { items }
    }

    /// The sum of the items.
    pub fn total(&self) -> u64 {
        self.items.iter().map(|i| i.bytes).sum()
    }

    /// The plan as a table, with the device's free memory when known.
    pub fn table(&self, free: Option<u64>) -> String {
        let mut s = String::new();
        for i in &self.items {
            s.push_str(&format!(
                "  {:<12} {:>10}  {}\n",
                i.name,
                bytes(i.bytes),
                i.note
            ));
        }
        s.push_str(&format!("  {:<12} {:>10}\n", "total", bytes(self.total())));
        if let Some(f) = free {
            s.push_str(&format!(
                "  {:<12} {:>10}  on the device now\n",
                "free",
                bytes(f)
            ));
        }
        s
    }
}

/// What would make `shape` fit: the flags that cut the largest items, each with the total it
/// would give.
pub fn remedies(shape: &Shape) -> Vec<String> {
    let mut out = Vec::new();
    let mut try_with = |flag: String, s: Shape| {
        out.push(format!("{flag}: {}", bytes(Plan::estimate(&s).total())));
    };
    if shape.lora.is_none() {
        let mut s = shape.clone();
        s.lora = Some(LoraConfig {
            rank: 16,
            alpha: 32.0,
            targets: Target::ALL.to_vec(),
        });
        if s.reference == RefPlan::Frozen {
            s.reference = RefPlan::AdaptersOff;
        }
        try_with("--lora 16".into(), s);
    }
    if !shape.gradient_checkpointing {
        let mut s = shape.clone();
        s.gradient_checkpointing = true;
        try_with("--gradient-checkpointing".into(), s);
    }
    if shape.reference == RefPlan::Frozen {
        let mut s = shape.clone();
        s.reference = RefPlan::Cached;
        try_with("--precompute-ref".into(), s);
    }
    if shape.rows > 2 {
        let mut s = shape.clone();
        let pairs = (shape.rows / 4).max(1);
        s.rows = (shape.rows / 2).max(1);
        try_with(
            format!("a half batch (--batch-size {pairs} --grad-accum 2 keeps the step)"),
            s,
        );
    }
    out
}

/// `n` with a K/M/B suffix.
fn count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

/// Bytes in binary units.
pub fn bytes(b: u64) -> String {
    let b = b as f64;
    let gib = 1024.0 * 1024.0 * 1024.0;
    if b >= gib {
        format!("{:.2} GiB", b / gib)
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.1} KiB", b / 1024.0)
    }
}

fn dtype_name(c: Compute) -> &'static str {
    match c {
        Compute::F32 => "f32",
        Compute::Bf16 => "bf16",
    }
}

/// Free memory of CUDA device `n` as this process numbers it (so `CUDA_VISIBLE_DEVICES` and MIG
/// slices are honoured): from CUDA itself (`cudaMemGetInfo` of the CUDA runtime libtorch
/// loaded), else from `nvidia-smi` for the device `CUDA_VISIBLE_DEVICES` maps `n` to; `None`
/// when neither can tell (no CUDA runtime in the process, MIG without it, no `nvidia-smi`).
pub fn cuda_free_bytes(n: usize) -> Option<u64> {
    cudart_free_bytes(n).or_else(|| nvidia_smi_free_bytes(&visible_device(n)?))
}

/// `cudaMemGetInfo` on device `n`, through the CUDA runtime already in the process (libtorch's
/// CUDA library brings it); `None` without one or on an error.
fn cudart_free_bytes(n: usize) -> Option<u64> {
    type SetDevice = unsafe extern "C" fn(i32) -> i32;
    type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> i32;
    let symbol = |name: &std::ffi::CStr| {
        // SAFETY: `name` is NUL-terminated; RTLD_DEFAULT searches the libraries already loaded.
        let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
        (!p.is_null()).then_some(p)
    };
    let set_device = symbol(c"cudaSetDevice")?;
    let mem_get_info = symbol(c"cudaMemGetInfo")?;
    let device = i32::try_from(n).ok()?;
    let (mut free, mut total) = (0usize, 0usize);
    // SAFETY: the symbols are the CUDA runtime's, with these C signatures; the out-pointers
    // are valid for the call. 0 is cudaSuccess.
    let ok = unsafe {
        let set_device: SetDevice = std::mem::transmute(set_device);
        let mem_get_info: MemGetInfo = std::mem::transmute(mem_get_info);
        set_device(device) == 0 && mem_get_info(&mut free, &mut total) == 0
    };
    ok.then_some(free as u64)
}

/// What `nvidia-smi --id` should be given for device `n` of this process: the `n`-th entry of
/// `CUDA_VISIBLE_DEVICES` when it is set (an index or a UUID), else `n`.
fn visible_device(n: usize) -> Option<String> {
    visible_device_in(std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref(), n)
}

fn visible_device_in(visible: Option<&str>, n: usize) -> Option<String> {
    match visible.map(str::trim) {
        None | Some("") => Some(n.to_string()),
        Some(list) => list
            .split(',')
            .map(str::trim)
            .nth(n)
            .filter(|d| !d.is_empty())
            .map(str::to_string),
    }
}

/// The name of CUDA device `n` of this process (`NVIDIA H100 80GB HBM3`), from `nvidia-smi`.
pub fn cuda_device_name(n: usize) -> Option<String> {
    nvidia_smi("name", &visible_device(n)?).filter(|name| !name.is_empty())
}

/// Free memory of `nvidia-smi`'s device `id`; `None` when it does not print a number (a MIG
/// slice prints `[N/A]`).
fn nvidia_smi_free_bytes(id: &str) -> Option<u64> {
    let mib: u64 = nvidia_smi("memory.free", id)?.parse().ok()?;
    Some(mib * 1024 * 1024)
}

/// `nvidia-smi`'s value of `field` for its device `id` (an index or a UUID), without header or
/// units; `None` when it cannot be run or fails.
fn nvidia_smi(field: &str, id: &str) -> Option<String> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            &format!("--query-gpu={field}"),
            "--format=csv,noheader,nounits",
            &format!("--id={id}"),
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// What a CUDA run keeps free beyond its plan: cuBLAS and cuDNN workspaces, NCCL's buffers and
/// the caching allocator's fragmentation, none of which the plan counts (CUDA cannot overcommit
/// memory as the CPU's virtual memory can).
pub const CUDA_RESERVE_BYTES: u64 = 3 << 29;

/// The peak resident memory of this process so far (`VmHWM`, Linux), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    status_bytes("VmHWM:")
}

/// The resident memory of this process now (`VmRSS`, Linux), in bytes.
pub fn rss_bytes() -> Option<u64> {
    status_bytes("VmRSS:")
}

/// A `kB` field of `/proc/self/status`, in bytes.
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_visible_devices_map_this_process_numbers_to_nvidia_smi_ids() {
        assert_eq!(visible_device_in(None, 1).as_deref(), Some("1"));
        assert_eq!(visible_device_in(Some(""), 0).as_deref(), Some("0"));
        assert_eq!(visible_device_in(Some("3,5"), 1).as_deref(), Some("5"));
        assert_eq!(
            visible_device_in(Some("GPU-1a2b, MIG-9f"), 1).as_deref(),
            Some("MIG-9f")
        );
        assert_eq!(visible_device_in(Some("3"), 1), None);
    }

    #[test]
    fn without_a_cuda_runtime_in_the_process_cuda_free_memory_is_unknown_not_zero() {
        // The CPU test machines load no GPU: either no CUDA runtime, or one that finds no
        // device; neither may be read as "0 bytes free".
        if let Some(free) = cudart_free_bytes(0) {
            assert!(free > 0);
        }
    }

    fn eight_b(rows: usize, lora: bool) -> Shape {
        Shape {
            config: LlamaConfig::preset("llama3-8b").expect("preset"),
            rows,
            seq_len: 2048,
            compute: Compute::Bf16,
            lora: lora.then(|| LoraConfig {
                rank: 16,
                alpha: 32.0,
                targets: Target::ALL.to_vec(),
            }),
            reference: if lora {
                RefPlan::AdaptersOff
            } else {
                RefPlan::Frozen
            },
            gradient_checkpointing: false,
        }
    }

    fn item(p: &Plan, name: &str) -> u64 {
        p.items.iter().find(|i| i.name == name).expect("item").bytes
    }

    #[test]
    fn llama3_8b_under_lora_holds_a_bf16_base_and_small_optimizer_state() {
        let p = Plan::estimate(&eight_b(2, true));
        let gb = |b: u64| b as f64 / 1e9;
        // 8.03B parameters in bf16: about 16 GB, as PyTorch users hold it.
        assert!(
            (15.5..16.5).contains(&gb(item(&p, "weights"))),
            "{}",
            p.table(None)
        );
        assert_eq!(item(&p, "reference"), 0);
        // 42M adapter parameters (r=16 on all linear layers): 0.34 GB of AdamW moments.
        assert!(gb(item(&p, "optimizer")) < 0.5, "{}", p.table(None));
        // The head is bounded by its chunk, whatever the batch.
        assert_eq!(
            item(&p, "head"),
            item(&Plan::estimate(&eight_b(16, true)), "head")
        );
        assert!(item(&p, "head") < 2 << 30);
    }

    #[test]
    fn a_full_fine_tune_of_8b_counts_master_weights_moments_and_a_reference() {
        let p = Plan::estimate(&eight_b(2, false));
        let n = LlamaConfig::preset("llama3-8b").unwrap().num_params() as u64;
        assert_eq!(item(&p, "weights"), 4 * n);
        assert_eq!(item(&p, "optimizer"), 8 * n);
        assert_eq!(item(&p, "gradients"), 4 * n);
        assert!(item(&p, "reference") < 2 * n + (1 << 20));
        // The trained head's f32 weight-gradient accumulator and one bf16 product: 6 bytes per
        // entry of its 4096 × 128256 matrix, beyond LoRA's chunk buffers.
        let lora_head = item(&Plan::estimate(&eight_b(2, true)), "head");
        assert_eq!(item(&p, "head") - lora_head, 4096 * 128256 * 6);
        // Each remedy names a flag and a smaller total.
        let fixes = remedies(&eight_b(2, false));
        assert!(fixes.iter().any(|f| f.starts_with("--lora")), "{fixes:?}");
        assert!(
            fixes.iter().any(|f| f.starts_with("--precompute-ref")),
            "{fixes:?}"
        );
        assert!(
            fixes
                .iter()
                .any(|f| f.starts_with("--gradient-checkpointing")),
            "{fixes:?}"
        );
    }

    #[test]
    fn activations_grow_with_tokens_and_shrink_with_checkpointing() {
        let a = item(&Plan::estimate(&eight_b(2, true)), "activations");
        let b = item(&Plan::estimate(&eight_b(4, true)), "activations");
        assert_eq!(b, 2 * a);
        let mut s = eight_b(2, true);
        s.gradient_checkpointing = true;
        assert!(item(&Plan::estimate(&s), "activations") < a);
    }
}
