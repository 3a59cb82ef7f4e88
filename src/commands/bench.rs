//! `poc bench eval` (throughput of loss+gradient per lowering, as ratios against a hand-written
//! Rust DPO loop measured in the same run) and `poc bench train` (poc's DPO step beside
//! PyTorch's).

use crate::edge::{Failure, backend_failure};
use poc_pipelines::library;
use poc_runtime::backend::{Backend, Evaluator, Precision};
use rand::{Rng, SeedableRng};
use std::time::Instant;

/// Standard inputs with plausible ranges (log-probs of 20-200 token completions).
fn random_columns(names: &[String], n: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    names
        .iter()
        .map(|name| {
            (0..n)
                .map(|_| match name.as_str() {
                    "chosen_len" | "rejected_len" => rng.random_range(20..200) as f64,
                    "ref_chosen_entropy" | "ref_rejected_entropy" => rng.random_range(0.5..6.0),
                    "vocab_size" => 128_256.0,
                    n if n.contains("logps") => rng.random_range(-300.0..-20.0),
                    _ => rng.random_range(-3.0..3.0),
                })
                .collect()
        })
        .collect()
}

/// The baseline: DPO loss and both policy gradients, written by hand.
fn hand_dpo(beta: f64, cols: &[Vec<f64>; 4], out: &mut [Vec<f64>; 3]) {
    let [pc, pr, rc, rr] = cols;
    let n = pc.len();
    for o in out.iter_mut() {
        o.clear();
        o.resize(n, 0.0);
    }
    let [loss, gc, gr] = out;
    for i in 0..n {
        let z = beta * ((pc[i] - rc[i]) - (pr[i] - rr[i]));
        // loss = softplus(-z); d/dz = -sigmoid(-z)
        let l = (-z).max(0.0) + (-z.abs()).exp().ln_1p();
        let s = if z >= 0.0 {
            let e = (-z).exp();
            e / (1.0 + e)
        } else {
            1.0 / (1.0 + z.exp())
        };
        loss[i] = l;
        gc[i] = -beta * s;
        gr[i] = beta * s;
    }
}

fn best_of<F: FnMut()>(repeat: usize, mut f: F) -> f64 {
    (0..repeat.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Runs the benchmark and prints a Markdown table.
pub fn eval(rows: usize, repeat: usize) -> Result<(), Failure> {
    if rows == 0 {
        return Err(Failure::User("poc: --rows must be at least 1".into()));
    }
    println!(
        "poc bench eval: {rows} random rows, best of {repeat}, loss + gradient per row (CPU)\n"
    );
    // Baseline first.
    let dpo = library::compiled("dpo")?;
    let names = &dpo.program.input_names;
    let cols = random_columns(names, rows, 1);
    let find = |n: &str| {
        names
            .iter()
            .position(|x| x == n)
            .ok_or_else(|| Failure::Internal(format!("dpo lacks input {n}")))
    };
    let ordered: [Vec<f64>; 4] = [
        cols[find("policy_chosen_logps")?].clone(),
        cols[find("policy_rejected_logps")?].clone(),
        cols[find("ref_chosen_logps")?].clone(),
        cols[find("ref_rejected_logps")?].clone(),
    ];
    let mut out: [Vec<f64>; 3] = Default::default();
    let t_hand = best_of(repeat, || hand_dpo(0.1, &ordered, &mut out));
    let hand_rate = rows as f64 / t_hand;
    println!("| objective | lowering | rows/s | vs hand-written DPO | vs interpreter |");
    println!("|---|---|---:|---:|---:|");
    println!(
        "| dpo | hand-written Rust loop (baseline) | {:.3e} | 1.00x | |",
        hand_rate
    );
    for name in ["dpo", "mallows_phi"] {
        let c = library::compiled(name)?;
        let params = c.objective.default_params();
        let cols = random_columns(&c.program.input_names, rows, 2);
        // Loss and gradients only (no metrics), parameters bound: what a training step needs,
        // in the form the JIT compiles; the interpreter and burn run the program as compiled.
        let native = c.native_program(Some(&params), false);
        let mut interp_rate = f64::NAN;
        for (backend, label) in [
            (Backend::Interp, "interpreter (f64)"),
            (Backend::Jit, "Cranelift JIT"),
            (Backend::Burn, "burn libtorch CPU (f64)"),
        ] {
            let program = if backend == Backend::Jit {
                &native
            } else {
                &c.program
            };
            // Prepared once, outside the timing: the JIT kernel is reused across batches.
            let evaluator =
                Evaluator::new(program, backend, Precision::F64, "cpu").map_err(backend_failure)?;
            let mut result = Ok(());
            let secs = best_of(repeat, || {
                result = evaluator
                    .run(&params, &cols)
                    .map(|out| drop(std::hint::black_box(out)));
            });
            result.map_err(backend_failure)?;
            let rate = rows as f64 / secs;
            if backend == Backend::Interp {
                interp_rate = rate;
            }
            println!(
                "| {name} | {label} | {rate:.3e} | {:.2}x | {:.1}x |",
                rate / hand_rate,
                rate / interp_rate
            );
        }
    }
    println!("\nburn timings include moving the columns into and out of tensors.");
    Ok(())
}

/// The shape of `poc bench train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainShape {
    /// Model width.
    #[arg(long, default_value_t = 256)]
    pub hidden: usize,
    /// Decoder blocks.
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    /// Preference pairs per step (2x sequences).
    #[arg(long, default_value_t = 8)]
    pub pairs: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    /// Timed steps (after 2 warm-up steps).
    #[arg(long, default_value_t = 8)]
    pub steps: usize,
}

/// Peak resident memory of this process, in MB (Linux `VmHWM`).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// `poc bench train`: poc's DPO step against PyTorch's on the same shape.
pub fn train(shape: TrainShape, python: Option<std::path::PathBuf>) -> Result<(), Failure> {
    use poc_runtime::data::{Pair, Tokenized};
    use poc_runtime::model::{Llama, LlamaConfig};
    const WARMUP: usize = 2;
    const PROMPT: usize = 16;
    if shape.seq <= PROMPT
        || shape.pairs == 0
        || shape.steps == 0
        || !shape.hidden.is_multiple_of(64)
    {
        return Err(Failure::User("poc: bench train needs --seq > 16, --pairs and --steps >= 1, --hidden a multiple of 64".into()));
    }
    let heads = shape.hidden / 32;
    let inter = (shape.hidden * 11 / 4).div_ceil(32) * 32;
    let mut config =
        LlamaConfig::preset("tiny").ok_or_else(|| Failure::Internal("no tiny preset".into()))?;
    config.hidden_size = shape.hidden;
    config.num_hidden_layers = shape.layers;
    config.num_attention_heads = heads;
    config.num_key_value_heads = Some((heads / 2).max(1));
    config.intermediate_size = inter;
    let device = poc_runtime::device::DeviceSpec::Cpu.device();
    let policy = Llama::random(&config, 0, &device.clone().autodiff());
    let reference =
        poc_runtime::train::Reference::Model(Box::new(burn::module::Module::valid(&policy)));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut random_seq = || Tokenized {
        ids: (0..shape.seq)
            .map(|_| rng.random_range(0..config.vocab_size as u32))
            .collect(),
        completion_start: PROMPT,
        earlier: Vec::new(),
    };
    let pairs: Vec<Pair> = (0..shape.pairs)
        .map(|i| Pair {
            line: i + 1,
            chosen: random_seq(),
            rejected: random_seq(),
            columns: Default::default(),
            demonstration: false,
        })
        .collect();
    let dpo = library::compiled("dpo")?;
    let out = std::env::temp_dir().join(format!("poc-bench-train-{}", std::process::id()));
    let opts = poc_runtime::train::TrainOptions {
        batch_size: shape.pairs,
        grad_accum: 1,
        max_steps: Some(WARMUP + shape.steps),
        epochs: 1,
        lr: 1e-4,
        warmup_ratio: 0.0,
        schedule: poc_runtime::train::Schedule::Constant,
        weight_decay: 0.0,
        max_grad_norm: 1.0,
        seed: 0,
        save_every: usize::MAX,
        params: dpo.objective.default_params(),
        out: out.clone(),
        base_model: "bench".into(),
    };
    let tok = poc_runtime::data::Tok::tiny();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let run = poc_runtime::train::PairRun {
        compiled: &dpo,
        policy,
        reference,
        tok,
        pairs,
        eval: None,
        opts,
        device,
        resume: None,
    };
    let logs = poc_runtime::train::train_pairs(run, &stop, |_, _| {})
        .map_err(|e| Failure::Internal(e.to_string()))?;
    let _ = std::fs::remove_dir_all(&out);
    let mut rates: Vec<f64> = logs[WARMUP..].iter().map(|l| l.tokens_per_sec).collect();
    rates.sort_by(f64::total_cmp);
    let poc_rate = rates[rates.len() / 2];
    let poc_mem = peak_rss_mb();
    println!(
        "poc bench train: DPO steps, Llama hidden {} x {} layers ({:.1}M params), {} pairs x {} tokens, CPU f32, median of {} steps\n",
        shape.hidden,
        shape.layers,
        config.num_params() as f64 / 1e6,
        shape.pairs,
        shape.seq,
        shape.steps
    );
    println!("| implementation | tokens/s | peak RSS (MB) | ratio (tokens/s) |");
    println!("|---|---:|---:|---:|");
    let python = python.unwrap_or_else(poc_runtime::python::interpreter);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/dpo_step.py");
    let baseline = std::process::Command::new(&python)
        .arg(&script)
        .args([
            "--hidden",
            &shape.hidden.to_string(),
            "--layers",
            &shape.layers.to_string(),
        ])
        .args([
            "--heads",
            &heads.to_string(),
            "--kv-heads",
            &(heads / 2).max(1).to_string(),
        ])
        .args([
            "--inter",
            &inter.to_string(),
            "--vocab",
            &config.vocab_size.to_string(),
        ])
        .args([
            "--pairs",
            &shape.pairs.to_string(),
            "--seq",
            &shape.seq.to_string(),
        ])
        .args([
            "--steps",
            &shape.steps.to_string(),
            "--warmup",
            &WARMUP.to_string(),
            "--prompt",
            &PROMPT.to_string(),
        ])
        .output();
    match baseline {
        Ok(o) if o.status.success() => {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
            let rate = v["tokens_per_sec"].as_f64().unwrap_or(f64::NAN);
            let mem = v["peak_rss_mb"].as_f64().unwrap_or(f64::NAN);
            println!(
                "| PyTorch {} eager (baseline) | {rate:.0} | {mem:.0} | 1.00x |",
                v["torch"].as_str().unwrap_or("?")
            );
            println!(
                "| poc (burn + libtorch, symbolic gradient) | {poc_rate:.0} | {poc_mem:.0} | {:.2}x |",
                poc_rate / rate
            );
        }
        other => {
            let why = match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
                    .to_string(),
                Err(e) => e.to_string(),
            };
            println!(
                "| poc (burn + libtorch, symbolic gradient) | {poc_rate:.0} | {poc_mem:.0} | |"
            );
            println!(
                "\nPyTorch baseline unavailable ({} {}): {why}",
                python.display(),
                script.display()
            );
            println!(
                "  = hint: it needs torch and transformers: {} -m pip install transformers==4.57.1",
                python.display()
            );
        }
    }
    Ok(())
}
