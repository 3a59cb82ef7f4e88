//! `poc`, the preference-objective compiler: check, explain, compile, evaluate and benchmark
//! `.po` objectives. Exit codes: 0 success, 1 a user error (bad objective, data or flag
//! value; the message names the place), 2 bad command-line usage, 70 an internal error (a
//! bug: please report it).
//!
//! The binary is the command line only: [`cli`] (the clap structs and the dispatch),
//! [`commands`] (one module per command), [`edge`] (objective loading, diagnostics, progress
//! bars, errors and exit codes) and [`stages`] (the command lines of pipeline stages). The
//! work itself is in the library crates: poc_pipelines, poc_runtime, poc_compiler.

mod args;
mod cli;
mod commands;
mod edge;
mod stages;

use clap::Parser;
use edge::{EXIT_INTERNAL, EXIT_USER, Failure};
use std::process::ExitCode;

fn main() -> ExitCode {
    // A panic is always a bug: say so plainly, without a backtrace, and use the internal code.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("poc: internal error: {info}");
        eprintln!("This is a bug in poc; please report it with the command you ran.");
    }));
    let args = cli::Cli::parse();
    poc_runtime::hub::set_reporter(Box::new(edge::DownloadBar::default()));
    let outcome = std::panic::catch_unwind(|| cli::run(args));
    // A run directory this process locked is free again (its lock file removed): the next run
    // in it finds no stale lock. After a crash the OS releases the lock all the same.
    poc_runtime::train::lock::release_all();
    match outcome {
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
