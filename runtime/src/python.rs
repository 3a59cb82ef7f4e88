//! The Python that poc's parity checks and PyTorch baselines run (torch, transformers, PEFT):
//! one place that says where it is and whether it has what a check needs.
//!
//! `POC_PYTHON` names the interpreter. Without it, poc uses the venv `scripts/setup.sh`
//! creates, `$POC_CACHE/torch-2.9.0/bin/python` (`POC_CACHE` defaults to `~/.cache/poc`),
//! which has all three.

use std::path::{Path, PathBuf};
use std::process::Command;

/// How to get a Python that has what poc's checks import.
pub const HOW_TO_GET_IT: &str = "run scripts/setup.sh (it creates the venv with torch, transformers and peft), or set POC_PYTHON to a Python that has them";

/// Why there is no usable Python.
#[derive(Debug, thiserror::Error)]
pub enum PythonError {
    /// The interpreter does not run.
    #[error("no Python at `{}` ({reason}); {HOW_TO_GET_IT}", path.display())]
    Missing {
        /// The interpreter looked for.
        path: PathBuf,
        /// Why it does not run.
        reason: String,
    },
    /// It runs but lacks a module.
    #[error("`{}` cannot import {modules}: {message}; {HOW_TO_GET_IT}", path.display())]
    Modules {
        /// The interpreter.
        path: PathBuf,
        /// The modules asked for, comma-separated.
        modules: String,
        /// The last line Python printed.
        message: String,
    },
}

/// The interpreter: `POC_PYTHON`, else the venv of `scripts/setup.sh`.
pub fn interpreter() -> PathBuf {
    if let Some(p) = std::env::var_os("POC_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("POC_CACHE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/poc")
        });
    cache.join("torch-2.9.0/bin/python")
}

/// [`interpreter`], checked to import every module of `modules` (e.g. `["transformers"]`).
pub fn with_modules(modules: &[&str]) -> Result<PathBuf, PythonError> {
    let path = interpreter();
    check(&path, modules)?;
    Ok(path)
}

/// Whether `python` runs and imports `modules`.
fn check(python: &Path, modules: &[&str]) -> Result<(), PythonError> {
    let imports: String = modules.iter().map(|m| format!(", {m}")).collect();
    let script = format!("import sys{imports}");
    let out = Command::new(python)
        .args(["-c", &script])
        .output()
        .map_err(|e| PythonError::Missing {
            path: python.to_path_buf(),
            reason: e.to_string(),
        })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(PythonError::Modules {
        path: python.to_path_buf(),
        modules: modules.join(", "),
        message: stderr.lines().last().unwrap_or("").trim().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_python_says_how_to_get_one() {
        let e = check(Path::new("/nonexistent/bin/python"), &["transformers"]).unwrap_err();
        assert!(matches!(e, PythonError::Missing { .. }), "{e:?}");
        let message = e.to_string();
        assert!(
            message.contains("/nonexistent/bin/python") && message.contains("scripts/setup.sh"),
            "{message}"
        );
    }
}
