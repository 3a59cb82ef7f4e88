//! The Cranelift lowering: one native kernel per program that loops over a batch in
//! struct-of-arrays form and writes every output column. Transcendental functions (and the
//! sigmoid family, when a program still holds it) call the same Rust functions the
//! interpreter uses, so the two agree to the bit. Sharing one `exp(-|x|)` between the sigmoid
//! family of x and -x is not done here but in the DAG, by `specialize` (what `--emit clif`
//! and `--backend jit` compile).
//!
//! Kernel ABI: `extern "C" fn(n: i64, params: *const f64, inputs: *const *const f64,
//! outputs: *const *mut f64)`; `inputs[k]` and `outputs[k]` point at `n` f64 each.
//!
//! Token-level programs (per-token inputs, masked reductions, `gae`, `whiten`) are not
//! compiled: [`Kernel::compile`] rejects them with [`JitError::Unsupported`]; the interpreter
//! and the burn lowering run them.

use crate::ops::{Op, Ty};
use crate::program::Program;
use cranelift_codegen::Context;
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{
    AbiParam, InstBuilder, MemFlagsData, Signature, UserFuncName, Value, types,
};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, default_libcall_names};

/// Why a kernel could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum JitError {
    /// Cranelift rejected the function or the host is unsupported (a compiler bug or an
    /// unsupported machine).
    #[error("JIT compilation failed: {0}")]
    Codegen(String),
    /// The caller passed columns of the wrong number or length.
    #[error("{0}")]
    Shape(String),
    /// The program uses something the JIT does not compile (token-level values).
    #[error("{0}")]
    Unsupported(String),
}

/// The message for a token-level program.
pub const TOKEN_LEVEL_UNSUPPORTED: &str = "token-level objectives (per-token inputs, masked reductions, gae, whiten) are not supported by the JIT; use --backend interp|burn";

/// Why the JIT refuses a program with an op across the batch (the kernel is a loop over
/// independent examples).
pub const BATCH_LEVEL_UNSUPPORTED: &str = "objectives with ops across the batch (sort, sort_by) are not supported by the JIT, whose kernel runs each example on its own; use --backend interp|burn";

type KernelFn = unsafe extern "C" fn(i64, *const f64, *const *const f64, *const *mut f64);

/// A compiled program.
pub struct Kernel {
    // Owns the executable memory `func` points into; must outlive every call.
    _module: JITModule,
    func: KernelFn,
    clif: String,
    n_inputs: usize,
    n_params: usize,
    n_outputs: usize,
}

// The helper functions kernels call. `extern "C"` so Cranelift can call them with the
// platform ABI; each is the interpreter's own definition.
extern "C" fn poc_exp(x: f64) -> f64 {
    x.exp()
}
extern "C" fn poc_log(x: f64) -> f64 {
    x.ln()
}
extern "C" fn poc_log1p(x: f64) -> f64 {
    x.ln_1p()
}
extern "C" fn poc_expm1(x: f64) -> f64 {
    x.exp_m1()
}
extern "C" fn poc_tanh(x: f64) -> f64 {
    x.tanh()
}
extern "C" fn poc_pow(x: f64, y: f64) -> f64 {
    x.powf(y)
}
extern "C" fn poc_sigmoid(x: f64) -> f64 {
    Op::Sigmoid.eval(&[x])
}
extern "C" fn poc_log_sigmoid(x: f64) -> f64 {
    Op::LogSigmoid.eval(&[x])
}
extern "C" fn poc_softplus(x: f64) -> f64 {
    Op::Softplus.eval(&[x])
}

const UNARY_HELPERS: [(&str, extern "C" fn(f64) -> f64); 8] = [
    ("poc_exp", poc_exp),
    ("poc_log", poc_log),
    ("poc_log1p", poc_log1p),
    ("poc_expm1", poc_expm1),
    ("poc_tanh", poc_tanh),
    ("poc_sigmoid", poc_sigmoid),
    ("poc_log_sigmoid", poc_log_sigmoid),
    ("poc_softplus", poc_softplus),
];

fn helper_name(op: Op) -> Option<&'static str> {
    Some(match op {
        Op::Exp => "poc_exp",
        Op::Log => "poc_log",
        Op::Log1p => "poc_log1p",
        Op::Expm1 => "poc_expm1",
        Op::Tanh => "poc_tanh",
        Op::Pow => "poc_pow",
        Op::Sigmoid => "poc_sigmoid",
        Op::LogSigmoid => "poc_log_sigmoid",
        Op::Softplus => "poc_softplus",
        _ => return None,
    })
}

impl Kernel {
    /// Compiles `program` for the host CPU.
    pub fn compile(program: &Program) -> Result<Kernel, JitError> {
        if program.is_token_level() {
            return Err(JitError::Unsupported(TOKEN_LEVEL_UNSUPPORTED.into()));
        }
        if program.is_batch_level() {
            return Err(JitError::Unsupported(BATCH_LEVEL_UNSUPPORTED.into()));
        }
        let err = |e: &dyn std::fmt::Display| JitError::Codegen(e.to_string());
        let mut flags = settings::builder();
        flags
            .set("use_colocated_libcalls", "false")
            .map_err(|e| err(&e))?;
        flags.set("is_pic", "false").map_err(|e| err(&e))?;
        flags.set("opt_level", "speed").map_err(|e| err(&e))?;
        let isa = cranelift_native::builder()
            .map_err(|e| err(&e))?
            .finish(settings::Flags::new(flags))
            .map_err(|e| err(&e))?;
        let mut jb = JITBuilder::with_isa(isa, default_libcall_names());
        for (name, f) in UNARY_HELPERS {
            jb.symbol(name, f as *const u8);
        }
        jb.symbol(
            "poc_pow",
            poc_pow as extern "C" fn(f64, f64) -> f64 as *const u8,
        );
        let mut module = JITModule::new(jb);

        let ptr = module.target_config().pointer_type();
        let mut sig = module.make_signature();
        sig.params.push(AbiParam::new(types::I64));
        for _ in 0..3 {
            sig.params.push(AbiParam::new(ptr));
        }
        let func_id = module
            .declare_function("poc_kernel", Linkage::Export, &sig)
            .map_err(|e| err(&e))?;

        let mut ctx = module.make_context();
        ctx.func.signature = sig;
        ctx.func.name = UserFuncName::user(0, func_id.as_u32());
        let mut fctx = FunctionBuilderContext::new();
        build_body(&mut module, &mut ctx, &mut fctx, program, ptr).map_err(|e| err(&e))?;
        let clif = ctx.func.display().to_string();
        module
            .define_function(func_id, &mut ctx)
            .map_err(|e| err(&format!("{e:?}")))?;
        module.clear_context(&mut ctx);
        module.finalize_definitions().map_err(|e| err(&e))?;
        let code = module.get_finalized_function(func_id);
        // SAFETY: the function was declared with exactly this signature above.
        let func = unsafe { std::mem::transmute::<*const u8, KernelFn>(code) };
        Ok(Kernel {
            _module: module,
            func,
            clif,
            n_inputs: program.input_names.len(),
            n_params: program.param_names.len(),
            n_outputs: program.outputs.len(),
        })
    }

    /// The Cranelift IR of the kernel (`--emit clif`).
    pub fn clif(&self) -> &str {
        &self.clif
    }

    /// Runs the kernel: `columns[k]` is input k; `outputs[k]` receives output k. All columns
    /// must have the same length.
    pub fn run(
        &self,
        params: &[f64],
        columns: &[&[f64]],
        outputs: &mut [Vec<f64>],
    ) -> Result<(), JitError> {
        if params.len() != self.n_params
            || columns.len() != self.n_inputs
            || outputs.len() != self.n_outputs
        {
            return Err(JitError::Shape(format!(
                "kernel takes {} params, {} inputs, {} outputs; got {}, {}, {}",
                self.n_params,
                self.n_inputs,
                self.n_outputs,
                params.len(),
                columns.len(),
                outputs.len()
            )));
        }
        let n = columns.first().map(|c| c.len()).unwrap_or(0);
        if columns.iter().any(|c| c.len() != n) {
            return Err(JitError::Shape("input columns differ in length".into()));
        }
        for o in outputs.iter_mut() {
            o.clear();
            o.resize(n, 0.0);
        }
        let ins: Vec<*const f64> = columns.iter().map(|c| c.as_ptr()).collect();
        let outs: Vec<*mut f64> = outputs.iter_mut().map(|o| o.as_mut_ptr()).collect();
        // SAFETY: every pointer addresses `n` valid f64s (checked above); the kernel reads
        // rows 0..n of each input column and writes rows 0..n of each output column.
        unsafe { (self.func)(n as i64, params.as_ptr(), ins.as_ptr(), outs.as_ptr()) };
        Ok(())
    }
}

fn build_body(
    module: &mut JITModule,
    ctx: &mut Context,
    fctx: &mut FunctionBuilderContext,
    program: &Program,
    ptr: types::Type,
) -> Result<(), String> {
    let mut b = FunctionBuilder::new(&mut ctx.func, fctx);
    let entry = b.create_block();
    let header = b.create_block();
    let body = b.create_block();
    let exit = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let [n, params_ptr, inputs_ptr, outputs_ptr] = b.block_params(entry) else {
        return Err("kernel signature has four parameters".into());
    };
    let (n, params_ptr, inputs_ptr, outputs_ptr) = (*n, *params_ptr, *inputs_ptr, *outputs_ptr);
    let flags = MemFlagsData::trusted();
    let word = ptr.bytes() as i32;

    // Hoisted out of the loop: parameters, column base pointers, helper references.
    let mut param_vals = std::collections::HashMap::new();
    let mut input_bases = std::collections::HashMap::new();
    for ins in &program.instrs {
        match ins.op {
            Op::Param(k) => {
                param_vals
                    .entry(k)
                    .or_insert_with(|| b.ins().load(types::F64, flags, params_ptr, 8 * k as i32));
            }
            Op::Input(k) => {
                input_bases
                    .entry(k)
                    .or_insert_with(|| b.ins().load(ptr, flags, inputs_ptr, word * k as i32));
            }
            _ => {}
        }
    }
    let output_bases: Vec<Value> = (0..program.outputs.len())
        .map(|k| b.ins().load(ptr, flags, outputs_ptr, word * k as i32))
        .collect();
    let mut helpers = std::collections::HashMap::new();
    for ins in &program.instrs {
        if let Some(name) = helper_name(ins.op) {
            if helpers.contains_key(name) {
                continue;
            }
            let arity = if name == "poc_pow" { 2 } else { 1 };
            let mut sig = Signature::new(module.isa().default_call_conv());
            for _ in 0..arity {
                sig.params.push(AbiParam::new(types::F64));
            }
            sig.returns.push(AbiParam::new(types::F64));
            let id: FuncId = module
                .declare_function(name, Linkage::Import, &sig)
                .map_err(|e| e.to_string())?;
            let fref = module.declare_func_in_func(id, b.func);
            helpers.insert(name, fref);
        }
    }
    let zero_i = b.ins().iconst(types::I64, 0);
    b.ins().jump(header, &[zero_i.into()]);

    // header(i): if i < n goto body(i) else exit
    b.switch_to_block(header);
    let i = b.append_block_param(header, types::I64);
    let more = b.ins().icmp(
        cranelift_codegen::ir::condcodes::IntCC::SignedLessThan,
        i,
        n,
    );
    b.ins().brif(more, body, &[], exit, &[]);

    b.switch_to_block(body);
    let offset = b.ins().imul_imm_s(i, 8);
    let offset = if ptr == types::I64 {
        offset
    } else {
        b.ins().ireduce(ptr, offset)
    };
    let mut regs: Vec<Value> = Vec::with_capacity(program.instrs.len());
    for ins in &program.instrs {
        let a: Vec<Value> = ins.args.iter().map(|r| regs[*r as usize]).collect();
        let v = match ins.op {
            Op::Const(bits) => b.ins().f64const(f64::from_bits(bits)),
            Op::BoolConst(v) => b.ins().iconst(types::I8, i64::from(v)),
            Op::Input(k) => {
                let addr = b.ins().iadd(input_bases[&k], offset);
                b.ins().load(types::F64, flags, addr, 0)
            }
            Op::Param(k) => param_vals[&k],
            Op::Neg => b.ins().fneg(a[0]),
            Op::Add => b.ins().fadd(a[0], a[1]),
            Op::Sub => b.ins().fsub(a[0], a[1]),
            Op::Mul => b.ins().fmul(a[0], a[1]),
            Op::Div => b.ins().fdiv(a[0], a[1]),
            Op::Sqrt => b.ins().sqrt(a[0]),
            Op::Abs => b.ins().fabs(a[0]),
            Op::Min => b.ins().fmin(a[0], a[1]),
            Op::Max => b.ins().fmax(a[0], a[1]),
            Op::StopGrad => a[0],
            Op::Relu => {
                // x > 0 ? x : x * 0 (keeps NaN, like the interpreter)
                let z = b.ins().f64const(0.0);
                let pos = b.ins().fcmp(FloatCC::GreaterThan, a[0], z);
                let xz = b.ins().fmul(a[0], z);
                b.ins().select(pos, a[0], xz)
            }
            Op::Sign => {
                let z = b.ins().f64const(0.0);
                let one = b.ins().f64const(1.0);
                let m1 = b.ins().f64const(-1.0);
                let pos = b.ins().fcmp(FloatCC::GreaterThan, a[0], z);
                let neg = b.ins().fcmp(FloatCC::LessThan, a[0], z);
                let xz = b.ins().fmul(a[0], z);
                let inner = b.ins().select(neg, m1, xz);
                b.ins().select(pos, one, inner)
            }
            Op::Exp
            | Op::Log
            | Op::Log1p
            | Op::Expm1
            | Op::Tanh
            | Op::Pow
            | Op::Sigmoid
            | Op::LogSigmoid
            | Op::Softplus => {
                let name = helper_name(ins.op).ok_or("helper op without helper")?;
                let call = b.ins().call(helpers[name], &a);
                b.inst_results(call)[0]
            }
            Op::Lt => b.ins().fcmp(FloatCC::LessThan, a[0], a[1]),
            Op::Le => b.ins().fcmp(FloatCC::LessThanOrEqual, a[0], a[1]),
            Op::Gt => b.ins().fcmp(FloatCC::GreaterThan, a[0], a[1]),
            Op::Ge => b.ins().fcmp(FloatCC::GreaterThanOrEqual, a[0], a[1]),
            Op::Eq => b.ins().fcmp(FloatCC::Equal, a[0], a[1]),
            Op::Ne => b.ins().fcmp(FloatCC::NotEqual, a[0], a[1]),
            Op::And => b.ins().band(a[0], a[1]),
            Op::Or => b.ins().bor(a[0], a[1]),
            Op::Not => b.ins().bxor_imm_s(a[0], 1),
            Op::Select => b.ins().select(a[0], a[1], a[2]),
            Op::TokenInput(_)
            | Op::Broadcast
            | Op::Sum
            | Op::MaskedSum
            | Op::LastToken
            | Op::Gae
            | Op::Whiten => return Err(TOKEN_LEVEL_UNSUPPORTED.into()),
            Op::SortBy | Op::Unsort => return Err(BATCH_LEVEL_UNSUPPORTED.into()),
        };
        regs.push(v);
    }
    for (k, out) in program.outputs.iter().enumerate() {
        let mut v = regs[out.reg as usize];
        if out.ty == Ty::Bool {
            let one = b.ins().f64const(1.0);
            let zero = b.ins().f64const(0.0);
            v = b.ins().select(v, one, zero);
        }
        let addr = b.ins().iadd(output_bases[k], offset);
        b.ins().store(flags, v, addr, 0);
    }
    let next = b.ins().iadd_imm_s(i, 1);
    b.ins().jump(header, &[next.into()]);

    b.switch_to_block(exit);
    b.ins().return_(&[]);
    b.seal_all_blocks();
    b.finalize(module.target_config());
    Ok(())
}
