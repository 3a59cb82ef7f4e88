//! The training core called as a library: the learning-rate schedule, a pair run of DPO on a
//! small random Llama that lowers its loss, and `--resume` semantics (a run continued from its
//! checkpoint logs the steps the uninterrupted run logged, to the bit).

use poc_compiler::Compiled;
use poc_runtime::data::{Pair, Tok, parse_pairs, synthetic::synthetic_jsonl};
use poc_runtime::device::training;
use poc_runtime::model::Llama;
use poc_runtime::train::{
    PairRun, Reference, Schedule, StepLog, TrainOptions, load_resume, lr_at, train_pairs,
};
use std::path::Path;
use std::sync::atomic::AtomicBool;

mod common;
use common::cpu;

fn options(out: &Path, steps: usize) -> TrainOptions {
    TrainOptions {
        batch_size: 4,
        grad_accum: 2,
        max_steps: Some(steps),
        epochs: 1,
        lr: 3e-3,
        warmup_ratio: 0.25,
        schedule: Schedule::Cosine,
        weight_decay: 0.0,
        max_grad_norm: 1.0,
        seed: 3,
        save_every: 2,
        save_total_limit: None,
        save_dtype: None,
        params: Vec::new(),
        out: out.to_path_buf(),
        base_model: "tiny".into(),
    }
}

#[test]
fn the_schedule_warms_up_then_decays() {
    let mut o = options(Path::new("unused"), 10);
    let lrs: Vec<f64> = (0..10).map(|s| lr_at(&o, s, 10)).collect();
    // 3 warm-up steps (0.25 × 10, rounded half up), linear up to the peak, then cosine down.
    let close = |a: f64, b: f64| (a - b).abs() < 1e-15;
    assert!(
        close(lrs[0], 1e-3) && close(lrs[1], 2e-3) && close(lrs[2], 3e-3),
        "{lrs:?}"
    );
    assert!(lrs[3..].windows(2).all(|w| w[1] < w[0]), "{lrs:?}");
    o.schedule = Schedule::Constant;
    assert_eq!(lr_at(&o, 9, 10), 3e-3);
    o.schedule = Schedule::Linear;
    assert_eq!(lr_at(&o, 3, 10), 3e-3);
}

fn dpo() -> Compiled {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../objectives/dpo.po");
    let src = std::fs::read_to_string(path).unwrap();
    poc_compiler::compile(&src).unwrap()
}

fn pairs(tok: &Tok) -> Vec<Pair> {
    let text = synthetic_jsonl(24, 5);
    parse_pairs(&text, "synthetic", tok, 64, false).unwrap().0
}

/// A DPO run of `steps` on the small model, from the start or resumed from `resume`.
fn run(c: &Compiled, out: &Path, steps: usize, resume: Option<&Path>) -> Vec<StepLog> {
    run_with(c, options(out, steps), resume)
}

/// A DPO run with `opts` on the small model, from the start or resumed from `resume`.
fn run_with(c: &Compiled, mut opts: TrainOptions, resume: Option<&Path>) -> Vec<StepLog> {
    let tok = Tok::tiny();
    let device = cpu();
    opts.params = c.objective.default_params();
    let start = Llama::random(&common::small_config(2), 1, &training(&device, false));
    let reference = Reference::starting(&start, true, false);
    let (policy, resume) = match resume {
        None => (start, None),
        Some(dir) => {
            let loaded = poc_runtime::model::load::load(dir, &training(&device, false)).unwrap();
            let (p, r) = load_resume(dir, loaded).unwrap();
            (p, Some(r))
        }
    };
    let run = PairRun {
        compiled: c,
        policy,
        reference,
        pairs: pairs(&tok),
        tok,
        eval: None,
        opts,
        device,
        resume,
    };
    train_pairs(run, &AtomicBool::new(false), |_, _| {}).unwrap()
}

#[test]
fn a_pair_run_trains_and_resumes_exactly() {
    let c = dpo();
    let whole = tempfile::tempdir().unwrap();
    let logs = run(&c, whole.path(), 6, None);
    assert_eq!(logs.len(), 6);
    assert!(
        logs.iter()
            .all(|l| l.loss.is_finite() && l.grad_norm.is_finite())
    );
    assert!(
        logs[5].loss < logs[0].loss,
        "{:?}",
        logs.iter().map(|l| l.loss).collect::<Vec<_>>()
    );
    for step in [2, 4, 6] {
        assert!(
            whole
                .path()
                .join(format!("checkpoint-{step}/trainer_state.json"))
                .exists()
        );
    }
    // Resumed at step 2 in another directory: steps 3..6 are the same, bit for bit.
    let resumed = tempfile::tempdir().unwrap();
    let more = run(
        &c,
        resumed.path(),
        6,
        Some(&whole.path().join("checkpoint-2")),
    );
    assert_eq!(more.len(), 4);
    for (a, b) in logs[2..].iter().zip(&more) {
        assert_eq!(a.step, b.step);
        assert_eq!(a.loss.to_bits(), b.loss.to_bits(), "step {}", a.step);
        assert_eq!(
            a.grad_norm.to_bits(),
            b.grad_norm.to_bits(),
            "step {}",
            a.step
        );
        assert_eq!(a.metrics, b.metrics);
    }
}

#[test]
fn save_total_limit_keeps_the_newest_checkpoints() {
    let c = dpo();
    let out = tempfile::tempdir().unwrap();
    // Something else in the run directory that is not a checkpoint survives the pruning.
    std::fs::create_dir_all(out.path().join("checkpoint-notes")).unwrap();
    let mut opts = options(out.path(), 6);
    opts.save_every = 1;
    opts.save_total_limit = Some(2);
    assert_eq!(run_with(&c, opts, None).len(), 6);
    let mut left: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoint-"))
        .collect();
    left.sort();
    assert_eq!(left, ["checkpoint-5", "checkpoint-6", "checkpoint-notes"]);
    // What is kept is a whole checkpoint that resumes.
    assert!(out.path().join("checkpoint-5/trainer_state.json").exists());
}
