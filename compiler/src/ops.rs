//! The one closed set of operations. Every stage has one exhaustive `match` over [`Op`]:
//! typing and printing here, evaluation in [`Op::eval`], derivatives in `grad.rs`,
//! simplification in `simplify.rs`, Cranelift lowering in `jit.rs`, burn lowering in the
//! runtime. Adding an op is a compile error in each of those places.

use serde::Serialize;

/// Value types. Every value is a per-example scalar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Ty {
    /// A real number (f64 in the interpreter and JIT, the tensor dtype on burn).
    Num,
    /// A truth value.
    Bool,
}

impl std::fmt::Display for Ty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Ty::Num => "num",
            Ty::Bool => "bool",
        })
    }
}

/// An operation of the expression DAG. Leaves carry their payload; the others take their
/// operands from the node's argument list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Op {
    /// A constant; the payload is `f64::to_bits` so the op can be hashed.
    Const(u64),
    /// A boolean constant.
    BoolConst(bool),
    /// The i-th declared input.
    Input(u32),
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

    /// Number of operands.
    pub fn arity(self) -> usize {
        use Op::*;
        match self {
            Const(_) | BoolConst(_) | Input(_) | Param(_) => 0,
            Neg | Exp | Log | Log1p | Expm1 | Sqrt | Abs | Sign | Sigmoid | LogSigmoid
            | Softplus | Tanh | Relu | StopGrad | Not => 1,
            Add | Sub | Mul | Div | Pow | Min | Max | Lt | Le | Gt | Ge | Eq | Ne | And | Or => 2,
            Select => 3,
        }
    }

    /// Operand types this op requires, and its result type. `Select`'s branches must agree
    /// with each other; its listed branch type is `Num` (booleans are selected with and/or).
    pub fn signature(self) -> (&'static [Ty], Ty) {
        use Op::*;
        use Ty::*;
        match self {
            Const(_) | Input(_) | Param(_) => (&[], Num),
            BoolConst(_) => (&[], Bool),
            Neg | Exp | Log | Log1p | Expm1 | Sqrt | Abs | Sign | Sigmoid | LogSigmoid
            | Softplus | Tanh | Relu | StopGrad => (&[Num], Num),
            Add | Sub | Mul | Div | Pow | Min | Max => (&[Num, Num], Num),
            Lt | Le | Gt | Ge | Eq | Ne => (&[Num, Num], Bool),
            And | Or => (&[Bool, Bool], Bool),
            Not => (&[Bool], Bool),
            Select => (&[Bool, Num, Num], Num),
        }
    }

    /// The result type.
    pub fn ty(self) -> Ty {
        self.signature().1
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
            Input(_) => "input",
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
        }
    }

    /// Evaluates a non-leaf op on f64 operands (booleans as 0.0 / 1.0). This is the
    /// reference semantics: the JIT and the burn lowering must agree with it.
    pub fn eval(self, a: &[f64]) -> f64 {
        use Op::*;
        let b = |x: bool| if x { 1.0 } else { 0.0 };
        match self {
            Const(bits) => f64::from_bits(bits),
            BoolConst(v) => b(v),
            Input(_) | Param(_) => unreachable!("leaves are bound by the evaluator"),
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
        }
    }
}

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
