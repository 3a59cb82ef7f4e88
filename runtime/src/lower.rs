//! The burn lowering of a compiled objective: each instruction of the compiler's
//! [`Program`] becomes one burn tensor op over the batch, so the loss is an ordinary burn graph.
//! The runtime can then either apply the compiler's symbolic gradient (the surrogate
//! `sum(detach(g) · x)`) or let burn's autodiff differentiate the loss; the tests check that
//! both agree with the interpreter.
//!
//! Shapes: a per-example value is a `[B]` column; a per-token value (`num[T]`) is a `[B, T]`
//! tensor, rows padded to the longest with 0 and mask 0. Inside, every register is 2-D: `[B, 1]`
//! for per-example values, `[B, T]` per token, and a per-example operand of a per-token op is
//! expanded along the tokens (autodiff sums its gradient back). The masked reductions, `gae`,
//! `last_token` and `whiten` only read tokens whose mask is non-zero, so padding never reaches
//! a result; `gae`, `last_token` and `whiten` are detached (no gradient, as in the compiler).

use burn::tensor::activation;
use burn::tensor::{Bool, DType, Device, Tensor, TensorData};
use poc_compiler::ops::{Op, WHITEN_EPS};
use poc_compiler::program::Program;

/// A value in a register: `[B, 1]` or `[B, T]`, numbers or truth values.
#[derive(Clone)]
enum Reg {
    Num(Tensor<2>),
    Bool(Tensor<2, Bool>),
}

/// A batch column on burn: one number per example, or one padded token sequence per example.
#[derive(Clone, Debug)]
pub enum TensorColumn {
    /// `[B]`: a per-example value.
    Scalar(Tensor<1>),
    /// `[B, T]`: a per-token value, rows padded with 0 (and mask 0) to the longest.
    Tokens(Tensor<2>),
}

impl TensorColumn {
    /// The `[B]` tensor of a per-example column.
    pub fn scalar(self) -> Option<Tensor<1>> {
        match self {
            TensorColumn::Scalar(t) => Some(t),
            TensorColumn::Tokens(_) => None,
        }
    }

    /// The `[B, T]` tensor of a per-token column.
    pub fn tokens(self) -> Option<Tensor<2>> {
        match self {
            TensorColumn::Tokens(t) => Some(t),
            TensorColumn::Scalar(_) => None,
        }
    }

    /// As a 2-D register: `[B, 1]` or `[B, T]`.
    fn into_2d(self) -> Tensor<2> {
        match self {
            TensorColumn::Scalar(t) => t.unsqueeze_dim(1),
            TensorColumn::Tokens(t) => t,
        }
    }
}

/// Wrong inputs to a burn evaluation.
#[derive(Debug, thiserror::Error)]
pub enum BurnEvalError {
    /// Input count or shapes disagree with the program.
    #[error("{0}")]
    Shape(String),
}

/// Executes a per-example `program` on burn tensors. `inputs[k]` is input k as a `[n]` float
/// tensor (all of one dtype and device; autodiff tensors welcome); constants and parameters
/// are created in that dtype on that device. Returns one `[n]` float tensor per program output
/// (boolean outputs as 0/1). Token-level programs go through [`run_columns`].
pub fn run_program(
    program: &Program,
    params: &[f64],
    inputs: &[Tensor<1>],
    device: &Device,
    dtype: DType,
) -> Result<Vec<Tensor<1>>, BurnEvalError> {
    if program.is_token_level() {
        return Err(BurnEvalError::Shape(
            "the objective has per-token values; run it with run_columns".into(),
        ));
    }
    let columns: Vec<TensorColumn> = inputs
        .iter()
        .map(|t| TensorColumn::Scalar(t.clone()))
        .collect();
    run_columns(program, params, &columns, device, dtype)?
        .into_iter()
        .map(|c| {
            c.scalar().ok_or_else(|| {
                BurnEvalError::Shape("a per-example program gave a per-token output".into())
            })
        })
        .collect()
}

/// Executes any program (per-example or token-level) on burn tensors: `inputs[k]` is
/// [`TensorColumn::Tokens`] (`[B, T]`, one T for all) for a `num[T]` input and
/// [`TensorColumn::Scalar`] (`[B]`) otherwise. Returns one column per program output (boolean
/// outputs as 0/1). `whiten` takes its statistics over this batch's valid tokens.
pub fn run_columns(
    program: &Program,
    params: &[f64],
    inputs: &[TensorColumn],
    device: &Device,
    dtype: DType,
) -> Result<Vec<TensorColumn>, BurnEvalError> {
    let (n, tokens) = batch_shape(program, params, inputs)?;
    let full = |x: f64| Tensor::<2>::full([n, 1], x, (device, dtype));
    // A per-example operand of a per-token op is expanded along the tokens.
    let widen = |t: Tensor<2>, token: bool| {
        if token && t.dims()[1] != tokens {
            t.expand([n, tokens])
        } else {
            t
        }
    };
    let mut regs: Vec<Reg> = Vec::with_capacity(program.instrs.len());
    for ins in &program.instrs {
        let token = ins.ty.is_token();
        let num_as_is = |k: usize| match &regs[ins.args[k] as usize] {
            Reg::Num(t) => t.clone(),
            Reg::Bool(_) => unreachable!(
                "checked program: operand {k} of {} is a number",
                ins.op.name()
            ),
        };
        let num = |k: usize| widen(num_as_is(k), token);
        let mask = |k: usize| match &regs[ins.args[k] as usize] {
            Reg::Bool(t) if token && t.dims()[1] != tokens => t.clone().expand([n, tokens]),
            Reg::Bool(t) => t.clone(),
            Reg::Num(_) => unreachable!(
                "checked program: operand {k} of {} is a boolean",
                ins.op.name()
            ),
        };
        // Operand k of a sequence op, per token, without gradient.
        let seq = |k: usize| widen(num_as_is(k), true).detach();
        use Op::*;
        let v = match ins.op {
            Const(bits) => Reg::Num(full(f64::from_bits(bits))),
            BoolConst(b) => Reg::Bool(full(if b { 1.0 } else { 0.0 }).greater_elem(0.5)),
            Input(k) | TokenInput(k) => Reg::Num(inputs[k as usize].clone().into_2d()),
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
            Broadcast => Reg::Num(num(0)),
            // Over every position, padding included: only made by differentiation, where the
            // summand carries a mask factor.
            Sum => Reg::Num(num(0).sum_dim(1)),
            MaskedSum => {
                let (x, m) = (widen(num_as_is(0), true), num_as_is(1));
                let valid = m.clone().not_equal_elem(0.0);
                Reg::Num(zeros_like(&m).mask_where(valid, x * m).sum_dim(1))
            }
            LastToken => Reg::Num(last_token(seq(0))),
            Gae => Reg::Num(gae(
                [seq(0), seq(1), seq(2)],
                [num_as_is(3).detach(), num_as_is(4).detach()],
            )),
            Whiten => Reg::Num(whiten(seq(0), seq(1))),
            // A gather by the permutation of the key (found on the host with the interpreter's
            // own stable sort, so ties break the same way): autodiff sends the adjoint back
            // through the gather.
            SortBy | Unsort => {
                let key = num_as_is(1).detach();
                let key: Vec<f64> = key.into_data().try_into_vec_as::<f64>().unwrap_or_default();
                let perm = poc_compiler::ops::sort_permutation(&key);
                let index: Vec<i64> = if ins.op == SortBy {
                    perm.iter().map(|&j| j as i64).collect()
                } else {
                    let mut rank = vec![0i64; perm.len()];
                    for (i, &j) in perm.iter().enumerate() {
                        rank[j] = i as i64;
                    }
                    rank
                };
                let index = Tensor::<2, burn::tensor::Int>::from_data(
                    TensorData::new(index, [n, 1]),
                    device,
                );
                Reg::Num(num_as_is(0).expand([n, 1]).gather(0, index))
            }
        };
        regs.push(v);
    }
    Ok(program
        .outputs
        .iter()
        .map(|o| {
            let t = match &regs[o.reg as usize] {
                Reg::Num(t) => t.clone(),
                Reg::Bool(m) => zeros_like_mask(m, device, dtype).mask_fill(m.clone(), 1.0),
            };
            if o.ty.is_token() {
                TensorColumn::Tokens(widen(t, true))
            } else {
                TensorColumn::Scalar(t.squeeze_dim::<1>(1))
            }
        })
        .collect())
}

/// Checks the inputs against the program: returns the batch size B and the token count T
/// (1 when the program has no per-token input).
fn batch_shape(
    program: &Program,
    params: &[f64],
    inputs: &[TensorColumn],
) -> Result<(usize, usize), BurnEvalError> {
    let shape = |m: String| Err(BurnEvalError::Shape(m));
    if inputs.len() != program.input_names.len() || params.len() != program.param_names.len() {
        return shape(format!(
            "program takes {} inputs and {} params, got {} and {}",
            program.input_names.len(),
            program.param_names.len(),
            inputs.len(),
            params.len()
        ));
    }
    let mut n = None;
    let mut tokens = None;
    for ((input, name), ty) in inputs
        .iter()
        .zip(&program.input_names)
        .zip(&program.input_tys)
    {
        let (rows, t) = match (input, ty.is_token()) {
            (TensorColumn::Scalar(t), false) => (t.dims()[0], None),
            (TensorColumn::Tokens(t), true) => (t.dims()[0], Some(t.dims()[1])),
            (_, true) => {
                return shape(format!("input `{name}` is per token: give a [B, T] tensor"));
            }
            (_, false) => {
                return shape(format!("input `{name}` is per example: give a [B] tensor"));
            }
        };
        if *n.get_or_insert(rows) != rows {
            return shape("input columns differ in length".into());
        }
        if let Some(t) = t
            && *tokens.get_or_insert(t) != t
        {
            return shape(format!(
                "per-token inputs differ in length (`{name}` has {t} tokens, another {})",
                tokens.unwrap_or_default()
            ));
        }
    }
    Ok((n.unwrap_or(1), tokens.unwrap_or(1)))
}

fn zeros_like(t: &Tensor<2>) -> Tensor<2> {
    t.zeros_like()
}

fn zeros_like_mask(m: &Tensor<2, Bool>, device: &Device, dtype: DType) -> Tensor<2> {
    Tensor::<2>::zeros(m.dims(), (device, dtype))
}

/// 1 at each row's last token with a non-zero mask, 0 elsewhere: the valid token with
/// exactly one valid token at or after it (counts stay exact in any float dtype, as the ones
/// that matter are small).
fn last_token(m: Tensor<2>) -> Tensor<2> {
    let valid = m.clone().not_equal_elem(0.0);
    let ones = zeros_like(&m).mask_fill(valid.clone(), 1.0);
    let at_or_after = ones.flip([1]).cumsum(1).flip([1]);
    zeros_like(&m).mask_fill(at_or_after.equal_elem(1.0).bool_and(valid), 1.0)
}

/// Generalized advantage estimation backwards over the valid tokens (`ops::gae`):
/// `seqs = [rewards, values, mask]` as `[B, T]`, `coefs = [γ, λ]` as `[B, 1]`.
fn gae(seqs: [Tensor<2>; 3], coefs: [Tensor<2>; 2]) -> Tensor<2> {
    let [rewards, values, mask] = seqs;
    let [gamma, lambda] = coefs;
    let [_, t] = mask.dims();
    let zero = zeros_like(&gamma);
    let (mut next_value, mut next_advantage) = (zero.clone(), zero.clone());
    let mut out = Vec::with_capacity(t);
    for i in (0..t).rev() {
        let valid = mask.clone().narrow(1, i, 1).not_equal_elem(0.0);
        let v = values.clone().narrow(1, i, 1);
        let delta =
            rewards.clone().narrow(1, i, 1) + gamma.clone() * next_value.clone() - v.clone();
        let advantage = delta + gamma.clone() * lambda.clone() * next_advantage.clone();
        out.push(zero.clone().mask_where(valid.clone(), advantage.clone()));
        next_advantage = next_advantage.mask_where(valid.clone(), advantage);
        next_value = next_value.mask_where(valid, v);
    }
    out.reverse();
    Tensor::cat(out, 1)
}

/// `(x − μ)/sqrt(σ² + 1e-8)` at valid tokens, 0 elsewhere, with μ and the unbiased σ² over
/// every valid token of the batch (σ² = 0 with fewer than two): `ops::whiten_stats`.
fn whiten(x: Tensor<2>, m: Tensor<2>) -> Tensor<2> {
    let [n, t] = m.dims();
    let valid = m.not_equal_elem(0.0);
    let zeros = zeros_like(&x);
    let count = zeros.clone().mask_fill(valid.clone(), 1.0).sum();
    let mean =
        zeros.clone().mask_where(valid.clone(), x.clone()).sum() / count.clone().clamp_min(1.0);
    let centered = x - mean.reshape([1, 1]).expand([n, t]);
    let squares = zeros
        .clone()
        .mask_where(valid.clone(), centered.clone().powi_scalar(2));
    let var = squares.sum() / (count - 1.0).clamp_min(1.0);
    let scale = (var + WHITEN_EPS)
        .sqrt()
        .recip()
        .reshape([1, 1])
        .expand([n, t]);
    zeros.mask_where(valid, centered * scale)
}

/// `exp(x) - 1` without cancellation near 0 (burn has no `expm1`):
/// `2 tanh(x/2) / (1 - tanh(x/2))` for |x| < 1, `exp(x) - 1` elsewhere. The small-x branch
/// sees x clamped to [-1, 1], so the branch not taken never produces inf/NaN gradients.
fn expm1(x: Tensor<2>) -> Tensor<2> {
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

/// Token sequences as a `[n, T]` tensor, T the longest, shorter rows padded with 0.
pub fn token_column(rows: &[Vec<f64>], device: &Device, dtype: DType) -> Tensor<2> {
    let t = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut flat = Vec::with_capacity(rows.len() * t);
    for r in rows {
        flat.extend_from_slice(r);
        flat.extend(std::iter::repeat_n(0.0, t - r.len()));
    }
    Tensor::<2>::from_data(TensorData::new(flat, [rows.len(), t]), (device, dtype))
}

/// A `[n]` tensor's values as f64.
pub fn to_f64(t: Tensor<1>) -> Vec<f64> {
    t.into_data().try_into_vec_as::<f64>().unwrap_or_default()
}

/// A `[n, T]` tensor's rows as f64, row r cut to `lens[r]` tokens (the padding dropped).
pub fn tokens_to_f64(t: Tensor<2>, lens: &[usize]) -> Vec<Vec<f64>> {
    let width = t.dims()[1];
    let flat = t.into_data().try_into_vec_as::<f64>().unwrap_or_default();
    lens.iter()
        .enumerate()
        .map(|(r, &len)| {
            flat.get(r * width..r * width + len.min(width))
                .map(<[f64]>::to_vec)
                .unwrap_or_default()
        })
        .collect()
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

/// [`surrogate`] over columns of any shape (per-token gradients included; a per-token input's
/// padding should carry a zero gradient, as the masked reductions give). Per-example pairs
/// are multiplied as `[B]` columns, exactly as [`surrogate`] does.
pub fn surrogate_columns(inputs: &[TensorColumn], grads: &[TensorColumn]) -> Tensor<1> {
    inputs
        .iter()
        .zip(grads)
        .map(|(x, g)| match (x, g) {
            (TensorColumn::Scalar(x), TensorColumn::Scalar(g)) => {
                (g.clone().detach() * x.clone()).sum()
            }
            _ => (g.clone().into_2d().detach() * x.clone().into_2d()).sum(),
        })
        .reduce(|a, b| a + b)
        .unwrap_or_else(|| Tensor::<1>::zeros([1], &Device::default()))
}
