//! One sectioned snapshot per shipped objective: SOURCE, AST (canonical source), TYPED,
//! GRADIENT, GRAPH and CLIF — the whole compilation story in one reviewable file.

mod common;

#[test]
fn objective_snapshots() {
    for (name, src) in common::objectives() {
        let ast = poc_grammar::parse(&src).unwrap();
        let c = common::compiled(&name);
        // Token-level objectives are not compiled by the JIT: their CLIF section says so.
        let clif = match poc_compiler::jit::Kernel::compile(&c.native_program(None, true)) {
            Ok(kernel) => kernel.clif().to_string(),
            Err(poc_compiler::jit::JitError::Unsupported(m)) => format!("(not compiled: {m})\n"),
            Err(e) => panic!("{name}: {e}"),
        };
        let text = format!(
            "=== SOURCE\n{src}\n=== AST\n{}\n=== TYPED\n{}\n=== GRADIENT\n{}\n=== GRAPH\n{}\n=== CLIF\n{}",
            poc_grammar::print::program(&ast),
            poc_compiler::print::typed(&c.objective),
            poc_compiler::print::grad(&c),
            c.program.text(&c.objective.name),
            clif
        );
        insta::assert_snapshot!(format!("objective_{name}"), text);
    }
}

#[test]
fn canonical_source_parses_back_to_the_same_tree() {
    for (name, src) in common::objectives() {
        let ast = poc_grammar::parse(&src).unwrap();
        let printed = poc_grammar::print::program(&ast);
        let again = poc_grammar::parse(&printed)
            .unwrap_or_else(|e| panic!("{name}: canonical form does not parse: {e:?}"));
        assert_eq!(
            poc_grammar::print::program(&again),
            printed,
            "{name}: printing is not a fixpoint"
        );
        // Same meaning: the typed forms agree.
        let a = poc_compiler::check_source(&src).unwrap();
        let b = poc_compiler::check_source(&printed).unwrap();
        assert_eq!(
            poc_compiler::print::typed(&a),
            poc_compiler::print::typed(&b),
            "{name}"
        );
    }
}
