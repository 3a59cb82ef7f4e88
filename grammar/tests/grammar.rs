//! The `.po` front end on its own: the canonical printer round-trips every shipped objective,
//! operators bind as the grammar says, syntax errors are reported one per broken statement
//! with their place and hint, and the error kinds have distinct, ordered codes and names.

use poc_grammar::print::{expr, number, program};
use poc_grammar::{Ast, BinaryOp, ErrorKind, ExprKind, StatementKind, UnaryOp, parse};
use std::path::PathBuf;

fn objectives() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../objectives");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "po"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(
        out.len() > 10,
        "the shipped objectives are in {}",
        dir.display()
    );
    out
}

/// The loss expression of a one-statement file `loss = {e}`.
fn loss_of(e: &str) -> ExprKind {
    let ast = parse(&format!("loss = {e}\n")).unwrap();
    match &ast.statements[0].kind {
        StatementKind::Loss(e) => e.kind.clone(),
        other => panic!("not a loss: {other:?}"),
    }
}

/// The tree without spans, as its canonical text (spans are the only thing printing drops).
fn shape(ast: &Ast) -> String {
    program(ast)
}

/// An expression as an s-expression, without spans: equal trees give equal strings.
fn sexp(e: &ExprKind) -> String {
    match e {
        ExprKind::Number(x) => format!("{x:?}"),
        ExprKind::Bool(b) => b.to_string(),
        ExprKind::Name(n) => n.clone(),
        ExprKind::Unary(op, x) => format!("({op:?} {})", sexp(&x.kind)),
        ExprKind::Binary(op, a, b) => format!("({op:?} {} {})", sexp(&a.kind), sexp(&b.kind)),
        ExprKind::Call(f, args) => {
            let args: Vec<String> = args.iter().map(|a| sexp(&a.kind)).collect();
            format!("({} {})", f.name, args.join(" "))
        }
        ExprKind::If(c, t, f) => {
            format!("(if {} {} {})", sexp(&c.kind), sexp(&t.kind), sexp(&f.kind))
        }
    }
}

#[test]
fn canonical_form_parses_back_to_the_same_tree() {
    for (name, src) in objectives() {
        let ast = parse(&src).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let printed = program(&ast);
        let again = parse(&printed)
            .unwrap_or_else(|e| panic!("{name}: canonical form does not parse: {e:?}"));
        assert_eq!(shape(&again), printed, "{name}: printing is not a fixpoint");
        assert_eq!(
            again.statements.len(),
            ast.statements.len(),
            "{name}: statements"
        );
        for (a, b) in ast.statements.iter().zip(&again.statements) {
            assert_eq!(a.docs, b.docs, "{name}: doc comments");
            assert_eq!(
                std::mem::discriminant(&a.kind),
                std::mem::discriminant(&b.kind),
                "{name}"
            );
        }
    }
}

#[test]
fn operators_bind_as_the_grammar_says() {
    // Unary minus binds looser than `^`: -a ^ 2 = -(a ^ 2).
    let ExprKind::Unary(UnaryOp::Neg, inner) = loss_of("-a ^ 2") else {
        panic!("-a ^ 2 is a negation");
    };
    assert!(matches!(inner.kind, ExprKind::Binary(BinaryOp::Pow, ..)));
    // `^` is right-associative, `-` left-associative, `*` binds tighter than `+`.
    let ExprKind::Binary(BinaryOp::Pow, _, rhs) = loss_of("a ^ b ^ c") else {
        panic!("a ^ b ^ c is a power");
    };
    assert!(matches!(rhs.kind, ExprKind::Binary(BinaryOp::Pow, ..)));
    let ExprKind::Binary(BinaryOp::Sub, lhs, _) = loss_of("a - b - c") else {
        panic!("a - b - c is a difference");
    };
    assert!(matches!(lhs.kind, ExprKind::Binary(BinaryOp::Sub, ..)));
    let ExprKind::Binary(BinaryOp::Add, _, rhs) = loss_of("a + b * c") else {
        panic!("a + b * c is a sum");
    };
    assert!(matches!(rhs.kind, ExprKind::Binary(BinaryOp::Mul, ..)));
    // `not` binds looser than comparisons, `and` tighter than `or`.
    let ExprKind::Binary(BinaryOp::Or, _, rhs) = loss_of("not a < b or c > d and e == f") else {
        panic!("an `or` at the top");
    };
    assert!(matches!(rhs.kind, ExprKind::Binary(BinaryOp::And, ..)));
    assert!(matches!(
        loss_of("not a < b"),
        ExprKind::Unary(UnaryOp::Not, _)
    ));
}

#[test]
fn the_printer_writes_minimal_parentheses_that_keep_the_tree() {
    for (written, canonical) in [
        ("(a + b) * c", "(a + b) * c"),
        ("a + (b * c)", "a + b * c"),
        ("a - (b - c)", "a - (b - c)"),
        ("(a - b) - c", "a - b - c"),
        ("(-a) ^ 2", "(-a) ^ 2"),
        ("a ^ (b ^ c)", "a ^ b ^ c"),
        ("(a ^ b) ^ c", "(a ^ b) ^ c"),
        ("f( a,b )", "f(a, b)"),
        ("if a > 0 then (b) else -c", "if a > 0 then b else -c"),
        ("1e-3 * inf", "0.001 * inf"),
    ] {
        let ast = parse(&format!("loss = {written}\n")).unwrap();
        let StatementKind::Loss(e) = &ast.statements[0].kind else {
            panic!("a loss");
        };
        assert_eq!(expr(e), canonical, "`{written}`");
        assert_eq!(
            sexp(&loss_of(canonical)),
            sexp(&e.kind),
            "`{canonical}` reads back to the same tree"
        );
    }
}

#[test]
fn numbers_print_in_their_shortest_exact_form() {
    for x in [0.1, 1e-8, 2.5e300, 0.0, -3.0, 1.0 / 3.0] {
        let s = number(x);
        assert_eq!(s.parse::<f64>().unwrap(), x, "{s}");
    }
    assert_eq!(number(f64::INFINITY), "inf");
    assert_eq!(number(f64::NEG_INFINITY), "-inf");
}

#[test]
fn every_broken_statement_is_reported_in_its_place() {
    let src = "objective broken\nlet a = 1 +\nlet b = (2\nloss = a ** b\nmetric m = 3\n";
    let errors = parse(src).unwrap_err();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(errors.iter().all(|d| d.kind == ErrorKind::Syntax));
    let lines: Vec<usize> = errors
        .iter()
        .map(|d| poc_grammar::diag::line_col(src, d.span.unwrap().start).0)
        .collect();
    assert_eq!(lines, [2, 3, 4]);
    assert_eq!(
        errors[1].hint.as_deref(),
        Some("this statement has an unclosed `(`")
    );
    assert_eq!(
        errors[2].hint.as_deref(),
        Some("powers are written `x ^ y`")
    );
    // Text that starts no statement says what statements start with.
    let errors = parse("lost = 1\n").unwrap_err();
    assert!(
        errors[0]
            .hint
            .as_deref()
            .is_some_and(|h| h.contains("`objective`")),
        "{errors:#?}"
    );
}

#[test]
fn a_partial_parse_keeps_the_statements_that_parse_and_names_the_broken_ones() {
    let src = "lost = 1\nobjective broken\n/// doc\nlet a = 1 +\nparam p = 0.1 in (0, inf\nuse dpo(beta = ) as d\nuse \"losses/mine.po\"(x = )\ninput x from column(\"x\")\nloss = a ** b\nmetric m/n = (3\n";
    let parsed = poc_grammar::parse_partial(src);
    assert_eq!(parse(src).unwrap_err(), parsed.errors);
    assert_eq!(parsed.errors.len(), 7, "{:#?}", parsed.errors);
    assert_eq!(parsed.ast.statements.len(), 2, "objective and input parse");
    let unparsed: Vec<(Option<&str>, Option<&str>)> = parsed
        .unparsed
        .iter()
        .map(|u| (u.keyword, u.name.as_deref()))
        .collect();
    assert_eq!(
        unparsed,
        [
            (None, None),
            (Some("let"), Some("a")),
            (Some("param"), Some("p")),
            (Some("use"), Some("d")),
            (Some("use"), Some("mine")),
            (Some("loss"), None),
            (Some("metric"), Some("m/n")),
        ]
    );
}

#[test]
fn a_diagnostic_renders_with_its_line_and_caret() {
    let src = "objective o\nloss = a ** b\n";
    let errors = parse(src).unwrap_err();
    let text = poc_grammar::diag::render_all(&errors, "f.po", src);
    assert_eq!(
        text,
        "f.po:2:11: error[E0001]: expected an expression, found `*`\n  |\n2 | loss = a ** b\n  |           ^\n  = hint: powers are written `x ^ y`\n"
    );
}

#[test]
fn error_kinds_have_distinct_ordered_codes_and_names() {
    for (i, kind) in ErrorKind::ALL.iter().enumerate() {
        assert_eq!(kind.code(), format!("E{:04}", i + 1), "{kind:?}");
        assert!(
            kind.name()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_'),
            "{kind:?}"
        );
    }
    let mut names: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.name()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), ErrorKind::ALL.len(), "names are distinct");
}

#[test]
fn suggestions_catch_typos_and_underscores() {
    use poc_grammar::diag::suggest;
    let names = ["log_sigmoid", "sigmoid", "softplus"];
    assert_eq!(suggest("logsigmoid", names), Some("log_sigmoid"));
    assert_eq!(suggest("softpuls", names), Some("softplus"));
    assert_eq!(suggest("entropy", names), None);
}
