//! The command line: every command's arguments (clap), and the dispatch to its module in
//! [`crate::commands`].

use crate::commands::{self, align, compile::Emit, eval, generate, mpo, plot, split, world};
use crate::edge::Failure;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

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
    pub command: Command,
}

const EXAMPLES: &str = "Examples:
  poc list                                   the shipped objectives
  poc explain mipo                           parameters, inputs, loss and gradients as math
  poc check my_loss.po                       diagnostics, or nothing (exit 0)
  poc compile dpo --emit grad                the simplified symbolic gradient
  poc eval dpo --inputs rows.jsonl --set beta=0.2 --backend jit
  poc run objectives/mipo.po                 train the embedded tiny model on bundled data (CPU)
  poc run dpo --model ./Llama-3.2-1B --data prefs.jsonl --device cuda --set beta=0.1
  poc run dpo --model meta-llama/Llama-3.2-1B-Instruct --data trl-lib/ultrafeedback_binarized --lora 16 --device cuda
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
pub enum Command {
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
    /// Each line of --inputs is a JSON object with one number (an array, per token) per input
    /// the objective reads; other columns are ignored and `token.position` is computed. Each
    /// output line is `{"loss": .., "grad": {input: ..}, "metrics": {..}}`.
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
        #[arg(long, value_enum, default_value_t = eval::BackendArg::Interp)]
        backend: eval::BackendArg,
        /// Float type for the burn backend.
        #[arg(long, value_enum, default_value_t = eval::PrecisionArg::F64)]
        dtype: eval::PrecisionArg,
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
        args: Box<commands::run::RunArgs>,
    },
    /// Per-row sequence log-probs and completion lengths under a model (JSON lines):
    /// `chosen_logps`, `rejected_logps`, `chosen_len`, `rejected_len`.
    Logps {
        /// Model directory, Hub id ORG/NAME[@REVISION] or preset (as `poc run --model`).
        #[arg(long, default_value = "tiny")]
        model: String,
        /// TRL preference rows: a .jsonl, .json or .parquet file, or a directory or Hub dataset
        /// id ORG/NAME[@REVISION] read as --split (as `poc run --data`).
        #[arg(long)]
        data: PathBuf,
        /// The split of a directory or Hub dataset given as --data.
        #[arg(long, default_value = "train")]
        split: String,
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
    #[command(long_about = generate::ABOUT, after_help = generate::EXAMPLES)]
    Generate(generate::GenerateArgs),
    /// Draw objectives' loss and dL/dΔ against the reward margin Δ, or a run's curves (PNG).
    #[command(long_about = plot::ABOUT, after_help = plot::EXAMPLES)]
    Plot(plot::PlotArgs),
    /// Write the synthetic preference world: a known true reward r*, SFT data, labelled pairs.
    #[command(long_about = world::ABOUT, after_help = world::EXAMPLES)]
    World(world::WorldArgs),
    /// MPO's easy/hard split: score every pair with a reward model and write easy.jsonl
    /// (gap > δ), hard.jsonl (gap ≤ δ) and a histogram of the gaps.
    ///
    /// Example: poc split --reward-model runs/bt_reward/checkpoint-200 --data prefs.jsonl --threshold 1 --out split/
    Split(split::SplitArgs),
    /// Mixed Preference Optimization end to end: reward model → easy/hard split → DPO on the
    /// easy pairs → PPO on the hard prompts with the DPO model as policy and reference.
    ///
    /// Each stage lives in OUT/<stage> and is skipped when its output exists, and a training
    /// stage stopped part-way continues from its latest checkpoint, so a stopped pipeline
    /// resumes where it stopped.
    #[command(after_help = mpo::EXAMPLES)]
    Mpo(mpo::MpoArgs),
    /// List the shipped objectives, one line each.
    List,
    /// Benchmarks (reported as ratios against a baseline measured in the same run).
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Train objectives from one SFT reference on the synthetic world with several seeds and
    /// compare them by the known true reward: r*, win rate, KL, reward accuracy, ECE (a
    /// Markdown table with 95% CIs, frontier.png, curves.png).
    #[command(long_about = align::ABOUT, after_help = align::EXAMPLES)]
    Align(align::AlignArgs),
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
    /// Tokens/s and peak memory of DPO training steps of a small Llama (or a preset's shape,
    /// with LoRA and bf16) on CPU, beside the same model, data and batch in PyTorch with SDPA
    /// (bench/dpo_step.py with the set-up venv's torch; PEFT under --lora).
    Train {
        #[command(flatten)]
        shape: commands::bench::TrainShape,
        /// Python with torch + transformers for the baseline (default: the set-up venv).
        #[arg(long)]
        python: Option<PathBuf>,
    },
    /// Data-parallel scaling on the CPU: tokens/s of DPO steps of the tiny model in 1 and 2
    /// processes (Gloo, one thread each, weak scaling), the efficiency against 1 process and
    /// the share of step time in the gradient all-reduce.
    Dist {
        /// Pairs per process per step.
        #[arg(long, default_value_t = 4)]
        batch: usize,
        /// Timed steps (after 2 warm-up steps).
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Process counts after the 1-process baseline.
        #[arg(long, default_value = "2", value_delimiter = ',')]
        processes: Vec<usize>,
        /// Where the runs go.
        #[arg(long, default_value = "runs/bench_dist")]
        out: PathBuf,
    },
    /// The memory plan (`poc run --dry-run`) against the measured peak of DPO steps on CPU, and
    /// the log-prob head's peak memory at vocabulary 128,256 as positions grow (chunked against
    /// the full log-softmax). Each point runs in its own process.
    Memory {
        /// Also the llama3.2-1b shape (LoRA r=16, bf16, 2 pairs x 512 tokens): minutes, ~6 GB.
        #[arg(long)]
        large: bool,
        /// (internal) Measure one point and print it as JSON.
        #[arg(long, num_args = 1.., hide = true)]
        point: Option<Vec<String>>,
    },
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Check { files } => commands::check::run(&files),
        Command::Explain { file, latex } => commands::explain::run(&file, latex),
        Command::Compile { file, emit } => commands::compile::run(&file, emit),
        Command::Eval {
            file,
            inputs,
            sets,
            backend,
            dtype,
            device,
        } => {
            let c = crate::edge::load_compiled(&file)?;
            eval::run(&c, &inputs, &sets, backend.into(), dtype.into(), &device)
        }
        Command::Run { objective, args } => {
            let c = crate::edge::load_compiled(&objective)?;
            commands::run::run(&c, *args)
        }
        Command::Logps {
            model,
            data,
            split,
            device,
            max_length,
            batch_size,
        } => commands::run::logps(&model, &data, &split, &device, max_length, batch_size),
        Command::Generate(args) => generate::run(args),
        Command::Plot(args) => plot::run(args),
        Command::World(args) => world::run(args),
        Command::Split(args) => split::run(args),
        Command::Mpo(args) => mpo::run(args),
        Command::List => commands::list::run(),
        Command::Bench {
            which: BenchCommand::Align(args),
        } => align::run(args),
        Command::Bench {
            which: BenchCommand::Eval { rows, repeat },
        } => commands::bench::eval(rows, repeat),
        Command::Bench {
            which: BenchCommand::Train { shape, python },
        } => commands::bench::train(shape, python),
        Command::Bench {
            which: BenchCommand::Memory { large, point },
        } => commands::bench::memory(large, point),
        Command::Bench {
            which:
                BenchCommand::Dist {
                    batch,
                    steps,
                    processes,
                    out,
                },
        } => commands::bench::dist(batch, steps, processes, out),
    }
}
