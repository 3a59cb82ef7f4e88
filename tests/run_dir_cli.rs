//! The run directory through the real binary: one writer at a time (a second `poc run` on the
//! same `--out` is refused before it writes anything), a lock and half-written files left by a
//! killed run are taken over and removed, SIGTERM stops a run with a checkpoint as Ctrl-C does,
//! and a second signal ends the process at once with exit code 130, never a panic. Numeric
//! flags are checked against their ranges when parsed. `--resume` compares the checkpoint's
//! recorded settings; data rows are checked against the columns the objective reads; a
//! non-finite loss is blamed on its cause.

use assert_cmd::Command;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn poc() -> Command {
    Command::cargo_bin("poc").unwrap()
}

/// `poc run dpo` into `out` for many steps, in the background, stderr piped.
fn long_run(out: &Path) -> Child {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("poc"))
        .args([
            "run",
            "dpo",
            "--max-steps",
            "100000",
            "--no-progress",
            "--out",
        ])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `out/metrics.jsonl` has a line (training has started, the handlers are set).
fn wait_for_training(child: &mut Child, out: &Path) {
    let start = Instant::now();
    loop {
        let lines = std::fs::read_to_string(out.join("metrics.jsonl"))
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if lines > 0 {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("the run ended before training ({status}): {err}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no training step within 300 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The exit code and stderr of `child`, waiting at most 300 s (then it is killed).
fn finish(mut child: Child) -> (Option<i32>, String) {
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            panic!("the run did not stop within 300 s of the signal");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code(), err)
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: sends a signal to our own child process, which has not been reaped yet.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({sig})");
}

#[test]
fn a_second_run_on_the_same_out_is_refused_and_sigterm_saves_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut first = long_run(&out);
    wait_for_training(&mut first, &out);
    let before = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    // The second writer is refused at once, naming the holder, and writes nothing.
    let second = poc()
        .args(["run", "ipo", "--max-steps", "2", "--no-progress", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8(second.stderr).unwrap();
    assert!(
        err.contains("is in use by another poc run")
            && err.contains(&format!("pid {}", first.id())),
        "{err}"
    );
    let config = std::fs::read_to_string(out.join("run_config.json")).unwrap();
    assert!(
        config.contains("\"dpo\""),
        "run_config.json was overwritten: {config}"
    );
    let after = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(after.starts_with(&before), "metrics.jsonl was rewritten");
    // SIGTERM, as a job scheduler sends it: a checkpoint after the step, then a clean stop.
    signal(&first, libc::SIGTERM);
    let (code, err) = finish(first);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("interrupted (Ctrl-C or SIGTERM)") && err.contains("saved"),
        "{err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("internal error"),
        "{err}"
    );
    let saved = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("checkpoint-"));
    assert!(saved, "no checkpoint after SIGTERM");
    // A clean exit releases the directory: the lock file is gone.
    assert!(!out.join(".poc-run.lock").exists());
}

#[test]
fn a_second_signal_ends_the_run_at_once_without_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut child = long_run(&out);
    wait_for_training(&mut child, &out);
    signal(&child, libc::SIGINT);
    std::thread::sleep(Duration::from_millis(20));
    signal(&child, libc::SIGINT);
    let (code, err) = finish(child);
    // Either the second signal came in time (130), or the first had already stopped the run.
    assert!(code == Some(130) || code == Some(1), "{code:?}: {err}");
    if code == Some(130) {
        assert!(err.contains("interrupted again"), "{err}");
    }
    assert!(
        !err.contains("panicked")
            && !err.contains("internal error")
            && !err.contains("INTERNAL ASSERT"),
        "{err}"
    );
}

#[test]
fn a_killed_runs_lock_and_half_written_files_are_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    std::fs::create_dir_all(out.join("checkpoint-3.tmp")).unwrap();
    std::fs::write(out.join("checkpoint-3.tmp/optimizer.bin"), "partial").unwrap();
    std::fs::write(out.join(".metrics.jsonl.tmp-4242-0"), "partial").unwrap();
    // The lock file of a process that no longer runs (nobody holds the lock).
    std::fs::write(
        out.join(".poc-run.lock"),
        "pid 4242, started 0 s after the Unix epoch",
    )
    .unwrap();
    let run = poc()
        .args(["run", "dpo", "--max-steps", "1", "--no-progress", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8(run.stderr).unwrap();
    assert!(run.status.success(), "{err}");
    assert!(err.contains("did not exit cleanly (pid 4242"), "{err}");
    assert!(err.contains("removed 2 half-written file(s)"), "{err}");
    assert!(!out.join("checkpoint-3.tmp").exists());
    assert!(out.join("checkpoint-1").is_dir());
    assert!(!out.join(".poc-run.lock").exists());
}

#[test]
fn numeric_flags_are_checked_against_their_ranges_when_parsed() {
    let tmp = tempfile::tempdir().unwrap();
    for (flag, value, says) in [
        ("--lr", "nan", "finite"),
        ("--lr", "inf", "finite"),
        ("--lr", "-1", "above 0"),
        ("--lr", "0", "above 0"),
        ("--epochs", "0", "at least 1"),
        ("--max-steps", "0", "at least 1"),
        ("--batch-size", "0", "at least 1"),
        ("--grad-accum", "0", "at least 1"),
        ("--lora", "0", "at least 1"),
        ("--max-length", "2", "at least 4"),
        ("--warmup-ratio", "1.5", "[0, 1]"),
        ("--weight-decay", "-0.1", "at least 0"),
        ("--max-grad-norm", "nan", "finite"),
        ("--eval-fraction", "1.5", "[0, 1)"),
        ("--temperature", "0", "above 0"),
        ("--ppo-epochs", "0", "at least 1"),
    ] {
        let out = tmp.path().join("never");
        let run = poc()
            .args(["run", "dpo", &format!("{flag}={value}"), "--out"])
            .arg(&out)
            .output()
            .unwrap();
        let err = String::from_utf8(run.stderr).unwrap();
        assert_eq!(run.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(
            err.contains(flag) && err.contains(says),
            "{flag} {value}: {err}"
        );
        assert!(!out.exists(), "{flag} {value} created the run directory");
    }
}

/// `poc run ARGS --no-progress --out OUT`: (exit code, stderr).
fn run_in(out: &Path, args: &[&str]) -> (Option<i32>, String) {
    let o = poc()
        .arg("run")
        .args(args)
        .arg("--no-progress")
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    (o.status.code(), String::from_utf8(o.stderr).unwrap())
}

#[test]
fn resume_refuses_other_settings_unless_allowed_and_records_the_change() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r");
    let first = ["dpo", "--max-steps", "4", "--save-every", "2"];
    let (code, err) = run_in(&out, &first);
    assert_eq!(code, Some(0), "{err}");
    let ckpt = out.join("checkpoint-2");
    let ckpt_arg = ckpt.to_str().unwrap();
    // Another objective, another beta, another lr and another batch: each listed, nothing
    // written (the metrics keep the first run's 4 steps).
    let (code, err) = run_in(
        &out,
        &[
            "ipo",
            "--max-steps",
            "4",
            "--batch-size",
            "16",
            "--lr",
            "0.01",
            "--resume",
            ckpt_arg,
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    for needle in [
        "this run's settings differ from the checkpoint's",
        "objective: dpo (formula sha ",
        "batch-size: 8 in the checkpoint, 16 now",
        "lr: 0.001 in the checkpoint, 0.01 now",
        "set.label_smoothing: 0.0 in the checkpoint, none now",
        "--allow-change objective,",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in {err}");
    }
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 4);
    // The same run with --set beta changed: refused, then allowed by name.
    let again = [
        "dpo",
        "--max-steps",
        "4",
        "--save-every",
        "2",
        "--set",
        "beta=0.2",
        "--resume",
        ckpt_arg,
    ];
    let (code, err) = run_in(&out, &again);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("set.beta: 0.1 in the checkpoint, 0.2 now"),
        "{err}"
    );
    let mut allowed = again.to_vec();
    allowed.extend(["--allow-change", "set.beta"]);
    let (code, err) = run_in(&out, &allowed);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("resuming with changed settings"), "{err}");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run_config.json")).unwrap())
            .unwrap();
    let history = config["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{config}");
    assert_eq!(history[0]["step"], 2);
    assert_eq!(history[0]["changed"][0]["setting"], "set.beta");
    assert_eq!(history[0]["changed"][0]["was"], 0.1);
    assert_eq!(history[0]["changed"][0]["now"], 0.2);
    // One consistent metrics file: steps 1, 2 of the first run, then 3, 4 of the resumed one.
    let steps: Vec<u64> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, [1, 2, 3, 4]);
    // An unknown name is refused, and --allow-change needs --resume.
    let mut unknown = again.to_vec();
    unknown.extend(["--allow-change", "learning-rate"]);
    let (code, err) = run_in(&out, &unknown);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("--allow-change learning-rate: not a setting of this run"),
        "{err}"
    );
    let (code, err) = run_in(&out, &["dpo", "--allow-change", "lr"]);
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn after_a_resume_the_last_good_checkpoint_is_the_resumed_one_and_a_bad_optimizer_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let po = tmp.path().join("scaled.po");
    // With scale = -1 the log's argument is negative: NaN from the first step after the resume.
    std::fs::write(
        &po,
        "objective scaled\nparam scale = 1\ninput policy_chosen_logps\nloss = log(-scale * policy_chosen_logps)\n",
    )
    .unwrap();
    let po = po.to_str().unwrap();
    let out = tmp.path().join("r");
    let (code, err) = run_in(&out, &[po, "--max-steps", "2"]);
    assert_eq!(code, Some(0), "{err}");
    let ckpt = out.join("checkpoint-2");
    let ckpt_arg = ckpt.to_str().unwrap();
    let (code, err) = run_in(
        &out,
        &[
            po,
            "--max-steps",
            "4",
            "--set",
            "scale=-1",
            "--resume",
            ckpt_arg,
            "--allow-change",
            "set.scale,max-steps",
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("step 3: the loss is not finite at data line"),
        "{err}"
    );
    assert!(
        err.contains(&format!("The last good checkpoint is {}", ckpt.display())),
        "{err}"
    );
    // A truncated optimizer state: named, with what to do, no Rust debug text.
    let opt = ckpt.join("optimizer.bin");
    let bytes = std::fs::read(&opt).unwrap();
    std::fs::write(&opt, &bytes[..bytes.len() / 2]).unwrap();
    let (code, err) = run_in(
        &out,
        &[
            po,
            "--max-steps",
            "4",
            "--resume",
            ckpt_arg,
            "--allow-change",
            "max-steps",
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{}: not a complete AdamW state poc can read",
            opt.display()
        )),
        "{err}"
    );
    assert!(err.contains("resume from an earlier checkpoint"), "{err}");
    assert!(
        !err.contains("Error {") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn a_non_finite_loss_on_finite_inputs_is_blamed_on_the_objective() {
    let tmp = tempfile::tempdir().unwrap();
    let po = tmp.path().join("bad.po");
    std::fs::write(
        &po,
        "objective bad\ninput policy_chosen_logps\nloss = log(policy_chosen_logps)\n",
    )
    .unwrap();
    let (code, err) = run_in(
        &tmp.path().join("r"),
        &[po.to_str().unwrap(), "--max-steps", "3"],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("step 1: the loss is not finite at data line"),
        "{err}"
    );
    assert!(
        err.contains("on finite inputs (policy_chosen_logps = -"),
        "{err}"
    );
    assert!(
        err.contains("objective `bad` gives NaN or inf there; check its formula"),
        "{err}"
    );
    assert!(err.contains("The last good checkpoint is none"), "{err}");
}

#[test]
fn data_rows_are_checked_against_the_columns_the_objective_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let po = tmp.path().join("margin.po");
    std::fs::write(
        &po,
        "objective margin\ninput policy_chosen_logps\ninput policy_rejected_logps\ninput score_chosen\ninput score_rejected\nloss = -log_sigmoid((score_chosen - score_rejected) * (policy_chosen_logps - policy_rejected_logps))\n",
    )
    .unwrap();
    let po = po.to_str().unwrap();
    let row = |c: &str, r: &str, sc: &str| {
        format!(
            r#"{{"prompt": "p", "chosen": "{c}", "rejected": "{r}", "score_chosen": {sc}, "score_rejected": 1}}"#
        )
    };
    let data = tmp.path().join("rows.jsonl");
    let rows = [
        row("good", "bad", "2"),
        row("good", "bad", r#""abc""#),
        row("good", "bad", "null"),
        r#"{"prompt": "p", "chosen": "good", "rejected": "bad", "score_rejected": 1}"#.to_string(),
        row("same", "same", "3"),
        row("good", "worse", "4"),
    ];
    std::fs::write(&data, rows.join("\n") + "\n").unwrap();
    let data_arg = data.to_str().unwrap();
    let out = tmp.path().join("r");
    let (code, err) = run_in(&out, &[po, "--data", data_arg, "--max-steps", "1"]);
    assert_eq!(code, Some(0), "{err}");
    for needle in [
        "skipped 3 bad row(s)",
        &format!("{data_arg}:2: column `score_chosen` is a string (\"abc\"), not a finite number"),
        &format!("{data_arg}:3: column `score_chosen` is null, not a finite number"),
        &format!("{data_arg}:4: lacks the column `score_chosen`, which the objective reads"),
        "1 pair(s) have the same chosen and rejected tokens (row 5)",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in {err}");
    }
    // Under --strict the first bad row stops the run, by file and line.
    let (code, err) = run_in(
        &tmp.path().join("s"),
        &[po, "--data", data_arg, "--max-steps", "1", "--strict"],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("{data_arg}:2: column `score_chosen`")),
        "{err}"
    );
    // A run whose data cannot be used leaves no run directory behind.
    let missing = tmp.path().join("nowhere.jsonl");
    let fresh = tmp.path().join("fresh");
    let (code, err) = run_in(&fresh, &["dpo", "--data", missing.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(!fresh.exists(), "set-up left {}", fresh.display());
}
