//! The on-policy loop, for objectives that read rollouts (`objectives/ppo.po`): completions
//! sampled from the policy, scored by a frozen reward model, compared with the reference, then
//! several optimization epochs of the compiled objective over the rollout batch. This loop
//! provides the rollout observables an objective declares (`Source::Rollout`) and applies the
//! compiler's symbolic gradient through the surrogate — it never names PPO's terms.

use super::checkpoint::{Checkpointer, Resume};
use super::metrics::MetricsLog;
use super::optimizer::Optimizer;
use super::outputs::{Outputs, metric_means};
use super::{Reference, StepLog, TrainError, TrainOptions, forward};
use crate::data::Tok;
use crate::data::pairs::{Batch, Tokenized, padded};
use crate::lower::{TensorColumn, run_columns};
use crate::model::Llama;
use crate::model::generate::{GenerateOptions, generate};
use crate::observe::constant;
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{DType, Device, Tensor};
use poc_compiler::{Compiled, Input, Rollout, Source};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use std::sync::atomic::AtomicBool;

/// How rollouts are sampled and used.
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

/// A ready on-policy run: everything [`train_on_policy`] needs.
pub struct OnPolicyRun<'a> {
    /// The objective (it reads rollout observables).
    pub compiled: &'a Compiled,
    /// The trained policy (on the autodiff device), with a value head when the objective
    /// reads values.
    pub policy: Llama,
    /// What the rollouts' log-probs are compared with.
    pub reference: Reference,
    /// What scores the rollouts, when the objective reads the score.
    pub reward_model: Option<Scorer>,
    /// Tokenized prompts to sample from.
    pub prompts: Vec<Vec<u32>>,
    /// The tokenizer (saved into checkpoints).
    pub tok: Tok,
    /// Optimization and checkpoint options (`batch_size` prompts per rollout batch).
    pub opts: TrainOptions,
    /// Sampling and epochs per batch.
    pub rollout: RolloutOptions,
    /// The plain device of the frozen models.
    pub device: Device,
    /// Where a resumed run continues.
    pub resume: Option<Resume>,
}

/// What scores a rollout (the `score` observable).
pub enum Scorer {
    /// A frozen reward model's score head (`--reward-model DIR`).
    Model(Box<Llama>),
    /// The synthetic world's true reward r* of the decoded prompt and completion
    /// (`--reward world`, [`crate::data::world::reward`]): an oracle for experiments on world
    /// prompts, −1 for any other prompt.
    World,
}

impl Scorer {
    /// The score of every rollout of `r` (`prompts[i]`, `completions[i]` are row i's tokens).
    fn scores(
        &self,
        r: &Batch,
        prompts: &[Vec<u32>],
        completions: &[Vec<u32>],
        tok: &Tok,
        device: &Device,
    ) -> Option<Tensor<1>> {
        match self {
            Scorer::Model(rm) => forward::rollout_scores(rm, r, device),
            Scorer::World => {
                let scores: Vec<f32> = prompts
                    .iter()
                    .zip(completions)
                    .map(|(p, c)| crate::data::world::reward(&tok.decode(p), &tok.decode(c)) as f32)
                    .collect();
                Some(Tensor::from_floats(scores.as_slice(), device))
            }
        }
    }
}

/// Whether `compiled` reads rollout observables (and so trains on-policy).
pub fn is_on_policy(compiled: &Compiled) -> bool {
    compiled
        .objective
        .inputs
        .iter()
        .any(|i| matches!(i.source, Source::Rollout(_)))
}

/// Trains `run.policy` on-policy: each step samples one completion for each of
/// `opts.batch_size` prompts, computes the objective's rollout inputs, and runs
/// `rollout.epochs` optimizer updates on that batch. Metrics are the objective's (batch means
/// of the last epoch), logged to `metrics.jsonl` like [`super::train_pairs`]'s.
///
/// A `resume` (from [`super::load_resume`] on a checkpoint of this function, with the policy
/// and its value head loaded from it) continues at its step: the optimizer state is restored,
/// the prompt order replayed, and each step's sampling seed depends on the step alone, so the
/// continued run takes the steps the uninterrupted one would have.
pub fn train_on_policy(
    run: OnPolicyRun,
    stop: &AtomicBool,
    mut on_step: impl FnMut(&StepLog, usize),
) -> Result<Vec<StepLog>, TrainError> {
    let OnPolicyRun {
        compiled,
        mut policy,
        reference,
        reward_model,
        prompts,
        tok,
        opts,
        rollout,
        device,
        resume,
    } = run;
    let inputs = &compiled.objective.inputs;
    let ad = policy.embed.val().device();
    let total = opts.max_steps.unwrap_or_else(|| {
        prompts.len().div_ceil(opts.batch_size.max(1)).max(1) * opts.epochs.max(1)
    });
    std::fs::create_dir_all(&opts.out).map_err(TrainError::io(&opts.out))?;
    let mut optimizer = Optimizer::new(&opts, total);
    let mut order = PromptOrder::new(prompts.len(), opts.batch_size, opts.seed);
    let first_step = resume.as_ref().map_or(0, |r| r.step);
    if let Some(r) = &resume {
        for _ in 0..r.step {
            order.next_batch();
        }
        optimizer = optimizer.restore(r)?;
    }
    let mut metrics = MetricsLog::open(&opts.out, resume.as_ref().map(|r| r.step))?;
    let mut checkpoints = Checkpointer::new(&opts, &tok, total, stop)
        .resumed_from(resume.as_ref().map(|r| r.dir.as_path()));
    let mut logs = Vec::new();
    for step in first_step..total {
        let started = std::time::Instant::now();
        let chosen = order.next_batch();
        let not_finite = |what: &str, checkpoint: String| TrainError::NotFinite {
            step: step + 1,
            what: what.into(),
            at: format!("(prompts {chosen:?})"),
            checkpoint,
        };
        // 1. Rollouts from the current policy (no gradients).
        let frozen = policy.valid();
        let batch_prompts: Vec<Vec<u32>> = chosen.iter().map(|&i| prompts[i].clone()).collect();
        let (r, completions) = sample(&frozen, &batch_prompts, &rollout, &opts, step)?;
        let sampled: usize = completions.iter().map(Vec::len).sum();
        let b = r.tokens.len();
        let score = reward_model
            .as_ref()
            .and_then(|s| s.scores(&r, &batch_prompts, &completions, &tok, &device));
        // 2. The constants of the update: old policy, reference, reward model.
        let fixed = Fixed::compute(inputs, &frozen, &reference, score, &r, (&device, &ad))?;
        // 3. Several updates on the same rollouts.
        let mut loss = 0.0;
        let mut grad_norm = 0.0;
        let mut metric_sums = vec![0.0; compiled.gradient.metrics.len()];
        for _ in 0..rollout.epochs.max(1) {
            let now = forward::rollout_tokens(&policy, &r, true, &ad);
            let cols = fixed.columns(inputs, now);
            let outs = run_columns(&compiled.program, &opts.params, &cols, &ad, DType::F32)?;
            let outputs = Outputs::read(compiled, outs, &cols);
            if let Some(row) = outputs.first_not_finite() {
                return Err(TrainError::NotFinite {
                    step: step + 1,
                    what: "the loss".into(),
                    at: format!(
                        "at the rollout of prompt {}, {}",
                        chosen.get(row).map_or(row, |&p| p + 1),
                        super::outputs::blame(compiled, &cols, row)
                    ),
                    checkpoint: checkpoints.last(),
                });
            }
            loss = outputs.loss_sum() / b as f64;
            metric_sums = outputs.metric_sums().to_vec();
            let surrogate = outputs.surrogate() / b as f64;
            let grads = GradientsParams::from_grads(surrogate.backward(), &policy);
            (policy, grad_norm) = optimizer
                .step(step, policy, grads)
                .map_err(|_| not_finite("the gradient norm", checkpoints.last()))?;
        }
        let mut step_metrics = metric_means(compiled, &metric_sums, b, "");
        step_metrics.insert(
            "rollout/completion_tokens".into(),
            serde_json::json!(sampled as f64 / b as f64),
        );
        let log = StepLog {
            step: step + 1,
            epoch: (step + 1) as f64 * opts.batch_size as f64 / prompts.len().max(1) as f64,
            loss,
            grad_norm,
            lr: optimizer.lr(step),
            tokens_per_sec: sampled as f64 / started.elapsed().as_secs_f64().max(1e-9),
            metrics: step_metrics,
        };
        metrics.write(&log)?;
        on_step(&log, total);
        logs.push(log);
        let state = serde_json::json!({"on_policy": true});
        checkpoints.after_step(step + 1, &policy, &optimizer, state)?;
    }
    Ok(logs)
}

/// The prompts of each rollout batch: the rest of the current shuffled pass over the prompts,
/// then a fresh pass (one seeded generator for the whole run, so a resumed run replays it).
struct PromptOrder {
    prompts: usize,
    batch_size: usize,
    rng: rand_chacha::ChaCha8Rng,
    pending: Vec<usize>,
}

impl PromptOrder {
    fn new(prompts: usize, batch_size: usize, seed: u64) -> PromptOrder {
        PromptOrder {
            prompts,
            batch_size,
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
            pending: Vec::new(),
        }
    }

    fn next_batch(&mut self) -> Vec<usize> {
        if self.pending.len() < self.batch_size {
            let mut fresh: Vec<usize> = (0..self.prompts).collect();
            fresh.shuffle(&mut self.rng);
            self.pending.extend(fresh);
        }
        let n = self.batch_size.min(self.pending.len());
        self.pending.drain(..n).collect()
    }
}

/// One completion per prompt from `policy` (seeded by the step alone), as one right-padded
/// batch of prompt + completion (the completion masked as such), and the sampled tokens.
fn sample(
    policy: &Llama,
    prompts: &[Vec<u32>],
    rollout: &RolloutOptions,
    opts: &TrainOptions,
    step: usize,
) -> Result<(Batch, Vec<Vec<u32>>), TrainError> {
    let sampling = GenerateOptions {
        max_new_tokens: rollout.max_new_tokens,
        temperature: rollout.temperature,
        top_p: 1.0,
        seed: opts.seed.wrapping_mul(1_000_003).wrapping_add(step as u64),
        eos: rollout.eos.clone(),
        pad: rollout.pad,
        batch_size: opts.batch_size,
    };
    let completions =
        generate(policy, prompts, &sampling).map_err(|e| TrainError::Sampling(e.to_string()))?;
    let seqs: Vec<Tokenized> = prompts
        .iter()
        .zip(&completions)
        .map(|(p, c)| {
            let mut ids = p.clone();
            ids.extend(c);
            Tokenized {
                ids,
                completion_start: p.len(),
                earlier: Vec::new(),
            }
        })
        .collect();
    let refs: Vec<&Tokenized> = seqs.iter().collect();
    Ok((padded(&refs, rollout.pad, Vec::new()), completions))
}

/// The inputs that stay fixed during a batch's updates, on the training device; `None` marks
/// those the policy recomputes in every epoch (its log-probs and values).
struct Fixed(Vec<Option<TensorColumn>>);

impl Fixed {
    /// The old policy's (`frozen`), the reference's and the reward model's statistics of the
    /// rollouts `r`, computed on `devices.0` and moved to `devices.1`, for each input.
    fn compute(
        inputs: &[Input],
        frozen: &Llama,
        reference: &Reference,
        score: Option<Tensor<1>>,
        r: &Batch,
        (device, ad): (&Device, &Device),
    ) -> Result<Fixed, TrainError> {
        let old = forward::rollout_tokens(frozen, r, true, device);
        let reference = reference.rollout_stats(frozen, r, device);
        let mut fixed = Vec::with_capacity(inputs.len());
        for inp in inputs {
            let missing = |what: &str| {
                TrainError::Rollout(format!(
                    "`{}` reads {what}, which this run does not have",
                    inp.name
                ))
            };
            let tokens = |t: Tensor<2>| Some(TensorColumn::Tokens(constant(t, ad)));
            fixed.push(match &inp.source {
                Source::Rollout(Rollout::PolicyTokenLogps) => None,
                Source::Rollout(Rollout::Values) => {
                    if old.values.is_none() {
                        return Err(missing("a value head"));
                    }
                    None
                }
                Source::Rollout(Rollout::OldPolicyTokenLogps) => tokens(old.token_logps.clone()),
                Source::Rollout(Rollout::OldValues) => {
                    tokens(old.values.clone().ok_or_else(|| missing("a value head"))?)
                }
                Source::Rollout(Rollout::ReferenceTokenLogps) => {
                    let r = reference
                        .as_ref()
                        .ok_or_else(|| missing("a reference model"))?;
                    tokens(r.token_logps.clone())
                }
                Source::Rollout(Rollout::Score) => Some(TensorColumn::Scalar(constant(
                    score
                        .clone()
                        .ok_or_else(|| missing("a reward (--reward-model or --reward world)"))?,
                    ad,
                ))),
                Source::Rollout(Rollout::Mask) => tokens(old.mask.clone()),
                other => {
                    return Err(TrainError::Rollout(format!(
                        "`{}` ({}) is not a rollout observable: an on-policy objective reads only rollout inputs",
                        inp.name,
                        other.text()
                    )));
                }
            });
        }
        Ok(Fixed(fixed))
    }

    /// Every input of one update epoch: the fixed ones, and the policy's current log-probs
    /// and values (`now`, with gradients).
    fn columns(&self, inputs: &[Input], now: forward::RolloutStats) -> Vec<TensorColumn> {
        inputs
            .iter()
            .zip(&self.0)
            .map(|(inp, f)| match (f, &inp.source) {
                (Some(c), _) => c.clone(),
                (None, Source::Rollout(Rollout::Values)) => {
                    // Present: checked in `compute` (the policy has a value head).
                    TensorColumn::Tokens(
                        now.values
                            .clone()
                            .unwrap_or_else(|| now.token_logps.zeros_like()),
                    )
                }
                (None, _) => TensorColumn::Tokens(now.token_logps.clone()),
            })
            .collect()
    }
}
