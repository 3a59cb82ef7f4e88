//! The f64 interpreter: the reference semantics every other backend is tested against.
//!
//! Per-example programs run row by row ([`eval_row`], [`eval_batch`]). Token-level programs
//! run instruction by instruction over the whole batch ([`eval_columns`]): each register holds
//! a column, a number or a token sequence per example, and `whiten` reads the whole batch.

use crate::ops::{self, Op, Shape};
use crate::program::Program;

/// Evaluates a per-example `program` on one example. `inputs[i]` is input i's value; returns
/// every register. (A per-token input reads as NaN here, and so does an op across the batch:
/// programs that are not [`Program::per_row`] run through [`eval_columns`].)
pub fn eval_row(program: &Program, params: &[f64], inputs: &[f64], regs: &mut Vec<f64>) {
    regs.clear();
    let mut operands: [f64; 3] = [0.0; 3];
    for ins in &program.instrs {
        let v = match ins.op {
            Op::Input(k) => inputs[k as usize],
            Op::Param(k) => params[k as usize],
            Op::TokenInput(_) => f64::NAN,
            op => {
                for (slot, a) in operands.iter_mut().zip(&ins.args) {
                    *slot = regs[*a as usize];
                }
                op.eval(&operands[..ins.args.len().min(3)])
            }
        };
        regs.push(v);
    }
}

/// Evaluates a per-example `program` on a batch in struct-of-arrays form: `columns[i][row]` is
/// input i. Returns `outputs[k][row]` for each program output k. A batch-level program (`sort`)
/// runs over the whole batch ([`eval_columns`]); the others row by row.
pub fn eval_batch(program: &Program, params: &[f64], columns: &[Vec<f64>]) -> Vec<Vec<f64>> {
    if program.is_batch_level() {
        let cols: Vec<Column> = columns.iter().cloned().map(Column::Scalar).collect();
        if let Ok(out) = eval_columns(program, params, &cols) {
            return out
                .into_iter()
                .map(|c| match c {
                    Column::Scalar(v) => v,
                    Column::Tokens(_) => Vec::new(),
                })
                .collect();
        }
    }
    let n = columns.first().map(|c| c.len()).unwrap_or(0);
    let mut out = vec![Vec::with_capacity(n); program.outputs.len()];
    let mut regs = Vec::with_capacity(program.instrs.len());
    let mut row = vec![0.0; columns.len()];
    for r in 0..n {
        for (slot, col) in row.iter_mut().zip(columns) {
            *slot = col[r];
        }
        eval_row(program, params, &row, &mut regs);
        for (k, o) in program.outputs.iter().enumerate() {
            out[k].push(regs[o.reg as usize]);
        }
    }
    out
}

/// A column of a batch: one value per example, or one token sequence per example.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// One value per example (`num`; `bool` as 0/1).
    Scalar(Vec<f64>),
    /// One sequence per example (`num[T]`; `bool[T]` as 0/1). Within an example every
    /// sequence has the same length; lengths differ between examples.
    Tokens(Vec<Vec<f64>>),
}

impl Column {
    /// Number of examples.
    pub fn len(&self) -> usize {
        match self {
            Column::Scalar(v) => v.len(),
            Column::Tokens(v) => v.len(),
        }
    }

    /// Whether the column has no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of example `r` at token `t` (a scalar is the same at every token).
    pub fn at(&self, r: usize, t: usize) -> f64 {
        match self {
            Column::Scalar(v) => v[r],
            Column::Tokens(v) => v[r].get(t).copied().unwrap_or(f64::NAN),
        }
    }

    /// Example `r`'s sequence (empty for a scalar column).
    pub fn tokens(&self, r: usize) -> &[f64] {
        match self {
            Column::Scalar(_) => &[],
            Column::Tokens(v) => &v[r],
        }
    }

    /// Only example `r`, as a one-example column.
    pub fn row(&self, r: usize) -> Column {
        match self {
            Column::Scalar(v) => Column::Scalar(vec![v[r]]),
            Column::Tokens(v) => Column::Tokens(vec![v[r].clone()]),
        }
    }
}

/// Inputs that do not fit the program.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// Wrong number, kind or length of columns; the message names the input and the row.
    #[error("{0}")]
    Shape(String),
}

/// Evaluates any program (per-example or token-level) on a batch: `columns[i]` is input i, a
/// [`Column::Tokens`] for `num[T]` inputs. Returns one column per program output. `whiten`
/// takes its statistics over this batch.
pub fn eval_columns(
    program: &Program,
    params: &[f64],
    columns: &[Column],
) -> Result<Vec<Column>, EvalError> {
    let regs = eval_registers(program, params, columns, None)?;
    Ok(program
        .outputs
        .iter()
        .map(|o| regs[o.reg as usize].clone())
        .collect())
}

/// Every register of `program` on a batch. With `frozen` (the registers of an earlier
/// evaluation), each op that passes no gradient (`stop_grad`, `gae`, `whiten`, `last_token`,
/// `sign`) takes its value from there instead: the function whose derivative the symbolic
/// gradient is, for checking it by finite differences.
pub fn eval_registers(
    program: &Program,
    params: &[f64],
    columns: &[Column],
    frozen: Option<&[Column]>,
) -> Result<Vec<Column>, EvalError> {
    let lens = row_lengths(program, params, columns)?;
    if frozen.is_some_and(|f| f.len() != program.instrs.len()) {
        return Err(EvalError::Shape(
            "frozen registers do not match the program".into(),
        ));
    }
    let n = lens.len();
    let mut regs: Vec<Column> = Vec::with_capacity(program.instrs.len());
    for (i, ins) in program.instrs.iter().enumerate() {
        if let Some(f) = frozen.filter(|_| ins.op.blocks_gradient()) {
            regs.push(f[i].clone());
            continue;
        }
        let arg = |k: usize| &regs[ins.args[k] as usize];
        let v = match ins.op {
            Op::Input(k) | Op::TokenInput(k) => columns[k as usize].clone(),
            Op::Param(k) => Column::Scalar(vec![params[k as usize]; n]),
            Op::Sum => Column::Scalar(
                (0..n)
                    .map(|r| arg(0).tokens(r).iter().sum::<f64>())
                    .collect(),
            ),
            Op::MaskedSum => Column::Scalar(
                (0..n)
                    .map(|r| ops::masked_sum(|t| arg(0).at(r, t), arg(1).tokens(r)))
                    .collect(),
            ),
            Op::LastToken => {
                Column::Tokens((0..n).map(|r| ops::last_token(arg(0).tokens(r))).collect())
            }
            Op::Gae => Column::Tokens(
                (0..n)
                    .map(|r| {
                        ops::gae(
                            |t| arg(0).at(r, t),
                            |t| arg(1).at(r, t),
                            arg(2).tokens(r),
                            arg(3).at(r, 0),
                            arg(4).at(r, 0),
                        )
                    })
                    .collect(),
            ),
            Op::Whiten => {
                let (x, m) = (arg(0), arg(1));
                let pairs = (0..n).flat_map(|r| (0..lens[r]).map(move |t| (r, t)));
                let (mean, scale) = ops::whiten_stats(pairs.map(|(r, t)| (x.at(r, t), m.at(r, t))));
                Column::Tokens(
                    (0..n)
                        .map(|r| {
                            (0..lens[r])
                                .map(|t| {
                                    if m.at(r, t) != 0.0 {
                                        (x.at(r, t) - mean) * scale
                                    } else {
                                        0.0
                                    }
                                })
                                .collect()
                        })
                        .collect(),
                )
            }
            Op::SortBy | Op::Unsort => {
                let (v, k) = (arg(0), arg(1));
                let v: Vec<f64> = (0..n).map(|r| v.at(r, 0)).collect();
                let k: Vec<f64> = (0..n).map(|r| k.at(r, 0)).collect();
                Column::Scalar(if ins.op == Op::SortBy {
                    ops::sort_by(&v, &k)
                } else {
                    ops::unsort(&v, &k)
                })
            }
            op => {
                debug_assert_eq!(op.shape(), Shape::Elementwise);
                let mut operands = vec![0.0; ins.args.len()];
                let mut value = |r: usize, t: usize| {
                    for (k, slot) in operands.iter_mut().enumerate() {
                        *slot = arg(k).at(r, t);
                    }
                    op.eval(&operands)
                };
                if ins.ty.is_token() {
                    Column::Tokens(
                        (0..n)
                            .map(|r| (0..lens[r]).map(|t| value(r, t)).collect())
                            .collect(),
                    )
                } else {
                    Column::Scalar((0..n).map(|r| value(r, 0)).collect())
                }
            }
        };
        regs.push(v);
    }
    Ok(regs)
}

/// Checks `columns` against the program's inputs and returns each example's token count (0
/// when the program reads no per-token input).
fn row_lengths(
    program: &Program,
    params: &[f64],
    columns: &[Column],
) -> Result<Vec<usize>, EvalError> {
    let shape = |m: String| Err(EvalError::Shape(m));
    if columns.len() != program.input_names.len() || params.len() != program.param_names.len() {
        return shape(format!(
            "the program takes {} inputs and {} parameters, got {} and {}",
            program.input_names.len(),
            program.param_names.len(),
            columns.len(),
            params.len()
        ));
    }
    let n = columns.first().map(|c| c.len()).unwrap_or(0);
    let mut lens: Vec<Option<(usize, &str)>> = vec![None; n];
    for ((col, name), ty) in columns
        .iter()
        .zip(&program.input_names)
        .zip(&program.input_tys)
    {
        if col.len() != n {
            return shape(format!(
                "input `{name}` has {} rows, the first input {n}",
                col.len()
            ));
        }
        match (col, ty.is_token()) {
            (Column::Scalar(_), false) => {}
            (Column::Tokens(rows), true) => {
                for (r, seq) in rows.iter().enumerate() {
                    match lens[r] {
                        None => lens[r] = Some((seq.len(), name)),
                        Some((len, other)) if len != seq.len() => {
                            return shape(format!(
                                "row {}: `{name}` has {} tokens but `{other}` has {len}; the per-token inputs of a row must have one length",
                                r + 1,
                                seq.len()
                            ));
                        }
                        Some(_) => {}
                    }
                }
            }
            (_, true) => return shape(format!("input `{name}` is per token ({ty})")),
            (_, false) => return shape(format!("input `{name}` is a number per example")),
        }
    }
    Ok(lens.into_iter().map(|l| l.map_or(0, |l| l.0)).collect())
}
