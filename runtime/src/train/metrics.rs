//! A run's `metrics.jsonl`: one [`StepLog`] per line.

use super::{StepLog, TrainError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The open `OUT/metrics.jsonl` of a run.
pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    /// Creates `out/metrics.jsonl` afresh; a run resumed at step `resumed` keeps the lines
    /// logged up to that step and continues after them.
    pub fn open(out: &Path, resumed: Option<usize>) -> Result<MetricsLog, TrainError> {
        let path = out.join("metrics.jsonl");
        let kept = resumed.map_or_else(String::new, |step| lines_up_to(&path, step));
        let mut file = std::fs::File::create(&path).map_err(TrainError::io(&path))?;
        file.write_all(kept.as_bytes())
            .map_err(TrainError::io(&path))?;
        Ok(MetricsLog { path, file })
    }

    /// Appends `log` as one JSON line.
    pub fn write(&mut self, log: &StepLog) -> Result<(), TrainError> {
        let line = serde_json::to_string(log)?;
        writeln!(self.file, "{line}").map_err(TrainError::io(&self.path))
    }
}

/// The lines of a run's `metrics.jsonl` logged at or before `step`; empty when there is no
/// such file.
fn lines_up_to(metrics: &Path, step: usize) -> String {
    let mut kept = String::new();
    if let Ok(old) = std::fs::read_to_string(metrics) {
        for line in old.lines() {
            let at = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["step"].as_u64());
            if at.is_some_and(|s| s as usize <= step) {
                kept.push_str(line);
                kept.push('\n');
            }
        }
    }
    kept
}
