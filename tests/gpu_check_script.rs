//! `scripts/gpu-check.sh` where nothing can run: the script parses, and a machine that lacks
//! what it needs is told all of it at once (exit 2) before anything is built, written or run.
//! (Its whole CPU path, build and run included, takes minutes: it is run by hand, see README.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/gpu-check.sh")
}

/// Runs the script on the CPU path with `env`, with `PATH` limited to the system directories
/// (no cargo there, as on the GPU machines) unless `env` sets it.
fn gpu_check(out: &Path, env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(script())
        .env("PATH", "/usr/bin:/bin")
        .env("POC_GPU_CHECK_DEVICE", "cpu")
        .env("POC_GPU_CHECK_OUT", out)
        .env("POC_GPU_CHECK_CACHE", out.join("cache"))
        .env_remove("POC_BIN")
        .env_remove("POC_PARITY_BIN")
        .env_remove("POC_TORCH_PYTHON");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn cargo_on_system_path() -> bool {
    ["/usr/bin/cargo", "/bin/cargo"]
        .iter()
        .any(|p| Path::new(p).exists())
}

#[test]
fn the_script_parses() {
    let status = Command::new("bash")
        .arg("-n")
        .arg(script())
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn every_missing_prerequisite_is_listed_at_once_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // A "binary" that is not executable, no Python, no test binary and no cargo.
    let fake = tmp.path().join("poc");
    std::fs::write(&fake, "not a program").unwrap();
    let python = tmp.path().join("no-python");
    let o = gpu_check(
        &out,
        &[
            ("POC_BIN", fake.as_path()),
            ("POC_TORCH_PYTHON", python.as_path()),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot run; missing:"), "{err}");
    assert!(
        err.contains(&format!("Python: `{}` not found", python.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!("poc: {} is not executable", fake.display())),
        "{err}"
    );
    if !cargo_on_system_path() {
        assert!(
            err.contains(
                "device-parity tests: no cargo to build them and POC_PARITY_BIN is not set"
            ),
            "{err}"
        );
    }
    // Nothing was written besides the output directory itself.
    assert!(!out.join("summary.json").exists());
    assert!(!out.join("cache").exists());
}

#[test]
fn prebuilt_binaries_that_do_not_run_are_refused() {
    // A Python with torch (the venv of scripts/setup.sh, or POC_PYTHON), as on a GPU machine.
    let python = poc_runtime::python::interpreter();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let fake = tmp.path().join("poc");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'symbol lookup error: a stand-in' >&2\nexit 127\n",
    )
    .unwrap();
    let missing_tests = tmp.path().join("device_parity");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = gpu_check(
        &out,
        &[
            ("POC_BIN", fake.as_path()),
            ("POC_PARITY_BIN", missing_tests.as_path()),
            ("POC_TORCH_PYTHON", python.as_path()),
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    if err.contains("Python:") || err.contains("torch:") || err.contains("safetensors:") {
        eprintln!(
            "skipped: {} lacks torch or safetensors\n{err}",
            python.display()
        );
        return;
    }
    assert!(
        err.contains(&format!(
            "poc: {} does not run (symbol lookup error: a stand-in)",
            fake.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "device-parity tests: {} does not exist",
            missing_tests.display()
        )),
        "{err}"
    );
}
