//! `poc bench eval`: throughput of loss+gradient per lowering, as ratios against a
//! hand-written Rust DPO loop measured in the same run.

use crate::Failure;
use crate::eval::{self, Backend, Precision};
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
    let dpo = crate::cli::compile("dpo", crate::library::shipped("dpo").unwrap_or_default())?;
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
        let c = crate::cli::compile(name, crate::library::shipped(name).unwrap_or_default())?;
        let params = c.objective.default_params();
        let cols = random_columns(&c.program.input_names, rows, 2);
        // Loss and gradients only (no metrics), parameters bound: what a training step needs.
        // Every lowering runs this same program.
        let program = c.native_program(Some(&params), false);
        let mut interp_rate = f64::NAN;
        for backend in [Backend::Interp, Backend::Jit, Backend::Burn] {
            let (secs, label) = match backend {
                Backend::Jit => {
                    // Compile once, outside the timing: the kernel is reused across batches.
                    let kernel = poc_compiler::jit::Kernel::compile(&program)
                        .map_err(|e| Failure::Internal(e.to_string()))?;
                    let refs: Vec<&[f64]> = cols.iter().map(|c| c.as_slice()).collect();
                    let mut out = vec![Vec::new(); program.outputs.len()];
                    let mut result = Ok(());
                    let t = best_of(repeat, || result = kernel.run(&params, &refs, &mut out));
                    result.map_err(|e| Failure::Internal(e.to_string()))?;
                    (t, "Cranelift JIT")
                }
                Backend::Interp => {
                    let t = best_of(repeat, || {
                        std::hint::black_box(poc_compiler::interp::eval_batch(
                            &c.program, &params, &cols,
                        ));
                    });
                    (t, "interpreter (f64)")
                }
                Backend::Burn => {
                    let mut result = Ok(());
                    let t = best_of(repeat, || {
                        result = eval::evaluate(
                            &c.program,
                            &params,
                            &cols,
                            Backend::Burn,
                            Precision::F64,
                            "cpu",
                        )
                        .map(|_| ());
                    });
                    result?;
                    (t, "burn libtorch CPU (f64)")
                }
            };
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
