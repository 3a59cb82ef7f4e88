//! `poc bench memory`: the memory plan against the measured peak, and the log-prob head's
//! memory as positions grow. Every point runs in a child process (`poc bench memory --point
//! ...`), so that each peak resident set (`VmHWM`) is its own; a point reports the peak above
//! what the process held before the work (libtorch loaded, inputs built).

use crate::bench::{TrainShape, bench_model, dpo_steps};
use crate::{Error, Result};
use burn::tensor::{Int, Tensor, TensorData};
use poc_runtime::plan::{self, Plan, RefPlan};
use rand::{Rng, SeedableRng};
use std::path::Path;

/// One measured point, as a child prints it (one JSON line).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Point {
    /// Peak resident bytes above the process's resident bytes before the work.
    pub measured: u64,
    /// What the plan (or, for the head, the chunk arithmetic) expects.
    pub estimated: u64,
}

/// Resets the peak resident set (`VmHWM`) to what is resident now (Linux's `clear_refs` 5), so
/// that the peak read afterwards is the work's, not the set-up's (e.g. a host copy of the
/// weights freed after upload).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Resident bytes now (`VmRSS`; 0 where it cannot be read).
fn rss_bytes() -> u64 {
    plan::rss_bytes().unwrap_or(0)
}

/// The head's forward and backward over `positions` positions of width `hidden` at vocabulary
/// `vocab` (f32, a frozen head, gradients to the hidden states as under LoRA): chunked, or the
/// full log-softmax composition when `composed`.
pub fn head_point(positions: usize, hidden: usize, vocab: usize, composed: bool) -> Point {
    use poc_runtime::kernels::{HEAD_CHUNK_ELEMENTS, composed_token_logps, token_logps};
    let device = poc_runtime::device::DeviceSpec::Cpu.device().autodiff();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut values = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random::<f32>() - 0.5).collect() };
    let h = Tensor::<2>::from_data(
        TensorData::new(values(positions * hidden), [positions, hidden]),
        &device,
    )
    .require_grad();
    let w = Tensor::<2>::from_data(
        TensorData::new(values(hidden * vocab), [hidden, vocab]),
        &device,
    );
    let targets: Vec<i64> = (0..positions).map(|i| (i * 7919 % vocab) as i64).collect();
    let targets = Tensor::<1, Int>::from_data(TensorData::new(targets, [positions]), &device);
    reset_peak();
    let before = rss_bytes();
    let (tok, ent) = if composed {
        composed_token_logps(h.clone(), w, targets)
    } else {
        token_logps(h.clone(), w, targets)
    };
    let grads = (tok + ent).sum().backward();
    let g = h.grad(&grads).map(|g| g.sum().into_scalar::<f64>());
    assert!(
        g.is_some_and(f64::is_finite),
        "the head's gradient is finite"
    );
    let peak = plan::peak_rss_bytes().unwrap_or(0);
    // The chunked head: five chunk buffers; the composition: logits, log-softmax, probabilities
    // and their gradient, all positions at once.
    let estimated = if composed {
        (positions * vocab * 4 * 4) as u64
    } else {
        (HEAD_CHUNK_ELEMENTS.min(positions * vocab) * 5 * 4) as u64
    };
    Point {
        measured: peak.saturating_sub(before),
        estimated,
    }
}

/// The plan's shape for a `poc bench train` shape (LoRA with the base as reference, or a full
/// fine-tune against a frozen copy; pairs of `seq` tokens).
pub fn plan_shape(shape: &TrainShape) -> Result<plan::Shape> {
    use poc_runtime::model::{Compute, LoraConfig, Target};
    Ok(plan::Shape {
        config: shape.config()?,
        rows: 2 * shape.pairs,
        seq_len: shape.seq,
        compute: if shape.bf16 {
            Compute::Bf16
        } else {
            Compute::F32
        },
        lora: shape.lora.map(|rank| LoraConfig {
            rank,
            alpha: 2.0 * rank as f64,
            targets: Target::ALL.to_vec(),
        }),
        reference: if shape.lora.is_some() {
            RefPlan::AdaptersOff
        } else {
            RefPlan::Frozen
        },
        gradient_checkpointing: shape.checkpointing,
    })
}

/// Two DPO steps of `shape` (the memory of the second one includes AdamW's state) against the
/// plan's total.
pub fn train_point(shape: &TrainShape) -> Result<Point> {
    let estimated = Plan::estimate(&plan_shape(shape)?).total();
    // libtorch's own start-up (its allocator, thread pools) is not the run's.
    let _ = bench_model(&TrainShape {
        layers: 1,
        hidden: 64,
        pairs: 1,
        seq: 24,
        preset: None,
        ..*shape
    })?;
    reset_peak();
    let before = rss_bytes();
    dpo_steps(shape, 2)?;
    let peak = plan::peak_rss_bytes().unwrap_or(0);
    Ok(Point {
        measured: peak.saturating_sub(before),
        estimated,
    })
}

/// What one child process measures.
#[derive(Debug, Clone)]
pub enum Which {
    /// [`head_point`]: positions, hidden width, vocabulary, composed.
    Head(usize, usize, usize, bool),
    /// [`train_point`].
    Train(TrainShape),
}

/// Runs `which` in a child `exe bench memory --point ...` and reads its [`Point`].
pub fn in_child(exe: &Path, which: &Which) -> Result<Point> {
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["bench", "memory", "--point"]);
    match which {
        Which::Head(n, h, v, composed) => {
            cmd.args(["head", &n.to_string(), &h.to_string(), &v.to_string()]);
            cmd.arg(if *composed { "composed" } else { "chunked" });
        }
        Which::Train(s) => {
            cmd.args([
                "train".to_string(),
                s.preset.unwrap_or("-").to_string(),
                s.hidden.to_string(),
                s.layers.to_string(),
                s.pairs.to_string(),
                s.seq.to_string(),
                s.lora.unwrap_or(0).to_string(),
                if s.bf16 { "bf16" } else { "f32" }.to_string(),
                if s.checkpointing { "ckpt" } else { "-" }.to_string(),
            ]);
        }
    }
    let out = cmd.output().map_err(|e| {
        Error::Internal(format!("bench memory: cannot start {}: {e}", exe.display()))
    })?;
    if !out.status.success() {
        return Err(Error::Internal(format!(
            "bench memory: the child for {which:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::Internal(format!("bench memory: the child printed no point: {e}")))
}

/// The child's side: parses `args` (after `--point`), measures, and returns the point.
pub fn point_from_args(args: &[String]) -> Result<Point> {
    let num = |i: usize| -> Result<usize> {
        args.get(i).and_then(|a| a.parse().ok()).ok_or_else(|| {
            Error::Internal(format!(
                "bench memory --point: bad argument {i} in {args:?}"
            ))
        })
    };
    match args.first().map(String::as_str) {
        Some("head") => Ok(head_point(
            num(1)?,
            num(2)?,
            num(3)?,
            args.get(4).map(String::as_str) == Some("composed"),
        )),
        Some("train") => {
            let names = poc_runtime::model::LlamaConfig::PRESETS;
            let preset = names
                .iter()
                .copied()
                .find(|n| Some(*n) == args.get(1).map(String::as_str));
            let lora = num(6)?;
            train_point(&TrainShape {
                preset,
                hidden: num(2)?,
                layers: num(3)?,
                pairs: num(4)?,
                seq: num(5)?,
                steps: 1,
                lora: (lora > 0).then_some(lora),
                bf16: args.get(7).map(String::as_str) == Some("bf16"),
                checkpointing: args.get(8).map(String::as_str) == Some("ckpt"),
            })
        }
        _ => Err(Error::Internal(format!("bench memory --point: {args:?}"))),
    }
}
