//! Backend dispatch: one program evaluated on the f64 interpreter, the Cranelift JIT or burn
//! tensors (libtorch), behind one call. `poc eval`, `poc bench eval` and tests go through
//! here instead of choosing and preparing a lowering themselves.
//!
//! An [`Evaluator`] is a program made ready for one backend (the JIT kernel compiled, the burn
//! device opened) so that it can be run on many batches; [`evaluate_columns`] is the one-shot
//! form.

use crate::device::{BadDevice, DeviceSpec};
use crate::lower::{self, BurnEvalError, TensorColumn};
use burn::tensor::{DType, Device};
use poc_compiler::Program;
use poc_compiler::interp::{self, Column, EvalError};
use poc_compiler::jit::{self, JitError, Kernel};

/// Which lowering evaluates a program.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The f64 reference interpreter.
    Interp,
    /// The Cranelift JIT kernel (per-example programs only).
    Jit,
    /// burn tensors (libtorch).
    Burn,
}

/// Float type of the burn backend (the interpreter and the JIT compute in f64).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
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
    pub fn dtype(self) -> DType {
        match self {
            Precision::F64 => DType::F64,
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
        }
    }
}

/// Why a program could not be evaluated.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The device the caller named is not usable (a user error).
    #[error(transparent)]
    Device(#[from] BadDevice),
    /// A token-level program was given to the JIT (a user error: another backend takes it).
    #[error("{}", jit::TOKEN_LEVEL_UNSUPPORTED)]
    TokenLevelJit,
    /// A program with ops across the batch was given to the JIT (a user error, likewise).
    #[error("{}", jit::BATCH_LEVEL_UNSUPPORTED)]
    BatchLevelJit,
    /// The JIT could not build or run the kernel.
    #[error(transparent)]
    Jit(#[from] JitError),
    /// The interpreter rejected the columns.
    #[error(transparent)]
    Interp(#[from] EvalError),
    /// burn rejected the columns.
    #[error(transparent)]
    Burn(#[from] BurnEvalError),
}

impl BackendError {
    /// Whether the caller's choice (device, backend) is at fault rather than poc.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            BackendError::Device(_) | BackendError::TokenLevelJit | BackendError::BatchLevelJit
        )
    }
}

/// What a backend keeps between batches.
enum Prepared {
    Interp,
    Jit(Box<Kernel>),
    Burn { device: Device, dtype: DType },
}

/// A program made ready for one backend.
pub struct Evaluator<'p> {
    program: &'p Program,
    prepared: Prepared,
}

impl<'p> Evaluator<'p> {
    /// Prepares `program` for `backend`: compiles the JIT kernel, or opens the burn `device`
    /// (`cpu`, `cuda`, `cuda:N`) with `precision`'s dtype. The interpreter needs nothing.
    pub fn new(
        program: &'p Program,
        backend: Backend,
        precision: Precision,
        device: &str,
    ) -> Result<Evaluator<'p>, BackendError> {
        let prepared = match backend {
            Backend::Interp => Prepared::Interp,
            Backend::Jit if program.is_token_level() => return Err(BackendError::TokenLevelJit),
            Backend::Jit if program.is_batch_level() => return Err(BackendError::BatchLevelJit),
            Backend::Jit => Prepared::Jit(Box::new(Kernel::compile(program)?)),
            Backend::Burn => Prepared::Burn {
                device: DeviceSpec::usable(device)?.device(),
                dtype: precision.dtype(),
            },
        };
        Ok(Evaluator { program, prepared })
    }

    /// Evaluates a per-example program on `columns` (one per input); one column per output.
    pub fn run(&self, params: &[f64], columns: &[Vec<f64>]) -> Result<Vec<Vec<f64>>, BackendError> {
        let program = self.program;
        match &self.prepared {
            // (`eval_batch` runs a batch-level program over the whole batch.)
            Prepared::Interp => Ok(interp::eval_batch(program, params, columns)),
            Prepared::Jit(kernel) => {
                let cols: Vec<&[f64]> = columns.iter().map(Vec::as_slice).collect();
                let mut out = vec![Vec::new(); program.outputs.len()];
                kernel.run(params, &cols, &mut out)?;
                Ok(out)
            }
            Prepared::Burn { device, dtype } => {
                let inputs: Vec<_> = columns
                    .iter()
                    .map(|c| lower::column(c, device, *dtype))
                    .collect();
                let outs = lower::run_program(program, params, &inputs, device, *dtype)?;
                Ok(outs.into_iter().map(lower::to_f64).collect())
            }
        }
    }

    /// Evaluates any program, token-level ones included, on `columns`; one column per output.
    pub fn run_columns(
        &self,
        params: &[f64],
        columns: &[Column],
    ) -> Result<Vec<Column>, BackendError> {
        if !self.program.is_token_level() {
            // Per-example columns (a batch-level program included: `run` takes it whole).
            let scalars: Vec<Vec<f64>> = columns
                .iter()
                .map(|c| match c {
                    Column::Scalar(v) => v.clone(),
                    Column::Tokens(_) => Vec::new(),
                })
                .collect();
            let out = self.run(params, &scalars)?;
            return Ok(out.into_iter().map(Column::Scalar).collect());
        }
        match &self.prepared {
            Prepared::Interp => Ok(interp::eval_columns(self.program, params, columns)?),
            // `new` refuses a token-level program for the JIT.
            Prepared::Jit(_) => Err(BackendError::TokenLevelJit),
            Prepared::Burn { device, dtype } => {
                burn_columns(self.program, params, columns, device, *dtype)
            }
        }
    }
}

/// A token-level program on burn tensors, per-token columns padded and cut back to each row's
/// length.
fn burn_columns(
    program: &Program,
    params: &[f64],
    columns: &[Column],
    device: &Device,
    dtype: DType,
) -> Result<Vec<Column>, BackendError> {
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
            Column::Scalar(v) => TensorColumn::Scalar(lower::column(v, device, dtype)),
            Column::Tokens(rows) => TensorColumn::Tokens(lower::token_column(rows, device, dtype)),
        })
        .collect();
    let outs = lower::run_columns(program, params, &inputs, device, dtype)?;
    Ok(outs
        .into_iter()
        .map(|o| match o {
            TensorColumn::Scalar(t) => Column::Scalar(lower::to_f64(t)),
            TensorColumn::Tokens(t) => Column::Tokens(lower::tokens_to_f64(t, &lens)),
        })
        .collect())
}

/// Evaluates any program on `columns` with `backend` in one call; one column per output.
pub fn evaluate_columns(
    program: &Program,
    params: &[f64],
    columns: &[Column],
    backend: Backend,
    precision: Precision,
    device: &str,
) -> Result<Vec<Column>, BackendError> {
    Evaluator::new(program, backend, precision, device)?.run_columns(params, columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_backend_agrees_with_the_interpreter() {
        let c = poc_compiler::compile(include_str!("../../objectives/dpo.po")).unwrap();
        let params = c.objective.default_params();
        let columns: Vec<Column> = (0..c.program.input_names.len())
            .map(|k| Column::Scalar(vec![-10.0 - k as f64, -12.0, -11.5 + k as f64]))
            .collect();
        let want = evaluate_columns(
            &c.program,
            &params,
            &columns,
            Backend::Interp,
            Precision::F64,
            "cpu",
        )
        .unwrap();
        for backend in [Backend::Jit, Backend::Burn] {
            let got = evaluate_columns(
                &c.program,
                &params,
                &columns,
                backend,
                Precision::F64,
                "cpu",
            )
            .unwrap();
            for (w, g) in want.iter().zip(&got) {
                let (Column::Scalar(w), Column::Scalar(g)) = (w, g) else {
                    panic!("a per-example program gave a per-token column");
                };
                for (a, b) in w.iter().zip(g) {
                    assert!((a - b).abs() < 1e-9, "{backend:?}: {a} vs {b}");
                }
            }
        }
        let device = Evaluator::new(&c.program, Backend::Burn, Precision::F32, "tpu").err();
        assert!(
            device.is_some_and(|e| e.is_user_error()),
            "an unknown device is the caller's error"
        );
    }
}
