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
}

#[test]
fn every_text_form_names_the_declarations() {
    let c = compile(DPO).unwrap();
    let typed = print::typed(&c.objective);
    for line in [
        "objective dpo",
        "param #0 beta: num = 0.1 in (0, inf)",
        "input #0 policy_chosen_logps: num from policy.logps(chosen) (differentiable)",
        "input #2 ref_chosen_logps: num from reference.logps(chosen) (constant)",
        "let z: num = beta * (rho_w - rho_l)",
        "metric rewards/accuracies: bool = rho_w > rho_l",
    ] {
        assert!(typed.lines().any(|l| l == line), "no `{line}` in\n{typed}");
    }
    let grad = print::grad(&c);
    for input in ["policy_chosen_logps", "policy_rejected_logps"] {
        assert!(grad.contains(&format!("d loss / d {input} = ")), "{grad}");
    }
    // Only the policy inputs are differentiable.
    assert!(!grad.contains("d loss / d ref_"), "{grad}");
    let explain = print::explain(&c, print::Style::Source);
    for section in [
        "parameters",
        "inputs:",
        "where:",
        "loss:",
        "gradient:",
        "metrics",
    ] {
        assert!(explain.contains(section), "no {section} in\n{explain}");
    }
    let latex = print::explain(&c, print::Style::Latex);
    assert!(latex.contains("\\log\\sigma\\left("), "{latex}");
    let graph = c.program.text("dpo");
    assert!(
        graph.starts_with("graph dpo(params: beta, label_smoothing; inputs: policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)\n"),
        "{graph}"
    );
    for out in [
        "out loss = ",
        "out d/policy_chosen_logps = ",
        "out rewards/chosen = ",
    ] {
        assert!(graph.contains(out), "no `{out}` in\n{graph}");
    }
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

#[test]
fn explain_reads_in_the_sources_own_terms() {
    let explain = |name: &str| {
        let src = poc_compiler::library::shipped(name).unwrap();
        print::explain(&compile(src).unwrap(), print::Style::Source)
    };
    // Clamps and means print as written; a clamp's derivative is one condition on its operand.
    let ppo = explain("ppo");
    for part in [
        "pg_losses2 = -advantages * clamp(ratio, 1 - cliprange, 1 + cliprange)",
        "values_clipped = clamp(values, old_values - cliprange_value, old_values + cliprange_value)",
        "pg_loss = masked_mean(max(pg_losses, pg_losses2), mask)",
        "if ratio >= 1 - cliprange and ratio <= 1 + cliprange then",
    ] {
        assert!(ppo.contains(part), "explain ppo lacks `{part}`:\n{ppo}");
    }
    assert!(!ppo.contains("then if"), "nested branches:\n{ppo}");
    // The gradient reads the user's own lets, not rewritten forms of them.
    let phi = explain("mallows_phi");
    assert!(
        phi.contains("d loss / d policy_chosen_logps = beta * (a * ("),
        "explain mallows_phi:\n{phi}"
    );
    for part in ["abs(x0) < 0.001", "abs(x1) < 0.001"] {
        assert!(
            phi.contains(part),
            "explain mallows_phi lacks `{part}`:\n{phi}"
        );
    }
    let mixture = explain("dpo_bco_sft");
    assert!(
        mixture.contains("loss = w_dpo * dpo.loss + w_bco * bco_pair.loss + w_sft * sft.loss"),
        "{mixture}"
    );
}
