//! The one closed set of operations and the one table of their facts. Every fact about an op
//! is one exhaustive `match` over [`Op`]: its arity, types, shapes, spelling ([`Op::name`],
//! [`Op::syntax`]) and evaluation here ([`Op::eval`] for elementwise ops, the sequence
//! functions below — [`gae`], [`last_token`], [`masked_sum`], [`whiten_stats`] — for the
//! others), derivatives in `grad.rs`, simplification in `simplify.rs`, LaTeX in `print.rs`,
//! Cranelift lowering in `jit.rs`, burn lowering in the runtime. The checker's functions, their
//! arities and argument shapes are read from here ([`Op::from_name`], [`Op::arity`],
//! [`Op::operand_shape`]), so adding an op is a compile error in each of those places and
//! nowhere a second list of names has to learn it.

use poc_grammar::{BinaryOp, UnaryOp};
use serde::Serialize;

/// Value types: a per-example scalar (`num`, `bool`) or a per-example token sequence
/// (`num[T]`, `bool[T]`, one value per completion token; T varies from example to example).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Ty {
    /// A real number (f64 in the interpreter and JIT, the tensor dtype on burn).
    Num,
    /// A truth value.
    Bool,
    /// A real number per token.
    TokNum,
    /// A truth value per token.
    TokBool,
}

impl Ty {
    /// The element type: `Num` or `Bool`.
    pub fn elem(self) -> Ty {
        match self {
            Ty::Num | Ty::TokNum => Ty::Num,
            Ty::Bool | Ty::TokBool => Ty::Bool,
        }
    }

    /// Whether the value is a token sequence.
    pub fn is_token(self) -> bool {
        matches!(self, Ty::TokNum | Ty::TokBool)
    }

    /// This type's element type, per token when `tokens` holds.
    pub fn with_tokens(self, tokens: bool) -> Ty {
        match (self.elem(), tokens) {
            (Ty::Num, false) => Ty::Num,
            (Ty::Num, true) => Ty::TokNum,
            (_, false) => Ty::Bool,
            (_, true) => Ty::TokBool,
        }
    }
}

impl std::fmt::Display for Ty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Ty::Num => "num",
            Ty::Bool => "bool",
            Ty::TokNum => "num[T]",
            Ty::TokBool => "bool[T]",
        })
    }
}

/// How an op's result shape follows from its operands'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Applied per element: the result is per token when any operand is (scalars broadcast).
    Elementwise,
    /// A per-example scalar made from a token sequence (`sum`, `masked_sum`).
    Reduce,
    /// A token sequence computed from whole sequences (`gae`, `last_token`), row by row.
    Sequence,
    /// A token sequence normalized with statistics of the whole batch (`whiten`).
    Batch,
    /// A per-example value computed from the per-example values of the whole batch
    /// (`sort_by`, `unsort`): example i's result depends on every example.
    Across,
}

/// What one operand of an op must be, beyond its element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperandShape {
    /// Per example or per token (scalars broadcast).
    Any,
    /// A per-token value (`sum`'s operand, every mask, `broadcast`'s shape operand).
    Tokens,
    /// A per-example value (`gae`'s γ and λ, `broadcast`'s value).
    Scalar,
}

/// How an op is written in a `.po` source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// A literal (`0.5`, `true`).
    Literal,
    /// A declared name (a parameter or an input).
    Name,
    /// A prefix operator.
    Prefix(UnaryOp),
    /// An infix operator.
    Infix(BinaryOp),
    /// `if c then a else b`.
    Conditional,
    /// A function call `name(args)`: the language's built-in functions.
    Call,
    /// Never written: made by the compiler (differentiation).
    Internal,
}

/// An operation of the expression DAG. Leaves carry their payload; the others take their
/// operands from the node's argument list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Op {
    /// A constant; the payload is `f64::to_bits` so the op can be hashed.
    Const(u64),
    /// A boolean constant.
    BoolConst(bool),
    /// The i-th declared input, a per-example number.
    Input(u32),
    /// The i-th declared input, a per-token sequence (`num[T]`).
    TokenInput(u32),
    /// The i-th declared parameter (bound at evaluation time, so `--set` never recompiles).
    Param(u32),
    /// `-a`
    Neg,
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
    /// `a / b`
    Div,
    /// `a ^ b`
    Pow,
    /// `exp(a)`
    Exp,
    /// `ln(a)`
    Log,
    /// `ln(1 + a)`
    Log1p,
    /// `exp(a) - 1`
    Expm1,
    /// `sqrt(a)`
    Sqrt,
    /// `|a|`
    Abs,
    /// `sign(a)` in {-1, 0, 1}: only produced by differentiation (`abs'`).
    Sign,
    /// `1 / (1 + exp(-a))`, computed without overflow.
    Sigmoid,
    /// `ln(sigmoid(a))` computed as `-softplus(-a)`.
    LogSigmoid,
    /// `ln(1 + exp(a))` computed as `max(a, 0) + log1p(exp(-|a|))`.
    Softplus,
    /// `tanh(a)`
    Tanh,
    /// `max(a, 0)`
    Relu,
    /// `min(a, b)`
    Min,
    /// `max(a, b)`
    Max,
    /// The value of `a`, with derivative zero.
    StopGrad,
    /// `a < b`
    Lt,
    /// `a <= b`
    Le,
    /// `a > b`
    Gt,
    /// `a >= b`
    Ge,
    /// `a == b`
    Eq,
    /// `a != b`
    Ne,
    /// `a and b`
    And,
    /// `a or b`
    Or,
    /// `not a`
    Not,
    /// `if a then b else c`
    Select,
    /// The value of `a` at every token of `b` (`b` only gives the shape): made by
    /// differentiation for a token input whose gradient is a scalar.
    Broadcast,
    /// `Σ_t a_t` over every token of the row: made by differentiation when a scalar operand
    /// of a per-token op collects its adjoint.
    Sum,
    /// `masked_sum(x, m) = Σ_t m_t·x_t` over the tokens with `m_t ≠ 0` (elsewhere `x_t` is not
    /// read, so a NaN or infinity there never leaks).
    MaskedSum,
    /// `last_token(m)`: 1 at the last token with `m_t ≠ 0`, 0 elsewhere. No derivative.
    LastToken,
    /// `gae(r, v, m, γ, λ)`: generalized advantage estimation, backwards over the tokens with
    /// `m_t ≠ 0` ([`gae`]). No derivative: its result is a constant for differentiation.
    Gae,
    /// `whiten(x, m)`: `(x − μ)/sqrt(σ² + 1e-8)` at tokens with `m_t ≠ 0`, 0 elsewhere, with μ,
    /// σ² (unbiased) over the valid tokens of the whole batch ([`whiten_stats`]). No derivative.
    Whiten,
    /// `sort_by(v, k)`: example i gets the `v` of the example whose `k` is the i-th smallest in
    /// the batch (a stable sort: ties keep example order; [`sort_permutation`]). `sort(x)` is
    /// `sort_by(x, x)`. Differentiable in `v` (its adjoint is `unsort`), not in `k`.
    SortBy,
    /// `unsort(a, k)`: example j gets `a` at the rank of its own `k` (the inverse permutation
    /// of `sort_by`): made by differentiation of `sort_by`, whose adjoint it is, and the other
    /// way round.
    Unsort,
}

impl Op {
    /// A constant node's op.
    pub fn constant(x: f64) -> Op {
        // Normalize -0.0 to 0.0 so that hash-consing treats them as one constant.
        Op::Const(if x == 0.0 { 0.0f64 } else { x }.to_bits())
    }

    /// The value of a `Const`.
    pub fn const_value(self) -> Option<f64> {
        match self {
            Op::Const(bits) => Some(f64::from_bits(bits)),
            _ => None,
        }
    }

    /// Every op that is not a leaf, in declaration order: the table [`Op::from_name`] reads.
    /// (Leaves carry a payload and are made by the checker, never named.)
    pub const OPERATORS: [Op; 39] = {
        use Op::*;
        [
            Neg, Add, Sub, Mul, Div, Pow, Exp, Log, Log1p, Expm1, Sqrt, Abs, Sign, Sigmoid,
            LogSigmoid, Softplus, Tanh, Relu, Min, Max, StopGrad, Lt, Le, Gt, Ge, Eq, Ne, And, Or,
            Not, Select, Broadcast, Sum, MaskedSum, LastToken, Gae, Whiten, SortBy, Unsort,
        ]
    };

    /// The position of a non-leaf op in [`Op::OPERATORS`] (`None` for leaves). Exhaustive, so
    /// a new op must be given its place; the compile-time check below the `impl` then holds
    /// the table and the positions to each other.
    const fn position(self) -> Option<usize> {
        use Op::*;
        Some(match self {
            Const(_) | BoolConst(_) | Input(_) | TokenInput(_) | Param(_) => return None,
            Neg => 0,
            Add => 1,
            Sub => 2,
            Mul => 3,
            Div => 4,
            Pow => 5,
            Exp => 6,
            Log => 7,
            Log1p => 8,
            Expm1 => 9,
            Sqrt => 10,
            Abs => 11,
            Sign => 12,
            Sigmoid => 13,
            LogSigmoid => 14,
            Softplus => 15,
            Tanh => 16,
            Relu => 17,
            Min => 18,
            Max => 19,
            StopGrad => 20,
            Lt => 21,
            Le => 22,
            Gt => 23,
            Ge => 24,
            Eq => 25,
            Ne => 26,
            And => 27,
            Or => 28,
            Not => 29,
            Select => 30,
            Broadcast => 31,
            Sum => 32,
            MaskedSum => 33,
            LastToken => 34,
            Gae => 35,
            Whiten => 36,
            SortBy => 37,
            Unsort => 38,
        })
    }

    /// The non-leaf op printed as `name` ([`Op::name`]); the checker's function table is the
    /// ones among them whose [`Op::syntax`] is [`Syntax::Call`].
    pub fn from_name(name: &str) -> Option<Op> {
        Op::OPERATORS.into_iter().find(|op| op.name() == name)
    }

    /// The built-in functions of the language (ops written `name(args)`), in table order.
    pub fn functions() -> impl Iterator<Item = Op> {
        Op::OPERATORS
            .into_iter()
            .filter(|op| op.syntax() == Syntax::Call)
    }

    /// How a source writes this op.
    pub fn syntax(self) -> Syntax {
        use Op::*;
        match self {
            Const(_) | BoolConst(_) => Syntax::Literal,
            Input(_) | TokenInput(_) | Param(_) => Syntax::Name,
            Neg => Syntax::Prefix(UnaryOp::Neg),
            Not => Syntax::Prefix(UnaryOp::Not),
            Add => Syntax::Infix(BinaryOp::Add),
            Sub => Syntax::Infix(BinaryOp::Sub),
            Mul => Syntax::Infix(BinaryOp::Mul),
            Div => Syntax::Infix(BinaryOp::Div),
            Pow => Syntax::Infix(BinaryOp::Pow),
            Lt => Syntax::Infix(BinaryOp::Lt),
            Le => Syntax::Infix(BinaryOp::Le),
            Gt => Syntax::Infix(BinaryOp::Gt),
            Ge => Syntax::Infix(BinaryOp::Ge),
            Eq => Syntax::Infix(BinaryOp::Eq),
            Ne => Syntax::Infix(BinaryOp::Ne),
            And => Syntax::Infix(BinaryOp::And),
            Or => Syntax::Infix(BinaryOp::Or),
            Select => Syntax::Conditional,
            Exp | Log | Log1p | Expm1 | Sqrt | Abs | Sigmoid | LogSigmoid | Softplus | Tanh
            | Relu | Min | Max | StopGrad | MaskedSum | LastToken | Gae | Whiten | SortBy => {
                Syntax::Call
            }
            Sign | Broadcast | Sum | Unsort => Syntax::Internal,
        }
    }

    /// The op of an infix operator (the inverse of [`Op::syntax`] on [`Syntax::Infix`]).
    pub fn infix(op: BinaryOp) -> Op {
        match op {
            BinaryOp::Add => Op::Add,
            BinaryOp::Sub => Op::Sub,
            BinaryOp::Mul => Op::Mul,
            BinaryOp::Div => Op::Div,
            BinaryOp::Pow => Op::Pow,
            BinaryOp::Lt => Op::Lt,
            BinaryOp::Le => Op::Le,
            BinaryOp::Gt => Op::Gt,
            BinaryOp::Ge => Op::Ge,
            BinaryOp::Eq => Op::Eq,
            BinaryOp::Ne => Op::Ne,
            BinaryOp::And => Op::And,
            BinaryOp::Or => Op::Or,
        }
    }

    /// The op of a prefix operator (the inverse of [`Op::syntax`] on [`Syntax::Prefix`]).
    pub fn prefix(op: UnaryOp) -> Op {
        match op {
            UnaryOp::Neg => Op::Neg,
            UnaryOp::Not => Op::Not,
        }
    }

    /// Number of operands.
    pub fn arity(self) -> usize {
        use Op::*;
        match self {
            Const(_) | BoolConst(_) | Input(_) | TokenInput(_) | Param(_) => 0,
            Neg | Exp | Log | Log1p | Expm1 | Sqrt | Abs | Sign | Sigmoid | LogSigmoid
            | Softplus | Tanh | Relu | StopGrad | Not | Sum | LastToken => 1,
            Add | Sub | Mul | Div | Pow | Min | Max | Lt | Le | Gt | Ge | Eq | Ne | And | Or
            | Broadcast | MaskedSum | Whiten | SortBy | Unsort => 2,
            Select => 3,
            Gae => 5,
        }
    }

    /// Operand element types this op requires, and its result's element type. `Select`'s
    /// branches must agree with each other; its listed branch type is `Num` (booleans are
    /// selected with and/or). Shapes follow [`Op::shape`] and [`Op::operand_shapes_ok`].
    pub fn signature(self) -> (&'static [Ty], Ty) {
        use Op::*;
        use Ty::*;
        match self {
            Const(_) | Input(_) | TokenInput(_) | Param(_) => (&[], Num),
            BoolConst(_) => (&[], Bool),
            Neg | Exp | Log | Log1p | Expm1 | Sqrt | Abs | Sign | Sigmoid | LogSigmoid
            | Softplus | Tanh | Relu | StopGrad | Sum | LastToken => (&[Num], Num),
            Add | Sub | Mul | Div | Pow | Min | Max | Broadcast | MaskedSum | Whiten | SortBy
            | Unsort => (&[Num, Num], Num),
            Lt | Le | Gt | Ge | Eq | Ne => (&[Num, Num], Bool),
            And | Or => (&[Bool, Bool], Bool),
            Not => (&[Bool], Bool),
            Select => (&[Bool, Num, Num], Num),
            Gae => (&[Num, Num, Num, Num, Num], Num),
        }
    }

    /// How the result's shape follows from the operands'.
    pub fn shape(self) -> Shape {
        use Op::*;
        match self {
            Sum | MaskedSum => Shape::Reduce,
            LastToken | Gae => Shape::Sequence,
            Whiten => Shape::Batch,
            SortBy | Unsort => Shape::Across,
            _ => Shape::Elementwise,
        }
    }

    /// The result type for operands of types `args` (assumed to pass
    /// [`Op::operand_shapes_ok`] and the element types of [`Op::signature`]).
    pub fn result_ty(self, args: &[Ty]) -> Ty {
        let elem = self.signature().1;
        let tokens = match self {
            Op::TokenInput(_) => true,
            _ => match self.shape() {
                Shape::Elementwise => args.iter().any(|t| t.is_token()),
                Shape::Reduce | Shape::Across => false,
                Shape::Sequence | Shape::Batch => true,
            },
        };
        elem.with_tokens(tokens)
    }

    /// What operand `k` must be: masks and sequences per token, `gae`'s γ and λ and
    /// `broadcast`'s value per example, anything else either.
    pub fn operand_shape(self, k: usize) -> OperandShape {
        use Op::*;
        use OperandShape::*;
        match (self, k) {
            (Sum | LastToken, 0) | (Broadcast | MaskedSum | Whiten, 1) | (Gae, 2) => Tokens,
            (Broadcast, 0) | (Gae, 3 | 4) | (SortBy | Unsort, _) => Scalar,
            (
                Const(_) | BoolConst(_) | Input(_) | TokenInput(_) | Param(_) | Neg | Add | Sub
                | Mul | Div | Pow | Exp | Log | Log1p | Expm1 | Sqrt | Abs | Sign | Sigmoid
                | LogSigmoid | Softplus | Tanh | Relu | Min | Max | StopGrad | Lt | Le | Gt | Ge
                | Eq | Ne | And | Or | Not | Select | Broadcast | Sum | MaskedSum | LastToken | Gae
                | Whiten,
                _,
            ) => Any,
        }
    }

    /// Whether operands of these types have the shapes the op needs ([`Op::operand_shape`]).
    /// Returns which operand is wrong.
    pub fn operand_shapes_ok(self, args: &[Ty]) -> Result<(), usize> {
        let wrong = args
            .iter()
            .enumerate()
            .position(|(k, t)| match self.operand_shape(k) {
                OperandShape::Any => false,
                OperandShape::Tokens => !t.is_token(),
                OperandShape::Scalar => t.is_token(),
            });
        match wrong {
            Some(k) => Err(k),
            None => Ok(()),
        }
    }

    /// Whether the op passes no gradient to any operand (its value is a constant for
    /// differentiation): `stop_grad`, `sign`, and the non-differentiable built-ins `gae`,
    /// `whiten`, `last_token`.
    pub fn blocks_gradient(self) -> bool {
        matches!(
            self,
            Op::StopGrad | Op::Sign | Op::Gae | Op::Whiten | Op::LastToken
        )
    }

    /// Whether `op(a, b) == op(b, a)` in value *and* derivative (used to put operands in a
    /// canonical order). `min`/`max` are not: at a tie the gradient goes to the first operand.
    pub fn commutative(self) -> bool {
        matches!(self, Op::Add | Op::Mul | Op::Eq | Op::Ne | Op::And | Op::Or)
    }

    /// The name used in every text form (`--emit typed|grad|graph`).
    pub fn name(self) -> &'static str {
        use Op::*;
        match self {
            Const(_) => "const",
            BoolConst(_) => "bool",
            Input(_) | TokenInput(_) => "input",
            Param(_) => "param",
            Neg => "neg",
            Add => "add",
            Sub => "sub",
            Mul => "mul",
            Div => "div",
            Pow => "pow",
            Exp => "exp",
            Log => "log",
            Log1p => "log1p",
            Expm1 => "expm1",
            Sqrt => "sqrt",
            Abs => "abs",
            Sign => "sign",
            Sigmoid => "sigmoid",
            LogSigmoid => "log_sigmoid",
            Softplus => "softplus",
            Tanh => "tanh",
            Relu => "relu",
            Min => "min",
            Max => "max",
            StopGrad => "stop_grad",
            Lt => "lt",
            Le => "le",
            Gt => "gt",
            Ge => "ge",
            Eq => "eq",
            Ne => "ne",
            And => "and",
            Or => "or",
            Not => "not",
            Select => "select",
            Broadcast => "broadcast",
            Sum => "sum",
            MaskedSum => "masked_sum",
            LastToken => "last_token",
            Gae => "gae",
            Whiten => "whiten",
            SortBy => "sort_by",
            Unsort => "unsort",
        }
    }

    /// Evaluates a non-leaf elementwise op on f64 operands (booleans as 0.0 / 1.0). This is
    /// the reference semantics: the JIT and the burn lowering must agree with it. Reductions,
    /// sequence and batch ops read whole sequences and are evaluated by the interpreter with
    /// the functions below; here they give NaN.
    pub fn eval(self, a: &[f64]) -> f64 {
        use Op::*;
        let b = |x: bool| if x { 1.0 } else { 0.0 };
        match self {
            Const(bits) => f64::from_bits(bits),
            BoolConst(v) => b(v),
            Input(_) | TokenInput(_) | Param(_) => {
                unreachable!("leaves are bound by the evaluator")
            }
            Neg => -a[0],
            Add => a[0] + a[1],
            Sub => a[0] - a[1],
            Mul => a[0] * a[1],
            Div => a[0] / a[1],
            Pow => a[0].powf(a[1]),
            Exp => a[0].exp(),
            Log => a[0].ln(),
            Log1p => a[0].ln_1p(),
            Expm1 => a[0].exp_m1(),
            Sqrt => a[0].sqrt(),
            Abs => a[0].abs(),
            Sign => sign(a[0]),
            Sigmoid => sigmoid(a[0]),
            LogSigmoid => -softplus(-a[0]),
            Softplus => softplus(a[0]),
            Tanh => a[0].tanh(),
            Relu => relu(a[0]),
            Min => min(a[0], a[1]),
            Max => max(a[0], a[1]),
            StopGrad => a[0],
            Lt => b(a[0] < a[1]),
            Le => b(a[0] <= a[1]),
            Gt => b(a[0] > a[1]),
            Ge => b(a[0] >= a[1]),
            Eq => b(a[0] == a[1]),
            Ne => b(a[0] != a[1]),
            And => b(a[0] != 0.0 && a[1] != 0.0),
            Or => b(a[0] != 0.0 || a[1] != 0.0),
            Not => b(a[0] == 0.0),
            Select => {
                if a[0] != 0.0 {
                    a[1]
                } else {
                    a[2]
                }
            }
            Broadcast => a[0],
            Sum | MaskedSum | LastToken | Gae | Whiten | SortBy | Unsort => f64::NAN,
        }
    }
}

// Every op has its place in `Op::OPERATORS`, and the table holds each at its position.
const _: () = {
    let mut i = 0;
    while i < Op::OPERATORS.len() {
        assert!(matches!(Op::OPERATORS[i].position(), Some(p) if p == i));
        i += 1;
    }
};

/// `sign(x)`: -1, 0 or 1 (NaN stays NaN).
pub fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        x * 0.0
    }
}

/// `max(x, 0)`, NaN-propagating.
pub fn relu(x: f64) -> f64 {
    if x > 0.0 { x } else { x * 0.0 }
}

/// `min(a, b)`, IEEE 754-2019 `minimum`: NaN in either gives NaN (unlike `f64::min`), so
/// bad rows are never hidden; `-0 < +0`. The same as Cranelift's `fmin`.
pub fn min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a < b || (a == b && a.is_sign_negative()) {
        a
    } else {
        b
    }
}

/// `max(a, b)`, IEEE 754-2019 `maximum` (NaN-propagating), as Cranelift's `fmax`.
pub fn max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a > b || (a == b && a.is_sign_positive()) {
        a
    } else {
        b
    }
}

/// `1 / (1 + e^-x)` without overflow for large |x|.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `ln(1 + e^x)` as `max(x, 0) + ln(1 + e^-|x|)`: exact for large |x|.
pub fn softplus(x: f64) -> f64 {
    relu(x) + (-x.abs()).exp().ln_1p()
}

/// `Σ_t m_t·x_t` over the tokens with `m_t ≠ 0`; `x(t)` is only read there.
pub fn masked_sum(x: impl Fn(usize) -> f64, mask: &[f64]) -> f64 {
    mask.iter()
        .enumerate()
        .filter(|(_, m)| **m != 0.0)
        .map(|(t, m)| x(t) * m)
        .sum()
}

/// 1.0 at the last token with `m_t ≠ 0`, 0.0 elsewhere (all zeros when no token is valid).
pub fn last_token(mask: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; mask.len()];
    if let Some(t) = mask.iter().rposition(|m| *m != 0.0) {
        out[t] = 1.0;
    }
    out
}

/// Generalized advantage estimation (Schulman et al. 2015, arXiv 1506.02438) over the tokens
/// with `m_t ≠ 0`, from the last to the first: with `v'` the value of the next valid token (0
/// after the last one), `δ_t = r_t + γ v' − v_t` and `A_t = δ_t + γλ A'` where `A'` is the next
/// valid token's advantage (0 after the last). Tokens with `m_t = 0` get 0 and are skipped, so
/// the recursion runs over valid tokens only. `rewards(t)` and `values(t)` are only read at
/// valid tokens.
pub fn gae(
    rewards: impl Fn(usize) -> f64,
    values: impl Fn(usize) -> f64,
    mask: &[f64],
    gamma: f64,
    lambda: f64,
) -> Vec<f64> {
    let mut out = vec![0.0; mask.len()];
    let (mut next_value, mut next_advantage) = (0.0, 0.0);
    for t in (0..mask.len()).rev() {
        if mask[t] == 0.0 {
            continue;
        }
        let v = values(t);
        let delta = rewards(t) + gamma * next_value - v;
        next_advantage = delta + gamma * lambda * next_advantage;
        out[t] = next_advantage;
        next_value = v;
    }
    out
}

/// The order `sort_by` puts a batch in: example indices by ascending `key`, ties in example
/// order (a stable sort; NaN sorts last, as `f64::total_cmp` puts positive NaN).
pub fn sort_permutation(key: &[f64]) -> Vec<usize> {
    let mut perm: Vec<usize> = (0..key.len()).collect();
    perm.sort_by(|&a, &b| key[a].total_cmp(&key[b]));
    perm
}

/// `sort_by(v, key)`: `v[perm[i]]` at position i.
pub fn sort_by(v: &[f64], key: &[f64]) -> Vec<f64> {
    sort_permutation(key).into_iter().map(|j| v[j]).collect()
}

/// `unsort(a, key)`: `a[rank(j)]` at example j, where rank inverts [`sort_permutation`].
pub fn unsort(a: &[f64], key: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; key.len()];
    for (i, j) in sort_permutation(key).into_iter().enumerate() {
        out[j] = a[i];
    }
    out
}

/// The variance floor of [`whiten_stats`] (as TRL's `masked_whiten`).
pub const WHITEN_EPS: f64 = 1e-8;

/// Mean and `1/sqrt(σ² + 1e-8)` of the values at valid tokens: `pairs` yields (value, mask)
/// for every token of the batch, and tokens with mask 0 are skipped. σ² is the unbiased
/// variance (Bessel's n/(n−1)), taken as 0 when fewer than two tokens are valid. `whiten(x, m)`
/// is `(x_t − mean)·scale` at valid tokens and 0 elsewhere.
pub fn whiten_stats(pairs: impl Iterator<Item = (f64, f64)> + Clone) -> (f64, f64) {
    let valid = pairs.filter(|(_, m)| *m != 0.0).map(|(x, _)| x);
    let n = valid.clone().count() as f64;
    if n == 0.0 {
        return (0.0, 1.0 / WHITEN_EPS.sqrt());
    }
    let mean = valid.clone().sum::<f64>() / n;
    let var = if n > 1.0 {
        valid.map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, 1.0 / (var + WHITEN_EPS).sqrt())
}
