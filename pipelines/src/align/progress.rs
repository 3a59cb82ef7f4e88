//! The benchmark's stage lines on stderr.

use crate::Result;
use std::time::Instant;

/// The stage line on stderr: `[align 3/20 0:41] train dpo seed 1, 150 steps ... done (12s)`.
pub struct Progress {
    /// Stages finished or skipped.
    pub done: usize,
    /// Stages in all.
    pub total: usize,
    /// When the benchmark started.
    pub started: Instant,
}

impl Progress {
    /// The stage lines of a benchmark of `total` stages, starting now.
    pub fn new(total: usize) -> Progress {
        Progress {
            done: 0,
            total,
            started: Instant::now(),
        }
    }

    fn head(&self, stage: &str, what: &str) -> String {
        let s = self.started.elapsed().as_secs();
        format!(
            "[align {}/{} {}:{:02}] {stage}: {what}",
            self.done + 1,
            self.total,
            s / 60,
            s % 60
        )
    }

    /// A stage done before.
    pub fn skip(&mut self, stage: &str, what: &str) {
        eprintln!("{} (done before, skipped)", self.head(stage, what));
        self.done += 1;
    }

    /// A stage starts.
    pub fn begin(&mut self, stage: &str, what: &str) {
        eprintln!("{} ...", self.head(stage, what));
    }

    /// A stage finished.
    pub fn end(&mut self) {
        self.done += 1;
    }

    /// The stage `what` (begun earlier, perhaps among others) finished after `seconds`.
    pub fn finished(&mut self, what: &str, seconds: f64) {
        self.done += 1;
        eprintln!("    {what}: finished in {seconds:.0}s");
    }

    /// Runs `work` as a stage unless it is `done`, with its stage lines.
    pub fn stage(
        &mut self,
        stage: &str,
        what: &str,
        done: bool,
        work: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        if done {
            self.skip(stage, what);
            return Ok(());
        }
        self.begin(stage, what);
        let t = Instant::now();
        work()?;
        eprintln!("    finished in {:.0}s", t.elapsed().as_secs_f64());
        self.end();
        Ok(())
    }
}
