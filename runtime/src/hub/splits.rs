//! Which files of a dataset hold a split, by the conventions the `datasets` library applies to
//! a repository (or a directory) without a loading script, in its order:
//! 1. sharded names `data/{split}-00000-of-00001.parquet` (any split name; what
//!    `push_to_hub` writes, e.g. `trl-lib/ultrafeedback_binarized`);
//! 2. the split as a directory: `{split}/...`, `{split}-1/...`, `.../x-{split}/...`;
//! 3. the split in the file name: `{split}.jsonl`, `{split}-00001.parquet`,
//!    `x_dpo-{split}.json`;
//! 4. otherwise every data file is the `train` split.
//!
//! In 2 and 3 a split is found by its keywords, separated from the rest of the name by one of
//! `-._ ` or a digit: `train`/`training`; `validation`/`valid`/`dev`/`val`;
//! `test`/`testing`/`eval`/`evaluation`; another split name by itself. The first convention
//! that finds any split decides for all. Data files end in `.parquet`, `.jsonl` or `.json`.

use std::collections::BTreeSet;

/// The extensions of the data files a split is made of.
pub const DATA_EXTENSIONS: [&str; 3] = [".parquet", ".jsonl", ".json"];

/// The default splits with their keywords, as `datasets` names them.
const KEYWORDS: [(&str, &[&str]); 3] = [
    ("train", &["train", "training"]),
    ("validation", &["validation", "valid", "dev", "val"]),
    ("test", &["test", "testing", "eval", "evaluation"]),
];

/// Whether `path` is a data file.
pub fn is_data_file(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    DATA_EXTENSIONS.iter().any(|ext| lower.ends_with(ext))
}

/// The data files of `split` among `files` (`/`-separated paths relative to the repository),
/// in name order.
pub fn files_of(files: &[String], split: &str) -> Vec<String> {
    let data: Vec<&String> = files.iter().filter(|f| is_data_file(f)).collect();
    let pick = |f: &dyn Fn(&str) -> bool| -> Vec<String> {
        let mut out: Vec<String> = data
            .iter()
            .filter(|p| f(p))
            .map(|p| p.to_string())
            .collect();
        out.sort();
        out
    };
    if data.iter().any(|p| sharded_split(p).is_some()) {
        return pick(&|p| sharded_split(p) == Some(split));
    }
    for layout in [Layout::Directory, Layout::FileName] {
        if KEYWORDS
            .iter()
            .any(|(name, _)| data.iter().any(|p| layout.matches(p, name)))
        {
            return pick(&|p| layout.matches(p, split));
        }
    }
    if split == "train" {
        pick(&|_| true)
    } else {
        Vec::new()
    }
}

/// The splits `files` hold (for messages), in name order.
pub fn names(files: &[String]) -> Vec<String> {
    let data: Vec<&String> = files.iter().filter(|f| is_data_file(f)).collect();
    if data.iter().any(|p| sharded_split(p).is_some()) {
        let set: BTreeSet<&str> = data.iter().filter_map(|p| sharded_split(p)).collect();
        return set.into_iter().map(str::to_string).collect();
    }
    for layout in [Layout::Directory, Layout::FileName] {
        let found: Vec<String> = KEYWORDS
            .iter()
            .filter(|(name, _)| data.iter().any(|p| layout.matches(p, name)))
            .map(|(name, _)| name.to_string())
            .collect();
        if !found.is_empty() {
            return found;
        }
    }
    if data.is_empty() {
        Vec::new()
    } else {
        vec!["train".to_string()]
    }
}

/// Whether `files` (one split's) are all the shards their names count: every
/// `…-0000k-of-0000n…` name has its `n - 1` siblings. Names without a count are complete.
pub fn complete(files: &[String]) -> bool {
    let counted: Vec<(usize, usize)> = files.iter().filter_map(|f| shard_of(f)).collect();
    if counted.len() != files.len() || counted.is_empty() {
        return !files.is_empty();
    }
    let total = counted[0].1;
    let indices: BTreeSet<usize> = counted.iter().map(|&(k, _)| k).collect();
    counted.iter().all(|&(_, n)| n == total) && indices.len() == total
}

/// `(k, n)` of a file named `…-0000k-of-0000n…`.
fn shard_of(path: &str) -> Option<(usize, usize)> {
    let name = path.rsplit('/').next()?;
    let at = name.find("-of-")?;
    let before = &name[..at];
    let k = before.get(before.len().checked_sub(5)?..)?;
    let n = name.get(at + 4..at + 9)?;
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    (digits(k) && digits(n) && before[..before.len() - 5].ends_with('-'))
        .then(|| Some((k.parse().ok()?, n.parse().ok()?)))
        .flatten()
}

/// The split of `data/{split}-00000-of-00001.*`.
fn sharded_split(path: &str) -> Option<&str> {
    let name = path.strip_prefix("data/")?;
    if name.contains('/') {
        return None;
    }
    let at = name.find("-of-")?;
    let split = name.get(..at.checked_sub(6)?)?;
    shard_of(path).and(Some(split)).filter(|s| !s.is_empty())
}

/// Where a split's keyword is written.
#[derive(Clone, Copy)]
enum Layout {
    /// In a directory name.
    Directory,
    /// In the file name.
    FileName,
}

impl Layout {
    /// Whether `path` belongs to `split` under this layout.
    fn matches(self, path: &str, split: &str) -> bool {
        let keywords: &[&str] = KEYWORDS
            .iter()
            .find(|(name, _)| *name == split)
            .map_or(&[][..], |(_, k)| *k);
        let own = [split];
        let keywords = if keywords.is_empty() {
            &own[..]
        } else {
            keywords
        };
        let parts: Vec<&str> = path.split('/').collect();
        let Some((file, dirs)) = parts.split_last() else {
            return false;
        };
        keywords.iter().any(|k| match self {
            Layout::Directory => dirs.iter().enumerate().any(|(i, d)| {
                (i == 0 && (*d == *k || starts_with_word(d, k))) || has_word_after_sep(d, k)
            }),
            Layout::FileName => starts_with_word(file, k) || has_word_between_seps(file, k),
        })
    }
}

/// The characters that separate a split keyword from the rest of a name (`datasets`'
/// `NON_WORDS_CHARS`).
fn is_sep(c: char) -> bool {
    matches!(c, '-' | '.' | '_' | ' ') || c.is_ascii_digit()
}

/// `{keyword}[sep]*`.
fn starts_with_word(name: &str, keyword: &str) -> bool {
    name.strip_prefix(keyword)
        .and_then(|rest| rest.chars().next())
        .is_some_and(is_sep)
}

/// `*[sep]{keyword}` or `*[sep]{keyword}[sep]*` (a directory name).
fn has_word_after_sep(name: &str, keyword: &str) -> bool {
    occurrences(name, keyword)
        .any(|(before, after)| before.is_some_and(is_sep) && after.is_none_or(is_sep))
}

/// `*[sep]{keyword}[sep]*` (a file name).
fn has_word_between_seps(name: &str, keyword: &str) -> bool {
    occurrences(name, keyword)
        .any(|(before, after)| before.is_some_and(is_sep) && after.is_some_and(is_sep))
}

/// The characters before and after each occurrence of `keyword` in `name`.
fn occurrences<'a>(
    name: &'a str,
    keyword: &'a str,
) -> impl Iterator<Item = (Option<char>, Option<char>)> + 'a {
    name.match_indices(keyword).map(move |(at, _)| {
        (
            name[..at].chars().next_back(),
            name[at + keyword.len()..].chars().next(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sharded_parquet_files_name_their_split() {
        let files = list(&[
            ".gitattributes",
            "README.md",
            "data/test-00000-of-00001.parquet",
            "data/train-00000-of-00002.parquet",
            "data/train-00001-of-00002.parquet",
            "data/train_prefs-00000-of-00001.parquet",
        ]);
        assert_eq!(
            files_of(&files, "train"),
            list(&[
                "data/train-00000-of-00002.parquet",
                "data/train-00001-of-00002.parquet"
            ])
        );
        assert_eq!(
            files_of(&files, "train_prefs"),
            list(&["data/train_prefs-00000-of-00001.parquet"])
        );
        assert_eq!(names(&files), list(&["test", "train", "train_prefs"]));
        assert!(complete(&files_of(&files, "train")));
        assert!(!complete(&list(&["data/train-00001-of-00002.parquet"])));
    }

    #[test]
    fn splits_in_directory_and_file_names() {
        let dirs = list(&["train/a.parquet", "train/b.parquet", "test/a.parquet"]);
        assert_eq!(
            files_of(&dirs, "train"),
            list(&["train/a.parquet", "train/b.parquet"])
        );
        assert_eq!(files_of(&dirs, "test"), list(&["test/a.parquet"]));
        let named = list(&["train.jsonl", "dev.jsonl", "my_eval.jsonl", "other.txt"]);
        assert_eq!(files_of(&named, "train"), list(&["train.jsonl"]));
        assert_eq!(files_of(&named, "validation"), list(&["dev.jsonl"]));
        assert_eq!(files_of(&named, "test"), list(&["my_eval.jsonl"]));
        assert_eq!(names(&named), list(&["train", "validation", "test"]));
        // `trainer.jsonl` is no `train` file; with no split named anywhere, all is train.
        let plain = list(&["rows.parquet", "trainer.jsonl"]);
        assert_eq!(files_of(&plain, "train"), plain);
        assert!(files_of(&plain, "test").is_empty());
        assert_eq!(names(&plain), list(&["train"]));
    }
}
