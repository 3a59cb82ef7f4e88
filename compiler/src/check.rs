//! `check`: the syntax tree to a typed, resolved [`Objective`]. After `check`, every name is
//! resolved, every expression is typed (`num`, `bool`, or per token `num[T]`, `bool[T]`), every
//! input has a known source, type and differentiability, parameter defaults lie in their
//! ranges, the loss and the metrics are per-example values, and the loss depends on a
//! differentiable input.

use crate::active::depends_on_differentiable;
use crate::dag::{Dag, Id, Written};
use crate::library::{self, Files, NoFiles};
use crate::objective::{Binding, Input, Objective, Param};
use crate::ops::{Op, OperandShape, Ty};
use crate::source::{Rollout, Source, standard_inputs};
use poc_grammar::diag::suggest;
use poc_grammar::{
    Ast, Diagnostic, ErrorKind, Expr, ExprKind, Partial, SourceExpr, Span, StatementKind, Use,
    UseTarget,
};
use std::collections::{BTreeMap, HashMap, HashSet};

/// A function a source can call: a built-in op ([`crate::ops::Syntax::Call`]), or sugar the checker
/// expands into ops. Names, arities and argument shapes are the ops' own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// An op written as a call.
    Op(Op),
    /// `clamp(x, lo, hi)`: `min(max(x, lo), hi)`.
    Clamp,
    /// `masked_mean(x, m)`: `masked_sum(x, m) / masked_sum(1, m)`.
    MaskedMean,
    /// `sort(x)`: `sort_by(x, x)`, the batch's values of x in ascending order.
    Sort,
}

impl Function {
    /// Every function of the language: the call ops in table order, then the sugar.
    pub fn all() -> impl Iterator<Item = Function> {
        Op::functions().map(Function::Op).chain([
            Function::Clamp,
            Function::MaskedMean,
            Function::Sort,
        ])
    }

    /// The function called `name`.
    pub fn named(name: &str) -> Option<Function> {
        Function::all().find(|f| f.name() == name)
    }

    /// Its name in a source.
    pub fn name(self) -> &'static str {
        match self {
            Function::Op(op) => op.name(),
            Function::Clamp => "clamp",
            Function::MaskedMean => "masked_mean",
            Function::Sort => "sort",
        }
    }

    /// Its number of arguments.
    pub fn arity(self) -> usize {
        match self {
            Function::Op(op) => op.arity(),
            Function::Clamp => Op::Select.arity(),
            Function::MaskedMean => Op::MaskedSum.arity(),
            Function::Sort => 1,
        }
    }

    /// What argument `k` must be.
    pub fn operand_shape(self, k: usize) -> OperandShape {
        match self {
            Function::Op(op) => op.operand_shape(k),
            Function::Clamp => OperandShape::Any,
            Function::MaskedMean => Op::MaskedSum.operand_shape(k),
            Function::Sort => Op::SortBy.operand_shape(k),
        }
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

/// Checks a parsed file (`use` resolves shipped objectives only). Returns every error of
/// this stage.
pub fn check(ast: &Ast) -> Result<Objective, Vec<Diagnostic>> {
    check_with(ast, &NoFiles)
}

/// Checks a parsed file, reading the files of `use "file.po"` from `files`.
pub fn check_with(ast: &Ast, files: &dyn Files) -> Result<Objective, Vec<Diagnostic>> {
    check_nested(ast, files, None, Vec::new())
}

/// Checks the statements of a file that parse, beside the syntax errors of those that do not:
/// returns the syntax errors, then this stage's errors. What a broken statement would have
/// declared is not reported again (its uses are not unknown names; a broken `loss` line is no
/// missing loss).
pub fn check_parsed(parsed: &Partial, files: &dyn Files) -> Result<Objective, Vec<Diagnostic>> {
    let mut cx = Checker {
        files: Some(files),
        errors: parsed.errors.clone(),
        ..Checker::default()
    };
    for u in &parsed.unparsed {
        match (u.keyword, &u.name) {
            (Some("objective"), _) => cx.objective_unparsed = true,
            (Some("loss"), _) => cx.loss_unparsed = true,
            (Some("use"), Some(alias)) => cx.failed_uses.push(alias.clone()),
            (Some("param" | "input" | "let"), Some(name)) => {
                cx.failed_names.insert(name.clone());
            }
            _ => {}
        }
    }
    cx.declare(&parsed.ast);
    cx.resolve_all();
    cx.finish()
}

/// Checks a file whose key is `from` (`None`: the file being compiled), used through the
/// chain `stack` (for cycles).
fn check_nested(
    ast: &Ast,
    files: &dyn Files,
    from: Option<String>,
    stack: Vec<String>,
) -> Result<Objective, Vec<Diagnostic>> {
    let mut cx = Checker {
        files: Some(files),
        from,
        stack,
        ..Checker::default()
    };
    cx.declare(ast);
    cx.resolve_all();
    cx.finish()
}

/// An objective brought in by `use`: checked on its own, imported into this DAG when first
/// referred to.
struct Used {
    /// Its values go by `alias.NAME`.
    alias: String,
    /// The `use` statement's target, as written, and where.
    target: String,
    span: Span,
    objective: Objective,
    /// Its parameters bound to expressions of this objective.
    bindings: HashMap<String, Expr>,
    /// Its parameter i as this objective's parameter (`None` when bound).
    params: Vec<Option<u32>>,
    with_metrics: bool,
    import: ImportState,
}

#[derive(Clone)]
enum ImportState {
    Pending,
    InProgress,
    /// Each node of the used objective's DAG as a node of this one (`None`: it failed).
    Done(Option<std::rc::Rc<Vec<Id<Written>>>>),
}

#[derive(Default)]
struct Checker<'f> {
    files: Option<&'f dyn Files>,
    from: Option<String>,
    stack: Vec<String>,
    used: Vec<Used>,
    /// Aliases of `use`s that failed (their values are not reported again as unknown).
    failed_uses: Vec<String>,
    /// Names whose declaration failed and is reported already: their uses are not reported
    /// again as unknown.
    failed_names: HashSet<String>,
    /// The `objective` line does not parse (reported already).
    objective_unparsed: bool,
    /// The `loss` line does not parse (reported already).
    loss_unparsed: bool,
    errors: Vec<Diagnostic>,
    name: Option<String>,
    docs: Vec<String>,
    params: Vec<Param>,
    inputs: Vec<Input>,
    scope: HashMap<String, (Decl, Span)>,
    let_exprs: Vec<(String, Expr)>,
    let_state: Vec<LetState>,
    lets: Vec<Binding>,
    dag: Dag<Written>,
    loss_expr: Option<(Expr, Span)>,
    metric_exprs: Vec<(String, Expr)>,
    loss: Option<Id<Written>>,
    metrics: Vec<Binding>,
    resolving: Vec<usize>,
}

#[derive(Clone, Copy)]
enum LetState {
    Pending,
    InProgress,
    Done(Option<Id<Written>>),
}

impl Checker<'_> {
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
                StatementKind::Use(u) => self.declare_use(u),
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
                        self.failed_names.insert(name.name.clone());
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

    /// `use TARGET ...`: checks the used objective and declares its unbound parameters here as
    /// `alias.NAME`; its DAG is imported when first referred to ([`Checker::import`]).
    fn declare_use(&mut self, u: &Use) {
        let errors = self.errors.len();
        self.declare_use_inner(u);
        if self.errors.len() > errors && !self.used.iter().any(|p| p.alias == u.alias()) {
            self.failed_uses.push(u.alias());
        }
    }

    fn declare_use_inner(&mut self, u: &Use) {
        let alias = u.alias();
        let span = u.target.span();
        if let Some(prev) = self.used.iter().find(|p| p.alias == alias) {
            let at = u.alias.as_ref().map_or(span, |a| a.span);
            self.errors.push(
                Diagnostic::new(
                    ErrorKind::DuplicateDefinition,
                    at,
                    format!("`{alias}` already names `use {}`", prev.target),
                )
                .with_hint(format!(
                    "give this one another name: `use {} as {alias}2`",
                    u.target.text()
                )),
            );
            return;
        }
        let (key, text) = match &u.target {
            UseTarget::Name(n) => match library::shipped(&n.name) {
                Some(src) => (format!("shipped objective `{}`", n.name), src.to_string()),
                None => {
                    let mut d = Diagnostic::new(
                        ErrorKind::UnknownObjective,
                        n.span,
                        format!("`{}` is not a shipped objective", n.name),
                    );
                    d = match suggest(&n.name, library::SHIPPED.iter().map(|(n, _)| *n)) {
                        Some(c) => d.with_hint(format!("did you mean `{c}`?")),
                        None => d.with_hint(format!(
                            "a file is used by its path, `use \"{}.po\"`; `poc list` shows the shipped objectives",
                            n.name
                        )),
                    };
                    self.errors.push(d);
                    return;
                }
            },
            UseTarget::Path { path, span } => {
                let files = self.files.unwrap_or(&NoFiles);
                match files.read(self.from.as_deref(), path) {
                    Ok(found) => found,
                    Err(why) => {
                        self.errors
                            .push(Diagnostic::new(ErrorKind::UnknownObjective, *span, why));
                        return;
                    }
                }
            }
        };
        if self.stack.contains(&key) || self.from.as_ref() == Some(&key) {
            let mut chain = self.stack.clone();
            chain.extend(self.from.clone());
            chain.push(key.clone());
            self.errors.push(Diagnostic::new(
                ErrorKind::BadUse,
                span,
                format!("`use` forms a cycle: {}", chain.join(" -> ")),
            ));
            return;
        }
        let mut stack = self.stack.clone();
        stack.extend(self.from.clone());
        let checked = poc_grammar::parse(&text).and_then(|ast| {
            check_nested(
                &ast,
                self.files.unwrap_or(&NoFiles),
                Some(key.clone()),
                stack,
            )
        });
        let objective = match checked {
            Ok(o) => o,
            Err(diags) => {
                let first = diags.first().map(|d| {
                    let at = d.span.map(|sp| {
                        let (line, col) = line_col(&text, sp.start);
                        format!(" (line {line}, column {col})")
                    });
                    format!("{}{}", d.message, at.unwrap_or_default())
                });
                self.errors.push(
                    Diagnostic::new(
                        ErrorKind::BadUse,
                        span,
                        format!(
                            "`use {}`: {key} has {} error(s); the first: {}",
                            u.target.text(),
                            diags.len(),
                            first.unwrap_or_default()
                        ),
                    )
                    .with_hint("check that file on its own (`poc check FILE`) to see every error"),
                );
                return;
            }
        };
        let mut bindings = HashMap::new();
        for (name, value) in &u.bindings {
            if !objective.params.iter().any(|p| p.name == name.name) {
                let mut d = Diagnostic::new(
                    ErrorKind::BadUse,
                    name.span,
                    format!(
                        "`{}` has no parameter `{}` to bind",
                        u.target.text(),
                        name.name
                    ),
                );
                let names = objective.params.iter().map(|p| p.name.as_str());
                d = match suggest(&name.name, names) {
                    Some(c) => d.with_hint(format!("did you mean `{c}`?")),
                    None if objective.params.is_empty() => d.with_hint("it has no parameters"),
                    None => d.with_hint(format!(
                        "its parameters are: {}",
                        objective
                            .params
                            .iter()
                            .map(|p| p.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                };
                self.errors.push(d);
            } else if bindings.insert(name.name.clone(), value.clone()).is_some() {
                self.errors.push(Diagnostic::new(
                    ErrorKind::DuplicateDefinition,
                    name.span,
                    format!("parameter `{}` is bound twice", name.name),
                ));
            }
        }
        let mut params = Vec::new();
        for p in &objective.params {
            if bindings.contains_key(&p.name) {
                params.push(None);
                continue;
            }
            let i = self.params.len() as u32;
            let name = format!("{alias}.{}", p.name);
            if self.bind(&name, Decl::Param(i), span) {
                self.params.push(Param {
                    name,
                    docs: p.docs.clone(),
                    ..p.clone()
                });
                params.push(Some(i));
            } else {
                params.push(None);
            }
        }
        self.used.push(Used {
            alias,
            target: u.target.text(),
            span,
            objective,
            bindings,
            params,
            with_metrics: u.with_metrics,
            import: ImportState::Pending,
        });
    }

    /// The used objective `k`'s DAG inside this one: its inputs unified with this objective's
    /// inputs of the same source (added when this objective does not declare one), its bound
    /// parameters replaced by their values, the rest of its nodes copied (hash-consing merges
    /// what both compute). Its lets and its loss become lets `alias.NAME` and `alias.loss`.
    fn import(&mut self, k: usize) -> Option<std::rc::Rc<Vec<Id<Written>>>> {
        match self.used[k].import.clone() {
            ImportState::Done(map) => return map,
            ImportState::InProgress => {
                let u = &self.used[k];
                self.errors.push(Diagnostic::new(
                    ErrorKind::BadUse,
                    u.span,
                    format!(
                        "a parameter binding of `use {}` refers to `{}.` itself",
                        u.target, u.alias
                    ),
                ));
                self.used[k].import = ImportState::Done(None);
                return None;
            }
            ImportState::Pending => {}
        }
        self.used[k].import = ImportState::InProgress;
        let bindings: Vec<(String, Expr)> = self.used[k]
            .bindings
            .iter()
            .map(|(n, e)| (n.clone(), e.clone()))
            .collect();
        let mut bound: HashMap<String, Id<Written>> = HashMap::new();
        let mut failed = false;
        for (name, e) in bindings {
            let what = format!("the value bound to `{name}`");
            match self.expect_scalar(&e, Ty::Num, &what) {
                Some(id) => {
                    bound.insert(name, id);
                }
                None => failed = true,
            }
        }
        if failed || matches!(self.used[k].import, ImportState::Done(None)) {
            self.used[k].import = ImportState::Done(None);
            return None;
        }
        let alias = self.used[k].alias.clone();
        let child_inputs = self.used[k].objective.inputs.clone();
        let inputs: Vec<u32> = child_inputs
            .iter()
            .map(|inp| self.unify_input(inp, &alias))
            .collect();
        let u = &self.used[k];
        let child = &u.objective;
        let mut map: Vec<Id<Written>> = Vec::with_capacity(child.dag.len());
        for id in child.dag.ids() {
            let node = child.dag.node(id);
            let new = match node.op {
                Op::Input(i) => self.dag.add(Op::Input(inputs[i as usize]), &[]),
                Op::TokenInput(i) => self.dag.add(Op::TokenInput(inputs[i as usize]), &[]),
                Op::Param(i) => match u.params[i as usize] {
                    Some(j) => self.dag.add(Op::Param(j), &[]),
                    None => bound[&child.params[i as usize].name],
                },
                op => {
                    let args: Vec<Id<Written>> = node.args.iter().map(|a| map[a.index()]).collect();
                    self.dag.add(op, &args)
                }
            };
            map.push(new);
        }
        for b in &child.lets {
            self.lets.push(Binding {
                name: format!("{alias}.{}", b.name),
                id: map[b.id.index()],
                ty: b.ty,
            });
        }
        self.lets.push(Binding {
            name: format!("{alias}.loss"),
            id: map[child.loss.index()],
            ty: child.dag.ty(child.loss),
        });
        let map = std::rc::Rc::new(map);
        self.used[k].import = ImportState::Done(Some(map.clone()));
        Some(map)
    }

    /// The node of input `i`: `Op::TokenInput` for a per-token source, `Op::Input` otherwise.
    fn input_node(&mut self, i: u32) -> Id<Written> {
        let per_token = self
            .inputs
            .get(i as usize)
            .is_some_and(|inp| inp.source.ty().is_token());
        let op = if per_token {
            Op::TokenInput(i)
        } else {
            Op::Input(i)
        };
        self.dag.add(op, &[])
    }

    /// The built-in source spelled `n` (`token.position`), unless a `use ... as token` claims
    /// the name.
    fn builtin_source(&self, n: &str) -> Option<Source> {
        let (alias, _) = n.split_once('.')?;
        if self.used.iter().any(|u| u.alias == alias) {
            return None;
        }
        Source::all_named()
            .into_iter()
            .find(|s| s.is_builtin() && s.text() == n)
    }

    /// This objective's input for a used objective's input `inp`: the first declared with the
    /// same source, else a new one (named as there, or `alias.NAME` when that name is taken).
    fn unify_input(&mut self, inp: &Input, alias: &str) -> u32 {
        if let Some(i) = self.inputs.iter().position(|i| i.source == inp.source) {
            return i as u32;
        }
        let taken =
            self.scope.contains_key(&inp.name) || self.inputs.iter().any(|i| i.name == inp.name);
        let name = if taken {
            format!("{alias}.{}", inp.name)
        } else {
            inp.name.clone()
        };
        self.inputs.push(Input {
            name,
            ..inp.clone()
        });
        (self.inputs.len() - 1) as u32
    }

    /// `alias.NAME`: a value of a used objective (its loss, a let, an input or a bound
    /// parameter; unbound parameters are in scope as `alias.NAME` already).
    fn qualified(&mut self, n: &str, span: Span) -> Option<(Id<Written>, Ty)> {
        let (alias, rest) = n.split_once('.')?;
        if self.failed_uses.iter().any(|a| a == alias) {
            // Its `use` is reported already.
            return None;
        }
        let Some(k) = self.used.iter().position(|u| u.alias == alias) else {
            let mut d =
                Diagnostic::new(ErrorKind::UnknownName, span, format!("unknown name `{n}`"));
            d = if library::shipped(alias).is_some() {
                d.with_hint(format!(
                    "`{alias}` is a shipped objective: bring it in with `use {alias}`"
                ))
            } else if self.used.is_empty() {
                d.with_hint("`a.b` names a value of an objective brought in by `use a`")
            } else {
                let names: Vec<&str> = self.used.iter().map(|u| u.alias.as_str()).collect();
                match suggest(alias, names.iter().copied()) {
                    Some(c) => d.with_hint(format!("did you mean `{c}.{rest}`?")),
                    None => d.with_hint(format!(
                        "the objectives used here are: {}",
                        names.join(", ")
                    )),
                }
            };
            self.errors.push(d);
            return None;
        };
        let map = self.import(k)?;
        let child = &self.used[k].objective;
        let found = if rest == "loss" {
            Some(map[child.loss.index()])
        } else if let Some(b) = child.lets.iter().find(|b| b.name == rest) {
            Some(map[b.id.index()])
        } else if let Some(i) = child.inputs.iter().position(|i| i.name == rest) {
            // This objective's input of that source (import unified it already, or adds it).
            let (inp, alias) = (child.inputs[i].clone(), self.used[k].alias.clone());
            let j = self.unify_input(&inp, &alias);
            Some(self.input_node(j))
        } else if let Some(p) = child.params.iter().position(|p| p.name == rest) {
            let name = child.params[p].name.clone();
            let e = self.used[k].bindings.get(&name).cloned();
            match e {
                Some(e) => self.expect_scalar(&e, Ty::Num, &format!("the value bound to `{name}`")),
                None => None,
            }
        } else {
            None
        };
        let Some(id) = found else {
            let child = &self.used[k].objective;
            let mut names: Vec<&str> = vec!["loss"];
            names.extend(child.lets.iter().map(|b| b.name.as_str()));
            names.extend(child.inputs.iter().map(|i| i.name.as_str()));
            names.extend(child.params.iter().map(|p| p.name.as_str()));
            let mut d = Diagnostic::new(
                ErrorKind::UnknownName,
                span,
                format!("`{}` has no value `{rest}`", self.used[k].target),
            );
            d = match suggest(rest, names.iter().copied()) {
                Some(c) => d.with_hint(format!("did you mean `{alias}.{c}`?")),
                None => d.with_hint(format!("its values are: {}", names.join(", "))),
            };
            self.errors.push(d);
            return None;
        };
        self.typed(id)
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
            let otherwise =
                format!("write `input {name} from column(\"{name}\")` or another source");
            d = match standard_names_like(name) {
                Some(names) => d.with_hint(format!("did you mean {names}? otherwise {otherwise}")),
                None => d.with_hint(format!(
                    "{otherwise}; sources are listed in docs/LANGUAGE.md"
                )),
            };
            self.errors.push(d);
            return None;
        };
        let found = Source::parse(src);
        if found.is_none() {
            let text = poc_grammar::print::source_text(src);
            let hint = if text.contains("completion") {
                let all: Vec<&str> = Rollout::ALL.iter().map(|r| r.text()).collect();
                format!("rollout sources are {}", all.join(", "))
            } else {
                "sources are policy.logps(S), reference.logps(S), tokens(S), reference.entropy(S), reward(S), per token policy.token_logps(S), reference.token_logps(S), policy.token_collision(S), S.mask, with S = chosen|rejected, token.position, vocab_size, column(\"NAME\")".to_string()
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
        } else if self.name.is_some() && !self.loss_unparsed {
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
        let own: Vec<String> = self.metric_exprs.iter().map(|(n, _)| n.clone()).collect();
        let mut exported: HashMap<String, String> = HashMap::new();
        for k in 0..self.used.len() {
            if !self.used[k].with_metrics {
                continue;
            }
            let Some(map) = self.import(k) else { continue };
            let u = &self.used[k];
            let mut clashes = Vec::new();
            let mut add = Vec::new();
            for m in &u.objective.metrics {
                if own.contains(&m.name) {
                    clashes.push(format!("`{}` (also a metric of this file)", m.name));
                } else if let Some(by) = exported.get(&m.name) {
                    clashes.push(format!("`{}` (also a metric of `use {by}`)", m.name));
                } else {
                    exported.insert(m.name.clone(), u.target.clone());
                    add.push(Binding {
                        name: m.name.clone(),
                        id: map[m.id.index()],
                        ty: m.ty,
                    });
                }
            }
            if !clashes.is_empty() {
                self.errors.push(
                    Diagnostic::new(
                        ErrorKind::DuplicateDefinition,
                        u.span,
                        format!("`use {} with metrics` would define metric {} twice", u.target, clashes.join(", ")),
                    )
                    .with_hint("keep `with metrics` on one `use` and write the other metrics you want by hand"),
                );
            }
            self.metrics.extend(add);
        }
        for u in &self.used {
            if matches!(u.import, ImportState::Pending) {
                self.errors.push(
                    Diagnostic::new(
                        ErrorKind::BadUse,
                        u.span,
                        format!("`use {}` is never used", u.target),
                    )
                    .with_hint(format!(
                        "refer to its values (`{}.loss`) or add `with metrics`",
                        u.alias
                    )),
                );
            }
        }
    }

    fn resolve_let(&mut self, i: usize, use_span: Option<Span>) -> Option<Id<Written>> {
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
    fn expect(&mut self, e: &Expr, want: Ty, what: &str) -> Option<Id<Written>> {
        let (id, ty) = self.expr(e)?;
        if ty.elem() != want.elem() {
            self.errors.push(type_error(e, want, what));
            return None;
        }
        Some(id)
    }

    /// Lowers `e` and requires a per-example value of element type `want`.
    fn expect_scalar(&mut self, e: &Expr, want: Ty, what: &str) -> Option<Id<Written>> {
        let id = self.expect(e, want, what)?;
        let ty = self.dag.ty(id);
        if ty.is_token() {
            self.errors.push(shape_error(e, ty, what));
            return None;
        }
        Some(id)
    }

    /// Lowers `e` and requires a per-token number.
    fn expect_tokens(&mut self, e: &Expr, what: &str) -> Option<Id<Written>> {
        let id = self.expect(e, Ty::Num, what)?;
        if !self.dag.ty(id).is_token() {
            self.errors.push(
                Diagnostic::new(
                    ErrorKind::NumberAsToken,
                    e.span,
                    format!("{what} must be a per-token value (num[T]), but this is a per-example number"),
                )
                .with_hint(self.mask_hint()),
            );
            return None;
        }
        Some(id)
    }

    /// Where a mask comes from, in this objective's terms: the masks it declares, else the
    /// mask of its kind of example (a sampled completion's, or an answer of a pair's).
    fn mask_hint(&self) -> String {
        let masks: Vec<String> = self
            .inputs
            .iter()
            .filter(|i| {
                matches!(
                    i.source,
                    Source::TokenMask(_) | Source::Rollout(Rollout::Mask)
                )
            })
            .map(|i| format!("`{}`", i.name))
            .collect();
        if !masks.is_empty() {
            format!(
                "pass a per-token mask; this objective declares {}",
                masks.join(", ")
            )
        } else if self
            .inputs
            .iter()
            .any(|i| matches!(i.source, Source::Rollout(_)))
        {
            "a mask is a per-token input: `input mask from completion.mask`".into()
        } else {
            "a mask is a per-token input: `input chosen_mask` or `input rejected_mask` (1 at the answer's tokens, 0 after its end)".into()
        }
    }

    /// The node and its type.
    fn typed(&self, id: Id<Written>) -> Option<(Id<Written>, Ty)> {
        Some((id, self.dag.ty(id)))
    }

    fn expr(&mut self, e: &Expr) -> Option<(Id<Written>, Ty)> {
        match &e.kind {
            ExprKind::Number(x) => Some((self.dag.constant(*x), Ty::Num)),
            ExprKind::Bool(b) => Some((self.dag.add(Op::BoolConst(*b), &[]), Ty::Bool)),
            ExprKind::Name(n) => self.name(n, e.span),
            ExprKind::Unary(op, x) => {
                let dag_op = Op::prefix(*op);
                let what = format!("the operand of `{}`", op.symbol());
                let a = self.expect(x, dag_op.signature().0[0], &what)?;
                let id = self.dag.add(dag_op, &[a]);
                self.typed(id)
            }
            ExprKind::Binary(op, l, r) => {
                let dag_op = Op::infix(*op);
                let operand_ty = dag_op.signature().0[0];
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

    fn name(&mut self, n: &str, span: Span) -> Option<(Id<Written>, Ty)> {
        match self.scope.get(n).cloned() {
            Some((Decl::Param(i), _)) => Some((self.dag.add(Op::Param(i), &[]), Ty::Num)),
            Some((Decl::Input(i), _)) => {
                let id = self.input_node(i);
                self.typed(id)
            }
            Some((Decl::Let(i), _)) => {
                let id = self.resolve_let(i, Some(span))?;
                Some((id, self.dag.ty(id)))
            }
            None if self.failed_names.contains(n) => None,
            None if n.contains('.') => match self.builtin_source(n) {
                Some(source) => {
                    // Read without an `input` line: this objective's input of that source,
                    // added under the source's spelling when none is declared.
                    let implicit = Input {
                        name: n.to_string(),
                        differentiable: source.differentiable(),
                        source,
                        docs: Vec::new(),
                    };
                    let i = self.unify_input(&implicit, "builtin");
                    let id = self.input_node(i);
                    self.typed(id)
                }
                None => self.qualified(n, span),
            },
            None => {
                let mut d =
                    Diagnostic::new(ErrorKind::UnknownName, span, format!("unknown name `{n}`"));
                let names: Vec<&str> = self.scope.keys().map(|s| s.as_str()).collect();
                let builtin = Source::all_named()
                    .into_iter()
                    .find(|s| s.is_builtin() && s.text().ends_with(&format!(".{n}")));
                if let Some(c) = suggest(n, names) {
                    d = d.with_hint(format!("did you mean `{c}`?"));
                } else if let Some(b) = builtin {
                    d = d.with_hint(format!("did you mean `{}`, a built-in value?", b.text()));
                } else if Source::standard(n).is_some() {
                    d = d.with_hint(format!(
                        "`{n}` is a standard input: declare it with `input {n}`"
                    ));
                } else if Function::named(n).is_some() {
                    d = d.with_hint(format!("`{n}` is a function: call it as `{n}(...)`"));
                }
                self.errors.push(d);
                None
            }
        }
    }

    fn call(
        &mut self,
        f: &str,
        fspan: Span,
        args: &[Expr],
        span: Span,
    ) -> Option<(Id<Written>, Ty)> {
        let Some(function) = Function::named(f) else {
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
            } else if let Some(c) = suggest(f, Function::all().map(Function::name)) {
                d = d.with_hint(format!("did you mean `{c}`?"));
            } else {
                d = d.with_hint(format!(
                    "the functions are {}",
                    Function::all()
                        .map(Function::name)
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
        let arity = function.arity();
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
        let ids: Vec<Option<Id<Written>>> = args
            .iter()
            .enumerate()
            .map(|(k, a)| match function.operand_shape(k) {
                OperandShape::Any => self.expect(a, Ty::Num, &format!("an argument of `{f}`")),
                OperandShape::Tokens => {
                    self.expect_tokens(a, &format!("the mask (argument {}) of `{f}`", k + 1))
                }
                OperandShape::Scalar => {
                    let name = match (function, k) {
                        (Function::Op(Op::Gae), 3) => "γ",
                        (Function::Op(Op::Gae), 4) => "λ",
                        _ => "value",
                    };
                    self.expect_scalar(a, Ty::Num, &format!("`{f}`'s {name} (argument {})", k + 1))
                }
            })
            .collect();
        let ids: Vec<Id<Written>> = ids.into_iter().collect::<Option<_>>()?;
        let id = match function {
            Function::MaskedMean => {
                // Σ m·x / Σ m: the denominator is shared by every mean over the same mask.
                let one = self.dag.constant(1.0);
                let total = self.dag.add(Op::MaskedSum, &[ids[0], ids[1]]);
                let count = self.dag.add(Op::MaskedSum, &[one, ids[1]]);
                self.dag.add(Op::Div, &[total, count])
            }
            Function::Clamp => {
                // x stays the first operand of both, so at x == lo or x == hi the gradient
                // goes to x (the documented convention: derivative 1 on the closed interval).
                let lower = self.dag.add(Op::Max, &[ids[0], ids[1]]);
                self.dag.add(Op::Min, &[lower, ids[2]])
            }
            Function::Sort => self.dag.add(Op::SortBy, &[ids[0], ids[0]]),
            Function::Op(op) => self.dag.add(op, &ids),
        };
        self.typed(id)
    }

    fn finish(mut self) -> Result<Objective, Vec<Diagnostic>> {
        if self.name.is_none() && !self.objective_unparsed {
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

/// The standard input names `name` may mean, with their sources: those that end in `_NAME`
/// (`chosen_logps`, TRL's name for the policy's, is `policy_chosen_logps` or `ref_chosen_logps`),
/// the policy's first; else the closest by spelling.
fn standard_names_like(name: &str) -> Option<String> {
    let suffix = format!("_{name}");
    let mut found: Vec<(&str, Source)> = standard_inputs()
        .into_iter()
        .filter(|(n, _)| n.ends_with(&suffix))
        .collect();
    if found.is_empty() {
        let close = suggest(name, standard_inputs().map(|(n, _)| n))?;
        found.extend(Source::standard(close).map(|s| (close, s)));
    }
    // Differentiable sources (the policy's) first; the sort is stable.
    found.sort_by_key(|(_, s)| !s.differentiable());
    let names: Vec<String> = found
        .iter()
        .map(|(n, s)| format!("`{n}` ({})", s.text()))
        .collect();
    match names.as_slice() {
        [] => None,
        [one] => Some(one.clone()),
        [rest @ .., last] => Some(format!("{} or {last}", rest.join(", "))),
    }
}

/// 1-based line and column of byte `at` in `text`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
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
