//! The same computations on the test device and on the CPU. The test device is
//! `POC_TEST_DEVICE` (`cpu` by default; `scripts/gpu-check.sh` sets `cuda`): the transformers
//! fixture's completion log-probs and entropies on it match transformers' figures, and one DPO
//! step on it (full fine-tune in f32, and LoRA under bf16 compute) gives the CPU's loss and
//! weights. On the CPU alone these check the fixture and that two runs agree.

use poc_compiler::Compiled;
use poc_runtime::data::{Pair, Tok, parse_pairs, synthetic::synthetic_jsonl};
use poc_runtime::device::{DeviceSpec, training};
use poc_runtime::lower::to_f64;
use poc_runtime::model::{Compute, Llama, LoraConfig, Target, load};
use poc_runtime::observe::{self, Rows, Want};
use poc_runtime::train::{PairRun, Reference, Schedule, StepLog, TrainOptions, train_pairs};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

mod common;

fn test_device() -> DeviceSpec {
    let name = std::env::var("POC_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    DeviceSpec::usable(&name).unwrap_or_else(|e| panic!("POC_TEST_DEVICE: {e}"))
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama")
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

fn dpo() -> Compiled {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../objectives/dpo.po");
    poc_compiler::compile(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn pairs(tok: &Tok) -> Vec<Pair> {
    parse_pairs(&synthetic_jsonl(8, 5), "synthetic", tok, 64, false)
        .unwrap()
        .0
}

/// One DPO step of the small model on `spec`'s device: the step's log and the saved checkpoint.
fn one_step(spec: DeviceSpec, compute: Compute, lora: bool, out: &Path) -> StepLog {
    let c = dpo();
    let device = spec.device();
    let mut start = Llama::random(&common::small_config(2), 1, &training(&device, false));
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
    let tok = Tok::tiny();
    let opts = TrainOptions {
        batch_size: 4,
        grad_accum: 1,
        max_steps: Some(1),
        epochs: 1,
        lr: 1e-2,
        warmup_ratio: 0.0,
        schedule: Schedule::Constant,
        weight_decay: 0.0,
        max_grad_norm: 1.0,
        seed: 3,
        save_every: 0,
        save_total_limit: None,
        save_dtype: None,
        params: c.objective.default_params(),
        out: out.to_path_buf(),
        base_model: "tiny".into(),
    };
    let run = PairRun {
        compiled: &c,
        policy,
        reference,
        pairs: pairs(&tok),
        tok,
        eval: None,
        opts,
        device,
        resume: None,
        parallel: None,
    };
    let mut logs = train_pairs(run, &AtomicBool::new(false), |_, _| {}).unwrap();
    assert_eq!(logs.len(), 1);
    logs.remove(0)
}

/// The saved (merged) weights of a checkpoint, every tensor flattened, on the CPU.
fn weights(dir: &Path) -> Vec<f64> {
    let m = load::load(&dir.join("checkpoint-1"), &DeviceSpec::Cpu.device()).unwrap();
    let mut all = to_f64(m.embed.val().reshape([-1]));
    for l in &m.layers {
        for w in [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down] {
            all.extend(to_f64(w.val().reshape([-1])));
        }
    }
    all
}

#[test]
fn one_dpo_step_on_the_test_device_matches_the_cpu() {
    for (compute, lora, tol) in [(Compute::F32, false, 1e-4), (Compute::Bf16, true, 3e-2)] {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let here = one_step(test_device(), compute, lora, a.path());
        let cpu = one_step(DeviceSpec::Cpu, compute, lora, b.path());
        let what = format!("{compute:?}, lora {lora}, {:?}", test_device());
        assert!(here.loss.is_finite(), "{what}: loss {}", here.loss);
        assert!(
            (here.loss - cpu.loss).abs() <= tol * cpu.loss.abs().max(1.0),
            "{what}: loss {} vs the CPU's {}",
            here.loss,
            cpu.loss
        );
        assert!(
            (here.grad_norm - cpu.grad_norm).abs() <= tol * cpu.grad_norm.max(1.0),
            "{what}: gradient norm {} vs the CPU's {}",
            here.grad_norm,
            cpu.grad_norm
        );
        let (wa, wb) = (weights(a.path()), weights(b.path()));
        let worst = wa
            .iter()
            .zip(&wb)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        // One AdamW step moves each weight by about lr = 1e-2.
        assert!(
            worst <= 10.0 * tol * 1e-2 + 1e-6,
            "{what}: weights differ by {worst}"
        );
    }
}
