//! The training loop: policy versus reference under any compiled objective. Each step: one
//! forward of the policy (and of the frozen reference) over chosen and rejected rows, the
//! observables the objective declares, the compiled program (loss, symbolic gradients,
//! metrics), and a backward of the surrogate `Σ detach(∂L/∂x)·x / B` through the policy —
//! the compiler's gradient applied by burn's autodiff. AdamW with warm-up and cosine or linear
//! decay, gradient accumulation, global-norm clipping, seeded.

use crate::data::{Batch, Pair, Tok, batches};
use crate::model::{Llama, load};
use crate::objective::{run_program, surrogate, to_f64};
use crate::observe::{Rows, Stats, Want, needs, observe};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams};
use burn::tensor::{DType, Device, Tensor};
use poc_compiler::{Compiled, OutputKind};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Learning-rate decay after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Schedule {
    /// Cosine to zero.
    Cosine,
    /// Linear to zero.
    Linear,
    /// Constant.
    Constant,
}

/// Everything the loop needs besides the model, data and objective.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainOptions {
    /// Pairs per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Optimizer steps (overrides `epochs` when set).
    pub max_steps: Option<usize>,
    /// Passes over the data.
    pub epochs: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Fraction of steps spent warming up linearly.
    pub warmup_ratio: f64,
    /// Decay after warm-up.
    pub schedule: Schedule,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 disables).
    pub max_grad_norm: f64,
    /// Seed of initialization and data order.
    pub seed: u64,
    /// Save a checkpoint every N steps (0: only at the end).
    pub save_every: usize,
    /// Objective parameters after `--set`.
    pub params: Vec<f64>,
    /// The run directory.
    pub out: PathBuf,
    /// What `--model` named (recorded in adapter checkpoints as the base model).
    pub base_model: String,
}

/// One logged step (a line of `metrics.jsonl`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepLog {
    /// 1-based optimizer step.
    pub step: usize,
    /// Fractional epoch.
    pub epoch: f64,
    /// Batch-mean loss.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Completion and prompt tokens processed per second (policy forward+backward).
    pub tokens_per_sec: f64,
    /// The objective's metrics (batch means), by name.
    pub metrics: serde_json::Map<String, serde_json::Value>,
}

/// Why training stopped early.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The loss or gradient became NaN/inf; the last good checkpoint is kept.
    #[error(
        "step {step}: {what} is not finite (data lines {lines}); stopped. The last good checkpoint is {checkpoint}"
    )]
    NotFinite {
        /// The step.
        step: usize,
        /// Loss or gradient.
        what: String,
        /// Source lines of the offending rows.
        lines: String,
        /// Path of the last good checkpoint (or "none").
        checkpoint: String,
    },
    /// Inputs the objective declares cannot be provided.
    #[error("{0}")]
    Observe(#[from] crate::observe::ObserveError),
    /// Saving failed.
    #[error("{0}")]
    Model(#[from] crate::model::ModelError),
    /// Something else.
    #[error("{0}")]
    Other(String),
}

/// The learning rate at 0-based `step` of `total`.
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

/// Collects the ids of every float parameter.
struct ParamIds(Vec<(ParamId, usize)>);

impl ModuleVisitor for ParamIds {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0.push((param.id, D));
    }
}

fn with_dim<R>(d: usize, f1: impl FnOnce() -> R, f2: impl FnOnce() -> R) -> R {
    if d == 1 { f1() } else { f2() }
}

/// Global L2 norm of `grads`, and the grads scaled to norm `max` when above it (max > 0).
pub(crate) fn clip_global(
    model: &Llama,
    mut grads: GradientsParams,
    max: f64,
) -> (GradientsParams, f64) {
    let mut ids = ParamIds(Vec::new());
    model.visit(&mut ids);
    let mut sq: f64 = 0.0;
    for &(id, d) in &ids.0 {
        sq += with_dim(
            d,
            || {
                grads
                    .get::<1>(id)
                    .map(|g| g.powf_scalar(2.0).sum().into_scalar::<f64>())
                    .unwrap_or(0.0)
            },
            || {
                grads
                    .get::<2>(id)
                    .map(|g| g.powf_scalar(2.0).sum().into_scalar::<f64>())
                    .unwrap_or(0.0)
            },
        );
    }
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

/// Where a resumed run picks up: the optimizer step, the epoch and batch within it, and the
/// optimizer state (AdamW moments), all from a checkpoint's `trainer_state.json` and
/// `optimizer.bin`.
pub struct Resume {
    /// Optimizer steps already taken.
    pub step: usize,
    /// Epochs started (batches of epoch e are shuffled with seed + e - 1).
    pub epoch: usize,
    /// Batches of the current epoch already consumed.
    pub cursor: usize,
    /// Serialized optimizer state.
    pub optimizer: Vec<u8>,
}

/// Gives parameters the ids they had when a checkpoint was written (in visiting order), so
/// the saved optimizer state, which is keyed by id, applies to them again.
struct SetIds {
    ids: Vec<u64>,
    next: usize,
}

impl ModuleMapper for SetIds {
    fn map_float<const D: usize>(&mut self, mut param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if let Some(&id) = self.ids.get(self.next) {
            param.id = ParamId::from(id);
        }
        self.next += 1;
        param
    }
}

/// Reads the resume state of checkpoint `dir` and re-keys `policy` (loaded from that
/// checkpoint) to the saved parameter ids.
pub fn load_resume(dir: &Path, policy: Llama) -> Result<(Llama, Resume), TrainError> {
    let state_path = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&state_path).map_err(|e| {
        TrainError::Other(format!(
            "{}: {e} (is this a checkpoint written by poc run?)",
            state_path.display()
        ))
    })?;
    let state: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| TrainError::Other(format!("{}: {e}", state_path.display())))?;
    // An on-policy run's data position follows from its step alone (its prompt order is
    // replayed), so its state has no epoch or cursor.
    let on_policy = state["on_policy"].as_bool() == Some(true);
    let field = |k: &str| match state[k].as_u64() {
        Some(v) => Ok(v as usize),
        None if on_policy && k != "step" => Ok(0),
        None => Err(TrainError::Other(format!(
            "{}: lacks `{k}`",
            state_path.display()
        ))),
    };
    let ids: Vec<u64> = state["param_ids"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
        .unwrap_or_default();
    let mut visitor = ParamIds(Vec::new());
    policy.visit(&mut visitor);
    if ids.len() != visitor.0.len() {
        return Err(TrainError::Other(format!(
            "{}: {} parameter ids for a model with {} parameters",
            state_path.display(),
            ids.len(),
            visitor.0.len()
        )));
    }
    let opt_path = dir.join("optimizer.bin");
    let optimizer = std::fs::read(&opt_path)
        .map_err(|e| TrainError::Other(format!("{}: {e}", opt_path.display())))?;
    let policy = policy.map(&mut SetIds { ids, next: 0 });
    let resume = Resume {
        step: field("step")?,
        epoch: field("epoch")?,
        cursor: field("cursor")?,
        optimizer,
    };
    Ok((policy, resume))
}

/// Writes a checkpoint directory atomically: everything goes to `NAME.tmp`, which is then
/// renamed into place. Holds the model in HF layout (adapters merged), the tokenizer, the
/// optimizer state and `trainer_state.json` (step, data position, parameter ids) for
/// `--resume`; under LoRA also the adapters alone in PEFT's layout, for `--resume` and PEFT.
pub fn save_checkpoint(
    model: &Llama,
    base_model: &str,
    optimizer: &[u8],
    tok: &Tok,
    dir: &Path,
    state: &serde_json::Value,
) -> Result<(), TrainError> {
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    load::save(model, &tmp)?;
    load::save_adapters(model, &load::adapter_dir(&tmp), base_model)?;
    load::save_value_head(model, &tmp)?;
    tok.save(&tmp).map_err(TrainError::Other)?;
    load::write_atomic(&tmp.join("optimizer.bin"), optimizer)?;
    let mut ids = ParamIds(Vec::new());
    model.visit(&mut ids);
    let mut state = state.clone();
    state["param_ids"] =
        serde_json::json!(ids.0.iter().map(|(id, _)| id.val()).collect::<Vec<_>>());
    let text =
        serde_json::to_string_pretty(&state).map_err(|e| TrainError::Other(e.to_string()))?;
    load::write_atomic(&tmp.join("trainer_state.json"), text.as_bytes())?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&tmp, dir).map_err(|e| TrainError::Other(format!("{}: {e}", dir.display())))
}

/// Where reference statistics come from.
pub enum Reference {
    /// No reference (reference-free objectives).
    None,
    /// A frozen model, run on every batch.
    Model(Box<Llama>),
    /// The policy itself with its LoRA adapters switched off: no second copy of the weights.
    AdaptersOff,
    /// Precomputed once (`--precompute-ref`); no reference model is held during training.
    Cached(RefCache),
}

/// Reference log-probs (and entropies) of every pair, computed in one no-grad pass.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct RefCache {
    /// What the cache was computed for (model, data, max length); a mismatch recomputes.
    pub fingerprint: String,
    /// Per pair: [chosen_logps, rejected_logps].
    pub logps: Vec<[f64; 2]>,
    /// Per pair: [chosen_entropy, rejected_entropy], if computed.
    pub entropy: Option<Vec<[f64; 2]>>,
}

impl RefCache {
    /// One no-grad pass of `reference` over `pairs`, `batch_size` pairs at a time.
    pub fn compute(
        reference: &Llama,
        pairs: &[Pair],
        pad: u32,
        batch_size: usize,
        entropy: bool,
        fingerprint: String,
        device: &Device,
    ) -> RefCache {
        let mut logps = Vec::with_capacity(pairs.len());
        let mut ents = Vec::with_capacity(pairs.len());
        let idx: Vec<usize> = (0..pairs.len()).collect();
        for chunk in idx.chunks(batch_size.max(1)) {
            let batch = crate::data::pairs::batch_of(pairs, chunk, pad);
            let want = Want {
                entropy,
                ..Want::LOGPS
            };
            let st = crate::observe::stats(reference, Rows::from(&batch), want, device);
            let lp = st.logps.map(to_f64).unwrap_or_default();
            let en = st.entropy.map(to_f64);
            let b = chunk.len();
            for j in 0..b {
                logps.push([lp[j], lp[b + j]]);
                if let Some(e) = &en {
                    ents.push([e[j], e[b + j]]);
                }
            }
        }
        RefCache {
            fingerprint,
            logps,
            entropy: entropy.then_some(ents),
        }
    }

    /// The cached statistics of `batch`, shaped like a reference forward's (chosen rows, then
    /// rejected rows).
    pub fn stats(&self, batch: &Batch, device: &Device) -> Stats {
        let col = |k: usize, v: &[[f64; 2]]| -> Vec<f32> {
            batch.pairs.iter().map(|&i| v[i][k] as f32).collect()
        };
        // The batch's rows: chosen, then rejected unless it holds the chosen rows alone.
        let rejected = batch.tokens.len() > batch.pairs.len();
        let both = |v: &[[f64; 2]]| {
            let mut x = col(0, v);
            if rejected {
                x.extend(col(1, v));
            }
            let n = x.len();
            Tensor::<1>::from_data(burn::tensor::TensorData::new(x, [n]), device)
        };
        Stats {
            logps: Some(both(&self.logps)),
            entropy: self.entropy.as_deref().map(both),
            ..Stats::default()
        }
    }
}

/// After optimizer step `done` of `total`: writes `OUT/checkpoint-<done>` (with `extra` in its
/// trainer state) when it is the last step, when Ctrl-C was pressed, or every `save_every`
/// steps; then, if interrupted, stops with an error that names the checkpoint.
#[allow(clippy::too_many_arguments)]
pub(crate) fn end_of_step(
    policy: &Llama,
    opts: &TrainOptions,
    tok: &Tok,
    (done, total): (usize, usize),
    stop: &AtomicBool,
    extra: serde_json::Value,
    optimizer: impl FnOnce() -> Result<Vec<u8>, String>,
    last_checkpoint: &mut String,
) -> Result<(), TrainError> {
    let interrupted = stop.load(Ordering::SeqCst);
    if done == total || interrupted || (opts.save_every > 0 && done % opts.save_every == 0) {
        let dir = opts.out.join(format!("checkpoint-{done}"));
        let mut state = serde_json::json!({"step": done, "total_steps": total, "seed": opts.seed});
        if let (Some(s), Some(e)) = (state.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        let bytes = optimizer().map_err(|e| TrainError::Other(format!("optimizer state: {e}")))?;
        save_checkpoint(policy, &opts.base_model, &bytes, tok, &dir, &state)?;
        *last_checkpoint = dir.display().to_string();
    }
    if interrupted {
        return Err(TrainError::Other(format!(
            "interrupted at step {done}; saved {last_checkpoint}"
        )));
    }
    Ok(())
}

/// A run's `metrics.jsonl`, created afresh; a run resumed at step `resumed` keeps the lines
/// logged up to that step and continues after them.
pub(crate) fn metrics_file(
    path: &Path,
    resumed: Option<usize>,
) -> Result<std::fs::File, TrainError> {
    let kept = resumed.map_or_else(String::new, |step| log_lines_up_to(path, step));
    let io = |e: std::io::Error| TrainError::Other(format!("{}: {e}", path.display()));
    let mut file = std::fs::File::create(path).map_err(io)?;
    file.write_all(kept.as_bytes()).map_err(io)?;
    Ok(file)
}

/// The lines of a run's `metrics.jsonl` logged at or before `step`; empty when there is no
/// such file.
fn log_lines_up_to(metrics: &Path, step: usize) -> String {
    let mut kept = String::new();
    if let Ok(old) = std::fs::read_to_string(metrics) {
        for line in old.lines() {
            let at = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["step"].as_u64());
            if at.is_some_and(|s| s as usize <= step) {
                kept.push_str(line);
                kept.push('\n');
            }
        }
    }
    kept
}

/// Held-out pairs, evaluated without gradients every `every` steps and after the last one.
pub struct Eval {
    /// The held-out pairs.
    pub pairs: Vec<Pair>,
    /// Their reference statistics (the same strategy as training's).
    pub reference: Reference,
    /// Evaluate every N optimizer steps (0: only after the last).
    pub every: usize,
}

/// Mean loss and metrics of the compiled objective over `eval.pairs`, no gradients, keyed
/// `eval/loss` and `eval/<metric>` (e.g. `eval/rewards/accuracies`).
pub fn evaluate(
    compiled: &Compiled,
    policy: &Llama,
    eval: &Eval,
    opts: &TrainOptions,
    pad: u32,
    device: &Device,
) -> Result<serde_json::Map<String, serde_json::Value>, TrainError> {
    let inputs = &compiled.objective.inputs;
    let need = needs(inputs);
    let program = &compiled.program;
    let model = policy.valid();
    let mut loss_sum = 0.0;
    let mut metric_sums = vec![0.0; compiled.metrics.len()];
    let idx: Vec<usize> = (0..eval.pairs.len()).collect();
    for chunk in idx.chunks(opts.batch_size.max(1)) {
        let batch = crate::data::pairs::batch_of_sides(&eval.pairs, chunk, pad, need.rejected);
        let pstats = crate::observe::stats(&model, Rows::from(&batch), need.policy, device);
        let rstats = reference_stats(&eval.reference, need, &model, &batch, device);
        let xs = observe(
            inputs,
            &batch,
            &eval.pairs,
            &pstats,
            rstats.as_ref(),
            model.config.vocab_size,
            device,
        )?;
        let outs = run_program(program, &opts.params, &xs, device, DType::F32)
            .map_err(|e| TrainError::Other(e.to_string()))?;
        for (k, o) in program.outputs.iter().enumerate() {
            match o.kind {
                OutputKind::Loss => loss_sum += to_f64(outs[k].clone()).iter().sum::<f64>(),
                OutputKind::Metric(m) => {
                    metric_sums[m as usize] += to_f64(outs[k].clone()).iter().sum::<f64>()
                }
                OutputKind::Grad(_) => {}
            }
        }
    }
    let n = eval.pairs.len().max(1) as f64;
    let mut out = serde_json::Map::new();
    out.insert("eval/loss".into(), serde_json::json!(loss_sum / n));
    for (m, sum) in compiled.metrics.iter().zip(&metric_sums) {
        out.insert(format!("eval/{}", m.0), serde_json::json!(sum / n));
    }
    Ok(out)
}

/// The reference's statistics of `batch` under `reference` (`policy` is the trained model on
/// a plain device, for [`Reference::AdaptersOff`]); `None` when the objective reads none.
fn reference_stats(
    reference: &Reference,
    need: crate::observe::Needs,
    policy: &Llama,
    batch: &Batch,
    device: &Device,
) -> Option<Stats> {
    if !need.reads_reference() {
        return None;
    }
    let run = |m: &Llama| crate::observe::stats(m, Rows::from(batch), need.reference, device);
    match reference {
        Reference::None => None,
        Reference::Model(r) => Some(run(r)),
        Reference::Cached(cache) => Some(cache.stats(batch, device)),
        Reference::AdaptersOff => {
            let mut base = policy.clone();
            base.adapters_enabled = false;
            Some(run(&base))
        }
    }
}

/// Trains `policy` against `reference` on `pairs`. Calls `on_step` after every step (for
/// progress display); stops cleanly when `stop` is set (Ctrl-C), saving a checkpoint.
#[allow(clippy::too_many_arguments)]
pub fn train(
    compiled: &Compiled,
    mut policy: Llama,
    reference: Reference,
    tok: &Tok,
    pairs: &[Pair],
    opts: &TrainOptions,
    device: &Device,
    stop: Arc<AtomicBool>,
    resume: Option<Resume>,
    eval: Option<Eval>,
    mut on_step: impl FnMut(&StepLog, usize),
) -> Result<Vec<StepLog>, TrainError> {
    // The policy's own device: autodiff, possibly with gradient checkpointing (run.rs).
    let ad = policy.embed.val().device();
    let inputs = &compiled.objective.inputs;
    let need = needs(inputs);
    let program = &compiled.program;
    let per_epoch = pairs
        .len()
        .div_ceil(opts.batch_size * opts.grad_accum)
        .max(1);
    let total = opts.max_steps.unwrap_or(per_epoch * opts.epochs.max(1));
    let mut optim = AdamWConfig::new()
        .with_weight_decay(opts.weight_decay as f32)
        .with_epsilon(1e-8)
        .init();
    let vocab = policy.config.vocab_size;
    std::fs::create_dir_all(&opts.out)
        .map_err(|e| TrainError::Other(format!("{}: {e}", opts.out.display())))?;
    let metrics_path = opts.out.join("metrics.jsonl");
    let mut epoch_batches: Vec<Batch> = Vec::new();
    let mut cursor = 0usize;
    let mut epoch = 0usize;
    let mut first_step = 0;
    // A resumed run continues at its checkpoint: data position and optimizer state.
    if let Some(r) = &resume {
        first_step = r.step;
        epoch = r.epoch;
        cursor = r.cursor;
        if epoch > 0 {
            epoch_batches = batches(
                pairs,
                opts.batch_size,
                tok.pad,
                opts.seed.wrapping_add(epoch as u64 - 1),
                need.rejected,
            );
        }
        optim = optim
            .from_bytes(burn::tensor::Bytes::from_bytes_vec(r.optimizer.clone()))
            .map_err(|e| TrainError::Other(format!("optimizer state: {e:?}")))?;
    }
    let mut metrics_file = metrics_file(&metrics_path, resume.as_ref().map(|r| r.step))?;
    let mut logs = Vec::new();
    let mut last_checkpoint = "none".to_string();
    for step in first_step..total {
        let started = std::time::Instant::now();
        let mut accum = GradientsAccumulator::new();
        let mut loss_sum = 0.0;
        let mut metric_sums = vec![0.0; compiled.metrics.len()];
        let mut rows = 0usize;
        let mut tokens = 0usize;
        let mut lines = Vec::new();
        for _ in 0..opts.grad_accum {
            if cursor >= epoch_batches.len() {
                epoch_batches = batches(
                    pairs,
                    opts.batch_size,
                    tok.pad,
                    opts.seed.wrapping_add(epoch as u64),
                    need.rejected,
                );
                cursor = 0;
                epoch += 1;
            }
            let batch = &epoch_batches[cursor];
            cursor += 1;
            let b = batch.pairs.len();
            tokens += batch
                .mask
                .iter()
                .map(|r| r.iter().filter(|&&m| m).count())
                .sum::<usize>();
            lines.extend(batch.pairs.iter().map(|&i| pairs[i].line));
            let pstats = crate::observe::stats(&policy, Rows::from(batch), need.policy, &ad);
            let rstats = match &reference {
                Reference::AdaptersOff => {
                    reference_stats(&reference, need, &policy.valid(), batch, device)
                }
                other => reference_stats(other, need, &policy, batch, device),
            };
            let xs = observe(inputs, batch, pairs, &pstats, rstats.as_ref(), vocab, &ad)?;
            let outs = run_program(program, &opts.params, &xs, &ad, DType::F32)
                .map_err(|e| TrainError::Other(e.to_string()))?;
            let mut diff_x = Vec::new();
            let mut diff_g = Vec::new();
            for (k, o) in program.outputs.iter().enumerate() {
                match o.kind {
                    OutputKind::Loss => {
                        let l = to_f64(outs[k].clone());
                        if let Some(bad) = l.iter().position(|v| !v.is_finite()) {
                            return Err(TrainError::NotFinite {
                                step: step + 1,
                                what: "the loss".into(),
                                lines: pairs[batch.pairs[bad]].line.to_string(),
                                checkpoint: last_checkpoint,
                            });
                        }
                        loss_sum += l.iter().sum::<f64>();
                    }
                    OutputKind::Grad(i) => {
                        diff_x.push(xs[i as usize].clone());
                        diff_g.push(outs[k].clone());
                    }
                    OutputKind::Metric(m) => {
                        metric_sums[m as usize] += to_f64(outs[k].clone()).iter().sum::<f64>()
                    }
                }
            }
            rows += b;
            // Mean over the whole optimizer batch.
            let scale = 1.0 / (b * opts.grad_accum) as f64;
            let loss = surrogate(&diff_x, &diff_g) * scale;
            let grads = GradientsParams::from_grads(loss.backward(), &policy);
            accum.accumulate(&policy, grads);
        }
        let (grads, grad_norm) = clip_global(&policy, accum.grads(), opts.max_grad_norm);
        let lr = lr_at(opts, step, total);
        if !grad_norm.is_finite() {
            lines.sort();
            lines.dedup();
            return Err(TrainError::NotFinite {
                step: step + 1,
                what: "the gradient norm".into(),
                lines: lines
                    .iter()
                    .map(|l| l.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                checkpoint: last_checkpoint,
            });
        }
        policy = optim.step(lr, policy, grads);
        let mut metrics = serde_json::Map::new();
        for (m, sum) in compiled.metrics.iter().zip(&metric_sums) {
            metrics.insert(m.0.clone(), serde_json::json!(sum / rows as f64));
        }
        if let Some(ev) = &eval {
            let due = step + 1 == total || (ev.every > 0 && (step + 1) % ev.every == 0);
            if due && !ev.pairs.is_empty() {
                metrics.extend(evaluate(compiled, &policy, ev, opts, tok.pad, device)?);
            }
        }
        let log = StepLog {
            step: step + 1,
            epoch: (step + 1) as f64 / per_epoch as f64,
            loss: loss_sum / rows as f64,
            grad_norm,
            lr,
            tokens_per_sec: tokens as f64 / started.elapsed().as_secs_f64().max(1e-9),
            metrics,
        };
        let line = serde_json::to_string(&log).map_err(|e| TrainError::Other(e.to_string()))?;
        writeln!(metrics_file, "{line}")
            .map_err(|e| TrainError::Other(format!("{}: {e}", metrics_path.display())))?;
        on_step(&log, total);
        logs.push(log);
        let extra = serde_json::json!({"epoch": epoch, "cursor": cursor});
        end_of_step(
            &policy,
            opts,
            tok,
            (step + 1, total),
            &stop,
            extra,
            || {
                optim
                    .into_bytes()
                    .map(|b| b.to_vec())
                    .map_err(|e| format!("{e:?}"))
            },
            &mut last_checkpoint,
        )?;
    }
    Ok(logs)
}
