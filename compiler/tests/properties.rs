//! Property tests: random well-formed expressions differentiate correctly (symbolic vs
//! finite differences, interpreter vs JIT), also over per-token values; random and mutated
//! sources never make the parser or checker panic.

mod common;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};

/// A random expression over x = policy_chosen_logps and y = policy_rejected_logps, built
/// from ops whose domain is all reals (so every sampled point is valid).
fn expr_strategy() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("x".to_string()),
        Just("y".to_string()),
        (-2.0f64..2.0).prop_map(|c| format!("{:.3}", c.abs())),
    ];
    leaf.prop_recursive(4, 24, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} + {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} - {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} * {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} / (1 + ({b}) ^ 2))")),
            inner.clone().prop_map(|a| format!("sigmoid({a})")),
            inner.clone().prop_map(|a| format!("log_sigmoid({a})")),
            inner.clone().prop_map(|a| format!("softplus({a})")),
            inner.clone().prop_map(|a| format!("tanh({a})")),
            inner.clone().prop_map(|a| format!("exp(tanh({a}))")),
            inner.clone().prop_map(|a| format!("expm1(tanh({a}))")),
            inner.clone().prop_map(|a| format!("log1p(sigmoid({a}))")),
            inner.clone().prop_map(|a| format!("log(1 + ({a}) ^ 2)")),
            inner.clone().prop_map(|a| format!("sqrt(1 + ({a}) ^ 2)")),
            inner.clone().prop_map(|a| format!("-{a}")),
            inner.clone().prop_map(|a| format!("abs({a})")),
            inner.clone().prop_map(|a| format!("relu({a})")),
            inner.clone().prop_map(|a| format!("stop_grad({a})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("min({a}, {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("max({a}, {b})")),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(a, b, c)| format!("clamp({a}, -({b}) ^ 2 - 1, ({c}) ^ 2 + 1)")),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(c, a, b)| format!("(if {c} > 0 and not ({a} < -1) then {a} else {b})")),
        ]
    })
}

fn program(e: &str) -> String {
    format!(
        "objective prop\ninput x from policy.logps(chosen)\ninput y from policy.logps(rejected)\nlet e = {e}\nloss = e + 0.5 * x\n"
    )
}

/// The same expressions over per-token x (policy log-probs) and y (value head), reduced with a
/// mask: every op broadcast over tokens, scalar constants included.
fn token_program(e: &str) -> String {
    format!(
        "objective prop\ninput x from policy.token_logps(completion)\ninput y from value_head(completion)\ninput m from completion.mask\nlet e = {e}\nloss = masked_mean(e, m) + 0.5 * masked_sum(x, m)\n"
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_token_expressions_differentiate_correctly(e in expr_strategy(), seed in 0u64..1000) {
        let src = token_program(&e);
        let c = poc_compiler::compile(&src).map_err(|err| TestCaseError::fail(format!("{err:?}\n{src}")))?;
        let cols = common::random_rollouts(&c, 4, 6, seed);
        let report = common::check_fd_tokens(&c, &[], &cols);
        prop_assert!(report.failures.is_empty(), "{}\n{:#?}", src, report.failures);
    }

    #[test]
    fn random_expressions_differentiate_correctly(e in expr_strategy(), seed in 0u64..1000) {
        let src = program(&e);
        let c = poc_compiler::compile(&src).map_err(|err| TestCaseError::fail(format!("{err:?}\n{src}")))?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let cols: Vec<Vec<f64>> = (0..2).map(|_| (0..8).map(|_| rng.random_range(-2.0..2.0)).collect()).collect();
        let report = common::check_fd(&c, &[], &cols);
        prop_assert!(report.failures.is_empty(), "{}\n{:#?}", src, report.failures);
        let want = poc_compiler::interp::eval_batch(&c.program, &[], &cols);
        let kernel = poc_compiler::jit::Kernel::compile(&c.program).unwrap();
        let refs: Vec<&[f64]> = cols.iter().map(|c| c.as_slice()).collect();
        let mut got = vec![Vec::new(); c.program.outputs.len()];
        kernel.run(&[], &refs, &mut got).unwrap();
        for k in 0..want.len() {
            for r in 0..8 {
                let (w, g) = (want[k][r], got[k][r]);
                prop_assert!(w.to_bits() == g.to_bits() || (w.is_nan() && g.is_nan()), "{src}: output {k} row {r}: interpreter {w:e} JIT {g:e}");
            }
        }
    }

    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,200}") {
        let _ = poc_compiler::compile(&s);
    }

    #[test]
    fn statement_shaped_text_never_panics(s in "(objective|param|input|let|loss|metric|///|//)[ a-z_=+*/^().,<>!0-9\\-\\[\\]\"\n]{0,120}") {
        let _ = poc_compiler::compile(&s);
    }
}

/// Deterministic mutations of every shipped objective: delete, duplicate, insert and replace
/// characters and tokens. None may panic, and the mutants must reach the error paths of both
/// the parser and the checker (or the test would prove little).
#[test]
fn mutated_sources_never_panic() {
    const PER_OBJECTIVE: usize = 1500;
    let alphabet: Vec<char> = "()[],=+-*/^<>!._\"\n /#aeiouxyz0123456789"
        .chars()
        .collect();
    let tokens = [
        "let",
        "loss",
        "=",
        "(",
        ")",
        "if",
        "then",
        "else",
        "log_sigmoid(",
        "in",
        "[0, 1)",
        "metric",
        "input",
        "^",
        "-",
        "inf",
        "objective",
        "///",
    ];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let mut compiled = 0usize;
    let mut kinds = std::collections::BTreeSet::new();
    for (_, src) in common::objectives() {
        for _ in 0..PER_OBJECTIVE {
            let mut chars: Vec<char> = src.chars().collect();
            for _ in 0..rng.random_range(1..4) {
                if chars.is_empty() {
                    break;
                }
                let i = rng.random_range(0..chars.len());
                match rng.random_range(0..5) {
                    0 => {
                        let j = (i + rng.random_range(1..12)).min(chars.len());
                        chars.drain(i..j);
                    }
                    1 => chars.insert(i, alphabet[rng.random_range(0..alphabet.len())]),
                    2 => chars[i] = alphabet[rng.random_range(0..alphabet.len())],
                    3 => {
                        let t = tokens[rng.random_range(0..tokens.len())];
                        for (k, ch) in t.chars().enumerate() {
                            chars.insert(i + k, ch);
                        }
                    }
                    _ => {
                        let j = (i + rng.random_range(1..40)).min(chars.len());
                        let piece: Vec<char> = chars[i..j].to_vec();
                        let at = rng.random_range(0..chars.len());
                        for (k, ch) in piece.into_iter().enumerate() {
                            chars.insert(at + k, ch);
                        }
                    }
                }
            }
            let mutated: String = chars.into_iter().collect();
            let outcome = std::panic::catch_unwind(|| poc_compiler::compile(&mutated).map(|_| ()));
            match outcome {
                Ok(Ok(())) => compiled += 1,
                Ok(Err(poc_compiler::CompileError::User(diags))) => {
                    kinds.extend(diags.iter().map(|d| d.kind.name()));
                }
                Ok(Err(e)) => panic!("internal error on:\n{mutated}\n{e}"),
                Err(_) => panic!("the compiler panicked on:\n{mutated}"),
            }
        }
    }
    let total = PER_OBJECTIVE * common::objectives().len();
    // Some mutants still compile (a deleted metric, a changed constant) …
    assert!(
        compiled * 50 >= total,
        "only {compiled} of {total} mutants compiled"
    );
    // … and the rejected ones cover syntax and checker errors alike.
    for kind in [
        "syntax",
        "unknown_name",
        "duplicate_definition",
        "unknown_function",
    ] {
        assert!(
            kinds.contains(kind),
            "no mutant produced `{kind}`: {kinds:?}"
        );
    }
    assert!(kinds.len() >= 8, "the mutants reach only {kinds:?}");
}
