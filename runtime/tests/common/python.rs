//! The one policy for tests that need Python (transformers and PEFT parity checks), shared by
//! the test crates: under CI (`CI=true`) a missing Python or module fails the test and says
//! how to get it; elsewhere the test is skipped with a printed notice. Which Python:
//! [`poc_runtime::python::interpreter`] (`POC_PYTHON`, else the venv of scripts/setup.sh).

use std::io::Write;
use std::path::PathBuf;

/// The Python that imports `modules`, for the test `test`; `None`, after printing why, when
/// the test should be skipped.
///
/// # Panics
/// Under CI, when there is no such Python.
pub fn python_with(test: &str, modules: &[&str]) -> Option<PathBuf> {
    match poc_runtime::python::with_modules(modules) {
        Ok(python) => Some(python),
        Err(e) if under_ci() => panic!("{test} needs Python under CI: {e}"),
        Err(e) => {
            // Straight to stderr: the test harness would capture `eprintln!` of a passing test.
            let _ = writeln!(
                std::io::stderr(),
                "skipped {test}: {e} (under CI=true this is a failure)"
            );
            None
        }
    }
}

/// Whether the tests run under CI (`CI=true`, as scripts/test.sh sets it).
fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}
