//! Stage-level tests of the compiler on small inline sources (no files, no devices).

use poc_compiler::{compile, interp, print};

const DPO: &str = r#"
/// Direct Preference Optimization (test copy).
objective dpo
param beta = 0.1 in (0, inf)
param label_smoothing = 0 in [0, 0.5)
input policy_chosen_logps
input policy_rejected_logps
input ref_chosen_logps
input ref_rejected_logps
let rho_w = policy_chosen_logps - ref_chosen_logps
let rho_l = policy_rejected_logps - ref_rejected_logps
let z = beta * (rho_w - rho_l)
loss = -(1 - label_smoothing) * log_sigmoid(z) - label_smoothing * log_sigmoid(-z)
metric rewards/chosen = beta * rho_w
metric rewards/accuracies = rho_w > rho_l
"#;

#[test]
fn dpo_compiles_and_evaluates() {
    let c = compile(DPO).unwrap();
    let cols = vec![vec![-12.0], vec![-15.0], vec![-13.0], vec![-14.0]];
    let out = interp::eval_batch(&c.program, &c.objective.default_params(), &cols);
    assert!(
        (out[0][0] - 0.5981388693815918).abs() < 1e-15,
        "{}",
        out[0][0]
    );
    // d/dpolicy_chosen = -β σ(-z) at z = 0.2
    let s = 1.0 / (1.0 + 0.2f64.exp());
    assert!((out[1][0] + 0.1 * s).abs() < 1e-15);
    assert!((out[2][0] - 0.1 * s).abs() < 1e-15);
    println!("{}", print::typed(&c.objective));
    println!("{}", print::grad(&c));
    println!("{}", print::explain(&c, print::Style::Source));
    println!("{}", c.program.text("dpo"));
}

#[test]
fn stop_grad_blocks_gradient_and_lets_may_come_in_any_order() {
    let src = "objective s\ninput policy_chosen_logps\ninput policy_rejected_logps\nloss = a\nlet a = b * stop_grad(b)\nlet b = policy_chosen_logps + 0 * policy_rejected_logps\n";
    let c = compile(src).unwrap();
    let out = interp::eval_batch(&c.program, &[], &[vec![3.0], vec![1.0]]);
    assert_eq!(out[0][0], 9.0);
    assert_eq!(out[1][0], 3.0, "d(b·stop_grad(b))/db = stop_grad(b)");
    assert_eq!(out[2][0], 0.0);
}

#[test]
fn kink_conventions_are_as_documented() {
    let src = "objective k\ninput x from policy.logps(chosen)\nloss = relu(x) + abs(x) + max(x, 0) + min(x, 0) + clamp(x, 0, 1)\n";
    let c = compile(src).unwrap();
    let out = interp::eval_batch(&c.program, &[], &[vec![0.0]]);
    // relu'(0)=0, abs'(0)=0, max(x,0) at tie -> x: 1, min(x,0) at tie -> x: 1, clamp at lo: 1.
    assert_eq!(out[1][0], 3.0);
}

#[test]
fn simplifier_trace_is_reported() {
    let c = compile(DPO).unwrap();
    let g = print::grad(&c);
    assert!(g.starts_with("rewrites: "), "{g}");
    assert!(!g.contains("rewrites: none"), "{g}");
}
