//! The pair loop: policy versus reference on offline preference pairs. Each step: one
//! forward of the policy (and of the reference) over chosen and rejected rows, the
//! observables the objective declares, the compiled program, and a backward of the
//! surrogate through the policy; gradient accumulation over micro-batches, then one
//! optimizer update. Data order is seeded per epoch, so a resumed run replays it.

use super::checkpoint::{Checkpointer, Resume};
use super::metrics::MetricsLog;
use super::optimizer::Optimizer;
use super::outputs::{Outputs, metric_means};
use super::parallel::DataParallel;
use super::{Reference, StepLog, TrainError, TrainOptions, forward};
use crate::data::{Batch, Pair, Tok, batches};
use crate::lower::{TensorColumn, run_columns};
use crate::model::Llama;
use crate::observe::{Needs, needs};
use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{DType, Device};
use poc_compiler::Compiled;
use std::sync::atomic::AtomicBool;

/// Held-out pairs, evaluated without gradients every `every` steps and after the last one.
pub struct Eval {
    /// The held-out pairs.
    pub pairs: Vec<Pair>,
    /// Their reference statistics (the same strategy as training's).
    pub reference: Reference,
    /// Evaluate every N optimizer steps (0: only after the last).
    pub every: usize,
}

/// A ready pair run: everything [`train_pairs`] needs.
pub struct PairRun<'a> {
    /// The objective.
    pub compiled: &'a Compiled,
    /// The trained model, on the autodiff (training) device.
    pub policy: Llama,
    /// What it is compared with.
    pub reference: Reference,
    /// The tokenizer (saved into checkpoints; its padding id pads batches).
    pub tok: Tok,
    /// The training pairs.
    pub pairs: Vec<Pair>,
    /// Held-out pairs, if any.
    pub eval: Option<Eval>,
    /// Optimization and checkpoint options.
    pub opts: TrainOptions,
    /// The plain device of the reference and of everything without gradients.
    pub device: Device,
    /// Where a resumed run continues.
    pub resume: Option<Resume>,
    /// The data-parallel group this process trains in (`None`: alone). Only rank 0 holds
    /// `eval`, and writes checkpoints and metrics.
    pub parallel: Option<DataParallel>,
}

/// The run's position in its data: epochs of seeded, shuffled batches.
struct Cursor<'a> {
    pairs: &'a [Pair],
    opts: &'a TrainOptions,
    pad: u32,
    rejected: bool,
    batches: Vec<Batch>,
    epoch: usize,
    next: usize,
}

impl<'a> Cursor<'a> {
    /// At the start of `pairs`, or where `resume` left off.
    fn new(
        pairs: &'a [Pair],
        opts: &'a TrainOptions,
        pad: u32,
        rejected: bool,
        resume: Option<&Resume>,
    ) -> Cursor<'a> {
        let mut cursor = Cursor {
            pairs,
            opts,
            pad,
            rejected,
            batches: Vec::new(),
            epoch: 0,
            next: 0,
        };
        if let Some(r) = resume {
            cursor.epoch = r.epoch;
            cursor.next = r.cursor;
            if r.epoch > 0 {
                cursor.batches = cursor.shuffled(r.epoch - 1);
            }
        }
        cursor
    }

    /// The batches of 0-based epoch `e`.
    fn shuffled(&self, e: usize) -> Vec<Batch> {
        let seed = self.opts.seed.wrapping_add(e as u64);
        batches(
            self.pairs,
            self.opts.batch_size,
            self.pad,
            seed,
            self.rejected,
        )
    }

    /// The next batch, starting a new epoch when this one is used up.
    fn next_batch(&mut self) -> &Batch {
        if self.next >= self.batches.len() {
            self.batches = self.shuffled(self.epoch);
            self.next = 0;
            self.epoch += 1;
        }
        self.next += 1;
        &self.batches[self.next - 1]
    }

    /// What a checkpoint records of the position.
    fn state(&self) -> serde_json::Value {
        serde_json::json!({"epoch": self.epoch, "cursor": self.next})
    }
}

/// One micro-batch of a step: loss and metric sums, rows, tokens and data lines.
#[derive(Default)]
struct Tally {
    loss: f64,
    metrics: Vec<f64>,
    rows: usize,
    tokens: usize,
    lines: Vec<usize>,
    /// Model FLOPs of this rank's share of the step ([`crate::flops`]).
    flops: f64,
}

/// Trains `run.policy` against `run.reference` on `run.pairs`. Calls `on_step` after every
/// step with its log and the total step count (for progress display); stops cleanly when
/// `stop` is set (Ctrl-C), saving a checkpoint first.
pub fn train_pairs(
    run: PairRun,
    stop: &AtomicBool,
    mut on_step: impl FnMut(&StepLog, usize),
) -> Result<Vec<StepLog>, TrainError> {
    let PairRun {
        compiled,
        mut policy,
        reference,
        tok,
        pairs,
        eval,
        opts,
        device,
        resume,
        mut parallel,
    } = run;
    let main = parallel.as_ref().is_none_or(|p| p.rank() == 0);
    // The policy's own device: autodiff, possibly with gradient checkpointing.
    let ad = policy.embed.val().device();
    let need = needs(&compiled.objective.inputs);
    let live_reference = matches!(reference, Reference::Model(_) | Reference::AdaptersOff);
    let cost = crate::flops::StepCost::new(&policy.config, policy.lora.as_ref(), live_reference);
    let per_epoch = pairs
        .len()
        .div_ceil(opts.batch_size * opts.grad_accum)
        .max(1);
    let total = opts.max_steps.unwrap_or(per_epoch * opts.epochs.max(1));
    std::fs::create_dir_all(&opts.out).map_err(TrainError::io(&opts.out))?;
    let mut optimizer = Optimizer::new(&opts, total);
    let first_step = resume.as_ref().map_or(0, |r| r.step);
    if let Some(r) = &resume {
        optimizer = optimizer.restore(r)?;
    }
    let mut cursor = Cursor::new(&pairs, &opts, tok.pad, need.rejected, resume.as_ref());
    let mut metrics = if main {
        Some(MetricsLog::open(
            &opts.out,
            resume.as_ref().map(|r| r.step),
        )?)
    } else {
        None
    };
    let mut checkpoints = Checkpointer::new(&opts, &tok, total, stop)
        .writing(main)
        .resumed_from(resume.as_ref().map(|r| r.dir.as_path()));
    let mut logs = Vec::new();
    for step in first_step..total {
        let started = std::time::Instant::now();
        let mut accum = GradientsAccumulator::new();
        let mut tally = Tally {
            metrics: vec![0.0; compiled.gradient.metrics.len()],
            ..Tally::default()
        };
        // The row whose loss is not finite: the step stops there, before the update.
        let mut bad: Option<String> = None;
        for _ in 0..opts.grad_accum {
            let global = cursor.next_batch();
            // Mean over the whole optimizer batch, of every rank.
            let scale = 1.0 / (global.pairs.len() * opts.grad_accum) as f64;
            let shard;
            let batch = match &parallel {
                None => global,
                Some(p) => match p.shard(global, &pairs, tok.pad, need.rejected) {
                    Some(b) => {
                        shard = b;
                        &shard
                    }
                    None => continue,
                },
            };
            let b = batch.pairs.len();
            let lengths: Vec<usize> = batch
                .mask
                .iter()
                .map(|r| r.iter().filter(|&&m| m).count())
                .collect();
            tally.tokens += lengths.iter().sum::<usize>();
            tally.flops += cost.step(lengths);
            tally
                .lines
                .extend(batch.pairs.iter().map(|&i| pairs[i].line));
            let frozen = match &reference {
                Reference::AdaptersOff => Some(policy.valid()),
                _ => None,
            };
            let (outs, inputs) = run_batch(
                compiled,
                need,
                (&policy, frozen.as_ref().unwrap_or(&policy)),
                &reference,
                batch,
                &pairs,
                &opts,
                (&ad, &device),
            )?;
            let outputs = Outputs::read(compiled, outs, &inputs);
            if let Some(row) = outputs.first_not_finite() {
                let line = pairs[batch.pairs[row]].line;
                bad = Some(format!(
                    "at data line {line}, {}",
                    super::outputs::blame(compiled, &inputs, row)
                ));
                break;
            }
            tally.loss += outputs.loss_sum();
            for (sum, m) in tally.metrics.iter_mut().zip(outputs.metric_sums()) {
                *sum += m;
            }
            tally.rows += b;
            let loss = outputs.surrogate() * scale;
            let grads = GradientsParams::from_grads(loss.backward(), &policy);
            accum.accumulate(&policy, grads);
        }
        if let Some(p) = &mut parallel {
            // The step's sums over every rank, a non-finite loss on any rank (every rank stops
            // together: none waits alone) and a stop asked of any rank (Ctrl-C).
            let mut sums = vec![
                tally.loss,
                tally.rows as f64,
                tally.tokens as f64,
                f64::from(u8::from(bad.is_some())),
                f64::from(u8::from(stop.load(std::sync::atomic::Ordering::SeqCst))),
            ];
            sums.extend(&tally.metrics);
            p.sum(&mut sums)?;
            tally.loss = sums[0];
            tally.rows = sums[1] as usize;
            tally.tokens = sums[2] as usize;
            if sums[3] > 0.0 && bad.is_none() {
                bad = Some("at a row of another process (its output names it)".into());
            }
            if sums[4] > 0.0 {
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            tally.metrics.copy_from_slice(&sums[5..]);
        }
        if let Some(at) = bad {
            return Err(TrainError::NotFinite {
                step: step + 1,
                what: "the loss".into(),
                at,
                checkpoint: checkpoints.last(),
            });
        }
        // With ranks, the gradients summed over them, and the seconds that took.
        let (grads, comm) = match &mut parallel {
            Some(p) => {
                let started = std::time::Instant::now();
                let grads = p.reduce_grads(&policy, accum.grads())?;
                (grads, started.elapsed().as_secs_f64())
            }
            None => (accum.grads(), 0.0),
        };
        let lr = optimizer.lr(step);
        let (updated, grad_norm) = optimizer.step(step, policy, grads).map_err(|_| {
            tally.lines.sort();
            tally.lines.dedup();
            TrainError::NotFinite {
                step: step + 1,
                what: "the gradient norm".into(),
                at: format!(
                    "(data lines {}; the loss was finite: the model's backward pass overflowed, lower --lr or set --max-grad-norm)",
                    tally
                        .lines
                        .iter()
                        .map(|l| l.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                checkpoint: checkpoints.last(),
            }
        })?;
        policy = updated;
        let mut step_metrics = metric_means(compiled, &tally.metrics, tally.rows, "");
        // This process's model FLOP/s (MFU is it over the device's peak).
        let tflops = tally.flops / started.elapsed().as_secs_f64().max(1e-9) / 1e12;
        step_metrics.insert("perf/tflops".into(), serde_json::json!(tflops));
        if let Some(peak) = opts.peak_tflops {
            step_metrics.insert("perf/mfu".into(), serde_json::json!(tflops / peak));
        }
        if parallel.is_some() {
            // Seconds this rank spent in the gradient all-reduce, and in the whole step so far
            // (`poc bench dist` reads both).
            step_metrics.insert("dist/allreduce_seconds".into(), serde_json::json!(comm));
            let secs = started.elapsed().as_secs_f64();
            step_metrics.insert("dist/step_seconds".into(), serde_json::json!(secs));
        }
        if let Some(ev) = &eval {
            let due = step + 1 == total || (ev.every > 0 && (step + 1) % ev.every == 0);
            if due && !ev.pairs.is_empty() {
                step_metrics.extend(evaluate(compiled, &policy, ev, &opts, tok.pad, &device)?);
            }
        }
        let log = StepLog {
            step: step + 1,
            epoch: (step + 1) as f64 / per_epoch as f64,
            loss: tally.loss / tally.rows as f64,
            grad_norm,
            lr,
            tokens_per_sec: tally.tokens as f64 / started.elapsed().as_secs_f64().max(1e-9),
            metrics: step_metrics,
        };
        if let Some(m) = &mut metrics {
            m.write(&log)?;
            on_step(&log, total);
        }
        logs.push(log);
        checkpoints.after_step(step + 1, &policy, &optimizer, cursor.state())?;
    }
    Ok(logs)
}

/// The program's outputs over one pair batch, and the inputs they were computed from.
/// `models` is the policy on `devices.0` (the gradient device) and the policy on a plain
/// device (for a reference that is the policy with its adapters off); the reference runs on
/// `devices.1`.
#[allow(clippy::too_many_arguments)]
fn run_batch(
    compiled: &Compiled,
    need: Needs,
    (policy, plain_policy): (&Llama, &Llama),
    reference: &Reference,
    batch: &Batch,
    pairs: &[Pair],
    opts: &TrainOptions,
    (device, plain): (&burn::tensor::Device, &burn::tensor::Device),
) -> Result<(Vec<TensorColumn>, Vec<TensorColumn>), TrainError> {
    let inputs = &compiled.objective.inputs;
    let pstats = forward::policy_pairs(policy, batch, need, device);
    let rstats = if need.reads_reference() {
        reference.pair_stats(plain_policy, batch, need.reference, plain)
    } else {
        None
    };
    let vocab = policy.config.vocab_size;
    let xs = crate::observe::observe(
        inputs,
        batch,
        pairs,
        &pstats,
        rstats.as_ref(),
        vocab,
        device,
    )?;
    let outs = run_columns(&compiled.program, &opts.params, &xs, device, DType::F32)?;
    Ok((outs, xs))
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
    let need = needs(&compiled.objective.inputs);
    let model = policy.valid();
    let mut loss_sum = 0.0;
    let mut metric_sums = vec![0.0; compiled.gradient.metrics.len()];
    let idx: Vec<usize> = (0..eval.pairs.len()).collect();
    for chunk in idx.chunks(opts.batch_size.max(1)) {
        let batch = crate::data::pairs::batch_of_sides(&eval.pairs, chunk, pad, need.rejected);
        let (outs, inputs) = run_batch(
            compiled,
            need,
            (&model, &model),
            &eval.reference,
            &batch,
            &eval.pairs,
            opts,
            (device, device),
        )?;
        let outputs = Outputs::read(compiled, outs, &inputs);
        loss_sum += outputs.loss_sum();
        for (sum, m) in metric_sums.iter_mut().zip(outputs.metric_sums()) {
            *sum += m;
        }
    }
    let n = eval.pairs.len().max(1);
    let mut out = serde_json::Map::new();
    out.insert("eval/loss".into(), serde_json::json!(loss_sum / n as f64));
    out.extend(metric_means(compiled, &metric_sums, n, "eval/"));
    Ok(out)
}
