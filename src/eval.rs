//! `poc eval`: rows of inputs in, loss/gradient/metrics per row out, on any lowering.

use crate::Failure;
use clap::ValueEnum;
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

/// Reads JSON-lines rows into one column per input. Every problem names its line.
pub fn read_rows(path: &Path, input_names: &[String]) -> Result<Vec<Vec<f64>>, Failure> {
    let label = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::User(format!("poc: cannot read `{label}`: {e}")))?;
    let mut columns = vec![Vec::new(); input_names.len()];
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let obj = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(o)) => o,
            Ok(_) => {
                errors.push(format!("{label}:{lineno}: expected a JSON object"));
                continue;
            }
            Err(e) => {
                errors.push(format!("{label}:{lineno}: invalid JSON: {e}"));
                continue;
            }
        };
        let mut row = Vec::with_capacity(input_names.len());
        let mut bad = false;
        for name in input_names {
            match obj.get(name) {
                None => {
                    errors.push(format!("{label}:{lineno}: missing input `{name}`"));
                    bad = true;
                }
                Some(v) => match v.as_f64() {
                    Some(x) => row.push(x),
                    None => {
                        errors.push(format!(
                            "{label}:{lineno}: `{name}` must be a number, found {v}"
                        ));
                        bad = true;
                    }
                },
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
                c.push(x);
            }
        }
    }
    if !errors.is_empty() {
        let shown = errors.len().min(20);
        let mut msg = errors[..shown].join("\n");
        if errors.len() > shown {
            msg.push_str(&format!("\n... and {} more", errors.len() - shown));
        }
        msg.push_str(&format!(
            "\n  = hint: each row needs exactly the inputs: {}\n",
            input_names.join(", ")
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
            let spec: poc_runtime::device::DeviceSpec = device
                .parse()
                .map_err(|e: poc_runtime::device::BadDevice| Failure::User(format!("poc: {e}")))?;
            let dev = spec.device();
            let dtype = precision.dtype();
            let inputs: Vec<_> = columns
                .iter()
                .map(|c| poc_runtime::objective::column(c, &dev, dtype))
                .collect();
            let outs = poc_runtime::objective::run_program(program, params, &inputs, &dev, dtype)
                .map_err(|e| Failure::Internal(e.to_string()))?;
            Ok(outs
                .into_iter()
                .map(poc_runtime::objective::to_f64)
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
    let columns = read_rows(inputs, &c.program.input_names)?;
    // The JIT runs the native form: parameters bound, sigmoid family sharing exponentials.
    let native;
    let program = if backend == Backend::Jit {
        native = c.native_program(Some(&params), true);
        &native
    } else {
        &c.program
    };
    let out = evaluate(program, &params, &columns, backend, precision, device)?;
    let n = columns.first().map(|c| c.len()).unwrap_or(0);
    let mut bad_rows = Vec::new();
    let mut stdout = String::new();
    for r in 0..n {
        let mut grad = Map::new();
        let mut metrics = Map::new();
        let mut loss = Value::Null;
        for (k, o) in c.program.outputs.iter().enumerate() {
            let v = out[k][r];
            match o.kind {
                OutputKind::Loss => {
                    if !v.is_finite() {
                        bad_rows.push(r + 1);
                    }
                    loss = json_number(v);
                }
                OutputKind::Grad(i) => {
                    grad.insert(c.objective.inputs[i as usize].name.clone(), json_number(v));
                }
                OutputKind::Metric(_) => {
                    metrics.insert(o.name.clone(), json_number(v));
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
