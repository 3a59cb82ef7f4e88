//! Hub names: the Hugging Face cache layout (refs → snapshots, symlinked blobs, revisions by
//! hash, missing refs and files) on a cache the tests lay out, and downloads from a stand-in
//! Hub on 127.0.0.1 (`common::hub_server`): a sharded model (index first, then its shards),
//! optional files the repository lacks, a gated repository, missing repositories, revisions and
//! files, offline use of a complete and of an incomplete cache, and dataset splits.

mod common;

use common::hub_server::{self, Repo, Server};
use poc_runtime::hub::{self, Hub, HubError, Missing, RepoId, RepoKind, Want};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const COMMIT_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const COMMIT_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const COMMIT_C: &str = "0123456789abcdef0123456789abcdef01234567";

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama")
}

/// The fixture's files poc reads (not `expected.json`).
fn fixture_files() -> BTreeMap<String, Vec<u8>> {
    [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    .iter()
    .map(|f| (f.to_string(), std::fs::read(fixture().join(f)).unwrap()))
    .collect()
}

fn model_id(name: &str) -> RepoId {
    RepoId::parse(name, RepoKind::Model).unwrap()
}

fn hub_at(cache: &Path, endpoint: &str, offline: bool) -> Hub {
    Hub {
        cache: cache.to_path_buf(),
        endpoint: endpoint.to_string(),
        token: None,
        offline,
    }
}

/// Lays out `files` as snapshot `commit` of `folder` the way huggingface_hub does: blobs named
/// by ETag, relative symlinks from the snapshot into them.
fn lay_out(cache: &Path, folder: &str, commit: &str, files: &BTreeMap<String, Vec<u8>>) {
    let repo = cache.join(folder);
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    for (name, bytes) in files {
        let etag = hub_server::etag(bytes);
        std::fs::write(repo.join("blobs").join(&etag), bytes).unwrap();
        let link = repo.join("snapshots").join(commit).join(name);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        let depth = name.matches('/').count() + 2;
        let target: PathBuf = std::iter::repeat_n("..", depth)
            .collect::<PathBuf>()
            .join("blobs")
            .join(&etag);
        std::os::unix::fs::symlink(target, &link).unwrap();
    }
}

fn write_ref(cache: &Path, folder: &str, name: &str, commit: &str) {
    let path = cache.join(folder).join("refs").join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, commit).unwrap();
}

#[test]
fn the_cache_layout_resolves_refs_hashes_and_reports_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let folder = "models--org--tiny";
    lay_out(&cache, folder, COMMIT_A, &fixture_files());
    write_ref(&cache, folder, "main", COMMIT_A);
    // Revision v2 is a snapshot without its tokenizer.
    let mut partial = fixture_files();
    partial.remove("tokenizer.json");
    lay_out(&cache, folder, COMMIT_B, &partial);
    write_ref(&cache, folder, "v2", &format!("{COMMIT_B}\n"));
    let offline = hub_at(&cache, "http://127.0.0.1:9", true);

    let dir = hub::model(&offline, &model_id("org/tiny"), Want::Everything).unwrap();
    assert_eq!(dir, cache.join(folder).join("snapshots").join(COMMIT_A));
    assert!(dir.join("model.safetensors").is_symlink());
    // A commit hash is used as it is, without a ref.
    let by_hash = hub::model(
        &offline,
        &model_id(&format!("org/tiny@{COMMIT_A}")),
        Want::Everything,
    )
    .unwrap();
    assert_eq!(by_hash, dir);
    // The resolved snapshot is a model directory like any other.
    let resolved =
        poc_runtime::model::resolve(dir.to_str().unwrap(), false, &common::cpu()).unwrap();
    let direct =
        poc_runtime::model::LlamaConfig::from_file(&fixture().join("config.json")).unwrap();
    assert_eq!(resolved.model.config.vocab_size, direct.vocab_size);

    // A snapshot that lacks a file: offline, the error names repository, revision, file, cache.
    let err = hub::model(&offline, &model_id("org/tiny@v2"), Want::Everything).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, HubError::Offline { .. }), "{msg}");
    for part in [
        "org/tiny@v2",
        "`tokenizer.json`",
        "HF_HUB_OFFLINE",
        &cache.display().to_string(),
    ] {
        assert!(msg.contains(part), "{part} missing from: {msg}");
    }
    // Its config alone is there (what `--dry-run` reads).
    assert!(hub::model(&offline, &model_id("org/tiny@v2"), Want::Config).is_ok());
    // A revision the cache has no ref for.
    let err = hub::model(&offline, &model_id("org/tiny@v3"), Want::Config).unwrap_err();
    assert!(
        err.to_string().contains("org/tiny@v3") && err.to_string().contains("`config.json`"),
        "{err}"
    );
    // A repository the cache does not have at all.
    assert!(matches!(
        hub::model(&offline, &model_id("org/other"), Want::Config),
        Err(HubError::Offline { .. })
    ));
}

/// The fixture's weights cut into two shards with an index, as large checkpoints come.
fn sharded_files() -> BTreeMap<String, Vec<u8>> {
    use safetensors::SafeTensors;
    let mut files = fixture_files();
    let single = files.remove("model.safetensors").unwrap();
    let st = SafeTensors::deserialize(&single).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    let half = names.len() / 2;
    let mut weight_map = serde_json::Map::new();
    for (k, part) in [&names[..half], &names[half..]].iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", k + 1);
        let views: Vec<(String, safetensors::tensor::TensorView)> = part
            .iter()
            .map(|n| (n.clone(), st.tensor(n).unwrap()))
            .collect();
        files.insert(file.clone(), safetensors::serialize(views, None).unwrap());
        for n in part.iter() {
            weight_map.insert(n.clone(), file.clone().into());
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    files.insert(
        "model.safetensors.index.json".into(),
        index.to_string().into_bytes(),
    );
    files
}

fn model_repo(id: &str, files: BTreeMap<String, Vec<u8>>) -> Repo {
    Repo {
        kind: "models",
        id: id.into(),
        commit: COMMIT_C.into(),
        files,
        token: None,
    }
}

fn gets(server: &Server) -> Vec<String> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.contains("/resolve/"))
        .collect()
}

#[test]
fn a_sharded_model_downloads_into_the_cache_and_is_used_offline() {
    let files = sharded_files();
    let server = Server::start(vec![model_repo("org/sharded", files.clone())]);
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let online = hub_at(&cache, &server.endpoint, false);
    let id = model_id("org/sharded");

    let dir = hub::model(&online, &id, Want::Everything).unwrap();
    let repo = cache.join("models--org--sharded");
    assert_eq!(dir, repo.join("snapshots").join(COMMIT_C));
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main"))
            .unwrap()
            .trim(),
        COMMIT_C
    );
    for (name, bytes) in &files {
        assert_eq!(&std::fs::read(dir.join(name)).unwrap(), bytes, "{name}");
        let target = std::fs::read_link(dir.join(name)).unwrap();
        assert!(target.starts_with("../../blobs"), "{name} -> {target:?}");
    }
    // The index came first, then the shards; the single file was never asked for.
    let log = gets(&server);
    let at = |f: &str| log.iter().position(|r| r.ends_with(&format!("/{f}")));
    let index = at("model.safetensors.index.json").expect("index requested");
    for shard in [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        assert!(at(shard).expect("shard requested") > index, "{log:?}");
    }
    assert!(at("model.safetensors").is_none(), "{log:?}");
    // The repository has no chat template: recorded as huggingface_hub records it.
    assert!(
        repo.join(".no_exist")
            .join(COMMIT_C)
            .join("chat_template.jinja")
            .exists()
    );
    // The snapshot loads.
    poc_runtime::model::resolve(dir.to_str().unwrap(), false, &common::cpu()).unwrap();

    // Complete: no request at all, online or offline.
    server.clear();
    assert_eq!(hub::model(&online, &id, Want::Everything).unwrap(), dir);
    let offline = hub_at(&cache, &server.endpoint, true);
    assert_eq!(hub::model(&offline, &id, Want::Everything).unwrap(), dir);
    assert!(server.requests().is_empty(), "{:?}", server.requests());

    // Incomplete: offline names the missing shard and the cache; online fetches it alone.
    let shard = "model-00002-of-00002.safetensors";
    std::fs::remove_file(dir.join(shard)).unwrap();
    let err = hub::model(&offline, &id, Want::Everything).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(shard) && msg.contains(&cache.display().to_string()),
        "{msg}"
    );
    assert!(server.requests().is_empty(), "offline never asks");
    hub::model(&online, &id, Want::Everything).unwrap();
    assert!(
        gets(&server).iter().all(|r| r.ends_with(shard)),
        "{:?}",
        gets(&server)
    );
    assert_eq!(std::fs::read(dir.join(shard)).unwrap(), files[shard]);
}

#[test]
fn a_single_file_model_at_a_revision_given_by_hash() {
    let server = Server::start(vec![model_repo("org/tiny", fixture_files())]);
    let tmp = tempfile::tempdir().unwrap();
    let online = hub_at(tmp.path(), &server.endpoint, false);
    let dir = hub::model(
        &online,
        &model_id(&format!("org/tiny@{COMMIT_C}")),
        Want::Everything,
    )
    .unwrap();
    assert_eq!(dir.file_name().unwrap(), COMMIT_C);
    assert!(dir.join("model.safetensors").is_file());
    assert!(
        !tmp.path()
            .join("models--org--tiny/refs")
            .join(COMMIT_C)
            .exists(),
        "no ref is written for a commit hash"
    );
    let log = gets(&server);
    assert!(
        log.iter()
            .all(|r| r.contains(&format!("/resolve/{COMMIT_C}/"))),
        "{log:?}"
    );
}

#[test]
fn gated_missing_and_wrong_names_say_what_to_do() {
    let mut gated = model_repo("org/gated", fixture_files());
    gated.token = Some("hf_secret".into());
    let mut no_tokenizer = fixture_files();
    no_tokenizer.remove("tokenizer.json");
    let server = Server::start(vec![gated, model_repo("org/partial", no_tokenizer)]);
    let tmp = tempfile::tempdir().unwrap();
    let mut hub = hub_at(tmp.path(), &server.endpoint, false);

    let err = hub::model(&hub, &model_id("org/gated"), Want::Everything).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            HubError::Refused {
                status: 401,
                token: false,
                ..
            }
        ),
        "{msg}"
    );
    for part in ["org/gated@main", "`config.json`", "HF_TOKEN", "restricted"] {
        assert!(msg.contains(part), "{part} missing from: {msg}");
    }
    hub.token = Some("hf_wrong".into());
    let err = hub::model(&hub, &model_id("org/gated"), Want::Everything).unwrap_err();
    assert!(err.to_string().contains("the token has no access"), "{err}");
    hub.token = Some("hf_secret".into());
    hub::model(&hub, &model_id("org/gated"), Want::Everything).unwrap();
    hub.token = None;

    let err = hub::model(&hub, &model_id("org/nothing"), Want::Config).unwrap_err();
    assert!(
        matches!(
            err,
            HubError::NotFound {
                what: Missing::Repo,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("org/nothing@main"), "{err}");
    let err = hub::model(&hub, &model_id("org/partial@nope"), Want::Config).unwrap_err();
    assert!(
        matches!(
            err,
            HubError::NotFound {
                what: Missing::Revision,
                ..
            }
        ),
        "{err}"
    );
    let err = hub::model(&hub, &model_id("org/partial"), Want::Everything).unwrap_err();
    assert!(
        matches!(
            err,
            HubError::NotFound {
                what: Missing::File,
                ..
            }
        ) && err.to_string().contains("`tokenizer.json`"),
        "{err}"
    );
    // Nothing answers on this port: a network error naming the endpoint.
    let dead = hub_at(tmp.path(), "http://127.0.0.1:9", false);
    let err = hub::model(&dead, &model_id("org/elsewhere"), Want::Config).unwrap_err();
    assert!(
        matches!(err, HubError::Network { .. }) && err.to_string().contains("127.0.0.1:9"),
        "{err}"
    );
}

#[test]
fn dataset_splits_are_found_listed_and_downloaded() {
    let files: BTreeMap<String, Vec<u8>> = [
        ("README.md", "# prefs"),
        ("data/train-00000-of-00001.parquet", "train rows"),
        ("data/test-00000-of-00001.parquet", "test rows"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
    .collect();
    let server = Server::start(vec![Repo {
        kind: "datasets",
        id: "org/prefs".into(),
        commit: COMMIT_C.into(),
        files,
        token: None,
    }]);
    let tmp = tempfile::tempdir().unwrap();
    let online = hub_at(tmp.path(), &server.endpoint, false);
    let id = RepoId::parse("org/prefs", RepoKind::Dataset).unwrap();

    let test = hub::dataset_split(&online, &id, "test").unwrap();
    assert_eq!(test.len(), 1);
    assert!(test[0].ends_with("data/test-00000-of-00001.parquet"));
    assert_eq!(std::fs::read(&test[0]).unwrap(), b"test rows");
    let log = server.requests();
    assert!(
        log.iter()
            .any(|r| r == "GET /api/datasets/org/prefs/revision/main"),
        "{log:?}"
    );
    assert!(
        !log.iter().any(|r| r.contains("train-")),
        "only the split asked for: {log:?}"
    );
    let repo = tmp.path().join("datasets--org--prefs");
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main")).unwrap(),
        COMMIT_C
    );

    // Offline: the cached split is found; one the cache lacks is named with what it has.
    let offline = hub_at(tmp.path(), &server.endpoint, true);
    server.clear();
    assert_eq!(hub::dataset_split(&offline, &id, "test").unwrap(), test);
    let err = hub::dataset_split(&offline, &id, "train").unwrap_err();
    assert!(
        err.to_string().contains("split `train`") && err.to_string().contains("holds: test"),
        "{err}"
    );
    assert!(server.requests().is_empty());
    // Online, a split the repository does not have lists those it has.
    let err = hub::dataset_split(&online, &id, "validation").unwrap_err();
    assert!(
        matches!(&err, HubError::NoSplit { available, .. } if available == &["test", "train"]),
        "{err}"
    );
}
