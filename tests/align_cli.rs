//! `poc bench align` through the real binary: a quick end-to-end run of a pairwise objective
//! (dpo), an on-policy one (ppo) and the MPO pipeline writes the table (stdout and results.md),
//! frontier.png and curves.png; a second run finds every stage done and skips it; bad flags and
//! objectives are user errors. The metrics themselves are unit-tested on known
//! answers in pipelines/src/align/.

use assert_cmd::Command;
use std::path::Path;

fn poc() -> Command {
    Command::cargo_bin("poc").unwrap()
}

/// A PNG file: the signature and a non-empty IHDR of the expected size range.
fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );
    assert_eq!(&bytes[12..16], b"IHDR");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert!(width >= 400 && height >= 300, "{width}x{height}");
}

#[test]
fn quick_benchmark_reports_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("align");
    let first = poc()
        .args(["bench", "align", "dpo", "ppo", "mpo", "--quick", "--out"])
        .arg(&out)
        .assert()
        .success();
    let stdout = String::from_utf8(first.get_output().stdout.clone()).unwrap();
    let stderr = String::from_utf8(first.get_output().stderr.clone()).unwrap();
    for row in [
        "| reference (SFT) |",
        "| dpo | 0.1 |",
        "| ppo |",
        "| mpo | 0.1 |",
        "| mpo_dpo_stage | 0.1 |",
    ] {
        assert!(stdout.contains(row), "missing {row:?} in\n{stdout}");
    }
    assert!(stdout.contains("win rate vs ref") && stdout.contains("ECE"));
    assert!(
        stdout.contains("Equal budget: 4 batches of 8 examples"),
        "{stdout}"
    );
    assert!(stdout.contains("bt_reward, 8 steps"), "{stdout}");
    // Two seeds: every entrant's cells (train time included) carry an interval; MPO's DPO
    // stage is not a run of its own and has no train time.
    for (name, intervals) in [("dpo", 6), ("ppo", 6), ("mpo", 6), ("mpo_dpo_stage", 5)] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap();
        assert_eq!(row.matches('±').count(), intervals, "{row}");
    }
    assert_eq!(
        std::fs::read_to_string(out.join("results.md")).unwrap(),
        stdout
    );
    assert_png(&out.join("frontier.png"));
    assert_png(&out.join("curves.png"));
    for stage in [
        "world:",
        "reference:",
        "reward model: bt_reward from the reference, 8 steps",
        "train: dpo seed 2, 4 steps",
        "train: ppo seed 2, 4 rollout batches",
        "train: mpo seed 2, 2 DPO steps + 2 PPO rollout batches",
        "evaluate: mpo seed 2",
    ] {
        assert!(stderr.contains(stage), "no stage {stage:?} in\n{stderr}");
    }
    assert!(!stderr.contains("skipped"), "{stderr}");
    for f in [
        "world/world.json",
        "reward_model/checkpoint-8/config.json",
        "runs/seed1/dpo/metrics.jsonl",
        "runs/seed2/ppo/checkpoint-4/config.json",
        "runs/seed2/mpo/split/hard.jsonl",
        "runs/seed2/mpo/bench_time.json",
        "eval/seed1/reference.json",
        "eval/seed2/dpo.json",
        "eval/seed2/mpo.json",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    // The on-policy entrants score with the benchmark's one reward model, and mpo's evaluated
    // model is the one its pipeline summary names.
    let config = |f: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.join(f)).unwrap()).unwrap()
    };
    let rm = out.join("reward_model/checkpoint-8").display().to_string();
    assert_eq!(config("runs/seed1/ppo/run_config.json")["reward_model"], rm);
    let summary = config("runs/seed1/mpo/mpo.json");
    assert_eq!(summary["reward_model"], rm);
    assert_eq!(
        config("eval/seed1/mpo.json")["key"]["model"],
        summary["final_model"]
    );
    assert_eq!(
        config("eval/seed1/mpo_dpo_stage.json")["key"]["model"],
        summary["dpo_model"]
    );

    // Everything is there: the second run trains and samples nothing and prints the same table.
    let checkpoint = out.join("runs/seed1/dpo/metrics.jsonl");
    let before = std::fs::metadata(&checkpoint).unwrap().modified().unwrap();
    let second = poc()
        .args(["bench", "align", "dpo", "ppo", "mpo", "--quick", "--out"])
        .arg(&out)
        .assert()
        .success();
    let stderr = String::from_utf8(second.get_output().stderr.clone()).unwrap();
    let skipped = stderr.matches("(done before, skipped)").count();
    // world, reference, reward model, 2 x 3 runs, 2 x (reference + 4) evaluations.
    assert_eq!(skipped, 3 + 6 + 10, "{stderr}");
    assert_eq!(
        String::from_utf8(second.get_output().stdout.clone()).unwrap(),
        stdout
    );
    assert_eq!(
        std::fs::metadata(&checkpoint).unwrap().modified().unwrap(),
        before
    );
}

#[test]
fn bad_input_is_a_user_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("a");
    let fails = |args: &[&str], message: &str| {
        let a = poc().args(args).arg("--out").arg(&out).assert().code(1);
        let stderr = String::from_utf8(a.get_output().stderr.clone()).unwrap();
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    };
    fails(
        &["bench", "align", "no_such_objective", "--quick"],
        "no such file or shipped objective",
    );
    fails(&["bench", "align", "dpo", "dpo", "--quick"], "used twice");
    fails(&["bench", "align", "mpo", "mpo", "--quick"], "given twice");
    fails(
        &["bench", "align", "mpo", "--quick", "--steps", "1"],
        "mpo needs --steps of at least 2",
    );
    fails(&["bench", "align", "--seeds", "0"], "at least 1");
    fails(&["bench", "align", "--lr=0"], "positive");
    assert!(!out.exists());
}
