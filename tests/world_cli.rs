//! `poc world` through the real binary: the files, their determinism, the summary, the help,
//! and the errors (exit 1 for bad values and unwritable places, 2 for bad usage).

use assert_cmd::Command;

const FILES: [&str; 5] = [
    "world.json",
    "sft.jsonl",
    "train.jsonl",
    "heldout.jsonl",
    "prompts.jsonl",
];

fn poc() -> Command {
    Command::cargo_bin("poc").unwrap()
}

/// Runs `poc world` into `dir` with a small size; returns stdout.
fn world(dir: &std::path::Path, seed: &str) -> String {
    let out = poc()
        .args(["world", "--seed", seed, "--pairs", "600", "--sft", "300"])
        .args(["--heldout", "60", "--eval-prompts", "24", "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn read(dir: &std::path::Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn writes_the_world_and_a_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("w");
    let text = world(&dir, "3");
    for f in [
        "f0",
        "f5",
        "copy",
        "sort",
        "aligned",
        "misaligned",
        "|gap|<1",
        "BT pred",
    ] {
        assert!(text.contains(f), "summary lacks {f}:\n{text}");
    }
    let lines = |name: &str| String::from_utf8(read(&dir, name)).unwrap().lines().count();
    assert_eq!(lines("train.jsonl"), 600);
    assert_eq!(lines("sft.jsonl"), 300);
    assert_eq!(lines("heldout.jsonl"), 60);
    assert_eq!(lines("prompts.jsonl"), 24);
    let manifest: serde_json::Value = serde_json::from_slice(&read(&dir, "world.json")).unwrap();
    assert_eq!(manifest["seed"], 3);
    assert_eq!(manifest["world_version"], 1);
    let families = manifest["families"].as_array().unwrap();
    assert_eq!(families.len(), 6);
    for f in families {
        assert!(f["temperature"].as_f64().unwrap() > 0.0);
        assert!(f["aligned"].is_boolean());
        assert_eq!(f["stats"]["pairs"], 100);
    }
    assert_eq!(manifest["files"]["train.jsonl"], 600);
    // No temporary files are left behind.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected = FILES.map(String::from).to_vec();
    expected.sort();
    assert_eq!(names, expected);
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    world(&a, "7");
    world(&b, "7");
    world(&c, "8");
    for name in FILES {
        assert_eq!(read(&a, name), read(&b, name), "{name}");
        assert_ne!(read(&a, name), read(&c, name), "{name}");
    }
    // Writing again over an existing world is fine and gives the same bytes.
    world(&a, "7");
    assert_eq!(read(&a, "train.jsonl"), read(&b, "train.jsonl"));
}

#[test]
fn pair_files_load_in_poc_logps() {
    // The pair files are TRL data for the existing commands, extra columns and all.
    let tmp = tempfile::tempdir().unwrap();
    world(tmp.path(), "1");
    let out = poc()
        .args(["logps", "--data"])
        .arg(tmp.path().join("heldout.jsonl"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 60);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("skipped"));
}

#[test]
fn bad_values_and_places_exit_1_with_a_message() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("w");
    for (flag, value) in [
        ("--pairs", "0"),
        ("--sft", "0"),
        ("--heldout", "0"),
        ("--eval-prompts", "0"),
        ("--pairs", "100000000"),
    ] {
        let out = poc()
            .args(["world", flag, value, "--out"])
            .arg(&out_dir)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{flag} {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag) && err.contains("between 1 and"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(!out_dir.exists(), "nothing is written on a bad flag");

    let file = tmp.path().join("a_file");
    std::fs::write(&file, "x").unwrap();
    let out = poc().args(["world", "--out"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is a file, not a directory"), "{err}");

    // Under a file, no directory can be made (even for root).
    let out = poc()
        .args(["world", "--out"])
        .arg(file.join("sub"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot write") && err.contains("hint"),
        "{err}"
    );
}

#[test]
fn bad_usage_exits_2() {
    poc().args(["world", "--seed", "abc"]).assert().code(2);
    poc().args(["world", "--pairs", "-3"]).assert().code(2);
    poc().args(["world", "--frobnicate"]).assert().code(2);
}

#[test]
fn help_teaches() {
    let out = poc().args(["world", "--help"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for word in [
        "--out",
        "--seed",
        "--pairs",
        "--sft",
        "--eval-prompts",
        "--heldout",
        "r* =",
        "Bradley-Terry",
        "score_chosen",
        "label_flipped",
        "MallowsPO",
        "MMPO",
        "MPO",
        "MIPO",
        "Examples",
    ] {
        assert!(text.contains(word), "world --help lacks {word}:\n{text}");
    }
    let top = poc().arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&top.stdout).contains("world"));
}
