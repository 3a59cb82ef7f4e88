//! Diagnostics: a span, a plain message, an optional hint, rendered rustc-style with
//! `file:line:col` and a caret line. Shared by every stage of the compiler.

use serde::Serialize;

/// A byte range `[start, end)` in the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// A span covering `start..end`.
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }
    /// The smallest span covering both.
    pub fn join(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// Declares [`ErrorKind`] from one table (variant, code, name), so that the list of every
/// kind ([`ErrorKind::ALL`]), the codes and the names cannot disagree or miss a kind.
macro_rules! error_kinds {
    ($($(#[$doc:meta])* $kind:ident = $code:literal, $name:literal;)*) => {
        /// What went wrong, as a stable machine-readable kind.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum ErrorKind {
            $($(#[$doc])* $kind,)*
        }

        impl ErrorKind {
            /// Every kind, in code order.
            pub const ALL: &'static [ErrorKind] = &[$(ErrorKind::$kind),*];

            /// A short stable code, e.g. `E0003`, printed with every error.
            pub fn code(self) -> &'static str {
                match self {
                    $(ErrorKind::$kind => $code,)*
                }
            }

            /// A stable snake_case name (`unknown_function`): the diagnostics tests name their
            /// case files after it.
            pub fn name(self) -> &'static str {
                match self {
                    $(ErrorKind::$kind => $name,)*
                }
            }
        }
    };
}

error_kinds! {
    /// The text is not a statement of the language.
    Syntax = "E0001", "syntax";
    /// A name that is not declared.
    UnknownName = "E0002", "unknown_name";
    /// A call of a function the language does not have.
    UnknownFunction = "E0003", "unknown_function";
    /// A call with the wrong number of arguments.
    WrongArity = "E0004", "wrong_arity";
    /// A name, the objective, the loss or a metric defined twice.
    DuplicateDefinition = "E0005", "duplicate_definition";
    /// `let`s that depend on each other in a cycle.
    CyclicLet = "E0006", "cyclic_let";
    /// No `loss = ...`.
    MissingLoss = "E0007", "missing_loss";
    /// No `objective NAME`.
    MissingObjective = "E0008", "missing_objective";
    /// A loss without a differentiable input outside `stop_grad`.
    NonDifferentiableLoss = "E0009", "non_differentiable_loss";
    /// A boolean where a number is required.
    BoolAsNumber = "E0010", "bool_as_number";
    /// A number where a boolean is required.
    NumberAsBool = "E0011", "number_as_bool";
    /// A parameter default outside its range.
    DefaultOutOfRange = "E0012", "default_out_of_range";
    /// An empty parameter range.
    BadRange = "E0013", "bad_range";
    /// An input source the runtime does not know (or none for a non-standard name).
    UnknownSource = "E0014", "unknown_source";
    /// A bad `--set NAME=VALUE` on the command line.
    BadSet = "E0015", "bad_set";
    /// A per-token value where a per-example value is required.
    TokenAsNumber = "E0016", "token_as_number";
    /// A per-example value where a per-token value is required.
    NumberAsToken = "E0017", "number_as_token";
    /// `use` of an objective that is neither shipped nor a readable file.
    UnknownObjective = "E0018", "unknown_objective";
    /// A `use` that does not fit: the used objective does not compile, uses form a cycle, or
    /// a binding names a parameter it does not have.
    BadUse = "E0019", "bad_use";
}

/// One user-facing error.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnostic {
    /// Its kind.
    pub kind: ErrorKind,
    /// Where; `None` for errors about the whole file or the command line.
    pub span: Option<Span>,
    /// A plain sentence.
    pub message: String,
    /// A suggestion, when one helps.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// An error at `span`.
    pub fn new(kind: ErrorKind, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            kind,
            span: Some(span),
            message: message.into(),
            hint: None,
        }
    }
    /// An error about the whole input.
    pub fn global(kind: ErrorKind, message: impl Into<String>) -> Self {
        Diagnostic {
            kind,
            span: None,
            message: message.into(),
            hint: None,
        }
    }
    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Renders as `file:line:col: error[E..]: message`, the source line, a caret line and
    /// the hint.
    pub fn render(&self, file: &str, src: &str) -> String {
        let mut out = String::new();
        match self.span {
            Some(span) => {
                let (line, col) = line_col(src, span.start);
                out.push_str(&format!(
                    "{file}:{line}:{col}: error[{}]: {}\n",
                    self.kind.code(),
                    self.message
                ));
                let line_text = src.lines().nth(line - 1).unwrap_or("");
                let gutter = line.to_string().len();
                let line_end_col = line_text.chars().count() + 1;
                let end_col = if span.end > span.start {
                    let (end_line, end_col) = line_col(src, span.end);
                    if end_line == line {
                        end_col
                    } else {
                        line_end_col
                    }
                } else {
                    col + 1
                };
                let width = end_col.saturating_sub(col).max(1);
                out.push_str(&format!("{:gutter$} |\n", ""));
                out.push_str(&format!("{line} | {line_text}\n"));
                out.push_str(&format!(
                    "{:gutter$} | {}{}\n",
                    "",
                    " ".repeat(col - 1),
                    "^".repeat(width)
                ));
            }
            None => out.push_str(&format!(
                "{file}: error[{}]: {}\n",
                self.kind.code(),
                self.message
            )),
        }
        if let Some(hint) = &self.hint {
            out.push_str(&format!("  = hint: {hint}\n"));
        }
        out
    }
}

/// 1-based line and column (in characters) of byte offset `pos`.
pub fn line_col(src: &str, pos: usize) -> (usize, usize) {
    let pos = pos.min(src.len());
    let before = &src[..floor_char_boundary(src, pos)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Renders a list of diagnostics, one after another.
pub fn render_all(diags: &[Diagnostic], file: &str, src: &str) -> String {
    diags
        .iter()
        .map(|d| d.render(file, src))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The closest candidate to `name` by edit distance, if it is close enough to be a likely typo.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = edit_distance(&name.to_lowercase(), &c.to_lowercase());
        let limit = (name.len().max(c.len()) / 3).max(1);
        // Also catch `logsigmoid` -> `log_sigmoid`: same letters up to underscores.
        let same_letters = name
            .replace('_', "")
            .eq_ignore_ascii_case(&c.replace('_', ""));
        let d = if same_letters { 0 } else { d };
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, &cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
