//! The shipped objective library (embedded in the compiler, which resolves `use dpo` from it),
//! so `poc list`, `poc explain dpo` and the embedded demo work from any directory; and the
//! file system behind `use "file.po"` ([`Dir`]).

pub use poc_compiler::library::{SHIPPED, shipped};

/// A shipped objective, compiled. A shipped objective that is missing or does not compile is
/// a bug in poc, not the user's doing.
pub fn compiled(name: &str) -> crate::Result<poc_compiler::Compiled> {
    let src = shipped(name)
        .ok_or_else(|| crate::Error::Internal(format!("`{name}` is not a shipped objective")))?;
    poc_compiler::compile(src)
        .map_err(|e| crate::Error::Internal(format!("shipped objective `{name}`: {e}")))
}

/// The file system behind `use "file.po"`: paths relative to the directory of the file that
/// writes the `use`, the file being compiled at `root`.
#[derive(Debug, Clone)]
pub struct Dir {
    /// The file being compiled.
    pub root: std::path::PathBuf,
}

impl poc_compiler::Files for Dir {
    fn read(&self, from: Option<&str>, path: &str) -> Result<(String, String), String> {
        let base = match from {
            Some(f) => std::path::PathBuf::from(f),
            None => self.root.clone(),
        };
        let dir = base.parent().unwrap_or(std::path::Path::new("."));
        let file = dir.join(path);
        let key = std::fs::canonicalize(&file).unwrap_or_else(|_| file.clone());
        let text = std::fs::read_to_string(&file)
            .map_err(|e| format!("cannot read `{}`: {e}", file.display()))?;
        Ok((key.display().to_string(), text))
    }
}

/// Compiles `src`, the text of the file at `path`, resolving `use "…"` relative to it.
pub fn compile_file(
    path: &std::path::Path,
    src: &str,
) -> Result<poc_compiler::Compiled, poc_compiler::CompileError> {
    poc_compiler::compile_with(
        src,
        &Dir {
            root: path.to_path_buf(),
        },
    )
}
