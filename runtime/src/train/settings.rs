//! What a run's trajectory depends on (objective, parameters, model, data, batch, learning-rate
//! schedule, seed, ...), recorded in every checkpoint so that `--resume` can tell a continued run
//! from a different one: a resumed run whose settings differ from its checkpoint's is refused,
//! each difference listed, unless the user names the ones that may change (`--allow-change`).
//!
//! Keys are the flags' names (`lr`, `batch-size`, `set.beta`, ...), so a message and the flag
//! that accepts it speak the same words. Settings that do not change the numbers a step computes
//! (where checkpoints go, how often, the device's count of processes) are not recorded here: the
//! global batch is per step whatever the number of processes, so a run may resume on another
//! world size.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::path::Path;

/// The settings of a run, by flag name, in a fixed order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings(pub Map<String, Value>);

/// One setting that differs between a checkpoint and the run resuming it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The setting (a flag's name, or `set.NAME` for an objective parameter).
    pub key: String,
    /// Its value in the checkpoint (null: not recorded).
    pub was: Value,
    /// Its value now (null: not set).
    pub now: Value,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} in the checkpoint, {} now",
            self.key,
            shown(&self.was),
            shown(&self.now)
        )
    }
}

/// A value as a message shows it: strings without quotes, null as `none`.
fn shown(v: &Value) -> String {
    match v {
        Value::Null => "none".into(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

impl Settings {
    /// Records `key` as `value`.
    pub fn set(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        self.0.insert(key.to_string(), value.into());
        self
    }

    /// The settings a checkpoint's `trainer_state.json` recorded (`None`: a checkpoint of a poc
    /// that recorded none).
    pub fn of_state(state: &Value) -> Option<Settings> {
        state["settings"].as_object().cloned().map(Settings)
    }

    /// The settings recorded in checkpoint `dir` (`None` when it has none, or no readable
    /// `trainer_state.json`: the resume itself reports that).
    pub fn of_checkpoint(dir: &Path) -> Option<Settings> {
        let text = std::fs::read_to_string(dir.join("trainer_state.json")).ok()?;
        Settings::of_state(&serde_json::from_str(&text).ok()?)
    }

    /// Every setting that differs from `was` (the checkpoint's), in this run's order, then any
    /// the checkpoint recorded that this run has not.
    pub fn changes(&self, was: &Settings) -> Vec<Change> {
        let mut out = Vec::new();
        for (k, now) in &self.0 {
            let before = was.0.get(k).cloned().unwrap_or(Value::Null);
            if &before != now {
                out.push(Change {
                    key: k.clone(),
                    was: before,
                    now: now.clone(),
                });
            }
        }
        for (k, before) in &was.0 {
            if !self.0.contains_key(k) {
                out.push(Change {
                    key: k.clone(),
                    was: before.clone(),
                    now: Value::Null,
                });
            }
        }
        out
    }

    /// The keys a `--allow-change` may name: this run's, and `set` for every parameter.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.0.keys().cloned().collect();
        if keys.iter().any(|k| k.starts_with("set.")) {
            keys.push("set".into());
        }
        keys
    }
}

/// Whether `allowed` (the `--allow-change` keys) covers the change of `key`: named itself, or
/// `set` for any objective parameter.
pub fn allows(allowed: &[String], key: &str) -> bool {
    allowed
        .iter()
        .any(|a| a == key || (a == "set" && key.starts_with("set.")))
}

/// A short digest (the first 12 hex digits of SHA-256) of `bytes`, for recording what data or
/// formula a run read without recording it.
pub fn digest(bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(bytes);
    short(h)
}

/// A digest of token sequences (with their lengths, so different splits differ).
pub fn digest_tokens<'a>(seqs: impl Iterator<Item = &'a [u32]>) -> String {
    let mut h = Sha256::new();
    for s in seqs {
        h.update((s.len() as u64).to_le_bytes());
        for t in s {
            h.update(t.to_le_bytes());
        }
    }
    short(h)
}

/// A digest of preference pairs: each pair's tokens (chosen, rejected, where the completions
/// start) and numeric columns.
pub fn digest_pairs(pairs: &[crate::data::Pair]) -> String {
    let mut h = Sha256::new();
    for p in pairs {
        for t in [&p.chosen, &p.rejected] {
            h.update((t.ids.len() as u64).to_le_bytes());
            for id in &t.ids {
                h.update(id.to_le_bytes());
            }
            h.update((t.completion_start as u64).to_le_bytes());
        }
        for (k, v) in &p.columns {
            h.update(k.as_bytes());
            h.update(v.to_le_bytes());
        }
    }
    short(h)
}

/// The first 12 hex digits of a finished SHA-256.
fn short(h: Sha256) -> String {
    h.finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, Value)]) -> Settings {
        let mut s = Settings::default();
        for (k, v) in pairs {
            s.set(k, v.clone());
        }
        s
    }

    #[test]
    fn changes_list_each_difference_both_ways() {
        let was = settings(&[
            ("objective", "dpo (abc)".into()),
            ("lr", 0.001.into()),
            ("set.beta", 0.1.into()),
            ("old-only", 1.into()),
        ]);
        let now = settings(&[
            ("objective", "dpo (abc)".into()),
            ("lr", 0.002.into()),
            ("set.beta", 0.1.into()),
            ("new-only", 2.into()),
        ]);
        let c = now.changes(&was);
        let keys: Vec<&str> = c.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["lr", "new-only", "old-only"]);
        assert_eq!(c[0].to_string(), "lr: 0.001 in the checkpoint, 0.002 now");
        assert_eq!(c[1].to_string(), "new-only: none in the checkpoint, 2 now");
        assert!(now.changes(&now).is_empty());
    }

    #[test]
    fn set_allows_every_parameter_and_keys_name_it() {
        assert!(allows(&["set".into()], "set.beta"));
        assert!(allows(&["set.beta".into()], "set.beta"));
        assert!(!allows(&["set.beta".into()], "set.gamma"));
        assert!(!allows(&["set".into()], "lr"));
        let s = settings(&[("lr", 1.into()), ("set.beta", 0.1.into())]);
        assert_eq!(s.keys(), ["lr", "set.beta", "set"]);
    }

    #[test]
    fn digests_tell_splits_apart() {
        let a = digest_tokens([&[1u32, 2][..], &[3][..]].into_iter());
        let b = digest_tokens([&[1u32][..], &[2, 3][..]].into_iter());
        assert_ne!(a, b);
        assert_eq!(a.len(), 12);
        assert_eq!(digest(b"x"), digest(b"x"));
    }
}
