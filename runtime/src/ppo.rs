//! On-policy training for token-level objectives (`objectives/ppo.po`): rollouts sampled from
//! the policy, scored by a frozen reward model, compared with a frozen reference, then several
//! optimization epochs of the compiled objective over the rollout batch. As everywhere in the
//! runtime, the objective is only a compiled program: this loop provides the rollout
//! observables an objective declares (`Source::Rollout`) and applies the compiler's symbolic
//! gradient through the surrogate `Σ detach(∂L/∂x)·x` — it never names PPO's terms.

use crate::data::pairs::{Batch, Tokenized, padded};
use crate::model::Llama;
use crate::model::generate::{GenerateOptions, generate};
use crate::objective::{TensorColumn, run_columns, surrogate_columns, to_f64};
use crate::observe::{Rows, completion_mask, constant, needs, stats};
use crate::train::{Resume, StepLog, TrainError, TrainOptions, lr_at};
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{DType, Device, Tensor};
use poc_compiler::{Compiled, OutputKind, Rollout, Source};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// What the on-policy loop needs besides [`TrainOptions`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct RolloutOptions {
    /// Optimization epochs over each rollout batch (TRL's `num_ppo_epochs`).
    pub epochs: usize,
    /// The longest sampled completion, in tokens.
    pub max_new_tokens: usize,
    /// Sampling temperature of the rollouts.
    pub temperature: f64,
    /// Tokens that end a completion.
    pub eos: Vec<u32>,
    /// Padding id.
    pub pad: u32,
}

/// The models of on-policy training.
pub struct Models {
    /// The trained policy (on the autodiff device), with a value head when the objective
    /// reads values.
    pub policy: Llama,
    /// The frozen reference, when the objective reads reference log-probs.
    pub reference: Option<Llama>,
    /// The reference is the policy with its LoRA adapters switched off (its frozen base): no
    /// second copy of the weights. `reference` is then `None`.
    pub reference_is_base: bool,
    /// The frozen reward model, when the objective reads the score.
    pub reward_model: Option<Llama>,
}

/// Whether `compiled` reads rollout observables (and so trains on-policy).
pub fn is_on_policy(compiled: &Compiled) -> bool {
    compiled
        .objective
        .inputs
        .iter()
        .any(|i| matches!(i.source, Source::Rollout(_)))
}

/// Prompt + completion of every rollout as one right-padded batch (the completion masked as
/// such), and the number of sampled tokens.
fn rollouts(prompts: &[&Vec<u32>], completions: Vec<Vec<u32>>, pad: u32) -> (Batch, usize) {
    let seqs: Vec<Tokenized> = prompts
        .iter()
        .zip(completions)
        .map(|(p, c)| {
            let mut ids = (*p).clone();
            ids.extend(c);
            Tokenized {
                ids,
                completion_start: p.len(),
                earlier: Vec::new(),
            }
        })
        .collect();
    let sampled = seqs.iter().map(|s| s.ids.len() - s.completion_start).sum();
    let refs: Vec<&Tokenized> = seqs.iter().collect();
    (padded(&refs, pad, Vec::new()), sampled)
}

/// Trains `models.policy` on-policy: each step samples one completion for each of
/// `opts.batch_size` prompts, computes the objective's rollout inputs, and runs
/// `rollout.epochs` optimizer updates on that batch. Metrics are the objective's (batch means
/// of the last epoch), logged to `metrics.jsonl` like [`crate::train::train`]'s.
///
/// A `resume` (from [`crate::train::load_resume`] on a checkpoint of this function, with
/// `models.policy` and its value head loaded from it) continues at its step: the optimizer
/// state is restored, the prompt order replayed, and each step's sampling seed depends on the
/// step alone, so the continued run takes the steps the uninterrupted one would have.
#[allow(clippy::too_many_arguments)]
pub fn train_on_policy(
    compiled: &Compiled,
    mut models: Models,
    prompts: &[Vec<u32>],
    tok: &crate::data::Tok,
    opts: &TrainOptions,
    rollout: &RolloutOptions,
    device: &Device,
    resume: Option<Resume>,
    stop: Arc<AtomicBool>,
    mut on_step: impl FnMut(&StepLog, usize),
) -> Result<Vec<StepLog>, TrainError> {
    let program = &compiled.program;
    let inputs = &compiled.objective.inputs;
    let need = needs(inputs);
    let ad = models.policy.embed.val().device();
    let total = opts.max_steps.unwrap_or_else(|| {
        prompts.len().div_ceil(opts.batch_size.max(1)).max(1) * opts.epochs.max(1)
    });
    let mut optim = AdamWConfig::new()
        .with_weight_decay(opts.weight_decay as f32)
        .with_epsilon(1e-8)
        .init();
    std::fs::create_dir_all(&opts.out)
        .map_err(|e| TrainError::Other(format!("{}: {e}", opts.out.display())))?;
    let metrics_path = opts.out.join("metrics.jsonl");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
    let mut order: Vec<usize> = Vec::new();
    // The prompts of the next batch: the rest of the current shuffled pass over the prompts,
    // then a fresh pass.
    let mut next_batch = |order: &mut Vec<usize>| -> Vec<usize> {
        if order.len() < opts.batch_size {
            let mut fresh: Vec<usize> = (0..prompts.len()).collect();
            fresh.shuffle(&mut rng);
            order.extend(fresh);
        }
        order.drain(..opts.batch_size.min(order.len())).collect()
    };
    let mut first_step = 0;
    if let Some(r) = &resume {
        first_step = r.step;
        for _ in 0..r.step {
            next_batch(&mut order);
        }
        optim = optim
            .from_bytes(burn::tensor::Bytes::from_bytes_vec(r.optimizer.clone()))
            .map_err(|e| TrainError::Other(format!("optimizer state: {e:?}")))?;
    }
    let mut metrics_file =
        crate::train::metrics_file(&metrics_path, resume.as_ref().map(|r| r.step))?;
    let mut logs = Vec::new();
    let mut last_checkpoint = "none".to_string();
    for step in first_step..total {
        let started = std::time::Instant::now();
        let chosen = next_batch(&mut order);
        let batch_prompts: Vec<&Vec<u32>> = chosen.iter().map(|&i| &prompts[i]).collect();
        // 1. Rollouts from the current policy (no gradients).
        let frozen = models.policy.valid();
        let sampling = GenerateOptions {
            max_new_tokens: rollout.max_new_tokens,
            temperature: rollout.temperature,
            top_p: 1.0,
            seed: opts.seed.wrapping_mul(1_000_003).wrapping_add(step as u64),
            eos: rollout.eos.clone(),
            pad: rollout.pad,
            batch_size: opts.batch_size,
        };
        let owned: Vec<Vec<u32>> = batch_prompts.iter().map(|p| (*p).clone()).collect();
        let completions = generate(&frozen, &owned, &sampling)
            .map_err(|e| TrainError::Other(format!("sampling rollouts: {e}")))?;
        let (r, sampled) = rollouts(&batch_prompts, completions, rollout.pad);
        let b = r.tokens.len();
        let mask = completion_mask(&r.completion, &ad);
        // 2. The constants of the update: old policy, reference, reward model.
        let old = stats(&frozen, Rows::from(&r), need.rollout_policy, device);
        let reference = if models.reference_is_base {
            let mut base = frozen.clone();
            base.adapters_enabled = false;
            Some(stats(&base, Rows::from(&r), need.reference, device))
        } else {
            models
                .reference
                .as_ref()
                .map(|m| stats(m, Rows::from(&r), need.reference, device))
        };
        let score = match &models.reward_model {
            Some(rm) => stats(rm, Rows::from(&r), need.reward_model, device).rewards,
            None => None,
        };
        // 3. The inputs that stay fixed during the updates, moved to the training device once;
        //    `None` marks those the policy recomputes in every epoch.
        let mut fixed: Vec<Option<TensorColumn>> = Vec::with_capacity(inputs.len());
        for inp in inputs {
            let missing = |what: &str| {
                TrainError::Other(format!(
                    "`{}` reads {what}, which this run does not have",
                    inp.name
                ))
            };
            fixed.push(match &inp.source {
                Source::Rollout(Rollout::PolicyTokenLogps) => None,
                Source::Rollout(Rollout::Values) => {
                    if models.policy.value_head.is_none() {
                        return Err(missing("a value head"));
                    }
                    None
                }
                Source::Rollout(Rollout::OldPolicyTokenLogps) => Some(TensorColumn::Tokens(
                    constant(old.token_logps.clone().ok_or_else(|| missing("log-probs"))?, &ad),
                )),
                Source::Rollout(Rollout::OldValues) => Some(TensorColumn::Tokens(constant(
                    old.values.clone().ok_or_else(|| missing("a value head"))?,
                    &ad,
                ))),
                Source::Rollout(Rollout::ReferenceTokenLogps) => {
                    let r = reference
                        .as_ref()
                        .and_then(|r| r.token_logps.clone())
                        .ok_or_else(|| missing("a reference model"))?;
                    Some(TensorColumn::Tokens(constant(r, &ad)))
                }
                Source::Rollout(Rollout::Score) => Some(TensorColumn::Scalar(constant(
                    score
                        .clone()
                        .ok_or_else(|| missing("a reward model (--reward-model)"))?,
                    &ad,
                ))),
                Source::Rollout(Rollout::Mask) => {
                    Some(TensorColumn::Tokens(mask.clone()))
                }
                other => {
                    return Err(TrainError::Other(format!(
                        "`{}` ({}) is not a rollout observable: an on-policy objective reads only rollout inputs",
                        inp.name,
                        other.text()
                    )));
                }
            });
        }
        // 4. Several updates on the same rollouts.
        let mut loss_mean = 0.0;
        let mut grad_norm = 0.0;
        let mut metric_means = vec![0.0; compiled.metrics.len()];
        for _ in 0..rollout.epochs.max(1) {
            let now = stats(&models.policy, Rows::from(&r), need.policy, &ad);
            let cols: Vec<TensorColumn> = inputs
                .iter()
                .zip(&fixed)
                .map(|(inp, f)| match (f, &inp.source) {
                    (Some(c), _) => c.clone(),
                    // Present: asked for by `need.policy` (the value head checked above).
                    (None, Source::Rollout(Rollout::Values)) => TensorColumn::Tokens(
                        now.values.clone().unwrap_or_else(|| mask.zeros_like()),
                    ),
                    (None, _) => TensorColumn::Tokens(
                        now.token_logps.clone().unwrap_or_else(|| mask.zeros_like()),
                    ),
                })
                .collect();
            let outs = run_columns(program, &opts.params, &cols, &ad, DType::F32)
                .map_err(|e| TrainError::Other(e.to_string()))?;
            let (mut xs, mut gs) = (Vec::new(), Vec::new());
            loss_mean = 0.0;
            for (k, o) in program.outputs.iter().enumerate() {
                match o.kind {
                    OutputKind::Loss => {
                        let l = to_f64(per_example(outs[k].clone(), b));
                        if l.iter().any(|v| !v.is_finite()) {
                            return Err(TrainError::NotFinite {
                                step: step + 1,
                                what: "the loss".into(),
                                lines: format!("prompts {chosen:?}"),
                                checkpoint: last_checkpoint,
                            });
                        }
                        loss_mean = l.iter().sum::<f64>() / b as f64;
                    }
                    OutputKind::Grad(i) => {
                        xs.push(cols[i as usize].clone());
                        gs.push(outs[k].clone());
                    }
                    OutputKind::Metric(m) => {
                        let v = to_f64(per_example(outs[k].clone(), b));
                        metric_means[m as usize] = v.iter().sum::<f64>() / b as f64;
                    }
                }
            }
            let loss = surrogate_columns(&xs, &gs) / b as f64;
            let grads = GradientsParams::from_grads(loss.backward(), &models.policy);
            let (grads, norm) =
                crate::train::clip_global(&models.policy, grads, opts.max_grad_norm);
            if !norm.is_finite() {
                return Err(TrainError::NotFinite {
                    step: step + 1,
                    what: "the gradient norm".into(),
                    lines: format!("prompts {chosen:?}"),
                    checkpoint: last_checkpoint,
                });
            }
            grad_norm = norm;
            let lr = lr_at(opts, step, total);
            models.policy = optim.step(lr, models.policy, grads);
        }
        let mut metrics = serde_json::Map::new();
        for (m, v) in compiled.metrics.iter().zip(&metric_means) {
            metrics.insert(m.0.clone(), serde_json::json!(v));
        }
        metrics.insert(
            "rollout/completion_tokens".into(),
            serde_json::json!(sampled as f64 / b as f64),
        );
        let log = StepLog {
            step: step + 1,
            epoch: (step + 1) as f64 * opts.batch_size as f64 / prompts.len().max(1) as f64,
            loss: loss_mean,
            grad_norm,
            lr: lr_at(opts, step, total),
            tokens_per_sec: sampled as f64 / started.elapsed().as_secs_f64().max(1e-9),
            metrics,
        };
        let line = serde_json::to_string(&log).map_err(|e| TrainError::Other(e.to_string()))?;
        writeln!(metrics_file, "{line}")
            .map_err(|e| TrainError::Other(format!("{}: {e}", metrics_path.display())))?;
        on_step(&log, total);
        logs.push(log);
        crate::train::end_of_step(
            &models.policy,
            opts,
            tok,
            (step + 1, total),
            &stop,
            serde_json::json!({"on_policy": true}),
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

/// A per-example output column as `[B]` (the loss and the metrics always are).
fn per_example(col: TensorColumn, b: usize) -> Tensor<1> {
    match col {
        TensorColumn::Scalar(t) => t,
        TensorColumn::Tokens(t) => t.sum_dim(1).reshape([b]),
    }
}
