//! Helpers for the tests of the burn lowering: the compiler's test helpers (shipped objectives,
//! random rows and rollouts, closeness), shared rather than copied, and the conversions between
//! the interpreter's columns and burn tensors.
#![allow(dead_code)]

#[path = "../../../compiler/tests/common/mod.rs"]
mod compiler_common;

pub use compiler_common::*;

use burn::tensor::DType;
use poc_compiler::interp::Column;
use poc_runtime::device::DeviceSpec;
use poc_runtime::lower::{TensorColumn, column, run_columns, to_f64, token_column, tokens_to_f64};

/// The burn lowering of `program` on `cols` (f64 or another dtype), back as columns with each
/// row's padding dropped.
pub fn burn_eval(
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

/// Each row's token count (empty when no column is per token).
pub fn row_lengths(cols: &[Column]) -> Vec<usize> {
    cols.iter()
        .find_map(|c| match c {
            Column::Tokens(v) => Some(v.iter().map(Vec::len).collect()),
            Column::Scalar(_) => None,
        })
        .unwrap_or_default()
}

/// A column as a tensor of `dtype` on the CPU, tracked by autodiff when `grad` holds.
pub fn tensor(c: &Column, dtype: DType, grad: bool) -> TensorColumn {
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

/// A tensor back as a column, each row cut to its length.
pub fn from_tensor(t: TensorColumn, lens: &[usize]) -> Column {
    match t {
        TensorColumn::Scalar(t) => Column::Scalar(to_f64(t)),
        TensorColumn::Tokens(t) => Column::Tokens(tokens_to_f64(t, lens)),
    }
}
