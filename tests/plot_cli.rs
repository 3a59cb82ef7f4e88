//! `poc plot` through the real binary: the PNGs it writes, the numbers behind the objective
//! curves (the symbolic dL/dΔ against closed forms and against the loss's own slope), and
//! every error path.

use assert_cmd::Command;
use std::collections::BTreeMap;
use std::path::Path;

fn poc() -> Command {
    Command::cargo_bin("poc").unwrap()
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail with a user error (exit 1); returns its stderr.
fn user_error(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// Decodes a PNG; returns (width, height, number of distinct pixel colours).
fn png_info(path: &Path) -> (u32, u32, usize) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "not a PNG: {}",
        path.display()
    );
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buf).unwrap();
    let pixels = &buf[..frame.buffer_size()];
    let step = frame.color_type.samples();
    let colours: std::collections::HashSet<&[u8]> = pixels.chunks(step).collect();
    (frame.width, frame.height, colours.len())
}

/// objective → rows of (Δ, L, dL/dΔ), from `--csv`.
fn read_csv(path: &Path) -> BTreeMap<String, Vec<(f64, f64, f64)>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("objective,delta,loss,dloss_ddelta"));
    let mut table: BTreeMap<String, Vec<(f64, f64, f64)>> = BTreeMap::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 4, "{line}");
        let num = |s: &str| s.parse::<f64>().unwrap();
        table
            .entry(f[0].to_string())
            .or_default()
            .push((num(f[1]), num(f[2]), num(f[3])));
    }
    table
}

/// Plots `args` with a CSV next to the PNG; returns the table.
fn sample(dir: &Path, args: &[&str]) -> BTreeMap<String, Vec<(f64, f64, f64)>> {
    let csv = dir.join("curves.csv");
    let png = dir.join("curves.png");
    run_ok(
        poc()
            .arg("plot")
            .args(args)
            .arg("--csv")
            .arg(&csv)
            .arg("--out")
            .arg(&png),
    );
    read_csv(&csv)
}

fn at_zero(rows: &[(f64, f64, f64)]) -> (f64, f64) {
    let row = rows.iter().find(|r| r.0 == 0.0).expect("Δ = 0 is sampled");
    (row.1, row.2)
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[test]
fn help_teaches_the_convention() {
    let text = run_ok(poc().args(["plot", "--help"]));
    for word in [
        "Δ/2",
        "--at",
        "--set",
        "--range",
        "metrics.jsonl",
        "Examples",
    ] {
        assert!(text.contains(word), "poc plot --help lacks {word}:\n{text}");
    }
    assert!(run_ok(poc().arg("--help")).contains("plot"));
}

#[test]
fn objectives_plot_writes_png_of_requested_size() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cmp.png");
    let stdout = run_ok(
        poc()
            .args(["plot", "dpo", "ipo", "hinge", "discopop", "--out"])
            .arg(&out),
    );
    assert!(stdout.contains("cmp.png"), "{stdout}");
    let (w, h, colours) = png_info(&out);
    assert_eq!((w, h), (1000, 800));
    // Lines in four colours, axes and anti-aliased text: far more than a blank canvas.
    assert!(colours > 20, "only {colours} colours");

    let out = dir.path().join("small.png");
    run_ok(
        poc()
            .args(["plot", "objectives/dpo.po", "--size", "640x480", "--out"])
            .arg(&out),
    );
    let (w, h, _) = png_info(&out);
    assert_eq!((w, h), (640, 480));
}

#[test]
fn dpo_derivative_is_minus_beta_sigmoid() {
    let dir = tempfile::tempdir().unwrap();
    let t = sample(dir.path(), &["dpo"]);
    let rows = &t["dpo"];
    assert_eq!(rows.len(), 401);
    assert_eq!((rows[0].0, rows[400].0), (-20.0, 20.0));
    let beta = 0.1;
    let (loss0, slope0) = at_zero(rows);
    assert!((loss0 - 2f64.ln()).abs() < 1e-12, "{loss0}");
    assert!((slope0 + beta / 2.0).abs() < 1e-12, "{slope0}");
    for &(d, l, s) in rows {
        // L = −log σ(βΔ), dL/dΔ = −β σ(−βΔ).
        assert!((l + sigmoid(beta * d).ln()).abs() < 1e-12, "Δ={d}: L={l}");
        assert!((s + beta * sigmoid(-beta * d)).abs() < 1e-12, "Δ={d}: {s}");
    }
}

#[test]
fn ipo_is_linear_hinge_is_flat_past_its_margin() {
    let dir = tempfile::tempdir().unwrap();
    let t = sample(dir.path(), &["ipo", "hinge", "dpo", "discopop"]);
    let beta = 0.1;
    // IPO with unit lengths: L = (Δ − 1/(2β))², so dL/dΔ = 2(Δ − 5) exactly: a straight line.
    for &(d, _, s) in &t["ipo"] {
        assert!(
            (s - 2.0 * (d - 1.0 / (2.0 * beta))).abs() < 1e-9,
            "Δ={d}: {s}"
        );
    }
    let slopes: Vec<f64> = t["ipo"].iter().map(|r| r.2).collect();
    for w in slopes.windows(3) {
        assert!((w[0] - 2.0 * w[1] + w[2]).abs() < 1e-9);
    }
    // Hinge: relu(1 − βΔ): slope −β below Δ = 1/β, zero above.
    for &(d, l, s) in &t["hinge"] {
        if d > 1.0 / beta {
            assert_eq!((l, s), (0.0, 0.0), "Δ={d}");
        } else if d < 1.0 / beta {
            assert!((s + beta).abs() < 1e-12, "Δ={d}: {s}");
        }
    }
    // For every objective the symbolic slope is the loss curve's own slope (central
    // differences of the sampled loss, away from hinge's kink).
    for (name, rows) in &t {
        for w in rows.windows(3) {
            let (d, s) = (w[1].0, w[1].2);
            if name == "hinge" && (d - 10.0).abs() < 0.2 {
                continue;
            }
            let fd = (w[2].1 - w[0].1) / (w[2].0 - w[0].0);
            // A central difference is off by h²/6 times the third derivative of L, which is
            // about (s(Δ+h) − 2s(Δ) + s(Δ−h))/6.
            let truncation = (w[2].2 - 2.0 * s + w[0].2).abs();
            assert!(
                (fd - s).abs() < 1e-9 + truncation,
                "{name} at Δ={d}: symbolic {s}, differences {fd}"
            );
        }
    }
}

#[test]
fn set_and_at_are_scoped_to_objectives() {
    let dir = tempfile::tempdir().unwrap();
    // `ipo.beta` reaches IPO only: its target margin 1/(2β) becomes 1, so dL/dΔ(0) = −2.
    let t = sample(
        dir.path(),
        &[
            "dpo",
            "ipo",
            "--set",
            "ipo.beta=0.5",
            "--range",
            "-1:1",
            "--points",
            "3",
        ],
    );
    assert!((at_zero(&t["ipo"]).1 + 2.0).abs() < 1e-12);
    assert!((at_zero(&t["dpo"]).1 + 0.05).abs() < 1e-12);
    // An unscoped --set reaches every objective that has the parameter.
    let t = sample(
        dir.path(),
        &[
            "dpo", "hinge", "--set", "beta=0.2", "--range", "-1:1", "--points", "3",
        ],
    );
    assert!((at_zero(&t["dpo"]).1 + 0.1).abs() < 1e-12);
    assert!((at_zero(&t["hinge"]).1 + 0.2).abs() < 1e-12);
    // Lengths of 10: IPO averages per token, L = (Δ/10 − 5)², dL/dΔ(0) = −1.
    let t = sample(
        dir.path(),
        &[
            "ipo",
            "--at",
            "chosen_len=10",
            "--at",
            "rejected_len=10",
            "--range",
            "-1:1",
            "--points",
            "3",
        ],
    );
    assert!((at_zero(&t["ipo"]).1 + 1.0).abs() < 1e-12);
}

#[test]
fn reward_model_objectives_sweep_the_rewards() {
    let dir = tempfile::tempdir().unwrap();
    let t = sample(
        dir.path(),
        &[
            "bt_reward",
            "mmpo_reward",
            "--range",
            "-4:4",
            "--points",
            "9",
        ],
    );
    let (l, s) = at_zero(&t["bt_reward"]);
    assert!(
        (l - 2f64.ln()).abs() < 1e-12 && (s + 0.5).abs() < 1e-12,
        "{l} {s}"
    );
    // MMPO's soft target p* = σ(γ·(1 − 0)) with the held scores: dL/dΔ(0) = σ(0) − p*.
    let p_star = sigmoid(2.2);
    let (_, s) = at_zero(&t["mmpo_reward"]);
    assert!((s - (0.5 - p_star)).abs() < 1e-12, "{s}");
}

#[test]
fn every_shipped_pairwise_objective_plots() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("one.csv");
    let png = dir.path().join("one.png");
    let mut plotted = 0;
    for entry in std::fs::read_dir("objectives").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("po") {
            continue;
        }
        let out = poc()
            .arg("plot")
            .arg(&path)
            .arg("--csv")
            .arg(&csv)
            .arg("--out")
            .arg(&png)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            // On-policy objectives (rollout observables) have no chosen/rejected margin.
            assert!(
                out.status.code() == Some(1) && stderr.contains("pairwise objectives"),
                "{}: {stderr}",
                path.display()
            );
            continue;
        }
        assert!(!stderr.contains("warning"), "{}: {stderr}", path.display());
        for rows in read_csv(&csv).values() {
            assert!(
                rows.iter().all(|r| r.1.is_finite() && r.2.is_finite()),
                "{}: non-finite values",
                path.display()
            );
        }
        plotted += 1;
    }
    assert!(plotted >= 20, "only {plotted} objectives plotted");
}

fn write_run(dir: &Path, lines: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("metrics.jsonl"), lines.join("\n") + "\n").unwrap();
}

const STEP_LINES: [&str; 4] = [
    r#"{"step":1,"epoch":0.25,"loss":0.69,"grad_norm":1.5,"lr":0.0005,"tokens_per_sec":900.0,"metrics":{"rewards/accuracies":0.5,"rewards/margins":0.0}}"#,
    r#"{"step":2,"epoch":0.5,"loss":0.55,"grad_norm":1.2,"lr":0.001,"tokens_per_sec":950.0,"metrics":{"rewards/accuracies":0.75,"rewards/margins":0.4}}"#,
    r#"{"step":3,"epoch":0.75,"loss":null,"grad_norm":0.9,"lr":0.0008,"tokens_per_sec":940.0,"metrics":{"rewards/accuracies":0.875,"rewards/margins":0.9}}"#,
    r#"{"step":4,"epoch":1.0,"loss":0.2,"grad_norm":0.7,"lr":0.0002,"tokens_per_sec":960.0,"metrics":{"rewards/accuracies":1.0,"rewards/margins":1.6}}"#,
];

#[test]
fn run_plot_defaults_to_curves_png_in_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("dpo_run");
    write_run(&run, &STEP_LINES);
    run_ok(poc().arg("plot").arg(&run));
    // loss, grad_norm, lr and two metrics: five panels, three per row, two rows.
    let (w, h, colours) = png_info(&run.join("curves.png"));
    assert_eq!((w, h), (1200, 40 + 2 * 320));
    assert!(colours > 10);

    // Two runs overlaid need an explicit --out.
    let other = dir.path().join("ipo_run");
    write_run(&other, &STEP_LINES[..2]);
    let err = user_error(poc().arg("plot").arg(&run).arg(&other));
    assert!(err.contains("--out"), "{err}");
    let out = dir.path().join("both.png");
    run_ok(
        poc()
            .arg("plot")
            .arg(&run)
            .arg(&other)
            .arg("--out")
            .arg(&out),
    );
    assert_eq!(png_info(&out).0, 1200);
}

#[test]
fn errors_name_the_place_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let err = user_error(poc().args(["plot", "dpoo"]));
    assert!(
        err.contains("`dpoo`") && err.contains("did you mean `dpo`"),
        "{err}"
    );

    let missing = dir.path().join("no_such_run");
    let err = user_error(poc().arg("plot").arg(&missing));
    assert!(err.contains("run directory"), "{err}");

    let empty = dir.path().join("empty_run");
    std::fs::create_dir_all(&empty).unwrap();
    let err = user_error(poc().arg("plot").arg(&empty));
    assert!(err.contains("metrics.jsonl"), "{err}");

    let bad = dir.path().join("bad_run");
    write_run(
        &bad,
        &[
            STEP_LINES[0],
            "{\"step\": 2, \"loss\": ",
            STEP_LINES[2],
            r#"{"step":4,"loss":"low"}"#,
        ],
    );
    let err = user_error(poc().arg("plot").arg(&bad));
    assert!(err.contains("metrics.jsonl:2: invalid JSON"), "{err}");
    assert!(
        err.contains("metrics.jsonl:4: `loss` must be a number"),
        "{err}"
    );
    assert!(!bad.join("curves.png").exists());

    let err = user_error(poc().args(["plot", "dpo", "--set", "betta=0.2"]));
    assert!(err.contains("did you mean `beta`"), "{err}");
    let err = user_error(poc().args(["plot", "dpo", "--set", "ipo.beta=0.2"]));
    assert!(err.contains("no objective `ipo`"), "{err}");
    let err = user_error(poc().args(["plot", "dpo", "--set", "beta=-1"]));
    assert!(err.contains("beta"), "{err}");
    let err = user_error(poc().args(["plot", "dpo", "--at", "chosen_len=3"]));
    assert!(err.contains("chosen_len"), "{err}");
    let err = user_error(poc().args(["plot", "dpo", "--range", "5:1"]));
    assert!(err.contains("LO:HI"), "{err}");
    let err = user_error(poc().args(["plot", "dpo", "--size", "10x10"]));
    assert!(err.contains("--size"), "{err}");
    let err = user_error(poc().arg("plot").arg("dpo").arg(&bad));
    assert!(err.contains("not both"), "{err}");
    let err = user_error(poc().arg("plot").arg(&bad).args(["--set", "beta=1"]));
    assert!(err.contains("not to run directories"), "{err}");
    // A column poc knows nothing about must be given.
    let po = dir.path().join("col.po");
    std::fs::write(
        &po,
        "objective col\ninput policy_chosen_logps\ninput policy_rejected_logps\ninput margin from column(\"margin\")\nloss = -log_sigmoid(policy_chosen_logps - policy_rejected_logps - margin)\n",
    )
    .unwrap();
    let err = user_error(poc().arg("plot").arg(&po));
    assert!(err.contains("--at margin=VALUE"), "{err}");
    let t = sample(
        dir.path(),
        &[
            po.to_str().unwrap(),
            "--at",
            "margin=1",
            "--range",
            "-1:1",
            "--points",
            "3",
        ],
    );
    assert!((at_zero(&t["col"]).1 + sigmoid(1.0)).abs() < 1e-12);
}
