//! The burn lowering of token-level programs (`[B, T]` tensors with padding) against the
//! interpreter, and burn's autodiff against the symbolic gradient, on libtorch CPU. (The
//! interpreter's own token-level tests: compiler/tests/token_level.rs.)

mod lowering;

use burn::tensor::DType;
use lowering::*;
use poc_compiler::interp::{Column, eval_columns};
use poc_runtime::device::DeviceSpec;
use poc_runtime::lower::{TensorColumn, run_columns, surrogate_columns, to_f64, tokens_to_f64};

const ROWS: usize = 48;
const MAX_LEN: usize = 9;

fn compile(src: &str) -> poc_compiler::Compiled {
    poc_compiler::compile(src).unwrap_or_else(|e| panic!("{e:?}\n{src}"))
}

/// `probe(f)`'s per-token gradient on one row by burn equals the interpreter's.
fn probe_agrees(f: &str, rewards: &[f64], values: &[f64], mask: &[f64]) {
    let c = compile(&probe(f));
    let cols = vec![
        Column::Tokens(vec![vec![-1.0; mask.len()]]),
        Column::Tokens(vec![rewards.to_vec()]),
        Column::Tokens(vec![values.to_vec()]),
        Column::Tokens(vec![mask.to_vec()]),
    ];
    let params = c.objective.default_params();
    let want = eval_columns(&c.program, &params, &cols).unwrap();
    let got = burn_eval(&c.program, &params, &cols, DType::F64);
    assert_columns_close(
        f,
        output(&c, &want, "d/logprobs"),
        output(&c, &got, "d/logprobs"),
        1e-12,
        1e-12,
    );
}

#[test]
fn gae_last_token_and_whiten_on_burn_match_the_interpreter() {
    let ones = [1.0; 4];
    probe_agrees(
        "gae(rewards, values, mask, gamma, lam)",
        &[1.0, 5.0, 2.0, 7.0],
        &[0.5, 9.0, 1.0, 9.0],
        &[1.0, 0.0, 1.0, 0.0],
    );
    probe_agrees("last_token(mask)", &ones, &ones, &[1.0, 1.0, 0.0, 0.0]);
    probe_agrees("last_token(mask)", &ones, &ones, &[1.0, 0.0, 1.0, 0.0]);
    probe_agrees(
        "whiten(rewards, mask)",
        &[1.0, 2.0, 100.0, 6.0],
        &ones,
        &[1.0, 1.0, 0.0, 1.0],
    );
    probe_agrees(
        "whiten(rewards, mask)",
        &[5.0, 1.0],
        &ones[..2],
        &[0.0, 1.0],
    );
}

#[test]
fn last_token_is_exact_for_long_completions_in_low_precision() {
    // bf16 holds integers exactly only up to 256: the lowering must not rank positions.
    let c = compile(&probe("last_token(mask)"));
    let params = c.objective.default_params();
    let t = 600;
    let mask: Vec<f64> = (0..t).map(|i| if i < 590 { 1.0 } else { 0.0 }).collect();
    let cols = vec![
        Column::Tokens(vec![vec![-1.0; t]]),
        Column::Tokens(vec![vec![0.0; t]]),
        Column::Tokens(vec![vec![0.0; t]]),
        Column::Tokens(vec![mask]),
    ];
    for dtype in [DType::F64, DType::F32, DType::BF16] {
        let out = burn_eval(&c.program, &params, &cols, dtype);
        let g = output(&c, &out, "d/logprobs").tokens(0).to_vec();
        let ones: Vec<usize> = (0..t).filter(|&i| g[i] != 0.0).collect();
        assert_eq!(ones, vec![589], "{dtype:?}");
        assert_eq!(g[589], 1.0, "{dtype:?}");
    }
}

#[test]
fn whiten_on_burn_uses_the_whole_batch() {
    let c = compile(&probe("whiten(rewards, mask)"));
    let params = c.objective.default_params();
    let (cols, s) = whiten_batch();
    let want = Column::Tokens(vec![vec![-3.0 * s, -s], vec![s, 3.0 * s, 0.0]]);
    let burn = burn_eval(&c.program, &params, &cols, DType::F64);
    assert_columns_close(
        "burn whiten",
        &want,
        output(&c, &burn, "d/logprobs"),
        1e-12,
        1e-12,
    );
}

#[test]
fn mixed_token_expressions_on_burn_match_the_interpreter_and_symbolic_gradient() {
    for body in MIXED_TOKEN_LOSSES {
        let c = compile(&mixed_token_source(body));
        let cols = random_rollouts(&c, 24, 7, 3);
        burn_agrees(&c, &[], &cols, &format!("mix `{body}`"));
    }
}

/// burn f64 = interpreter on every output; burn autodiff of the lowered loss = the symbolic
/// gradient (per token, padding dropped); the surrogate carries the symbolic gradient.
fn burn_agrees(c: &poc_compiler::Compiled, params: &[f64], cols: &[Column], what: &str) {
    let want = eval_columns(&c.program, params, cols).unwrap();
    let got = burn_eval(&c.program, params, cols, DType::F64);
    for (k, o) in c.program.outputs.iter().enumerate() {
        assert_columns_close(
            &format!("{what} {}", o.name),
            &want[k],
            &got[k],
            1e-9,
            1e-12,
        );
    }

    let dev = DeviceSpec::Cpu.device();
    let lens = row_lengths(cols);
    let inputs: Vec<TensorColumn> = cols.iter().map(|c| tensor(c, DType::F64, true)).collect();
    let outs = run_columns(&c.loss_program, params, &inputs, &dev, DType::F64).unwrap();
    let loss = outs[0].clone().scalar().unwrap();
    let grads = loss.sum().backward();
    let diff = grad_outputs(&c.program);
    for &(k, i) in &diff {
        let g = gradient(&inputs[i], &grads, &lens);
        let name = &c.program.input_names[i];
        assert_columns_close(
            &format!("{what} autodiff d/{name}"),
            &want[k],
            &g,
            1e-7,
            1e-10,
        );
    }

    let inputs: Vec<TensorColumn> = cols.iter().map(|c| tensor(c, DType::F64, true)).collect();
    let outs = run_columns(&c.program, params, &inputs, &dev, DType::F64).unwrap();
    let xs: Vec<TensorColumn> = diff.iter().map(|&(_, i)| inputs[i].clone()).collect();
    let gs: Vec<TensorColumn> = diff.iter().map(|&(k, _)| outs[k].clone()).collect();
    let grads = surrogate_columns(&xs, &gs).backward();
    for &(k, i) in &diff {
        let g = gradient(&inputs[i], &grads, &lens);
        let name = &c.program.input_names[i];
        assert_columns_close(
            &format!("{what} surrogate d/{name}"),
            &want[k],
            &g,
            1e-14,
            1e-16,
        );
    }
}

/// burn's gradient for an input (zeros where autodiff never reached it, e.g. an input read
/// only through `whiten`).
fn gradient(input: &TensorColumn, grads: &burn::tensor::Gradients, lens: &[usize]) -> Column {
    match input.clone() {
        TensorColumn::Scalar(t) => {
            let g = t.grad(grads).unwrap_or_else(|| t.zeros_like());
            Column::Scalar(to_f64(g))
        }
        TensorColumn::Tokens(t) => {
            let g = t.grad(grads).unwrap_or_else(|| t.zeros_like());
            Column::Tokens(tokens_to_f64(g, lens))
        }
    }
}

#[test]
fn token_level_objectives_on_burn_match_interpreter_and_symbolic_gradient() {
    for (name, _) in token_objectives() {
        let c = compiled(&name);
        let params = c.objective.default_params();
        let cols = random_rollouts(&c, ROWS, MAX_LEN, 21);
        burn_agrees(&c, &params, &cols, &name);

        // f32 (what training runs in): inputs rounded first, so the tolerance measures the
        // lowering.
        let rounded: Vec<Column> = cols
            .iter()
            .map(|col| from_tensor(tensor(col, DType::F32, false), &row_lengths(&cols)))
            .collect();
        let want = eval_columns(&c.program, &params, &rounded).unwrap();
        let got = burn_eval(&c.program, &params, &rounded, DType::F32);
        assert_columns_close(&format!("{name} f32 loss"), &want[0], &got[0], 1e-4, 1e-5);
    }
}

#[test]
fn batch_level_objectives_on_burn_match_interpreter_and_symbolic_gradient() {
    let names: Vec<String> = batch_objectives().into_iter().map(|(n, _)| n).collect();
    assert!(!names.is_empty());
    for name in names {
        let c = compiled(&name);
        for (sets, seed) in [(vec![], 5), (vec!["label_smoothing=0.2".to_string()], 9)] {
            let params = c.objective.params_with(&sets).unwrap();
            let cols = scalar_columns(&random_columns(&c, 64, seed));
            burn_agrees(&c, &params, &cols, &format!("{name} {sets:?}"));
        }
    }
}

#[test]
fn the_per_example_path_refuses_token_level_programs() {
    let c = compiled("ppo");
    let params = c.objective.default_params();
    let dev = DeviceSpec::Cpu.device();
    assert!(poc_runtime::lower::run_program(&c.program, &params, &[], &dev, DType::F64).is_err());
}
