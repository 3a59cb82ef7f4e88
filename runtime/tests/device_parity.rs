//! The same computations on the test device and on the CPU. The test device is
//! `POC_TEST_DEVICE` (`cpu` by default; `scripts/gpu-check.sh` sets `cuda`): the transformers
//! fixture's completion log-probs and entropies on it match transformers' figures, and one DPO
//! step on it (full fine-tune in f32, and LoRA under bf16 compute) gives the CPU's loss,
//! gradient norm and gradients. On the CPU alone these check the fixture, that two runs agree,
//! and that the test's own step is the training loop's.
//!
//! What is compared is what a kernel computes: the loss, the gradient norm and every trained
//! parameter's gradient, each within a tolerance derived from the compute dtype's machine
//! epsilon ([`tolerance`]). The weights after the AdamW step are not compared closely: at
//! step 1 AdamW moves each weight by `lr·g/(|g| + ε)`, about `lr·sign(g)`, so a gradient near
//! zero whose sign differs between two kernels (as a fresh LoRA B's small entries may) moves
//! that weight by `lr` one way on one device and the other way on the other. They are only
//! held to what any step must satisfy: finite, and within `2·lr` of the CPU's.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{DType, Tensor};
use poc_compiler::Compiled;
use poc_runtime::data::{Pair, Tok, batches, parse_pairs, synthetic::synthetic_jsonl};
use poc_runtime::device::{DeviceSpec, training};
use poc_runtime::lower::{run_columns, to_f64};
use poc_runtime::model::{Compute, Llama, LoraConfig, Target, load};
use poc_runtime::observe::{self, Rows, Want, needs};
use poc_runtime::train::outputs::Outputs;
use poc_runtime::train::{PairRun, Reference, Schedule, StepLog, TrainOptions, train_pairs};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

mod common;

fn test_device() -> DeviceSpec {
    let name = std::env::var("POC_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    DeviceSpec::usable(&name).unwrap_or_else(|e| panic!("POC_TEST_DEVICE: {e}"))
}

/// The runtime crate's directory: `CARGO_MANIFEST_DIR` as cargo sets it when it runs the tests,
/// else where they were built (a test binary run by itself on another machine, as
/// `scripts/gpu-check.sh` does, is told the checkout's place this way).
fn crate_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

fn fixture() -> PathBuf {
    crate_dir().join("tests/fixtures/tiny-llama")
}

#[test]
fn fixture_logps_and_entropies_match_transformers_on_the_test_device() {
    let device = test_device().device();
    let model = load::load(&fixture(), &device).unwrap();
    let e: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json")).unwrap())
            .unwrap();
    let tokens: Vec<Vec<u32>> = serde_json::from_value(e["tokens"].clone()).unwrap();
    let lengths: Vec<usize> = serde_json::from_value(e["lengths"].clone()).unwrap();
    let starts: Vec<usize> = serde_json::from_value(e["completion_start"].clone()).unwrap();
    let t = tokens[0].len();
    let mask: Vec<Vec<bool>> = lengths
        .iter()
        .map(|&n| (0..t).map(|j| j < n).collect())
        .collect();
    let completion: Vec<Vec<bool>> = lengths
        .iter()
        .zip(&starts)
        .map(|(&n, &s)| (0..t).map(|j| j >= s && j < n).collect())
        .collect();
    let rows = Rows {
        tokens: &tokens,
        mask: &mask,
        completion: &completion,
    };
    let want = Want {
        entropy: true,
        ..Want::LOGPS
    };
    let stats = observe::stats(&model, rows, want, &device);
    for (what, got, key, tol) in [
        (
            "log-prob",
            to_f64(stats.logps.unwrap()),
            "completion_logps",
            5e-4,
        ),
        (
            "entropy",
            to_f64(stats.entropy.unwrap()),
            "mean_entropy",
            5e-5,
        ),
    ] {
        for (b, g) in got.iter().enumerate() {
            let w = e[key][b].as_f64().unwrap();
            assert!(
                (g - w).abs() < tol,
                "{what}, row {b} on {:?}: poc {g} vs transformers {w}",
                test_device()
            );
        }
    }
}

/// The machine epsilon (the spacing of floats just above 1) of what a step computes in: f32's
/// 2⁻²³, or under bf16 compute bf16's 2⁻⁷ (its matrix products and activations are rounded to
/// 8 significant bits; the f32 parts, norms, softmax statistics and log-probs, add errors far
/// below that).
fn epsilon(compute: Compute) -> f64 {
    match compute {
        Compute::F32 => f64::from(f32::EPSILON),
        Compute::Bf16 => 2f64.powi(-7),
    }
}

/// How far the test device's loss, gradient norm and each gradient may lie from the CPU's,
/// relative to the CPU's: a number of the compute dtype's epsilons.
///
/// f32: 2¹⁰ ε ≈ 1.2e-4. The two devices round the same operations to the same precision but
/// sum in other orders (blocked matrix products, tree reductions, fused attention with an
/// online softmax); a reduction over n terms may then differ by about √n·ε relatively (n here
/// at most the vocabulary's 264), and the step chains a few dozen of them through two layers
/// and their backward: tens of ε, which this covers twentyfold. (A CUDA build computing f32
/// products in TF32, 2⁻¹⁰ relative, would not pass, rightly: that is not an f32 step.)
///
/// bf16: 2³ ε ≈ 6.3e-2. Both devices round every product to bf16, but where their f32
/// accumulations differ in the last bits a product rounds to the neighbouring bf16 value on one
/// and not on the other: differences of one bf16 ulp in a fraction of the activations, each
/// propagating through the rest of the step. Two bf16 computations lie within the sum of
/// their distances from the exact step; `bf16_tolerance_covers_two_roundings` measures that
/// distance (bf16 against f32 compute on the CPU: at most 1.1e-2, 1.4 ε, when written) and
/// checks it stays under half of this, so that two of them fit.
///
/// A wrong kernel (a missing mask, a transposed or mis-strided operand, a dropped term, a
/// gradient of the wrong scale) moves the gradients by their own size, far beyond either.
fn tolerance(compute: Compute) -> f64 {
    let epsilons = match compute {
        Compute::F32 => 1024.0,
        Compute::Bf16 => 8.0,
    };
    epsilons * epsilon(compute)
}

fn dpo() -> Compiled {
    let path = crate_dir().join("../objectives/dpo.po");
    poc_compiler::compile(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn pairs(tok: &Tok) -> Vec<Pair> {
    parse_pairs(&synthetic_jsonl(8, 5), "synthetic", tok, 64, false)
        .unwrap()
        .0
}

/// Pairs per step, the run's seed (its data order) and learning rate.
const BATCH: usize = 4;
const SEED: u64 = 3;
const LR: f64 = 1e-2;

/// The small model's policy on `spec`'s autodiff device under `compute` (with rank-4 adapters
/// on every projection when `lora`), and its reference. The weights come from the host's
/// seeded generator, so every device starts from the same ones.
fn start(spec: DeviceSpec, compute: Compute, lora: bool) -> (Llama, Reference) {
    let mut start = Llama::random(
        &common::small_config(2),
        1,
        &training(&spec.device(), false),
    );
    start.compute = compute;
    let reference = Reference::starting(&start, true, lora);
    let policy = if lora {
        start.with_lora(
            LoraConfig {
                rank: 4,
                alpha: 8.0,
                targets: Target::ALL.to_vec(),
            },
            2,
        )
    } else {
        start
    };
    (policy, reference)
}

/// One DPO step of the training loop ([`train_pairs`]) on `spec`'s device: the step's log;
/// the checkpoint goes to `out`.
fn one_step(spec: DeviceSpec, compute: Compute, lora: bool, out: &Path) -> StepLog {
    let c = dpo();
    let (policy, reference) = start(spec, compute, lora);
    let tok = Tok::tiny();
    let opts = TrainOptions {
        batch_size: BATCH,
        grad_accum: 1,
        max_steps: Some(1),
        epochs: 1,
        lr: LR,
        warmup_ratio: 0.0,
        schedule: Schedule::Constant,
        weight_decay: 0.0,
        max_grad_norm: 1.0,
        seed: SEED,
        save_every: 0,
        save_total_limit: None,
        save_dtype: None,
        params: c.objective.default_params(),
        out: out.to_path_buf(),
        base_model: "tiny".into(),
        settings: Default::default(),
        peak_tflops: None,
    };
    let run = PairRun {
        compiled: &c,
        policy,
        reference,
        pairs: pairs(&tok),
        tok,
        eval: None,
        opts,
        device: spec.device(),
        resume: None,
        parallel: None,
    };
    let mut logs = train_pairs(run, &AtomicBool::new(false), |_, _| {}).unwrap();
    assert_eq!(logs.len(), 1);
    logs.remove(0)
}

/// A step's batch-mean loss and each trained parameter's gradient (before clipping), by the
/// parameter's place in the model.
struct Gradients {
    loss: f64,
    grads: Vec<(String, Vec<f64>)>,
}

impl Gradients {
    /// The global L2 norm of the gradients.
    fn norm(&self) -> f64 {
        self.grads
            .iter()
            .flat_map(|(_, g)| g)
            .map(|x| x * x)
            .sum::<f64>()
            .sqrt()
    }
}

/// The gradients of the step [`one_step`] takes, computed as the loop computes them (the
/// policy's forward over the run's first batch, the reference's, the objective's inputs, the
/// compiled program, the backward of its surrogate over the batch) and read before the
/// optimizer clips them.
fn gradients(spec: DeviceSpec, compute: Compute, lora: bool) -> Gradients {
    let c = dpo();
    let (policy, reference) = start(spec, compute, lora);
    let (ad, plain) = (policy.embed.val().device(), spec.device());
    let tok = Tok::tiny();
    let pairs = pairs(&tok);
    let need = needs(&c.objective.inputs);
    // The first batch of epoch 0 (the loop's data order is seeded by `seed + epoch`).
    let batch = batches(&pairs, BATCH, tok.pad, SEED, need.rejected).remove(0);
    let pstats = observe::stats(&policy, Rows::from(&batch), need.policy, &ad);
    let rstats = reference.pair_stats(&policy.valid(), &batch, need.reference, &plain);
    let xs = observe::observe(
        &c.objective.inputs,
        &batch,
        &pairs,
        &pstats,
        rstats.as_ref(),
        policy.config.vocab_size,
        &ad,
    )
    .unwrap();
    let params = c.objective.default_params();
    let outs = run_columns(&c.program, &params, &xs, &ad, DType::F32).unwrap();
    let outputs = Outputs::read(&c, outs, &xs);
    let b = batch.pairs.len() as f64;
    let loss = outputs.loss_sum() / b;
    let grads = GradientsParams::from_grads((outputs.surrogate() * (1.0 / b)).backward(), &policy);
    let mut reader = ReadGrads {
        grads: &grads,
        path: Vec::new(),
        out: Vec::new(),
    };
    policy.visit(&mut reader);
    Gradients {
        loss,
        grads: reader.out,
    }
}

/// Reads the gradient of every parameter that has one, named by its path in the model.
struct ReadGrads<'a> {
    grads: &'a GradientsParams,
    path: Vec<String>,
    out: Vec<(String, Vec<f64>)>,
}

impl ModuleVisitor for ReadGrads<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let name = self.path.join(".");
            self.out
                .push((name, to_f64(g.cast(DType::F32).reshape([-1]))));
        }
    }
}

/// Every float parameter's values, flattened, in visiting order.
struct ReadParams(Vec<f64>);

impl ModuleVisitor for ReadParams {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0
            .extend(to_f64(param.val().cast(DType::F32).reshape([-1])));
    }
}

/// The trained parameters of a run's `checkpoint-1` on the CPU: every weight of a full
/// fine-tune, or the adapters of a LoRA run (its merged weights follow from them).
fn trained(dir: &Path, lora: bool) -> Vec<f64> {
    let dir = dir.join("checkpoint-1");
    let cpu = DeviceSpec::Cpu.device();
    let mut read = ReadParams(Vec::new());
    if lora {
        let base = load::load(&dir, &cpu).unwrap();
        let model = load::load_adapters(&load::adapter_dir(&dir), base).unwrap();
        for layer in &model.layers {
            layer.adapters.visit(&mut read);
        }
    } else {
        load::load(&dir, &cpu).unwrap().visit(&mut read);
    }
    read.0
}

/// `‖x − y‖ / ‖y‖` (0 for two zero vectors).
fn relative_error(x: &[f64], y: &[f64]) -> f64 {
    let diff = x
        .iter()
        .zip(y)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        .sqrt();
    let size = y.iter().map(|b| b * b).sum::<f64>().sqrt();
    if diff == 0.0 { 0.0 } else { diff / size }
}

/// The problems of `here`'s gradients against `cpu`'s within `tol`: each parameter's relative
/// error, measured against the larger of its own gradient's norm and 1e-3 of the global norm
/// (a fresh LoRA A's gradient is exactly zero on both; a parameter whose gradient is a
/// thousandth of the step's is held to that scale, not to its own).
fn gradient_mismatches(here: &Gradients, cpu: &Gradients, tol: f64) -> Vec<String> {
    let mut bad = Vec::new();
    if here.grads.len() != cpu.grads.len() {
        bad.push(format!(
            "{} gradients against the CPU's {}",
            here.grads.len(),
            cpu.grads.len()
        ));
        return bad;
    }
    let floor = 1e-3 * cpu.norm();
    for ((name, g), (_, c)) in here.grads.iter().zip(&cpu.grads) {
        assert_eq!(g.len(), c.len(), "{name}: gradient sizes differ");
        if let Some(x) = g.iter().find(|x| !x.is_finite()) {
            bad.push(format!("{name}: gradient entry {x}"));
            continue;
        }
        let diff = g
            .iter()
            .zip(c)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>()
            .sqrt();
        let scale = c.iter().map(|b| b * b).sum::<f64>().sqrt().max(floor);
        if diff > tol * scale {
            bad.push(format!(
                "{name}: gradient differs by {:.3e} of its size (tolerance {tol:.1e})",
                diff / scale
            ));
        }
    }
    bad
}

#[test]
fn one_dpo_step_on_the_test_device_matches_the_cpu() {
    for (compute, lora) in [(Compute::F32, false), (Compute::Bf16, true)] {
        let tol = tolerance(compute);
        let what = format!("{compute:?}, lora {lora}, {:?}", test_device());
        let mut bad = Vec::new();

        // The gradients themselves, and the loss they come from.
        let here = gradients(test_device(), compute, lora);
        let cpu = gradients(DeviceSpec::Cpu, compute, lora);
        assert!(cpu.norm() > 0.0, "{what}: the CPU's gradient is zero");
        if !(here.loss.is_finite() && (here.loss - cpu.loss).abs() <= tol * cpu.loss.abs().max(1.0))
        {
            bad.push(format!("loss {} vs the CPU's {}", here.loss, cpu.loss));
        }
        bad.extend(gradient_mismatches(&here, &cpu, tol));

        // The training loop's step: its loss and gradient norm are the ones above (on either
        // device), the CPU's as well as the test device's.
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let step = one_step(test_device(), compute, lora, a.path());
        let cpu_step = one_step(DeviceSpec::Cpu, compute, lora, b.path());
        for (name, got, want) in [
            ("the loop's loss", step.loss, cpu.loss),
            ("the loop's gradient norm", step.grad_norm, cpu.norm()),
            ("the CPU loop's loss", cpu_step.loss, cpu.loss),
            (
                "the CPU loop's gradient norm",
                cpu_step.grad_norm,
                cpu.norm(),
            ),
        ] {
            if !(got.is_finite() && (got - want).abs() <= tol * want.abs().max(1e-3)) {
                bad.push(format!("{name} {got} vs the CPU's {want}"));
            }
        }

        // The updated parameters: finite, and each within 2·lr of the CPU's (step 1 of AdamW
        // moves a parameter by less than lr).
        let (pa, pb) = (trained(a.path(), lora), trained(b.path(), lora));
        assert_eq!(pa.len(), pb.len(), "{what}: trained parameter counts");
        let worst = pa
            .iter()
            .zip(&pb)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        if let Some(x) = pa.iter().find(|x| !x.is_finite()) {
            bad.push(format!("after the AdamW step, a trained parameter is {x}"));
        } else if worst > 2.0 * LR * (1.0 + 1e-3) {
            bad.push(format!(
                "after the AdamW step, a trained parameter differs from the CPU's by {worst} (at most 2·lr = {} possible)",
                2.0 * LR
            ));
        }
        assert!(
            bad.is_empty(),
            "{what}: the test device differs from the CPU:\n  {}",
            bad.join("\n  ")
        );
    }
}

/// The bf16 tolerance covers two independent roundings: bf16 compute against f32 compute on
/// the CPU (each bf16 kernel's distance from the exact step) stays under half of it, for the
/// loss and every gradient.
#[test]
fn bf16_tolerance_covers_two_roundings() {
    let bf16 = gradients(DeviceSpec::Cpu, Compute::Bf16, true);
    let f32 = gradients(DeviceSpec::Cpu, Compute::F32, true);
    let half = tolerance(Compute::Bf16) / 2.0;
    let bad = gradient_mismatches(&bf16, &f32, half);
    assert!(
        bad.is_empty(),
        "bf16 against f32 compute:\n  {}",
        bad.join("\n  ")
    );
    assert!(relative_error(&[bf16.loss], &[f32.loss]) <= half);
}
