//! Token-level objectives on the interpreter: per-token inputs, masked reductions, `gae`,
//! `last_token` and `whiten` against hand-computed values; symbolic gradients against central
//! finite differences; the type rules; the JIT's refusal. (The burn lowering of the same
//! programs: runtime/tests/token_level.rs.)

mod common;

use common::*;
use poc_compiler::ErrorKind;
use poc_compiler::interp::{Column, eval_columns};

const ROWS: usize = 48;
const MAX_LEN: usize = 9;

fn compile(src: &str) -> poc_compiler::Compiled {
    poc_compiler::compile(src).unwrap_or_else(|e| panic!("{e:?}\n{src}"))
}

/// The per-token gradient of `probe(f)` on one row.
fn probe_row(f: &str, rewards: &[f64], values: &[f64], mask: &[f64]) -> Vec<f64> {
    let c = compile(&probe(f));
    let logprobs = vec![-1.0; mask.len()];
    let cols = vec![
        Column::Tokens(vec![logprobs]),
        Column::Tokens(vec![rewards.to_vec()]),
        Column::Tokens(vec![values.to_vec()]),
        Column::Tokens(vec![mask.to_vec()]),
    ];
    let params = c.objective.default_params();
    let out = eval_columns(&c.program, &params, &cols).unwrap();
    output(&c, &out, "d/logprobs").tokens(0).to_vec()
}

fn assert_all_close(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?}");
    for (t, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            close(*g, *w, 1e-12, 1e-12),
            "{what}[{t}]: got {g}, want {w} ({got:?})"
        );
    }
}

#[test]
fn gae_matches_hand_computed_examples() {
    // γ = 1, λ = 0.95, three valid tokens, the score on the last one:
    //   t=2: δ = 1 + 0 − 0.7 = 0.3,          A = 0.3
    //   t=1: δ = 0 + 0.7 − 0.6 = 0.1,        A = 0.1 + 0.95·0.3 = 0.385
    //   t=0: δ = 0 + 0.6 − 0.5 = 0.1,        A = 0.1 + 0.95·0.385 = 0.46575
    let a = poc_compiler::ops::gae(
        |t| [0.0, 0.0, 1.0][t],
        |t| [0.5, 0.6, 0.7][t],
        &[1.0, 1.0, 1.0],
        1.0,
        0.95,
    );
    assert_all_close("gae γ=1 λ=0.95", &a, &[0.46575, 0.385, 0.3]);

    // γ = 0.9, λ = 0.8, mask [1, 0, 1, 0]: the masked tokens are skipped (their rewards and
    // values never read) and get 0; the recursion links t=0 to t=2.
    //   t=2: δ = 2 + 0.9·0 − 1 = 1,           A = 1
    //   t=0: δ = 1 + 0.9·1 − 0.5 = 1.4,       A = 1.4 + 0.72·1 = 2.12
    let (rewards, values, mask) = (
        [1.0, 5.0, 2.0, 7.0],
        [0.5, 9.0, 1.0, 9.0],
        [1.0, 0.0, 1.0, 0.0],
    );
    let want = [2.12, 0.0, 1.0, 0.0];
    let a = poc_compiler::ops::gae(|t| rewards[t], |t| values[t], &mask, 0.9, 0.8);
    assert_all_close("gae with holes", &a, &want);
    // The same through the language.
    let got = probe_row(
        "gae(rewards, values, mask, gamma, lam)",
        &rewards,
        &values,
        &mask,
    );
    assert_all_close("gae in a program", &got, &want);
}

#[test]
fn last_token_and_whiten_match_hand_computed_values() {
    let ones = [1.0; 4];
    let got = probe_row("last_token(mask)", &ones, &ones, &[1.0, 1.0, 0.0, 0.0]);
    assert_all_close("last_token", &got, &[0.0, 1.0, 0.0, 0.0]);
    let got = probe_row("last_token(mask)", &ones, &ones, &[1.0, 0.0, 1.0, 0.0]);
    assert_all_close("last_token with a hole", &got, &[0.0, 0.0, 1.0, 0.0]);

    // Valid values 1, 2, 6: mean 3, unbiased variance (4 + 1 + 9)/2 = 7.
    let s = 1.0 / (7.0f64 + 1e-8).sqrt();
    let got = probe_row(
        "whiten(rewards, mask)",
        &[1.0, 2.0, 100.0, 6.0],
        &ones,
        &[1.0, 1.0, 0.0, 1.0],
    );
    assert_all_close("whiten", &got, &[-2.0 * s, -s, 0.0, 3.0 * s]);
    // One valid token: variance 0, the whitened value 0 (not NaN).
    let got = probe_row(
        "whiten(rewards, mask)",
        &[5.0, 1.0],
        &ones[..2],
        &[0.0, 1.0],
    );
    assert_all_close("whiten of one token", &got, &[0.0, 0.0]);

    // Masked reductions: Σ m·x and Σ m·x / Σ m over the valid tokens only (a NaN at a padding
    // token is never read).
    let c = compile(
        "objective red\ninput x from policy.token_logps(completion)\ninput mask from completion.mask\nloss = masked_sum(x, mask)\nmetric mean = masked_mean(x, mask)\n",
    );
    let cols = vec![
        Column::Tokens(vec![vec![1.0, 2.0, f64::NAN], vec![4.0]]),
        Column::Tokens(vec![vec![1.0, 1.0, 0.0], vec![1.0]]),
    ];
    let out = eval_columns(&c.program, &[], &cols).unwrap();
    assert_eq!(output(&c, &out, "loss"), &Column::Scalar(vec![3.0, 4.0]));
    assert_eq!(output(&c, &out, "mean"), &Column::Scalar(vec![1.5, 4.0]));
}

#[test]
fn whiten_uses_the_whole_batch() {
    // Two rows: the statistics are over all valid tokens of the batch (as TRL's
    // masked_whiten), so a row alone whitens differently.
    let c = compile(&probe("whiten(rewards, mask)"));
    let params = c.objective.default_params();
    let (cols, s) = whiten_batch();
    let out = eval_columns(&c.program, &params, &cols).unwrap();
    let g = output(&c, &out, "d/logprobs");
    let want = Column::Tokens(vec![vec![-3.0 * s, -s], vec![s, 3.0 * s, 0.0]]);
    assert_columns_close("whiten over the batch", &want, g, 1e-12, 1e-12);
}

#[test]
fn token_level_gradients_match_finite_differences() {
    for (name, _) in token_objectives() {
        let c = compiled(&name);
        let defaults = c.objective.default_params();
        // Every parameter moved inside its range too: the gradient must hold for any --set.
        let moved: Vec<f64> = c
            .objective
            .params
            .iter()
            .map(|p| {
                let m = if p.default == 0.0 {
                    0.05
                } else {
                    p.default * 0.7
                };
                match &p.range {
                    Some(r) if !r.contains(m) => p.default,
                    _ => m,
                }
            })
            .collect();
        for (params, seed) in [(defaults, 7), (moved, 11)] {
            let cols = random_rollouts(&c, ROWS, MAX_LEN, seed);
            let report = check_fd_tokens(&c, &params, &cols);
            let total = report.checked + report.kinks;
            assert!(total >= ROWS * 2, "{name}: only {total} gradient entries");
            assert!(
                report.kinks * 20 <= total,
                "{name}: {} of {total} stencils straddle a kink",
                report.kinks
            );
            assert!(
                report.failures.is_empty(),
                "{name} at {params:?}: {:#?}",
                &report.failures[..report.failures.len().min(5)]
            );
        }
    }
}

#[test]
fn ppo_clips_as_written() {
    // Some rows clip, some do not: the random rollouts reach past the clip ranges, and the
    // clip fractions are fractions.
    let c = compiled("ppo");
    let params = c.objective.default_params();
    let cols = random_rollouts(&c, ROWS, MAX_LEN, 5);
    let out = eval_columns(&c.program, &params, &cols).unwrap();
    for metric in ["policy/clipfrac_avg", "val/clipfrac_avg"] {
        let Column::Scalar(v) = output(&c, &out, metric) else {
            panic!("{metric} is per example");
        };
        assert!(v.iter().all(|f| (0.0..=1.0).contains(f)), "{metric}: {v:?}");
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        assert!(mean > 0.02 && mean < 0.9, "{metric}: mean {mean}");
    }
    // The gradient is zero at masked tokens.
    let mask = cols[c
        .program
        .input_names
        .iter()
        .position(|n| n == "mask")
        .unwrap()]
    .clone();
    for g in ["d/logprobs", "d/values"] {
        let grad = output(&c, &out, g);
        for r in 0..ROWS {
            for (t, m) in mask.tokens(r).iter().enumerate() {
                if *m == 0.0 {
                    assert_eq!(grad.at(r, t), 0.0, "{g} row {r} token {t}");
                }
            }
        }
    }
}

#[test]
fn token_expressions_with_broadcasting_differentiate_correctly() {
    // Scalar inputs mixed into per-token expressions: their gradients sum over the tokens.
    for body in MIXED_TOKEN_LOSSES {
        let src = mixed_token_source(body);
        let c = compile(&src);
        let cols = random_rollouts(&c, 24, 7, 3);
        let report = check_fd_tokens(&c, &[], &cols);
        assert!(report.checked > 48, "{body}: {report:?}");
        assert!(
            report.failures.is_empty(),
            "{body}: {:#?}",
            &report.failures[..report.failures.len().min(5)]
        );
    }
}

#[test]
fn token_values_are_typed() {
    let head = "objective t\nparam gamma = 1\ninput x from policy.token_logps(completion)\ninput s from score(completion)\ninput m from completion.mask\n";
    let kinds = |body: &str| -> Vec<ErrorKind> {
        match poc_compiler::check_source(&format!("{head}{body}\n")) {
            Ok(_) => vec![],
            Err(d) => d.iter().map(|d| d.kind).collect(),
        }
    };
    // Broadcasting per-example values over tokens, and reducing back, is fine.
    assert_eq!(kinds("loss = masked_mean(s * x + gamma, m) + s"), vec![]);
    assert_eq!(
        kinds("let b = x > s\nloss = masked_sum(if b then x else s, m)"),
        vec![]
    );
    // A per-token loss, metric, γ or λ is an error; so is a per-example mask.
    assert_eq!(kinds("loss = x * s"), vec![ErrorKind::TokenAsNumber]);
    assert_eq!(
        kinds("loss = masked_sum(x, m)\nmetric ratio = exp(x)"),
        vec![ErrorKind::TokenAsNumber]
    );
    assert_eq!(
        kinds("loss = masked_sum(x * gae(x, x, m, x, 0.9), m)"),
        vec![ErrorKind::TokenAsNumber]
    );
    assert_eq!(
        kinds("loss = masked_sum(x, s)"),
        vec![ErrorKind::NumberAsToken]
    );
    assert_eq!(
        kinds("loss = masked_sum(x, whiten(x, 1))"),
        vec![ErrorKind::NumberAsToken]
    );
    // Booleans stay booleans per token too.
    assert_eq!(
        kinds("loss = masked_sum(x > 0, m)"),
        vec![ErrorKind::BoolAsNumber]
    );
    // The types print as num[T] / bool[T].
    let obj =
        poc_compiler::check_source(&format!("{head}let b = x > s\nloss = masked_sum(x, m)\n"))
            .unwrap();
    let typed = poc_compiler::print::typed(&obj);
    assert!(
        typed.contains("input #0 x: num[T] from policy.token_logps(completion) (differentiable)"),
        "{typed}"
    );
    assert!(
        typed.contains("input #1 s: num from score(completion) (constant)"),
        "{typed}"
    );
    assert!(typed.contains("let b: bool[T] = x > s"), "{typed}");
}

#[test]
fn the_jit_refuses_token_level_programs_with_a_clear_message() {
    let c = compiled("ppo");
    let err = match poc_compiler::jit::Kernel::compile(&c.program) {
        Ok(_) => panic!("the JIT compiled a token-level program"),
        Err(e) => e,
    };
    assert!(
        matches!(err, poc_compiler::jit::JitError::Unsupported(_)),
        "{err}"
    );
    assert!(err.to_string().contains("--backend interp|burn"), "{err}");
}

#[test]
fn bad_token_columns_are_errors_not_panics() {
    let c = compiled("ppo");
    let params = c.objective.default_params();
    let mut cols = random_rollouts(&c, 3, 4, 1);
    // Row 2's mask one token short.
    if let Column::Tokens(rows) = &mut cols[6] {
        rows[1].push(1.0);
    }
    let err = eval_columns(&c.program, &params, &cols)
        .unwrap_err()
        .to_string();
    assert!(err.contains("row 2") && err.contains("one length"), "{err}");
    // A per-example column where a per-token one belongs.
    cols[0] = Column::Scalar(vec![0.0; 3]);
    let err = eval_columns(&c.program, &params, &cols)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`logprobs` is per token"), "{err}");
}

#[test]
fn token_position_is_built_in() {
    use poc_compiler::Source;
    // Read in an expression without an `input` line: an input of its own, not differentiable.
    let src = "objective pos\ninput policy_chosen_token_logps\ninput chosen_mask\nloss = -masked_sum(policy_chosen_token_logps * token.position, chosen_mask)\n";
    let c = compile(src);
    let names: Vec<&str> = c.objective.inputs.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(
        names,
        ["policy_chosen_token_logps", "chosen_mask", "token.position"]
    );
    let position = &c.objective.inputs[2];
    assert_eq!(position.source, Source::TokenPosition);
    assert!(!position.differentiable && position.source.is_builtin());
    // Its values follow from a row's length alone.
    assert_eq!(
        Source::TokenPosition.builtin_tokens(3),
        Some(vec![0.0, 1.0, 2.0])
    );
    assert!(
        Source::TokenMask(poc_compiler::Side::Chosen)
            .builtin_tokens(3)
            .is_none()
    );
    let cols = vec![
        Column::Tokens(vec![vec![-1.0, -2.0, -4.0]]),
        Column::Tokens(vec![vec![1.0, 1.0, 0.0]]),
        Column::Tokens(vec![vec![0.0, 1.0, 2.0]]),
    ];
    let out = eval_columns(&c.program, &[], &cols).unwrap();
    assert_eq!(output(&c, &out, "loss").at(0, 0), 2.0);
    assert_eq!(
        output(&c, &out, "d/policy_chosen_token_logps").tokens(0),
        [0.0, -1.0, 0.0]
    );

    // A declared input of that source is the one the expression reads (one input, not two).
    let declared = "objective pos\ninput policy_chosen_token_logps\ninput chosen_mask\ninput p from token.position\nloss = -masked_sum(policy_chosen_token_logps * (p + token.position), chosen_mask)\n";
    let c = compile(declared);
    assert_eq!(c.objective.inputs.len(), 3);
    assert_eq!(c.objective.inputs[2].name, "p");

    // The bare name says where the position is.
    let bare = "objective pos\ninput policy_chosen_token_logps\ninput chosen_mask\nloss = -masked_sum(policy_chosen_token_logps * position, chosen_mask)\n";
    let diags = poc_compiler::check_source(bare).unwrap_err();
    assert_eq!(diags[0].kind, ErrorKind::UnknownName);
    assert_eq!(
        diags[0].hint.as_deref(),
        Some("did you mean `token.position`, a built-in value?")
    );
}
