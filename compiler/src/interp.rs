//! The f64 interpreter: the reference semantics every other backend is tested against.

use crate::ops::Op;
use crate::program::Program;

/// Evaluates `program` on one example. `inputs[i]` is input i's value; returns every register.
pub fn eval_row(program: &Program, params: &[f64], inputs: &[f64], regs: &mut Vec<f64>) {
    regs.clear();
    let mut operands: [f64; 3] = [0.0; 3];
    for ins in &program.instrs {
        let v = match ins.op {
            Op::Input(k) => inputs[k as usize],
            Op::Param(k) => params[k as usize],
            op => {
                for (slot, a) in operands.iter_mut().zip(&ins.args) {
                    *slot = regs[*a as usize];
                }
                op.eval(&operands[..ins.args.len()])
            }
        };
        regs.push(v);
    }
}

/// Evaluates `program` on a batch in struct-of-arrays form: `columns[i][row]` is input i.
/// Returns `outputs[k][row]` for each program output k.
pub fn eval_batch(program: &Program, params: &[f64], columns: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = columns.first().map(|c| c.len()).unwrap_or(0);
    let mut out = vec![Vec::with_capacity(n); program.outputs.len()];
    let mut regs = Vec::with_capacity(program.instrs.len());
    let mut row = vec![0.0; columns.len()];
    for r in 0..n {
        for (slot, col) in row.iter_mut().zip(columns) {
            *slot = col[r];
        }
        eval_row(program, params, &row, &mut regs);
        for (k, o) in program.outputs.iter().enumerate() {
            out[k].push(regs[o.reg as usize]);
        }
    }
    out
}
