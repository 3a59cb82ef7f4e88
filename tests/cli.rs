//! The `poc` binary, end to end: help, exit codes, messages, every command.

use assert_cmd::Command;
use std::io::Write;

fn poc() -> Command {
    Command::cargo_bin("poc").unwrap()
}

fn stdout(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn temp_file(contents: &str, suffix: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(suffix).tempfile().unwrap();
    f.write_all(contents.as_bytes()).unwrap();
    f
}

#[test]
fn help_teaches() {
    let text = stdout(poc().arg("--help"));
    for word in [
        "check", "explain", "compile", "eval", "list", "bench", "Examples",
    ] {
        assert!(text.contains(word), "--help lacks {word}:\n{text}");
    }
    let text = stdout(poc().args(["eval", "--help"]));
    assert!(
        text.contains("--set") && text.contains("--backend") && text.contains("JSON"),
        "{text}"
    );
}

#[test]
fn bad_usage_exits_2() {
    poc().arg("frobnicate").assert().code(2);
    poc()
        .args(["compile", "dpo", "--emit", "llvm"])
        .assert()
        .code(2);
    poc().args(["eval", "dpo"]).assert().code(2); // --inputs missing
    // Keeping zero checkpoints would delete the one just written.
    let out = poc()
        .args(["run", "dpo", "--save-total-limit", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--save-total-limit"));
}

#[test]
fn check_passes_every_shipped_objective() {
    let files: Vec<String> = std::fs::read_dir("objectives")
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".po"))
        .collect();
    assert!(files.len() >= 19);
    poc()
        .arg("check")
        .args(&files)
        .assert()
        .success()
        .stdout("")
        .stderr("");
}

#[test]
fn check_reports_errors_with_place_and_exit_1() {
    let f = temp_file(
        "objective x\ninput policy_chosen_logps\nloss = -logsigmoid(policy_chosen_logps)\n",
        ".po",
    );
    let out = poc().arg("check").arg(f.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(":3:9: error[E0003]: unknown function `logsigmoid`"),
        "{err}"
    );
    assert!(
        err.contains("^^^^^^^^^^") && err.contains("did you mean `log_sigmoid`?"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn missing_file_is_a_user_error_with_a_hint() {
    let out = poc()
        .args(["check", "objectives/dpoo.po"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("no such file") && err.contains("did you mean `dpo`"),
        "{err}"
    );
}

#[test]
fn list_shows_every_objective() {
    let text = stdout(poc().arg("list"));
    // One line per file in objectives/, each named by its file.
    let files: Vec<String> = std::fs::read_dir("objectives")
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(".po").map(String::from)
        })
        .collect();
    assert_eq!(text.lines().count(), files.len(), "{text}");
    for f in &files {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{f} "))),
            "{f} missing from:\n{text}"
        );
    }
    assert!(text.lines().any(|l| l.starts_with("mipo ")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("ppo ")), "{text}");
}

#[test]
fn explain_prints_math() {
    let text = stdout(poc().args(["explain", "objectives/dpo.po"]));
    for part in [
        "parameters",
        "beta",
        "inputs",
        "policy_chosen_logps",
        "differentiable",
        "loss:",
        "gradient:",
        "d loss / d policy_chosen_logps",
        "rewards/chosen",
    ] {
        assert!(text.contains(part), "explain lacks {part}:\n{text}");
    }
    let tex = stdout(poc().args(["explain", "dpo", "--latex"]));
    assert!(
        tex.contains("\\frac{\\partial \\mathcal{L}}") && tex.contains("\\beta"),
        "{tex}"
    );
}

#[test]
fn compile_emits_every_stage() {
    for (emit, marker) in [
        ("ast", "objective dpo"),
        ("typed", "input #0"),
        ("grad", "d loss / d"),
        ("graph", "out loss ="),
        ("clif", "function"),
    ] {
        let text = stdout(poc().args(["compile", "dpo", "--emit", emit]));
        assert!(
            text.contains(marker),
            "--emit {emit} lacks {marker}:\n{text}"
        );
    }
}

const DPO_ROW: &str = r#"{"policy_chosen_logps": -12, "policy_rejected_logps": -15, "ref_chosen_logps": -13, "ref_rejected_logps": -14}"#;

#[test]
fn eval_agrees_across_backends_and_honours_set() {
    let rows = temp_file(&format!("{DPO_ROW}\n\n{DPO_ROW}\n"), ".jsonl");
    let mut outs = Vec::new();
    for backend in ["interp", "jit", "burn"] {
        let text = stdout(
            poc()
                .args(["eval", "dpo", "--backend", backend, "--inputs"])
                .arg(rows.path()),
        );
        assert_eq!(text.lines().count(), 2, "{text}");
        let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        let loss = v["loss"].as_f64().unwrap();
        assert!(
            (loss - 0.5981388693815918).abs() < 1e-12,
            "{backend}: {loss}"
        );
        assert!(v["grad"]["policy_chosen_logps"].as_f64().unwrap() < 0.0);
        assert_eq!(v["metrics"]["rewards/accuracies"].as_f64(), Some(1.0));
        outs.push(loss);
    }
    let text = stdout(
        poc()
            .args(["eval", "dpo", "--set", "label_smoothing=0.1", "--inputs"])
            .arg(rows.path()),
    );
    let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert!((v["loss"].as_f64().unwrap() - 0.6181388693815918).abs() < 1e-12);
}

#[test]
fn eval_names_the_line_of_bad_rows() {
    let rows = temp_file(
        &format!(
            "{DPO_ROW}\n{{\"policy_chosen_logps\": -1}}\n{{\"policy_chosen_logps\": \"x\", \"policy_rejected_logps\": -15, \"ref_chosen_logps\": -13, \"ref_rejected_logps\": -14, \"extra\": 1}}\nnot json\n"
        ),
        ".jsonl",
    );
    let out = poc()
        .args(["eval", "dpo", "--inputs"])
        .arg(rows.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(":2: missing input `policy_rejected_logps`"),
        "{err}"
    );
    assert!(
        err.contains(":3: `policy_chosen_logps` must be a number"),
        "{err}"
    );
    assert!(
        !err.contains("extra"),
        "a column no input reads is no error: {err}"
    );
    assert!(err.contains(":4: invalid JSON"), "{err}");
}

#[test]
fn eval_ignores_columns_the_objective_does_not_read() {
    // One file serves DPO and SFT (which reads policy_chosen_logps and chosen_len), as a
    // training file does.
    let row = r#"{"policy_chosen_logps": -12, "policy_rejected_logps": -15, "ref_chosen_logps": -13, "ref_rejected_logps": -14, "chosen_len": 10, "note": "any column"}"#;
    let rows = temp_file(&format!("{row}\n"), ".jsonl");
    let dpo = stdout(poc().args(["eval", "dpo", "--inputs"]).arg(rows.path()));
    let v: serde_json::Value = serde_json::from_str(dpo.trim()).unwrap();
    assert!((v["loss"].as_f64().unwrap() - 0.5981388693815918).abs() < 1e-12);
    let sft = stdout(poc().args(["eval", "sft", "--inputs"]).arg(rows.path()));
    let v: serde_json::Value = serde_json::from_str(sft.trim()).unwrap();
    assert!((v["loss"].as_f64().unwrap() - 1.2).abs() < 1e-12, "{sft}");
    // A missing input still fails, naming the unread column that looks like it.
    let typo = temp_file(r#"{"policy_chosen_logp": -12, "chosen_len": 10}"#, ".jsonl");
    let out = poc()
        .args(["eval", "sft", "--inputs"])
        .arg(typo.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(":1: missing input `policy_chosen_logps` (the row has `policy_chosen_logp`)"),
        "{err}"
    );
    assert!(err.contains("other columns are ignored"), "{err}");
}

#[test]
fn eval_computes_token_position() {
    // LD-DPO reads token.position; the row does not carry it. Chosen has 3 tokens, rejected 2:
    // the chosen answer's third token counts with α = 0.5.
    let row = r#"{"policy_chosen_token_logps": [-0.5, -1.0, -2.0], "policy_rejected_token_logps": [-1.5, -0.25, 0.0], "chosen_mask": [1, 1, 1], "rejected_mask": [1, 1, 0], "ref_chosen_logps": -3.0, "ref_rejected_logps": -2.5, "chosen_len": 3, "rejected_len": 2}"#;
    let rows = temp_file(&format!("{row}\n"), ".jsonl");
    let (ld_w, ld_l) = (-0.5 - 1.0 + 0.5 * -2.0, -1.5 - 0.25);
    let z: f64 = 0.1 * ((ld_w + 3.0) - (ld_l + 2.5));
    let want = (-z).exp().ln_1p();
    for backend in ["interp", "burn"] {
        let text = stdout(
            poc()
                .args(["eval", "ld_dpo", "--backend", backend, "--inputs"])
                .arg(rows.path()),
        );
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        let loss = v["loss"].as_f64().unwrap();
        assert!((loss - want).abs() < 1e-12, "{backend}: {loss} vs {want}");
    }
    // Without another per-token input there is no length to count to.
    let f = temp_file(
        "objective alone\ninput policy_chosen_logps\nloss = -policy_chosen_logps * masked_sum(token.position, token.position)\n",
        ".po",
    );
    let out = poc()
        .arg("eval")
        .arg(f.path())
        .arg("--inputs")
        .arg(rows.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("`token.position` (token.position) is computed from the length"),
        "{err}"
    );
}

#[test]
fn eval_rejects_bad_set_and_missing_inputs_file() {
    let rows = temp_file(DPO_ROW, ".jsonl");
    let out = poc()
        .args(["eval", "dpo", "--set", "bta=1", "--inputs"])
        .arg(rows.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("no parameter `bta`") && err.contains("did you mean `beta`?"),
        "{err}"
    );
    let out = poc()
        .args(["eval", "dpo", "--inputs", "/nonexistent/rows.jsonl"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("cannot read `/nonexistent/rows.jsonl`")
    );
    let out = poc()
        .args([
            "eval",
            "dpo",
            "--backend",
            "burn",
            "--device",
            "tpu",
            "--inputs",
        ])
        .arg(rows.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("unknown device `tpu`")
    );
}

#[test]
fn eval_reports_nan_losses_with_rows() {
    let f = temp_file(
        "objective bad\ninput policy_chosen_logps\nloss = log(policy_chosen_logps)\n",
        ".po",
    );
    let rows = temp_file(
        "{\"policy_chosen_logps\": 2}\n{\"policy_chosen_logps\": -1}\n",
        ".jsonl",
    );
    let out = poc()
        .arg("eval")
        .arg(f.path())
        .arg("--inputs")
        .arg(rows.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("NaN or infinite on 1 row(s)") && err.contains("rows 2"),
        "{err}"
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().nth(1).unwrap().contains("\"NaN\""), "{text}");
}

const PPO_ROWS: &str = r#"{"logprobs": [-1.0, -0.5, -2.0], "old_logprobs": [-1.1, -0.4, -2.0], "ref_logprobs": [-1.2, -0.6, -1.5], "values": [0.1, 0.2, 0.3], "old_values": [0.0, 0.25, 0.5], "score": 1.0, "mask": [1, 1, 0]}
{"logprobs": [-0.3, -0.7], "old_logprobs": [-0.2, -0.9], "ref_logprobs": [-0.3, -0.8], "values": [0.5, -0.2], "old_values": [0.4, -0.1], "score": -0.5, "mask": [1, 1]}
"#;

#[test]
fn eval_runs_token_level_objectives_on_interp_and_burn() {
    let rows = temp_file(PPO_ROWS, ".jsonl");
    let mut losses = Vec::new();
    for backend in ["interp", "burn"] {
        let text = stdout(
            poc()
                .args(["eval", "ppo", "--backend", backend, "--inputs"])
                .arg(rows.path()),
        );
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        // Per-token gradients are arrays of the row's length; padding gets 0.
        let g = lines[0]["grad"]["logprobs"].as_array().unwrap();
        assert_eq!(g.len(), 3, "{text}");
        assert_eq!(g[2].as_f64(), Some(0.0), "{text}");
        assert_eq!(lines[1]["grad"]["values"].as_array().unwrap().len(), 2);
        // objective/kl = Σ over valid tokens of old − ref = 0.1 + 0.2.
        let kl = lines[0]["metrics"]["objective/kl"].as_f64().unwrap();
        assert!((kl - 0.3).abs() < 1e-12, "{kl}");
        losses.push(lines[0]["loss"].as_f64().unwrap());
    }
    assert!((losses[0] - losses[1]).abs() < 1e-9, "{losses:?}");

    // The JIT declines, as a user error with the way out.
    for args in [
        vec!["eval", "ppo", "--backend", "jit", "--inputs"],
        vec!["compile", "ppo", "--emit", "clif"],
    ] {
        let mut cmd = poc();
        cmd.args(&args);
        if args[0] == "eval" {
            cmd.arg(rows.path());
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.contains("not supported by the JIT; use --backend interp|burn"),
            "{err}"
        );
    }
}

#[test]
fn eval_names_the_line_of_bad_token_rows() {
    let rows = temp_file(
        &format!(
            "{}{}{}",
            PPO_ROWS.lines().next().unwrap(),
            "\n{\"logprobs\": [-1.0], \"old_logprobs\": [-1.1, -0.4], \"ref_logprobs\": [-1.2], \"values\": [0.1], \"old_values\": [0.0], \"score\": 1.0, \"mask\": [1]}\n",
            "{\"logprobs\": -1.0, \"old_logprobs\": [], \"ref_logprobs\": [-1.2], \"values\": [0.1], \"old_values\": [0.0], \"score\": [1.0], \"mask\": [1]}\n"
        ),
        ".jsonl",
    );
    let out = poc()
        .args(["eval", "ppo", "--inputs"])
        .arg(rows.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(":2: `old_logprobs` has 2 tokens but `logprobs` has 1"),
        "{err}"
    );
    assert!(
        err.contains(":3: `logprobs` is per token: it must be an array of numbers"),
        "{err}"
    );
    assert!(err.contains(":3: `old_logprobs` has no tokens"), "{err}");
    assert!(
        err.contains(":3: `score` must be a number, found [1.0] (it is a number per example"),
        "{err}"
    );
    assert!(err.contains("logprobs (array)"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
