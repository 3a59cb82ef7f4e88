//! The worked example (one row of inputs and each objective's loss on it, float64) on the interpreter and the JIT (burn:
//! runtime/tests/burn_lowering.rs), and the special cases the papers state: MallowsPO-θ with unit dispersion weight is DPO, MMPO with p* = 1 is
//! DPO, cDPO with ε = 0 is DPO, robust DPO with ε = 0 is DPO.

mod common;

use common::*;
use std::collections::HashMap;

/// The loss of `name` at `row` with `sets`, by interpreter and JIT (which must agree to the
/// bit).
fn loss(name: &str, row: &HashMap<&str, f64>, sets: &[&str]) -> f64 {
    let c = compiled(name);
    let (params, cols) = worked_example_inputs(&c, row, sets);
    let interp = poc_compiler::interp::eval_batch(&c.program, &params, &cols)[0][0];
    let kernel =
        poc_compiler::jit::Kernel::compile(&c.native_program(Some(&params), true)).unwrap();
    let refs: Vec<&[f64]> = cols.iter().map(|c| c.as_slice()).collect();
    let mut out = vec![Vec::new(); c.program.outputs.len()];
    kernel.run(&params, &refs, &mut out).unwrap();
    assert!(
        interp.to_bits() == out[0][0].to_bits(),
        "{name}: JIT {} differs from interpreter {interp}",
        out[0][0]
    );
    interp
}

#[test]
fn worked_example_of_objectives_md() {
    let row = worked_example_row();
    let cases: [(&str, &[&str], f64); 7] = [
        ("dpo", &["beta=0.1"], 0.5981388693815918),
        (
            "dpo",
            &["beta=0.1", "label_smoothing=0.1"],
            0.6181388693815918,
        ),
        ("hinge", &["beta=0.1"], 0.8),
        ("ipo", &["beta=0.1"], 23.200277777777774),
        ("simpo", &["beta=2", "gamma=1"], 1.2411538747320878),
        ("mipo", &["beta=20"], 11.574031246746673),
        ("mmpo", &["beta=0.01", "gamma=2.2"], 0.6834397484263196),
    ];
    for (name, sets, want) in cases {
        let got = loss(name, &row, sets);
        assert!(
            close(got, want, 1e-13, 0.0),
            "{name} {sets:?}: got {got:.16}, the worked example says {want:.16}"
        );
    }
}

#[test]
fn mallows_theta_with_unit_dispersion_is_dpo() {
    // nld = -φ* ln(ent) = 1  ⇔  ent = exp(-1/φ*); ent = (H_w + H_l) / (2 ln V).
    let phi_star: f64 = 0.29;
    let v: f64 = 32000.0;
    let ent = (-1.0 / phi_star).exp();
    let mut row = worked_example_row();
    row.insert("vocab_size", v);
    row.insert("ref_chosen_entropy", ent * v.ln());
    row.insert("ref_rejected_entropy", ent * v.ln());
    for eps in ["0", "0.1"] {
        let ls = format!("label_smoothing={eps}");
        let m = loss("mallows_theta", &row, &["beta=0.1", &ls]);
        let d = loss("dpo", &row, &["beta=0.1", &ls]);
        assert!(
            close(m, d, 1e-12, 0.0),
            "ε={eps}: MallowsPO-θ {m} vs DPO {d}"
        );
    }
}

#[test]
fn mmpo_with_certain_target_is_dpo() {
    // σ(γ·100) is exactly 1 in f64, so p* = 1.
    let mut row = worked_example_row();
    row.insert("score_chosen", 101.0);
    row.insert("score_rejected", 1.0);
    let m = loss("mmpo", &row, &["beta=0.1", "gamma=2.2"]);
    let d = loss("dpo", &row, &["beta=0.1"]);
    assert!(close(m, d, 1e-14, 0.0), "MMPO(p*=1) {m} vs DPO {d}");
    // And the reward-model version is the Bradley-Terry loss.
    row.insert("reward_chosen", 0.7);
    row.insert("reward_rejected", -0.4);
    let m = loss("mmpo_reward", &row, &["gamma=2.2"]);
    let b = loss("bt_reward", &row, &[]);
    assert!(close(m, b, 1e-14, 0.0), "MMPO-RM(p*=1) {m} vs BT {b}");
}

#[test]
fn cdpo_and_robust_with_zero_smoothing_are_dpo() {
    let row = worked_example_row();
    let delta = (-12.0 - -13.0) - (-15.0 - -14.0);
    let by_hand = (-0.1f64 * delta).exp().ln_1p(); // -logσ(βΔ) = softplus(-βΔ) = ln(1 + e^(-βΔ))
    let dpo = loss("dpo", &row, &["beta=0.1", "label_smoothing=0"]);
    let robust = loss("robust", &row, &["beta=0.1", "label_smoothing=0"]);
    assert!(
        close(dpo, by_hand, 1e-15, 0.0),
        "dpo {dpo} vs hand {by_hand}"
    );
    assert!(
        close(robust, dpo, 1e-15, 0.0),
        "robust {robust} vs dpo {dpo}"
    );
}

#[test]
fn exo_rejects_zero_smoothing() {
    let c = compiled("exo_pair");
    let err = c
        .objective
        .params_with(&["label_smoothing=0".into()])
        .unwrap_err();
    assert_eq!(err[0].kind, poc_compiler::ErrorKind::BadSet);
}
