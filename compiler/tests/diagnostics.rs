//! Data-driven diagnostics tests: each `diagnostics/<kind>.po` or `diagnostics/<kind>.<case>.po`
//! is named after an error kind ([`ErrorKind::name`]) and must fail with an error of that kind;
//! the rendered diagnostics (caret, message, hint) are snapshots, one file per case
//! (`snapshots/diagnostics__diagnostic@<kind>[.<case>].po.snap`). Every kind in
//! [`ErrorKind::ALL`] has a case `<kind>.po`, so a new kind without one fails here.

use poc_compiler::ErrorKind;
use std::path::{Path, PathBuf};

/// Kinds a source cannot produce (they come from the command line), with the test that covers
/// each.
const COMMAND_LINE_KINDS: [(ErrorKind, &str); 1] =
    [(ErrorKind::BadSet, "bad_set_is_reported_with_hints")];

fn cases_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/diagnostics")
}

/// The kind a case file is named after: `<kind>.po` or `<kind>.<case>.po`.
fn kind_of(path: &Path) -> ErrorKind {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let kind = stem.split('.').next().unwrap_or_default();
    ErrorKind::ALL
        .iter()
        .copied()
        .find(|k| k.name() == kind)
        .unwrap_or_else(|| panic!("{}: not named after an error kind", path.display()))
}

#[test]
fn every_error_kind_has_a_case() {
    for &kind in ErrorKind::ALL {
        let file = cases_dir().join(format!("{}.po", kind.name()));
        let on_command_line = COMMAND_LINE_KINDS.iter().any(|(k, _)| *k == kind);
        assert!(
            file.exists() != on_command_line,
            "{kind:?}: expected {} (or list it in COMMAND_LINE_KINDS with its test)",
            file.display()
        );
    }
}

#[test]
fn diagnostic() {
    insta::glob!("diagnostics", "*.po", |path| {
        let kind = kind_of(path);
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        let label = format!("tests/diagnostics/{file}");
        let src = std::fs::read_to_string(path).unwrap();
        let diags = poc_compiler::check_source(&src).expect_err(&format!("{label} must fail"));
        assert!(
            diags.iter().any(|d| d.kind == kind),
            "{label}: expected {kind:?}, got {diags:#?}"
        );
        let rendered = poc_grammar::diag::render_all(&diags, &label, &src);
        insta::assert_snapshot!(format!("{src}\n---\n{rendered}"));
    });
}

#[test]
fn bad_set_is_reported_with_hints() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../objectives/dpo.po");
    let src = std::fs::read_to_string(path).unwrap();
    let obj = poc_compiler::check_source(&src).unwrap();
    let sets = ["bta=0.2", "beta=fast", "label_smoothing=0.9", "beta"].map(String::from);
    let diags = obj.params_with(&sets).unwrap_err();
    assert_eq!(
        diags.len(),
        4,
        "all four bad --set flags are reported together"
    );
    assert!(diags.iter().all(|d| d.kind == ErrorKind::BadSet));
    insta::assert_snapshot!("bad_set", poc_grammar::diag::render_all(&diags, "poc", ""));
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
