//! Rows of a data set as JSON values, whatever form the data set is published in; every loader
//! of rows (preference pairs, demonstrations, prompts, objective inputs) reads through here.
//!
//! - a `.parquet` file: each row becomes the JSON value of its columns (strings, numbers, and
//!   nested lists and structs as arrays and objects, so a conversational column
//!   `list<struct<role, content>>` reads as the message list JSON lines would give);
//! - a `.json` file: a JSON array of rows, or JSON lines (as pandas writes with `lines=True`);
//! - any other file: JSON lines, as TRL's data files are;
//! - a directory, or a Hub dataset id `ORG/NAME[@REVISION]` (from the Hugging Face cache,
//!   downloaded when missing): the files of one split ([`crate::hub::splits`]), read in name
//!   order as one list of rows.
//!
//! A row is named in messages by its file and line (JSON lines), or by its 0-based index (a
//! Parquet file, a JSON array, a split), as `datasets` numbers rows.

use super::DataError;
use crate::hub::{self, Hub, RepoId, RepoKind};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Where a row is in what was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// A 1-based line of a JSON-lines file.
    Line(usize),
    /// A 0-based row index (Parquet, a JSON array, a split of several files).
    Index(usize),
}

impl Place {
    /// The row's 1-based number: the line, or the index + 1.
    pub fn number(self) -> usize {
        match self {
            Place::Line(n) => n,
            Place::Index(i) => i + 1,
        }
    }
}

/// One row: where it is, and its JSON value or why it is not one.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Where it is.
    pub place: Place,
    /// The row, or what is wrong with its text (invalid JSON).
    pub value: Result<Value, String>,
}

/// The rows of a file, a directory's split or a Hub dataset's split.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    /// What was read, as messages name it (a path, or `NAME (split S)`).
    pub label: String,
    /// The rows in order; blank lines are left out.
    pub rows: Vec<Row>,
}

impl Rows {
    /// `place` as messages write it: `file:LINE` or `file, row INDEX`.
    pub fn at(&self, place: Place) -> String {
        match place {
            Place::Line(n) => format!("{}:{n}", self.label),
            Place::Index(i) => format!("{}, row {i}", self.label),
        }
    }
}

/// The rows `name` stands for: a file (Parquet, JSON, JSON lines), a directory's split, or a
/// Hub dataset id's split (with the Hub settings of the environment, [`Hub::from_env`]). A name
/// that is neither an existing path nor a Hub id is a missing file.
pub fn read(name: &Path, split: &str) -> Result<Rows, DataError> {
    read_with(name, split, &Hub::from_env())
}

/// [`read`] with the Hub settings `hub`.
pub fn read_with(name: &Path, split: &str, hub: &Hub) -> Result<Rows, DataError> {
    if name.is_file() {
        return read_file(name);
    }
    if name.is_dir() {
        let files: Vec<PathBuf> = hub::splits::files_of(&hub::cache::files_under(name), split)
            .into_iter()
            .map(|f| name.join(f))
            .collect();
        if files.is_empty() {
            return Err(DataError::NoSplit {
                dir: name.to_path_buf(),
                split: split.to_string(),
                available: hub::splits::names(&hub::cache::files_under(name)),
            });
        }
        return read_split(&format!("{} (split {split})", name.display()), &files);
    }
    let id = name
        .to_str()
        .and_then(|s| RepoId::parse(s, RepoKind::Dataset));
    match id {
        Some(id) => {
            let files = hub::dataset_split(hub, &id, split)?;
            read_split(&format!("{} (split {split})", id.repo), &files)
        }
        None => Err(DataError::Io {
            path: name.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        }),
    }
}

/// The rows of one file, by its format (`.parquet`, `.json`, else JSON lines).
pub fn read_file(path: &Path) -> Result<Rows, DataError> {
    let label = path.display().to_string();
    let lower = label.to_ascii_lowercase();
    if lower.ends_with(".parquet") {
        return Ok(Rows {
            label,
            rows: parquet_rows(path)?,
        });
    }
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    // A UTF-8 byte-order mark (Windows editors write one) is not part of the first row.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    match std::str::from_utf8(bytes) {
        Ok(text) if lower.ends_with(".json") && text.trim_start().starts_with('[') => {
            json_array(text, &label)
        }
        Ok(text) => Ok(jsonl(text, &label)),
        // Not UTF-8 somewhere: each line on its own, so the bad ones are named by line (and
        // skipped like other bad rows, or stop the run under --strict).
        Err(_) => Ok(jsonl_bytes(bytes, &label)),
    }
}

/// [`jsonl`] over bytes that are not all UTF-8: a line that is not UTF-8 is a bad row.
fn jsonl_bytes(bytes: &[u8], label: &str) -> Rows {
    let rows = bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .filter_map(|(i, line)| {
            let value = match std::str::from_utf8(line) {
                Ok(line) if line.trim().is_empty() => return None,
                Ok(line) => serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}")),
                Err(e) => Err(format!(
                    "not UTF-8 text (byte {} of the line); data files are UTF-8",
                    e.valid_up_to() + 1
                )),
            };
            Some(Row {
                place: Place::Line(i + 1),
                value,
            })
        })
        .collect();
    Rows {
        label: label.to_string(),
        rows,
    }
}

/// The rows of JSON-lines `text` (`label` names it): one per non-blank line.
pub fn jsonl(text: &str, label: &str) -> Rows {
    let rows = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| Row {
            place: Place::Line(i + 1),
            value: serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}")),
        })
        .collect();
    Rows {
        label: label.to_string(),
        rows,
    }
}

/// The rows of a JSON array.
fn json_array(text: &str, label: &str) -> Result<Rows, DataError> {
    let values: Vec<Value> = serde_json::from_str(text).map_err(|e| {
        DataError::BadRows(format!(
            "{label}: not a JSON array of rows: {e}\n  = hint: a .json data file holds one array of row objects, or one object per line"
        ))
    })?;
    Ok(Rows {
        label: label.to_string(),
        rows: values
            .into_iter()
            .enumerate()
            .map(|(i, v)| Row {
                place: Place::Index(i),
                value: Ok(v),
            })
            .collect(),
    })
}

/// The rows of a Parquet file, each as the JSON value of its columns. The parquet crate panics
/// on some corrupt files (a page shorter than its encoding says) instead of returning an error;
/// such a file is reported as unreadable, as any other corrupt one is.
fn parquet_rows(path: &Path) -> Result<Vec<Row>, DataError> {
    contained(|| parquet_rows_unguarded(path)).unwrap_or_else(|panic| {
        Err(DataError::Parquet {
            path: path.to_path_buf(),
            message: format!("corrupt (the Parquet reader failed: {panic})"),
        })
    })
}

/// Runs `f`, turning a panic inside it into `Err` with the panic's message, which no panic
/// hook prints: for a dependency that panics on bad input where it should return an error.
fn contained<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    use std::cell::Cell;
    thread_local! {
        static QUIET: Cell<bool> = const { Cell::new(false) };
    }
    static HOOK: std::sync::Once = std::sync::Once::new();
    // The hook in place (the binary's) keeps handling every other panic.
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let outer = QUIET.replace(true);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.set(outer);
    result.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into())
    })
}

/// [`parquet_rows`] as the parquet crate gives them.
fn parquet_rows_unguarded(path: &Path) -> Result<Vec<Row>, DataError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let bad = |message: String| DataError::Parquet {
        path: path.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = SerializedFileReader::new(file).map_err(|e| bad(e.to_string()))?;
    let iter = reader.get_row_iter(None).map_err(|e| bad(e.to_string()))?;
    let mut rows = Vec::new();
    for (i, row) in iter.enumerate() {
        let row = row.map_err(|e| bad(format!("row {i}: {e}")))?;
        rows.push(Row {
            place: Place::Index(i),
            value: Ok(row.to_json_value()),
        });
    }
    Ok(rows)
}

/// The rows of several files read as one split: indices run on across the files, as
/// `datasets` concatenates a split's files.
fn read_split(label: &str, files: &[PathBuf]) -> Result<Rows, DataError> {
    let mut rows = Vec::new();
    for file in files {
        for row in read_file(file)?.rows {
            // A bad line keeps the file and line in its message; its place becomes the index.
            let value = match (row.value, row.place) {
                (Err(e), Place::Line(n)) => Err(format!("{}:{n}: {e}", file.display())),
                (value, _) => value,
            };
            rows.push(Row {
                place: Place::Index(rows.len()),
                value,
            });
        }
    }
    Ok(Rows {
        label: label.to_string(),
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::contained;

    #[test]
    fn a_contained_panic_is_an_error_with_its_message() {
        assert_eq!(contained(|| 7), Ok(7));
        assert_eq!(
            contained(|| -> u8 { panic!("range end index 4 out of range") }),
            Err("range end index 4 out of range".to_string())
        );
        let n = 3;
        assert_eq!(
            contained(|| -> u8 { panic!("{n} bytes short") }),
            Err("3 bytes short".to_string())
        );
        // Nested: the inner one contains its own panic.
        assert_eq!(
            contained(|| contained(|| panic!("inner"))),
            Ok(Err::<(), _>("inner".into()))
        );
    }
}
