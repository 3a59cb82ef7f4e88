//! `check`: the syntax tree to a typed, resolved [`Objective`]. After `check`, every name is
//! resolved, every expression is typed (`num`, `bool`, or per token `num[T]`, `bool[T]`), every
//! input has a known source, type and differentiability, parameter defaults lie in their
//! ranges, the loss and the metrics are per-example values, and the loss depends on a
//! differentiable input.

use crate::dag::{Dag, Id};
use crate::ops::{Op, Ty};
use poc_grammar::diag::suggest;
use poc_grammar::{
    Ast, BinaryOp, Diagnostic, ErrorKind, Expr, ExprKind, Range, SourceExpr, Span, StatementKind,
    UnaryOp,
};
use std::collections::{BTreeMap, HashMap};

/// Which completion of the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Side {
    /// The preferred completion.
    Chosen,
    /// The dispreferred completion.
    Rejected,
}

impl Side {
    /// `chosen` / `rejected`.
    pub fn name(self) -> &'static str {
        match self {
            Side::Chosen => "chosen",
            Side::Rejected => "rejected",
        }
    }
}

/// What the runtime must compute (or read) for an input: the observables it knows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Source {
    /// Σ log π_θ over the completion's tokens.
    PolicyLogps(Side),
    /// The same under the reference model.
    ReferenceLogps(Side),
    /// Number of completion tokens.
    Tokens(Side),
    /// Mean full-vocabulary entropy of the reference over the completion (nats).
    ReferenceEntropy(Side),
    /// The model's vocabulary size.
    VocabSize,
    /// A reward model's scalar output.
    Reward(Side),
    /// A numeric dataset column.
    Column(String),
    /// An observable of a sampled completion (on-policy RL).
    Rollout(Rollout),
}

/// Observables of a completion sampled from the policy (on-policy RL such as PPO): the
/// runtime generates the completion, scores it, and runs the models over its tokens. Per-token
/// sources are `num[T]`: one value per completion token, padding included, with the mask
/// telling which tokens are real.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Rollout {
    /// log π_θ of each completion token (`num[T]`).
    PolicyTokenLogps,
    /// The same under the policy that sampled the completion (`num[T]`).
    OldPolicyTokenLogps,
    /// The same under the reference model (`num[T]`).
    ReferenceTokenLogps,
    /// The trained value head's estimate at each token (`num[T]`).
    Values,
    /// The value head's estimate when the completion was sampled (`num[T]`).
    OldValues,
    /// The reward model's score of the whole completion (`num`).
    Score,
    /// 1 at completion tokens, 0 at padding (`num[T]`).
    Mask,
}

impl Rollout {
    /// Every rollout source, in documentation order.
    pub const ALL: [Rollout; 7] = [
        Rollout::PolicyTokenLogps,
        Rollout::OldPolicyTokenLogps,
        Rollout::ReferenceTokenLogps,
        Rollout::Values,
        Rollout::OldValues,
        Rollout::Score,
        Rollout::Mask,
    ];

    /// The canonical source text.
    pub fn text(self) -> &'static str {
        match self {
            Rollout::PolicyTokenLogps => "policy.token_logps(completion)",
            Rollout::OldPolicyTokenLogps => "old_policy.token_logps(completion)",
            Rollout::ReferenceTokenLogps => "reference.token_logps(completion)",
            Rollout::Values => "value_head(completion)",
            Rollout::OldValues => "old_value_head(completion)",
            Rollout::Score => "score(completion)",
            Rollout::Mask => "completion.mask",
        }
    }
}

impl Source {
    /// Whether the loss is differentiated with respect to this input.
    pub fn differentiable(&self) -> bool {
        matches!(
            self,
            Source::PolicyLogps(_)
                | Source::Reward(_)
                | Source::Rollout(Rollout::PolicyTokenLogps | Rollout::Values)
        )
    }

    /// The input's type: per token for the per-token rollout sources, `num` otherwise.
    pub fn ty(&self) -> Ty {
        match self {
            Source::Rollout(r) if *r != Rollout::Score => Ty::TokNum,
            _ => Ty::Num,
        }
    }

    /// The canonical source text (`policy.logps(chosen)`).
    pub fn text(&self) -> String {
        match self {
            Source::PolicyLogps(s) => format!("policy.logps({})", s.name()),
            Source::ReferenceLogps(s) => format!("reference.logps({})", s.name()),
            Source::Tokens(s) => format!("tokens({})", s.name()),
            Source::ReferenceEntropy(s) => format!("reference.entropy({})", s.name()),
            Source::VocabSize => "vocab_size".into(),
            Source::Reward(s) => format!("reward({})", s.name()),
            Source::Column(c) => format!("column(\"{c}\")"),
            Source::Rollout(r) => r.text().into(),
        }
    }

    /// The source implied by one of the standard input names.
    pub fn standard(name: &str) -> Option<Source> {
        use Side::*;
        Some(match name {
            "policy_chosen_logps" => Source::PolicyLogps(Chosen),
            "policy_rejected_logps" => Source::PolicyLogps(Rejected),
            "ref_chosen_logps" => Source::ReferenceLogps(Chosen),
            "ref_rejected_logps" => Source::ReferenceLogps(Rejected),
            "chosen_len" => Source::Tokens(Chosen),
            "rejected_len" => Source::Tokens(Rejected),
            "ref_chosen_entropy" => Source::ReferenceEntropy(Chosen),
            "ref_rejected_entropy" => Source::ReferenceEntropy(Rejected),
            "vocab_size" => Source::VocabSize,
            "score_chosen" | "score_rejected" => Source::Column(name.to_string()),
            "reward_chosen" => Source::Reward(Chosen),
            "reward_rejected" => Source::Reward(Rejected),
            _ => return None,
        })
    }
}

/// The standard input names, in documentation order.
pub const STANDARD_INPUTS: [&str; 13] = [
    "policy_chosen_logps",
    "policy_rejected_logps",
    "ref_chosen_logps",
    "ref_rejected_logps",
    "chosen_len",
    "rejected_len",
    "ref_chosen_entropy",
    "ref_rejected_entropy",
    "vocab_size",
    "score_chosen",
    "score_rejected",
    "reward_chosen",
    "reward_rejected",
];

/// A declared parameter.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Param {
    /// Its name.
    pub name: String,
    /// The default value.
    pub default: f64,
    /// The allowed range.
    pub range: Option<Range>,
    /// Its doc comment.
    pub docs: Vec<String>,
}

/// A declared input.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Input {
    /// Its name (the key in `poc eval` rows).
    pub name: String,
    /// What the runtime computes for it.
    pub source: Source,
    /// Whether gradients flow to it.
    pub differentiable: bool,
    /// Its doc comment.
    pub docs: Vec<String>,
}

/// A named value: a `let` or a metric.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Binding {
    /// Its name.
    pub name: String,
    /// Its node.
    pub id: Id,
    /// Its type.
    pub ty: Ty,
}

/// A checked objective: declarations plus the DAG of every value.
#[derive(Debug, Clone)]
pub struct Objective {
    /// The objective's name.
    pub name: String,
    /// Its doc comment (citation).
    pub docs: Vec<String>,
    /// Parameters, in declaration order (`Op::Param(i)` is `params[i]`).
    pub params: Vec<Param>,
    /// Inputs, in declaration order (`Op::Input(i)` is `inputs[i]`).
    pub inputs: Vec<Input>,
    /// `let` bindings in dependency order.
    pub lets: Vec<Binding>,
    /// Every value.
    pub dag: Dag,
    /// The per-example loss.
    pub loss: Id,
    /// Metrics in declaration order.
    pub metrics: Vec<Binding>,
}

impl Objective {
    /// The parameter defaults, in order.
    pub fn default_params(&self) -> Vec<f64> {
        self.params.iter().map(|p| p.default).collect()
    }

    /// Parameter values after `--set name=value` overrides, each checked against its range.
    pub fn params_with(&self, sets: &[String]) -> Result<Vec<f64>, Vec<Diagnostic>> {
        let mut values = self.default_params();
        let mut errors = Vec::new();
        for s in sets {
            let Some((name, value)) = s.split_once('=') else {
                errors.push(Diagnostic::global(
                    ErrorKind::BadSet,
                    format!("`--set {s}`: expected NAME=VALUE"),
                ));
                continue;
            };
            let (name, value) = (name.trim(), value.trim());
            let Some(i) = self.params.iter().position(|p| p.name == name) else {
                let mut d = Diagnostic::global(
                    ErrorKind::BadSet,
                    format!(
                        "`--set {s}`: objective `{}` has no parameter `{name}`",
                        self.name
                    ),
                );
                let names = self.params.iter().map(|p| p.name.as_str());
                d = match suggest(name, names) {
                    Some(c) => d.with_hint(format!("did you mean `{c}`?")),
                    None if self.params.is_empty() => d.with_hint("it has no parameters"),
                    None => d.with_hint(format!(
                        "its parameters are: {}",
                        self.params
                            .iter()
                            .map(|p| p.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                };
                errors.push(d);
                continue;
            };
            let Some(x) = parse_number(value) else {
                errors.push(Diagnostic::global(
                    ErrorKind::BadSet,
                    format!("`--set {s}`: `{value}` is not a number"),
                ));
                continue;
            };
            if let Some(r) = &self.params[i].range
                && !r.contains(x)
            {
                errors.push(Diagnostic::global(
                    ErrorKind::BadSet,
                    format!("`--set {s}`: {name} must lie in {r}"),
                ));
                continue;
            }
            values[i] = x;
        }
        if errors.is_empty() {
            Ok(values)
        } else {
            Err(errors)
        }
    }
}

fn parse_number(s: &str) -> Option<f64> {
    match s {
        "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        _ => s.parse::<f64>().ok().filter(|x| !x.is_nan()),
    }
}

/// The functions of the language: name and number of arguments.
pub const FUNCTIONS: [(&str, usize); 20] = [
    ("exp", 1),
    ("log", 1),
    ("log1p", 1),
    ("expm1", 1),
    ("sqrt", 1),
    ("abs", 1),
    ("sigmoid", 1),
    ("log_sigmoid", 1),
    ("softplus", 1),
    ("tanh", 1),
    ("relu", 1),
    ("min", 2),
    ("max", 2),
    ("clamp", 3),
    ("stop_grad", 1),
    ("masked_sum", 2),
    ("masked_mean", 2),
    ("last_token", 1),
    ("gae", 5),
    ("whiten", 2),
];

/// What a function's argument must be.
#[derive(Clone, Copy)]
enum ArgShape {
    /// A number, per example or per token.
    Any,
    /// A per-token value (a mask).
    Tokens,
    /// A per-example number (`gae`'s γ and λ, arguments 4 and 5).
    Scalar,
}

fn arg_shape(f: &str, k: usize) -> ArgShape {
    match (f, k) {
        ("masked_sum" | "masked_mean" | "whiten", 1) | ("last_token", 0) | ("gae", 2) => {
            ArgShape::Tokens
        }
        ("gae", 3 | 4) => ArgShape::Scalar,
        _ => ArgShape::Any,
    }
}

/// Names that look like a function from another library, with what to write instead.
const ALIASES: [(&str, &str); 8] = [
    ("ln", "log"),
    ("logsigmoid", "log_sigmoid"),
    ("logsig", "log_sigmoid"),
    ("sig", "sigmoid"),
    ("detach", "stop_grad"),
    ("clip", "clamp"),
    ("pow", "the `^` operator"),
    ("square", "`x ^ 2`"),
];

/// What a name in scope refers to.
#[derive(Clone)]
enum Decl {
    Param(u32),
    Input(u32),
    Let(usize),
}

/// Checks a parsed file. Returns every error of this stage.
pub fn check(ast: &Ast) -> Result<Objective, Vec<Diagnostic>> {
    let mut cx = Checker::default();
    cx.declare(ast);
    cx.resolve_all();
    cx.finish()
}

#[derive(Default)]
struct Checker {
    errors: Vec<Diagnostic>,
    name: Option<String>,
    docs: Vec<String>,
    params: Vec<Param>,
    inputs: Vec<Input>,
    scope: HashMap<String, (Decl, Span)>,
    let_exprs: Vec<(String, Expr)>,
    let_state: Vec<LetState>,
    lets: Vec<Binding>,
    dag: Dag,
    loss_expr: Option<(Expr, Span)>,
    metric_exprs: Vec<(String, Expr)>,
    loss: Option<Id>,
    metrics: Vec<Binding>,
    resolving: Vec<usize>,
}

#[derive(Clone, Copy)]
enum LetState {
    Pending,
    InProgress,
    Done(Option<Id>),
}

impl Checker {
    fn declare(&mut self, ast: &Ast) {
        let mut metric_names: BTreeMap<String, Span> = BTreeMap::new();
        for st in &ast.statements {
            match &st.kind {
                StatementKind::Objective(n) => {
                    if self.name.is_some() {
                        self.errors.push(Diagnostic::new(
                            ErrorKind::DuplicateDefinition,
                            n.span,
                            "a file declares one objective; this is a second `objective` line",
                        ));
                    } else {
                        self.name = Some(n.name.clone());
                        self.docs = st.docs.clone();
                    }
                }
                StatementKind::Param {
                    name,
                    default,
                    default_span,
                    range,
                } => {
                    if let Some(r) = range {
                        if r.lo > r.hi || (r.lo == r.hi && !(r.lo_closed && r.hi_closed)) {
                            self.errors.push(Diagnostic::new(
                                ErrorKind::BadRange,
                                r.span,
                                format!("the range {r} of `{}` is empty", name.name),
                            ));
                        } else if !r.contains(*default) {
                            self.errors.push(
                                Diagnostic::new(
                                    ErrorKind::DefaultOutOfRange,
                                    *default_span,
                                    format!(
                                        "the default {} of `{}` lies outside its range {r}",
                                        poc_grammar::print::number(*default),
                                        name.name
                                    ),
                                )
                                .with_hint("change the default or widen the range"),
                            );
                        }
                    }
                    let i = self.params.len() as u32;
                    if self.bind(&name.name, Decl::Param(i), name.span) {
                        self.params.push(Param {
                            name: name.name.clone(),
                            default: *default,
                            range: *range,
                            docs: st.docs.clone(),
                        });
                    }
                }
                StatementKind::Input { name, source } => {
                    let Some(source) = self.input_source(&name.name, name.span, source.as_ref())
                    else {
                        continue;
                    };
                    let i = self.inputs.len() as u32;
                    if self.bind(&name.name, Decl::Input(i), name.span) {
                        self.inputs.push(Input {
                            name: name.name.clone(),
                            differentiable: source.differentiable(),
                            source,
                            docs: st.docs.clone(),
                        });
                    }
                }
                StatementKind::Let { name, value } => {
                    let i = self.let_exprs.len();
                    if self.bind(&name.name, Decl::Let(i), name.span) {
                        self.let_exprs.push((name.name.clone(), value.clone()));
                        self.let_state.push(LetState::Pending);
                    }
                }
                StatementKind::Loss(e) => {
                    if self.loss_expr.is_some() {
                        self.errors.push(Diagnostic::new(
                            ErrorKind::DuplicateDefinition,
                            st.span,
                            "the loss is defined twice",
                        ));
                    } else {
                        self.loss_expr = Some((e.clone(), st.span));
                    }
                }
                StatementKind::Metric { name, value } => {
                    if metric_names.contains_key(&name.name) {
                        self.errors.push(Diagnostic::new(
                            ErrorKind::DuplicateDefinition,
                            name.span,
                            format!("metric `{}` is defined twice", name.name),
                        ));
                    } else {
                        metric_names.insert(name.name.clone(), name.span);
                        self.metric_exprs.push((name.name.clone(), value.clone()));
                    }
                }
            }
        }
    }

    /// Declares `name`; reports a duplicate and returns false if it is taken.
    fn bind(&mut self, name: &str, decl: Decl, span: Span) -> bool {
        if let Some((prev, _)) = self.scope.get(name) {
            let what = match prev {
                Decl::Param(_) => "a parameter",
                Decl::Input(_) => "an input",
                Decl::Let(_) => "a `let`",
            };
            self.errors.push(Diagnostic::new(
                ErrorKind::DuplicateDefinition,
                span,
                format!("`{name}` is already defined as {what}"),
            ));
            return false;
        }
        self.scope.insert(name.to_string(), (decl, span));
        true
    }

    fn input_source(&mut self, name: &str, span: Span, src: Option<&SourceExpr>) -> Option<Source> {
        let Some(src) = src else {
            if let Some(s) = Source::standard(name) {
                return Some(s);
            }
            let mut d = Diagnostic::new(
                ErrorKind::UnknownSource,
                span,
                format!("`{name}` is not a standard input name, so it needs a source"),
            );
            d = match suggest(name, STANDARD_INPUTS) {
                Some(c) => d.with_hint(format!("did you mean `{c}`? otherwise write `input {name} from column(\"{name}\")` or another source")),
                None => d.with_hint(format!("write e.g. `input {name} from column(\"{name}\")`; sources are listed in docs/LANGUAGE.md")),
            };
            self.errors.push(d);
            return None;
        };
        let side = |arg: &str| match arg {
            "chosen" => Some(Side::Chosen),
            "rejected" => Some(Side::Rejected),
            _ => None,
        };
        let found = match src {
            SourceExpr::Column { name, .. } => Some(Source::Column(name.clone())),
            SourceExpr::Path { path, .. } if path == "vocab_size" => Some(Source::VocabSize),
            SourceExpr::Path { path, .. } if path == "completion.mask" => {
                Some(Source::Rollout(Rollout::Mask))
            }
            SourceExpr::Call { path, arg, .. } if arg == "completion" => match path.as_str() {
                "policy.token_logps" => Some(Source::Rollout(Rollout::PolicyTokenLogps)),
                "old_policy.token_logps" => Some(Source::Rollout(Rollout::OldPolicyTokenLogps)),
                "reference.token_logps" | "ref.token_logps" => {
                    Some(Source::Rollout(Rollout::ReferenceTokenLogps))
                }
                "value_head" => Some(Source::Rollout(Rollout::Values)),
                "old_value_head" => Some(Source::Rollout(Rollout::OldValues)),
                "score" => Some(Source::Rollout(Rollout::Score)),
                _ => None,
            },
            SourceExpr::Call { path, arg, .. } => side(arg).and_then(|s| match path.as_str() {
                "policy.logps" => Some(Source::PolicyLogps(s)),
                "reference.logps" | "ref.logps" => Some(Source::ReferenceLogps(s)),
                "tokens" => Some(Source::Tokens(s)),
                "reference.entropy" | "ref.entropy" => Some(Source::ReferenceEntropy(s)),
                "reward" => Some(Source::Reward(s)),
                _ => None,
            }),
            SourceExpr::Path { .. } => None,
        };
        if found.is_none() {
            let text = poc_grammar::print::source_text(src);
            let hint = if text.contains("completion") || text.contains("token_logps") {
                let all: Vec<&str> = Rollout::ALL.iter().map(|r| r.text()).collect();
                format!("rollout sources are {}", all.join(", "))
            } else {
                "sources are policy.logps(S), reference.logps(S), tokens(S), reference.entropy(S), reward(S) with S = chosen|rejected, vocab_size, column(\"NAME\")".to_string()
            };
            self.errors.push(
                Diagnostic::new(
                    ErrorKind::UnknownSource,
                    src.span(),
                    format!("unknown input source `{text}`"),
                )
                .with_hint(hint),
            );
        }
        found
    }

    fn resolve_all(&mut self) {
        for i in 0..self.let_exprs.len() {
            self.resolve_let(i, None);
        }
        if let Some((e, span)) = self.loss_expr.clone() {
            if let Some(id) = self.expect_scalar(&e, Ty::Num, "the loss") {
                self.loss = Some(id);
                if !depends_on_differentiable(&self.dag, &self.inputs, id) {
                    let diff: Vec<&str> = self
                        .inputs
                        .iter()
                        .filter(|i| i.differentiable)
                        .map(|i| i.name.as_str())
                        .collect();
                    let hint = if diff.is_empty() {
                        "declare a policy input such as `input policy_chosen_logps` (or a reward, for reward models) and use it".to_string()
                    } else {
                        format!("use one of {} outside `stop_grad`", diff.join(", "))
                    };
                    self.errors.push(
                        Diagnostic::new(
                            ErrorKind::NonDifferentiableLoss,
                            span,
                            "the loss does not depend on any differentiable input, so its gradient is zero everywhere",
                        )
                        .with_hint(hint),
                    );
                }
            }
        } else if self.name.is_some() {
            self.errors.push(
                Diagnostic::global(ErrorKind::MissingLoss, "the objective defines no `loss`")
                    .with_hint("add a line `loss = ...`"),
            );
        }
        for (name, e) in self.metric_exprs.clone() {
            if let Some((id, ty)) = self.expr(&e) {
                if ty.is_token() {
                    self.errors.push(shape_error(&e, ty, "a metric"));
                } else {
                    self.metrics.push(Binding { name, id, ty });
                }
            }
        }
    }

    fn resolve_let(&mut self, i: usize, use_span: Option<Span>) -> Option<Id> {
        match self.let_state[i] {
            LetState::Done(id) => id,
            LetState::InProgress => {
                let start = self.resolving.iter().position(|&j| j == i).unwrap_or(0);
                let mut cycle: Vec<&str> = self.resolving[start..]
                    .iter()
                    .map(|&j| self.let_exprs[j].0.as_str())
                    .collect();
                cycle.push(&self.let_exprs[i].0);
                let span = use_span.unwrap_or(self.let_exprs[i].1.span);
                self.errors.push(
                    Diagnostic::new(
                        ErrorKind::CyclicLet,
                        span,
                        format!("`let` definitions form a cycle: {}", cycle.join(" -> ")),
                    )
                    .with_hint("a value cannot depend on itself; break the cycle"),
                );
                // Mark every let of the cycle as failed so it is reported once.
                for &j in &self.resolving[start..] {
                    self.let_state[j] = LetState::Done(None);
                }
                None
            }
            LetState::Pending => {
                self.let_state[i] = LetState::InProgress;
                self.resolving.push(i);
                let e = self.let_exprs[i].1.clone();
                let result = self.expr(&e);
                self.resolving.pop();
                if let LetState::Done(None) = self.let_state[i] {
                    return None;
                }
                let id = result.map(|(id, ty)| {
                    self.lets.push(Binding {
                        name: self.let_exprs[i].0.clone(),
                        id,
                        ty,
                    });
                    id
                });
                self.let_state[i] = LetState::Done(id);
                id
            }
        }
    }

    /// Lowers `e` and requires element type `want` (per example or per token), naming `what`
    /// in the error.
    fn expect(&mut self, e: &Expr, want: Ty, what: &str) -> Option<Id> {
        let (id, ty) = self.expr(e)?;
        if ty.elem() != want.elem() {
            self.errors.push(type_error(e, want, what));
            return None;
        }
        Some(id)
    }

    /// Lowers `e` and requires a per-example value of element type `want`.
    fn expect_scalar(&mut self, e: &Expr, want: Ty, what: &str) -> Option<Id> {
        let id = self.expect(e, want, what)?;
        let ty = self.dag.ty(id);
        if ty.is_token() {
            self.errors.push(shape_error(e, ty, what));
            return None;
        }
        Some(id)
    }

    /// Lowers `e` and requires a per-token number.
    fn expect_tokens(&mut self, e: &Expr, what: &str) -> Option<Id> {
        let id = self.expect(e, Ty::Num, what)?;
        if !self.dag.ty(id).is_token() {
            self.errors.push(
                Diagnostic::new(
                    ErrorKind::NumberAsToken,
                    e.span,
                    format!("{what} must be a per-token value (num[T]), but this is a per-example number"),
                )
                .with_hint("masks and sequences come from per-token inputs, e.g. `input mask from completion.mask`"),
            );
            return None;
        }
        Some(id)
    }

    /// The node and its type.
    fn typed(&self, id: Id) -> Option<(Id, Ty)> {
        Some((id, self.dag.ty(id)))
    }

    fn expr(&mut self, e: &Expr) -> Option<(Id, Ty)> {
        match &e.kind {
            ExprKind::Number(x) => Some((self.dag.constant(*x), Ty::Num)),
            ExprKind::Bool(b) => Some((self.dag.add(Op::BoolConst(*b), &[]), Ty::Bool)),
            ExprKind::Name(n) => self.name(n, e.span),
            ExprKind::Unary(UnaryOp::Neg, x) => {
                let a = self.expect(x, Ty::Num, "the operand of `-`")?;
                let id = self.dag.add(Op::Neg, &[a]);
                self.typed(id)
            }
            ExprKind::Unary(UnaryOp::Not, x) => {
                let a = self.expect(x, Ty::Bool, "the operand of `not`")?;
                let id = self.dag.add(Op::Not, &[a]);
                self.typed(id)
            }
            ExprKind::Binary(op, l, r) => {
                let (dag_op, operand_ty) = match op {
                    BinaryOp::Add => (Op::Add, Ty::Num),
                    BinaryOp::Sub => (Op::Sub, Ty::Num),
                    BinaryOp::Mul => (Op::Mul, Ty::Num),
                    BinaryOp::Div => (Op::Div, Ty::Num),
                    BinaryOp::Pow => (Op::Pow, Ty::Num),
                    BinaryOp::Lt => (Op::Lt, Ty::Num),
                    BinaryOp::Le => (Op::Le, Ty::Num),
                    BinaryOp::Gt => (Op::Gt, Ty::Num),
                    BinaryOp::Ge => (Op::Ge, Ty::Num),
                    BinaryOp::Eq => (Op::Eq, Ty::Num),
                    BinaryOp::Ne => (Op::Ne, Ty::Num),
                    BinaryOp::And => (Op::And, Ty::Bool),
                    BinaryOp::Or => (Op::Or, Ty::Bool),
                };
                let what = format!("an operand of `{}`", op.symbol());
                // Check both sides so both sides' errors are reported.
                let a = self.expect(l, operand_ty, &what);
                let b = self.expect(r, operand_ty, &what);
                let (a, b) = (a?, b?);
                let id = self.dag.add(dag_op, &[a, b]);
                self.typed(id)
            }
            ExprKind::If(c, t, f) => {
                let c = self.expect(c, Ty::Bool, "the condition of `if`");
                let t = self.expect(t, Ty::Num, "a branch of `if`");
                let f = self.expect(f, Ty::Num, "a branch of `if`");
                let (c, t, f) = (c?, t?, f?);
                let id = self.dag.add(Op::Select, &[c, t, f]);
                self.typed(id)
            }
            ExprKind::Call(f, args) => self.call(&f.name, f.span, args, e.span),
        }
    }

    fn name(&mut self, n: &str, span: Span) -> Option<(Id, Ty)> {
        match self.scope.get(n).cloned() {
            Some((Decl::Param(i), _)) => Some((self.dag.add(Op::Param(i), &[]), Ty::Num)),
            Some((Decl::Input(i), _)) => {
                let per_token = self
                    .inputs
                    .get(i as usize)
                    .is_some_and(|inp| inp.source.ty().is_token());
                let op = if per_token {
                    Op::TokenInput(i)
                } else {
                    Op::Input(i)
                };
                let id = self.dag.add(op, &[]);
                self.typed(id)
            }
            Some((Decl::Let(i), _)) => {
                let id = self.resolve_let(i, Some(span))?;
                Some((id, self.dag.ty(id)))
            }
            None => {
                let mut d =
                    Diagnostic::new(ErrorKind::UnknownName, span, format!("unknown name `{n}`"));
                let names: Vec<&str> = self.scope.keys().map(|s| s.as_str()).collect();
                if let Some(c) = suggest(n, names) {
                    d = d.with_hint(format!("did you mean `{c}`?"));
                } else if Source::standard(n).is_some() {
                    d = d.with_hint(format!(
                        "`{n}` is a standard input: declare it with `input {n}`"
                    ));
                } else if FUNCTIONS.iter().any(|(f, _)| *f == n) {
                    d = d.with_hint(format!("`{n}` is a function: call it as `{n}(...)`"));
                }
                self.errors.push(d);
                None
            }
        }
    }

    fn call(&mut self, f: &str, fspan: Span, args: &[Expr], span: Span) -> Option<(Id, Ty)> {
        let Some(&(_, arity)) = FUNCTIONS.iter().find(|(name, _)| *name == f) else {
            let mut d = Diagnostic::new(
                ErrorKind::UnknownFunction,
                fspan,
                format!("unknown function `{f}`"),
            );
            if let Some((_, to)) = ALIASES.iter().find(|(from, _)| *from == f) {
                let to = if to.starts_with('`') || to.starts_with("the") {
                    to.to_string()
                } else {
                    format!("`{to}`")
                };
                d = d.with_hint(format!("did you mean {to}?"));
            } else if let Some(c) = suggest(f, FUNCTIONS.iter().map(|(n, _)| *n)) {
                d = d.with_hint(format!("did you mean `{c}`?"));
            } else {
                d = d.with_hint(format!(
                    "the functions are {}",
                    FUNCTIONS
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            self.errors.push(d);
            // Still check the arguments, to report their errors too.
            for a in args {
                let _ = self.expr(a);
            }
            return None;
        };
        if args.len() != arity {
            let plural = if arity == 1 { "" } else { "s" };
            self.errors.push(Diagnostic::new(
                ErrorKind::WrongArity,
                span,
                format!(
                    "`{f}` takes {arity} argument{plural} but {} {} given",
                    args.len(),
                    if args.len() == 1 { "was" } else { "were" }
                ),
            ));
            return None;
        }
        let ids: Vec<Option<Id>> = args
            .iter()
            .enumerate()
            .map(|(k, a)| match arg_shape(f, k) {
                ArgShape::Any => self.expect(a, Ty::Num, &format!("an argument of `{f}`")),
                ArgShape::Tokens => {
                    self.expect_tokens(a, &format!("the mask (argument {}) of `{f}`", k + 1))
                }
                ArgShape::Scalar => {
                    let name = if k == 3 { "γ" } else { "λ" };
                    self.expect_scalar(a, Ty::Num, &format!("`{f}`'s {name} (argument {})", k + 1))
                }
            })
            .collect();
        let ids: Vec<Id> = ids.into_iter().collect::<Option<_>>()?;
        let id = match f {
            "masked_mean" => {
                // Σ m·x / Σ m: the denominator is shared by every mean over the same mask.
                let one = self.dag.constant(1.0);
                let total = self.dag.add(Op::MaskedSum, &[ids[0], ids[1]]);
                let count = self.dag.add(Op::MaskedSum, &[one, ids[1]]);
                self.dag.add(Op::Div, &[total, count])
            }
            "clamp" => {
                // x stays the first operand of both, so at x == lo or x == hi the gradient
                // goes to x (the documented convention: derivative 1 on the closed interval).
                let lower = self.dag.add(Op::Max, &[ids[0], ids[1]]);
                self.dag.add(Op::Min, &[lower, ids[2]])
            }
            _ => {
                let op = match f {
                    "exp" => Op::Exp,
                    "log" => Op::Log,
                    "log1p" => Op::Log1p,
                    "expm1" => Op::Expm1,
                    "sqrt" => Op::Sqrt,
                    "abs" => Op::Abs,
                    "sigmoid" => Op::Sigmoid,
                    "log_sigmoid" => Op::LogSigmoid,
                    "softplus" => Op::Softplus,
                    "tanh" => Op::Tanh,
                    "relu" => Op::Relu,
                    "min" => Op::Min,
                    "max" => Op::Max,
                    "stop_grad" => Op::StopGrad,
                    "masked_sum" => Op::MaskedSum,
                    "last_token" => Op::LastToken,
                    "gae" => Op::Gae,
                    "whiten" => Op::Whiten,
                    other => unreachable!("function table lists `{other}` without an op"),
                };
                self.dag.add(op, &ids)
            }
        };
        self.typed(id)
    }

    fn finish(mut self) -> Result<Objective, Vec<Diagnostic>> {
        if self.name.is_none() {
            self.errors.insert(
                0,
                Diagnostic::global(
                    ErrorKind::MissingObjective,
                    "the file has no `objective NAME` line",
                )
                .with_hint("start the file with `objective my_loss` (after its doc comment)"),
            );
        }
        if !self.errors.is_empty() {
            return Err(self.errors);
        }
        let (Some(name), Some(loss)) = (self.name, self.loss) else {
            unreachable!("no errors implies a name and a loss");
        };
        Ok(Objective {
            name,
            docs: self.docs,
            params: self.params,
            inputs: self.inputs,
            lets: self.lets,
            dag: self.dag,
            loss,
            metrics: self.metrics,
        })
    }
}

/// A per-token value where a per-example value is required.
fn shape_error(e: &Expr, ty: Ty, what: &str) -> Diagnostic {
    Diagnostic::new(
        ErrorKind::TokenAsNumber,
        e.span,
        format!("{what} must be a per-example value, but this is a per-token value ({ty})"),
    )
    .with_hint(
        "reduce it over the tokens first, e.g. `masked_mean(x, mask)` or `masked_sum(x, mask)`",
    )
}

fn type_error(e: &Expr, want: Ty, what: &str) -> Diagnostic {
    match want.elem() {
        Ty::Num => Diagnostic::new(
            ErrorKind::BoolAsNumber,
            e.span,
            format!("{what} must be a number, but this is a boolean"),
        )
        .with_hint("booleans are not numbers here: write `if COND then 1 else 0`"),
        _ => Diagnostic::new(
            ErrorKind::NumberAsBool,
            e.span,
            format!("{what} must be a boolean, but this is a number"),
        )
        .with_hint("compare it, e.g. `x > 0`"),
    }
}

/// Whether `root` depends on a differentiable input through edges that carry gradient
/// (not through `stop_grad` or into a condition).
pub fn depends_on_differentiable(dag: &Dag, inputs: &[Input], root: Id) -> bool {
    active_nodes(dag, inputs)[root.index()]
}

/// For every node: whether its value depends differentiably on a differentiable input.
pub fn active_nodes(dag: &Dag, inputs: &[Input]) -> Vec<bool> {
    let mut active = vec![false; dag.len()];
    for i in 0..dag.len() {
        let node = dag.node(Id(i as u32));
        active[i] = match node.op {
            Op::Input(k) | Op::TokenInput(k) => {
                inputs.get(k as usize).is_some_and(|inp| inp.differentiable)
            }
            op if op.blocks_gradient() => false,
            _ if dag.ty(Id(i as u32)).elem() == Ty::Bool => false,
            Op::Select => active[node.args[1].index()] || active[node.args[2].index()],
            _ => node.args.iter().any(|a| active[a.index()]),
        };
    }
    active
}
