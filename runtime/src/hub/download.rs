//! The files a command needs from a Hub repository: taken from the cache when there, else
//! downloaded with the `hf-hub` crate's blocking client into the cache, where the next command
//! (or transformers) finds them.

use super::{Hub, HubError, Missing, RepoId, RepoKind, cache, splits};
use hf_hub::api::sync::{Api, ApiBuilder, ApiError};
use std::path::{Path, PathBuf};

const CONFIG: &str = "config.json";
const TOKENIZER: &str = "tokenizer.json";
const INDEX: &str = "model.safetensors.index.json";
const SINGLE: &str = "model.safetensors";
/// Files of a model that poc reads when the repository has them.
const OPTIONAL: [&str; 3] = [
    "tokenizer_config.json",
    "chat_template.jinja",
    "generation_config.json",
];

/// Which files of a model a command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// `config.json` alone (the memory plan of `poc run --dry-run`).
    Config,
    /// Everything a model is loaded from: `config.json`, `tokenizer.json`, the weights
    /// (`model.safetensors.index.json` and the shards it lists, else `model.safetensors`) and,
    /// where the repository has them, `tokenizer_config.json`, `chat_template.jinja` and
    /// `generation_config.json`.
    Everything,
}

/// The snapshot directory of model `id` holding the files `want` names: the cache's, after
/// downloading what it lacks (nothing when it is complete). For a sharded checkpoint the index
/// comes first, then the shards it lists.
pub fn model(hub: &Hub, id: &RepoId, want: Want) -> Result<PathBuf, HubError> {
    let hub = &hub.absolute();
    let mut s = Session::new(hub, id);
    s.get(CONFIG, false)?;
    if want == Want::Everything {
        s.get(TOKENIZER, false)?;
        // A cached single file without a cached index is used as it is; otherwise the index
        // wins, as in transformers.
        let index = match (s.cached(INDEX), s.cached(SINGLE)) {
            (Some(index), _) => Some(index),
            (None, Some(_)) => None,
            (None, None) => s.get(INDEX, true)?,
        };
        match index {
            Some(index) => {
                for shard in shard_files(id, &index)? {
                    s.get(&shard, false)?;
                }
            }
            None => {
                s.get(SINGLE, false).map_err(|e| match e {
                    HubError::Offline { id, cache: dir, .. } => HubError::Offline {
                        id,
                        cache: dir,
                        file: format!("`{SINGLE}` (or `{INDEX}` with its shards)"),
                    },
                    e => e,
                })?;
            }
        }
        for file in OPTIONAL {
            s.get(file, true)?;
        }
    }
    s.snapshot()
}

/// The files of `split` of dataset `id`, in name order: the cached snapshot's when it holds
/// the whole split, else those the Hub lists for the split at the revision, downloaded where
/// missing.
pub fn dataset_split(hub: &Hub, id: &RepoId, split: &str) -> Result<Vec<PathBuf>, HubError> {
    let hub = &hub.absolute();
    let mut s = Session::new(hub, id);
    let cached_dir = s
        .commit
        .as_ref()
        .map(|c| cache::snapshot_dir(&hub.cache, id, c));
    let cached = cached_dir
        .as_deref()
        .map(cache::files_under)
        .unwrap_or_default();
    let chosen = splits::files_of(&cached, split);
    if let Some(dir) = &cached_dir
        && splits::complete(&chosen)
    {
        return Ok(chosen.iter().map(|f| dir.join(f)).collect());
    }
    if hub.offline {
        let found = splits::names(&cached);
        return Err(HubError::Offline {
            id: Box::new(id.clone()),
            file: if found.is_empty() {
                format!("split `{split}`")
            } else {
                format!(
                    "split `{split}` (the cached snapshot holds: {})",
                    found.join(", ")
                )
            },
            cache: hub.cache.clone(),
        });
    }
    let listing = "the repository's file list";
    let repo = s.repo();
    let api = s.api()?.clone();
    let info = api.repo(repo).info().map_err(|e| s.error(listing, e))?;
    if s.commit.is_none() {
        cache::write_ref(&hub.cache, id, &info.sha)?;
        s.commit = Some(info.sha);
    }
    let files: Vec<String> = info.siblings.into_iter().map(|f| f.rfilename).collect();
    let chosen = splits::files_of(&files, split);
    if chosen.is_empty() {
        return Err(HubError::NoSplit {
            id: Box::new(id.clone()),
            split: split.to_string(),
            available: splits::names(&files),
        });
    }
    let mut paths = Vec::with_capacity(chosen.len());
    for file in &chosen {
        if let Some(path) = s.get(file, false)? {
            paths.push(path);
        }
    }
    Ok(paths)
}

/// The shard files a weight index lists (its `weight_map`'s values), each once, in name order;
/// a name that would leave the snapshot is refused.
fn shard_files(id: &RepoId, index: &Path) -> Result<Vec<String>, HubError> {
    let bad = |message: String| HubError::BadFile {
        id: Box::new(id.clone()),
        path: index.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(index).map_err(|source| HubError::Io {
        path: index.to_path_buf(),
        source,
    })?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("no `weight_map` object".into()))?;
    let mut files: Vec<String> = Vec::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| bad(format!("`{tensor}` maps to a non-string")))?;
        if file.is_empty() || file.starts_with('/') || file.split('/').any(|p| p == "..") {
            return Err(bad(format!(
                "`{tensor}` maps to `{file}`, outside the snapshot"
            )));
        }
        if !files.iter().any(|f| f == file) {
            files.push(file.to_string());
        }
    }
    files.sort();
    Ok(files)
}

/// One repository's files at one commit: the cache's commit for the revision, else the commit
/// of the Hub's first answer, so every file comes from the same snapshot.
struct Session<'a> {
    hub: &'a Hub,
    id: &'a RepoId,
    commit: Option<String>,
    api: Option<Api>,
}

impl<'a> Session<'a> {
    fn new(hub: &'a Hub, id: &'a RepoId) -> Session<'a> {
        Session {
            hub,
            id,
            commit: cache::commit(&hub.cache, id),
            api: None,
        }
    }

    /// The snapshot directory, once the commit is known.
    fn snapshot(&self) -> Result<PathBuf, HubError> {
        match &self.commit {
            Some(c) => Ok(cache::snapshot_dir(&self.hub.cache, self.id, c)),
            None => Err(self.offline(CONFIG)),
        }
    }

    /// `file` when the snapshot holds it.
    fn cached(&self, file: &str) -> Option<PathBuf> {
        let commit = self.commit.as_ref()?;
        let path = cache::snapshot_dir(&self.hub.cache, self.id, commit).join(file);
        path.is_file().then_some(path)
    }

    /// `file` from the cache, else downloaded. `Ok(None)` for an `optional` file the
    /// repository does not have (or, offline, that the cache lacks).
    fn get(&mut self, file: &str, optional: bool) -> Result<Option<PathBuf>, HubError> {
        if let Some(path) = self.cached(file) {
            return Ok(Some(path));
        }
        let known_missing = self
            .commit
            .as_ref()
            .is_some_and(|c| cache::known_missing(&self.hub.cache, self.id, c, file));
        if known_missing || self.hub.offline {
            return match (optional, known_missing) {
                (true, _) => Ok(None),
                (false, true) => Err(HubError::NotFound {
                    id: Box::new(self.id.clone()),
                    file: file.to_string(),
                    what: Missing::File,
                    status: 404,
                    message: Some("recorded in the cache's .no_exist".into()),
                }),
                (false, false) => Err(self.offline(file)),
            };
        }
        match self.download_or_wait(file) {
            Ok(path) => Ok(Some(path)),
            Err(HubError::NotFound {
                what: Missing::File,
                ..
            }) if optional => {
                if let Some(c) = &self.commit {
                    cache::mark_missing(&self.hub.cache, self.id, c, file);
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn offline(&self, file: &str) -> HubError {
        HubError::Offline {
            id: Box::new(self.id.clone()),
            file: format!("`{file}`"),
            cache: self.hub.cache.clone(),
        }
    }

    /// The client, built on first use.
    fn api(&mut self) -> Result<&Api, HubError> {
        if self.api.is_none() {
            let api = ApiBuilder::from_cache(hf_hub::Cache::new(self.hub.cache.clone()))
                .with_endpoint(self.hub.endpoint.clone())
                .with_token(self.hub.token.clone())
                .with_progress(false)
                .with_retries(2)
                .with_user_agent("poc", env!("CARGO_PKG_VERSION"))
                .build()
                .map_err(|e| self.error("(client set-up)", e))?;
            self.api = Some(api);
        }
        self.api.as_ref().ok_or_else(|| self.offline(CONFIG))
    }

    /// The repository at the pinned commit, or at the revision asked for until one is known.
    fn repo(&self) -> hf_hub::Repo {
        let kind = match self.id.kind {
            RepoKind::Model => hf_hub::RepoType::Model,
            RepoKind::Dataset => hf_hub::RepoType::Dataset,
        };
        let revision = self.commit.clone().unwrap_or(self.id.revision.clone());
        hf_hub::Repo::with_revision(self.id.repo.clone(), kind, revision)
    }

    /// [`Session::download`], or, while another process downloads the same file (the ranks of
    /// a data-parallel run), the file once it has finished.
    fn download_or_wait(&mut self, file: &str) -> Result<PathBuf, HubError> {
        let started = std::time::Instant::now();
        loop {
            match self.download(file) {
                Err(Busy) if started.elapsed() < LOCK_PATIENCE => {
                    std::thread::sleep(std::time::Duration::from_secs(2));
                    if self.commit.is_none() {
                        self.commit = cache::commit(&self.hub.cache, self.id);
                    }
                    if let Some(path) = self.cached(file) {
                        return Ok(path);
                    }
                }
                Err(Busy) => {
                    return Err(HubError::Io {
                        path: cache::repo_dir(&self.hub.cache, self.id),
                        source: std::io::Error::other(format!(
                            "another process has been downloading `{file}` for over {} minutes",
                            LOCK_PATIENCE.as_secs() / 60
                        )),
                    });
                }
                Err(Failed(e)) => return Err(e),
                Ok(path) => return Ok(path),
            }
        }
    }

    fn download(&mut self, file: &str) -> Result<PathBuf, Attempt> {
        let repo = self.repo();
        let revision = repo.revision().to_string();
        let progress = Progress {
            repo: self.id.repo.clone(),
        };
        let api = self.api()?.clone();
        let path = match api.repo(repo).download_with_progress(file, progress) {
            Ok(path) => path,
            Err(ApiError::LockAcquisition(_)) => return Err(Busy),
            Err(e) => return Err(Failed(self.error(file, e))),
        };
        let repo_dir = cache::repo_dir(&self.hub.cache, self.id);
        if super::is_commit(&revision) {
            // hf-hub also writes `refs/<hash>`; huggingface_hub keeps refs for names only.
            let _ = std::fs::remove_file(repo_dir.join("refs").join(&revision));
        }
        if self.commit.is_none() {
            // The snapshot the file landed in names the commit the rest is taken at.
            self.commit = path
                .strip_prefix(repo_dir.join("snapshots"))
                .ok()
                .and_then(|rel| rel.components().next())
                .map(|c| c.as_os_str().to_string_lossy().into_owned());
        }
        Ok(path)
    }

    /// A client error as what it means for this repository and file.
    fn error(&self, file: &str, e: ApiError) -> HubError {
        let network = |message: String| HubError::Network {
            id: Box::new(self.id.clone()),
            file: file.to_string(),
            endpoint: self.hub.endpoint.clone(),
            cache: self.hub.cache.clone(),
            message,
        };
        let request = match e {
            ApiError::RequestError(request) => *request,
            ApiError::IoError(source) => {
                return HubError::Io {
                    path: cache::repo_dir(&self.hub.cache, self.id),
                    source,
                };
            }
            e => return network(e.to_string()),
        };
        let (status, response) = match request {
            ureq::Error::Status(status, response) => (status, response),
            ureq::Error::Transport(t) => return network(t.to_string()),
        };
        let code = response.header("x-error-code").map(str::to_string);
        let message = response.header("x-error-message").map(str::to_string);
        let not_found = |what| HubError::NotFound {
            id: Box::new(self.id.clone()),
            file: file.to_string(),
            what,
            status,
            message: message.clone(),
        };
        match (status, code.as_deref()) {
            // The Hub answers a repository it will not show (missing, or private) like this.
            (_, Some("RepoNotFound")) if self.hub.token.is_some() || status == 404 => {
                not_found(Missing::Repo)
            }
            (_, Some("RevisionNotFound")) => not_found(Missing::Revision),
            (401 | 403, _) => HubError::Refused {
                id: Box::new(self.id.clone()),
                file: file.to_string(),
                status,
                token: self.hub.token.is_some(),
                message,
            },
            (404, _) => not_found(Missing::File),
            _ => network(format!(
                "the Hub answered {status}{}",
                message.map(|m| format!(": {m}")).unwrap_or_default()
            )),
        }
    }
}

/// How long a process waits for another that downloads the same file.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2 * 60 * 60);

/// How one download attempt ended, when not with the file.
enum Attempt {
    /// Another process holds the file's lock.
    Busy,
    /// It failed.
    Failed(HubError),
}
use Attempt::{Busy, Failed};

impl From<HubError> for Attempt {
    fn from(e: HubError) -> Attempt {
        Failed(e)
    }
}

/// hf-hub's progress calls, passed on to the installed [`super::Reporter`].
struct Progress {
    repo: String,
}

impl hf_hub::api::Progress for Progress {
    fn init(&mut self, size: usize, filename: &str) {
        if let Some(r) = super::reporter() {
            r.start(&self.repo, filename, size as u64);
        }
    }

    fn update(&mut self, size: usize) {
        if let Some(r) = super::reporter() {
            r.advance(size as u64);
        }
    }

    fn finish(&mut self) {
        if let Some(r) = super::reporter() {
            r.finish();
        }
    }
}
