//! The run directory through the real binary: one writer at a time (a second `poc run` on the
//! same `--out` is refused before it writes anything), a lock and half-written files left by a
//! killed run are taken over and removed, SIGTERM stops a run with a checkpoint as Ctrl-C does,
//! and a second signal ends the process at once with exit code 130, never a panic. Numeric
//! flags are checked against their ranges when parsed.

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
