//! `poc bench align` through the real binary: a quick run of the whole protocol (world,
//! reference and its gate, reward model, entrants with checkpoints, Best-of-N, evaluation,
//! report and plots) writes the report and resumes without redoing anything; an unconverged
//! reference stops the benchmark with its per-family table; bad flags and objectives are user
//! errors. The statistics are unit-tested on known answers in pipelines/src/align/.

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

fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn quick_benchmark_reports_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("align");
    let args = ["bench", "align", "dpo", "mmpo", "--quick", "--out"];
    let first = poc().args(args).arg(&out).assert().success();
    let stdout = String::from_utf8(first.get_output().stdout.clone()).unwrap();
    let stderr = String::from_utf8(first.get_output().stderr.clone()).unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join("results.md")).unwrap(),
        stdout
    );
    for section in [
        "## The reference and its gate",
        "| f5 sort (hard, q 0.02) |",
        "## Validity gates",
        "DPO at β=0.1 gains at least 0.2 r*",
        "Best-of-4 beats the reference",
        "Reward model (PPO and MPO rows only)",
        "## Frontier: r* within a KL budget",
        "## Per stratum",
        "## Operating points",
        "--quick: a smoke test",
    ] {
        assert!(stdout.contains(section), "missing {section:?} in\n{stdout}");
    }
    // Claims are evaluated only on a valid world and budget, and the report says which.
    let invalid = stdout.contains("**Invalid world or budget**");
    assert_ne!(
        invalid,
        stdout.contains("## The seed papers' claims"),
        "{stdout}"
    );
    for row in [
        "| reference (SFT) |",
        "| best-of-N | N=1, N=2, N=4, N=8, N=16 |",
        "| dpo | β=0.1 |",
        "| mmpo (γ calibrated) | β=0.1 |",
        "| mmpo (γ calibrated, useless scores) | β=0.1 |",
        "| sft on chosen |",
        "| ppo (oracle r*) | kl_coef=0.05 |",
        "| ppo (reward model) | kl_coef=0.05 |",
        "| mpo |",
    ] {
        assert!(stdout.contains(row), "missing {row:?} in\n{stdout}");
    }
    // Two seeds: every envelope cell of a trained entrant carries an interval.
    let dpo = stdout
        .lines()
        .find(|l| l.starts_with("| dpo | β=0.1 |"))
        .unwrap();
    assert!(dpo.matches('±').count() >= 4, "{dpo}");
    assert_png(&out.join("frontier.png"));
    assert_png(&out.join("strata.png"));
    assert!(!stderr.contains("skipped"), "{stderr}");
    // Checkpoints at 1/8, 1/4, 1/2 and 1 of the budget are each evaluated.
    let run = out.join("runs/seed2/dpo_b_0.1");
    let steps = json(&run.join("run_config.json"))["train"]["max_steps"]
        .as_u64()
        .unwrap() as usize;
    for k in [steps / 8, steps / 4, steps / 2, steps] {
        assert!(
            run.join(format!("checkpoint-{k}/config.json")).is_file(),
            "{k}"
        );
        let eval = json(&out.join(format!("eval/seed2/dpo_b_0.1-{k}.json")));
        let prompts = eval["rewards"].as_array().unwrap().len();
        assert_eq!(eval["kl"].as_array().unwrap().len(), prompts);
        assert_eq!(eval["greedy_rewards"].as_array().unwrap().len(), prompts);
        assert_eq!(
            eval["d_chosen"].as_array().unwrap().len(),
            eval["pair_bt_prob"].as_array().unwrap().len()
        );
    }
    // The reference is evaluated against itself: KL exactly 0 on every sample.
    let reference = json(&out.join("eval/seed1/reference.json"));
    assert!(
        reference["kl"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k.as_f64() == Some(0.0))
    );
    // The yardsticks are what they claim: PPO scored by the oracle and by the reward model, the
    // MMPO control on the useless scores, MMPO with the calibrated γ.
    let oracle = json(&out.join("runs/seed1/ppo_oracle_kl0.05/run_config.json"));
    assert_eq!(oracle["world_reward"], true, "{oracle}");
    let rm = json(&out.join("runs/seed1/ppo_rm_kl0.05/run_config.json"));
    assert_eq!(rm["world_reward"], false);
    assert!(
        rm["reward_model"]
            .as_str()
            .unwrap()
            .contains("reward_model-on-policy")
    );
    let useless =
        json(&out.join("runs/seed1/mmpo_g_calibrated_useless_scores_b_0.1/run_config.json"));
    assert!(
        useless["data"]
            .as_str()
            .unwrap()
            .ends_with("train_useless_scores.jsonl"),
        "{useless}"
    );
    let calibrated = std::fs::read_to_string(out.join("objectives/mmpo_calibrated.po")).unwrap();
    assert!(calibrated.contains("from column(\"calibrated_gamma\")"));

    // Everything is there: the second run trains and samples nothing and prints the same report.
    let metrics = run.join("metrics.jsonl");
    let before = std::fs::metadata(&metrics).unwrap().modified().unwrap();
    let second = poc().args(args).arg(&out).assert().success();
    let stderr = String::from_utf8(second.get_output().stderr.clone()).unwrap();
    let ran: Vec<&str> = stderr
        .lines()
        .filter(|l| l.ends_with(" ...") && !l.contains("] report:"))
        .collect();
    assert!(ran.is_empty(), "something ran again: {ran:?}\n{stderr}");
    assert!(stderr.contains("(done before, skipped)"), "{stderr}");
    assert_eq!(
        String::from_utf8(second.get_output().stdout.clone()).unwrap(),
        stdout
    );
    assert_eq!(
        std::fs::metadata(&metrics).unwrap().modified().unwrap(),
        before
    );
}

#[test]
fn an_unconverged_reference_stops_the_benchmark() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("align");
    let a = poc()
        .args([
            "bench",
            "align",
            "dpo",
            "--no-ppo",
            "--sft-steps",
            "2",
            "--eval-prompts",
            "12",
        ])
        .args(["--pairs", "16", "--seeds", "1", "--out"])
        .arg(&out)
        .assert()
        .code(1);
    let stderr = String::from_utf8(a.get_output().stderr.clone()).unwrap();
    assert!(
        stderr.contains("did not pass its gate after 2 steps"),
        "{stderr}"
    );
    assert!(stderr.contains("| f2 reverse (aligned, q 0.85) |") && stderr.contains("FAIL"));
    assert!(
        stderr.contains("--sft-steps"),
        "the hint names the remedy: {stderr}"
    );
    // Nothing was trained on it, and the report says why.
    assert!(!out.join("runs").exists());
    let report = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(report.contains("did not pass its gate"));
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
    fails(&["bench", "align", "ppo", "--quick"], "is on-policy");
    fails(
        &["bench", "align", "--quick", "--ppo-steps", "1"],
        "--ppo-steps must be at least 2",
    );
    fails(&["bench", "align", "--seeds", "0"], "at least 1");
    fails(&["bench", "align", "--jobs", "0"], "at least 1");
    fails(&["bench", "align", "--lr=0"], "positive");
    assert!(!out.exists());
    poc()
        .args(["bench", "align", "--pairs-from", "elsewhere"])
        .assert()
        .code(2);
}

#[test]
fn strict_and_near_miss_pairs_share_the_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("align");
    let run = |from: &str| {
        let a = poc()
            .args([
                "bench", "align", "dpo", "--no-ppo", "--quick", "--seeds", "1",
            ])
            .args(["--pairs-from", from, "--out"])
            .arg(&out)
            .assert()
            .success();
        (
            String::from_utf8(a.get_output().stdout.clone()).unwrap(),
            String::from_utf8(a.get_output().stderr.clone()).unwrap(),
        )
    };
    let (report, _) = run("strict");
    assert!(report.contains("seed 1, strict pairs"), "{report}");
    // The strict pairs are the reference's own samples of training prompts, labelled by the
    // world's oracle (r* on both sides, the true probability, scores).
    let pairs = std::fs::read_to_string(out.join("world1/world-strict/train.jsonl")).unwrap();
    assert!(!pairs.is_empty());
    for line in pairs.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let (prompt, chosen) = (v["prompt"].as_str().unwrap(), v["chosen"].as_str().unwrap());
        assert_eq!(
            v["true_reward_chosen"].as_f64().unwrap(),
            poc_runtime::data::world::reward(prompt, chosen)
        );
        assert_ne!(v["chosen"], v["rejected"]);
        assert!(v["bt_prob"].as_f64().unwrap() > 0.0 && v["score_chosen"].is_number());
    }
    let train_prompts: std::collections::HashSet<String> =
        std::fs::read_to_string(out.join("world1/world-on-policy/train.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["prompt"].to_string())
            .collect();
    assert!(pairs.lines().all(|l| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        train_prompts.contains(&v["prompt"].to_string())
    }));
    // The off-policy stress world: its own pairs, the same reference (not trained again).
    let (report, stderr) = run("near-miss");
    assert!(report.contains("seed 1, near-miss pairs"), "{report}");
    assert!(
        stderr.contains("reference: SFT of tiny, 16 steps of 16 rows (done before, skipped)"),
        "{stderr}"
    );
    let world: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("world1/world-near-miss/world.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(world["candidates"], "near-miss");
}
