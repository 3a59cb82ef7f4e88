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
        settings: Default::default(),
        peak_tflops: None,
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
        parallel: None,
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
        // The objective's metrics, bit for bit (`perf/*` are timings).
        let objective = |m: &serde_json::Map<String, serde_json::Value>| {
            m.iter()
                .filter(|(k, _)| !k.starts_with("perf/"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(objective(&a.metrics), objective(&b.metrics));
        assert!(a.metrics["perf/tflops"].as_f64().unwrap() > 0.0);
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

/// Per-token inputs of a pair objective against the sequence ones they must sum to, and the
/// collision statistic against its bounds, read back through metrics of a real run.
const PER_TOKEN_CHECK: &str = "objective per_token_check
input policy_chosen_logps
input policy_rejected_logps
input ref_chosen_logps
input ref_rejected_logps
input chosen_len
input rejected_len
input policy_chosen_token_logps
input policy_rejected_token_logps
input ref_chosen_token_logps
input ref_rejected_token_logps
input chosen_mask
input rejected_mask
input position from token.position
input cc from policy.token_collision(chosen)
input cr from policy.token_collision(rejected)
loss = -log_sigmoid(0.1 * ((policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)))
metric gap/policy_chosen = abs(masked_sum(policy_chosen_token_logps, chosen_mask) - policy_chosen_logps)
metric gap/policy_rejected = abs(masked_sum(policy_rejected_token_logps, rejected_mask) - policy_rejected_logps)
metric gap/ref_chosen = abs(masked_sum(ref_chosen_token_logps, chosen_mask) - ref_chosen_logps)
metric gap/ref_rejected = abs(masked_sum(ref_rejected_token_logps, rejected_mask) - ref_rejected_logps)
metric gap/chosen_len = abs(masked_sum(1, chosen_mask) - chosen_len)
metric gap/rejected_len = abs(masked_sum(1, rejected_mask) - rejected_len)
metric gap/positions = abs(masked_sum(position, chosen_mask) - chosen_len * (chosen_len - 1) / 2)
metric bad/collision_above_zero = masked_sum(if cc > 1e-5 then 1 else 0, chosen_mask) + masked_sum(if cr > 1e-5 then 1 else 0, rejected_mask)
metric bad/collision_below_p2 = masked_sum(if cc < 2 * policy_chosen_token_logps - 1e-4 then 1 else 0, chosen_mask)
metric collision/mean = masked_mean(cc, chosen_mask)
";

#[test]
fn per_token_pair_inputs_agree_with_the_sequence_statistics() {
    let c = poc_compiler::compile(PER_TOKEN_CHECK).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let logs = run(&c, dir.path(), 3, None);
    // The loss is DPO's, so the run is DPO's to float rounding (the two paths sum differently).
    let dpo_dir = tempfile::tempdir().unwrap();
    let dpo_logs = run(&dpo(), dpo_dir.path(), 3, None);
    for (a, b) in logs.iter().zip(&dpo_logs) {
        assert!(
            (a.loss - b.loss).abs() < 1e-5,
            "step {}: {} vs {}",
            a.step,
            a.loss,
            b.loss
        );
    }
    for log in &logs {
        let m = |k: &str| log.metrics[k].as_f64().unwrap();
        for k in [
            "gap/policy_chosen",
            "gap/policy_rejected",
            "gap/ref_chosen",
            "gap/ref_rejected",
        ] {
            assert!(m(k) < 1e-3, "step {}: {k} = {}", log.step, m(k));
        }
        for k in ["gap/chosen_len", "gap/rejected_len", "gap/positions"] {
            assert_eq!(m(k), 0.0, "step {}: {k}", log.step);
        }
        assert_eq!(m("bad/collision_above_zero"), 0.0, "log Σp² ≤ 0");
        assert_eq!(m("bad/collision_below_p2"), 0.0, "log Σp² ≥ 2 log p_t");
        // A random model over a 512-token vocabulary is near uniform: log Σp² ≈ −log 512.
        assert!(m("collision/mean") < -3.0, "{}", m("collision/mean"));
    }
}

#[test]
fn ld_dpo_with_unit_alpha_trains_as_dpo_and_aot_trains_over_the_batch() {
    let src = |name: &str| {
        let path = format!("{}/../objectives/{name}.po", env!("CARGO_MANIFEST_DIR"));
        poc_compiler::compile(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let ld = src("ld_dpo");
    let mut opts = options(tempfile::tempdir().unwrap().path(), 3);
    opts.params = ld.objective.params_with(&["ld_alpha=1".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    opts.out = dir.path().to_path_buf();
    let ld_logs = run_params(&ld, opts);
    let dpo_dir = tempfile::tempdir().unwrap();
    let dpo_logs = run(&dpo(), dpo_dir.path(), 3, None);
    for (a, b) in ld_logs.iter().zip(&dpo_logs) {
        assert!(
            (a.loss - b.loss).abs() < 1e-5,
            "step {}: {} vs {}",
            a.step,
            a.loss,
            b.loss
        );
    }
    // AOT's loss couples the examples of a batch; it trains and stays finite.
    let aot_dir = tempfile::tempdir().unwrap();
    let logs = run(&src("aot"), aot_dir.path(), 4, None);
    assert!(
        logs.iter().all(|l| l.loss.is_finite() && l.grad_norm > 0.0),
        "{logs:?}"
    );
}

/// A run with `opts` whose parameters are already set.
fn run_params(c: &Compiled, opts: TrainOptions) -> Vec<StepLog> {
    let params = opts.params.clone();
    let tok = Tok::tiny();
    let device = cpu();
    let start = Llama::random(&common::small_config(2), 1, &training(&device, false));
    let reference = Reference::starting(&start, true, false);
    let run = PairRun {
        compiled: c,
        policy: start,
        reference,
        pairs: pairs(&tok),
        tok,
        eval: None,
        opts: TrainOptions { params, ..opts },
        device,
        resume: None,
        parallel: None,
    };
    train_pairs(run, &AtomicBool::new(false), |_, _| {}).unwrap()
}
