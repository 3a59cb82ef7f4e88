//! Pipeline stages as typed values, and the one runner that runs them as child `poc` commands.
//!
//! A pipeline (`poc mpo`, `poc bench align`) runs each of its training and data stages as the
//! `poc` command a user would type, so a stage does exactly what that command does and leaves
//! the same files. A stage is described by a [`Stage`] value (the typed arguments of the child
//! command); the binary, which owns the flags, turns it into a command line ([`CommandLine`]),
//! and tests there check that the command line parses back to the same value. Stages are
//! skipped when their output exists ([`finished`]), and a training stage stopped part-way
//! continues from its latest checkpoint ([`latest_checkpoint`]).

use crate::mpo::MpoOptions;
use crate::split::SplitOptions;
use crate::world::WorldOptions;
use crate::{Error, Result, jsonl};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

/// `poc run OBJECTIVE ...`: the flags a pipeline sets; every other flag keeps its default.
#[derive(Debug, Clone, PartialEq)]
pub struct RunStage {
    /// A `.po` file or a shipped objective name.
    pub objective: String,
    /// `--model`: a model directory or a preset.
    pub model: String,
    /// `--data`: TRL preference (or SFT) JSONL.
    pub data: Option<PathBuf>,
    /// `--eval-data`: held-out rows.
    pub eval_data: Option<PathBuf>,
    /// `--eval-every` (0: only after the last step).
    pub eval_every: usize,
    /// `--reward-model`: the reward model of an on-policy objective.
    pub reward_model: Option<PathBuf>,
    /// `--reward world`: score rollouts with the synthetic world's r*.
    pub world_reward: bool,
    /// `--prompts`: the prompts of an on-policy objective.
    pub prompts: Option<PathBuf>,
    /// `--out`: the run directory.
    pub out: PathBuf,
    /// `--max-steps`.
    pub max_steps: usize,
    /// `--batch-size`.
    pub batch_size: usize,
    /// `--seed`.
    pub seed: u64,
    /// `--lr` (else `poc run`'s default for the model).
    pub lr: Option<f64>,
    /// `--device`.
    pub device: String,
    /// `--save-every`.
    pub save_every: usize,
    /// `--max-new-tokens` (on-policy rollouts).
    pub max_new_tokens: usize,
    /// `--lora RANK`.
    pub lora: Option<usize>,
    /// `--set NAME=VALUE`, in order.
    pub sets: Vec<String>,
    /// `--resume CHECKPOINT_DIR`.
    pub resume: Option<PathBuf>,
    /// `--no-progress`.
    pub no_progress: bool,
    /// `--nproc N`: data-parallel in N processes.
    pub nproc: Option<usize>,
}

impl RunStage {
    /// A run of `objective` to `out` for `max_steps` steps, every other flag at `poc run`'s
    /// default.
    pub fn new(objective: impl Into<String>, out: PathBuf, max_steps: usize) -> RunStage {
        RunStage {
            objective: objective.into(),
            model: "tiny".into(),
            data: None,
            eval_data: None,
            eval_every: 0,
            reward_model: None,
            world_reward: false,
            prompts: None,
            out,
            max_steps,
            batch_size: 8,
            seed: 42,
            lr: None,
            device: "cpu".into(),
            save_every: 0,
            max_new_tokens: 24,
            lora: None,
            sets: Vec::new(),
            resume: None,
            no_progress: false,
            nproc: None,
        }
    }
}

/// One stage of a pipeline: a `poc` command with typed arguments.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// `poc world`.
    World(WorldOptions),
    /// `poc run`.
    Run(RunStage),
    /// `poc split`.
    Split(SplitOptions),
    /// `poc mpo`.
    Mpo(MpoOptions),
}

/// Writes a stage's command line (without the program): the binary's, which owns the flags.
pub type CommandLine = fn(&Stage) -> Vec<OsString>;

/// What the user sees of a child command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Its output goes straight to the terminal.
    Stream,
    /// Its output is kept and shown (the end of its stderr) only when it fails.
    OnFailure,
}

/// Why a stage did not finish.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The child could not be started.
    #[error("{0}")]
    Spawn(std::io::Error),
    /// The child ran and failed.
    #[error("{status}")]
    Failed {
        /// Its exit status.
        status: ExitStatus,
        /// The last lines of its stderr ([`Output::OnFailure`]; empty when streamed).
        stderr_tail: String,
    },
}

/// Lines of a failed child's stderr shown to the user.
const TAIL_LINES: usize = 20;

/// Runs stages as child processes of one program.
#[derive(Debug, Clone)]
pub struct Runner {
    program: PathBuf,
    command_line: CommandLine,
    /// Intra-op threads of each child (`OMP_NUM_THREADS`), when set.
    threads: Option<usize>,
}

impl Runner {
    /// A runner of `program` (the `poc` binary) whose command lines `command_line` writes.
    pub fn new(program: PathBuf, command_line: CommandLine) -> Runner {
        Runner {
            program,
            command_line,
            threads: None,
        }
    }

    /// The same runner whose children use `n` intra-op threads each (libtorch reads
    /// `OMP_NUM_THREADS` at start): for running several small stages side by side.
    pub fn with_threads(mut self, n: usize) -> Runner {
        self.threads = Some(n.max(1));
        self
    }

    /// A runner of this very executable (a pipeline started from the `poc` binary).
    pub fn this_executable(command_line: CommandLine) -> Result<Runner> {
        let exe = std::env::current_exe()
            .map_err(|e| Error::Internal(format!("cannot find the poc binary: {e}")))?;
        Ok(Runner::new(exe, command_line))
    }

    /// The command line of `stage`, as a user would type it (for logs).
    pub fn shown(&self, stage: &Stage) -> String {
        let words: Vec<String> = (self.command_line)(stage)
            .iter()
            .map(|w| w.to_string_lossy().into_owned())
            .collect();
        format!("poc {}", words.join(" "))
    }

    /// Runs `stage` and waits for it.
    pub fn run(&self, stage: &Stage, output: Output) -> Result<(), StageError> {
        let mut cmd = Command::new(&self.program);
        cmd.args((self.command_line)(stage));
        if let Some(n) = self.threads {
            cmd.env("OMP_NUM_THREADS", n.to_string())
                .env("MKL_NUM_THREADS", n.to_string());
        }
        match output {
            Output::Stream => {
                let status = cmd.status().map_err(StageError::Spawn)?;
                if status.success() {
                    return Ok(());
                }
                Err(StageError::Failed {
                    status,
                    stderr_tail: String::new(),
                })
            }
            Output::OnFailure => {
                let out = cmd.output().map_err(StageError::Spawn)?;
                if out.status.success() {
                    return Ok(());
                }
                let stderr = String::from_utf8_lossy(&out.stderr);
                let lines: Vec<&str> = stderr.lines().collect();
                let tail = &lines[lines.len().saturating_sub(TAIL_LINES)..];
                Err(StageError::Failed {
                    status: out.status,
                    stderr_tail: tail.join("\n"),
                })
            }
        }
    }
}

/// The final checkpoint of a `poc run` of `steps` steps to `dir`, once it has been written.
pub fn finished(dir: &Path, steps: usize) -> Option<PathBuf> {
    model_dir(dir.join(format!("checkpoint-{steps}")))
}

/// `dir`, if it holds a written model (its config.json).
pub fn model_dir(dir: PathBuf) -> Option<PathBuf> {
    dir.join("config.json").is_file().then_some(dir)
}

/// The latest resumable checkpoint before step `steps` of a `poc run` of `steps` steps to
/// `dir`, if it stopped part-way: `checkpoint-K` with K < `steps` whose `trainer_state.json`
/// says the run was to take `steps` steps (a checkpoint of a run with another budget, whose
/// learning-rate schedule differs, is not continued). `Err` lists such other checkpoints.
pub fn latest_checkpoint(dir: &Path, steps: usize) -> Result<Option<PathBuf>, Vec<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(None);
    };
    let mut mine = Vec::new();
    let mut others = Vec::new();
    for e in entries.flatten() {
        let Some(k) = e
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("checkpoint-"))
            .and_then(|k| k.parse::<usize>().ok())
        else {
            continue;
        };
        let total = jsonl::read(&e.path().join("trainer_state.json"))
            .and_then(|s| s["total_steps"].as_u64());
        match total {
            Some(t) if t as usize == steps && k < steps => mine.push((k, e.path())),
            // This run's final checkpoint: finished, not a point to continue from.
            Some(t) if t as usize == steps => {}
            Some(_) => others.push(e.path()),
            None => {}
        }
    }
    match mine.into_iter().max_by_key(|(k, _)| *k) {
        Some((_, p)) => Ok(Some(p)),
        None if others.is_empty() => Ok(None),
        None => Err(others),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(dir: &Path, step: usize, total: usize) {
        let ck = dir.join(format!("checkpoint-{step}"));
        std::fs::create_dir_all(&ck).unwrap();
        let state = serde_json::json!({"step": step, "total_steps": total});
        std::fs::write(ck.join("trainer_state.json"), state.to_string()).unwrap();
    }

    #[test]
    fn a_stage_continues_only_a_run_with_its_own_budget() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        assert_eq!(latest_checkpoint(&dir.join("none"), 10), Ok(None));
        // A run of 10 steps stopped after 4 (checkpoints 2 and 4): continue from 4.
        checkpoint(dir, 2, 10);
        checkpoint(dir, 4, 10);
        assert_eq!(
            latest_checkpoint(dir, 10),
            Ok(Some(dir.join("checkpoint-4")))
        );
        // Asked for 20 steps: those checkpoints belong to another schedule.
        assert_eq!(
            latest_checkpoint(dir, 20).map_err(|v| v.len()),
            Err(2),
            "checkpoints of a 10-step run are not continued by a 20-step one"
        );
        // The finished step is not a resume point.
        checkpoint(dir, 10, 10);
        assert_eq!(
            latest_checkpoint(dir, 10),
            Ok(Some(dir.join("checkpoint-4")))
        );
    }

    #[test]
    fn a_failed_child_shows_the_end_of_its_stderr() {
        // `sh -c` as the program: the "command line" is a script that fails after 25 lines.
        fn script(_: &Stage) -> Vec<OsString> {
            vec![
                "-c".into(),
                "for i in $(seq 1 25); do echo line$i >&2; done; exit 3".into(),
            ]
        }
        let runner = Runner::new(PathBuf::from("sh"), script);
        let stage = Stage::World(WorldOptions::default());
        match runner.run(&stage, Output::OnFailure) {
            Err(StageError::Failed {
                status,
                stderr_tail,
            }) => {
                assert_eq!(status.code(), Some(3));
                assert!(stderr_tail.starts_with("line6\n") && stderr_tail.ends_with("line25"));
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}
