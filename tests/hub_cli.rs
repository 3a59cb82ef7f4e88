//! Hub names through the real binary: `--model ORG/NAME` and `--data ORG/NAME --split`
//! downloaded from a stand-in Hub on 127.0.0.1 (HF_ENDPOINT) into HF_HOME, with a progress line
//! per file; then used offline (HF_HUB_OFFLINE=1) without a request; and an incomplete cache
//! offline, which names the file and the cache (exit 1).

#[path = "../runtime/tests/common/hub_server.rs"]
mod hub_server;

use assert_cmd::Command;
use hub_server::{Repo, Server};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const COMMIT: &str = "1234567890abcdef1234567890abcdef12345678";

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("runtime/tests/fixtures/tiny-llama")
}

fn repos() -> Vec<Repo> {
    let model: BTreeMap<String, Vec<u8>> = [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    .iter()
    .map(|f| (f.to_string(), std::fs::read(fixture().join(f)).unwrap()))
    .collect();
    let rows = |pairs: &[(&str, &str, &str)]| -> Vec<u8> {
        pairs
            .iter()
            .map(|(p, c, r)| {
                format!(
                    "{}\n",
                    serde_json::json!({"prompt": p, "chosen": c, "rejected": r})
                )
            })
            .collect::<String>()
            .into_bytes()
    };
    let data: BTreeMap<String, Vec<u8>> = [
        (
            "data/train-00000-of-00001.jsonl".to_string(),
            rows(&[("a b", " c", " d"), ("e f", " g", " h"), ("i", " j", " k")]),
        ),
        (
            "data/test-00000-of-00001.jsonl".to_string(),
            rows(&[
                ("The sky is", " blue.", " loud."),
                ("One plus one is", " two.", " six."),
            ]),
        ),
    ]
    .into_iter()
    .collect();
    vec![
        Repo {
            kind: "models",
            id: "org/tiny".into(),
            commit: COMMIT.into(),
            files: model,
            token: None,
        },
        Repo {
            kind: "datasets",
            id: "org/prefs".into(),
            commit: COMMIT.into(),
            files: data,
            token: None,
        },
    ]
}

/// `poc ARGS` with HF_HOME at `home` and the Hub at `endpoint`, with no other HF setting.
fn poc(home: &Path, endpoint: &str, offline: bool, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::cargo_bin("poc").unwrap();
    for var in [
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_TOKEN_PATH",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("HF_HOME", home).env("HF_ENDPOINT", endpoint);
    if offline {
        cmd.env("HF_HUB_OFFLINE", "1");
    }
    cmd.args(args).output().unwrap()
}

fn lines(out: &std::process::Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn hub_names_download_once_then_work_offline() {
    let server = Server::start(repos());
    let home = tempfile::tempdir().unwrap();
    let logps = [
        "logps",
        "--model",
        "org/tiny",
        "--data",
        "org/prefs",
        "--split",
        "test",
    ];
    let out = poc(home.path(), &server.endpoint, false, &logps);
    let first = lines(&out);
    assert_eq!(first.len(), 2, "the test split's rows");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for file in [
        "org/tiny: config.json",
        "org/tiny: model.safetensors",
        "org/prefs: data/test-00000-of-00001.jsonl",
    ] {
        assert!(
            stderr.contains(&format!("poc: downloaded {file}")),
            "{stderr}"
        );
    }
    let snapshot = home
        .path()
        .join("hub/models--org--tiny/snapshots")
        .join(COMMIT);
    assert!(snapshot.join("model.safetensors").is_file());

    // Offline, from the cache alone: the same numbers, no request.
    server.clear();
    let again = lines(&poc(home.path(), &server.endpoint, true, &logps));
    assert_eq!(again, first);
    let generate = [
        "generate",
        "--model",
        "org/tiny",
        "--prompts",
        "org/prefs",
        "--split",
        "test",
        "--max-new-tokens",
        "2",
        "--no-progress",
    ];
    assert_eq!(
        lines(&poc(home.path(), &server.endpoint, true, &generate)).len(),
        2
    );
    assert!(server.requests().is_empty(), "{:?}", server.requests());

    // The train split was never fetched: offline it is missing, named with what is cached.
    let train = ["logps", "--model", "org/tiny", "--data", "org/prefs"];
    let out = poc(home.path(), &server.endpoint, true, &train);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("org/prefs@main")
            && err.contains("split `train`")
            && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );

    // An incomplete model snapshot offline: the file, the repository and the cache are named.
    std::fs::remove_file(snapshot.join("tokenizer.json")).unwrap();
    let out = poc(home.path(), &server.endpoint, true, &logps);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let cache = home.path().join("hub").display().to_string();
    for part in [
        "org/tiny@main",
        "`tokenizer.json`",
        cache.as_str(),
        "HF_HUB_OFFLINE",
    ] {
        assert!(err.contains(part), "{part} missing from: {err}");
    }
    assert!(server.requests().is_empty(), "offline never asks");
}
