//! Shared test helpers: the shipped objectives, random input rows with realistic ranges (and
//! random rollouts for token-level objectives), and the finite-difference checkers.
#![allow(dead_code)]

use poc_compiler::interp::Column;
use poc_compiler::{Compiled, OutputKind, Rollout, Side, Source};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::PathBuf;

/// The shipped objectives' directory, `objectives/` at the workspace root.
pub fn objectives_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../objectives")
}

/// Every `objectives/*.po`, as (name, source), sorted by name.
pub fn objectives() -> Vec<(String, String)> {
    let dir = objectives_dir();
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("objectives/ exists")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "po"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

/// The shipped objectives whose values are all per example and independent of the other
/// examples (what the JIT and the per-row checks take); the token-level ones (ppo, wpo,
/// ld_dpo) are checked in token_level.rs, the batch-level ones (aot) by [`check_fd_batch`].
pub fn scalar_objectives() -> Vec<(String, String)> {
    objectives()
        .into_iter()
        .filter(|(name, _)| compiled(name).program.per_row())
        .collect()
}

/// The shipped objectives with ops across the batch (`sort`): per-example values, but an
/// example's loss depends on the others.
pub fn batch_objectives() -> Vec<(String, String)> {
    objectives()
        .into_iter()
        .filter(|(name, _)| compiled(name).program.is_batch_level())
        .collect()
}

/// [`random_columns`] as interpreter columns.
pub fn scalar_columns(cols: &[Vec<f64>]) -> Vec<Column> {
    cols.iter().cloned().map(Column::Scalar).collect()
}

/// Compares every symbolic gradient of a batch-level objective with central differences of the
/// batch's total loss (the gradient of example j is ∂(Σ_i loss_i)/∂x_j), `stop_grad` frozen.
pub fn check_fd_batch(c: &Compiled, params: &[f64], cols: &[Vec<f64>]) -> FdReport {
    use poc_compiler::interp::{eval_columns, eval_registers};
    let columns = scalar_columns(cols);
    let out = eval_columns(&c.program, params, &columns).unwrap();
    let frozen = eval_registers(&c.loss_program, params, &columns, None).unwrap();
    let total = |cols: &[Column]| -> f64 {
        let regs = eval_registers(&c.loss_program, params, cols, Some(&frozen)).unwrap();
        match &regs[c.loss_program.loss_reg().unwrap() as usize] {
            Column::Scalar(v) => v.iter().sum(),
            Column::Tokens(_) => f64::NAN,
        }
    };
    let n = cols[0].len();
    let mut report = FdReport::default();
    for (k, i) in grad_outputs(&c.program) {
        for r in 0..n {
            let g = out[k].at(r, 0);
            let x = cols[i][r];
            let f = |v: f64| {
                let mut cc = columns.clone();
                if let Column::Scalar(s) = &mut cc[i] {
                    s[r] = v;
                }
                total(&cc)
            };
            if let Some(central) = fd_mismatch(&mut report, g, x, f) {
                report.failures.push(format!(
                    "row {r}, d/{}: symbolic {g:e}, finite difference {central:e}",
                    c.program.input_names[i]
                ));
            }
        }
    }
    report
}

/// The shipped token-level objectives.
pub fn token_objectives() -> Vec<(String, String)> {
    objectives()
        .into_iter()
        .filter(|(name, _)| compiled(name).program.is_token_level())
        .collect()
}

/// Compiles a shipped objective by name.
pub fn compiled(name: &str) -> Compiled {
    let path = objectives_dir().join(format!("{name}.po"));
    let src = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    poc_compiler::compile(&src).unwrap_or_else(|e| panic!("{name} does not compile: {e:?}"))
}

/// `n` random rows for the inputs of `c`, as columns, with the ranges real data has.
pub fn random_columns(c: &Compiled, n: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let names = &c.program.input_names;
    let mut cols: Vec<Vec<f64>> = vec![Vec::with_capacity(n); names.len()];
    for _ in 0..n {
        let ref_c: f64 = rng.random_range(-80.0..-5.0);
        let ref_r: f64 = rng.random_range(-80.0..-5.0);
        let len_c = rng.random_range(3..60) as f64;
        let len_r = rng.random_range(3..60) as f64;
        for (k, name) in names.iter().enumerate() {
            let v = match name.as_str() {
                "ref_chosen_logps" => ref_c,
                "ref_rejected_logps" => ref_r,
                "policy_chosen_logps" => (ref_c + rng.random_range(-4.0..4.0)).min(-0.5),
                "policy_rejected_logps" => (ref_r + rng.random_range(-4.0..4.0)).min(-0.5),
                "chosen_len" => len_c,
                "rejected_len" => len_r,
                "ref_chosen_entropy" | "ref_rejected_entropy" => rng.random_range(0.2..5.0),
                "vocab_size" => [512.0, 32000.0, 128256.0][rng.random_range(0..3)],
                "score_chosen" | "score_rejected" => rng.random_range(1.0..10.0),
                _ => rng.random_range(-3.0..3.0),
            };
            cols[k].push(v);
        }
    }
    cols
}

/// The loss at one row, by the interpreter.
pub fn loss_at(c: &Compiled, params: &[f64], row: &[f64]) -> f64 {
    let mut regs = Vec::new();
    poc_compiler::interp::eval_row(&c.loss_program, params, row, &mut regs);
    regs[c.loss_program.loss_reg().unwrap() as usize]
}

/// The loss at `row` with every `stop_grad(e)` frozen at its value in `frozen` (the registers
/// of an evaluation at the unperturbed row): the function whose derivative the symbolic
/// gradient is.
pub fn loss_frozen(c: &Compiled, params: &[f64], row: &[f64], frozen: &[f64]) -> f64 {
    use poc_compiler::ops::Op;
    let p = &c.loss_program;
    let mut regs: Vec<f64> = Vec::with_capacity(p.instrs.len());
    for (i, ins) in p.instrs.iter().enumerate() {
        let v = match ins.op {
            Op::Input(k) => row[k as usize],
            Op::Param(k) => params[k as usize],
            Op::StopGrad => frozen[i],
            op => {
                let a: Vec<f64> = ins.args.iter().map(|r| regs[*r as usize]).collect();
                op.eval(&a)
            }
        };
        regs.push(v);
    }
    regs[p.loss_reg().unwrap() as usize]
}

/// Outcome of a finite-difference sweep.
#[derive(Debug, Default)]
pub struct FdReport {
    /// Gradient entries compared.
    pub checked: usize,
    /// Entries skipped because the stencil straddles a kink (one-sided slopes disagree).
    pub kinks: usize,
    /// Mismatches, described.
    pub failures: Vec<String>,
}

/// One coordinate of a sweep: the symbolic derivative `g` at `x` against the central
/// difference of `f` there. Counted in `report` as a kink (the one-sided slopes disagree, so
/// the stencil straddles one: skipped, also when the kink is small and `g` is one of the two
/// slopes) or as checked; returns the central difference when `g` is not finite or misses it.
fn fd_mismatch(report: &mut FdReport, g: f64, x: f64, f: impl Fn(f64) -> f64) -> Option<f64> {
    let h = 1e-5 * x.abs().max(1.0);
    let (fp, f0, fm) = (f(x + h), f(x), f(x - h));
    let central = (fp - fm) / (2.0 * h);
    let (right, left) = ((fp - f0) / h, (f0 - fm) / h);
    let scale = 1.0 + g.abs().max(central.abs());
    let tol = 1e-5 * scale + 1e-7 * (f0.abs() / h).min(1e3);
    if (right - left).abs() > 1e-3 * scale + 10.0 * tol {
        report.kinks += 1;
        return None;
    }
    // A small kink (a tie of `min`, `max` or `abs`, e.g. `min(x, stop_grad(x))`, scaled down by
    // later ops): the central difference averages the two slopes, the symbolic derivative is
    // one of them.
    let on_a_side = (g - right).abs() <= 10.0 * tol || (g - left).abs() <= 10.0 * tol;
    if (right - left).abs() > 10.0 * tol && on_a_side {
        report.kinks += 1;
        return None;
    }
    report.checked += 1;
    (!g.is_finite() || (g - central).abs() > tol).then_some(central)
}

/// Compares every symbolic gradient with central differences on every row.
pub fn check_fd(c: &Compiled, params: &[f64], cols: &[Vec<f64>]) -> FdReport {
    let out = poc_compiler::interp::eval_batch(&c.program, params, cols);
    let n = cols[0].len();
    let mut report = FdReport::default();
    for r in 0..n {
        let row: Vec<f64> = cols.iter().map(|c| c[r]).collect();
        for (k, o) in c.program.outputs.iter().enumerate() {
            let OutputKind::Grad(i) = o.kind else {
                continue;
            };
            let i = i as usize;
            let g = out[k][r];
            let x = row[i];
            let mut frozen = Vec::new();
            poc_compiler::interp::eval_row(&c.loss_program, params, &row, &mut frozen);
            let f = |v: f64| {
                let mut rr = row.clone();
                rr[i] = v;
                loss_frozen(c, params, &rr, &frozen)
            };
            if let Some(central) = fd_mismatch(&mut report, g, x, f) {
                report.failures.push(format!(
                    "row {r}, d/{}: symbolic {g:e}, finite difference {central:e} (inputs {row:?})",
                    c.program.input_names[i]
                ));
            }
        }
    }
    report
}

/// Relative closeness.
pub fn close(a: f64, b: f64, rel: f64, abs: f64) -> bool {
    (a - b).abs() <= abs + rel * a.abs().max(b.abs()) || (a.is_nan() && b.is_nan())
}

/// `n` random rollouts for a token-level objective: 1 to `max_len` tokens per row, the mask 1
/// on a prefix of at least one token and 0 after it (padding inside the row), sometimes with a
/// hole; log-probs, values and scores in realistic ranges, with ratios and value moves that
/// reach past PPO's clip ranges. Inputs of other sources get values in (-3, 3).
pub fn random_rollouts(c: &Compiled, n: usize, max_len: usize, seed: u64) -> Vec<Column> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let inputs = &c.objective.inputs;
    let mut cols: Vec<Column> = inputs
        .iter()
        .map(|i| {
            if i.source.ty().is_token() {
                Column::Tokens(Vec::new())
            } else {
                Column::Scalar(Vec::new())
            }
        })
        .collect();
    for _ in 0..n {
        let len = rng.random_range(1..=max_len);
        let valid = rng.random_range(1..=len);
        let mut mask: Vec<f64> = (0..len)
            .map(|t| if t < valid { 1.0 } else { 0.0 })
            .collect();
        if valid >= 3 && rng.random_bool(0.2) {
            mask[rng.random_range(1..valid - 1)] = 0.0;
        }
        let old: Vec<f64> = (0..len).map(|_| rng.random_range(-4.0..-0.05)).collect();
        let old_values: Vec<f64> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
        // A pair's two answers on one token axis: each side's mask is 1 on its own prefix.
        let side_len = |rng: &mut rand_chacha::ChaCha8Rng| rng.random_range(1..=len);
        let (chosen_len, rejected_len) = (side_len(&mut rng), side_len(&mut rng));
        let prefix =
            |n: usize| -> Vec<f64> { (0..len).map(|t| if t < n { 1.0 } else { 0.0 }).collect() };
        for (col, inp) in cols.iter_mut().zip(inputs) {
            let seq: Vec<f64> = match inp.source {
                Source::Rollout(Rollout::Mask) => mask.clone(),
                Source::Rollout(Rollout::OldPolicyTokenLogps) => old.clone(),
                Source::Rollout(Rollout::PolicyTokenLogps) => old
                    .iter()
                    .map(|o| o + rng.random_range(-0.4..0.4))
                    .collect(),
                Source::Rollout(Rollout::ReferenceTokenLogps) => old
                    .iter()
                    .map(|o| o + rng.random_range(-0.5..0.5))
                    .collect(),
                Source::Rollout(Rollout::OldValues) => old_values.clone(),
                Source::Rollout(Rollout::Values) => old_values
                    .iter()
                    .map(|v| v + rng.random_range(-0.4..0.4))
                    .collect(),
                Source::Rollout(Rollout::Score) => vec![rng.random_range(-2.0..2.0)],
                Source::TokenMask(Side::Chosen) => prefix(chosen_len),
                Source::TokenMask(Side::Rejected) => prefix(rejected_len),
                Source::TokenPosition => inp.source.builtin_tokens(len).unwrap_or_default(),
                Source::Tokens(Side::Chosen) => vec![chosen_len as f64],
                Source::Tokens(Side::Rejected) => vec![rejected_len as f64],
                Source::PolicyTokenLogps(_) | Source::ReferenceTokenLogps(_) => {
                    (0..len).map(|_| rng.random_range(-4.0..-0.05)).collect()
                }
                // log Σ p² ≤ 0, and ≥ log p_max² ≥ 2 log p of any token.
                Source::PolicyTokenCollision(_) => {
                    (0..len).map(|_| rng.random_range(-3.0..-0.01)).collect()
                }
                Source::PolicyLogps(_) | Source::ReferenceLogps(_) => {
                    vec![rng.random_range(-30.0..-1.0)]
                }
                _ if inp.source.ty().is_token() => {
                    (0..len).map(|_| rng.random_range(-3.0..3.0)).collect()
                }
                _ => vec![rng.random_range(-3.0..3.0)],
            };
            match col {
                Column::Scalar(v) => v.push(seq[0]),
                Column::Tokens(v) => v.push(seq),
            }
        }
    }
    cols
}

/// The loss of a one-row batch with the gradient-blocking ops frozen at `frozen`.
fn token_loss_frozen(c: &Compiled, params: &[f64], row: &[Column], frozen: &[Column]) -> f64 {
    let p = &c.loss_program;
    let regs = poc_compiler::interp::eval_registers(p, params, row, Some(frozen)).unwrap();
    regs[p.loss_reg().unwrap() as usize].at(0, 0)
}

/// Compares every symbolic gradient of a token-level objective (per token, and per example for
/// scalar inputs) with central differences, row by row, with `gae`, `whiten`, `last_token`
/// and `stop_grad` frozen at their values on the whole batch (they pass no gradient).
pub fn check_fd_tokens(c: &Compiled, params: &[f64], cols: &[Column]) -> FdReport {
    use poc_compiler::interp::{eval_columns, eval_registers};
    let out = eval_columns(&c.program, params, cols).unwrap();
    let frozen_all = eval_registers(&c.loss_program, params, cols, None).unwrap();
    let n = cols[0].len();
    let mut report = FdReport::default();
    for r in 0..n {
        let row: Vec<Column> = cols.iter().map(|c| c.row(r)).collect();
        let frozen: Vec<Column> = frozen_all.iter().map(|c| c.row(r)).collect();
        for (k, o) in c.program.outputs.iter().enumerate() {
            let OutputKind::Grad(i) = o.kind else {
                continue;
            };
            let i = i as usize;
            let positions = match &row[i] {
                Column::Scalar(_) => 1,
                Column::Tokens(v) => v[0].len(),
            };
            for t in 0..positions {
                let g = out[k].at(r, t);
                let x = row[i].at(0, t);
                let f = |v: f64| {
                    let mut rr = row.clone();
                    match &mut rr[i] {
                        Column::Scalar(s) => s[0] = v,
                        Column::Tokens(s) => s[0][t] = v,
                    }
                    token_loss_frozen(c, params, &rr, &frozen)
                };
                if let Some(central) = fd_mismatch(&mut report, g, x, f) {
                    report.failures.push(format!(
                        "row {r}, d/{}[{t}]: symbolic {g:e}, finite difference {central:e}",
                        c.program.input_names[i]
                    ));
                }
            }
        }
    }
    report
}

/// The output named `name` of an interpreter evaluation.
pub fn output<'a>(c: &poc_compiler::Compiled, out: &'a [Column], name: &str) -> &'a Column {
    let k = c.program.outputs.iter().position(|o| o.name == name);
    &out[k.unwrap_or_else(|| panic!("no output {name}"))]
}

/// Every value of two columns agrees.
pub fn assert_columns_close(what: &str, want: &Column, got: &Column, rel: f64, abs: f64) {
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
pub fn probe(f: &str) -> String {
    format!(
        "objective probe\nparam gamma = 0.9\nparam lam = 0.8\ninput logprobs from policy.token_logps(completion)\ninput rewards from reference.token_logps(completion)\ninput values from old_value_head(completion)\ninput mask from completion.mask\nloss = masked_sum(logprobs * ({f}), mask)\n"
    )
}

/// Losses mixing scalar inputs into per-token expressions over x = policy.token_logps, y =
/// value_head, s = policy.logps(chosen) and the mask m ([`mixed_token_source`]).
pub const MIXED_TOKEN_LOSSES: [&str; 5] = [
    "loss = masked_mean(softplus(x * s) + s ^ 2 * x, m) + masked_sum(relu(x - s), m)",
    "loss = masked_sum(if x > s then x * y else tanh(y - s), m) / (1 + s ^ 2)",
    "loss = s * masked_mean(exp(stop_grad(x) - x) * y, m) + masked_sum(sigmoid(x) * last_token(m), m)",
    "loss = masked_mean(max(x * whiten(y, m), clamp(x, s - 1, s + 1)), m) - log_sigmoid(s)",
    "loss = masked_sum(gae(y, x, m, 0.9, 0.5) * x - min(y, s), m)",
];

/// The objective of one of [`MIXED_TOKEN_LOSSES`].
pub fn mixed_token_source(body: &str) -> String {
    format!(
        "objective mix\ninput x from policy.token_logps(completion)\ninput y from value_head(completion)\ninput s from policy.logps(chosen)\ninput m from completion.mask\n{body}\n"
    )
}

/// The row of the worked example (compiler/tests/worked_example.rs), by input name.
pub fn worked_example_row() -> HashMap<&'static str, f64> {
    HashMap::from([
        ("policy_chosen_logps", -12.0),
        ("policy_rejected_logps", -15.0),
        ("ref_chosen_logps", -13.0),
        ("ref_rejected_logps", -14.0),
        ("chosen_len", 10.0),
        ("rejected_len", 12.0),
        ("score_chosen", 8.0),
        ("score_rejected", 6.0),
    ])
}

/// The gradient outputs of `program`: (output index, input index) for each `d/input`.
pub fn grad_outputs(program: &poc_compiler::Program) -> Vec<(usize, usize)> {
    program
        .outputs
        .iter()
        .enumerate()
        .filter_map(|(k, o)| match o.kind {
            OutputKind::Grad(i) => Some((k, i as usize)),
            _ => None,
        })
        .collect()
}

/// `c`'s parameters with `sets` (`name=value`) applied and its input columns holding the one
/// row `row` (by input name): a worked example, ready to evaluate.
pub fn worked_example_inputs(
    c: &Compiled,
    row: &HashMap<&str, f64>,
    sets: &[&str],
) -> (Vec<f64>, Vec<Vec<f64>>) {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let params = c.objective.params_with(&sets).unwrap();
    let cols = c
        .program
        .input_names
        .iter()
        .map(|n| vec![row[n.as_str()]])
        .collect();
    (params, cols)
}

/// The batch of the `whiten` tests (inputs of `probe("whiten(rewards, mask)")`: two rows of 2
/// and 3 tokens, the last token of the second masked out), and 1/σ of its valid rewards: the
/// valid values 1, 3, 5, 7 have mean 4 and unbiased variance 20/3.
pub fn whiten_batch() -> (Vec<Column>, f64) {
    let cols = vec![
        Column::Tokens(vec![vec![-1.0; 2], vec![-1.0; 3]]),
        Column::Tokens(vec![vec![1.0, 3.0], vec![5.0, 7.0, 0.0]]),
        Column::Tokens(vec![vec![0.0; 2], vec![0.0; 3]]),
        Column::Tokens(vec![vec![1.0, 1.0], vec![1.0, 1.0, 0.0]]),
    ];
    (cols, 1.0 / (20.0f64 / 3.0 + 1e-8).sqrt())
}
