//! The burn lowering of a compiled objective: each instruction of the compiler's
//! [`Program`] becomes one burn tensor op over the batch (shape `[n]`), so the loss is an
//! ordinary burn graph. The runtime can then either apply the compiler's symbolic gradient
//! (the surrogate `sum(detach(g) · x)`) or let burn's autodiff differentiate the loss; the
//! tests check that both agree with the interpreter.

use burn::tensor::activation;
use burn::tensor::{Bool, DType, Device, Tensor, TensorData};
use poc_compiler::ops::{Op, Ty};
use poc_compiler::program::Program;

/// A value in a register: a float column or a mask.
#[derive(Clone)]
enum Reg {
    Num(Tensor<1>),
    Bool(Tensor<1, Bool>),
}

/// Wrong inputs to a burn evaluation.
#[derive(Debug, thiserror::Error)]
pub enum BurnEvalError {
    /// Input count or shapes disagree with the program.
    #[error("{0}")]
    Shape(String),
}

/// Executes `program` on burn tensors. `inputs[k]` is input k as a `[n]` float tensor (all of
/// one dtype and device; autodiff tensors welcome); constants and parameters are created in
/// that dtype on that device. Returns one `[n]` float tensor per program output (boolean
/// outputs as 0/1).
pub fn run_program(
    program: &Program,
    params: &[f64],
    inputs: &[Tensor<1>],
    device: &Device,
    dtype: DType,
) -> Result<Vec<Tensor<1>>, BurnEvalError> {
    if inputs.len() != program.input_names.len() || params.len() != program.param_names.len() {
        return Err(BurnEvalError::Shape(format!(
            "program takes {} inputs and {} params, got {} and {}",
            program.input_names.len(),
            program.param_names.len(),
            inputs.len(),
            params.len()
        )));
    }
    let n = inputs.first().map(|t| t.dims()[0]).unwrap_or(1);
    if inputs.iter().any(|t| t.dims()[0] != n) {
        return Err(BurnEvalError::Shape(
            "input columns differ in length".into(),
        ));
    }
    let full = |x: f64| Tensor::<1>::full([n], x, (device, dtype));
    let mut regs: Vec<Reg> = Vec::with_capacity(program.instrs.len());
    for ins in &program.instrs {
        let num = |k: usize| match &regs[ins.args[k] as usize] {
            Reg::Num(t) => t.clone(),
            Reg::Bool(_) => unreachable!(
                "checked program: operand {k} of {} is a number",
                ins.op.name()
            ),
        };
        let mask = |k: usize| match &regs[ins.args[k] as usize] {
            Reg::Bool(t) => t.clone(),
            Reg::Num(_) => unreachable!(
                "checked program: operand {k} of {} is a boolean",
                ins.op.name()
            ),
        };
        use Op::*;
        let v = match ins.op {
            Const(bits) => Reg::Num(full(f64::from_bits(bits))),
            BoolConst(b) => Reg::Bool(full(if b { 1.0 } else { 0.0 }).greater_elem(0.5)),
            Input(k) => Reg::Num(inputs[k as usize].clone()),
            Param(k) => Reg::Num(full(params[k as usize])),
            Neg => Reg::Num(num(0).neg()),
            Add => Reg::Num(num(0) + num(1)),
            Sub => Reg::Num(num(0) - num(1)),
            Mul => Reg::Num(num(0) * num(1)),
            Div => Reg::Num(num(0) / num(1)),
            Pow => Reg::Num(num(0).powf(num(1))),
            Exp => Reg::Num(num(0).exp()),
            Log => Reg::Num(num(0).log()),
            Log1p => Reg::Num(num(0).log1p()),
            Expm1 => Reg::Num(expm1(num(0))),
            Sqrt => Reg::Num(num(0).sqrt()),
            Abs => Reg::Num(num(0).abs()),
            Sign => Reg::Num(num(0).sign()),
            Sigmoid => Reg::Num(activation::sigmoid(num(0))),
            LogSigmoid => Reg::Num(activation::log_sigmoid(num(0))),
            // softplus(x) = -log_sigmoid(-x): libtorch's stable kernel, exact derivative at 0.
            Softplus => Reg::Num(activation::log_sigmoid(num(0).neg()).neg()),
            Tanh => Reg::Num(num(0).tanh()),
            Relu => Reg::Num(activation::relu(num(0))),
            // Ties go to the first operand, in value and in autodiff (the documented convention).
            Min => {
                let (a, b) = (num(0), num(1));
                Reg::Num(b.clone().mask_where(a.clone().lower_equal(b), a))
            }
            Max => {
                let (a, b) = (num(0), num(1));
                Reg::Num(b.clone().mask_where(a.clone().greater_equal(b), a))
            }
            StopGrad => Reg::Num(num(0).detach()),
            Lt => Reg::Bool(num(0).lower(num(1))),
            Le => Reg::Bool(num(0).lower_equal(num(1))),
            Gt => Reg::Bool(num(0).greater(num(1))),
            Ge => Reg::Bool(num(0).greater_equal(num(1))),
            Eq => Reg::Bool(num(0).equal(num(1))),
            Ne => Reg::Bool(num(0).not_equal(num(1))),
            And => Reg::Bool(mask(0).bool_and(mask(1))),
            Or => Reg::Bool(mask(0).bool_or(mask(1))),
            Not => Reg::Bool(mask(0).bool_not()),
            Select => Reg::Num(num(2).mask_where(mask(0), num(1))),
        };
        regs.push(v);
    }
    Ok(program
        .outputs
        .iter()
        .map(|o| match (&regs[o.reg as usize], o.ty) {
            (Reg::Num(t), _) => t.clone(),
            (Reg::Bool(m), Ty::Bool | Ty::Num) => full(0.0).mask_where(m.clone(), full(1.0)),
        })
        .collect())
}

/// `exp(x) - 1` without cancellation near 0 (burn has no `expm1`):
/// `2 tanh(x/2) / (1 - tanh(x/2))` for |x| < 1, `exp(x) - 1` elsewhere. The small-x branch
/// sees x clamped to [-1, 1], so the branch not taken never produces inf/NaN gradients.
fn expm1(x: Tensor<1>) -> Tensor<1> {
    let small = x.clone().abs().lower_elem(1.0);
    let xc = x.clone().clamp(-1.0, 1.0);
    let t = (xc * 0.5).tanh();
    let near = t.clone() * 2.0 / (t.neg() + 1.0);
    let far = x.exp() - 1.0;
    far.mask_where(small, near)
}

/// A column of f64 values as a `[n]` tensor of `dtype` on `device`.
pub fn column(values: &[f64], device: &Device, dtype: DType) -> Tensor<1> {
    Tensor::<1>::from_data(
        TensorData::new(values.to_vec(), [values.len()]),
        (device, dtype),
    )
}

/// A `[n]` tensor's values as f64.
pub fn to_f64(t: Tensor<1>) -> Vec<f64> {
    t.into_data().try_into_vec_as::<f64>().unwrap_or_default()
}

/// The surrogate whose gradient with respect to each `inputs[k]` is `grads[k]`:
/// `Σ_k sum(detach(grads[k]) · inputs[k])`. Backpropagating it applies the compiler's
/// symbolic gradient through whatever produced the inputs (e.g. a policy model).
pub fn surrogate(inputs: &[Tensor<1>], grads: &[Tensor<1>]) -> Tensor<1> {
    inputs
        .iter()
        .zip(grads)
        .map(|(x, g)| (g.clone().detach() * x.clone()).sum())
        .reduce(|a, b| a + b)
        .unwrap_or_else(|| Tensor::<1>::zeros([1], &Device::default()))
}
