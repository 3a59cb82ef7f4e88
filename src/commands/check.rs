//! `poc check`: every error of every objective with its place, or nothing.

use crate::edge::{Failure, check, load};

/// Checks `files` (paths or shipped names); the rendered diagnostics of all of them as one
/// user error.
pub fn run(files: &[String]) -> Result<(), Failure> {
    let mut failed = String::new();
    for f in files {
        let (label, src) = load(f)?;
        if let Err(d) = check(&label, &src) {
            failed.push_str(&poc_grammar::diag::render_all(&d, &label, &src));
            failed.push('\n');
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Failure::User(failed))
    }
}
