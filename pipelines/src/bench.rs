//! The measurements behind `poc bench eval` and `poc bench train`, as library calls that
//! return their tables: [`eval`] (throughput of loss+gradient per lowering, as ratios against
//! a hand-written Rust DPO loop measured in the same run) and [`train`] (poc's DPO step beside
//! PyTorch's on the same shape). The pieces they are built from — [`random_columns`],
//! [`hand_written_dpo`], [`best_of`], [`peak_rss_mb`] — are public so tests can check them.

use crate::{Error, Result, library};
use poc_runtime::backend::{Backend, BackendError, Evaluator, Precision};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Random input columns for the inputs `names`, `n` rows each, deterministic per `seed`, in
/// plausible ranges: sequence lengths in [20, 200), mean entropies in [0.5, 6), the Llama-3
/// vocabulary size, sequence log-probs (of 20-200 token completions) in [-300, -20), anything
/// else in [-3, 3).
pub fn random_columns(names: &[String], n: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    names
        .iter()
        .map(|name| {
            (0..n)
                .map(|_| match name.as_str() {
                    "chosen_len" | "rejected_len" => rng.random_range(20..200) as f64,
                    "ref_chosen_entropy" | "ref_rejected_entropy" => rng.random_range(0.5..6.0),
                    "vocab_size" => 128_256.0,
                    n if n.contains("logps") => rng.random_range(-300.0..-20.0),
                    _ => rng.random_range(-3.0..3.0),
                })
                .collect()
        })
        .collect()
}

/// The baseline: DPO's loss (without label smoothing) and both policy gradients, written by
/// hand. `cols` are the policy's chosen and rejected log-probs, then the reference's;
/// `out` becomes (loss, ∂/∂policy_chosen_logps, ∂/∂policy_rejected_logps), reusing its
/// allocations so that timing it measures the arithmetic.
pub fn hand_written_dpo(beta: f64, cols: &[Vec<f64>; 4], out: &mut [Vec<f64>; 3]) {
    let [pc, pr, rc, rr] = cols;
    let n = pc.len();
    for o in out.iter_mut() {
        o.clear();
        o.resize(n, 0.0);
    }
    let [loss, gc, gr] = out;
    for i in 0..n {
        let z = beta * ((pc[i] - rc[i]) - (pr[i] - rr[i]));
        // loss = softplus(-z); d/dz = -sigmoid(-z)
        let l = (-z).max(0.0) + (-z.abs()).exp().ln_1p();
        let s = if z >= 0.0 {
            let e = (-z).exp();
            e / (1.0 + e)
        } else {
            1.0 / (1.0 + z.exp())
        };
        loss[i] = l;
        gc[i] = -beta * s;
        gr[i] = beta * s;
    }
}

/// The shortest wall time of `repeat` runs of `f` (at least one), in seconds: the least
/// disturbed run is the best estimate of what the code itself costs.
pub fn best_of<F: FnMut()>(repeat: usize, mut f: F) -> f64 {
    (0..repeat.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Peak resident memory of this process, in MB (Linux `VmHWM`); NaN where it cannot be read.
pub fn peak_rss_mb() -> f64 {
    poc_runtime::plan::peak_rss_bytes().map_or(f64::NAN, |b| b as f64 / (1024.0 * 1024.0))
}

/// A backend's error as the user sees it: a bad device or the JIT refusing a token-level
/// program is their choice, anything else is poc's bug.
fn backend_error(e: BackendError) -> Error {
    match e {
        BackendError::Device(e) => Error::User(format!("poc: {e}")),
        e @ (BackendError::TokenLevelJit | BackendError::BatchLevelJit) => {
            Error::User(format!("poc: {e}\n"))
        }
        e => Error::Internal(e.to_string()),
    }
}

/// What `poc bench eval` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalOptions {
    /// Random rows per evaluation (at least 1).
    pub rows: usize,
    /// Repetitions of each measurement (the best is reported).
    pub repeat: usize,
}

/// The hand-written loop's label in [`EvalRow::lowering`].
pub const HAND_WRITTEN: &str = "hand-written Rust loop (baseline)";

/// One row of `poc bench eval`'s table.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalRow {
    /// The shipped objective evaluated.
    pub objective: &'static str,
    /// How it was run ([`HAND_WRITTEN`], or a backend's label).
    pub lowering: &'static str,
    /// Rows of loss + gradient per second.
    pub rows_per_sec: f64,
    /// `rows_per_sec` over the hand-written DPO loop's (1 for the loop itself).
    pub vs_hand_written: f64,
    /// `rows_per_sec` over the interpreter's on the same objective; `None` for the
    /// hand-written loop, which has no interpreter row of its own.
    pub vs_interpreter: Option<f64>,
}

/// Throughput of loss + gradient per row on CPU: the hand-written DPO loop first (the
/// baseline), then `dpo` and `mallows_phi` on the interpreter (f64), the Cranelift JIT and
/// burn (libtorch CPU, f64), each prepared once outside the timing.
pub fn eval(opts: &EvalOptions) -> Result<Vec<EvalRow>> {
    let EvalOptions { rows, repeat } = *opts;
    if rows == 0 {
        return Err(Error::User("poc: --rows must be at least 1".into()));
    }
    let dpo = library::compiled("dpo")?;
    let names = &dpo.program.input_names;
    let cols = random_columns(names, rows, 1);
    let find = |n: &str| {
        names
            .iter()
            .position(|x| x == n)
            .ok_or_else(|| Error::Internal(format!("dpo lacks input {n}")))
    };
    let ordered: [Vec<f64>; 4] = [
        cols[find("policy_chosen_logps")?].clone(),
        cols[find("policy_rejected_logps")?].clone(),
        cols[find("ref_chosen_logps")?].clone(),
        cols[find("ref_rejected_logps")?].clone(),
    ];
    let mut out: [Vec<f64>; 3] = Default::default();
    let t_hand = best_of(repeat, || hand_written_dpo(0.1, &ordered, &mut out));
    let hand_rate = rows as f64 / t_hand;
    let mut table = vec![EvalRow {
        objective: "dpo",
        lowering: HAND_WRITTEN,
        rows_per_sec: hand_rate,
        vs_hand_written: 1.0,
        vs_interpreter: None,
    }];
    for name in ["dpo", "mallows_phi"] {
        let c = library::compiled(name)?;
        let params = c.objective.default_params();
        let cols = random_columns(&c.program.input_names, rows, 2);
        // Loss and gradients only (no metrics), parameters bound: what a training step needs,
        // in the form the JIT compiles; the interpreter and burn run the program as compiled.
        let native = c.native_program(Some(&params), false);
        let mut interp_rate = f64::NAN;
        for (backend, label) in [
            (Backend::Interp, "interpreter (f64)"),
            (Backend::Jit, "Cranelift JIT"),
            (Backend::Burn, "burn libtorch CPU (f64)"),
        ] {
            let program = if backend == Backend::Jit {
                &native
            } else {
                &c.program
            };
            // Prepared once, outside the timing: the JIT kernel is reused across batches.
            let evaluator =
                Evaluator::new(program, backend, Precision::F64, "cpu").map_err(backend_error)?;
            let mut result = Ok(());
            let secs = best_of(repeat, || {
                result = evaluator
                    .run(&params, &cols)
                    .map(|out| drop(std::hint::black_box(out)));
            });
            result.map_err(backend_error)?;
            let rate = rows as f64 / secs;
            if backend == Backend::Interp {
                interp_rate = rate;
            }
            table.push(EvalRow {
                objective: name,
                lowering: label,
                rows_per_sec: rate,
                vs_hand_written: rate / hand_rate,
                vs_interpreter: Some(rate / interp_rate),
            });
        }
    }
    Ok(table)
}

/// The model and batch of `poc bench train`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainShape {
    /// Model width (a multiple of 64).
    pub hidden: usize,
    /// Decoder blocks.
    pub layers: usize,
    /// Preference pairs per step (2x sequences; at least 1).
    pub pairs: usize,
    /// Tokens per sequence (more than [`PROMPT_TOKENS`]).
    pub seq: usize,
    /// Timed steps, after [`WARMUP_STEPS`] warm-up steps (at least 1).
    pub steps: usize,
    /// A preset's shape instead of `hidden` × `layers` (e.g. `llama3.2-1b`, vocabulary 128,256),
    /// random weights.
    pub preset: Option<&'static str>,
    /// LoRA of this rank on every linear layer (the reference is the base, adapters off).
    pub lora: Option<usize>,
    /// bf16 compute, the frozen base stored in bf16 (PyTorch: a bf16 model).
    pub bf16: bool,
    /// burn's balanced gradient checkpointing (poc only; the baseline keeps its activations).
    pub checkpointing: bool,
}

/// Untimed steps before the timed ones (libtorch's first steps allocate and tune).
pub const WARMUP_STEPS: usize = 2;
/// Prompt tokens of every sequence (the completion is the rest).
pub const PROMPT_TOKENS: usize = 16;

impl TrainShape {
    /// Attention heads: one per 32 dimensions.
    pub fn heads(&self) -> usize {
        self.hidden / 32
    }

    /// Key/value heads (grouped-query attention, half the heads).
    pub fn kv_heads(&self) -> usize {
        (self.heads() / 2).max(1)
    }

    /// MLP width: Llama's 11/4 ratio, rounded up to a multiple of 32.
    pub fn intermediate(&self) -> usize {
        (self.hidden * 11 / 4).div_ceil(32) * 32
    }

    /// The model: the preset's, or the `tiny` preset scaled to `hidden` × `layers`.
    pub fn config(&self) -> Result<poc_runtime::model::LlamaConfig> {
        use poc_runtime::model::LlamaConfig;
        if let Some(name) = self.preset {
            return LlamaConfig::preset(name).ok_or_else(|| {
                Error::User(format!(
                    "poc: bench train --preset {name}: no such preset (presets: {})",
                    LlamaConfig::PRESETS.join(", ")
                ))
            });
        }
        let mut config =
            LlamaConfig::preset("tiny").ok_or_else(|| Error::Internal("no tiny preset".into()))?;
        config.hidden_size = self.hidden;
        config.num_hidden_layers = self.layers;
        config.num_attention_heads = self.heads();
        config.num_key_value_heads = Some(self.kv_heads());
        config.intermediate_size = self.intermediate();
        Ok(config)
    }
}

/// What `poc bench train` measures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainOptions {
    /// The model and batch.
    pub shape: TrainShape,
    /// Python with torch + transformers for the baseline; `None`: the one
    /// [`poc_runtime::python::interpreter`] names.
    pub python: Option<PathBuf>,
}

/// One implementation's measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// Median tokens per second over the timed steps.
    pub tokens_per_sec: f64,
    /// Peak resident memory of the process that trained, in MB (NaN where unknown).
    pub peak_rss_mb: f64,
}

/// The PyTorch baseline's result.
#[derive(Debug, Clone, PartialEq)]
pub enum Baseline {
    /// It ran.
    Ran {
        /// torch's version, as the script reported it (`?` when it did not).
        torch: String,
        /// Its measurement.
        measured: Measured,
    },
    /// It could not run (no Python, no torch, the script failed).
    Unavailable {
        /// The Python tried.
        python: PathBuf,
        /// The script it was given.
        script: PathBuf,
        /// The last line it printed on stderr, or why it did not start.
        why: String,
    },
}

/// `poc bench train`'s results.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainReport {
    /// The shape measured.
    pub shape: TrainShape,
    /// Parameters of the model.
    pub params: usize,
    /// poc's DPO steps (burn + libtorch, symbolic gradient).
    pub poc: Measured,
    /// PyTorch's.
    pub baseline: Baseline,
}

impl TrainReport {
    /// poc's tokens/s over the baseline's, when the baseline ran.
    pub fn ratio(&self) -> Option<f64> {
        match &self.baseline {
            Baseline::Ran { measured, .. } => {
                Some(self.poc.tokens_per_sec / measured.tokens_per_sec)
            }
            Baseline::Unavailable { .. } => None,
        }
    }
}

/// The PyTorch baseline script (`bench/dpo_step.py` at the workspace root).
pub fn baseline_script() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    // This crate lives in the workspace root's `pipelines/`; the script beside it.
    crate_dir
        .parent()
        .unwrap_or(crate_dir)
        .join("bench/dpo_step.py")
}

/// Checks `shape` as `poc bench train` takes it.
fn check_shape(shape: &TrainShape) -> Result<()> {
    if shape.seq <= PROMPT_TOKENS
        || shape.pairs == 0
        || shape.steps == 0
        || !shape.hidden.is_multiple_of(64)
        || shape.lora == Some(0)
    {
        return Err(Error::User("poc: bench train needs --seq > 16, --pairs and --steps >= 1, --hidden a multiple of 64, --lora >= 1".into()));
    }
    Ok(())
}

/// The policy and reference of `shape` on the CPU, set up as `poc run` sets them up: random
/// weights, LoRA on every linear layer with the base as the reference (stored in bf16 from the
/// start under bf16), or a full fine-tune against a frozen copy.
pub(crate) fn bench_model(
    shape: &TrainShape,
) -> Result<(poc_runtime::model::Llama, poc_runtime::train::Reference)> {
    use poc_runtime::model::{Compute, Llama, LoraConfig, Target};
    use poc_runtime::train::Reference;
    check_shape(shape)?;
    let config = shape.config()?;
    let device = poc_runtime::device::DeviceSpec::Cpu.device();
    let frozen = (shape.lora.is_some() && shape.bf16).then_some(burn::tensor::DType::BF16);
    let train = poc_runtime::device::training(&device, shape.checkpointing);
    let mut policy = Llama::random_stored(&config, 0, &train, frozen);
    policy.compute = if shape.bf16 {
        Compute::Bf16
    } else {
        Compute::F32
    };
    Ok(match shape.lora {
        Some(rank) => {
            let lora = LoraConfig {
                rank,
                alpha: 2.0 * rank as f64,
                targets: Target::ALL.to_vec(),
            };
            (policy.with_lora(lora, 0), Reference::AdaptersOff)
        }
        None => {
            let reference = Reference::starting(&policy, true, false);
            (policy, reference)
        }
    })
}

/// `shape.pairs` pairs of random token sequences of `shape.seq` tokens (the first
/// [`PROMPT_TOKENS`] the prompt), seeded.
fn random_pairs(shape: &TrainShape, vocab: usize) -> Vec<poc_runtime::data::Pair> {
    use poc_runtime::data::{Pair, Tokenized};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut random_seq = || Tokenized {
        ids: (0..shape.seq)
            .map(|_| rng.random_range(0..vocab as u32))
            .collect(),
        completion_start: PROMPT_TOKENS,
        earlier: Vec::new(),
    };
    (0..shape.pairs)
        .map(|i| Pair {
            line: i + 1,
            chosen: random_seq(),
            rejected: random_seq(),
            columns: Default::default(),
            demonstration: false,
        })
        .collect()
}

/// `steps` DPO steps of [`bench_model`] on [`random_pairs`] through the training core; the
/// steps' logs (nothing of the run is kept).
pub(crate) fn dpo_steps(
    shape: &TrainShape,
    steps: usize,
) -> Result<Vec<poc_runtime::train::StepLog>> {
    let (policy, reference) = bench_model(shape)?;
    let pairs = random_pairs(shape, policy.config.vocab_size);
    let dpo = library::compiled("dpo")?;
    let out = std::env::temp_dir().join(format!("poc-bench-train-{}", std::process::id()));
    let train_opts = poc_runtime::train::TrainOptions {
        batch_size: shape.pairs,
        grad_accum: 1,
        max_steps: Some(steps),
        epochs: 1,
        lr: 1e-4,
        warmup_ratio: 0.0,
        schedule: poc_runtime::train::Schedule::Constant,
        weight_decay: 0.0,
        max_grad_norm: 1.0,
        seed: 0,
        save_every: usize::MAX,
        save_total_limit: None,
        save_dtype: None,
        params: dpo.objective.default_params(),
        out: out.clone(),
        base_model: "bench".into(),
        settings: Default::default(),
        peak_tflops: None,
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    let run = poc_runtime::train::PairRun {
        compiled: &dpo,
        policy,
        reference,
        tok: poc_runtime::data::Tok::tiny(),
        pairs,
        eval: None,
        opts: train_opts,
        device: poc_runtime::device::DeviceSpec::Cpu.device(),
        resume: None,
        parallel: None,
    };
    let logs = poc_runtime::train::train_pairs(run, &stop, |_, _| {})
        .map_err(|e| Error::Internal(e.to_string()));
    let _ = std::fs::remove_dir_all(&out);
    logs
}

/// DPO training steps of a random Llama of `opts.shape` on random token pairs on CPU (f32, or
/// bf16 with a bf16 base) through [`poc_runtime::train::train_pairs`], full fine-tune or LoRA,
/// then the same model, data and batch in PyTorch eager mode with SDPA ([`baseline_script`];
/// transformers + PEFT under LoRA) when its Python can run it.
pub fn train(opts: &TrainOptions) -> Result<TrainReport> {
    let shape = opts.shape;
    check_shape(&shape)?;
    let config = shape.config()?;
    let logs = dpo_steps(&shape, WARMUP_STEPS + shape.steps)?;
    let mut rates: Vec<f64> = logs
        .get(WARMUP_STEPS..)
        .unwrap_or_default()
        .iter()
        .map(|l| l.tokens_per_sec)
        .collect();
    if rates.is_empty() {
        return Err(Error::Internal(format!(
            "bench train: {} steps logged, {} asked for",
            logs.len(),
            WARMUP_STEPS + shape.steps
        )));
    }
    rates.sort_by(f64::total_cmp);
    let poc = Measured {
        tokens_per_sec: rates[rates.len() / 2],
        // Read before Python runs: the baseline is a child process with its own RSS.
        peak_rss_mb: peak_rss_mb(),
    };
    let baseline = pytorch_baseline(
        &shape,
        &config,
        opts.python
            .clone()
            .unwrap_or_else(poc_runtime::python::interpreter),
    );
    Ok(TrainReport {
        shape,
        params: config.num_params(),
        poc,
        baseline,
    })
}

/// Runs [`baseline_script`] with `python` on `shape`; its stdout is one JSON object
/// (`tokens_per_sec`, `peak_rss_mb`, `torch`).
fn pytorch_baseline(
    shape: &TrainShape,
    config: &poc_runtime::model::LlamaConfig,
    python: PathBuf,
) -> Baseline {
    let script = baseline_script();
    let args: [(&str, usize); 14] = [
        ("--hidden", config.hidden_size),
        ("--layers", config.num_hidden_layers),
        ("--heads", config.num_attention_heads),
        ("--kv-heads", config.kv_heads()),
        ("--inter", config.intermediate_size),
        ("--vocab", config.vocab_size),
        ("--tied", usize::from(config.tie_word_embeddings)),
        ("--pairs", shape.pairs),
        ("--seq", shape.seq),
        ("--steps", shape.steps),
        ("--warmup", WARMUP_STEPS),
        ("--prompt", PROMPT_TOKENS),
        ("--lora", shape.lora.unwrap_or(0)),
        ("--bf16", usize::from(shape.bf16)),
    ];
    let mut command = std::process::Command::new(&python);
    command.arg(&script);
    for (flag, value) in args {
        command.args([flag.to_string(), value.to_string()]);
    }
    // A preset's own config.json, so the baseline builds the same family (Qwen, Gemma, ...).
    let config_file = match shape.preset {
        Some(_) => {
            let file = tempfile::Builder::new()
                .prefix("poc-bench-config")
                .suffix(".json")
                .tempfile();
            match file.and_then(|f| {
                serde_json::to_writer(f.as_file(), config)?;
                Ok(f)
            }) {
                Ok(f) => {
                    command.arg("--config").arg(f.path());
                    Some(f)
                }
                Err(e) => {
                    return Baseline::Unavailable {
                        python,
                        script,
                        why: format!("writing the preset's config for the baseline: {e}"),
                    };
                }
            }
        }
        None => None,
    };
    let output = command.output();
    drop(config_file);
    match output {
        Ok(o) if o.status.success() => {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
            Baseline::Ran {
                torch: v["torch"].as_str().unwrap_or("?").to_string(),
                measured: Measured {
                    tokens_per_sec: v["tokens_per_sec"].as_f64().unwrap_or(f64::NAN),
                    peak_rss_mb: v["peak_rss_mb"].as_f64().unwrap_or(f64::NAN),
                },
            }
        }
        other => {
            let why = match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
                    .to_string(),
                Err(e) => e.to_string(),
            };
            Baseline::Unavailable {
                python,
                script,
                why,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use poc_compiler::OutputKind;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn random_columns_are_deterministic_per_seed_and_in_range() {
        let names = names(&[
            "chosen_len",
            "ref_chosen_entropy",
            "vocab_size",
            "policy_chosen_logps",
            "margin",
        ]);
        let a = random_columns(&names, 500, 7);
        assert_eq!(a, random_columns(&names, 500, 7));
        assert_ne!(a, random_columns(&names, 500, 8));
        assert_eq!(a.len(), names.len());
        assert!(a.iter().all(|c| c.len() == 500));
        let within = |c: &[f64], lo: f64, hi: f64| c.iter().all(|x| (lo..hi).contains(x));
        assert!(within(&a[0], 20.0, 200.0) && a[0].iter().all(|x| x.fract() == 0.0));
        assert!(within(&a[1], 0.5, 6.0));
        assert!(a[2].iter().all(|&x| x == 128_256.0));
        assert!(within(&a[3], -300.0, -20.0));
        assert!(within(&a[4], -3.0, 3.0));
    }

    #[test]
    fn hand_written_dpo_equals_the_interpreter() {
        let c = library::compiled("dpo").unwrap();
        let params = c.objective.default_params();
        let names = &c.program.input_names;
        // Margins of ±10 and beyond reach both branches of the stable sigmoid.
        let cols = random_columns(names, 2000, 3);
        let at = |n: &str| names.iter().position(|x| x == n).unwrap();
        let ordered = [
            "policy_chosen_logps",
            "policy_rejected_logps",
            "ref_chosen_logps",
            "ref_rejected_logps",
        ]
        .map(|n| cols[at(n)].clone());
        let beta_at = c.program.param_names.iter().position(|p| p == "beta");
        assert_eq!(params[beta_at.unwrap()], 0.1);
        let mut hand: [Vec<f64>; 3] = Default::default();
        hand_written_dpo(0.1, &ordered, &mut hand);

        let interp = Evaluator::new(&c.program, Backend::Interp, Precision::F64, "cpu")
            .unwrap()
            .run(&params, &cols)
            .unwrap();
        let output = |kind: OutputKind| {
            let i = c.program.outputs.iter().position(|o| o.kind == kind);
            &interp[i.unwrap_or_else(|| panic!("dpo has no output {kind:?}"))]
        };
        let expected = [
            output(OutputKind::Loss),
            output(OutputKind::Grad(at("policy_chosen_logps") as u32)),
            output(OutputKind::Grad(at("policy_rejected_logps") as u32)),
        ];
        for (name, (h, e)) in ["loss", "d/chosen", "d/rejected"]
            .iter()
            .zip(hand.iter().zip(expected))
        {
            assert_eq!(h.len(), e.len());
            for (row, (h, e)) in h.iter().zip(e).enumerate() {
                assert!((h - e).abs() <= 1e-12, "{name} row {row}: {h} vs {e}");
            }
        }
    }

    #[test]
    fn best_of_runs_repeat_times_and_at_least_once() {
        let mut calls = 0;
        let secs = best_of(0, || calls += 1);
        assert_eq!(calls, 1);
        assert!(secs.is_finite() && secs >= 0.0);
        let mut calls = 0;
        let secs = best_of(3, || calls += 1);
        assert_eq!(calls, 3);
        assert!(secs.is_finite() && secs >= 0.0);
    }

    #[test]
    fn bad_shapes_and_zero_rows_are_user_errors() {
        assert!(matches!(
            eval(&EvalOptions { rows: 0, repeat: 1 }),
            Err(Error::User(_))
        ));
        let shape = TrainShape {
            hidden: 64,
            layers: 1,
            pairs: 1,
            seq: PROMPT_TOKENS,
            steps: 1,
            preset: None,
            lora: None,
            bf16: false,
            checkpointing: false,
        };
        let opts = TrainOptions {
            shape,
            python: None,
        };
        assert!(matches!(train(&opts), Err(Error::User(_))));
        let odd = TrainOptions {
            shape: TrainShape {
                hidden: 96,
                seq: 24,
                ..shape
            },
            python: None,
        };
        assert!(matches!(train(&odd), Err(Error::User(_))));
        let unknown = TrainOptions {
            shape: TrainShape {
                preset: Some("llama9"),
                seq: 24,
                ..shape
            },
            python: None,
        };
        assert!(matches!(train(&unknown), Err(Error::User(_))));
    }

    #[test]
    fn shape_derives_llama_proportions() {
        let s = TrainShape {
            hidden: 256,
            layers: 4,
            pairs: 8,
            seq: 128,
            steps: 8,
            preset: None,
            lora: None,
            bf16: false,
            checkpointing: false,
        };
        assert_eq!((s.heads(), s.kv_heads(), s.intermediate()), (8, 4, 704));
        let s = TrainShape { hidden: 64, ..s };
        assert_eq!((s.heads(), s.kv_heads(), s.intermediate()), (2, 1, 192));
    }
}

/// What `poc bench dist` measures: DPO steps of the embedded tiny model (3M parameters: 12 MB
/// of gradients to all-reduce per step against little compute, a shape where communication
/// matters) in one process and in `processes` processes, each with one CPU thread and
/// `batch_per_process` pairs (weak scaling: the global batch grows with the processes).
#[derive(Debug, Clone)]
pub struct DistOptions {
    /// Process counts to measure (1 first: the baseline).
    pub processes: Vec<usize>,
    /// Pairs per process per step.
    pub batch_per_process: usize,
    /// Timed steps (after 2 warm-up steps).
    pub steps: usize,
    /// Where the runs go.
    pub out: PathBuf,
}

/// One row of `poc bench dist`.
#[derive(Debug, Clone)]
pub struct DistRow {
    /// Processes.
    pub processes: usize,
    /// Global batch (pairs per step).
    pub batch: usize,
    /// Median tokens/s of the whole job over the timed steps.
    pub tokens_per_sec: f64,
    /// tokens/s ÷ (processes × the one-process tokens/s).
    pub efficiency: f64,
    /// Median share of step time spent in the gradient all-reduce (rank 0's).
    pub allreduce_share: f64,
}

/// Runs the DPO steps of [`DistOptions`] through `runner` (one thread per process) and reads
/// each run's metrics.
pub fn dist(opts: &DistOptions, runner: &crate::stage::Runner) -> Result<Vec<DistRow>> {
    use crate::stage::{Output, RunStage, Stage};
    let mut rows: Vec<DistRow> = Vec::new();
    for &n in &opts.processes {
        let out = opts.out.join(format!("nproc{n}"));
        let _ = std::fs::remove_dir_all(&out);
        let batch = opts.batch_per_process * n;
        let stage = Stage::Run(RunStage {
            batch_size: batch,
            no_progress: true,
            nproc: (n > 1).then_some(n),
            ..RunStage::new("dpo", out.clone(), WARMUP_STEPS + opts.steps)
        });
        runner
            .run(&stage, Output::OnFailure)
            .map_err(|e| Error::User(format!("poc bench dist: {n} process(es): {e}\n")))?;
        let text = std::fs::read_to_string(out.join("metrics.jsonl"))
            .map_err(|e| Error::Internal(format!("{}: {e}", out.display())))?;
        let logs: Vec<serde_json::Value> = text
            .lines()
            .skip(WARMUP_STEPS)
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
        };
        let tps = median(
            logs.iter()
                .filter_map(|l| l["tokens_per_sec"].as_f64())
                .collect(),
        );
        let share = median(
            logs.iter()
                .filter_map(|l| {
                    let comm = l["metrics"]["dist/allreduce_seconds"].as_f64()?;
                    let step = l["metrics"]["dist/step_seconds"].as_f64()?;
                    Some(comm / step)
                })
                .collect(),
        );
        let base = rows.first().map_or(tps, |r| r.tokens_per_sec);
        rows.push(DistRow {
            processes: n,
            batch,
            tokens_per_sec: tps,
            efficiency: tps / (n as f64 * base),
            allreduce_share: if n > 1 { share } else { 0.0 },
        });
    }
    Ok(rows)
}
