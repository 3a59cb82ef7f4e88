//! `poc run` and `poc logps` through the real binary: training the embedded tiny model
//! raises DPO's reward accuracy above 0.9, checkpoints load back in HF layout, runs are
//! seeded-deterministic, the NaN guard stops with the step and rows, and every error path
//! names its cause.

use assert_cmd::Command;
use std::path::Path;

fn poc() -> Command {
    Command::cargo_bin("poc").unwrap()
}

fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn dpo_on_easy_synthetic_pairs_reaches_high_reward_accuracy() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    poc()
        .args(["run", "dpo", "--max-steps", "40", "--no-progress", "--out"])
        .arg(&out)
        .assert()
        .success();
    let m = metrics(&out);
    assert_eq!(m.len(), 40);
    let acc = |rows: &[serde_json::Value]| {
        rows.iter()
            .map(|r| r["metrics"]["rewards/accuracies"].as_f64().unwrap())
            .sum::<f64>()
            / rows.len() as f64
    };
    let (first, last) = (acc(&m[..5]), acc(&m[35..]));
    assert!(last > 0.9, "reward accuracy over the last 5 steps: {last}");
    assert!(m[39]["loss"].as_f64().unwrap() < m[0]["loss"].as_f64().unwrap());
    assert!(first < last);
    for key in ["grad_norm", "lr", "tokens_per_sec", "epoch"] {
        assert!(m[0][key].is_number(), "metrics.jsonl lacks {key}");
    }
    for key in [
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
    ] {
        assert!(m[0]["metrics"][key].is_number(), "metrics lack {key}");
    }
    // The run directory: resolved config, data, and an HF-layout checkpoint that loads.
    let ckpt = out.join("checkpoint-40");
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "trainer_state.json",
    ] {
        assert!(ckpt.join(f).exists(), "checkpoint lacks {f}");
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["objective"], "dpo");
    assert_eq!(cfg["params"]["beta"], 0.1);
    let head: String = std::fs::read_to_string(out.join("data.jsonl"))
        .unwrap()
        .lines()
        .take(50)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(tmp.path().join("head.jsonl"), head).unwrap();
    let text = String::from_utf8(
        poc()
            .args(["logps", "--data"])
            .arg(tmp.path().join("head.jsonl"))
            .arg("--model")
            .arg(&ckpt)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    // The trained policy prefers the chosen completion.
    assert!(
        first["chosen_logps"].as_f64().unwrap() > first["rejected_logps"].as_f64().unwrap(),
        "{first}"
    );
    assert!(first["chosen_len"].as_f64().unwrap() >= 1.0);
    assert_eq!(text.lines().count(), 50);
}

#[test]
fn runs_are_seeded_and_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, seed: &str| {
        let out = tmp.path().join(name);
        poc()
            .args([
                "run",
                "mallows_theta",
                "--max-steps",
                "6",
                "--no-progress",
                "--seed",
                seed,
                "--out",
            ])
            .arg(&out)
            .assert()
            .success();
        metrics(&out)
            .iter()
            .map(|m| m["loss"].as_f64().unwrap())
            .collect::<Vec<_>>()
    };
    let (a, b, c) = (run("a", "1"), run("b", "1"), run("c", "2"));
    assert_eq!(a, b, "same seed, same losses");
    assert_ne!(a, c, "another seed, another run");
}

#[test]
fn run_errors_are_clear() {
    let tmp = tempfile::tempdir().unwrap();
    let case = |args: &[&str], needle: &str| {
        let out = poc()
            .args(args)
            .arg("--out")
            .arg(tmp.path().join("e"))
            .output()
            .unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: expected `{needle}` in:\n{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    };
    case(
        &["run", "dpo", "--model", "llama3-8b"],
        "has no local weights",
    );
    case(
        &["run", "dpo", "--model", "gpt-2"],
        "neither a directory nor a preset",
    );
    case(
        &["run", "dpo", "--data", "/nonexistent/prefs.jsonl"],
        "cannot read `/nonexistent/prefs.jsonl`",
    );
    case(&["run", "dpo", "--device", "tpu"], "unknown device `tpu`");
    // A CUDA device libtorch does not see is named before any tensor is made (no panic).
    case(
        &["run", "dpo", "--device", "cuda:99"],
        "device `cuda:99`: libtorch sees",
    );
    case(
        &["run", "ppo", "--device", "cuda:99"],
        "device `cuda:99`: libtorch sees",
    );
    case(
        &["run", "dpo", "--lora", "4", "--lora-target-modules", "qkv"],
        "unknown LoRA target module `qkv`",
    );
    case(&["run", "dpo", "--set", "bta=1"], "did you mean `beta`?");
    case(
        &[
            "run",
            "mmpo",
            "--max-steps",
            "1",
            "--data",
            "tests/fixtures/prefs_no_scores.jsonl",
        ],
        "lacks the column `score_chosen`, which the objective reads",
    );
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"prompt\": \"a\", \"chosen\": \" b\", \"rejected\": \" c\"}\n{\"prompt\": \"a\"}\n",
    )
    .unwrap();
    case(
        &["run", "dpo", "--strict", "--data", bad.to_str().unwrap()],
        "bad.jsonl:2: missing field `chosen`",
    );
    // Without --strict the bad row is skipped with a warning and the run proceeds.
    let out = poc()
        .args([
            "run",
            "dpo",
            "--max-steps",
            "1",
            "--no-progress",
            "--data",
            bad.to_str().unwrap(),
            "--out",
        ])
        .arg(tmp.path().join("ok"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("skipped 1 bad row(s)")
    );
}

#[test]
fn bench_train_reports_a_table() {
    // A smoke run of the benchmark's machinery (no timing is asserted: speed targets live in
    // the benchmark's own report, not in tests).
    let out = poc()
        .args([
            "bench", "train", "--hidden", "64", "--layers", "1", "--pairs", "1", "--seq", "24",
            "--steps", "1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("| poc (burn + libtorch, symbolic gradient) |"),
        "{text}"
    );
}

/// A copy of run `run` in `into` as if it had stopped right after writing `checkpoint-{step}`:
/// that checkpoint (adapters and all) and the first `lines` lines of its metrics.jsonl.
/// Returns the copied checkpoint.
fn stopped_copy(run: &Path, into: &Path, step: usize, lines: usize) -> std::path::PathBuf {
    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                copy_dir(&e.path(), &to.join(e.file_name()));
            } else {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }
    let name = format!("checkpoint-{step}");
    copy_dir(&run.join(&name), &into.join(&name));
    let head: String = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .take(lines)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(into.join("metrics.jsonl"), head).unwrap();
    into.join(name)
}

/// Runs 6 steps of `objective` with `extra` flags, and again resumed from the step-3
/// checkpoint of a copy; the loss curves must be identical. Returns the first run's
/// directory's parent.
fn check_resume(objective: &str, extra: &[&str]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let mut args = vec![
        "run",
        objective,
        "--max-steps",
        "6",
        "--save-every",
        "3",
        "--no-progress",
    ];
    args.extend_from_slice(extra);
    args.push("--out");
    poc().args(&args).arg(&a).assert().success();
    // b: a copy of a's state at step 3 (as if a had been stopped there), then resumed.
    // Steps 4-5, logged after the checkpoint, are dropped by the resumed run.
    let ck = stopped_copy(&a, &b, 3, 5);
    for f in [
        "optimizer.bin",
        "trainer_state.json",
        "model.safetensors",
        "tokenizer.json",
    ] {
        assert!(ck.join(f).exists(), "checkpoint lacks {f}");
    }
    poc()
        .args(&args)
        .arg(&b)
        .arg("--resume")
        .arg(&ck)
        .assert()
        .success();
    let losses = |d: &Path| {
        metrics(d)
            .iter()
            .map(|m| (m["step"].as_u64().unwrap(), m["loss"].as_f64().unwrap()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        losses(&a),
        losses(&b),
        "a resumed run reproduces the uninterrupted loss curve"
    );
    let err = poc()
        .args(&args)
        .arg(tmp.path().join("c"))
        .arg("--resume")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(err.status.code(), Some(1));
    tmp
}

#[test]
fn resume_continues_the_loss_curve_exactly() {
    check_resume("dpo", &[]);
}

#[test]
fn lora_trains_adapters_against_the_base_and_resumes_exactly() {
    let tmp = check_resume("dpo", &["--lora", "4", "--lr", "5e-3"]);
    let ck = tmp.path().join("a/checkpoint-6");
    for f in [
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "model.safetensors",
    ] {
        assert!(ck.join(f).exists(), "LoRA checkpoint lacks {f}");
    }
    // The adapters are not beside the merged weights, where transformers' from_pretrained would
    // take the checkpoint for an adapter and load its base instead.
    assert!(!ck.join("adapter_config.json").exists());
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("a/run_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["lora"]["rank"], 4);
    assert_eq!(cfg["lora"]["alpha"], 8.0);
    // Resuming a LoRA checkpoint needs the LoRA flags, and a full checkpoint must not get them.
    let out = poc()
        .args(["run", "dpo", "--no-progress", "--out"])
        .arg(tmp.path().join("c"))
        .arg("--resume")
        .arg(&ck)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("same --lora flags")
    );
    // The reference is the policy with adapters off: identical to a precomputed reference.
    let losses = |d: &Path| {
        metrics(d)
            .iter()
            .map(|m| m["loss"].as_f64().unwrap())
            .collect::<Vec<_>>()
    };
    let args = [
        "run",
        "dpo",
        "--max-steps",
        "3",
        "--lora",
        "4",
        "--no-progress",
        "--out",
    ];
    let (live, cached) = (tmp.path().join("live"), tmp.path().join("cached"));
    poc().args(args).arg(&live).assert().success();
    poc()
        .args(args)
        .arg(&cached)
        .arg("--precompute-ref")
        .assert()
        .success();
    assert_eq!(losses(&live), losses(&cached));
    // A fresh adapter leaves the policy equal to the reference: DPO's first loss is log 2.
    assert!((losses(&live)[0] - std::f64::consts::LN_2).abs() < 1e-5);
}

#[path = "../runtime/tests/common/python.rs"]
mod python;

/// Trains `objective` for 2 steps with rank-4 LoRA (and `extra` flags) on the transformers
/// fixture into `out`, then runs scripts/check_peft.py: PEFT's adapters on the fixture must
/// equal poc's merged checkpoint. Returns the script's JSON report; `None` when the test is
/// skipped for want of Python with peft (see `python::python_with`).
fn check_peft(objective: &str, extra: &[&str], out: &Path) -> Option<String> {
    let python = python::python_with(
        &format!("the PEFT check of {objective}"),
        &["torch", "transformers", "peft"],
    )?;
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime/tests/fixtures/tiny-llama");
    poc()
        .args([
            "run",
            objective,
            "--max-steps",
            "2",
            "--lora",
            "4",
            "--lr",
            "5e-2",
            // The fixture is bf16, so checkpoints default to bf16, which rounds the merged
            // weights; the check compares PEFT with the exact merge.
            "--save-dtype",
            "f32",
        ])
        .args(extra)
        .args(["--no-progress", "--model"])
        .arg(&base)
        .arg("--out")
        .arg(out)
        .assert()
        .success();
    let check = std::process::Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_peft.py"))
        .arg(&base)
        .arg(out.join("checkpoint-2"))
        .output()
        .expect("the Python of scripts/setup.sh");
    let report = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(
        check.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    Some(report)
}

#[test]
fn lora_checkpoints_load_in_peft() {
    // The transformers fixture is the base; PEFT's adapters on it must equal poc's merge.
    let tmp = tempfile::tempdir().unwrap();
    check_peft(
        "dpo",
        &["--lora-target-modules", "all-linear"],
        &tmp.path().join("run"),
    );
}

#[test]
fn lora_reward_models_train_their_head_resume_and_load_in_peft() {
    // A reward model under LoRA: adapters plus its head (PEFT's SEQ_CLS modules_to_save).
    let tmp = check_resume("bt_reward", &["--lora", "4", "--lr", "5e-3"]);
    let ck = tmp.path().join("a/checkpoint-6");
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ck.join("adapter/adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["task_type"], "SEQ_CLS");
    // On the transformers fixture, PEFT's adapters and head equal poc's merged reward model.
    if let Some(report) = check_peft("bt_reward", &[], &tmp.path().join("fixture")) {
        assert!(report.contains("SEQ_CLS"), "{report}");
    }
}

#[test]
fn lora_learns_the_easy_pairs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    poc()
        .args([
            "run",
            "dpo",
            "--max-steps",
            "40",
            "--lora",
            "8",
            "--lr",
            "5e-3",
        ])
        .args([
            "--lora-target-modules",
            "all-linear",
            "--no-progress",
            "--out",
        ])
        .arg(&out)
        .assert()
        .success();
    let m = metrics(&out);
    let acc: f64 = m[35..]
        .iter()
        .map(|r| r["metrics"]["rewards/accuracies"].as_f64().unwrap())
        .sum::<f64>()
        / 5.0;
    assert!(
        acc > 0.9,
        "LoRA reward accuracy over the last 5 steps: {acc}"
    );
    assert!(m[39]["loss"].as_f64().unwrap() < m[0]["loss"].as_f64().unwrap());
}

#[test]
fn bt_reward_trains_a_reward_model_with_held_out_accuracy() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("rm");
    poc()
        .args([
            "run",
            "bt_reward",
            "--max-steps",
            "60",
            "--eval-every",
            "30",
        ])
        .args(["--no-progress", "--out"])
        .arg(&out)
        .assert()
        .success();
    let m = metrics(&out);
    let acc = |rows: &[serde_json::Value]| {
        rows.iter()
            .map(|r| r["metrics"]["accuracy"].as_f64().unwrap())
            .sum::<f64>()
            / rows.len() as f64
    };
    assert!(acc(&m[55..]) > 0.9, "train accuracy {}", acc(&m[55..]));
    // Held-out accuracy (10% of the pairs by default) at steps 30 and 60, and only there.
    let evals: Vec<_> = m
        .iter()
        .filter_map(|r| {
            r["metrics"]["eval/accuracy"]
                .as_f64()
                .map(|a| (r["step"].clone(), a))
        })
        .collect();
    assert_eq!(evals.len(), 2, "{evals:?}");
    assert!(evals[1].1 > 0.9, "held-out accuracy {evals:?}");
    assert!(m[59]["metrics"]["eval/loss"].is_number());
    // An HF-layout LlamaForSequenceClassification checkpoint.
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("checkpoint-60/config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        cfg["architectures"],
        serde_json::json!(["LlamaForSequenceClassification"])
    );
    // A policy objective cannot be a reward task, nor the reverse.
    for (args, needle) in [
        (
            ["run", "dpo", "--task", "reward"],
            "reads no reward-model output",
        ),
        (
            ["run", "bt_reward", "--task", "policy"],
            "trains a reward model",
        ),
    ] {
        let o = poc().args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(1));
        assert!(String::from_utf8(o.stderr).unwrap().contains(needle));
    }
}

#[test]
fn mmpo_reward_trains_a_reward_model_on_score_margins() {
    // MMPO's reward-model loss reads the dataset's quality scores (the bundled pairs have
    // them); `--task reward` is what `auto` infers from its reward inputs.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("mmpo_rm");
    poc()
        .args(["run", "objectives/mmpo_reward.po", "--task", "reward"])
        .args(["--max-steps", "3", "--no-progress", "--out"])
        .arg(&out)
        .assert()
        .success();
    let m = metrics(&out);
    assert_eq!(m.len(), 3);
    let last = &m[2]["metrics"];
    let p_star = last["target/p_star"].as_f64().unwrap();
    assert!(p_star > 0.0 && p_star < 1.0, "{last}");
    assert!(last["eval/accuracy"].is_number(), "{last}");
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("checkpoint-3/config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        cfg["architectures"],
        serde_json::json!(["LlamaForSequenceClassification"])
    );
}

#[test]
fn dtype_and_checkpointing_flags_train() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |extra: &[&str], dir: &str| {
        let out = tmp.path().join(dir);
        poc()
            .args(["run", "dpo", "--max-steps", "3", "--no-progress"])
            .args(extra)
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        metrics(&out)
            .iter()
            .map(|m| m["loss"].as_f64().unwrap())
            .collect::<Vec<_>>()
    };
    let plain = run(&[], "plain");
    // Recomputing activations changes memory, not results.
    let ckpt = run(&["--gradient-checkpointing"], "ckpt");
    for (x, y) in plain.iter().zip(&ckpt) {
        assert!((x - y).abs() < 1e-5, "{plain:?} vs {ckpt:?}");
    }
    let bf16 = run(&["--dtype", "bf16"], "bf16");
    assert!(bf16.iter().all(|l| l.is_finite()));
    assert!((bf16[0] - plain[0]).abs() < 0.05, "{bf16:?} vs {plain:?}");
}

#[test]
fn precomputed_reference_matches_the_live_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let args = ["run", "mipo", "--max-steps", "4", "--no-progress", "--out"];
    poc().args(args).arg(&a).assert().success();
    let out = poc()
        .args(args)
        .arg(&b)
        .arg("--precompute-ref")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("precomputing reference log-probs")
    );
    assert!(b.join("ref_cache.json").exists());
    let losses = |d: &Path| {
        metrics(d)
            .iter()
            .map(|m| m["loss"].as_f64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(losses(&a), losses(&b));
    // A second run reuses the cache.
    let out = poc()
        .args(args)
        .arg(&b)
        .arg("--precompute-ref")
        .output()
        .unwrap();
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("reference log-probs from")
    );
}

/// A reward model of `steps` steps on the bundled pairs, trained into `dir`; its checkpoint.
fn reward_model(dir: &Path, steps: usize) -> std::path::PathBuf {
    poc()
        .args(["run", "bt_reward", "--no-progress", "--max-steps"])
        .arg(steps.to_string())
        .arg("--out")
        .arg(dir)
        .assert()
        .success();
    dir.join(format!("checkpoint-{steps}"))
}

#[test]
fn ppo_trains_on_policy_against_a_reward_model() {
    let tmp = tempfile::tempdir().unwrap();
    let rm = reward_model(&tmp.path().join("rm"), 4);
    // Without a reward model, the score has no source.
    let out = poc()
        .args(["run", "ppo", "--max-steps", "1", "--no-progress", "--out"])
        .arg(tmp.path().join("none"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("--reward-model")
    );
    let run = tmp.path().join("ppo");
    let ppo = |out: &Path, resume: Option<&Path>| {
        let mut cmd = poc();
        cmd.args(["run", "ppo", "--max-steps", "4", "--batch-size", "4"])
            .args([
                "--max-new-tokens",
                "6",
                "--ppo-epochs",
                "2",
                "--save-every",
                "2",
            ])
            .arg("--no-progress")
            .arg("--reward-model")
            .arg(&rm)
            .arg("--out")
            .arg(out);
        if let Some(ck) = resume {
            cmd.arg("--resume").arg(ck);
        }
        cmd.output().unwrap()
    };
    let a = ppo(&run, None);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let m = metrics(&run);
    assert_eq!(m.len(), 4);
    for row in &m {
        assert!(row["loss"].as_f64().unwrap().is_finite());
        for key in [
            "objective/kl",
            "objective/scores",
            "objective/rlhf_reward",
            "policy/clipfrac_avg",
            "loss/value_avg",
            "val/clipfrac_avg",
        ] {
            assert!(row["metrics"][key].is_number(), "{key} missing: {row}");
        }
        let n = row["metrics"]["rollout/completion_tokens"]
            .as_f64()
            .unwrap();
        assert!((1.0..=6.0).contains(&n), "{n}");
    }
    // The first rollout comes from the starting policy = the reference: zero KL.
    assert!(m[0]["metrics"]["objective/kl"].as_f64().unwrap().abs() < 1e-4);
    for f in [
        "model.safetensors",
        "value_head.safetensors",
        "optimizer.bin",
    ] {
        assert!(run.join("checkpoint-4").join(f).exists(), "{f}");
    }

    // Resumed from step 2 (a copy of the run as if stopped there), it takes the same steps:
    // the same rollouts, losses and metrics, the value head and optimizer state included.
    let b = tmp.path().join("ppo-resumed");
    let ck = stopped_copy(&run, &b, 2, 3); // step 3 came after the checkpoint
    let resumed = ppo(&b, Some(&ck));
    let err = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{err}");
    assert!(err.contains("resuming from"), "{err}");
    let strip = |rows: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        rows.into_iter()
            .map(|mut r| {
                r.as_object_mut().unwrap().remove("tokens_per_sec");
                r
            })
            .collect()
    };
    assert_eq!(strip(metrics(&run)), strip(metrics(&b)));
    // A checkpoint of a pairwise run is not one to continue PPO from.
    let wrong = ppo(&tmp.path().join("wrong"), Some(&rm));
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("not a checkpoint of an on-policy run"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
}

#[test]
fn ppo_with_the_world_oracle_scores_rollouts_by_the_true_reward() {
    let tmp = tempfile::tempdir().unwrap();
    let prompts = tmp.path().join("prompts.jsonl");
    let rows: String = [
        "f0 upper kqz ->",
        "f2 reverse abcd ->",
        "f5 sort zyx ->",
        "f1 upper mno ->",
    ]
    .iter()
    .map(|p| format!("{}\n", serde_json::json!({ "prompt": p })))
    .collect();
    std::fs::write(&prompts, rows).unwrap();
    let ppo = |out: &Path, prompts: Option<&Path>| {
        let mut cmd = poc();
        cmd.args([
            "run",
            "ppo",
            "--reward",
            "world",
            "--max-steps",
            "2",
            "--batch-size",
            "4",
        ])
        .args([
            "--max-new-tokens",
            "6",
            "--ppo-epochs",
            "1",
            "--no-progress",
            "--out",
        ])
        .arg(out);
        if let Some(p) = prompts {
            cmd.arg("--prompts").arg(p);
        }
        cmd.output().unwrap()
    };
    let run = tmp.path().join("oracle");
    let a = ppo(&run, Some(&prompts));
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["world_reward"], true);
    assert!(config["reward_model"].is_null());
    for row in metrics(&run) {
        let s = row["metrics"]["objective/scores"].as_f64().unwrap();
        // r* of a completion of a world prompt lies in [-1, 3]; random bytes from the untrained
        // model score near 0, not the -1 of a prompt the world does not know.
        assert!((-1.0..=3.0).contains(&s) && s > -1.0, "{s}");
    }
    // Prompts that are not the world's score exactly -1, every one of them.
    let other = tmp.path().join("other");
    let b = ppo(&other, None);
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    for row in metrics(&other) {
        assert_eq!(
            row["metrics"]["objective/scores"].as_f64(),
            Some(-1.0),
            "{row}"
        );
    }
    // One source of the score only.
    let both = poc()
        .args([
            "run",
            "ppo",
            "--reward",
            "world",
            "--reward-model",
            "x",
            "--max-steps",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(both.status.code(), Some(2));
}

#[test]
fn ppo_with_lora_trains_adapters_against_the_base_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let rm = reward_model(&tmp.path().join("rm"), 2);
    let ppo = |out: &Path, resume: Option<&Path>| {
        let mut cmd = poc();
        cmd.args(["run", "ppo", "--max-steps", "3", "--batch-size", "4"])
            .args([
                "--max-new-tokens",
                "6",
                "--ppo-epochs",
                "2",
                "--save-every",
                "1",
            ])
            .args(["--lora", "4", "--lr", "5e-3", "--no-progress"])
            .arg("--reward-model")
            .arg(&rm)
            .arg("--out")
            .arg(out);
        if let Some(ck) = resume {
            cmd.arg("--resume").arg(ck);
        }
        cmd.output().unwrap()
    };
    let a = tmp.path().join("a");
    let run = ppo(&a, None);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let m = metrics(&a);
    assert_eq!(m.len(), 3);
    // The reference is the base (adapters off) and the adapters start at B = 0: the first
    // rollout's KL is zero; the adapters then move the policy away from it.
    assert!(m[0]["metrics"]["objective/kl"].as_f64().unwrap().abs() < 1e-4);
    let ck = a.join("checkpoint-3");
    for f in [
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "value_head.safetensors",
        "model.safetensors",
    ] {
        assert!(ck.join(f).is_file(), "{f}");
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("run_config.json")).unwrap()).unwrap();
    assert_eq!(config["lora"]["rank"], 4);
    let kls: Vec<f64> = m
        .iter()
        .map(|r| r["metrics"]["objective/kl"].as_f64().unwrap())
        .collect();
    assert!(kls[1..].iter().any(|k| k.abs() > 1e-6), "{kls:?}");

    // Resumed from step 1: adapters, value head and optimizer come back; the same steps follow.
    let b = tmp.path().join("b");
    let copy = stopped_copy(&a, &b, 1, 1);
    let resumed = ppo(&b, Some(&copy));
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let strip = |rows: Vec<serde_json::Value>| -> Vec<serde_json::Value> {
        rows.into_iter()
            .map(|mut r| {
                r.as_object_mut().unwrap().remove("tokens_per_sec");
                r
            })
            .collect()
    };
    assert_eq!(strip(metrics(&a)), strip(metrics(&b)));
}

#[test]
fn sft_forwards_the_chosen_rows_alone_and_trains_on_demonstration_rows() {
    let tmp = tempfile::tempdir().unwrap();
    // The same loss with the rejected side declared (so forwarded, unused): the chosen-only
    // batches of sft give the same curve.
    let both = tmp.path().join("sft_both.po");
    std::fs::write(
        &both,
        "/// SFT forced to forward the rejected rows too.\nobjective sft_both\n\
         input policy_chosen_logps\ninput policy_rejected_logps\ninput chosen_len\n\
         loss = -policy_chosen_logps / chosen_len + 0 * policy_rejected_logps\n",
    )
    .unwrap();
    // Rows whose rejected equals chosen, so that both batchings bucket the pairs alike.
    let same = tmp.path().join("same.jsonl");
    let rows: String = (0..24)
        .map(|i| {
            let answer = " yes".repeat(1 + i % 5);
            format!("{{\"prompt\": \"q{i} ->\", \"chosen\": \"{answer}\", \"rejected\": \"{answer}\"}}\n")
        })
        .collect();
    std::fs::write(&same, rows).unwrap();
    let losses = |objective: &Path, out: &str| {
        poc()
            .arg("run")
            .arg(objective)
            .arg("--data")
            .arg(&same)
            .args([
                "--max-steps",
                "3",
                "--batch-size",
                "4",
                "--no-progress",
                "--out",
            ])
            .arg(tmp.path().join(out))
            .assert()
            .success();
        metrics(&tmp.path().join(out))
            .iter()
            .map(|m| m["loss"].as_f64().unwrap())
            .collect::<Vec<f64>>()
    };
    let one = losses(Path::new("objectives/sft.po"), "one");
    let two = losses(&both, "two");
    assert_eq!(one.len(), 3);
    for (a, b) in one.iter().zip(&two) {
        assert!((a - b).abs() <= 1e-5 * a.abs(), "{one:?} vs {two:?}");
    }

    // TRL SFT rows train sft; a preference objective on them is an error naming the line.
    let data = tmp.path().join("sft.jsonl");
    std::fs::write(
        &data,
        "{\"prompt\": \"Say hi ->\", \"completion\": \" hi\"}\n\
         {\"messages\": [{\"role\": \"user\", \"content\": \"Say no\"}, {\"role\": \"assistant\", \"content\": \"no\"}]}\n",
    )
    .unwrap();
    let run = |objective: &str| {
        poc()
            .args(["run", objective, "--max-steps", "2", "--batch-size", "2"])
            .arg("--no-progress")
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(tmp.path().join(objective))
            .output()
            .unwrap()
    };
    let sft = run("sft");
    assert!(
        sft.status.success(),
        "{}",
        String::from_utf8_lossy(&sft.stderr)
    );
    assert_eq!(metrics(&tmp.path().join("sft")).len(), 2);
    let dpo = run("dpo");
    assert_eq!(dpo.status.code(), Some(1));
    let err = String::from_utf8_lossy(&dpo.stderr);
    assert!(
        err.contains("data line 1: a demonstration row") && err.contains("policy_rejected_logps"),
        "{err}"
    );
}

/// The dtype of checkpoint `dir`'s weights (the first tensor of model.safetensors) and the one
/// its config.json names.
fn saved_dtype(dir: &Path) -> (String, String) {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let tensor = header
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| *k != "__metadata__")
        .unwrap()
        .1;
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    (
        tensor["dtype"].as_str().unwrap().to_string(),
        config["torch_dtype"].as_str().unwrap().to_string(),
    )
}

/// Checkpoints are saved in the loaded model's dtype, as transformers saves (the fixture is
/// bf16), unless `--save-dtype` says otherwise; the presets (no dtype named) save f32.
#[test]
fn checkpoints_keep_the_models_dtype_unless_told() {
    let tmp = tempfile::tempdir().unwrap();
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime/tests/fixtures/tiny-llama");
    let run = |name: &str, extra: &[&str]| {
        let out = tmp.path().join(name);
        poc()
            .args(["run", "dpo", "--max-steps", "1", "--no-progress", "--model"])
            .arg(&base)
            .args(extra)
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        saved_dtype(&out.join("checkpoint-1"))
    };
    assert_eq!(run("default", &[]), ("BF16".into(), "bfloat16".into()));
    assert_eq!(
        run("f32", &["--save-dtype", "f32"]),
        ("F32".into(), "float32".into())
    );
    let out = tmp.path().join("tiny");
    poc()
        .args(["run", "dpo", "--max-steps", "1", "--no-progress", "--out"])
        .arg(&out)
        .assert()
        .success();
    assert_eq!(saved_dtype(&out.join("checkpoint-1")).0, "F32");
}

/// `--dry-run` prints the memory plan without loading anything; a run whose plan clearly
/// exceeds the machine stops before loading, with the plan and the flags that would shrink it.
#[test]
fn dry_run_prints_the_memory_plan_and_oversized_runs_stop_first() {
    let out = poc()
        .args([
            "run",
            "mipo",
            "--model",
            "llama3-8b",
            "--lora",
            "16",
            "--dtype",
            "bf16",
            "--max-length",
            "2048",
            "--batch-size",
            "4",
            "--dry-run",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for item in [
        "weights",
        "reference",
        "optimizer",
        "gradients",
        "activations",
        "head",
        "total",
    ] {
        assert!(
            text.contains(&format!("  {item} ")),
            "no `{item}` line in:\n{text}"
        );
    }
    assert!(
        text.contains("8.03B parameters") && text.contains("LoRA r=16"),
        "{text}"
    );
    assert!(text.contains("8 rows x 2048 tokens"), "{text}");
    // The full fine-tune of 8B in f32 on this machine's CPU (a 24 GiB CI runner) cannot fit.
    let out = poc()
        .args([
            "run",
            "dpo",
            "--model",
            "llama3-8b",
            "--random-init",
            "--no-progress",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("the run needs about"), "{err}");
    assert!(
        err.contains("--lora 16:") && err.contains("--precompute-ref:"),
        "{err}"
    );
}

/// `--model tiny` is one model for every command: the policy's log-probs at the first step of
/// `poc run` (before any update, whatever `--seed`) are what `poc logps --model tiny` reports.
#[test]
fn a_preset_name_is_the_same_model_for_every_command() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("pairs.jsonl");
    let rows: String = (0..4)
        .map(|i| {
            format!(
                "{{\"prompt\": \"q{i}: \", \"chosen\": \"yes {i}\", \"rejected\": \"no, not {i}\"}}\n"
            )
        })
        .collect();
    std::fs::write(&data, rows).unwrap();
    let text = String::from_utf8(
        poc()
            .args(["logps", "--model", "tiny", "--data"])
            .arg(&data)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let chosen: Vec<f64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["chosen_logps"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert_eq!(chosen.len(), 4);
    let mean = chosen.iter().sum::<f64>() / 4.0;
    for seed in ["1", "99"] {
        let out = tmp.path().join(format!("run{seed}"));
        poc()
            .args([
                "run",
                "dpo",
                "--model",
                "tiny",
                "--batch-size",
                "4",
                "--max-steps",
                "1",
                "--no-progress",
                "--seed",
                seed,
                "--data",
            ])
            .arg(&data)
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        let logged = metrics(&out)[0]["metrics"]["logps/chosen"]
            .as_f64()
            .unwrap();
        assert!(
            (logged - mean).abs() < 1e-4 * mean.abs(),
            "seed {seed}: the run's first-step chosen log-prob {logged} vs poc logps' {mean}"
        );
    }
}

/// `poc bench memory` measures each point in a child process; a smoke run of the child's side
/// (no figure is asserted beyond being a measurement: the ratios live in the benchmark's report).
#[test]
fn bench_memory_points_print_a_measurement() {
    for args in [
        &["train", "-", "64", "1", "1", "24", "0", "f32", "-"][..],
        &["train", "-", "64", "1", "1", "24", "4", "bf16", "ckpt"][..],
        &["head", "64", "32", "100", "chunked"][..],
        &["head", "64", "32", "100", "composed"][..],
    ] {
        let out = poc()
            .args(["bench", "memory", "--point"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(p["estimated"].as_u64().unwrap() > 0, "{args:?}: {p}");
        assert!(p["measured"].as_u64().is_some(), "{args:?}: {p}");
    }
    let out = poc()
        .args(["bench", "memory", "--point", "nonsense"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
