//! The op table is the one source of names: every op's name reads back to the op, the
//! checker's functions are exactly the ops written as calls (plus its sugar), and a call of
//! each prints back as written and checks again to the same op.

use poc_compiler::check::Function;
use poc_compiler::ops::{Op, OperandShape, Syntax};
use poc_grammar::{BinaryOp, UnaryOp};

#[test]
fn every_named_op_round_trips_through_its_name() {
    for op in Op::OPERATORS {
        assert_eq!(Op::from_name(op.name()), Some(op), "{op:?}");
    }
    let mut names: Vec<&str> = Op::OPERATORS.iter().map(|op| op.name()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), Op::OPERATORS.len(), "op names are distinct");
}

#[test]
fn operators_round_trip_through_their_syntax() {
    use BinaryOp::*;
    for b in [Add, Sub, Mul, Div, Pow, Lt, Le, Gt, Ge, Eq, Ne, And, Or] {
        assert_eq!(Op::infix(b).syntax(), Syntax::Infix(b), "{b:?}");
    }
    for u in [UnaryOp::Neg, UnaryOp::Not] {
        assert_eq!(Op::prefix(u).syntax(), Syntax::Prefix(u), "{u:?}");
    }
}

#[test]
fn the_checker_knows_exactly_the_call_ops() {
    for op in Op::OPERATORS {
        let known = Function::named(op.name());
        match op.syntax() {
            Syntax::Call => assert_eq!(known, Some(Function::Op(op)), "{op:?}"),
            _ => assert_eq!(known, None, "{op:?} is not a function of the language"),
        }
    }
    for f in Function::all() {
        assert_eq!(Function::named(f.name()), Some(f));
    }
}

const HEAD: &str = "objective calls\ninput x from policy.token_logps(completion)\ninput s from policy.logps(chosen)\ninput m from completion.mask\n";

/// A call of `f` with arguments of the shapes it takes: the mask `m` where a per-token value
/// is required, the per-example `s` where a per-example one is, the per-token `x` elsewhere.
fn call(f: Function) -> String {
    let args: Vec<&str> = (0..f.arity())
        .map(|k| match f.operand_shape(k) {
            OperandShape::Tokens => "m",
            OperandShape::Scalar => "s",
            OperandShape::Any => "x",
        })
        .collect();
    format!("{}({})", f.name(), args.join(", "))
}

#[test]
fn every_function_call_parses_prints_and_parses_back() {
    for f in Function::all() {
        let written = call(f);
        let src = format!("{HEAD}let e = {written}\nloss = masked_sum(x, m)\n");
        let obj = poc_compiler::check_source(&src)
            .unwrap_or_else(|d| panic!("`{written}` does not check: {d:?}"));
        let e = obj.lets.iter().find(|l| l.name == "e").unwrap();
        let Function::Op(op) = f else {
            // Sugar is expanded by the checker; it prints as the ops it stands for.
            continue;
        };
        assert_eq!(obj.dag.op(e.id), op, "`{written}`");
        let typed = poc_compiler::print::typed(&obj);
        let line = typed
            .lines()
            .find(|l| l.starts_with("let e: "))
            .unwrap_or_else(|| panic!("no let e in\n{typed}"));
        let printed = line.split_once(" = ").unwrap().1;
        assert_eq!(printed, written, "the call prints as written");
        let again = poc_compiler::check_source(&format!(
            "{HEAD}let e = {printed}\nloss = masked_sum(x, m)\n"
        ))
        .unwrap();
        let e2 = again.lets.iter().find(|l| l.name == "e").unwrap();
        assert_eq!(again.dag.op(e2.id), op, "`{printed}` checks back to {op:?}");
    }
}

#[test]
fn internal_ops_cannot_be_called() {
    for op in Op::OPERATORS
        .into_iter()
        .filter(|op| op.syntax() == Syntax::Internal)
    {
        let args = vec!["x"; op.arity()].join(", ");
        let src = format!("{HEAD}loss = masked_sum({}({args}), m)\n", op.name());
        let diags = poc_compiler::check_source(&src).unwrap_err();
        assert!(
            diags
                .iter()
                .any(|d| d.kind == poc_compiler::ErrorKind::UnknownFunction),
            "{op:?}: {diags:?}"
        );
    }
}

#[test]
fn arities_and_shapes_come_from_the_op() {
    assert_eq!(Function::named("gae").map(Function::arity), Some(5));
    assert_eq!(Function::named("clamp").map(Function::arity), Some(3));
    assert_eq!(Function::named("masked_mean").map(Function::arity), Some(2));
    assert_eq!(Op::Gae.operand_shape(2), OperandShape::Tokens);
    assert_eq!(Op::Gae.operand_shape(3), OperandShape::Scalar);
    assert_eq!(Op::Whiten.operand_shape(1), OperandShape::Tokens);
    assert_eq!(Op::Add.operand_shape(1), OperandShape::Any);
}
