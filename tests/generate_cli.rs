//! `poc generate` through the real binary on the embedded `tiny` model: one JSON object per
//! prompt (strings, chat messages, --chat), in the file's order, the same at any batch size;
//! seeded sampling; and the error paths (bad lines named, missing file, bad flags), exit 1.

use assert_cmd::Command;
use serde_json::Value;
use std::path::Path;

fn poc() -> Command {
    Command::cargo_bin("poc").unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const PROMPTS: &str = r#"{"prompt": "The capital of France is"}

{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}], "id": 7}
{"prompt": "f3 reverse kqzm ->"}
{"prompt": "x"}
"#;

/// Runs `poc generate` on `tiny` and `prompts` with `extra` flags; the parsed stdout lines.
fn generate(prompts: &Path, extra: &[&str]) -> Vec<Value> {
    generate_with("tiny", prompts, extra)
}

/// `generate` under `model`.
fn generate_with(model: &str, prompts: &Path, extra: &[&str]) -> Vec<Value> {
    let out = poc()
        .args(["generate", "--model", model, "--no-progress", "--prompts"])
        .arg(prompts)
        .args(extra)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

#[test]
fn every_prompt_gets_one_json_line_in_file_order() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts = write(tmp.path(), "p.jsonl", PROMPTS);
    let rows = generate(&prompts, &["--max-new-tokens", "6", "--batch-size", "3"]);
    assert_eq!(rows.len(), 4);
    let lines: Vec<u64> = rows.iter().map(|r| r["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [1, 3, 4, 5]);
    assert_eq!(rows[0]["prompt"], "The capital of France is");
    assert!(
        rows[1]["prompt"].is_array(),
        "the prompt is echoed as written"
    );
    for r in &rows {
        assert!(r["completion"].is_string(), "{r}");
        let n = r["tokens"].as_u64().unwrap();
        assert!((1..=6).contains(&n), "{r}");
        let finish = r["finish"].as_str().unwrap();
        assert!(finish == "eos" || (finish == "length" && n == 6), "{r}");
    }
    // Greedy decoding is the same at any batch size.
    let one = generate(&prompts, &["--max-new-tokens", "6", "--batch-size", "1"]);
    assert_eq!(rows, one);
}

#[test]
fn sampling_is_seeded_and_chat_renders_strings() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts = write(tmp.path(), "p.jsonl", PROMPTS);
    let sample = |seed: &str| {
        generate(
            &prompts,
            &[
                "--max-new-tokens",
                "12",
                "--temperature",
                "1.0",
                "--top-p",
                "0.9",
                "--seed",
                seed,
            ],
        )
    };
    let a = sample("1");
    assert_eq!(a, sample("1"));
    assert_ne!(a, sample("2"));
    // --chat changes how a string prompt is tokenized, so (greedy) completions change too.
    let plain = generate(&prompts, &["--max-new-tokens", "8"]);
    let chat = generate(&prompts, &["--max-new-tokens", "8", "--chat"]);
    assert_eq!(plain[1], chat[1], "message lists are rendered either way");
    assert_ne!(plain[0]["completion"], chat[0]["completion"]);
}

fn fails(prompts: &Path, extra: &[&str]) -> String {
    let out = poc()
        .args(["generate", "--model", "tiny", "--no-progress", "--prompts"])
        .arg(prompts)
        .args(extra)
        .assert()
        .code(1)
        .get_output()
        .clone();
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn bad_lines_are_named_and_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = write(
        tmp.path(),
        "bad.jsonl",
        "{\"prompt\": \"ok\"}\nnot json\n{\"text\": \"no prompt\"}\n{\"prompt\": 3}\n[1, 2]\n{\"prompt\": [{\"role\": \"user\"}]}\n{\"prompt\": []}\n",
    );
    let err = fails(&bad, &[]);
    for (line, what) in [
        (2, "invalid JSON"),
        (3, "missing field `prompt`"),
        (4, "`prompt` must be a string or a list"),
        (5, "expected a JSON object"),
    ] {
        assert!(err.contains(&format!("bad.jsonl:{line}: {what}")), "{err}");
    }
    // Message lists are checked once the rows parse.
    let bad = write(
        tmp.path(),
        "chat.jsonl",
        "{\"prompt\": \"ok\"}\n{\"prompt\": [{\"role\": \"user\"}]}\n{\"prompt\": []}\n",
    );
    let err = fails(&bad, &[]);
    assert!(
        err.contains("chat.jsonl:2: `prompt` message 1 lacks a string `content`"),
        "{err}"
    );
    assert!(err.contains("chat.jsonl:3: empty prompt"), "{err}");
    // A prompt longer than the tiny model's context (512).
    let long = write(
        tmp.path(),
        "long.jsonl",
        &format!(
            "{{\"prompt\": \"hi\"}}\n{{\"prompt\": \"{}\"}}\n",
            "a".repeat(600)
        ),
    );
    let err = fails(&long, &[]);
    assert!(
        err.contains("long.jsonl:2: the prompt is 601 tokens"),
        "{err}"
    );
    let empty = write(tmp.path(), "empty.jsonl", "\n\n");
    assert!(fails(&empty, &[]).contains("no prompts"));
}

#[test]
fn missing_files_and_bad_flags_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    let err = fails(&tmp.path().join("nope.jsonl"), &[]);
    assert!(
        err.contains("cannot read") && err.contains("nope.jsonl"),
        "{err}"
    );
    let prompts = write(tmp.path(), "p.jsonl", PROMPTS);
    for (flags, what) in [
        (&["--temperature=-1"][..], "temperature"),
        (&["--top-p", "1.5"][..], "top-p"),
        (&["--batch-size", "0"][..], "batch size"),
        (&["--device", "tpu"][..], "unknown device"),
    ] {
        let err = fails(&prompts, flags);
        assert!(err.contains(what), "{flags:?}: {err}");
    }
    let out = poc()
        .args(["generate", "--model", "no-such-model", "--prompts"])
        .arg(&prompts)
        .assert()
        .code(1)
        .get_output()
        .clone();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("neither a directory nor a preset"), "{err}");
}

#[test]
fn a_checkpoint_of_poc_run_generates_and_generation_config_stops_it() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    poc()
        .args(["run", "dpo", "--max-steps", "2", "--no-progress", "--out"])
        .arg(&run)
        .assert()
        .success();
    let ckpt = run.join("checkpoint-2");
    let prompts = write(tmp.path(), "p.jsonl", PROMPTS);
    let model = ckpt.to_str().unwrap();
    let rows = generate_with(model, &prompts, &["--max-new-tokens", "5"]);
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r["tokens"].as_u64().unwrap() >= 1));
    // generation_config.json's eos_token_id (here: every id) ends a completion.
    let all: Vec<u32> = (0..264).collect();
    std::fs::write(
        ckpt.join("generation_config.json"),
        serde_json::json!({ "eos_token_id": all }).to_string(),
    )
    .unwrap();
    let rows = generate_with(model, &prompts, &["--max-new-tokens", "5"]);
    for r in &rows {
        assert_eq!(
            (r["tokens"].as_u64(), r["finish"].as_str()),
            (Some(1), Some("eos")),
            "{r}"
        );
    }
}
