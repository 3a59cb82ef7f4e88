//! `poc list`: the shipped objectives, one line each.

use crate::edge::Failure;
use poc_pipelines::library;

/// Prints each shipped objective's name and the first line of its documentation.
pub fn run() -> Result<(), Failure> {
    for (name, src) in library::SHIPPED {
        let summary = poc_compiler::check_source(src)
            .ok()
            .and_then(|o| o.docs.first().cloned())
            .unwrap_or_default();
        println!("{name:<20} {summary}");
    }
    Ok(())
}
