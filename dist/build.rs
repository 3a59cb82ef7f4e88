//! Compiles `csrc/c10d_shim.cpp` against the libtorch that torch-sys links, with torch-sys's
//! flags (C++17, the same `_GLIBCXX_USE_CXX11_ABI`), and decides whether the NCCL backend is
//! compiled in.
//!
//! libtorch is found as torch-sys finds it, so that the shim and tch see one libtorch:
//! `$LIBTORCH` (with the `LIBTORCH_INCLUDE` / `LIBTORCH_LIB` overrides and
//! `LIBTORCH_CXX11_ABI`), or, when `LIBTORCH_USE_PYTORCH` is set, the torch of the Python
//! environment, whose paths and ABI that Python reports (`python` inside a virtual
//! environment, else `python3`, as torch-sys runs it).
//!
//! NCCL needs two things: a libtorch with `libtorch_cuda.so` (where ProcessGroupNCCL lives)
//! and a CUDA toolkit's headers (ProcessGroupNCCL.hpp includes the CUDA runtime's, which the
//! PyPI wheel does not ship). With both, the shim is compiled with `POC_DIST_NCCL` and the
//! crate with `cfg(poc_dist_nccl)`; otherwise `Backend::Nccl` is refused at run time with the
//! reason recorded here. `POC_DIST_NCCL=0` turns NCCL off, `POC_DIST_NCCL=1` makes its absence
//! a build error.

use std::env;
use std::path::{Path, PathBuf};
use std::process;

fn main() {
    for var in [
        "LIBTORCH",
        "LIBTORCH_INCLUDE",
        "LIBTORCH_LIB",
        "LIBTORCH_CXX11_ABI",
        "POC_DIST_NCCL",
        "CUDA_HOME",
        "CUDA_PATH",
        "NCCL_INCLUDE_DIR",
        "LIBTORCH_USE_PYTORCH",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=csrc");
    println!("cargo::rustc-check-cfg=cfg(poc_dist_nccl)");

    let torch = Libtorch::locate();
    let c10d_headers = |dir: &PathBuf| {
        let c10d = dir.join("torch/csrc/distributed/c10d");
        c10d.join("ProcessGroupGloo.hpp").is_file() && c10d.join("TCPStore.hpp").is_file()
    };
    if !torch.includes.iter().any(c10d_headers) {
        fail(&format!(
            "{} has no c10d headers (ProcessGroupGloo.hpp, TCPStore.hpp): this libtorch was \
             built without distributed support",
            torch.includes[0].display()
        ));
    }
    let lib = &torch.lib;
    let has_torch_cuda = lib.join("libtorch_cuda.so").exists();
    let nccl = nccl_plan(&torch.root, has_torch_cuda);

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .std("c++17")
        // libtorch's headers are not warning-clean; the shim's own code is small.
        .warnings(false)
        .include("csrc")
        .includes(&torch.includes)
        // Last, so that a libtorch that does ship Gloo's headers has them used instead.
        .include("csrc/gloo_decl")
        .define("_GLIBCXX_USE_CXX11_ABI", torch.cxx11_abi.as_str())
        .define("GLOG_USE_GLOG_EXPORT", None)
        .define("USE_C10D_GLOO", None)
        .file("csrc/c10d_shim.cpp");
    match &nccl {
        Nccl::On(dirs) => {
            build
                .define("USE_C10D_NCCL", None)
                .define("POC_DIST_NCCL", None);
            build.includes(dirs);
            println!("cargo:rustc-cfg=poc_dist_nccl");
            println!("cargo:rustc-env=POC_DIST_NCCL_STATUS=compiled in");
        }
        // No cargo warning: cargo would repeat it on every build of the workspace; the
        // reason is in `Backend::unavailable_reason` and in the error that refuses NCCL.
        Nccl::Off(reason) => println!("cargo:rustc-env=POC_DIST_NCCL_STATUS={reason}"),
    }
    build.compile("poc_dist_c10d");

    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    if has_torch_cuda {
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
    }
    if matches!(nccl, Nccl::On(_)) {
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
    }
}

/// The libtorch torch-sys links: its include directories, its library directory, and the C++
/// ABI it was built with.
struct Libtorch {
    /// The torch directory (holding `lib/`); its parent is where a wheel's `nvidia/` lives.
    root: PathBuf,
    /// Include directories, the one holding `torch/csrc/...` first.
    includes: Vec<PathBuf>,
    /// The directory of `libtorch_cpu.so`.
    lib: PathBuf,
    /// `_GLIBCXX_USE_CXX11_ABI`: `1` or `0`.
    cxx11_abi: String,
}

/// What the Python of `LIBTORCH_USE_PYTORCH` is asked: the same facts torch-sys asks for.
const PYTHON_TORCH_PATHS: &str = "\
import torch
from torch.utils import cpp_extension
print('cxx11_abi:', int(torch._C._GLIBCXX_USE_CXX11_ABI))
for p in cpp_extension.include_paths():
    print('include:', p)
for p in cpp_extension.library_paths():
    print('lib:', p)
";

impl Libtorch {
    /// Where torch-sys finds libtorch: the Python environment's torch when
    /// `LIBTORCH_USE_PYTORCH` is set (to anything, as torch-sys reads it; `LIBTORCH` is then
    /// ignored, as torch-sys ignores it), else `$LIBTORCH`.
    fn locate() -> Libtorch {
        if env::var("LIBTORCH_USE_PYTORCH").is_ok() {
            return Libtorch::from_python();
        }
        let Some(libtorch) = env::var_os("LIBTORCH").map(PathBuf::from) else {
            fail(
                "LIBTORCH is not set: point it at the libtorch torch-sys links \
                 (`. scripts/env.sh` sets it to the cached torch wheel's `torch` directory), \
                 or set LIBTORCH_USE_PYTORCH=1 to use the torch of the active Python",
            );
        };
        // The same overrides torch-sys honours.
        let include_root =
            env::var_os("LIBTORCH_INCLUDE").map_or_else(|| libtorch.clone(), PathBuf::from);
        let lib_root = env::var_os("LIBTORCH_LIB").map_or_else(|| libtorch.clone(), PathBuf::from);
        let include = include_root.join("include");
        Libtorch {
            includes: vec![include.clone(), include.join("torch/csrc/api/include")],
            lib: lib_root.join("lib"),
            root: libtorch,
            // torch-sys's default when LIBTORCH is set; the PyPI wheels use the new ABI.
            cxx11_abi: env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned()),
        }
    }

    /// The torch of the Python environment, as its Python reports it: `python` inside a
    /// virtual environment (`VIRTUAL_ENV` set), else `python3`, the interpreter torch-sys runs.
    fn from_python() -> Libtorch {
        let python = if env::var_os("VIRTUAL_ENV").is_some() {
            "python"
        } else {
            "python3"
        };
        let asked = format!("LIBTORCH_USE_PYTORCH is set, so `{python}` was asked where torch is");
        let output = process::Command::new(python)
            .arg("-c")
            .arg(PYTHON_TORCH_PATHS)
            .output()
            .unwrap_or_else(|e| fail(&format!("{asked}, but it could not be run: {e}")));
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            fail(&format!(
                "{asked}, and it failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let mut includes = Vec::new();
        let mut lib = None;
        let mut cxx11_abi = None;
        for line in stdout.lines() {
            if let Some(abi) = line.strip_prefix("cxx11_abi: ") {
                cxx11_abi = Some(abi.trim().to_owned());
            } else if let Some(dir) = line.strip_prefix("include: ") {
                includes.push(PathBuf::from(dir));
            } else if let Some(dir) = line.strip_prefix("lib: ") {
                // The last one, as torch-sys takes it.
                lib = Some(PathBuf::from(dir));
            }
        }
        let (Some(lib), Some(cxx11_abi), false) = (lib, cxx11_abi, includes.is_empty()) else {
            fail(&format!(
                "{asked}, and its answer lacks the ABI, include or library directories: {}",
                stdout.trim()
            ));
        };
        Libtorch {
            root: lib.parent().map_or_else(|| lib.clone(), Path::to_path_buf),
            includes,
            lib,
            cxx11_abi,
        }
    }
}

/// Whether the NCCL backend is compiled in: the include directories it needs, or why not.
enum Nccl {
    On(Vec<PathBuf>),
    Off(String),
}

fn nccl_plan(libtorch: &Path, has_torch_cuda: bool) -> Nccl {
    let wanted = env::var("POC_DIST_NCCL").ok();
    if wanted.as_deref() == Some("0") {
        return Nccl::Off("disabled by POC_DIST_NCCL=0 at build time".to_owned());
    }
    let plan = if has_torch_cuda {
        cuda_includes(libtorch).map_or_else(
            || {
                Nccl::Off(
                    "this libtorch has CUDA, but no CUDA toolkit headers with nccl.h were found \
                     at build time (set CUDA_HOME, or NCCL_INCLUDE_DIR for nccl.h)"
                        .to_owned(),
                )
            },
            Nccl::On,
        )
    } else {
        Nccl::Off("this libtorch has no NCCL (CPU build)".to_owned())
    };
    if let (Some("1"), Nccl::Off(reason)) = (wanted.as_deref(), &plan) {
        fail(&format!(
            "POC_DIST_NCCL=1 but NCCL cannot be compiled in: {reason}"
        ));
    }
    plan
}

/// The include directories ProcessGroupNCCL.hpp needs: a CUDA toolkit's (the wheel's
/// `nvidia/cuda_runtime/include` lacks `crt/host_config.h`, so it does not count), a
/// directory with `nccl.h`, and the wheel's `nvidia/*/include` for cuBLAS, cuSPARSE and
/// cuSOLVER when the toolkit lacks them.
fn cuda_includes(libtorch: &Path) -> Option<Vec<PathBuf>> {
    let toolkit = ["CUDA_HOME", "CUDA_PATH"]
        .iter()
        .filter_map(|var| env::var_os(var).map(PathBuf::from))
        .chain([PathBuf::from("/usr/local/cuda")])
        .map(|root| root.join("include"))
        .find(|dir| {
            dir.join("cuda_runtime_api.h").is_file() && dir.join("crt/host_config.h").is_file()
        })?;
    let wheel_nvidia = libtorch.parent().map(|site| site.join("nvidia"));
    // The wheel's own NCCL before any other: the shim refuses an nccl.h of another release
    // than libtorch was built against.
    let nccl = env::var_os("NCCL_INCLUDE_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain(wheel_nvidia.iter().map(|dir| dir.join("nccl/include")))
        .chain([toolkit.clone(), PathBuf::from("/usr/include")])
        .find(|dir| dir.join("nccl.h").is_file())?;
    // nccl.h's directory first, so that it wins over a toolkit's own nccl.h.
    let mut dirs = vec![nccl, toolkit];
    if let Some(Ok(entries)) = wheel_nvidia.map(std::fs::read_dir) {
        let mut extra: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path().join("include"))
            .filter(|dir| dir.is_dir())
            .collect();
        extra.sort();
        dirs.extend(extra);
    }
    Some(dirs)
}

fn fail(message: &str) -> ! {
    eprintln!("error: poc-dist: {message}");
    process::exit(1);
}
