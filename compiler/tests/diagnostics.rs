//! Data-driven diagnostics tests: each `tests/diagnostics/<kind>.po` must fail with an error
//! of that kind; the rendered diagnostics (caret, message, hint) are snapshots. Every error
//! kind the compiler can report has a case.

use poc_compiler::ErrorKind;
use std::path::PathBuf;

fn kind_file(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Syntax => "syntax",
        ErrorKind::UnknownName => "unknown_name",
        ErrorKind::UnknownFunction => "unknown_function",
        ErrorKind::WrongArity => "wrong_arity",
        ErrorKind::DuplicateDefinition => "duplicate_definition",
        ErrorKind::CyclicLet => "cyclic_let",
        ErrorKind::MissingLoss => "missing_loss",
        ErrorKind::MissingObjective => "missing_objective",
        ErrorKind::NonDifferentiableLoss => "non_differentiable_loss",
        ErrorKind::BoolAsNumber => "bool_as_number",
        ErrorKind::NumberAsBool => "number_as_bool",
        ErrorKind::DefaultOutOfRange => "default_out_of_range",
        ErrorKind::BadRange => "bad_range",
        ErrorKind::UnknownSource => "unknown_source",
        ErrorKind::BadSet => "bad_set",
        ErrorKind::TokenAsNumber => "token_as_number",
        ErrorKind::NumberAsToken => "number_as_token",
    }
}

const SOURCE_KINDS: [ErrorKind; 16] = [
    ErrorKind::Syntax,
    ErrorKind::UnknownName,
    ErrorKind::UnknownFunction,
    ErrorKind::WrongArity,
    ErrorKind::DuplicateDefinition,
    ErrorKind::CyclicLet,
    ErrorKind::MissingLoss,
    ErrorKind::MissingObjective,
    ErrorKind::NonDifferentiableLoss,
    ErrorKind::BoolAsNumber,
    ErrorKind::NumberAsBool,
    ErrorKind::DefaultOutOfRange,
    ErrorKind::BadRange,
    ErrorKind::UnknownSource,
    ErrorKind::TokenAsNumber,
    ErrorKind::NumberAsToken,
];

#[test]
fn every_source_error_kind_has_a_snapshot() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/diagnostics");
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(
        files,
        SOURCE_KINDS.len(),
        "one case per error kind in {}",
        dir.display()
    );
    for kind in SOURCE_KINDS {
        let name = kind_file(kind);
        let label = format!("tests/diagnostics/{name}.po");
        let src = std::fs::read_to_string(dir.join(format!("{name}.po"))).unwrap();
        let diags = poc_compiler::check_source(&src).expect_err(&format!("{label} must fail"));
        assert!(
            diags.iter().any(|d| d.kind == kind),
            "{label}: expected {kind:?}, got {diags:#?}"
        );
        let rendered = poc_grammar::diag::render_all(&diags, &label, &src);
        insta::assert_snapshot!(format!("diag_{name}"), format!("{src}\n---\n{rendered}"));
    }
}

#[test]
fn bad_set_is_reported_with_hints() {
    let src = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("objectives/dpo.po"),
    )
    .unwrap();
    let obj = poc_compiler::check_source(&src).unwrap();
    let sets = ["bta=0.2", "beta=fast", "label_smoothing=0.9", "beta"].map(String::from);
    let diags = obj.params_with(&sets).unwrap_err();
    assert_eq!(
        diags.len(),
        4,
        "all four bad --set flags are reported together"
    );
    assert!(diags.iter().all(|d| d.kind == ErrorKind::BadSet));
    insta::assert_snapshot!(
        "diag_bad_set",
        poc_grammar::diag::render_all(&diags, "poc", "")
    );
    // A good override passes and lands in its slot.
    let p = obj.params_with(&["beta=0.25".into()]).unwrap();
    let i = obj.params.iter().position(|p| p.name == "beta").unwrap();
    assert_eq!(p[i], 0.25);
}

#[test]
fn all_errors_of_a_stage_are_reported_together() {
    let src = "objective many\ninput policy_chosen_logps\nlet a = frob(policy_chosen_logps)\nlet b = nope + 1\nloss = a + b + (1 > 2)\n";
    let diags = poc_compiler::check_source(src).unwrap_err();
    let kinds: Vec<ErrorKind> = diags.iter().map(|d| d.kind).collect();
    assert!(kinds.contains(&ErrorKind::UnknownFunction), "{kinds:?}");
    assert!(kinds.contains(&ErrorKind::UnknownName), "{kinds:?}");
    assert!(kinds.contains(&ErrorKind::BoolAsNumber), "{kinds:?}");
}
