//! Hugging Face Hub names: `--model ORG/NAME[@REVISION]` and `--data ORG/NAME[@REVISION]`,
//! resolved from the local Hugging Face cache as huggingface_hub (and so transformers and
//! datasets) lays it out, with the files that are missing downloaded into that same cache.
//!
//! - [`Hub`]: where the cache is and how the Hub is reached, read from the environment as
//!   huggingface_hub reads it (`HF_HUB_CACHE`, `HF_HOME`, `HF_ENDPOINT`, `HF_TOKEN`,
//!   `HF_HUB_OFFLINE`);
//! - [`cache`]: the cache layout (`models--ORG--NAME/refs/<revision>` holds a commit,
//!   `snapshots/<commit>/` its files);
//! - [`download`]: the files a model or a dataset split needs, taken from the cache or fetched
//!   with the `hf-hub` crate's blocking client (progress through [`set_reporter`]);
//! - [`splits`]: which files of a dataset repository hold a split (the `datasets` library's
//!   conventions for repositories without a loading script).
//!
//! A snapshot that already holds every file a command needs is used without touching the
//! network; only missing files are fetched, at the commit the cache already has for the
//! revision (so one snapshot never mixes two commits).

pub mod cache;
pub mod download;
pub mod splits;

use std::path::PathBuf;
use std::sync::OnceLock;

pub use download::{Want, dataset_split, model};

/// The Hub's address when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// What a repository holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    /// A model (`models--ORG--NAME` in the cache).
    Model,
    /// A dataset (`datasets--ORG--NAME` in the cache).
    Dataset,
}

impl RepoKind {
    /// The plural the cache and the Hub's API name this kind by.
    fn plural(self) -> &'static str {
        match self {
            RepoKind::Model => "models",
            RepoKind::Dataset => "datasets",
        }
    }
}

/// A repository on the Hub at a revision: `ORG/NAME[@REVISION]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoId {
    /// Model or dataset.
    pub kind: RepoKind,
    /// `ORG/NAME`.
    pub repo: String,
    /// A branch, a tag or a commit hash (`main` by default).
    pub revision: String,
}

impl RepoId {
    /// `name` as a repository of `kind` when it looks like a Hub id: `ORG/NAME` (letters,
    /// digits, `-`, `_`, `.`; neither part starting with `.` or `-`, no `--` or `..`), optionally
    /// followed by `@REVISION`. A path such as `./x`, `/x` or `a/b/c`, or a name ending in a
    /// data file's extension (`.jsonl`, `.json`, `.parquet`), is not one.
    pub fn parse(name: &str, kind: RepoKind) -> Option<RepoId> {
        let (repo, revision) = match name.split_once('@') {
            Some((repo, revision)) if !revision.is_empty() && !revision.contains("..") => {
                (repo, revision)
            }
            Some(_) => return None,
            None => (name, "main"),
        };
        let (org, rest) = repo.split_once('/')?;
        let part = |s: &str| {
            !s.is_empty()
                && s.len() <= 96
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && !s.starts_with(['.', '-'])
                && !s.ends_with(['.', '-'])
                && !s.contains("--")
                && !s.contains("..")
        };
        let data_file = [".jsonl", ".json", ".parquet"]
            .iter()
            .any(|ext| rest.to_ascii_lowercase().ends_with(ext));
        (part(org) && part(rest) && !data_file).then(|| RepoId {
            kind,
            repo: repo.to_string(),
            revision: revision.to_string(),
        })
    }

    /// The repository's folder in the cache: `models--ORG--NAME` or `datasets--ORG--NAME`.
    pub fn folder(&self) -> String {
        format!("{}--{}", self.kind.plural(), self.repo.replace('/', "--"))
    }

    /// Whether the revision is a full commit hash (40 hexadecimal digits), used as it is.
    pub fn is_commit(&self) -> bool {
        is_commit(&self.revision)
    }
}

/// Whether `s` is a full commit hash.
pub(crate) fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl std::fmt::Display for RepoId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            RepoKind::Model => "model",
            RepoKind::Dataset => "dataset",
        };
        write!(f, "{kind} {}@{}", self.repo, self.revision)
    }
}

/// Where the cache is and how the Hub is reached.
#[derive(Clone, PartialEq, Eq)]
pub struct Hub {
    /// The hub cache directory (holding `models--ORG--NAME`, `datasets--ORG--NAME`).
    pub cache: PathBuf,
    /// The Hub's address, without a trailing `/`.
    pub endpoint: String,
    /// The access token sent with every request (gated and private repositories need one).
    pub token: Option<String>,
    /// Never touch the network: only what the cache holds is used.
    pub offline: bool,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("Hub")
            .field("cache", &self.cache)
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("offline", &self.offline)
            .finish()
    }
}

impl Hub {
    /// The settings huggingface_hub reads from the environment.
    pub fn from_env() -> Hub {
        Hub::from_vars(|name| std::env::var(name).ok())
    }

    /// The settings from the variables `var` returns, with huggingface_hub's rules:
    /// - cache: `HF_HUB_CACHE`, else `HUGGINGFACE_HUB_CACHE`, else `HF_HOME/hub`, where
    ///   `HF_HOME` defaults to `XDG_CACHE_HOME/huggingface`, and that to
    ///   `~/.cache/huggingface`;
    /// - endpoint: `HF_ENDPOINT`, else [`DEFAULT_ENDPOINT`];
    /// - token: `HF_TOKEN`, else `HUGGING_FACE_HUB_TOKEN`, else the file `HF_TOKEN_PATH`
    ///   (default `HF_HOME/token`, where `hf auth login` writes it);
    /// - offline: `HF_HUB_OFFLINE` (or transformers' `TRANSFORMERS_OFFLINE`) set to `1`, `ON`,
    ///   `YES` or `TRUE`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Hub {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let home = || PathBuf::from(var("HOME").unwrap_or_default());
        let expand = |p: String| match p.strip_prefix("~/") {
            Some(rest) => home().join(rest),
            None if p == "~" => home(),
            None => PathBuf::from(p),
        };
        let hf_home = var("HF_HOME").map(expand).unwrap_or_else(|| {
            var("XDG_CACHE_HOME")
                .map(expand)
                .unwrap_or_else(|| home().join(".cache"))
                .join("huggingface")
        });
        let cache = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(expand)
            .unwrap_or_else(|| hf_home.join("hub"));
        let endpoint = var("HF_ENDPOINT")
            .map(|e| e.trim().trim_end_matches('/').to_string())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let token = var("HF_TOKEN")
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| {
                let path = var("HF_TOKEN_PATH")
                    .map(expand)
                    .unwrap_or_else(|| hf_home.join("token"));
                std::fs::read_to_string(path).ok()
            })
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let truthy = |name: &str| {
            var(name).is_some_and(|v| {
                matches!(
                    v.trim().to_ascii_uppercase().as_str(),
                    "1" | "ON" | "YES" | "TRUE"
                )
            })
        };
        Hub {
            cache: std::path::absolute(&cache).unwrap_or(cache),
            endpoint,
            token,
            offline: truthy("HF_HUB_OFFLINE") || truthy("TRANSFORMERS_OFFLINE"),
        }
    }
}

impl Hub {
    /// These settings with the cache as an absolute path (hf-hub links snapshot files to blobs
    /// by relative paths computed from absolute ones).
    pub(crate) fn absolute(&self) -> Hub {
        Hub {
            cache: std::path::absolute(&self.cache).unwrap_or_else(|_| self.cache.clone()),
            ..self.clone()
        }
    }
}

/// Why a Hub name could not be resolved; each message names the repository, the revision and
/// the file, and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// `HF_HUB_OFFLINE` is set and the cache lacks a file.
    #[error(
        "{id}: {file} is not in the Hugging Face cache at {} and HF_HUB_OFFLINE is set, so nothing is downloaded\n  = hint: run once without HF_HUB_OFFLINE=1 to download it, or point HF_HUB_CACHE (or HF_HOME) at a cache that holds it",
        cache.display()
    )]
    Offline {
        /// The repository.
        id: Box<RepoId>,
        /// What is missing: a file (in backticks) or a split.
        file: String,
        /// The cache directory looked in.
        cache: PathBuf,
    },
    /// The Hub refused the request (401 or 403): a gated or private repository, or a bad token.
    #[error("{id}: the Hub refused `{file}` ({status}{}){}\n  = hint: {}", detail(message), if *token {
        ": the token has no access to it"
    } else {
        ": the repository is gated or private (or does not exist), and no token was given"
    }, if *token {
        "accept the repository's conditions on its Hub page with the account the token belongs to, or set HF_TOKEN to a token that has access"
    } else {
        "accept the repository's conditions on its Hub page, then set HF_TOKEN to an access token of that account (or log in with `hf auth login`); check the name too"
    })]
    Refused {
        /// The repository.
        id: Box<RepoId>,
        /// The file asked for.
        file: String,
        /// The HTTP status.
        status: u16,
        /// Whether a token was sent.
        token: bool,
        /// What the Hub said, if anything.
        message: Option<String>,
    },
    /// The Hub has no such repository, revision or file (404).
    #[error("{id}: {} ({status}{})\n  = hint: {}", what.sentence(file), detail(message), what.hint())]
    NotFound {
        /// The repository.
        id: Box<RepoId>,
        /// The file asked for.
        file: String,
        /// What is missing.
        what: Missing,
        /// The HTTP status.
        status: u16,
        /// What the Hub said, if anything.
        message: Option<String>,
    },
    /// The Hub could not be reached, or answered with an error of its own.
    #[error(
        "{id}: cannot download `{file}` from {endpoint}: {message}\n  = hint: check the network (and HF_ENDPOINT); with HF_HUB_OFFLINE=1 only the cache at {} is used",
        cache.display()
    )]
    Network {
        /// The repository.
        id: Box<RepoId>,
        /// The file asked for.
        file: String,
        /// The Hub's address.
        endpoint: String,
        /// The cache directory.
        cache: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A dataset repository has no files for the split.
    #[error(
        "{id}: no data files for split `{split}`{}\n  = hint: pass --split with one of the splits found; a split's files are `data/{split}-00000-of-0000N.parquet`, `{split}/*.parquet` or `{split}.jsonl`-like names (.parquet, .jsonl, .json)",
        if available.is_empty() { " (the repository has no .parquet, .jsonl or .json files)".to_string() } else { format!(" (splits found: {})", available.join(", ")) }
    )]
    NoSplit {
        /// The repository.
        id: Box<RepoId>,
        /// The split asked for.
        split: String,
        /// The splits its files hold.
        available: Vec<String>,
    },
    /// A file of the cache could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A downloaded file is not what it should be (a weight index that does not parse).
    #[error("{id}: `{}` is not usable: {message}", path.display())]
    BadFile {
        /// The repository.
        id: Box<RepoId>,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// `": what the Hub said"`, or nothing.
fn detail(message: &Option<String>) -> String {
    message
        .as_deref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default()
}

/// What a 404 says is missing (the Hub's `X-Error-Code` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// The repository itself.
    Repo,
    /// The revision.
    Revision,
    /// The file at this revision.
    File,
}

impl Missing {
    fn sentence(self, file: &str) -> String {
        match self {
            Missing::Repo => "no such repository on the Hub".to_string(),
            Missing::Revision => "no such revision in the repository".to_string(),
            Missing::File => format!("the repository has no file `{file}` at this revision"),
        }
    }

    fn hint(self) -> &'static str {
        match self {
            Missing::Repo => {
                "check the name (ORG/NAME, as on its Hub page); a local directory or file of that name does not exist either"
            }
            Missing::Revision => "check the branch, tag or commit after `@`",
            Missing::File => {
                "poc reads checkpoints in safetensors (config.json, tokenizer.json, model.safetensors or model.safetensors.index.json with its shards); pick a revision or repository that has them"
            }
        }
    }
}

/// What a download reports as it goes: the binary draws a progress bar; without a reporter
/// ([`set_reporter`]) downloads are silent.
pub trait Reporter: Send + Sync {
    /// A download of `file` (of `repo`) of `bytes` bytes starts.
    fn start(&self, repo: &str, file: &str, bytes: u64);
    /// `bytes` more bytes arrived.
    fn advance(&self, bytes: u64);
    /// The download finished.
    fn finish(&self);
}

static REPORTER: OnceLock<Box<dyn Reporter>> = OnceLock::new();

/// Installs the reporter of every later download (once per process; a second call is
/// ignored).
pub fn set_reporter(reporter: Box<dyn Reporter>) {
    let _ = REPORTER.set(reporter);
}

/// The installed reporter, if any.
pub(crate) fn reporter() -> Option<&'static dyn Reporter> {
    REPORTER.get().map(|r| r.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_are_told_from_paths() {
        let id = RepoId::parse("meta-llama/Llama-3.2-1B", RepoKind::Model).unwrap();
        assert_eq!(id.repo, "meta-llama/Llama-3.2-1B");
        assert_eq!(id.revision, "main");
        assert_eq!(id.folder(), "models--meta-llama--Llama-3.2-1B");
        let id = RepoId::parse("trl-lib/ultrafeedback_binarized@v1.0", RepoKind::Dataset).unwrap();
        assert_eq!(id.revision, "v1.0");
        assert_eq!(id.folder(), "datasets--trl-lib--ultrafeedback_binarized");
        for not_an_id in [
            "tiny",
            "./a/b",
            "/a/b",
            "a/b/c",
            "a/",
            "/b",
            "runs/x.jsonl",
            "data/prefs.parquet",
            "a/b@",
            "a--b/c",
            ".a/b",
        ] {
            assert_eq!(
                RepoId::parse(not_an_id, RepoKind::Model),
                None,
                "{not_an_id}"
            );
        }
    }

    #[test]
    fn settings_follow_huggingface_hub() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let hub = Hub::from_vars(vars(&[("HOME", "/home/u")]));
        assert_eq!(hub.cache, PathBuf::from("/home/u/.cache/huggingface/hub"));
        assert_eq!(hub.endpoint, DEFAULT_ENDPOINT);
        assert!(!hub.offline);
        let hub = Hub::from_vars(vars(&[
            ("HOME", "/home/u"),
            ("HF_HOME", "~/hf"),
            ("HF_ENDPOINT", "http://127.0.0.1:9/"),
            ("HF_TOKEN", " t0k "),
            ("HF_HUB_OFFLINE", "1"),
        ]));
        assert_eq!(hub.cache, PathBuf::from("/home/u/hf/hub"));
        assert_eq!(hub.endpoint, "http://127.0.0.1:9");
        assert_eq!(hub.token.as_deref(), Some("t0k"));
        assert!(hub.offline);
        assert!(
            !format!("{hub:?}").contains("t0k"),
            "the token is never printed"
        );
        let hub = Hub::from_vars(vars(&[
            ("HF_HOME", "/x"),
            ("HF_HUB_CACHE", "/c"),
            ("HF_HUB_OFFLINE", "0"),
        ]));
        assert_eq!(hub.cache, PathBuf::from("/c"));
        assert!(!hub.offline);
        let hub = Hub::from_vars(vars(&[("XDG_CACHE_HOME", "/xdg")]));
        assert_eq!(hub.cache, PathBuf::from("/xdg/huggingface/hub"));
    }
}
