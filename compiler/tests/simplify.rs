//! The simplifier, rule by rule and as a whole: each rewrite rule has one tiny case in
//! `simplify_rules.txt` (input, expected output, the rule that must fire), and a property test
//! checks that simplification keeps the value of random expressions on random inputs.

mod common;

use poc_compiler::dag::{Id, Written};
use poc_compiler::print::{Printer, Style};
use poc_compiler::simplify::{RULES, simplify_dag};
use poc_compiler::{Objective, OutputKind, Program, interp};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

/// An objective binding `e` to `expr` over x, y and k.
fn objective(expr: &str) -> Objective {
    let src = format!(
        "objective rule\nparam k = 2\ninput x from policy.logps(chosen)\ninput y from policy.logps(rejected)\nlet e = {expr}\nloss = x + 0 * (k + y)\n"
    );
    poc_compiler::check_source(&src).unwrap_or_else(|d| panic!("`{expr}` does not check: {d:?}"))
}

fn let_e(obj: &Objective) -> Id<Written> {
    obj.lets
        .iter()
        .find(|l| l.name == "e")
        .expect("the let e")
        .id
}

struct Case {
    line: usize,
    rule: String,
    input: String,
    expected: String,
}

fn cases() -> Vec<Case> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/simplify_rules.txt");
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|(i, l)| {
            let parts: Vec<&str> = l.split('|').map(str::trim).collect();
            assert_eq!(parts.len(), 3, "line {}: RULE | INPUT | EXPECTED", i + 1);
            Case {
                line: i + 1,
                rule: parts[0].to_string(),
                input: parts[1].to_string(),
                expected: parts[2].to_string(),
            }
        })
        .collect()
}

#[test]
fn every_rule_fires_on_its_case_and_yields_the_expected_form() {
    let mut failures = Vec::new();
    for case in cases() {
        let obj = objective(&case.input);
        let (dag, map, trace) = simplify_dag(&obj.dag, &[let_e(&obj)]);
        let root = map[let_e(&obj).index()].expect("the root survives");
        let got = Printer::new(&dag, &obj, &[], Style::Source).definition(root);
        if !trace.contains_key(case.rule.as_str()) {
            failures.push(format!(
                "line {}: `{}` did not fire on `{}` (fired: {trace:?})",
                case.line, case.rule, case.input
            ));
        }
        if got != case.expected {
            failures.push(format!(
                "line {}: `{}` simplifies to `{got}`, expected `{}`",
                case.line, case.input, case.expected
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_rule_has_exactly_one_case() {
    let cases = cases();
    for rule in RULES {
        let n = cases.iter().filter(|c| c.rule == rule).count();
        assert_eq!(n, 1, "rule `{rule}` has {n} cases in simplify_rules.txt");
    }
    for case in &cases {
        assert!(
            RULES.contains(&case.rule.as_str()),
            "line {}: no rule `{}`",
            case.line,
            case.rule
        );
    }
}

/// Random expressions built to meet the rules: the constants they look for, negations,
/// repeated subterms, conditions and `stop_grad`, over a domain where every value is finite.
fn expr_strategy() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("x".to_string()),
        Just("y".to_string()),
        Just("k".to_string()),
        prop_oneof![Just(0.0), Just(1.0), Just(-1.0), Just(2.0), -2.0f64..2.0]
            .prop_map(|c| format!("({c})")),
    ];
    leaf.prop_recursive(4, 32, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} + {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} - {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} * {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} / (1 + ({b}) ^ 2))")),
            inner.clone().prop_map(|a| format!("({a} - {a})")),
            inner.clone().prop_map(|a| format!("({a} + {a})")),
            inner.clone().prop_map(|a| format!("(-{a})")),
            inner.clone().prop_map(|a| format!("abs({a})")),
            inner.clone().prop_map(|a| format!("stop_grad({a})")),
            (inner.clone(), 0u8..3).prop_map(|(a, p)| format!("(tanh({a}) ^ {p})")),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(c, a, b)| { format!("(if not ({c} > 0) then {a} else {b})") }),
            (inner.clone(), inner.clone(), inner.clone()).prop_map(|(c, a, b)| {
                format!("((if {c} > 0 then {a} else 0) + (if {c} > 0 then 0 else {b}))")
            }),
        ]
    })
}

/// The program computing the let `e` of `obj` from `dag`'s node `root`.
fn program_of<S: poc_compiler::dag::Stage>(
    obj: &Objective,
    dag: &poc_compiler::dag::Dag<S>,
    root: Id<S>,
) -> Program {
    let inputs = obj
        .inputs
        .iter()
        .map(|i| (i.name.clone(), i.source.ty()))
        .collect();
    let params = obj.params.iter().map(|p| p.name.clone()).collect();
    Program::schedule(dag, &[(OutputKind::Loss, "e".into(), root)], inputs, params)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn simplification_preserves_values(e in expr_strategy(), seed in 0u64..1000) {
        let obj = objective(&e);
        let root = let_e(&obj);
        let (dag, map, _) = simplify_dag(&obj.dag, &[root]);
        let simplified = map[root.index()].expect("the root survives");
        let before = program_of(&obj, &obj.dag, root);
        let after = program_of(&obj, &dag, simplified);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let cols: Vec<Vec<f64>> = (0..2).map(|_| (0..16).map(|_| rng.random_range(-3.0..3.0)).collect()).collect();
        let params = [rng.random_range(-3.0..3.0)];
        let want = interp::eval_batch(&before, &params, &cols);
        let got = interp::eval_batch(&after, &params, &cols);
        for r in 0..16 {
            let (w, g) = (want[0][r], got[0][r]);
            prop_assert!(w.is_finite(), "{e}: not finite before simplification at row {r}");
            prop_assert!(common::close(w, g, 1e-12, 1e-12), "{e}: row {r}: {w:e} before, {g:e} after");
        }
    }
}

#[test]
fn named_values_are_kept_whole() {
    // `a = -x` is named: `a * y` keeps reading `a` (mul-neg would make it `-(x * y)`), while the
    // same product of an unnamed `-x` is rewritten.
    let src = "objective kept\ninput x from policy.logps(chosen)\ninput y from policy.logps(rejected)\nlet a = -x\nlet e = a * y\nloss = e + -y * x\n";
    let c = poc_compiler::compile(src).unwrap();
    let text = poc_compiler::print::grad(&c);
    assert!(text.contains("let e = y * a"), "{text}");
    assert!(
        text.contains("mul-neg x1") && text.contains("loss = e - "),
        "{text}"
    );
    // Without keeping, the simplifier reaches through `a`.
    let obj = poc_compiler::check_source(src).unwrap();
    let e = obj.lets.iter().find(|l| l.name == "e").unwrap().id;
    let (dag, map, trace) = simplify_dag(&obj.dag, &[e]);
    assert!(trace.contains_key("mul-neg"), "{trace:?}");
    let root = map[e.index()].unwrap();
    assert_eq!(
        Printer::new(&dag, &obj, &[], Style::Source).definition(root),
        "-(x * y)"
    );
}
