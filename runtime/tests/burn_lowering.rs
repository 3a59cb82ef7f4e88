//! The burn lowering against the interpreter (f64, f32, bf16), and burn's own autodiff of
//! the lowered loss against the compiler's symbolic gradient, on libtorch CPU, for every
//! per-example objective (token-level objectives: token_level.rs).

mod lowering;

use burn::tensor::DType;
use lowering::*;
use poc_runtime::device::DeviceSpec;
use poc_runtime::lower::{column, run_program, surrogate, to_f64};

const ROWS: usize = 200;

#[test]
fn burn_f64_matches_interpreter() {
    let dev = DeviceSpec::Cpu.device();
    for (name, _) in scalar_objectives() {
        let c = compiled(&name);
        let params = c.objective.default_params();
        let cols = random_columns(&c, ROWS, 21);
        let want = poc_compiler::interp::eval_batch(&c.program, &params, &cols);
        let inputs: Vec<_> = cols.iter().map(|x| column(x, &dev, DType::F64)).collect();
        let got: Vec<Vec<f64>> = run_program(&c.program, &params, &inputs, &dev, DType::F64)
            .unwrap()
            .into_iter()
            .map(to_f64)
            .collect();
        for (k, o) in c.program.outputs.iter().enumerate() {
            for r in 0..ROWS {
                assert!(
                    close(want[k][r], got[k][r], 1e-9, 1e-12),
                    "{name} {} row {r}: interpreter {} burn {}",
                    o.name,
                    want[k][r],
                    got[k][r]
                );
            }
        }
    }
}

#[test]
fn burn_autodiff_and_surrogate_match_symbolic_gradient() {
    let dev = DeviceSpec::Cpu.device();
    for (name, _) in scalar_objectives() {
        let c = compiled(&name);
        let params = c.objective.default_params();
        let cols = random_columns(&c, ROWS, 22);
        let symbolic = poc_compiler::interp::eval_batch(&c.program, &params, &cols);
        let diff = grad_outputs(&c.program);

        // 1. burn differentiates the lowered loss itself.
        let inputs: Vec<_> = cols
            .iter()
            .map(|x| column(x, &dev, DType::F64).autodiff().require_grad())
            .collect();
        let outs = run_program(&c.loss_program, &params, &inputs, &dev, DType::F64).unwrap();
        let grads = outs[0].clone().sum().backward();
        for &(k, i) in &diff {
            let g = to_f64(
                inputs[i]
                    .grad(&grads)
                    .expect("gradient reaches a differentiable input"),
            );
            for r in 0..ROWS {
                assert!(
                    close(symbolic[k][r], g[r], 1e-7, 1e-10),
                    "{name} d/{} row {r}: symbolic {} burn autodiff {}",
                    c.program.input_names[i],
                    symbolic[k][r],
                    g[r]
                );
            }
        }

        // 2. the surrogate sum(detach(g) * x) carries exactly the symbolic gradient.
        let inputs: Vec<_> = cols
            .iter()
            .map(|x| column(x, &dev, DType::F64).autodiff().require_grad())
            .collect();
        let outs = run_program(&c.program, &params, &inputs, &dev, DType::F64).unwrap();
        let xs: Vec<_> = diff.iter().map(|&(_, i)| inputs[i].clone()).collect();
        let gs: Vec<_> = diff.iter().map(|&(k, _)| outs[k].clone()).collect();
        let grads = surrogate(&xs, &gs).backward();
        for &(k, i) in &diff {
            let g = to_f64(inputs[i].grad(&grads).unwrap());
            let want = to_f64(outs[k].clone());
            for r in 0..ROWS {
                assert!(
                    close(want[r], g[r], 1e-14, 1e-16),
                    "{name} surrogate d/{} row {r}: {} vs {}",
                    c.program.input_names[i],
                    want[r],
                    g[r]
                );
            }
        }
    }
}

#[test]
fn burn_low_precision_is_close_to_f64() {
    let dev = DeviceSpec::Cpu.device();
    for (name, _) in scalar_objectives() {
        let c = compiled(&name);
        let params = c.objective.default_params();
        let cols = random_columns(&c, ROWS, 23);
        let want = poc_compiler::interp::eval_batch(&c.program, &params, &cols);
        // bf16 keeps 8 mantissa bits; MallowsPO-φ's (B(a(d+1)) - B(ad))/a cancels, so its
        // bf16 loss is only good to a few tenths of its scale. (The runtime evaluates
        // objectives in f32 even for bf16 models, as TRL upcasts log-probs.)
        for (dtype, rel) in [(DType::F32, 1e-3), (DType::BF16, 0.25)] {
            // Inputs are rounded to the dtype first: compare against the interpreter on the
            // rounded inputs, so the tolerance measures the lowering, not the input rounding.
            let inputs: Vec<_> = cols.iter().map(|x| column(x, &dev, dtype)).collect();
            let rounded: Vec<Vec<f64>> = inputs.iter().map(|t| to_f64(t.clone())).collect();
            let want_rounded = poc_compiler::interp::eval_batch(&c.program, &params, &rounded);
            let got: Vec<Vec<f64>> = run_program(&c.program, &params, &inputs, &dev, dtype)
                .unwrap()
                .into_iter()
                .map(to_f64)
                .collect();
            let k = 0; // the loss
            let scale = want[k].iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-3);
            for r in 0..ROWS {
                assert!(
                    (want_rounded[k][r] - got[k][r]).abs() <= rel * scale,
                    "{name} {dtype:?} loss row {r}: f64 {} got {}",
                    want_rounded[k][r],
                    got[k][r]
                );
            }
        }
    }
}

#[test]
fn worked_example_on_burn_matches_the_interpreter() {
    // The worked example (compiler/tests/worked_example.rs pins its values).
    let dev = DeviceSpec::Cpu.device();
    let row = worked_example_row();
    for (name, sets) in [
        ("dpo", &["beta=0.1", "label_smoothing=0.1"][..]),
        ("hinge", &["beta=0.1"]),
        ("ipo", &["beta=0.1"]),
        ("simpo", &["beta=2", "gamma=1"]),
        ("mipo", &["beta=20"]),
        ("mmpo", &["beta=0.01", "gamma=2.2"]),
        ("robust", &["beta=0.1", "label_smoothing=0"]),
    ] {
        let c = compiled(name);
        let (params, cols) = worked_example_inputs(&c, &row, sets);
        let want = poc_compiler::interp::eval_batch(&c.program, &params, &cols)[0][0];
        let inputs: Vec<_> = cols.iter().map(|x| column(x, &dev, DType::F64)).collect();
        let got = run_program(&c.program, &params, &inputs, &dev, DType::F64).unwrap();
        let got = to_f64(got[0].clone())[0];
        assert!(
            close(want, got, 1e-12, 1e-15),
            "{name}: burn {got} vs interpreter {want}"
        );
    }
}
