//! `poc split` through the real binary: every pair lands in exactly one file with its reward
//! gap, easy means gap > δ and hard gap ≤ δ (exact at the threshold), the rows keep their
//! fields, a histogram PNG is written, and bad inputs are clear errors.

use assert_cmd::Command;
use std::path::Path;

fn poc() -> Command {
    Command::cargo_bin("poc").unwrap()
}

/// A row's `reward_gap` read from the text with Rust's correctly rounded float parser (the
/// comparisons at the threshold must be exact; serde_json's default parser may be 1 ulp off).
fn gap_of(line: &str) -> f64 {
    let start = line.find("\"reward_gap\":").unwrap() + "\"reward_gap\":".len();
    let rest = &line[start..];
    let end = rest.find([',', '}']).unwrap();
    rest[..end].parse().unwrap()
}

fn gaps(path: &Path) -> Vec<f64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(gap_of)
        .collect()
}

fn rows(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn split_is_exact_at_the_threshold() {
    let tmp = tempfile::tempdir().unwrap();
    let rm = tmp.path().join("rm");
    poc()
        .args([
            "run",
            "bt_reward",
            "--max-steps",
            "4",
            "--no-progress",
            "--out",
        ])
        .arg(&rm)
        .assert()
        .success();
    let data = tmp.path().join("pairs.jsonl");
    let head: String = std::fs::read_to_string(rm.join("data.jsonl"))
        .unwrap()
        .lines()
        .take(60)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&data, head).unwrap();
    let split = |threshold: &str, out: &Path| {
        poc()
            .args(["split", "--reward-model"])
            .arg(rm.join("checkpoint-4"))
            .arg("--data")
            .arg(&data)
            .args(["--threshold", threshold, "--out"])
            .arg(out)
            .assert()
            .success();
        (rows(&out.join("easy.jsonl")), rows(&out.join("hard.jsonl")))
    };
    let s0 = tmp.path().join("s0");
    let (easy, hard) = split("0", &s0);
    assert_eq!(easy.len() + hard.len(), 60);
    for r in easy.iter().chain(&hard) {
        let (c, j) = (
            r["reward_chosen"].as_f64().unwrap(),
            r["reward_rejected"].as_f64().unwrap(),
        );
        assert!((r["reward_gap"].as_f64().unwrap() - (c - j)).abs() < 1e-12);
        assert!(r["prompt"].is_string() && r["score_chosen"].is_number());
    }
    let mut all: Vec<f64> = gaps(&s0.join("easy.jsonl"));
    all.extend(gaps(&s0.join("hard.jsonl")));
    all.sort_by(f64::total_cmp);
    // δ equal to an observed gap: that pair (gap = δ) is hard, everything above is easy.
    let delta = all[30];
    let out = tmp.path().join("s1");
    split(&format!("{delta}"), &out);
    let (easy, hard) = (gaps(&out.join("easy.jsonl")), gaps(&out.join("hard.jsonl")));
    assert!(easy.iter().all(|&g| g > delta));
    assert!(hard.iter().all(|&g| g <= delta));
    assert!(hard.contains(&delta));
    assert_eq!(easy.len(), all.iter().filter(|&&g| g > delta).count());
    let png = std::fs::read(out.join("gaps.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
fn split_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let case = |args: &[&str], needle: &str| {
        let out = poc().arg("split").args(args).output().unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: expected `{needle}` in {err}"
        );
    };
    let missing = tmp.path().join("nope");
    case(
        &[
            "--reward-model",
            missing.to_str().unwrap(),
            "--data",
            "x.jsonl",
        ],
        "is not a directory",
    );
    // A causal LM checkpoint is not a reward model.
    let lm = tmp.path().join("lm");
    poc()
        .args(["run", "dpo", "--max-steps", "1", "--no-progress", "--out"])
        .arg(&lm)
        .assert()
        .success();
    let ck = lm.join("checkpoint-1");
    case(
        &[
            "--reward-model",
            ck.to_str().unwrap(),
            "--data",
            lm.join("data.jsonl").to_str().unwrap(),
        ],
        "not a reward model",
    );
    case(
        &[
            "--reward-model",
            ck.to_str().unwrap(),
            "--data",
            "x.jsonl",
            "--threshold",
            "NaN",
        ],
        "expected a finite number",
    );
}
