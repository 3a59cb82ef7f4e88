//! Data sets as they are published: Parquet written by pyarrow (UltraFeedback's layout: a
//! `prompt` string, `chosen` and `rejected` as lists of `{role, content}` messages, float
//! scores), `.json` arrays and JSON lines in a `.json` file all load to the same rows and pairs
//! as JSON lines; bad Parquet rows are named by index; a Hub dataset id is read from the
//! Hugging Face cache by split, as is a directory.

mod common;

use poc_runtime::data::rows::{self, Place};
use poc_runtime::data::{Tok, load_pairs, pairs::pairs_from_rows};
use poc_runtime::hub::Hub;
use serde_json::{Value, json};
use std::path::Path;

fn conversation(question: &str, answer: &str) -> Value {
    json!([
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer}
    ])
}

/// Rows shaped like `trl-lib/ultrafeedback_binarized` / `HuggingFaceH4/ultrafeedback_binarized`.
fn ultrafeedback_rows() -> Vec<Value> {
    let row = |q: &str, good: &str, bad: &str, sc: f64, sr: f64| {
        json!({
            "prompt": q,
            "chosen": conversation(q, good),
            "rejected": conversation(q, bad),
            "score_chosen": sc,
            "score_rejected": sr,
        })
    };
    vec![
        row("What is 2+2?", "4.", "5.", 9.0, 2.5),
        row("Name a colour.", "Blue.", "Seven.", 8.25, 1.0),
        row(
            "Say hi in French — politely.",
            "Bonjour !",
            "Hello.",
            7.5,
            3.75,
        ),
        row("Is ice cold?", "Yes, it is.", "No.", 10.0, 0.1),
    ]
}

fn write_jsonl(path: &Path, rows: &[Value]) {
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// Writes `rows` (a JSON file) as Parquet files with pyarrow: `out.parquet` (snappy, as
/// `datasets` writes), `out.zstd.parquet` (zstd, two rows per row group).
const WRITE_PARQUET: &str = r#"
import json, sys
import pyarrow as pa, pyarrow.parquet as pq
rows = json.load(open(sys.argv[1]))
table = pa.Table.from_pylist(rows)
pq.write_table(table, sys.argv[2])
pq.write_table(table, sys.argv[3], compression="zstd", row_group_size=2)
print(table.schema)
"#;

fn parquet_files(
    dir: &Path,
    name: &str,
    rows: &[Value],
) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let python = common::python::python_with("Parquet written by pyarrow", &["pyarrow"])?;
    let input = dir.join(format!("{name}.rows.json"));
    std::fs::write(&input, serde_json::to_string(rows).unwrap()).unwrap();
    let (snappy, zstd) = (
        dir.join(format!("{name}.parquet")),
        dir.join(format!("{name}.zstd.parquet")),
    );
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(WRITE_PARQUET)
        .args([&input, &snappy, &zstd])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let schema = String::from_utf8_lossy(&out.stdout);
    let chosen = schema
        .lines()
        .find(|l| l.starts_with("chosen:"))
        .unwrap_or("");
    assert!(
        chosen.contains(": list<")
            && chosen.contains("struct<")
            && chosen.contains("role: string")
            && chosen.contains("content: string"),
        "a conversational column: {schema}"
    );
    Some((snappy, zstd))
}

fn values(path: &Path) -> Vec<Value> {
    rows::read_file(path)
        .unwrap()
        .rows
        .into_iter()
        .map(|r| r.value.unwrap())
        .collect()
}

#[test]
fn parquet_from_pyarrow_loads_the_rows_and_pairs_jsonl_gives() {
    let dir = tempfile::tempdir().unwrap();
    let rows = ultrafeedback_rows();
    let jsonl = dir.path().join("prefs.jsonl");
    write_jsonl(&jsonl, &rows);
    let Some((snappy, zstd)) = parquet_files(dir.path(), "prefs", &rows) else {
        return;
    };
    assert_eq!(values(&jsonl), rows);
    assert_eq!(values(&snappy), rows);
    assert_eq!(values(&zstd), rows, "zstd, several row groups");
    let read = rows::read_file(&snappy).unwrap();
    assert_eq!(
        read.rows.iter().map(|r| r.place).collect::<Vec<_>>(),
        (0..rows.len()).map(Place::Index).collect::<Vec<_>>()
    );

    let tok = Tok::tiny();
    let (from_jsonl, bad) = load_pairs(&jsonl, &tok, 256, true).unwrap();
    assert!(bad.is_empty());
    assert_eq!(from_jsonl.len(), rows.len());
    // UltraFeedback's string prompt beside conversations: the prompt is the shared user turn.
    let first = &from_jsonl[0].chosen;
    let prompt = tok.decode(&first.ids[..first.completion_start]);
    assert!(
        prompt.contains("What is 2+2?") && prompt.contains("user"),
        "{prompt}"
    );
    assert_eq!(from_jsonl[1].columns["score_chosen"], 8.25);
    for parquet in [&snappy, &zstd] {
        let (from_parquet, bad) = load_pairs(parquet, &tok, 256, true).unwrap();
        assert!(bad.is_empty());
        assert_eq!(from_parquet, from_jsonl, "{}", parquet.display());
    }
}

#[test]
fn json_arrays_and_json_lines_in_a_json_file_load_alike() {
    let dir = tempfile::tempdir().unwrap();
    let rows = ultrafeedback_rows();
    let array = dir.path().join("array.json");
    std::fs::write(&array, serde_json::to_string_pretty(&rows).unwrap()).unwrap();
    let lines = dir.path().join("lines.json");
    write_jsonl(&lines, &rows);
    assert_eq!(values(&array), rows);
    assert_eq!(values(&lines), rows);
    let tok = Tok::tiny();
    let (a, _) = load_pairs(&array, &tok, 256, true).unwrap();
    let (l, _) = load_pairs(&lines, &tok, 256, true).unwrap();
    assert_eq!(a, l);
    // A broken array is one error naming the file, with serde's line and column.
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "[{\"prompt\": \"a\"},\n  {oops}]").unwrap();
    let err = rows::read_file(&broken).unwrap_err().to_string();
    assert!(
        err.contains("broken.json: not a JSON array of rows") && err.contains("line 2"),
        "{err}"
    );
}

#[test]
fn bad_parquet_rows_are_named_by_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = ultrafeedback_rows();
    // Row 1's chosen conversation has no answer.
    rows[1]["chosen"] = json!([{"role": "user", "content": "Name a colour."}]);
    let Some((snappy, _)) = parquet_files(dir.path(), "bad", &rows) else {
        return;
    };
    let tok = Tok::tiny();
    let (pairs, bad) = load_pairs(&snappy, &tok, 256, false).unwrap();
    assert_eq!(pairs.len(), 3);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        bad[0].starts_with(&format!("{}, row 1: ", snappy.display())),
        "{}",
        bad[0]
    );
    assert_eq!(pairs[1].line, 3, "a pair's number is its row's index + 1");
    let err = load_pairs(&snappy, &tok, 256, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(", row 1: ") && err.contains("--strict"),
        "{err}"
    );
    // Not Parquet at all.
    let fake = dir.path().join("fake.parquet");
    std::fs::write(&fake, "not parquet").unwrap();
    let err = rows::read_file(&fake).unwrap_err().to_string();
    assert!(
        err.contains("fake.parquet: not a readable Parquet file"),
        "{err}"
    );
}

const COMMIT: &str = "c0ffee0000000000000000000000000000000000";

#[test]
fn a_dataset_id_is_read_from_the_cache_by_split() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let rows = ultrafeedback_rows();
    let (train, test) = (&rows[..3], &rows[3..]);
    let snapshot = cache.join("datasets--org--ultra/snapshots").join(COMMIT);
    let data = snapshot.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_jsonl(&data.join("train-00000-of-00002.jsonl"), &train[..2]);
    write_jsonl(&data.join("train-00001-of-00002.jsonl"), &train[2..]);
    write_jsonl(&data.join("test-00000-of-00001.jsonl"), test);
    std::fs::write(snapshot.join("README.md"), "# ultra").unwrap();
    let refs = cache.join("datasets--org--ultra/refs");
    std::fs::create_dir_all(&refs).unwrap();
    std::fs::write(refs.join("main"), COMMIT).unwrap();
    let hub = Hub {
        cache: cache.clone(),
        endpoint: "http://127.0.0.1:9".into(),
        token: None,
        offline: true,
    };

    let read = rows::read_with(Path::new("org/ultra"), "train", &hub).unwrap();
    assert_eq!(read.label, "org/ultra (split train)");
    let got: Vec<Value> = read.rows.iter().map(|r| r.value.clone().unwrap()).collect();
    assert_eq!(got, train, "both shards, in order");
    assert_eq!(
        read.rows[2].place,
        Place::Index(2),
        "indices run on across shards"
    );
    let test_rows = rows::read_with(Path::new("org/ultra"), "test", &hub).unwrap();
    assert_eq!(test_rows.rows.len(), 1);
    let tok = Tok::tiny();
    let (pairs, _) = pairs_from_rows(&test_rows, &tok, 256, true).unwrap();
    assert_eq!(pairs[0].columns["score_rejected"], 0.1);
    // The snapshot directory itself reads the same way.
    let by_dir = rows::read_with(&snapshot, "train", &hub).unwrap();
    assert_eq!(by_dir.rows.len(), 3);
    // A split that is not there names those that are.
    let err = rows::read_with(&snapshot, "validation", &hub)
        .unwrap_err()
        .to_string();
    assert!(err.contains("splits found: test, train"), "{err}");
    let err = rows::read_with(Path::new("org/ultra"), "validation", &hub)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("org/ultra@main") && err.contains("split `validation`"),
        "{err}"
    );
    // Neither a file nor a Hub id: a missing file, as before.
    let err = rows::read_with(Path::new("/nonexistent/prefs.jsonl"), "train", &hub)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot read `/nonexistent/prefs.jsonl`"),
        "{err}"
    );
}

#[test]
fn a_byte_order_mark_is_not_part_of_the_first_row_and_bad_utf8_is_named_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let rows = ultrafeedback_rows();
    let plain = dir.path().join("plain.jsonl");
    write_jsonl(&plain, &rows);
    let text = std::fs::read(&plain).unwrap();
    // A UTF-8 BOM before line 1 (as Windows editors write it), in JSON lines and a .json array.
    let bom = dir.path().join("bom.jsonl");
    std::fs::write(&bom, [b"\xEF\xBB\xBF".as_slice(), &text].concat()).unwrap();
    assert_eq!(values(&bom), rows);
    let bom_array = dir.path().join("bom.json");
    let array = serde_json::to_vec(&rows).unwrap();
    std::fs::write(&bom_array, [b"\xEF\xBB\xBF".as_slice(), &array].concat()).unwrap();
    assert_eq!(values(&bom_array), rows);
    // One line that is not UTF-8: that line is a bad row, named; the others load.
    let mut lines: Vec<Vec<u8>> = text.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    lines[1] = b"{\"prompt\": \"caf\xE9\"}".to_vec();
    let latin1 = dir.path().join("latin1.jsonl");
    std::fs::write(&latin1, lines.join(&b'\n')).unwrap();
    let read = rows::read_file(&latin1).unwrap();
    let bad: Vec<_> = read
        .rows
        .iter()
        .filter_map(|r| r.value.as_ref().err().map(|e| (r.place, e.clone())))
        .collect();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0].0, Place::Line(2));
    assert!(bad[0].1.contains("not UTF-8"), "{}", bad[0].1);
    assert_eq!(read.rows.len(), rows.len());
}
