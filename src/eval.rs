//! `poc eval`: rows of inputs in, loss/gradient/metrics per row out, on any lowering.
//! Per-token inputs (`num[T]`) are JSON arrays, of one length within a row; their gradients
//! come back as arrays.

use crate::Failure;
use clap::ValueEnum;
use poc_compiler::interp::Column;
use poc_compiler::ops::Ty;
use poc_compiler::{Compiled, OutputKind, Program};
use serde_json::{Map, Value};
use std::path::Path;

/// Which lowering evaluates.
#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum Backend {
    /// The f64 reference interpreter.
    Interp,
    /// The Cranelift JIT kernel.
    Jit,
    /// burn tensors (libtorch).
    Burn,
}

/// Float type for the burn backend.
#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum Precision {
    /// 64-bit.
    F64,
    /// 32-bit.
    F32,
    /// bfloat16.
    Bf16,
}

impl Precision {
    /// The burn dtype.
    pub fn dtype(self) -> burn::tensor::DType {
        match self {
            Precision::F64 => burn::tensor::DType::F64,
            Precision::F32 => burn::tensor::DType::F32,
            Precision::Bf16 => burn::tensor::DType::BF16,
        }
    }
}

/// Reads JSON-lines rows into one column per input: a number for a `num` input, an array of
/// numbers for a `num[T]` input (every array of a row of one length, at least one token).
/// Every problem names its line.
pub fn read_columns(
    path: &Path,
    input_names: &[String],
    input_tys: &[Ty],
) -> Result<Vec<Column>, Failure> {
    let label = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::User(format!("poc: cannot read `{label}`: {e}")))?;
    let mut columns: Vec<Column> = input_tys
        .iter()
        .map(|t| {
            if t.is_token() {
                Column::Tokens(Vec::new())
            } else {
                Column::Scalar(Vec::new())
            }
        })
        .collect();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let obj = match crate::jsonl::object(line, &label, lineno) {
            Ok(Some(o)) => o,
            Ok(None) => continue,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let mut row: Vec<Result<f64, Vec<f64>>> = Vec::with_capacity(input_names.len());
        let mut bad = false;
        let mut length: Option<(usize, &str)> = None;
        for (name, ty) in input_names.iter().zip(input_tys) {
            let Some(v) = obj.get(name) else {
                errors.push(format!("{label}:{lineno}: missing input `{name}`"));
                bad = true;
                continue;
            };
            if !ty.is_token() {
                match v.as_f64() {
                    Some(x) => row.push(Ok(x)),
                    None => {
                        let hint = if v.is_array() {
                            " (it is a number per example, not per token)"
                        } else {
                            ""
                        };
                        errors.push(format!(
                            "{label}:{lineno}: `{name}` must be a number, found {v}{hint}"
                        ));
                        bad = true;
                    }
                }
                continue;
            }
            let seq: Option<Vec<f64>> = v
                .as_array()
                .and_then(|a| a.iter().map(Value::as_f64).collect());
            match seq {
                None => {
                    errors.push(format!(
                        "{label}:{lineno}: `{name}` is per token: it must be an array of numbers, found {v}"
                    ));
                    bad = true;
                }
                Some(seq) if seq.is_empty() => {
                    errors.push(format!(
                        "{label}:{lineno}: `{name}` has no tokens; a completion has at least one"
                    ));
                    bad = true;
                }
                Some(seq) => {
                    match length {
                        Some((len, other)) if len != seq.len() => {
                            errors.push(format!(
                                "{label}:{lineno}: `{name}` has {} tokens but `{other}` has {len}; the per-token inputs of a row must have one length",
                                seq.len()
                            ));
                            bad = true;
                        }
                        Some(_) => {}
                        None => length = Some((seq.len(), name)),
                    }
                    row.push(Err(seq));
                }
            }
        }
        for key in obj.keys() {
            if !input_names.contains(key) {
                let hint = poc_grammar::diag::suggest(key, input_names.iter().map(|s| s.as_str()))
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                errors.push(format!(
                    "{label}:{lineno}: `{key}` is not an input of this objective{hint}"
                ));
                bad = true;
            }
        }
        if !bad {
            for (c, x) in columns.iter_mut().zip(row) {
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
    }
    if !errors.is_empty() {
        let shown = errors.len().min(20);
        let mut msg = errors[..shown].join("\n");
        if errors.len() > shown {
            msg.push_str(&format!("\n... and {} more", errors.len() - shown));
        }
        let wanted: Vec<String> = input_names
            .iter()
            .zip(input_tys)
            .map(|(n, t)| {
                if t.is_token() {
                    format!("{n} (array)")
                } else {
                    n.clone()
                }
            })
            .collect();
        msg.push_str(&format!(
            "\n  = hint: each row needs exactly the inputs: {}\n",
            wanted.join(", ")
        ));
        return Err(Failure::User(msg));
    }
    Ok(columns)
}

/// Evaluates `program` on `columns` with the chosen backend; returns one column per output.
pub fn evaluate(
    program: &Program,
    params: &[f64],
    columns: &[Vec<f64>],
    backend: Backend,
    precision: Precision,
    device: &str,
) -> Result<Vec<Vec<f64>>, Failure> {
    match backend {
        Backend::Interp => Ok(poc_compiler::interp::eval_batch(program, params, columns)),
        Backend::Jit => {
            let kernel = poc_compiler::jit::Kernel::compile(program)
                .map_err(|e| Failure::Internal(e.to_string()))?;
            let cols: Vec<&[f64]> = columns.iter().map(|c| c.as_slice()).collect();
            let mut out = vec![Vec::new(); program.outputs.len()];
            kernel
                .run(params, &cols, &mut out)
                .map_err(|e| Failure::Internal(e.to_string()))?;
            Ok(out)
        }
        Backend::Burn => {
            let dev = burn_device(device)?;
            let dtype = precision.dtype();
            let inputs: Vec<_> = columns
                .iter()
                .map(|c| poc_runtime::lower::column(c, &dev, dtype))
                .collect();
            let outs = poc_runtime::lower::run_program(program, params, &inputs, &dev, dtype)
                .map_err(|e| Failure::Internal(e.to_string()))?;
            Ok(outs.into_iter().map(poc_runtime::lower::to_f64).collect())
        }
    }
}

/// The burn device `--device` names, if libtorch can use it.
fn burn_device(device: &str) -> Result<burn::tensor::Device, Failure> {
    let spec = poc_runtime::device::DeviceSpec::usable(device)
        .map_err(|e| Failure::User(format!("poc: {e}")))?;
    Ok(spec.device())
}

/// Evaluates any program (token-level ones included) on `columns` with the chosen backend;
/// returns one column per output. The JIT takes per-example programs only.
pub fn evaluate_columns(
    program: &Program,
    params: &[f64],
    columns: &[Column],
    backend: Backend,
    precision: Precision,
    device: &str,
) -> Result<Vec<Column>, Failure> {
    if !program.is_token_level() {
        let scalars: Vec<Vec<f64>> = columns
            .iter()
            .map(|c| match c {
                Column::Scalar(v) => v.clone(),
                Column::Tokens(_) => Vec::new(),
            })
            .collect();
        let out = evaluate(program, params, &scalars, backend, precision, device)?;
        return Ok(out.into_iter().map(Column::Scalar).collect());
    }
    match backend {
        Backend::Interp => poc_compiler::interp::eval_columns(program, params, columns)
            .map_err(|e| Failure::Internal(e.to_string())),
        Backend::Jit => Err(Failure::User(format!(
            "poc: {}\n",
            poc_compiler::jit::TOKEN_LEVEL_UNSUPPORTED
        ))),
        Backend::Burn => {
            use poc_runtime::lower::{TensorColumn, column, token_column};
            let dev = burn_device(device)?;
            let dtype = precision.dtype();
            let lens: Vec<usize> = columns
                .iter()
                .find_map(|c| match c {
                    Column::Tokens(rows) => Some(rows.iter().map(Vec::len).collect()),
                    Column::Scalar(_) => None,
                })
                .unwrap_or_default();
            let inputs: Vec<TensorColumn> = columns
                .iter()
                .map(|c| match c {
                    Column::Scalar(v) => TensorColumn::Scalar(column(v, &dev, dtype)),
                    Column::Tokens(rows) => TensorColumn::Tokens(token_column(rows, &dev, dtype)),
                })
                .collect();
            let outs = poc_runtime::lower::run_columns(program, params, &inputs, &dev, dtype)
                .map_err(|e| Failure::Internal(e.to_string()))?;
            Ok(outs
                .into_iter()
                .map(|o| match o {
                    TensorColumn::Scalar(t) => Column::Scalar(poc_runtime::lower::to_f64(t)),
                    TensorColumn::Tokens(t) => {
                        Column::Tokens(poc_runtime::lower::tokens_to_f64(t, &lens))
                    }
                })
                .collect())
        }
    }
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
    let columns = read_columns(inputs, &c.program.input_names, &c.program.input_tys)?;
    // The JIT runs the native form: parameters bound, sigmoid family sharing exponentials.
    let native;
    let program = if backend == Backend::Jit {
        native = c.native_program(Some(&params), true);
        &native
    } else {
        &c.program
    };
    let out = evaluate_columns(program, &params, &columns, backend, precision, device)?;
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
