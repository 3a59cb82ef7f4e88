//! `poc eval`: rows of inputs in, loss/gradient/metrics per row out, on any lowering.
//! Per-token inputs (`num[T]`) are JSON arrays, of one length within a row; their gradients
//! come back as arrays. Built-in inputs (`token.position`) are computed, not read, and columns
//! no input reads are ignored.

use crate::edge::{Failure, backend_failure};
use clap::ValueEnum;
use poc_compiler::interp::Column;
use poc_compiler::{Compiled, Input, OutputKind};
use poc_runtime::backend::{Backend, Precision, evaluate_columns};
use serde_json::{Map, Value};
use std::path::Path;

/// Which lowering evaluates.
#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum BackendArg {
    /// The f64 reference interpreter.
    Interp,
    /// The Cranelift JIT kernel.
    Jit,
    /// burn tensors (libtorch).
    Burn,
}

impl From<BackendArg> for Backend {
    fn from(b: BackendArg) -> Self {
        match b {
            BackendArg::Interp => Backend::Interp,
            BackendArg::Jit => Backend::Jit,
            BackendArg::Burn => Backend::Burn,
        }
    }
}

/// Float type for the burn backend.
#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum PrecisionArg {
    /// 64-bit.
    F64,
    /// 32-bit.
    F32,
    /// bfloat16.
    Bf16,
}

impl From<PrecisionArg> for Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::F64 => Precision::F64,
            PrecisionArg::F32 => Precision::F32,
            PrecisionArg::Bf16 => Precision::Bf16,
        }
    }
}

/// Reads rows (JSON lines, a `.json` array, `.parquet`, or a directory's or Hub dataset's
/// `train` split) into one column per input: a number for a `num` input, an array of numbers
/// for a `num[T]` input (every array of a row of one length, at least one token). A built-in
/// input (`token.position`) is not read but computed from that length, and columns that no input
/// reads are ignored, so one file can serve several objectives. Every problem names its line (or
/// a Parquet row's index).
pub fn read_columns(path: &Path, inputs: &[Input]) -> Result<Vec<Column>, Failure> {
    let read: Vec<&Input> = inputs.iter().filter(|i| !i.source.is_builtin()).collect();
    if let Some(b) = inputs.iter().find(|i| i.source.is_builtin())
        && !read.iter().any(|i| i.source.ty().is_token())
    {
        return Err(Failure::User(format!(
            "poc: `{}` ({}) is computed from the length of a row's per-token inputs, but this objective reads none",
            b.name,
            b.source.text()
        )));
    }
    let rows = poc_runtime::data::rows::read(path, "train")
        .map_err(|e| Failure::User(format!("poc: {e}")))?;
    let mut columns: Vec<Column> = inputs
        .iter()
        .map(|i| {
            if i.source.ty().is_token() {
                Column::Tokens(Vec::new())
            } else {
                Column::Scalar(Vec::new())
            }
        })
        .collect();
    let mut errors = Vec::new();
    for row in &rows.rows {
        let at = rows.at(row.place);
        let obj = match &row.value {
            Ok(Value::Object(o)) => o,
            Ok(_) => {
                errors.push(format!("{at}: expected a JSON object"));
                continue;
            }
            Err(e) => {
                errors.push(format!("{at}: {e}"));
                continue;
            }
        };
        match read_row(obj, inputs) {
            Ok(values) => {
                for (c, x) in columns.iter_mut().zip(values) {
                    match (c, x) {
                        (Column::Scalar(c), Ok(x)) => c.push(x),
                        (Column::Tokens(c), Err(seq)) => c.push(seq),
                        _ => {
                            return Err(Failure::Internal(
                                "poc eval: a row's value does not match its column".into(),
                            ));
                        }
                    }
                }
            }
            Err(problems) => errors.extend(problems.into_iter().map(|p| format!("{at}: {p}"))),
        }
    }
    if !errors.is_empty() {
        let shown = errors.len().min(20);
        let mut msg = errors[..shown].join("\n");
        if errors.len() > shown {
            msg.push_str(&format!("\n... and {} more", errors.len() - shown));
        }
        let wanted: Vec<String> = read
            .iter()
            .map(|i| {
                if i.source.ty().is_token() {
                    format!("{} (array)", i.name)
                } else {
                    i.name.clone()
                }
            })
            .collect();
        msg.push_str(&format!(
            "\n  = hint: each row needs the inputs: {} (other columns are ignored)\n",
            wanted.join(", ")
        ));
        return Err(Failure::User(msg));
    }
    Ok(columns)
}

/// One row's value of each input (`Ok` a number, `Err` a sequence), or every problem of the row.
fn read_row(
    obj: &Map<String, Value>,
    inputs: &[Input],
) -> Result<Vec<Result<f64, Vec<f64>>>, Vec<String>> {
    let mut problems = Vec::new();
    let mut values: Vec<Option<Result<f64, Vec<f64>>>> = Vec::with_capacity(inputs.len());
    let mut length: Option<(usize, &str)> = None;
    for inp in inputs {
        let name = inp.name.as_str();
        if inp.source.is_builtin() {
            values.push(None);
            continue;
        }
        let Some(v) = obj.get(name) else {
            // A column no input reads, spelled like this one, is likely meant for it.
            let unread = obj.keys().filter(|k| !inputs.iter().any(|i| &i.name == *k));
            let hint = poc_grammar::diag::suggest(name, unread.map(|k| k.as_str()))
                .map(|k| format!(" (the row has `{k}`)"))
                .unwrap_or_default();
            problems.push(format!("missing input `{name}`{hint}"));
            values.push(None);
            continue;
        };
        if !inp.source.ty().is_token() {
            match v.as_f64() {
                Some(x) => values.push(Some(Ok(x))),
                None => {
                    let hint = if v.is_array() {
                        " (it is a number per example, not per token)"
                    } else {
                        ""
                    };
                    problems.push(format!("`{name}` must be a number, found {v}{hint}"));
                    values.push(None);
                }
            }
            continue;
        }
        let seq: Option<Vec<f64>> = v
            .as_array()
            .and_then(|a| a.iter().map(Value::as_f64).collect());
        match seq {
            None => problems.push(format!(
                "`{name}` is per token: it must be an array of numbers, found {v}"
            )),
            Some(seq) if seq.is_empty() => problems.push(format!(
                "`{name}` has no tokens; a completion has at least one"
            )),
            Some(seq) => match length {
                Some((len, other)) if len != seq.len() => problems.push(format!(
                    "`{name}` has {} tokens but `{other}` has {len}; the per-token inputs of a row must have one length",
                    seq.len()
                )),
                _ => {
                    length.get_or_insert((seq.len(), name));
                    values.push(Some(Err(seq)));
                    continue;
                }
            },
        }
        values.push(None);
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    // The built-in inputs, from the length of the row's per-token inputs.
    let len = length.map_or(0, |(len, _)| len);
    inputs
        .iter()
        .zip(values)
        .map(|(inp, v)| {
            v.or_else(|| inp.source.builtin_tokens(len).map(Err))
                .ok_or_else(|| vec![format!("`{}` has no value", inp.name)])
        })
        .collect()
}

/// The `poc eval` command.
// Rows index every output column at once; an index loop is the clear form.
#[allow(clippy::needless_range_loop)]
pub fn run(
    c: &Compiled,
    inputs: &Path,
    sets: &[String],
    backend: Backend,
    precision: Precision,
    device: &str,
) -> Result<(), Failure> {
    let params = c
        .objective
        .params_with(sets)
        .map_err(|d| Failure::User(poc_grammar::diag::render_all(&d, "poc", "")))?;
    let columns = read_columns(inputs, &c.objective.inputs)?;
    // The JIT runs the native form: parameters bound, sigmoid family sharing exponentials.
    let native;
    let program = if backend == Backend::Jit {
        native = c.native_program(Some(&params), true);
        &native
    } else {
        &c.program
    };
    let out = evaluate_columns(program, &params, &columns, backend, precision, device)
        .map_err(backend_failure)?;
    let n = columns.first().map(|c| c.len()).unwrap_or(0);
    let mut bad_rows = Vec::new();
    let mut stdout = String::new();
    for r in 0..n {
        let mut grad = Map::new();
        let mut metrics = Map::new();
        let mut loss = Value::Null;
        for (k, o) in c.program.outputs.iter().enumerate() {
            let v = match &out[k] {
                Column::Scalar(v) => json_number(v[r]),
                Column::Tokens(v) => Value::Array(v[r].iter().map(|x| json_number(*x)).collect()),
            };
            match o.kind {
                OutputKind::Loss => {
                    if !v.as_f64().is_some_and(f64::is_finite) {
                        bad_rows.push(r + 1);
                    }
                    loss = v;
                }
                OutputKind::Grad(i) => {
                    grad.insert(c.objective.inputs[i as usize].name.clone(), v);
                }
                OutputKind::Metric(_) => {
                    metrics.insert(o.name.clone(), v);
                }
            }
        }
        let mut row = Map::new();
        row.insert("loss".into(), loss);
        row.insert("grad".into(), Value::Object(grad));
        row.insert("metrics".into(), Value::Object(metrics));
        stdout.push_str(&Value::Object(row).to_string());
        stdout.push('\n');
    }
    print!("{stdout}");
    if !bad_rows.is_empty() {
        let list: Vec<String> = bad_rows.iter().take(10).map(|r| r.to_string()).collect();
        return Err(Failure::User(format!(
            "poc: the loss is NaN or infinite on {} row(s) of {} (rows {}{})",
            bad_rows.len(),
            inputs.display(),
            list.join(", "),
            if bad_rows.len() > 10 { ", ..." } else { "" }
        )));
    }
    Ok(())
}

/// Non-finite values become strings ("NaN", "inf", "-inf"), since JSON has no such numbers.
fn json_number(x: f64) -> Value {
    serde_json::Number::from_f64(x)
        .map(Value::Number)
        .unwrap_or_else(|| {
            Value::String(if x.is_nan() {
                "NaN".into()
            } else if x > 0.0 {
                "inf".into()
            } else {
                "-inf".into()
            })
        })
}
