//! Data-parallel `poc run` on PyTorch's c10d with Gloo, on the CPU, end to end: two processes
//! launched by `torchrun` (and by `poc run --nproc 2`) train exactly as one process with the
//! same global batch (loss and gradient norm per step, final weights); a two-process run
//! resumes from its checkpoint with two processes or one; a rank that dies, or never joins,
//! makes the others stop with a message within the timeout; a bad launch environment is a
//! clear error before any work.

use assert_cmd::Command;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn poc() -> Command {
    let mut c = Command::cargo_bin("poc").unwrap();
    // One thread per process: two processes share the CI machine's two cores.
    c.env("OMP_NUM_THREADS", "1");
    for v in [
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
    ] {
        c.env_remove(v);
    }
    c
}

/// 48 preference pairs beside `out` (the embedded data has 2,048: more than these runs read,
/// and `--precompute-ref` would score them all).
fn small_data(out: &Path) -> PathBuf {
    let path = out.with_extension("jsonl");
    if !path.exists() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let rows: String = (0..48)
            .map(|i| {
                let word = ["apple", "river", "stone", "cloud"][i % 4];
                format!(
                    "{{\"prompt\": \"Say {word} {i}:\", \"chosen\": \" {word} {word}\", \"rejected\": \" {}\"}}\n",
                    word.chars().rev().collect::<String>()
                )
            })
            .collect();
        std::fs::write(&path, rows).unwrap();
    }
    path
}

/// A short DPO run on the embedded tiny model: `steps` steps of a global batch of 8.
fn run_args(out: &Path, steps: usize) -> Vec<String> {
    let data = small_data(out);
    [
        "run",
        "dpo",
        "--data",
        &data.display().to_string(),
        "--max-steps",
        &steps.to_string(),
        "--batch-size",
        "8",
        "--save-every",
        "2",
        "--save-dtype",
        "f32",
        "--no-progress",
        "--dist-timeout",
        "20",
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([out.display().to_string()])
    .collect()
}

/// (step, loss, grad_norm) of each line of a run's metrics.
fn curve(out: &Path) -> Vec<(u64, f64, f64)> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["step"].as_u64().unwrap(),
                v["loss"].as_f64().unwrap(),
                v["grad_norm"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// Every tensor of a checkpoint's `model.safetensors`, as f32 values by name.
fn weights(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, values)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Two runs trained the same: per-step loss and gradient norm to f32 rounding (the ranks'
/// shards are summed in another order than one process sums its batch), and the final
/// weights to a tenth of one learning-rate step (1e-3 here): AdamW divides each gradient by
/// its running scale, so rounding in a near-zero gradient can move a weight by a fraction of
/// the learning rate.
fn assert_same_run(one: &Path, two: &Path, final_step: usize) {
    let (a, b) = (curve(one), curve(two));
    assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.0, y.0);
        assert!(
            (x.1 - y.1).abs() < 1e-5,
            "step {}: loss {} vs {}",
            x.0,
            x.1,
            y.1
        );
        assert!(
            (x.2 - y.2).abs() < 1e-4 * x.2.max(1.0),
            "step {}: grad norm {} vs {}",
            x.0,
            x.2,
            y.2
        );
    }
    let ckpt = format!("checkpoint-{final_step}");
    let (wa, wb) = (weights(&one.join(&ckpt)), weights(&two.join(&ckpt)));
    assert_eq!(wa.len(), wb.len());
    for ((na, va), (nb, vb)) in wa.iter().zip(&wb) {
        assert_eq!(na, nb);
        let diff = va
            .iter()
            .zip(vb)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-4, "{na}: weights differ by {diff}");
    }
}

/// torchrun from the venv scripts/setup.sh makes (or `POC_TORCHRUN`).
fn torchrun() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("POC_TORCHRUN") {
        return Some(PathBuf::from(p));
    }
    let python = poc_runtime::python::interpreter();
    let t = python.parent()?.join("torchrun");
    t.exists().then_some(t)
}

#[test]
fn two_processes_train_exactly_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let (one, two, nproc) = (
        dir.path().join("one"),
        dir.path().join("two"),
        dir.path().join("nproc"),
    );
    poc().args(run_args(&one, 4)).assert().success();
    // torchrun --nproc-per-node 2 --no-python poc run ...
    match torchrun() {
        Some(t) => {
            let out = std::process::Command::new(t)
                .args(["--nproc-per-node", "2", "--master-port"])
                .arg(free_port().to_string())
                .arg("--no-python")
                .arg(assert_cmd::cargo::cargo_bin("poc"))
                .args(run_args(&two, 4))
                .env("OMP_NUM_THREADS", "1")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "torchrun: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_same_run(&one, &two, 4);
            let config: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(two.join("run_config.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(config["world_size"], 2);
        }
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must have torchrun (scripts/setup.sh installs torch)"
            );
            eprintln!(
                "skipped the torchrun launch: no torchrun next to the Python of scripts/setup.sh"
            );
        }
    }
    // poc run --nproc 2: the same launch without torchrun.
    let mut args = run_args(&nproc, 4);
    args.extend(["--nproc".into(), "2".into()]);
    poc().args(args).assert().success();
    assert_same_run(&one, &nproc, 4);
}

#[test]
fn a_two_process_run_resumes_with_two_processes_or_one() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    let mut args = run_args(&whole, 4);
    args.extend(["--nproc".into(), "2".into()]);
    poc().args(args).assert().success();
    let from = whole.join("checkpoint-2");
    for nproc in [2, 1] {
        let resumed = dir.path().join(format!("resumed{nproc}"));
        let mut args = run_args(&resumed, 4);
        args.extend(["--resume".into(), from.display().to_string()]);
        if nproc > 1 {
            args.extend(["--nproc".into(), nproc.to_string()]);
        }
        poc().args(args).assert().success();
        let (a, b) = (curve(&whole), curve(&resumed));
        assert_eq!(b.len(), 2, "{b:?}");
        for (x, y) in a[2..].iter().zip(&b) {
            assert_eq!(x.0, y.0);
            assert!(
                (x.1 - y.1).abs() < 1e-5,
                "{nproc} process(es), step {}: {} vs {}",
                x.0,
                x.1,
                y.1
            );
        }
    }
}

#[test]
fn the_reference_cache_is_computed_in_shards_and_gathered() {
    let dir = tempfile::tempdir().unwrap();
    let cache = |out: &Path| -> Vec<[f64; 2]> {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("ref_cache.json")).unwrap())
                .unwrap();
        serde_json::from_value(v["logps"].clone()).unwrap()
    };
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    let mut args = run_args(&one, 2);
    args.push("--precompute-ref".into());
    poc().args(&args).assert().success();
    let mut args = run_args(&two, 2);
    args.extend(["--precompute-ref".into(), "--nproc".into(), "2".into()]);
    poc().args(&args).assert().success();
    let (a, b) = (cache(&one), cache(&two));
    assert_eq!(a.len(), b.len());
    assert_eq!(a.len(), 48);
    for (k, (x, y)) in a.iter().zip(&b).enumerate() {
        for s in 0..2 {
            assert!((x[s] - y[s]).abs() < 1e-4, "pair {k}: {x:?} vs {y:?}");
        }
    }
    assert_same_run(&one, &two, 2);
}

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Rank `rank` of 2 of a long run into `out`, started in the background.
fn start_rank(rank: usize, port: u16, out: &Path, timeout: &str) -> std::process::Child {
    let mut args = run_args(out, 400);
    let t = args.iter().position(|a| a == "--dist-timeout").unwrap();
    args[t + 1] = timeout.into();
    std::process::Command::new(assert_cmd::cargo::cargo_bin("poc"))
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", "2")
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` at most `limit`; its exit status and stderr, or a failure if it hangs.
fn finish(mut child: std::process::Child, limit: Duration) -> (std::process::ExitStatus, String) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status, err);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("the process did not stop within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_rank_that_dies_or_never_joins_stops_the_others_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    // Rank 1 is killed while both train: rank 0 stops at its next collective.
    let out = dir.path().join("dies");
    let port = free_port();
    let r0 = start_rank(0, port, &out, "5");
    let mut r1 = start_rank(1, port, &out, "5");
    let started = Instant::now();
    while std::fs::read_to_string(out.join("metrics.jsonl")).map_or(0, |t| t.lines().count()) < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    r1.kill().unwrap();
    let _ = r1.wait();
    let (status, err) = finish(r0, Duration::from_secs(15));
    assert!(!status.success());
    assert!(
        err.contains("rank 0") && err.contains("all_reduce"),
        "{err}"
    );
    // Rank 1 never comes: rank 0 gives up joining after the timeout.
    let out = dir.path().join("alone");
    let started = Instant::now();
    let (status, err) = finish(
        start_rank(0, free_port(), &out, "3"),
        Duration::from_secs(30),
    );
    assert!(!status.success());
    assert!(err.contains("rank 0") && err.contains("timed out"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(25));
    assert!(!out.join("metrics.jsonl").exists(), "nothing trained");
}

#[test]
fn a_bad_launch_environment_is_an_error_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    /// Launcher variables, extra flags, what the error must say.
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a str);
    let cases: [Case; 4] = [
        (
            &[("WORLD_SIZE", "2"), ("RANK", "0")],
            &[],
            "MASTER_ADDR is not set",
        ),
        (&[("WORLD_SIZE", "two"), ("RANK", "0")], &[], "WORLD_SIZE"),
        (
            &[
                ("WORLD_SIZE", "2"),
                ("RANK", "0"),
                ("MASTER_ADDR", "127.0.0.1"),
                ("MASTER_PORT", "29400"),
            ],
            &["--batch-size", "3"],
            "must be a multiple of the number of processes (2)",
        ),
        (
            &[
                ("WORLD_SIZE", "2"),
                ("RANK", "0"),
                ("MASTER_ADDR", "127.0.0.1"),
                ("MASTER_PORT", "29400"),
            ],
            &["--objective-is-ppo"],
            "runs in one process for now",
        ),
    ];
    for (env, extra, want) in cases {
        let mut cmd = poc();
        if extra == ["--objective-is-ppo"] {
            cmd.args(["run", "ppo", "--out"]).arg(&out);
        } else {
            cmd.args(["run", "dpo", "--out"]).arg(&out).args(extra);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let a = cmd.assert().failure();
        let err = String::from_utf8(a.get_output().stderr.clone()).unwrap();
        assert!(err.contains(want), "{env:?} {extra:?}: {err}");
        assert!(!err.contains("internal error"), "{err}");
        assert!(!out.join("metrics.jsonl").exists(), "{env:?}: it trained");
    }
}

#[test]
fn bench_dist_reports_scaling_and_the_all_reduce_share() {
    let dir = tempfile::tempdir().unwrap();
    let a = poc()
        .args(["bench", "dist", "--steps", "2", "--batch", "2", "--out"])
        .arg(dir.path())
        .assert()
        .success();
    let out = String::from_utf8(a.get_output().stdout.clone()).unwrap();
    let rows: Vec<Vec<&str>> = out
        .lines()
        .filter(|l| l.starts_with("| 1 |") || l.starts_with("| 2 |"))
        .map(|l| l.split('|').map(str::trim).collect())
        .collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert_eq!(rows[0][4], "1.00", "{out}");
    let share: f64 = rows[1][5].trim_end_matches('%').parse().unwrap();
    assert!(share > 0.0 && share < 100.0, "{out}");
    let tokens: f64 = rows[1][3].parse().unwrap();
    assert!(tokens > 0.0, "{out}");
}
