//! `poc`, the preference-objective compiler: check, explain, compile, evaluate and benchmark
//! `.po` objectives. Exit codes: 0 success, 1 a user error (bad objective, data or flag
//! value; the message names the place), 2 bad command-line usage, 70 an internal error (a
//! bug: please report it).

mod align;
mod bench;
mod cli;
mod eval;
mod generate;
mod jsonl;
mod library;
mod mpo;
mod plot;
mod run;
mod split;
mod world;

use clap::Parser;
use std::process::ExitCode;

/// Exit code for user errors (bad `.po`, bad data, bad flag values).
pub const EXIT_USER: u8 = 1;
/// Exit code for internal errors (compiler bugs).
pub const EXIT_INTERNAL: u8 = 70;

/// An error that ends the command.
#[derive(Debug)]
pub enum Failure {
    /// Already-rendered diagnostics or a plain message about the user's input.
    User(String),
    /// A bug.
    Internal(String),
}

impl From<std::fmt::Error> for Failure {
    fn from(e: std::fmt::Error) -> Self {
        Failure::Internal(e.to_string())
    }
}

fn main() -> ExitCode {
    // A panic is always a bug: say so plainly, without a backtrace, and use the internal code.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("poc: internal error: {info}");
        eprintln!("This is a bug in poc; please report it with the command you ran.");
    }));
    let args = cli::Cli::parse();
    match std::panic::catch_unwind(|| cli::run(args)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(Failure::User(msg))) => {
            eprint!("{msg}");
            if !msg.ends_with('\n') {
                eprintln!();
            }
            ExitCode::from(EXIT_USER)
        }
        Ok(Err(Failure::Internal(msg))) => {
            eprintln!("poc: internal error: {msg}");
            eprintln!("This is a bug in poc; please report it with the command you ran.");
            ExitCode::from(EXIT_INTERNAL)
        }
        Err(_) => ExitCode::from(EXIT_INTERNAL),
    }
}
