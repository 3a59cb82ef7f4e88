//! Token-level objectives: per-token inputs, masked reductions, `gae`, `last_token` and
//! `whiten` against hand-computed values; symbolic gradients against central finite
//! differences; the burn lowering (`[B, T]` tensors with padding) against the interpreter, and
//! burn's autodiff against the symbolic gradient; the type rules; the JIT's refusal.

mod common;

use burn::tensor::DType;
use common::*;
use poc_compiler::interp::{Column, eval_columns};
use poc_compiler::{ErrorKind, OutputKind};
use poc_runtime::device::DeviceSpec;
use poc_runtime::lower::{
    TensorColumn, column, run_columns, surrogate_columns, to_f64, token_column, tokens_to_f64,
};

const ROWS: usize = 48;
const MAX_LEN: usize = 9;

fn compile(src: &str) -> poc_compiler::Compiled {
    poc_compiler::compile(src).unwrap_or_else(|e| panic!("{e:?}\n{src}"))
}

/// The output named `name` of an interpreter evaluation.
fn output<'a>(c: &poc_compiler::Compiled, out: &'a [Column], name: &str) -> &'a Column {
    let k = c.program.outputs.iter().position(|o| o.name == name);
    &out[k.unwrap_or_else(|| panic!("no output {name}"))]
}

/// The burn lowering of `program` on `cols` (f64 or another dtype), back as columns with each
/// row's padding dropped.
fn burn_eval(
    program: &poc_compiler::Program,
    params: &[f64],
    cols: &[Column],
    dtype: DType,
) -> Vec<Column> {
    let dev = DeviceSpec::Cpu.device();
    let lens = row_lengths(cols);
    let inputs: Vec<TensorColumn> = cols.iter().map(|c| tensor(c, dtype, false)).collect();
    run_columns(program, params, &inputs, &dev, dtype)
        .unwrap()
        .into_iter()
        .map(|o| from_tensor(o, &lens))
        .collect()
}

fn row_lengths(cols: &[Column]) -> Vec<usize> {
    cols.iter()
        .find_map(|c| match c {
            Column::Tokens(v) => Some(v.iter().map(Vec::len).collect()),
            Column::Scalar(_) => None,
        })
        .unwrap_or_default()
}

fn tensor(c: &Column, dtype: DType, grad: bool) -> TensorColumn {
    let dev = DeviceSpec::Cpu.device();
    match c {
        Column::Scalar(v) => {
            let t = column(v, &dev, dtype);
            TensorColumn::Scalar(if grad { t.autodiff().require_grad() } else { t })
        }
        Column::Tokens(v) => {
            let t = token_column(v, &dev, dtype);
            TensorColumn::Tokens(if grad { t.autodiff().require_grad() } else { t })
        }
    }
}

fn from_tensor(t: TensorColumn, lens: &[usize]) -> Column {
    match t {
        TensorColumn::Scalar(t) => Column::Scalar(to_f64(t)),
        TensorColumn::Tokens(t) => Column::Tokens(tokens_to_f64(t, lens)),
    }
}

/// Every value of two columns agrees.
fn assert_columns_close(what: &str, want: &Column, got: &Column, rel: f64, abs: f64) {
    match (want, got) {
        (Column::Scalar(a), Column::Scalar(b)) => {
            assert_eq!(a.len(), b.len(), "{what}");
            for (r, (x, y)) in a.iter().zip(b).enumerate() {
                assert!(close(*x, *y, rel, abs), "{what} row {r}: {x} vs {y}");
            }
        }
        (Column::Tokens(a), Column::Tokens(b)) => {
            assert_eq!(a.len(), b.len(), "{what}");
            for (r, (x, y)) in a.iter().zip(b).enumerate() {
                assert_eq!(x.len(), y.len(), "{what} row {r}");
                for (t, (x, y)) in x.iter().zip(y).enumerate() {
                    assert!(
                        close(*x, *y, rel, abs),
                        "{what} row {r} token {t}: {x} vs {y}"
                    );
                }
            }
        }
        _ => panic!("{what}: {want:?} vs {got:?}"),
    }
}

/// An objective whose gradient with respect to `logprobs` is `f` at every valid token: the way
/// to read a per-token value back through the outputs (which are per example or gradients).
fn probe(f: &str) -> String {
    format!(
        "objective probe\nparam gamma = 0.9\nparam lam = 0.8\ninput logprobs from policy.token_logps(completion)\ninput rewards from reference.token_logps(completion)\ninput values from old_value_head(completion)\ninput mask from completion.mask\nloss = masked_sum(logprobs * ({f}), mask)\n"
    )
}

/// The per-token gradient of `probe(f)` on one row.
fn probe_row(f: &str, rewards: &[f64], values: &[f64], mask: &[f64]) -> Vec<f64> {
    let c = compile(&probe(f));
    let logprobs = vec![-1.0; mask.len()];
    let cols = vec![
        Column::Tokens(vec![logprobs]),
        Column::Tokens(vec![rewards.to_vec()]),
        Column::Tokens(vec![values.to_vec()]),
        Column::Tokens(vec![mask.to_vec()]),
    ];
    let params = c.objective.default_params();
    let out = eval_columns(&c.program, &params, &cols).unwrap();
    let got = output(&c, &out, "d/logprobs").tokens(0).to_vec();
    // burn agrees, from the same program on [1, T] tensors.
    let burn = burn_eval(&c.program, &params, &cols, DType::F64);
    assert_columns_close(
        f,
        output(&c, &out, "d/logprobs"),
        output(&c, &burn, "d/logprobs"),
        1e-12,
        1e-12,
    );
    got
}

fn assert_all_close(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?}");
    for (t, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            close(*g, *w, 1e-12, 1e-12),
            "{what}[{t}]: got {g}, want {w} ({got:?})"
        );
    }
}

#[test]
fn gae_matches_hand_computed_examples() {
    // γ = 1, λ = 0.95, three valid tokens, the score on the last one:
    //   t=2: δ = 1 + 0 − 0.7 = 0.3,          A = 0.3
    //   t=1: δ = 0 + 0.7 − 0.6 = 0.1,        A = 0.1 + 0.95·0.3 = 0.385
    //   t=0: δ = 0 + 0.6 − 0.5 = 0.1,        A = 0.1 + 0.95·0.385 = 0.46575
    let a = poc_compiler::ops::gae(
        |t| [0.0, 0.0, 1.0][t],
        |t| [0.5, 0.6, 0.7][t],
        &[1.0, 1.0, 1.0],
        1.0,
        0.95,
    );
    assert_all_close("gae γ=1 λ=0.95", &a, &[0.46575, 0.385, 0.3]);

    // γ = 0.9, λ = 0.8, mask [1, 0, 1, 0]: the masked tokens are skipped (their rewards and
    // values never read) and get 0; the recursion links t=0 to t=2.
    //   t=2: δ = 2 + 0.9·0 − 1 = 1,           A = 1
    //   t=0: δ = 1 + 0.9·1 − 0.5 = 1.4,       A = 1.4 + 0.72·1 = 2.12
    let (rewards, values, mask) = (
        [1.0, 5.0, 2.0, 7.0],
        [0.5, 9.0, 1.0, 9.0],
        [1.0, 0.0, 1.0, 0.0],
    );
    let want = [2.12, 0.0, 1.0, 0.0];
    let a = poc_compiler::ops::gae(|t| rewards[t], |t| values[t], &mask, 0.9, 0.8);
    assert_all_close("gae with holes", &a, &want);
    // The same through the language, on the interpreter and on burn.
    let got = probe_row(
        "gae(rewards, values, mask, gamma, lam)",
        &rewards,
        &values,
        &mask,
    );
    assert_all_close("gae in a program", &got, &want);
}

#[test]
fn last_token_and_whiten_match_hand_computed_values() {
    let ones = [1.0; 4];
    let got = probe_row("last_token(mask)", &ones, &ones, &[1.0, 1.0, 0.0, 0.0]);
    assert_all_close("last_token", &got, &[0.0, 1.0, 0.0, 0.0]);
    let got = probe_row("last_token(mask)", &ones, &ones, &[1.0, 0.0, 1.0, 0.0]);
    assert_all_close("last_token with a hole", &got, &[0.0, 0.0, 1.0, 0.0]);

    // Valid values 1, 2, 6: mean 3, unbiased variance (4 + 1 + 9)/2 = 7.
    let s = 1.0 / (7.0f64 + 1e-8).sqrt();
    let got = probe_row(
        "whiten(rewards, mask)",
        &[1.0, 2.0, 100.0, 6.0],
        &ones,
        &[1.0, 1.0, 0.0, 1.0],
    );
    assert_all_close("whiten", &got, &[-2.0 * s, -s, 0.0, 3.0 * s]);
    // One valid token: variance 0, the whitened value 0 (not NaN).
    let got = probe_row(
        "whiten(rewards, mask)",
        &[5.0, 1.0],
        &ones[..2],
        &[0.0, 1.0],
    );
    assert_all_close("whiten of one token", &got, &[0.0, 0.0]);

    // Masked reductions: Σ m·x and Σ m·x / Σ m over the valid tokens only (a NaN at a padding
    // token is never read).
    let c = compile(
        "objective red\ninput x from policy.token_logps(completion)\ninput mask from completion.mask\nloss = masked_sum(x, mask)\nmetric mean = masked_mean(x, mask)\n",
    );
    let cols = vec![
        Column::Tokens(vec![vec![1.0, 2.0, f64::NAN], vec![4.0]]),
        Column::Tokens(vec![vec![1.0, 1.0, 0.0], vec![1.0]]),
    ];
    let out = eval_columns(&c.program, &[], &cols).unwrap();
    assert_eq!(output(&c, &out, "loss"), &Column::Scalar(vec![3.0, 4.0]));
    assert_eq!(output(&c, &out, "mean"), &Column::Scalar(vec![1.5, 4.0]));
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
fn whiten_uses_the_whole_batch() {
    // Two rows: the statistics are over all valid tokens of the batch (as TRL's
    // masked_whiten), so a row alone whitens differently.
    let c = compile(&probe("whiten(rewards, mask)"));
    let params = c.objective.default_params();
    let cols = vec![
        Column::Tokens(vec![vec![-1.0; 2], vec![-1.0; 3]]),
        Column::Tokens(vec![vec![1.0, 3.0], vec![5.0, 7.0, 0.0]]),
        Column::Tokens(vec![vec![0.0; 2], vec![0.0; 3]]),
        Column::Tokens(vec![vec![1.0, 1.0], vec![1.0, 1.0, 0.0]]),
    ];
    // Valid values 1, 3, 5, 7: mean 4, unbiased variance 20/3.
    let s = 1.0 / (20.0f64 / 3.0 + 1e-8).sqrt();
    let out = eval_columns(&c.program, &params, &cols).unwrap();
    let g = output(&c, &out, "d/logprobs");
    let want = Column::Tokens(vec![vec![-3.0 * s, -s], vec![s, 3.0 * s, 0.0]]);
    assert_columns_close("whiten over the batch", &want, g, 1e-12, 1e-12);
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
fn ppo_gradients_match_finite_differences() {
    for (name, _) in token_objectives() {
        let c = compiled(&name);
        let defaults = c.objective.default_params();
        // Every parameter moved inside its range too: the gradient must hold for any --set.
        let moved: Vec<f64> = c
            .objective
            .params
            .iter()
            .map(|p| {
                let m = if p.default == 0.0 {
                    0.05
                } else {
                    p.default * 0.7
                };
                match &p.range {
                    Some(r) if !r.contains(m) => p.default,
                    _ => m,
                }
            })
            .collect();
        for (params, seed) in [(defaults, 7), (moved, 11)] {
            let cols = random_rollouts(&c, ROWS, MAX_LEN, seed);
            let report = check_fd_tokens(&c, &params, &cols);
            let total = report.checked + report.kinks;
            assert!(total >= ROWS * 2, "{name}: only {total} gradient entries");
            assert!(
                report.kinks * 20 <= total,
                "{name}: {} of {total} stencils straddle a kink",
                report.kinks
            );
            assert!(
                report.failures.is_empty(),
                "{name} at {params:?}: {:#?}",
                &report.failures[..report.failures.len().min(5)]
            );
        }
    }
}

#[test]
fn ppo_clips_as_written() {
    // Some rows clip, some do not: the random rollouts reach past the clip ranges, and the
    // clip fractions are fractions.
    let c = compiled("ppo");
    let params = c.objective.default_params();
    let cols = random_rollouts(&c, ROWS, MAX_LEN, 5);
    let out = eval_columns(&c.program, &params, &cols).unwrap();
    for metric in ["policy/clipfrac_avg", "val/clipfrac_avg"] {
        let Column::Scalar(v) = output(&c, &out, metric) else {
            panic!("{metric} is per example");
        };
        assert!(v.iter().all(|f| (0.0..=1.0).contains(f)), "{metric}: {v:?}");
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        assert!(mean > 0.02 && mean < 0.9, "{metric}: mean {mean}");
    }
    // The gradient is zero at masked tokens.
    let mask = cols[c
        .program
        .input_names
        .iter()
        .position(|n| n == "mask")
        .unwrap()]
    .clone();
    for g in ["d/logprobs", "d/values"] {
        let grad = output(&c, &out, g);
        for r in 0..ROWS {
            for (t, m) in mask.tokens(r).iter().enumerate() {
                if *m == 0.0 {
                    assert_eq!(grad.at(r, t), 0.0, "{g} row {r} token {t}");
                }
            }
        }
    }
}

#[test]
fn token_expressions_with_broadcasting_differentiate_correctly() {
    // Scalar inputs mixed into per-token expressions: their gradients sum over the tokens.
    let srcs = [
        "loss = masked_mean(softplus(x * s) + s ^ 2 * x, m) + masked_sum(relu(x - s), m)",
        "loss = masked_sum(if x > s then x * y else tanh(y - s), m) / (1 + s ^ 2)",
        "loss = s * masked_mean(exp(stop_grad(x) - x) * y, m) + masked_sum(sigmoid(x) * last_token(m), m)",
        "loss = masked_mean(max(x * whiten(y, m), clamp(x, s - 1, s + 1)), m) - log_sigmoid(s)",
        "loss = masked_sum(gae(y, x, m, 0.9, 0.5) * x - min(y, s), m)",
    ];
    for body in srcs {
        let src = format!(
            "objective mix\ninput x from policy.token_logps(completion)\ninput y from value_head(completion)\ninput s from policy.logps(chosen)\ninput m from completion.mask\n{body}\n"
        );
        let c = compile(&src);
        let cols = random_rollouts(&c, 24, 7, 3);
        let report = check_fd_tokens(&c, &[], &cols);
        assert!(report.checked > 48, "{body}: {report:?}");
        assert!(
            report.failures.is_empty(),
            "{body}: {:#?}",
            &report.failures[..report.failures.len().min(5)]
        );
        // burn agrees with the interpreter, and its autodiff with the symbolic gradient.
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
    let diff: Vec<(usize, usize)> = c
        .program
        .outputs
        .iter()
        .enumerate()
        .filter_map(|(k, o)| match o.kind {
            OutputKind::Grad(i) => Some((k, i as usize)),
            _ => None,
        })
        .collect();
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
fn ppo_on_burn_matches_interpreter_and_symbolic_gradient() {
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
fn token_values_are_typed() {
    let head = "objective t\nparam gamma = 1\ninput x from policy.token_logps(completion)\ninput s from score(completion)\ninput m from completion.mask\n";
    let kinds = |body: &str| -> Vec<ErrorKind> {
        match poc_compiler::check_source(&format!("{head}{body}\n")) {
            Ok(_) => vec![],
            Err(d) => d.iter().map(|d| d.kind).collect(),
        }
    };
    // Broadcasting per-example values over tokens, and reducing back, is fine.
    assert_eq!(kinds("loss = masked_mean(s * x + gamma, m) + s"), vec![]);
    assert_eq!(
        kinds("let b = x > s\nloss = masked_sum(if b then x else s, m)"),
        vec![]
    );
    // A per-token loss, metric, γ or λ is an error; so is a per-example mask.
    assert_eq!(kinds("loss = x * s"), vec![ErrorKind::TokenAsNumber]);
    assert_eq!(
        kinds("loss = masked_sum(x, m)\nmetric ratio = exp(x)"),
        vec![ErrorKind::TokenAsNumber]
    );
    assert_eq!(
        kinds("loss = masked_sum(x * gae(x, x, m, x, 0.9), m)"),
        vec![ErrorKind::TokenAsNumber]
    );
    assert_eq!(
        kinds("loss = masked_sum(x, s)"),
        vec![ErrorKind::NumberAsToken]
    );
    assert_eq!(
        kinds("loss = masked_sum(x, whiten(x, 1))"),
        vec![ErrorKind::NumberAsToken]
    );
    // Booleans stay booleans per token too.
    assert_eq!(
        kinds("loss = masked_sum(x > 0, m)"),
        vec![ErrorKind::BoolAsNumber]
    );
    // The types print as num[T] / bool[T].
    let obj =
        poc_compiler::check_source(&format!("{head}let b = x > s\nloss = masked_sum(x, m)\n"))
            .unwrap();
    let typed = poc_compiler::print::typed(&obj);
    assert!(
        typed.contains("input #0 x: num[T] from policy.token_logps(completion) (differentiable)"),
        "{typed}"
    );
    assert!(
        typed.contains("input #1 s: num from score(completion) (constant)"),
        "{typed}"
    );
    assert!(typed.contains("let b: bool[T] = x > s"), "{typed}");
}

#[test]
fn the_jit_refuses_token_level_programs_with_a_clear_message() {
    let c = compiled("ppo");
    let err = match poc_compiler::jit::Kernel::compile(&c.program) {
        Ok(_) => panic!("the JIT compiled a token-level program"),
        Err(e) => e,
    };
    assert!(
        matches!(err, poc_compiler::jit::JitError::Unsupported(_)),
        "{err}"
    );
    assert!(err.to_string().contains("--backend interp|burn"), "{err}");
}

#[test]
fn bad_token_columns_are_errors_not_panics() {
    let c = compiled("ppo");
    let params = c.objective.default_params();
    let mut cols = random_rollouts(&c, 3, 4, 1);
    // Row 2's mask one token short.
    if let Column::Tokens(rows) = &mut cols[6] {
        rows[1].push(1.0);
    }
    let err = eval_columns(&c.program, &params, &cols)
        .unwrap_err()
        .to_string();
    assert!(err.contains("row 2") && err.contains("one length"), "{err}");
    // A per-example column where a per-token one belongs.
    cols[0] = Column::Scalar(vec![0.0; 3]);
    let err = eval_columns(&c.program, &params, &cols)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`logprobs` is per token"), "{err}");
    // The per-example path of the runtime refuses token-level programs.
    let dev = DeviceSpec::Cpu.device();
    assert!(poc_runtime::lower::run_program(&c.program, &params, &[], &dev, DType::F64).is_err());
}
