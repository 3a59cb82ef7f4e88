//! Command-line interface: argument definitions and the commands that only print.

use crate::{Failure, eval, library};
use clap::{Parser, Subcommand, ValueEnum};
use poc_compiler::{CompileError, Compiled, print};
use std::path::{Path, PathBuf};

/// poc — the preference-objective compiler.
///
/// Write a preference-optimization loss (DPO, IPO, SimPO, MIPO, MallowsPO, MMPO, ...) as a
/// short `.po` formula; poc checks it, differentiates it symbolically, and runs it on an
/// interpreter, a Cranelift JIT, or burn tensors (libtorch, CPU or CUDA).
///
/// Objectives can be given as a path (`objectives/dpo.po`) or as the name of a shipped one
/// (`dpo`); `poc list` shows those.
#[derive(Parser, Debug)]
#[command(name = "poc", version, after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "Examples:
  poc list                                   the shipped objectives
  poc explain mipo                           parameters, inputs, loss and gradients as math
  poc check my_loss.po                       diagnostics, or nothing (exit 0)
  poc compile dpo --emit grad                the simplified symbolic gradient
  poc eval dpo --inputs rows.jsonl --set beta=0.2 --backend jit
  poc run objectives/mipo.po                 train the embedded tiny model on bundled data (CPU)
  poc run dpo --model ./Llama-3.2-1B --data prefs.jsonl --device cuda --set beta=0.1
  poc generate --model runs/dpo/checkpoint-400 --prompts prompts.jsonl --temperature 0.7
  poc plot dpo ipo hinge discopop            loss and dL/dΔ against the margin Δ, overlaid
  poc world --out world --seed 1             SFT data and noisy pairs with a known true reward
  poc run bt_reward --data prefs.jsonl --out runs/rm        a reward model (held-out accuracy)
  poc run ppo --reward-model runs/rm/checkpoint-100 --prompts prompts.jsonl   on-policy PPO
  poc mpo --model ./sft --data prefs.jsonl   reward model, split, DPO on easy, PPO on hard
  poc bench eval                             interpreter vs JIT vs burn vs hand-written DPO
  poc bench align                            objectives compared by the world's true reward
  poc bench align dpo ppo mpo --lr 2e-5      MPO against DPO-only and PPO-only, equal budget";

#[derive(Subcommand, Debug)]
enum Command {
    /// Check objectives; print every error with its place, or nothing (exit 0).
    Check {
        /// `.po` files (or shipped objective names).
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Print an objective's parameters, inputs, loss, gradient and metrics as math.
    Explain {
        /// A `.po` file or a shipped objective name.
        file: String,
        /// Print the formulas as LaTeX (an `align` body).
        #[arg(long)]
        latex: bool,
    },
    /// Print the canonical text form of one compiler stage.
    Compile {
        /// A `.po` file or a shipped objective name.
        file: String,
        /// Which stage: the syntax tree (as canonical source), the typed objective, the
        /// simplified gradient, the tensor program, or the Cranelift IR of the JIT kernel.
        #[arg(long, value_enum, default_value_t = Emit::Typed)]
        emit: Emit,
    },
    /// Evaluate loss, gradients and metrics on rows of inputs (JSON lines).
    ///
    /// Each line of --inputs is a JSON object with one number per input the objective
    /// declares. Each output line is `{"loss": .., "grad": {input: ..}, "metrics": {..}}`.
    Eval {
        /// A `.po` file or a shipped objective name.
        file: String,
        /// JSON-lines file of input rows.
        #[arg(long)]
        inputs: PathBuf,
        /// Override a parameter, e.g. `--set beta=0.2` (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE")]
        sets: Vec<String>,
        /// Which lowering computes the results.
        #[arg(long, value_enum, default_value_t = eval::Backend::Interp)]
        backend: eval::Backend,
        /// Float type for the burn backend.
        #[arg(long, value_enum, default_value_t = eval::Precision::F64)]
        dtype: eval::Precision,
        /// Device for the burn backend: cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Train a policy against a reference with an objective (the main job).
    ///
    /// With no --model/--data this trains the embedded `tiny` Llama (random init, byte-level
    /// tokenizer) on bundled synthetic preference pairs, on CPU, in a minute or two. Writes
    /// run_config.json, metrics.jsonl and HF-layout checkpoints (safetensors + config.json +
    /// tokenizer.json) to --out.
    Run {
        /// A `.po` file or a shipped objective name.
        objective: String,
        #[command(flatten)]
        args: Box<crate::run::RunArgs>,
    },
    /// Per-row sequence log-probs and completion lengths under a model (JSON lines):
    /// `chosen_logps`, `rejected_logps`, `chosen_len`, `rejected_len`.
    Logps {
        /// Model directory or preset (as `poc run --model`).
        #[arg(long, default_value = "tiny")]
        model: String,
        /// TRL preference JSONL.
        #[arg(long)]
        data: PathBuf,
        /// cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Truncation length.
        #[arg(long, default_value_t = 512)]
        max_length: usize,
        /// Pairs per forward.
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
    },
    /// Complete every prompt of a JSONL file under a model (KV-cache sampling: greedy,
    /// temperature, top-p), one JSON object per prompt on stdout.
    #[command(long_about = crate::generate::ABOUT, after_help = crate::generate::EXAMPLES)]
    Generate(crate::generate::GenerateArgs),
    /// Draw objectives' loss and dL/dΔ against the reward margin Δ, or a run's curves (PNG).
    #[command(long_about = crate::plot::ABOUT, after_help = crate::plot::EXAMPLES)]
    Plot(crate::plot::PlotArgs),
    /// Write the synthetic preference world: a known true reward r*, SFT data, labelled pairs.
    #[command(long_about = crate::world::ABOUT, after_help = crate::world::EXAMPLES)]
    World(crate::world::WorldArgs),
    /// MPO's easy/hard split: score every pair with a reward model and write easy.jsonl
    /// (gap > δ), hard.jsonl (gap ≤ δ) and a histogram of the gaps.
    ///
    /// Example: poc split --reward-model runs/bt_reward/checkpoint-200 --data prefs.jsonl --threshold 1 --out split/
    Split(crate::split::SplitArgs),
    /// Mixed Preference Optimization end to end: reward model → easy/hard split → DPO on the
    /// easy pairs → PPO on the hard prompts with the DPO model as policy and reference.
    ///
    /// Each stage lives in OUT/<stage> and is skipped when its output exists, and a training
    /// stage stopped part-way continues from its latest checkpoint, so a stopped pipeline
    /// resumes where it stopped.
    #[command(after_help = crate::mpo::EXAMPLES)]
    Mpo(crate::mpo::MpoArgs),
    /// List the shipped objectives, one line each.
    List,
    /// Benchmarks (reported as ratios against a baseline measured in the same run).
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Train objectives from one SFT reference on the synthetic world with several seeds and
    /// compare them by the known true reward: r*, win rate, KL, reward accuracy, ECE (a
    /// Markdown table with 95% CIs, frontier.png, curves.png).
    #[command(long_about = crate::align::ABOUT, after_help = crate::align::EXAMPLES)]
    Align(crate::align::AlignArgs),
    /// Rows/s of loss+gradient for dpo and mallows_phi: interpreter, JIT, burn (CPU) and a
    /// hand-written Rust DPO loop.
    Eval {
        /// Number of random rows.
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
        /// Repetitions (the best is reported).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
    /// Tokens/s and peak memory of DPO training steps of a small Llama on CPU, beside the same
    /// model, data and batch in PyTorch (bench/dpo_step.py with the set-up venv's torch).
    Train {
        /// Model width.
        #[arg(long, default_value_t = 256)]
        hidden: usize,
        /// Decoder blocks.
        #[arg(long, default_value_t = 4)]
        layers: usize,
        /// Preference pairs per step (2x sequences).
        #[arg(long, default_value_t = 8)]
        pairs: usize,
        /// Tokens per sequence.
        #[arg(long, default_value_t = 128)]
        seq: usize,
        /// Timed steps (after 2 warm-up steps).
        #[arg(long, default_value_t = 8)]
        steps: usize,
        /// Python with torch + transformers for the baseline (default: the set-up venv).
        #[arg(long)]
        python: Option<PathBuf>,
    },
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum Emit {
    Ast,
    Typed,
    Grad,
    Graph,
    Clif,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Check { files } => {
            let mut failed = String::new();
            for f in &files {
                let (label, src) = load(f)?;
                if let Err(d) = poc_compiler::check_source(&src) {
                    failed.push_str(&poc_grammar::diag::render_all(&d, &label, &src));
                    failed.push('\n');
                }
            }
            if failed.is_empty() {
                Ok(())
            } else {
                Err(Failure::User(failed))
            }
        }
        Command::Explain { file, latex } => {
            let (label, src) = load(&file)?;
            let c = compile(&label, &src)?;
            let style = if latex {
                print::Style::Latex
            } else {
                print::Style::Source
            };
            print!("{}", print::explain(&c, style));
            Ok(())
        }
        Command::Compile { file, emit } => {
            let (label, src) = load(&file)?;
            let text = match emit {
                Emit::Ast => {
                    let ast = poc_grammar::parse(&src).map_err(|d| user_diags(&d, &label, &src))?;
                    poc_grammar::print::program(&ast)
                }
                Emit::Typed => {
                    let obj = poc_compiler::check_source(&src)
                        .map_err(|d| user_diags(&d, &label, &src))?;
                    print::typed(&obj)
                }
                Emit::Grad => print::grad(&compile(&label, &src)?),
                Emit::Graph => {
                    let c = compile(&label, &src)?;
                    c.program.text(&c.objective.name)
                }
                Emit::Clif => {
                    let c = compile(&label, &src)?;
                    let k = poc_compiler::jit::Kernel::compile(&c.native_program(None, true))
                        .map_err(|e| match e {
                            poc_compiler::jit::JitError::Unsupported(m) => {
                                Failure::User(format!("poc: {label}: {m}\n"))
                            }
                            e => Failure::Internal(e.to_string()),
                        })?;
                    k.clif().to_string()
                }
            };
            print!("{text}");
            Ok(())
        }
        Command::Eval {
            file,
            inputs,
            sets,
            backend,
            dtype,
            device,
        } => {
            let (label, src) = load(&file)?;
            let c = compile(&label, &src)?;
            eval::run(&c, &inputs, &sets, backend, dtype, &device)
        }
        Command::Run { objective, args } => {
            let (label, src) = load(&objective)?;
            let c = compile(&label, &src)?;
            crate::run::run(&c, *args)
        }
        Command::Logps {
            model,
            data,
            device,
            max_length,
            batch_size,
        } => crate::run::logps(&model, &data, &device, max_length, batch_size),
        Command::Generate(args) => crate::generate::run(args),
        Command::Plot(args) => crate::plot::run(args),
        Command::World(args) => crate::world::run(args),
        Command::Split(args) => crate::split::run(args),
        Command::Mpo(args) => crate::mpo::run(args),
        Command::List => {
            for (name, src) in library::SHIPPED {
                let summary = poc_compiler::check_source(src)
                    .ok()
                    .and_then(|o| o.docs.first().cloned())
                    .unwrap_or_default();
                println!("{name:<20} {summary}");
            }
            Ok(())
        }
        Command::Bench {
            which: BenchCommand::Align(args),
        } => crate::align::run(args),
        Command::Bench {
            which: BenchCommand::Eval { rows, repeat },
        } => crate::bench::eval(rows, repeat),
        Command::Bench {
            which:
                BenchCommand::Train {
                    hidden,
                    layers,
                    pairs,
                    seq,
                    steps,
                    python,
                },
        } => crate::bench::train(
            crate::bench::TrainShape {
                hidden,
                layers,
                pairs,
                seq,
                steps,
            },
            python,
        ),
    }
}

/// Reads a `.po` file, or a shipped objective by name. Returns (label for messages, source).
pub fn load(arg: &str) -> Result<(String, String), Failure> {
    let path = Path::new(arg);
    // A file wins over a shipped name; a directory that happens to share a shipped name (a
    // run directory `dpo/`, say) does not.
    if path.is_file() || (path.exists() && library::shipped(arg).is_none()) {
        let src = std::fs::read_to_string(path)
            .map_err(|e| Failure::User(format!("poc: cannot read `{arg}`: {e}")))?;
        return Ok((arg.to_string(), src));
    }
    if let Some(src) = library::shipped(arg) {
        return Ok((format!("<shipped>/{arg}.po"), src.to_string()));
    }
    let names: Vec<&str> = library::SHIPPED.iter().map(|(n, _)| *n).collect();
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let hint = match poc_grammar::diag::suggest(&stem, names) {
        Some(s) => format!("did you mean `{s}` (a shipped objective)?"),
        None => "give a path to a .po file, or a shipped objective name (see `poc list`)".into(),
    };
    Err(Failure::User(format!(
        "poc: no such file or shipped objective: `{arg}`\n  = hint: {hint}\n"
    )))
}

fn user_diags(d: &[poc_compiler::Diagnostic], label: &str, src: &str) -> Failure {
    Failure::User(poc_grammar::diag::render_all(d, label, src))
}

/// Compiles, mapping errors to failures with rendered diagnostics.
pub fn compile(label: &str, src: &str) -> Result<Compiled, Failure> {
    poc_compiler::compile(src).map_err(|e| match e {
        CompileError::User(d) => user_diags(&d, label, src),
        CompileError::Internal { .. } => Failure::Internal(format!("{label}: {e}")),
    })
}
