//! JSON-lines input shared by the commands that read rows (`poc eval`, `poc plot RUN_DIR`).

use serde_json::{Map, Value};

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
