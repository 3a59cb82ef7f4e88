//! One sectioned snapshot per shipped objective (`snapshots/snapshots__objective@NAME.po.snap`):
//! SOURCE, AST (canonical source), TYPED, GRADIENT, GRAPH, NATIVE GRAPH and CLIF — the whole
//! compilation story in one reviewable file. The GRAPH is the program every backend runs; the
//! NATIVE GRAPH is the same gradient specialized for the JIT (sigmoid family expanded so it
//! shares its exponentials), the program the CLIF below it is compiled from.

mod common;

use std::path::Path;

fn name_of(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn objective() {
    insta::glob!("../../objectives", "*.po", |path| {
        let name = name_of(path);
        let src = std::fs::read_to_string(path).unwrap();
        let ast = poc_grammar::parse(&src).unwrap();
        let c = common::compiled(&name);
        let native = c.native_program(None, true);
        // Token-level objectives are not compiled by the JIT: their CLIF section says so.
        let clif = match poc_compiler::jit::Kernel::compile(&native) {
            Ok(kernel) => kernel.clif().to_string(),
            Err(poc_compiler::jit::JitError::Unsupported(m)) => format!("(not compiled: {m})\n"),
            Err(e) => panic!("{name}: {e}"),
        };
        let text = format!(
            "=== SOURCE\n{src}\n=== AST\n{}\n=== TYPED\n{}\n=== GRADIENT\n{}\n=== GRAPH\n{}\n=== NATIVE GRAPH\n{}\n=== CLIF\n{}",
            poc_grammar::print::program(&ast),
            poc_compiler::print::typed(&c.objective),
            poc_compiler::print::grad(&c),
            c.program.text(&c.objective.name),
            native.text(&c.objective.name),
            clif
        );
        insta::assert_snapshot!(text);
    });
}

#[test]
fn canonical_source_parses_back_to_the_same_meaning() {
    for (name, src) in common::objectives() {
        let ast = poc_grammar::parse(&src).unwrap();
        let printed = poc_grammar::print::program(&ast);
        // The grammar's own tests check the printed form parses back to the same tree; here
        // the two sources mean the same: the typed forms agree.
        let a = poc_compiler::check_source(&src).unwrap();
        let b = poc_compiler::check_source(&printed)
            .unwrap_or_else(|e| panic!("{name}: canonical form does not check: {e:?}"));
        assert_eq!(
            poc_compiler::print::typed(&a),
            poc_compiler::print::typed(&b),
            "{name}"
        );
    }
}
