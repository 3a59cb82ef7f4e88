//! Checkpoints: `OUT/checkpoint-N`, written atomically after a step, and read back by
//! `--resume` so the continued run takes exactly the steps the uninterrupted one would have.

use super::optimizer::{Optimizer, ParamIds};
use super::{TrainError, TrainOptions};
use crate::data::Tok;
use crate::model::{Llama, load};
use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::tensor::Tensor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Where a resumed run picks up: the optimizer step, the epoch and batch within it, and the
/// optimizer state (AdamW moments), all from a checkpoint's `trainer_state.json` and
/// `optimizer.bin`.
pub struct Resume {
    /// The checkpoint.
    pub dir: PathBuf,
    /// Optimizer steps already taken.
    pub step: usize,
    /// Epochs started (batches of epoch e are shuffled with seed + e - 1).
    pub epoch: usize,
    /// Batches of the current epoch already consumed.
    pub cursor: usize,
    /// Serialized optimizer state.
    pub optimizer: Vec<u8>,
}

/// Gives parameters the ids they had when a checkpoint was written (in visiting order), so
/// the saved optimizer state, which is keyed by id, applies to them again.
struct SetIds {
    ids: Vec<u64>,
    next: usize,
}

impl ModuleMapper for SetIds {
    fn map_float<const D: usize>(&mut self, mut param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if let Some(&id) = self.ids.get(self.next) {
            param.id = ParamId::from(id);
        }
        self.next += 1;
        param
    }
}

/// Reads the resume state of checkpoint `dir` and re-keys `policy` (loaded from that
/// checkpoint) to the saved parameter ids.
pub fn load_resume(dir: &Path, policy: Llama) -> Result<(Llama, Resume), TrainError> {
    let state_path = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&state_path).map_err(|e| {
        TrainError::TrainerState(format!(
            "{}: {e} (is this a checkpoint written by poc run?)",
            state_path.display()
        ))
    })?;
    let state: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| TrainError::TrainerState(format!("{}: {e}", state_path.display())))?;
    // An on-policy run's data position follows from its step alone (its prompt order is
    // replayed), so its state has no epoch or cursor.
    let on_policy = state["on_policy"].as_bool() == Some(true);
    let field = |k: &str| match state[k].as_u64() {
        Some(v) => Ok(v as usize),
        None if on_policy && k != "step" => Ok(0),
        None => Err(TrainError::TrainerState(format!(
            "{}: lacks `{k}`",
            state_path.display()
        ))),
    };
    let ids: Vec<u64> = state["param_ids"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
        .unwrap_or_default();
    let params = ParamIds::of(&policy).0.len();
    if ids.len() != params {
        return Err(TrainError::TrainerState(format!(
            "{}: {} parameter ids for a model with {params} parameters",
            state_path.display(),
            ids.len(),
        )));
    }
    let opt_path = dir.join("optimizer.bin");
    let optimizer = std::fs::read(&opt_path).map_err(TrainError::io(&opt_path))?;
    let policy = policy.map(&mut SetIds { ids, next: 0 });
    let resume = Resume {
        dir: dir.to_path_buf(),
        step: field("step")?,
        epoch: field("epoch")?,
        cursor: field("cursor")?,
        optimizer,
    };
    Ok((policy, resume))
}

/// Writes a checkpoint directory atomically: everything goes to `NAME.tmp`, which is then
/// renamed into place. Holds the model in HF layout (adapters merged), the tokenizer, the
/// optimizer state and `trainer_state.json` (step, data position, parameter ids) for
/// `--resume`; under LoRA also the adapters alone in PEFT's layout, for `--resume` and PEFT.
#[allow(clippy::too_many_arguments)]
pub fn save_checkpoint(
    model: &Llama,
    base_model: &str,
    optimizer: &[u8],
    tok: &Tok,
    dir: &Path,
    state: &serde_json::Value,
    dtype: Option<load::SaveDtype>,
) -> Result<(), TrainError> {
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    let options = load::SaveOptions {
        dtype: dtype.unwrap_or_else(|| load::SaveDtype::of_config(&model.config)),
        ..load::SaveOptions::default()
    };
    load::save_with(model, &tmp, &options)?;
    load::save_adapters(model, &load::adapter_dir(&tmp), base_model)?;
    load::save_value_head(model, &tmp)?;
    tok.save(&tmp).map_err(TrainError::Tokenizer)?;
    load::write_atomic(&tmp.join("optimizer.bin"), optimizer)?;
    let ids = ParamIds::of(model);
    let mut state = state.clone();
    state["param_ids"] =
        serde_json::json!(ids.0.iter().map(|(id, _)| id.val()).collect::<Vec<_>>());
    let text = serde_json::to_string_pretty(&state)?;
    load::write_atomic(&tmp.join("trainer_state.json"), text.as_bytes())?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&tmp, dir).map_err(TrainError::io(dir))
}

/// When and where a run saves checkpoints: after the last step, every `save_every` steps, and
/// after the step during which Ctrl-C was pressed (then the run stops).
pub struct Checkpointer<'a> {
    opts: &'a TrainOptions,
    tok: &'a Tok,
    total: usize,
    stop: &'a AtomicBool,
    last: Option<PathBuf>,
    writes: bool,
}

impl<'a> Checkpointer<'a> {
    /// Checkpoints of a run of `total` steps into `opts.out`; `stop` is the Ctrl-C flag.
    pub fn new(opts: &'a TrainOptions, tok: &'a Tok, total: usize, stop: &'a AtomicBool) -> Self {
        Checkpointer {
            opts,
            tok,
            total,
            stop,
            last: None,
            writes: true,
        }
    }

    /// A run resumed from checkpoint `dir` (`None`: not resumed): until it saves, that is its
    /// last good checkpoint.
    pub fn resumed_from(mut self, dir: Option<&Path>) -> Self {
        self.last = dir.map(Path::to_path_buf);
        self
    }

    /// Whether this process writes the checkpoints (in a data-parallel run, rank 0 alone; the
    /// others still stop where it saves).
    pub fn writing(mut self, writes: bool) -> Self {
        self.writes = writes;
        self
    }

    /// The last checkpoint written, as error messages name it (`none` before the first).
    pub fn last(&self) -> String {
        self.last
            .as_ref()
            .map_or_else(|| "none".to_string(), |d| d.display().to_string())
    }

    /// After optimizer step `done` (1-based): writes `OUT/checkpoint-<done>` with `extra` in its
    /// trainer state when due; then, if interrupted, stops with an error naming the checkpoint.
    pub fn after_step(
        &mut self,
        done: usize,
        policy: &Llama,
        optimizer: &Optimizer,
        extra: serde_json::Value,
    ) -> Result<(), TrainError> {
        let interrupted = self.stop.load(Ordering::SeqCst);
        let every = self.opts.save_every;
        if done == self.total || interrupted || (every > 0 && done.is_multiple_of(every)) {
            let dir = self.opts.out.join(format!("checkpoint-{done}"));
            if !self.writes {
                // Another rank (rank 0) writes it.
                self.last = Some(dir);
                return self.stopped(interrupted, done);
            }
            let mut state = serde_json::json!({
                "step": done,
                "total_steps": self.total,
                "seed": self.opts.seed,
                "settings": self.opts.settings.0,
            });
            if let (Some(s), Some(e)) = (state.as_object_mut(), extra.as_object()) {
                s.extend(e.clone());
            }
            let bytes = optimizer.state()?;
            save_checkpoint(
                policy,
                &self.opts.base_model,
                &bytes,
                self.tok,
                &dir,
                &state,
                self.opts.save_dtype,
            )?;
            if let Some(keep) = self.opts.save_total_limit {
                prune(&self.opts.out, keep, done)?;
            }
            self.last = Some(dir);
        }
        self.stopped(interrupted, done)
    }

    /// The interruption error after step `done` when `interrupted`.
    fn stopped(&self, interrupted: bool, done: usize) -> Result<(), TrainError> {
        if interrupted {
            return Err(TrainError::Interrupted {
                step: done,
                checkpoint: self.last(),
            });
        }
        Ok(())
    }
}

/// Deletes the oldest `checkpoint-<step>` directories of `out` (by step) until `keep` remain,
/// never the one of `just_saved`; `keep` counts it. Temporary `.tmp` directories and other
/// files are left alone.
fn prune(out: &Path, keep: usize, just_saved: usize) -> Result<(), TrainError> {
    let entries = std::fs::read_dir(out).map_err(TrainError::io(out))?;
    let mut steps: Vec<usize> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("checkpoint-")?
                .parse::<usize>()
                .ok()
        })
        .filter(|&s| s != just_saved)
        .collect();
    steps.sort_unstable();
    let excess = (steps.len() + 1).saturating_sub(keep.max(1));
    for step in &steps[..excess.min(steps.len())] {
        let dir = out.join(format!("checkpoint-{step}"));
        std::fs::remove_dir_all(&dir).map_err(TrainError::io(&dir))?;
    }
    Ok(())
}
