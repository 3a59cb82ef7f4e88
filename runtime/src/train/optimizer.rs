//! The one optimizer of training: AdamW (ε = 1e-8) with linear warm-up then cosine, linear or
//! constant decay, global-norm gradient clipping, and its state as bytes for checkpoints.

use super::{Schedule, TrainError, TrainOptions};
use crate::model::Llama;
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{DType, Tensor};

/// AdamW over the policy's trainable parameters, stepping along the run's learning-rate
/// schedule of `total` steps.
pub struct Optimizer {
    adamw: ModuleOptimizer,
    opts: TrainOptions,
    total: usize,
}

/// The first line of an error message from a library, at most 120 characters.
fn first_line(msg: &str) -> String {
    msg.lines().next().unwrap_or("").chars().take(120).collect()
}

/// The gradient's global norm was NaN or infinite: no update was made.
#[derive(Debug, Clone, Copy)]
pub struct GradNotFinite;

impl Optimizer {
    /// A fresh optimizer for a run of `total` steps under `opts` (learning rate, schedule,
    /// weight decay, clipping).
    pub fn new(opts: &TrainOptions, total: usize) -> Optimizer {
        let adamw = AdamWConfig::new()
            .with_weight_decay(opts.weight_decay as f32)
            .with_epsilon(1e-8)
            .init();
        Optimizer {
            adamw,
            opts: opts.clone(),
            total,
        }
    }

    /// Restores the moments saved in checkpoint `resume` (its `optimizer.bin`).
    pub fn restore(mut self, resume: &super::Resume) -> Result<Optimizer, TrainError> {
        self.adamw = self
            .adamw
            .from_bytes(burn::tensor::Bytes::from_bytes_vec(resume.optimizer.clone()))
            .map_err(|e| {
                TrainError::OptimizerState(format!(
                    "{}: not a complete AdamW state poc can read ({} bytes; {}): the file is truncated or damaged\n  = hint: resume from an earlier checkpoint",
                    resume.dir.join("optimizer.bin").display(),
                    resume.optimizer.len(),
                    first_line(&e.to_string()),
                ))
            })?;
        Ok(self)
    }

    /// The learning rate of 0-based `step`.
    pub fn lr(&self, step: usize) -> f64 {
        lr_at(&self.opts, step, self.total)
    }

    /// One update at 0-based `step`: clips `grads` to the global norm `max_grad_norm` and
    /// applies them at the step's learning rate. Returns the updated model and the norm before
    /// clipping; a non-finite norm makes no update.
    pub fn step(
        &mut self,
        step: usize,
        policy: Llama,
        grads: GradientsParams,
    ) -> Result<(Llama, f64), GradNotFinite> {
        let (grads, norm) = clip_global(&policy, grads, self.opts.max_grad_norm);
        if !norm.is_finite() {
            return Err(GradNotFinite);
        }
        let lr = self.lr(step);
        Ok((self.adamw.step(lr, policy, grads), norm))
    }

    /// The optimizer state, as a checkpoint's `optimizer.bin` holds it.
    pub fn state(&self) -> Result<Vec<u8>, TrainError> {
        self.adamw.into_bytes().map(|b| b.to_vec()).map_err(|e| {
            TrainError::OptimizerState(format!(
                "saving the AdamW state: {}",
                first_line(&e.to_string())
            ))
        })
    }
}

/// The learning rate at 0-based `step` of `total`: linear warm-up over `warmup_ratio` of the
/// steps, then the decay `schedule`.
pub fn lr_at(o: &TrainOptions, step: usize, total: usize) -> f64 {
    let warm = ((total as f64) * o.warmup_ratio).round() as usize;
    if step < warm {
        return o.lr * (step + 1) as f64 / warm as f64;
    }
    let progress = (step - warm) as f64 / (total - warm).max(1) as f64;
    match o.schedule {
        Schedule::Constant => o.lr,
        Schedule::Linear => o.lr * (1.0 - progress),
        Schedule::Cosine => o.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    }
}

/// Collects the ids (and ranks) of every float parameter, in visiting order.
pub(crate) struct ParamIds(pub(crate) Vec<(ParamId, usize)>);

impl ParamIds {
    /// The parameters of `model`.
    pub(crate) fn of(model: &Llama) -> ParamIds {
        let mut ids = ParamIds(Vec::new());
        model.visit(&mut ids);
        ids
    }
}

impl ModuleVisitor for ParamIds {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push((param.id, D));
    }
}

/// `Σ g²` of one gradient as a `[1]` tensor on its device (squared and summed in f32 at least).
fn square_sum<const D: usize>(g: Tensor<D>) -> Tensor<1> {
    let g = if g.dtype() == DType::F64 {
        g
    } else {
        g.cast(DType::F32)
    };
    (g.clone() * g).sum()
}

/// Global L2 norm of `grads`, and the grads scaled to norm `max` when above it (max > 0).
fn clip_global(model: &Llama, mut grads: GradientsParams, max: f64) -> (GradientsParams, f64) {
    let ids = ParamIds::of(model);
    // Each gradient's sum of squares stays on its device; the step reads one number (a read
    // per parameter would stall a GPU's queue hundreds of times a step).
    let mut parts: Vec<Tensor<1>> = Vec::with_capacity(ids.0.len());
    for &(id, d) in &ids.0 {
        let part = if d == 1 {
            grads.get::<1>(id).map(square_sum)
        } else {
            grads.get::<2>(id).map(square_sum)
        };
        parts.extend(part);
    }
    let sq = if parts.is_empty() {
        0.0
    } else {
        Tensor::cat(parts, 0)
            .cast(DType::F64)
            .sum()
            .into_scalar::<f64>()
    };
    let norm = sq.sqrt();
    if max > 0.0 && norm > max && norm.is_finite() {
        let scale = max / norm;
        for &(id, d) in &ids.0 {
            if d == 1 {
                if let Some(g) = grads.remove::<1>(id) {
                    grads.register(id, g * scale);
                }
            } else if let Some(g) = grads.remove::<2>(id) {
                grads.register(id, g * scale);
            }
        }
    }
    (grads, norm)
}
