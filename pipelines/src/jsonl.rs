//! JSON input shared by the commands: rows of JSON-lines files (`poc eval`, `poc plot RUN_DIR`)
//! and whole JSON files that runs leave behind (trainer states, pipeline summaries).

use serde_json::{Map, Value};
use std::path::Path;

/// The JSON file at `path`, if it exists and parses.
pub fn read(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// Line `lineno` (1-based) of file `label` as a JSON object: `Ok(None)` for a blank line, an
/// error naming `label:lineno` for anything that is not an object.
pub fn object(
    line: &str,
    label: impl std::fmt::Display,
    lineno: usize,
) -> Result<Option<Map<String, Value>>, String> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    match serde_json::from_str::<Value>(line) {
        Ok(Value::Object(o)) => Ok(Some(o)),
        Ok(_) => Err(format!("{label}:{lineno}: expected a JSON object")),
        Err(e) => Err(format!("{label}:{lineno}: invalid JSON: {e}")),
    }
}
