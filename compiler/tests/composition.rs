//! Composition (`use`): a composed objective compiles to the same graph as the formulas written
//! out by hand (snapshot of that graph); parameters are namespaced, bindable and overridable;
//! inputs are unified by source; lets, inputs and parameters of a used objective are reachable
//! as `alias.NAME`; local files are read through [`Files`] relative to the file that uses
//! them; and every misuse is a diagnostic, never a panic.

mod common;

use common::*;
use poc_compiler::{Compiled, ErrorKind, Files, Program};
use std::collections::HashMap;

/// Each output of `p` as one expression tree, inputs by name, parameters by position: the
/// computation itself, whatever order the DAG's nodes were made in.
fn trees(p: &Program) -> Vec<(String, String)> {
    fn tree(p: &Program, reg: u32) -> String {
        use poc_compiler::ops::Op;
        let ins = &p.instrs[reg as usize];
        match ins.op {
            Op::Input(k) | Op::TokenInput(k) => p.input_names[k as usize].clone(),
            Op::Param(k) => format!("param{k}"),
            Op::Const(bits) => format!("{}", f64::from_bits(bits)),
            op => {
                let args: Vec<String> = ins.args.iter().map(|a| tree(p, *a)).collect();
                format!("{}({})", op.name(), args.join(", "))
            }
        }
    }
    p.outputs
        .iter()
        .map(|o| (o.name.clone(), tree(p, o.reg)))
        .collect()
}

/// RPO written out by hand: DPO's formula plus α times the per-token NLL, parameters in the
/// order the composed file declares them (`dpo.beta`, `dpo.label_smoothing`, `alpha`), one `let`
/// per value the composition names (`dpo.rho_w`, …, `dpo.loss`, `sft.loss`: the simplifier
/// keeps named values whole).
const RPO_BY_HAND: &str = "objective rpo_by_hand
param beta = 0.1 in (0, inf)
param label_smoothing = 0 in [0, 0.5)
param alpha = 1 in [0, inf)
input policy_chosen_logps
input policy_rejected_logps
input ref_chosen_logps
input ref_rejected_logps
input chosen_len
let rho_w = policy_chosen_logps - ref_chosen_logps
let rho_l = policy_rejected_logps - ref_rejected_logps
let z = beta * (rho_w - rho_l)
let dpo_loss = -(1 - label_smoothing) * log_sigmoid(z) - label_smoothing * log_sigmoid(-z)
let nll = -policy_chosen_logps / chosen_len
loss = dpo_loss + alpha * nll
";

#[test]
fn rpo_compiles_to_the_hand_expanded_graph() {
    let composed = compiled("rpo");
    let by_hand = poc_compiler::compile(RPO_BY_HAND).unwrap();
    let names = |c: &Compiled| {
        c.objective
            .params
            .iter()
            .map(|p| p.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(&composed),
        ["dpo.beta", "dpo.label_smoothing", "alpha"]
    );
    assert_eq!(composed.program.input_names, by_hand.program.input_names);
    // Loss and every gradient: the same computation (metrics differ: RPO logs DPO's).
    let a = trees(&composed.loss_program);
    let b = trees(&by_hand.loss_program);
    assert_eq!(a[0], b[0], "loss");
    let grads = |c: &Compiled| -> Vec<(String, String)> {
        trees(&c.program)
            .into_iter()
            .filter(|(n, _)| n == "loss" || n.starts_with("d/"))
            .collect()
    };
    assert_eq!(grads(&composed), grads(&by_hand));
    // The shared graph, pinned.
    let text: String = grads(&composed)
        .iter()
        .map(|(n, t)| format!("{n} = {t}\n"))
        .collect();
    insta::assert_snapshot!("rpo_graph", text);
}

#[test]
fn the_wang_mixture_is_the_weighted_sum_of_its_parts() {
    let row = worked_example_row();
    let c = compiled("dpo_bco_sft");
    let (params, cols) = worked_example_inputs(&c, &row, &[]);
    let got = poc_compiler::interp::eval_batch(&c.program, &params, &cols)[0][0];
    let part = |name: &str| {
        let c = compiled(name);
        let (params, cols) = worked_example_inputs(&c, &row, &[]);
        poc_compiler::interp::eval_batch(&c.program, &params, &cols)[0][0]
    };
    let want = 0.8 * part("dpo") + 0.2 * part("bco_pair") + part("sft");
    assert!(close(got, want, 1e-14, 0.0), "{got} vs {want}");
    // One β for both preference terms: no `dpo.beta` or `bco_pair.beta` of its own.
    let names: Vec<&str> = c.objective.params.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["beta", "w_dpo", "w_bco", "w_sft"]);
}

/// An in-memory file system: path → text, paths relative to the using file's directory.
struct Mem(HashMap<&'static str, &'static str>);

impl Files for Mem {
    fn read(&self, from: Option<&str>, path: &str) -> Result<(String, String), String> {
        let dir = from
            .and_then(|f| f.rsplit_once('/').map(|(d, _)| d))
            .unwrap_or("");
        let key = if dir.is_empty() {
            path.to_string()
        } else {
            format!("{dir}/{path}")
        };
        self.0
            .get(key.as_str())
            .map(|t| (key.clone(), t.to_string()))
            .ok_or_else(|| format!("no file `{key}`"))
    }
}

const MARGIN: &str = "objective margin
/// The target margin.
param gamma = 1 in [0, inf)
input pw from policy.logps(chosen)
input pl from policy.logps(rejected)
let m = pw - pl
loss = (m - gamma) ^ 2
metric margin = m
";

#[test]
fn local_files_params_lets_and_inputs() {
    let files = Mem(HashMap::from([
        ("lib/margin.po", MARGIN),
        // A file using another relative to itself.
        (
            "lib/twice.po",
            "objective twice\nuse \"margin.po\" as inner\nloss = 2 * inner.loss\n",
        ),
    ]));
    let src = "objective mine
param g = 3
input policy_chosen_logps
use \"lib/margin.po\" as a
use \"lib/margin.po\"(gamma = g / 3) as b with metrics
use \"lib/twice.po\"
let diff = a.m - b.m + a.pw
loss = a.loss + b.loss + twice.loss + a.gamma * diff
";
    let c = poc_compiler::compile_with(src, &files).unwrap();
    let params: Vec<&str> = c.objective.params.iter().map(|p| p.name.as_str()).collect();
    // `b.gamma` is bound (to g / 3), so it is no parameter; `twice.inner.gamma` is nested.
    assert_eq!(params, ["g", "a.gamma", "twice.inner.gamma"]);
    // pw unifies with the declared policy_chosen_logps (same source); pl is added once.
    let inputs: Vec<&str> = c.objective.inputs.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(inputs, ["policy_chosen_logps", "pl"]);
    let metrics: Vec<&str> = c.gradient.metrics.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(metrics, ["margin"]);
    // Value: pw = -2, pl = -5, so m = 3; a: (3-1)², b: (3-1)² (γ = 3/3), twice: 2·(3-1)².
    let sets = ["a.gamma=1".to_string()];
    let p = c.objective.params_with(&sets).unwrap();
    let out = poc_compiler::interp::eval_batch(&c.program, &p, &[vec![-2.0], vec![-5.0]]);
    let want = 4.0 + 4.0 + 8.0 + 1.0 * (3.0 - 3.0 + -2.0);
    assert!(
        close(out[0][0], want, 1e-15, 0.0),
        "{} vs {want}",
        out[0][0]
    );
    // --set reaches a namespaced parameter.
    let p = c.objective.params_with(&["a.gamma=0".to_string()]).unwrap();
    let out = poc_compiler::interp::eval_batch(&c.program, &p, &[vec![-2.0], vec![-5.0]]);
    let want = 9.0 + 4.0 + 8.0;
    assert!(
        close(out[0][0], want, 1e-15, 0.0),
        "{} vs {want}",
        out[0][0]
    );
}

/// The kinds of the diagnostics of `src`, compiled with `files`.
fn kinds(src: &str, files: &dyn Files) -> Vec<(ErrorKind, String)> {
    match poc_compiler::check_source_with(src, files) {
        Ok(_) => vec![],
        Err(d) => d.into_iter().map(|d| (d.kind, d.message)).collect(),
    }
}

#[test]
fn misuse_is_reported() {
    let files = Mem(HashMap::from([
        ("a.po", "objective a\nuse \"b.po\"\nloss = b.loss\n"),
        ("b.po", "objective b\nuse \"a.po\"\nloss = a.loss\n"),
        (
            "broken.po",
            "objective broken\ninput policy_chosen_logps\nloss = nope\n",
        ),
        ("m.po", MARGIN),
    ]));
    let cases: [(&str, ErrorKind, &str); 7] = [
        (
            "objective x\nuse \"a.po\"\nloss = a.loss\n",
            ErrorKind::BadUse,
            "cycle",
        ),
        (
            "objective x\nuse \"broken.po\"\nloss = broken.loss\n",
            ErrorKind::BadUse,
            "1 error(s); the first: unknown name `nope` (line 3, column 8)",
        ),
        (
            "objective x\nuse \"missing.po\"\nloss = missing.loss\n",
            ErrorKind::UnknownObjective,
            "no file",
        ),
        (
            "objective x\nuse dpo\nuse dpo\nloss = dpo.loss\n",
            ErrorKind::DuplicateDefinition,
            "already names",
        ),
        (
            "objective x\nuse dpo\nloss = dpo.lose\n",
            ErrorKind::UnknownName,
            "has no value `lose`",
        ),
        (
            "objective x\nuse dpo with metrics\nuse ipo with metrics\nloss = dpo.loss + ipo.loss\n",
            ErrorKind::DuplicateDefinition,
            "twice",
        ),
        (
            "objective x\nuse \"m.po\"(gamma = m.loss) as m\nloss = m.loss\n",
            ErrorKind::BadUse,
            "refers to `m.` itself",
        ),
    ];
    for (src, kind, text) in cases {
        let got = kinds(src, &files);
        assert!(
            got.iter().any(|(k, m)| *k == kind && m.contains(text)),
            "{src}: expected {kind:?} with `{text}`, got {got:#?}"
        );
    }
}
