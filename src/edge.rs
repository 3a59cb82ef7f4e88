//! The binary's edge: objective loading, diagnostics rendering, progress bars, user errors and
//! exit codes. Every command goes through here for these; nothing here knows any one command.

use poc_compiler::{CompileError, Compiled};
use poc_pipelines::library;
use poc_runtime::backend::BackendError;
use std::path::Path;

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

impl Failure {
    /// A user error from `command` (`poc generate`, say): `"{command}: {e}"`.
    pub fn user(command: &str, e: impl std::fmt::Display) -> Failure {
        poc_pipelines::Error::user(command, e).into()
    }
}

impl From<std::fmt::Error> for Failure {
    fn from(e: std::fmt::Error) -> Self {
        Failure::Internal(e.to_string())
    }
}

impl From<Failure> for poc_pipelines::Error {
    fn from(f: Failure) -> Self {
        match f {
            Failure::User(m) => poc_pipelines::Error::User(m),
            Failure::Internal(m) => poc_pipelines::Error::Internal(m),
        }
    }
}

impl From<poc_pipelines::Error> for Failure {
    fn from(e: poc_pipelines::Error) -> Self {
        match e {
            poc_pipelines::Error::User(m) => Failure::User(m),
            poc_pipelines::Error::Internal(m) => Failure::Internal(m),
        }
    }
}

/// A backend failure: the caller's (a device, the JIT for a token-level objective) or poc's.
pub fn backend_failure(e: BackendError) -> Failure {
    match e {
        BackendError::Device(e) => Failure::User(format!("poc: {e}")),
        e @ (BackendError::TokenLevelJit | BackendError::BatchLevelJit) => {
            Failure::User(format!("poc: {e}\n"))
        }
        e => Failure::Internal(e.to_string()),
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
        return Ok((format!("{SHIPPED_LABEL}{arg}.po"), src.to_string()));
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

/// Diagnostics rendered against their source, as a user error.
pub fn user_diags(d: &[poc_compiler::Diagnostic], label: &str, src: &str) -> Failure {
    Failure::User(poc_grammar::diag::render_all(d, label, src))
}

/// Where `use "file.po"` reads from for the source `label` names (as [`load`] labels it):
/// beside the file, or nowhere for a shipped objective.
pub fn files_of(label: &str) -> Box<dyn poc_compiler::Files> {
    if label.starts_with(SHIPPED_LABEL) {
        Box::new(poc_compiler::NoFiles)
    } else {
        Box::new(library::Dir {
            root: Path::new(label).to_path_buf(),
        })
    }
}

/// How [`load`] labels a shipped objective's source: `<shipped>/NAME.po`.
const SHIPPED_LABEL: &str = "<shipped>/";

/// Checks a loaded source (`use "file.po"` read beside it).
pub fn check(
    label: &str,
    src: &str,
) -> Result<poc_compiler::Objective, Vec<poc_compiler::Diagnostic>> {
    poc_compiler::check_source_with(src, files_of(label).as_ref())
}

/// Compiles, mapping errors to failures with rendered diagnostics.
pub fn compile(label: &str, src: &str) -> Result<Compiled, Failure> {
    poc_compiler::compile_with(src, files_of(label).as_ref()).map_err(|e| match e {
        CompileError::User(d) => user_diags(&d, label, src),
        CompileError::Internal { .. } => Failure::Internal(format!("{label}: {e}")),
    })
}

/// Loads and compiles an objective given as a path or a shipped name.
pub fn load_compiled(arg: &str) -> Result<Compiled, Failure> {
    let (label, src) = load(arg)?;
    compile(&label, &src)
}

/// A progress bar on stderr in `template`; indicatif draws it only on a terminal, and
/// `hidden` (`--no-progress`) turns it off.
pub fn progress_bar(len: u64, hidden: bool, template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    if hidden {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// The progress of Hub downloads (`--model ORG/NAME`, `--data ORG/NAME`) on stderr: a bar per
/// file on a terminal, and one line per finished file.
#[derive(Default)]
pub struct DownloadBar {
    current: std::sync::Mutex<Option<(String, indicatif::ProgressBar)>>,
}

impl poc_runtime::hub::Reporter for DownloadBar {
    fn start(&self, repo: &str, file: &str, bytes: u64) {
        let name = format!("{repo}: {file}");
        let Ok(mut current) = self.current.lock() else {
            return;
        };
        // hf-hub announces a file again when its transfer (or a resumed one) begins.
        if let Some((shown, bar)) = current.as_ref()
            && *shown == name
        {
            bar.set_length(bytes);
            bar.set_position(0);
            return;
        }
        let bar = progress_bar(
            bytes,
            false,
            "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} [{elapsed_precise}<{eta_precise}]",
        );
        bar.set_message(format!("downloading {name}"));
        if let Some((_, old)) = current.replace((name, bar)) {
            old.finish_and_clear();
        }
    }

    fn advance(&self, bytes: u64) {
        if let Ok(current) = self.current.lock()
            && let Some((_, bar)) = current.as_ref()
        {
            bar.inc(bytes);
        }
    }

    fn finish(&self) {
        if let Ok(mut current) = self.current.lock()
            && let Some((name, bar)) = current.take()
        {
            bar.finish_and_clear();
            eprintln!(
                "poc: downloaded {name} ({})",
                indicatif::HumanBytes(bar.length().unwrap_or(0))
            );
        }
    }
}
