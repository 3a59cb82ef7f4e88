//! The worked example of objectives/README.md (one row of inputs and each objective's loss on
//! it, float64) on the interpreter and the JIT (burn: runtime/tests/burn_lowering.rs); each
//! newer objective against its formula written out here in plain Rust, the batch-level (AOT) and
//! token-level (WPO, LD-DPO) ones on small batches computed by hand; and the special cases the
//! papers state: MallowsPO-θ with unit dispersion weight is DPO, MMPO with p* = 1 is DPO, cDPO
//! with ε = 0 is DPO, robust DPO with ε = 0 is DPO, LD-DPO with α = 1 is DPO.

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
fn worked_example_in_objectives_readme() {
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

/// ln(1 + eˣ), the loss −logσ(−x), written independently of the compiler's.
fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

#[test]
fn newer_objectives_match_their_formulas_on_the_worked_example() {
    let row = worked_example_row();
    // π_w = −12, π_l = −15, ref_w = −13, ref_l = −14, |y_w| = 10, |y_l| = 12.
    let (rho_w, rho_l) = (1.0f64, -1.0f64);
    let dpo = softplus(-0.1 * (rho_w - rho_l));
    let nll = 12.0 / 10.0;
    let (avg_w, avg_l) = (-12.0f64 / 10.0, -15.0f64 / 12.0);
    let log_odds = (avg_w - avg_l) - ((-avg_w.exp()).ln_1p() - (-avg_l.exp()).ln_1p());
    let bco = softplus(-0.1 * rho_w) + softplus(0.1 * rho_l);
    let cases: Vec<(&str, Vec<&str>, f64)> = vec![
        // ORPO: NLL per token + λ·(−logσ(log odds ratio)).
        ("orpo", vec![], nll + 0.1 * softplus(-log_odds)),
        ("orpo", vec!["beta=0.5"], nll + 0.5 * softplus(-log_odds)),
        // Length-normalised DPO with β = 5.
        (
            "sigmoid_norm",
            vec![],
            softplus(-5.0 * (1.0 / 10.0 + 1.0 / 12.0)),
        ),
        // f-DPO, JS: z = β((ρ_w − ρ_l) − (softplus(ρ_w) − softplus(ρ_l))).
        (
            "fdpo_js",
            vec![],
            softplus(-0.1 * ((rho_w - rho_l) - (softplus(rho_w) - softplus(rho_l)))),
        ),
        // f-DPO, α-divergence with TRL's a = 0.5: z = β(e^{(a−1)ρ_w} − e^{(a−1)ρ_l})/(a − 1).
        (
            "fdpo_alpha",
            vec![],
            softplus(-0.1 * ((-0.5 * rho_w).exp() - (-0.5 * rho_l).exp()) / -0.5),
        ),
        (
            "fdpo_alpha",
            vec!["f_alpha_divergence_coef=0.25", "label_smoothing=0.1"],
            {
                let z = 0.1 * ((-0.75 * rho_w).exp() - (-0.75 * rho_l).exp()) / -0.75;
                0.9 * softplus(-z) + 0.1 * softplus(z)
            },
        ),
        // Compositions: RPO = DPO + α·NLL; Wang et al.: 0.8·DPO + 0.2·BCO + 1·SFT, one β.
        ("rpo", vec![], dpo + nll),
        (
            "rpo",
            vec!["alpha=0.25", "dpo.beta=0.3"],
            softplus(-0.3 * 2.0) + 0.25 * nll,
        ),
        ("dpo_bco_sft", vec![], 0.8 * dpo + 0.2 * bco + nll),
        (
            "dpo_bco_sft",
            vec!["beta=0.3", "w_sft=0"],
            0.8 * softplus(-0.3 * 2.0) + 0.2 * (softplus(-0.3) + softplus(-0.3)),
        ),
    ];
    for (name, sets, want) in cases {
        let got = loss(name, &row, &sets);
        assert!(
            close(got, want, 1e-13, 1e-15),
            "{name} {sets:?}: got {got:.16}, the formula says {want:.16}"
        );
    }
}

/// fdpo_alpha's parameter is TRL's `f_alpha_divergence_coef` a (TRL ≥ 0.29): the loss is TRL's
/// `alpha_divergence` scores, transcribed below, at a = 0.3, which is TRL ≤ 0.28's margin
/// (u_l^−α − u_w^−α)/α at α = 1 − a = 0.7; a = 1 is DPO (value and gradient), a = 0 is TRL's
/// `forward_kl`, and the exponent is clamped at 80 as TRL clamps it in float32.
#[test]
fn fdpo_alpha_takes_trls_f_alpha_divergence_coef() {
    let beta = 0.1;
    // TRL 1.x, DPOTrainer, f_divergence_type="alpha_divergence": score = exp(min((a−1)ρ, 80))/(a−1).
    let trl_score = |a: f64, rho: f64| ((a - 1.0) * rho).min(80.0).exp() / (a - 1.0);
    let trl_loss = |a: f64, rho_w: f64, rho_l: f64| {
        softplus(-beta * (trl_score(a, rho_w) - trl_score(a, rho_l)))
    };
    let row = |rho_w: f64, rho_l: f64| {
        HashMap::from([
            ("policy_chosen_logps", -10.0 + rho_w),
            ("policy_rejected_logps", -20.0 + rho_l),
            ("ref_chosen_logps", -10.0),
            ("ref_rejected_logps", -20.0),
        ])
    };
    let (rho_w, rho_l) = (0.75, -1.5);
    let at = |a: f64, r: &HashMap<&str, f64>| {
        loss("fdpo_alpha", r, &[&format!("f_alpha_divergence_coef={a}")])
    };

    let got = at(0.3, &row(rho_w, rho_l));
    let want = trl_loss(0.3, rho_w, rho_l);
    assert!(close(got, want, 1e-14, 0.0), "a = 0.3: {got} vs TRL {want}");
    // The same loss in TRL ≤ 0.28's parametrisation, α = 1 − a.
    let alpha = 0.7;
    let old = softplus(-beta * ((-alpha * rho_l).exp() - (-alpha * rho_w).exp()) / alpha);
    assert!(
        close(got, old, 1e-14, 0.0),
        "a = 0.3: {got} vs α = 0.7: {old}"
    );

    // a = 0: forward KL, TRL's scores −exp(−ρ).
    let forward = softplus(-beta * (-(-rho_w).exp() + (-rho_l).exp()));
    let got = at(0.0, &row(rho_w, rho_l));
    assert!(close(got, forward, 1e-14, 0.0), "a = 0: {got} vs {forward}");

    // Clamped: (a − 1)·ρ_w = 140 > 80.
    let got = at(0.3, &row(-200.0, rho_l));
    let want = softplus(-beta * ((80.0f64).exp() / -0.7 - trl_score(0.3, rho_l)));
    assert!(close(got, want, 1e-14, 0.0), "clamped: {got} vs {want}");

    // a = 1 is DPO, its gradient included (the branch not taken stays finite).
    let c = compiled("fdpo_alpha");
    let d = compiled("dpo");
    let r = row(rho_w, rho_l);
    let (params, cols) = worked_example_inputs(&c, &r, &["f_alpha_divergence_coef=1"]);
    let (dpo_params, dpo_cols) = worked_example_inputs(&d, &r, &[]);
    let ours = poc_compiler::interp::eval_batch(&c.program, &params, &cols);
    let dpo = poc_compiler::interp::eval_batch(&d.program, &dpo_params, &dpo_cols);
    for name in ["loss", "d/policy_chosen_logps", "d/policy_rejected_logps"] {
        let k = |p: &poc_compiler::Program| p.outputs.iter().position(|o| o.name == name).unwrap();
        let (x, y) = (ours[k(&c.program)][0], dpo[k(&d.program)][0]);
        assert!(close(x, y, 1e-15, 0.0), "a = 1, {name}: {x} vs DPO {y}");
    }
}

/// dpo_bco_sft's SFT term is sft.po's per-example token mean, averaged over the batch (not
/// TRL's batch token mean), and its doc comment says so.
#[test]
fn dpo_bco_sft_takes_the_sft_token_mean_per_example() {
    use poc_compiler::interp::Column;
    let c = compiled("dpo_bco_sft");
    // Two pairs whose chosen answers have 10 and 30 tokens.
    let (logps, lens) = ([-12.0, -90.0], [10.0, 30.0]);
    let cols: Vec<Column> = c
        .objective
        .inputs
        .iter()
        .map(|i| {
            Column::Scalar(match i.name.as_str() {
                "policy_chosen_logps" => logps.to_vec(),
                "chosen_len" => lens.to_vec(),
                "policy_rejected_logps" => vec![-15.0, -95.0],
                _ => vec![-14.0, -92.0],
            })
        })
        .collect();
    let out = poc_compiler::interp::eval_columns(&c.program, &c.objective.default_params(), &cols)
        .unwrap();
    let Column::Scalar(sft) = output(&c, &out, "loss/sft") else {
        panic!("loss/sft is per example")
    };
    let batch: f64 = sft.iter().sum::<f64>() / 2.0;
    let per_example = (12.0 / 10.0 + 90.0 / 30.0) / 2.0;
    let trl = (12.0 + 90.0) / (10.0 + 30.0);
    assert!(
        close(batch, per_example, 1e-15, 0.0),
        "{batch} vs {per_example}"
    );
    assert!(
        (batch - trl).abs() > 0.1,
        "the lengths differ, so TRL's {trl} is another value"
    );
    let docs = c.objective.docs.join(" ");
    assert!(
        docs.contains("each example's token mean") && docs.contains("batch token mean"),
        "the doc comment states both normalisations: {docs}"
    );
}

/// Every output of `name` on `cols` by the interpreter (the JIT takes no batch- or token-level
/// program).
fn eval(name: &str, sets: &[&str], cols: &[poc_compiler::interp::Column]) -> (f64, Vec<f64>) {
    let c = compiled(name);
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let params = c.objective.params_with(&sets).unwrap();
    let out = poc_compiler::interp::eval_columns(&c.program, &params, cols).unwrap();
    let loss = match output(&c, &out, "loss") {
        poc_compiler::interp::Column::Scalar(v) => v.clone(),
        other => panic!("{name}: per-token loss {other:?}"),
    };
    (loss.iter().sum(), loss)
}

#[test]
fn aot_sorts_over_the_batch() {
    use poc_compiler::interp::Column;
    // Three pairs: policy and reference log-probs (chosen, rejected).
    let pw = [-10.0, -4.0, -7.0];
    let pl = [-11.0, -9.0, -5.0];
    let rw = [-9.0, -6.0, -8.0];
    let rl = [-9.5, -6.5, -4.0];
    let cols = |a: &[f64; 3], b: &[f64; 3], c: &[f64; 3], d: &[f64; 3]| {
        [a, b, c, d]
            .iter()
            .map(|v| Column::Scalar(v.to_vec()))
            .collect::<Vec<_>>()
    };
    let sorted = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v
    };
    // Paired AOT: sorted policy margins against sorted reference margins.
    let margins: Vec<f64> = (0..3).map(|i| pw[i] - pl[i]).collect(); // 1, 5, -2
    let ref_margins: Vec<f64> = (0..3).map(|i| rw[i] - rl[i]).collect(); // 0.5, 0.5, -4
    let (m, r) = (sorted(margins), sorted(ref_margins));
    let want: Vec<f64> = (0..3).map(|i| softplus(-0.1 * (m[i] - r[i]))).collect();
    let (_, got) = eval("aot", &[], &cols(&pw, &pl, &rw, &rl));
    for i in 0..3 {
        assert!(
            close(got[i], want[i], 1e-14, 0.0),
            "aot row {i}: {got:?} vs {want:?}"
        );
    }
    // Unpaired: chosen and rejected log-ratios sorted separately.
    let cw = sorted((0..3).map(|i| pw[i] - rw[i]).collect());
    let cl = sorted((0..3).map(|i| pl[i] - rl[i]).collect());
    let want: Vec<f64> = (0..3)
        .map(|i| {
            let z = 0.5 * (cw[i] - cl[i]);
            0.8 * softplus(-z) + 0.2 * softplus(z)
        })
        .collect();
    let (_, got) = eval(
        "aot_pair",
        &["beta=0.5", "label_smoothing=0.2"],
        &cols(&pw, &pl, &rw, &rl),
    );
    for i in 0..3 {
        assert!(
            close(got[i], want[i], 1e-14, 0.0),
            "aot_pair row {i}: {got:?} vs {want:?}"
        );
    }
    // The order of the rows does not change the total: the loss is of the batch.
    let p = [2, 0, 1];
    let perm = |v: &[f64; 3]| [v[p[0]], v[p[1]], v[p[2]]];
    let (a, _) = eval("aot", &[], &cols(&pw, &pl, &rw, &rl));
    let (b, _) = eval(
        "aot",
        &[],
        &cols(&perm(&pw), &perm(&pl), &perm(&rw), &perm(&rl)),
    );
    assert!(close(a, b, 1e-15, 0.0), "{a} vs {b}");
}

/// Inputs of a token-level pair objective by name: per-token ones on one axis per row; a
/// built-in source (`token.position`) from the length of the rows' first per-token input.
fn token_cols(
    name: &str,
    scalars: &[(&str, Vec<f64>)],
    tokens: &[(&str, Vec<Vec<f64>>)],
) -> Vec<poc_compiler::interp::Column> {
    use poc_compiler::interp::Column;
    let c = compiled(name);
    c.objective
        .inputs
        .iter()
        .map(|inp| {
            let n = &inp.name;
            if let Some((_, v)) = scalars.iter().find(|(k, _)| k == n) {
                Column::Scalar(v.clone())
            } else if let Some((_, v)) = tokens.iter().find(|(k, _)| k == n) {
                Column::Tokens(v.clone())
            } else if inp.source.is_builtin() {
                let rows = &tokens[0].1;
                Column::Tokens(
                    rows.iter()
                        .map(|r| inp.source.builtin_tokens(r.len()).unwrap())
                        .collect(),
                )
            } else {
                panic!("{name}: no value for input {n}")
            }
        })
        .collect()
}

#[test]
fn wpo_and_ld_dpo_match_their_formulas_on_tokens() {
    // One pair: chosen has 3 tokens, rejected 2, on one axis of 3 (rejected padded).
    let tw = vec![-0.5, -1.0, -2.0];
    let tl = vec![-1.5, -0.25, 0.0];
    let (mw, ml) = (vec![1.0, 1.0, 1.0], vec![1.0, 1.0, 0.0]);
    let (sw, sl): (f64, f64) = (tw.iter().sum(), tl.iter().sum()); // −3.5, −1.75
    let (rw, rl) = (-3.0f64, -2.5f64);
    let cw = vec![-0.3, -0.7, -1.1];
    let cl = vec![-0.2, -0.4, 0.0];
    let scalars = |pw: f64, pl: f64| {
        vec![
            ("policy_chosen_logps", vec![pw]),
            ("policy_rejected_logps", vec![pl]),
            ("ref_chosen_logps", vec![rw]),
            ("ref_rejected_logps", vec![rl]),
            ("chosen_len", vec![3.0]),
            ("rejected_len", vec![2.0]),
        ]
    };
    let tokens = vec![
        ("policy_chosen_token_logps", vec![tw.clone()]),
        ("policy_rejected_token_logps", vec![tl.clone()]),
        ("chosen_mask", vec![mw.clone()]),
        ("rejected_mask", vec![ml.clone()]),
        ("chosen_collision", vec![cw.clone()]),
        ("rejected_collision", vec![cl.clone()]),
    ];
    // WPO: mean over tokens of log p − log Σp², capped exp of the sum, times DPO.
    let w_c: f64 = ((-0.5 + 0.3) + (-1.0 + 0.7) + (-2.0 + 1.1)) / 3.0;
    let w_r: f64 = ((-1.5 + 0.2) + (-0.25 + 0.4)) / 2.0;
    let weight = (w_c + w_r).exp().min(1.0);
    let dpo = softplus(-0.1 * ((sw - rw) - (sl - rl)));
    let (got, _) = eval("wpo", &[], &token_cols("wpo", &scalars(sw, sl), &tokens));
    assert!(
        close(got, weight * dpo, 1e-14, 0.0),
        "wpo {got} vs {}",
        weight * dpo
    );
    assert!(weight < 1.0, "the example must not hit the cap: {weight}");
    // LD-DPO: shared length 2, so chosen's third token counts with α; the reference is plain.
    for alpha in [0.5f64, 1.0] {
        let ld_w = -0.5 - 1.0 + alpha * -2.0;
        let ld_l = -1.5 - 0.25;
        let want = softplus(-0.1 * ((ld_w - rw) - (ld_l - rl)));
        let a = format!("ld_alpha={alpha}");
        let (got, _) = eval(
            "ld_dpo",
            &[&a],
            &token_cols("ld_dpo", &scalars(sw, sl), &tokens),
        );
        assert!(
            close(got, want, 1e-14, 0.0),
            "ld_dpo α={alpha}: {got} vs {want}"
        );
        if alpha == 1.0 {
            assert!(
                close(got, dpo, 1e-14, 0.0),
                "LD-DPO with α = 1 is DPO: {got} vs {dpo}"
            );
        }
    }
}
