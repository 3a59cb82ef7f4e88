//! `poc mpo` through the real binary on the tiny model: reward model → split → DPO on the easy
//! pairs → PPO on the hard prompts with the DPO model as policy and reference; a second run
//! skips every finished stage; bad flags are clear errors.

use assert_cmd::Command;

fn poc() -> Command {
    Command::cargo_bin("poc").unwrap()
}

#[test]
fn the_pipeline_runs_end_to_end_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("mpo");
    let args = [
        "mpo",
        "--reward-steps",
        "6",
        "--dpo-steps",
        "4",
        "--ppo-steps",
        "2",
        "--batch-size",
        "4",
        "--max-new-tokens",
        "6",
        "--threshold",
        "0.05",
        "--set",
        "ppo.kl_coef=0.1",
        "--lr",
        "2e-4",
        "--out",
    ];
    poc().args(args).arg(&out).assert().success();
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("mpo.json")).unwrap()).unwrap();
    let (easy, hard) = (
        summary["easy_pairs"].as_u64().unwrap(),
        summary["hard_pairs"].as_u64().unwrap(),
    );
    assert_eq!(easy + hard, 2048);
    assert!(easy > 0 && hard > 0, "{summary}");
    for f in [
        "reward_model/checkpoint-6/model.safetensors",
        "split/easy.jsonl",
        "split/hard.jsonl",
        "split/gaps.png",
        "dpo/checkpoint-4/model.safetensors",
        "ppo/checkpoint-2/model.safetensors",
    ] {
        assert!(out.join(f).exists(), "missing {f}");
    }
    // PPO starts from, and is referenced to, the DPO model; its parameters came through --set.
    let ppo: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("ppo/run_config.json")).unwrap())
            .unwrap();
    assert!(ppo["model"].as_str().unwrap().ends_with("dpo/checkpoint-4"));
    assert_eq!(ppo["params"]["kl_coef"], 0.1);
    // DPO trained on the easy pairs only.
    let dpo: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("dpo/run_config.json")).unwrap())
            .unwrap();
    assert_eq!(dpo["pairs"].as_u64().unwrap(), easy);
    // --lr reaches both policy stages; the reward model keeps poc run's default.
    assert_eq!(dpo["train"]["lr"], 2e-4);
    assert_eq!(ppo["train"]["lr"], 2e-4);
    let rm: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("reward_model/run_config.json")).unwrap(),
    )
    .unwrap();
    assert_ne!(rm["train"]["lr"], 2e-4);
    // Everything is done: a second run only reports the finished stages.
    let again = poc().args(args).arg(&out).output().unwrap();
    assert!(again.status.success());
    let err = String::from_utf8(again.stderr).unwrap();
    assert!(!err.contains("poc run "), "{err}");
    assert_eq!(err.matches("] done:").count(), 4, "{err}");
    // The summary says which stages each invocation ran: all four, then none.
    assert_eq!(
        summary["ran"],
        serde_json::json!(["reward model", "split", "dpo", "ppo"])
    );
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("mpo.json")).unwrap()).unwrap();
    assert_eq!(again["ran"], serde_json::json!([]));

    // A given reward model replaces stage 1: nothing is trained for it, and it scores the split.
    let given = out.join("reward_model/checkpoint-6");
    let second = tmp.path().join("mpo-given");
    let pipeline = || {
        poc()
            .args([
                "mpo",
                "--dpo-steps",
                "1",
                "--ppo-steps",
                "2",
                "--batch-size",
                "2",
            ])
            .args([
                "--max-new-tokens",
                "4",
                "--threshold",
                "0.05",
                "--save-every",
                "1",
                "--lora",
                "4",
                "--no-progress",
            ])
            .arg("--reward-model")
            .arg(&given)
            .arg("--out")
            .arg(&second)
            .output()
            .unwrap()
    };
    let run = pipeline();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(!second.join("reward_model").exists());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(second.join("mpo.json")).unwrap()).unwrap();
    assert_eq!(summary["reward_model"], given.display().to_string());
    // The same reward model and data give the same split as the first pipeline's.
    assert_eq!(
        std::fs::read(second.join("split/easy.jsonl")).unwrap(),
        std::fs::read(out.join("split/easy.jsonl")).unwrap()
    );
    assert!(second.join("ppo/checkpoint-2/model.safetensors").is_file());
    // --lora reaches both policy stages: each saves adapters, and PPO adapts the DPO model.
    for ck in ["dpo/checkpoint-1", "ppo/checkpoint-2"] {
        assert!(
            second
                .join(ck)
                .join("adapter/adapter_config.json")
                .is_file(),
            "{ck}"
        );
    }
    let ppo: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(second.join("ppo/run_config.json")).unwrap())
            .unwrap();
    assert!(ppo["model"].as_str().unwrap().ends_with("dpo/checkpoint-1"));
    assert_eq!(ppo["lora"]["rank"], 4);
    // A pipeline on `tiny` keeps tiny's on-policy lr in PPO, which starts from a checkpoint.
    assert_eq!(ppo["train"]["lr"], 1e-4);
    // Its reference is the DPO model itself (its adapters off): the first rollout's KL is 0.
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(second.join("ppo/metrics.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert!(first["metrics"]["objective/kl"].as_f64().unwrap().abs() < 1e-4);
    assert_eq!(
        std::fs::read_to_string(second.join("mpo.json"))
            .map(|t| serde_json::from_str::<serde_json::Value>(&t).unwrap()["ppo_steps"].clone())
            .unwrap(),
        2
    );

    // PPO stopped after step 1 (its last checkpoint gone): a rerun continues it from
    // checkpoint-1 and ends where the uninterrupted stage did.
    let metrics = std::fs::read_to_string(second.join("ppo/metrics.jsonl")).unwrap();
    let steps = |text: &str| -> Vec<serde_json::Value> {
        text.lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("tokens_per_sec");
                v
            })
            .collect()
    };
    std::fs::remove_dir_all(second.join("ppo/checkpoint-2")).unwrap();
    std::fs::remove_file(second.join("mpo.json")).unwrap();
    let rerun = pipeline();
    let err = String::from_utf8_lossy(&rerun.stderr);
    assert!(rerun.status.success(), "{err}");
    assert!(err.contains("[ppo] continuing from"), "{err}");
    assert!(err.contains("[dpo] done:"), "{err}");
    assert!(second.join("ppo/checkpoint-2/model.safetensors").is_file());
    let again = std::fs::read_to_string(second.join("ppo/metrics.jsonl")).unwrap();
    assert_eq!(steps(&again), steps(&metrics));
}

#[test]
fn the_oracle_splits_by_the_true_gap_and_scores_ppo_with_r_star() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("mpo");
    poc()
        .args([
            "mpo",
            "--reward",
            "world",
            "--dpo-steps",
            "2",
            "--ppo-steps",
            "2",
        ])
        .args(["--batch-size", "4", "--max-new-tokens", "6", "--out"])
        .arg(&out)
        .assert()
        .success();
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("mpo.json")).unwrap()).unwrap();
    assert!(
        summary["reward_model"]
            .as_str()
            .unwrap()
            .contains("true reward"),
        "{summary}"
    );
    assert!(
        !out.join("reward_model").exists(),
        "no reward model is trained"
    );
    // Every easy pair has a true gap above δ = 1, every hard one at most 1.
    for (file, easy) in [("split/easy.jsonl", true), ("split/hard.jsonl", false)] {
        let text = std::fs::read_to_string(out.join(file)).unwrap();
        assert!(!text.is_empty(), "{file}");
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let gap = v["true_reward_chosen"].as_f64().unwrap()
                - v["true_reward_rejected"].as_f64().unwrap();
            assert_eq!(gap > 1.0, easy, "{file}: {line}");
        }
    }
    let ppo: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("ppo/run_config.json")).unwrap())
            .unwrap();
    assert_eq!(ppo["world_reward"], true);
    assert!(ppo["reward_model"].is_null());
    // Pairs without the world's columns cannot be split by the oracle.
    let plain = tmp.path().join("plain.jsonl");
    std::fs::write(
        &plain,
        "{\"prompt\": \"a\", \"chosen\": \" b\", \"rejected\": \" c\"}\n",
    )
    .unwrap();
    let a = poc()
        .args(["mpo", "--reward", "world", "--data"])
        .arg(&plain)
        .arg("--out")
        .arg(tmp.path().join("plain"))
        .assert()
        .code(1);
    let err = String::from_utf8(a.get_output().stderr.clone()).unwrap();
    assert!(
        err.contains("plain.jsonl:1") && err.contains("true_reward_chosen"),
        "{err}"
    );
    poc()
        .args(["mpo", "--reward", "world", "--reward-model", "x"])
        .assert()
        .code(2);
}

#[test]
fn mpo_flag_errors_are_clear() {
    for (args, needle) in [
        (
            vec!["mpo", "--set", "beta=0.1"],
            "expected STAGE.NAME=VALUE",
        ),
        (vec!["mpo", "--dpo-steps", "0"], "must be at least 1"),
        (vec!["mpo", "--lr=0"], "--lr 0: expected a positive number"),
        (
            vec!["mpo", "--lora", "0"],
            "--lora: the rank must be at least 1",
        ),
        (
            vec!["mpo", "--reward-model", "/nonexistent/rm"],
            "--reward-model `/nonexistent/rm`: no config.json there",
        ),
        (
            vec!["mpo", "--data", "/nonexistent/prefs.jsonl"],
            "cannot read `/nonexistent/prefs.jsonl`",
        ),
    ] {
        let out = poc().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // Reward-model flags mean nothing with a given reward model: a usage error, not ignored.
    let out = poc()
        .args(["mpo", "--reward-model", "rm", "--reward-lr", "1e-4"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
}
