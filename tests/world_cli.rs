//! `poc world` and `poc world label` through the real binary: the files, their determinism,
//! the summary, the help, and the errors (exit 1 for bad values, rows and unwritable places,
//! 2 for bad usage).

use assert_cmd::Command;
use serde_json::Value;
use std::path::Path;

const FILES: [&str; 7] = [
    "world.json",
    "sft.jsonl",
    "sft_heldout.jsonl",
    "train.jsonl",
    "train_useless_scores.jsonl",
    "heldout.jsonl",
    "prompts.jsonl",
];

fn poc() -> Command {
    Command::cargo_bin("poc").unwrap()
}

/// Runs `poc world` into `dir` with a small size and `extra` flags; returns stdout.
fn world_with(dir: &Path, seed: &str, extra: &[&str]) -> String {
    let out = poc()
        .args(["world", "--seed", seed, "--pairs", "600", "--sft", "300"])
        .args(["--heldout", "60", "--eval-prompts", "24"])
        .args(extra)
        .arg("--out")
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

fn world(dir: &Path, seed: &str) -> String {
    world_with(dir, seed, &[])
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The JSON rows of a JSONL file.
fn rows(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{path:?}: {e}: {l}")))
        .collect()
}

fn manifest(dir: &Path) -> Value {
    serde_json::from_slice(&read(dir, "world.json")).unwrap()
}

/// The sorted column names of a JSON row.
fn columns(row: &Value) -> Vec<String> {
    let mut c: Vec<String> = row.as_object().unwrap().keys().cloned().collect();
    c.sort();
    c
}

#[test]
fn writes_the_world_and_a_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("w");
    let text = world(&dir, "3");
    let lines = |name: &str| String::from_utf8(read(&dir, name)).unwrap().lines().count();
    assert_eq!(lines("train.jsonl"), 600);
    assert_eq!(lines("train_useless_scores.jsonl"), 600);
    assert_eq!(lines("sft.jsonl"), 300);
    assert_eq!(lines("sft_heldout.jsonl"), 60);
    assert_eq!(lines("heldout.jsonl"), 60);
    assert_eq!(lines("prompts.jsonl"), 24);
    let m = manifest(&dir);
    assert_eq!(m["seed"], 3);
    assert_eq!(m["world_version"], 2);
    assert_eq!(m["candidates"], "on-policy");
    let families = m["families"].as_array().unwrap();
    assert_eq!(families.len(), 6);
    let mut pairs = 0;
    for f in families {
        let t = f["temperature"].as_f64().unwrap();
        assert!(t > 0.0);
        let q = f["q"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&q));
        let gamma = f["calibrated_gamma"].as_f64().unwrap();
        assert!((gamma - 1.0 / (2.25 * t)).abs() < 1e-12, "{f}");
        let role = f["role"].as_str().unwrap();
        assert!(
            ["aligned", "misaligned", "decoupled", "hard"].contains(&role),
            "{f}"
        );
        pairs += f["stats"]["pairs"].as_u64().unwrap();
    }
    assert_eq!(pairs, 600);
    for (name, n) in [
        ("sft.jsonl", 300),
        ("sft_heldout.jsonl", 60),
        ("train.jsonl", 600),
        ("train_useless_scores.jsonl", 600),
        ("heldout.jsonl", 60),
        ("prompts.jsonl", 24),
    ] {
        assert_eq!(m["files"][name], n, "{name}");
    }

    // The summary: a header, one line per family that says what world.json says, a total.
    let table: Vec<&str> = text.lines().collect();
    assert!(
        table[0].contains("world v2") && table[0].contains("on-policy"),
        "{text}"
    );
    let header: Vec<&str> = table[1].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "family",
            "task",
            "T",
            "q",
            "role",
            "pairs",
            "flips",
            "BT",
            "pred",
            "mean|gap|",
            "target",
            "SFT",
            "r*"
        ],
        "{text}"
    );
    for (i, f) in families.iter().enumerate() {
        let cells: Vec<&str> = table[2 + i].split_whitespace().collect();
        assert_eq!(cells[0], format!("f{i}"), "{text}");
        assert_eq!(cells[1], f["task"].as_str().unwrap(), "{text}");
        assert_eq!(
            cells[2].parse::<f64>().unwrap(),
            f["temperature"].as_f64().unwrap()
        );
        assert_eq!(cells[3].parse::<f64>().unwrap(), f["q"].as_f64().unwrap());
        assert_eq!(cells[4], f["role"].as_str().unwrap(), "{text}");
        assert_eq!(
            cells[5].parse::<u64>().unwrap(),
            f["stats"]["pairs"].as_u64().unwrap()
        );
        let flips: f64 = cells[6].parse().unwrap();
        let stat = f["stats"]["flip_rate"].as_f64().unwrap();
        assert!((flips - stat).abs() <= 0.0005 + 1e-12, "{text}");
    }
    assert!(
        table[8].starts_with("all pairs:") && table[8].contains("|gap| < 1"),
        "{text}"
    );

    // train_useless_scores.jsonl: the same pairs and labels, other scores.
    let (train, useless) = (rows(&dir.join("train.jsonl")), rows(&dir.join(FILES[4])));
    let mut rescored = 0;
    for (a, b) in train.iter().zip(&useless) {
        for key in [
            "prompt",
            "chosen",
            "rejected",
            "label_flipped",
            "bt_prob",
            "family",
        ] {
            assert_eq!(a[key], b[key], "{key}");
        }
        rescored += usize::from(a["score_chosen"] != b["score_chosen"]);
    }
    assert!(rescored > 300, "{rescored} of 600 scores differ");
    assert_eq!(columns(&train[0]), columns(&useless[0]));
    // sft_heldout.jsonl has the columns of sft.jsonl, on held-out words: none of its prompts is
    // a training prompt.
    let (sft, sft_heldout) = (rows(&dir.join("sft.jsonl")), rows(&dir.join(FILES[2])));
    assert_eq!(columns(&sft[0]), columns(&sft_heldout[0]));
    let words = |rows: &[Value]| -> std::collections::HashSet<String> {
        rows.iter()
            .map(|r| {
                r["prompt"]
                    .as_str()
                    .unwrap()
                    .split(' ')
                    .nth(2)
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let train_words = words(&train);
    assert!(words(&sft_heldout).is_disjoint(&train_words));
    assert!(words(&sft_heldout).is_disjoint(&words(&sft)));

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
fn near_miss_candidates_write_the_stress_world() {
    let tmp = tempfile::tempdir().unwrap();
    let (near, on) = (tmp.path().join("near"), tmp.path().join("on"));
    let text = world_with(&near, "4", &["--candidates", "near-miss"]);
    world(&on, "4");
    assert!(text.lines().next().unwrap().contains("near-miss"), "{text}");
    assert_eq!(manifest(&near)["candidates"], "near-miss");
    let train = rows(&near.join("train.jsonl"));
    assert_eq!(train.len(), 600);
    // One pair per prompt, families in turn.
    let k = manifest(&near)["families"].as_array().unwrap().len();
    for (i, r) in train.iter().enumerate() {
        assert_eq!(r["family"], i % k, "{r}");
    }
    assert_ne!(read(&near, "train.jsonl"), read(&on, "train.jsonl"));
    // The candidates change the pairs only.
    for name in ["sft.jsonl", "sft_heldout.jsonl", "prompts.jsonl"] {
        assert_eq!(read(&near, name), read(&on, name), "{name}");
    }
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

/// Writes `lines` to `dir/name`; returns its path.
fn write(dir: &Path, name: &str, lines: &[String]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn row(prompt: &str, completion: &str) -> String {
    serde_json::json!({"prompt": prompt, "completion": completion, "extra": 1}).to_string()
}

#[test]
fn label_turns_completions_into_pairs_with_the_train_columns() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("w");
    world(&dir, "1");
    // Two prompts of the world, from its own manifest (their tasks are the families').
    let m = manifest(&dir);
    let (f0, f5) = (&m["families"][0], &m["families"][5]);
    let (a, ta) = (
        f0["example_prompt"].as_str().unwrap(),
        f0["example_target"].as_str().unwrap(),
    );
    let (b, tb) = (
        f5["example_prompt"].as_str().unwrap(),
        f5["example_target"].as_str().unwrap(),
    );
    let mut lines = vec![
        row(a, ta),
        row(a, " kqzm"),
        row(b, tb),
        String::new(), // blank lines are skipped
        row(a, " zz"),
        row(a, ta), // a repeat adds no pair
        row(b, " kqzm"),
    ];
    let data = write(tmp.path(), "samples.jsonl", &lines);
    let label = |out: &Path, extra: &[&str]| {
        let o = poc()
            .args(["world", "label", "--data"])
            .arg(&data)
            .arg("--out")
            .arg(out)
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stderr).unwrap()
    };
    let out = tmp.path().join("pairs.jsonl");
    let summary = label(&out, &[]);
    assert!(
        summary.contains("labelled 4 pairs from 6 rows"),
        "{summary}"
    );
    let pairs = rows(&out);
    assert_eq!(pairs.len(), 4);
    let train = rows(&dir.join("train.jsonl"));
    let prompts: Vec<&str> = pairs
        .iter()
        .map(|p| p["prompt"].as_str().unwrap())
        .collect();
    assert_eq!(prompts, [a, a, a, b]);
    for p in &pairs {
        assert_eq!(columns(p), columns(&train[0]), "{p}");
        assert_ne!(p["chosen"], p["rejected"]);
        let (rc, rr) = (
            p["true_reward_chosen"].as_f64().unwrap(),
            p["true_reward_rejected"].as_f64().unwrap(),
        );
        assert_eq!(p["label_flipped"], u8::from(rc < rr));
        let t = p["temperature"].as_f64().unwrap();
        let bt = 1.0 / (1.0 + (-(rc - rr) / t).exp());
        assert!((p["bt_prob"].as_f64().unwrap() - bt).abs() < 1e-12, "{p}");
    }
    // The same seed labels the same; the exact target wins the most.
    let again = tmp.path().join("again.jsonl");
    label(&again, &[]);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
    assert!(
        pairs
            .iter()
            .any(|p| p["true_reward_chosen"] == 3.0 || p["true_reward_rejected"] == 3.0)
    );
    // Noise-free scores are r* on the 1-10 scale in halves.
    let clean = tmp.path().join("clean.jsonl");
    label(&clean, &["--score-noise", "0", "--seed", "2"]);
    for p in rows(&clean) {
        for side in ["chosen", "rejected"] {
            let r = p[format!("true_reward_{side}")].as_f64().unwrap();
            let want = ((1.0 + 2.25 * (r + 1.0)) * 2.0).round() / 2.0;
            assert_eq!(p[format!("score_{side}")].as_f64().unwrap(), want, "{p}");
        }
    }
    // A bigger file: every pair of a prompt's distinct completions.
    lines.clear();
    for c in [ta, " kqzm", " a", " bb", " ccc"] {
        lines.push(row(a, c));
    }
    let data5 = write(tmp.path(), "five.jsonl", &lines);
    let out5 = tmp.path().join("sub").join("five_pairs.jsonl");
    std::fs::create_dir(tmp.path().join("sub")).unwrap();
    poc()
        .args(["world", "label", "--data"])
        .arg(&data5)
        .arg("--out")
        .arg(&out5)
        .assert()
        .success();
    assert_eq!(rows(&out5).len(), 10);
}

#[test]
fn label_rejects_bad_rows_naming_the_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("w");
    world(&dir, "1");
    let f0 = &manifest(&dir)["families"][0];
    let prompt = f0["example_prompt"].as_str().unwrap();
    let good = row(prompt, f0["example_target"].as_str().unwrap());
    let cases: [(Vec<String>, &[&str]); 5] = [
        (vec![good.clone(), "{not json".into()], &[":2:", "not JSON"]),
        (
            vec![
                good.clone(),
                good.clone(),
                serde_json::json!({ "prompt": prompt }).to_string(),
            ],
            &[":3:", "completion"],
        ),
        (
            vec![r#"{"prompt": 7, "completion": " x"}"#.into()],
            &[":1:", "prompt"],
        ),
        (
            vec![good.clone(), row("hello world", " x")],
            &["row 2", "hello world", "not a prompt of this world"],
        ),
        (
            vec![good.clone(), row("f99 upper kqzm ->", " x")],
            &["row 2", "f99 upper kqzm ->"],
        ),
    ];
    for (i, (lines, words)) in cases.iter().enumerate() {
        let name = format!("bad{i}.jsonl");
        let data = write(tmp.path(), &name, lines);
        let out = tmp.path().join(format!("out{i}.jsonl"));
        let o = poc()
            .args(["world", "label", "--data"])
            .arg(&data)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "case {i}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&name), "case {i}: {err}");
        for w in *words {
            assert!(err.contains(w), "case {i} lacks {w:?}: {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
        assert!(!out.exists(), "case {i}: nothing is written for a bad file");
    }
    // An empty file, a missing one, and a bad noise are errors too.
    let empty = write(tmp.path(), "empty.jsonl", &[]);
    let missing = tmp.path().join("missing.jsonl");
    let data = write(tmp.path(), "ok.jsonl", &[good]);
    for (data, extra, word) in [
        (&empty, &[][..], "no rows"),
        (&missing, &[][..], "cannot read"),
        (&data, &["--score-noise=-1"][..], "--score-noise"),
        (&data, &["--score-noise", "inf"][..], "--score-noise"),
    ] {
        let o = poc()
            .args(["world", "label", "--data"])
            .arg(data)
            .args(["--out"])
            .arg(tmp.path().join("o.jsonl"))
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{word}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(word), "{err}");
    }
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
    poc()
        .args(["world", "--candidates", "bogus"])
        .assert()
        .code(2);
    poc().args(["world", "label"]).assert().code(2);
    poc()
        .args(["world", "label", "--data", "x.jsonl"])
        .assert()
        .code(2);
    poc()
        .args(["world", "label", "--data", "x", "--out", "y", "--seed", "z"])
        .assert()
        .code(2);
    poc()
        .args([
            "world",
            "label",
            "--data",
            "x",
            "--out",
            "y",
            "--score-noise",
            "lots",
        ])
        .assert()
        .code(2);
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
        "--candidates",
        "near-miss",
        "label",
        "r* =",
        "Bradley-Terry",
        "score_chosen",
        "label_flipped",
        "bt_prob",
        "calibrated_gamma",
        "sft_heldout.jsonl",
        "train_useless_scores.jsonl",
        "MallowsPO",
        "MMPO",
        "MPO",
        "MIPO",
        "Examples",
    ] {
        assert!(text.contains(word), "world --help lacks {word}:\n{text}");
    }
    let out = poc().args(["world", "label", "--help"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for word in ["--data", "--out", "--seed", "--score-noise", "completion"] {
        assert!(
            text.contains(word),
            "world label --help lacks {word}:\n{text}"
        );
    }
    let top = poc().arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&top.stdout).contains("world"));
}
