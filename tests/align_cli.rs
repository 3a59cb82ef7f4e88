//! `poc bench align` through the real binary: a quick end-to-end run writes the table (stdout and
//! results.md), frontier.png and curves.png; a second run finds every stage done and skips it;
//! bad flags and objectives are user errors. The metrics themselves are unit-tested on known
//! answers in src/align.rs.

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
        .args(["bench", "align", "dpo", "mipo", "--quick", "--out"])
        .arg(&out)
        .assert()
        .success();
    let stdout = String::from_utf8(first.get_output().stdout.clone()).unwrap();
    let stderr = String::from_utf8(first.get_output().stderr.clone()).unwrap();
    for row in ["| reference (SFT) |", "| dpo | 0.1 |", "| mipo |"] {
        assert!(stdout.contains(row), "missing {row:?} in\n{stdout}");
    }
    assert!(stdout.contains("win rate vs ref") && stdout.contains("ECE"));
    // Two seeds: every objective's cells carry an interval.
    let dpo = stdout.lines().find(|l| l.starts_with("| dpo |")).unwrap();
    assert_eq!(dpo.matches('±').count(), 5, "{dpo}");
    assert_eq!(
        std::fs::read_to_string(out.join("results.md")).unwrap(),
        stdout
    );
    assert_png(&out.join("frontier.png"));
    assert_png(&out.join("curves.png"));
    for stage in [
        "world:",
        "reference:",
        "train: dpo seed 2",
        "evaluate: mipo seed 2",
    ] {
        assert!(stderr.contains(stage), "no stage {stage:?} in\n{stderr}");
    }
    assert!(!stderr.contains("skipped"), "{stderr}");
    for f in [
        "world/world.json",
        "runs/seed1/dpo/metrics.jsonl",
        "runs/seed2/mipo/metrics.jsonl",
        "eval/seed1/reference.json",
        "eval/seed2/dpo.json",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }

    // Everything is there: the second run trains and samples nothing and prints the same table.
    let checkpoint = out.join("runs/seed1/dpo/metrics.jsonl");
    let before = std::fs::metadata(&checkpoint).unwrap().modified().unwrap();
    let second = poc()
        .args(["bench", "align", "dpo", "mipo", "--quick", "--out"])
        .arg(&out)
        .assert()
        .success();
    let stderr = String::from_utf8(second.get_output().stderr.clone()).unwrap();
    let skipped = stderr.matches("(done before, skipped)").count();
    // world, reference, 2 x 2 runs, 2 x (reference + 2) evaluations.
    assert_eq!(skipped, 2 + 4 + 6, "{stderr}");
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
    fails(&["bench", "align", "--seeds", "0"], "at least 1");
    fails(&["bench", "align", "--lr=0"], "positive");
    assert!(!out.exists());
}
