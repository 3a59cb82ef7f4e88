//! Fuzzing of what a user hands poc: data rows (JSON lines, JSON arrays, Parquet) through the row
//! reader and the pair parser, `config.json` through the configuration parser and the
//! architecture check, and safetensors checkpoints through the model loader.
//!
//! Each property starts from valid seeds and mutates them, structure first (a JSON value
//! replaced, a key removed, a tensor recast, reshaped, renamed or dropped with the file kept
//! consistent), then bytes (header lengths, offsets, truncation, flipped bytes), so the fuzz
//! reaches past the first parse into the checks behind it. Nothing may panic, and every refusal
//! must be an error that says where: the file, and for a row its line or index.
//!
//! `PROPTEST_CASES` sets the cases per property (default [`DEFAULT_CASES`], a few seconds, as
//! CI runs it). A long run:
//! `PROPTEST_CASES=20000 cargo test --workspace --test fuzz_inputs -- --nocapture`
//! (each property prints its cases, time and what its inputs reached).

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::cpu;
use poc_runtime::data::pairs::pairs_from_rows;
use poc_runtime::data::rows::{self, Place, Rows};
use poc_runtime::data::{DataError, Tok, batches};
use poc_runtime::model::load::{self, SaveDtype, SaveOptions};
use poc_runtime::model::{Arch, Llama, LlamaConfig, ModelError};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// What the inputs of a property reached, counted by outcome.
type Tally = std::cell::RefCell<BTreeMap<String, usize>>;

/// Cases per property when `PROPTEST_CASES` is not set.
const DEFAULT_CASES: u32 = 48;

/// A runner with `PROPTEST_CASES` cases (or the default), no regression files, and a fixed
/// seed unless `PROPTEST_RNG_SEED` asks for another, so CI runs the same cases every time.
fn runner() -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let seed: u64 = std::env::var("PROPTEST_RNG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x706f63);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRunner::new_with_rng(
        config,
        proptest::test_runner::TestRng::from_seed(
            proptest::test_runner::RngAlgorithm::ChaCha,
            &bytes,
        ),
    )
}

/// Runs `test` on `strategy` and fails with the smallest failing input; prints the figures.
fn fuzz<S: Strategy>(
    name: &str,
    strategy: S,
    tally: &Tally,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let mut runner = runner();
    let cases = runner.config().cases;
    let start = Instant::now();
    let result = runner.run(&strategy, test);
    let seconds = start.elapsed().as_secs_f64();
    eprintln!(
        "fuzz {name}: {cases} cases in {seconds:.1} s; reached {:?}",
        tally.borrow()
    );
    if let Err(e) = result {
        panic!("fuzz {name}: {e}");
    }
}

fn count(tally: &Tally, what: &str) {
    *tally.borrow_mut().entry(what.to_string()).or_default() += 1;
}

/// `i` of `n` things, or none of none.
fn pick(i: &Index, n: usize) -> Option<usize> {
    (n > 0).then(|| i.index(n))
}

// ---------------------------------------------------------------------------------------------
// Mutations shared by the properties

/// A byte-level edit of a file.
#[derive(Debug, Clone)]
enum ByteEdit {
    Insert(Index, u8),
    Delete(Index),
    Replace(Index, u8),
    /// Keep only the first part.
    Truncate(Index),
    /// Copy a slice of the file to another place.
    Splice(Index, Index, Index),
}

fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        any::<u8>(),
        select(vec![
            b'\n', b'\r', b'"', b'{', b'}', b'[', b']', b',', b':', b'\\', b'0', b'9', b'-', b'e',
            b' ', 0x00, 0x7f, 0x80, 0xc3, 0xef, 0xff,
        ]),
    ]
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        (any::<Index>(), byte()).prop_map(|(i, b)| ByteEdit::Insert(i, b)),
        any::<Index>().prop_map(ByteEdit::Delete),
        (any::<Index>(), byte()).prop_map(|(i, b)| ByteEdit::Replace(i, b)),
        any::<Index>().prop_map(ByteEdit::Truncate),
        (any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(a, b, c)| ByteEdit::Splice(a, b, c)),
    ]
}

fn apply_bytes(mut bytes: Vec<u8>, edits: &[ByteEdit]) -> Vec<u8> {
    for edit in edits {
        let n = bytes.len();
        match edit {
            ByteEdit::Insert(i, b) => bytes.insert(i.index(n + 1), *b),
            ByteEdit::Delete(i) => {
                if let Some(i) = pick(i, n) {
                    bytes.remove(i);
                }
            }
            ByteEdit::Replace(i, b) => {
                if let Some(i) = pick(i, n) {
                    bytes[i] = *b;
                }
            }
            ByteEdit::Truncate(i) => bytes.truncate(i.index(n + 1)),
            ByteEdit::Splice(from, len, to) => {
                if let Some(a) = pick(from, n) {
                    let b = a + len.index((n - a).min(64) + 1);
                    let piece = bytes[a..b].to_vec();
                    let at = to.index(n + 1);
                    bytes.splice(at..at, piece);
                }
            }
        }
    }
    bytes
}

/// A structural edit of a JSON value: the nodes are numbered in pre-order and an [`Index`]
/// picks one.
#[derive(Debug, Clone)]
enum JsonEdit {
    /// Replace a node.
    Set(Index, Value),
    /// Remove a node from its object or array.
    Remove(Index),
    /// Add (or overwrite) a key of an object node.
    Insert(Index, String, Value),
    /// Put a node inside a one-element array.
    Wrap(Index),
    /// Append a copy of a node to an array node.
    Copy(Index, Index),
}

fn node_count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(node_count).sum(),
        Value::Object(o) => o.values().map(node_count).sum(),
        _ => 0,
    }
}

fn nth_mut(v: &mut Value, mut n: usize) -> Option<&mut Value> {
    if n == 0 {
        return Some(v);
    }
    n -= 1;
    let children: Vec<&mut Value> = match v {
        Value::Array(a) => a.iter_mut().collect(),
        Value::Object(o) => o.values_mut().collect(),
        _ => return None,
    };
    for child in children {
        let size = node_count(child);
        if n < size {
            return nth_mut(child, n);
        }
        n -= size;
    }
    None
}

/// Removes node `n` (> 0) from its parent.
fn remove_nth(v: &mut Value, n: usize) {
    let mut k = n - 1;
    let mut hit = None;
    let children: Vec<usize> = match v {
        Value::Array(a) => a.iter().map(node_count).collect(),
        Value::Object(o) => o.values().map(node_count).collect(),
        _ => return,
    };
    for (i, size) in children.into_iter().enumerate() {
        if k == 0 {
            hit = Some((i, None));
            break;
        }
        if k < size {
            hit = Some((i, Some(k)));
            break;
        }
        k -= size;
    }
    match (hit, v) {
        (Some((i, None)), Value::Array(a)) => {
            a.remove(i);
        }
        (Some((i, None)), Value::Object(o)) => {
            let key = o.keys().nth(i).cloned();
            if let Some(key) = key {
                o.shift_remove(&key);
            }
        }
        (Some((i, Some(k))), Value::Array(a)) => remove_nth(&mut a[i], k),
        (Some((i, Some(k))), Value::Object(o)) => {
            if let Some(child) = o.values_mut().nth(i) {
                remove_nth(child, k)
            }
        }
        _ => {}
    }
}

fn apply_json(v: &mut Value, edits: &[JsonEdit]) {
    for edit in edits {
        let n = node_count(v);
        match edit {
            JsonEdit::Set(i, new) => {
                if let Some(node) = nth_mut(v, i.index(n)) {
                    *node = new.clone();
                }
            }
            JsonEdit::Remove(i) => {
                let k = i.index(n);
                if k > 0 {
                    remove_nth(v, k);
                }
            }
            JsonEdit::Insert(i, key, new) => {
                // The top-level object most often: that is where the keys are read.
                let k = if i.index(3) == 0 { 0 } else { i.index(n) };
                if let Some(Value::Object(o)) = nth_mut(v, k) {
                    o.insert(key.clone(), new.clone());
                }
            }
            JsonEdit::Wrap(i) => {
                if let Some(node) = nth_mut(v, i.index(n)) {
                    *node = Value::Array(vec![node.take()]);
                }
            }
            JsonEdit::Copy(from, to) => {
                let copy = nth_mut(v, from.index(n)).map(|x| x.clone());
                if let (Some(copy), Some(Value::Array(a))) = (copy, nth_mut(v, to.index(n))) {
                    a.push(copy);
                }
            }
        }
    }
}

/// Values that sit at the edges of what a field accepts.
fn edge_value(words: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        select(vec![
            0i64,
            1,
            -1,
            2,
            3,
            4,
            5,
            7,
            8,
            12,
            16,
            255,
            256,
            65536,
            i64::from(i32::MAX),
            1 << 32,
            1 << 40,
            1 << 53,
            i64::MAX,
            i64::MIN,
        ])
        .prop_map(Value::from),
        Just(json!(u64::MAX)),
        select(vec![0.0, 0.5, -0.5, 1.5, 1e-300, 1e300, -1e300, f64::MAX]).prop_map(Value::from),
        select(words).prop_map(Value::from),
        Just(json!([])),
        Just(json!({})),
        Just(json!([1, 2])),
    ]
}

fn json_edit(
    keys: &'static [&'static str],
    words: &'static [&'static str],
) -> impl Strategy<Value = JsonEdit> {
    prop_oneof![
        3 => (any::<Index>(), edge_value(words)).prop_map(|(i, v)| JsonEdit::Set(i, v)),
        2 => any::<Index>().prop_map(JsonEdit::Remove),
        3 => (any::<Index>(), select(keys), edge_value(words))
            .prop_map(|(i, k, v)| JsonEdit::Insert(i, k.to_string(), v)),
        1 => any::<Index>().prop_map(JsonEdit::Wrap),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| JsonEdit::Copy(a, b)),
    ]
}

// ---------------------------------------------------------------------------------------------
// 1. Data rows → the row reader → the pair parser

/// Pieces of row text: markup the chat template and the tokenizer treat specially, non-ASCII,
/// control characters, blanks.
const PIECES: &[&str] = &[
    "a",
    "hello",
    " ",
    "  ",
    "\n",
    "\t",
    "é",
    "日本",
    "🙂",
    "\u{0}",
    "\u{200b}",
    "\u{feff}",
    "<|eot_id|>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "{{ x }}",
    "{% if %}",
    "\\",
    "\"",
    "assistant",
];

const ROW_KEYS: &[&str] = &[
    "prompt",
    "chosen",
    "rejected",
    "completion",
    "messages",
    "label",
    "role",
    "content",
    "score_chosen",
    "tools",
];

const ROW_WORDS: &[&str] = &[
    "",
    " ",
    "user",
    "assistant",
    "system",
    "tool",
    "ipython",
    "hi",
    "<|eot_id|>",
    "é",
];

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(select(PIECES), 0..5).prop_map(|p| p.concat())
}

fn msg(role: &str, content: &str) -> Value {
    json!({"role": role, "content": content})
}

/// A valid row of one of the forms poc reads: plain and conversational pairs, the implicit
/// prompt, UltraFeedback's string prompt, the SFT forms, and the unpaired (KTO) form it refuses.
fn seed_row() -> impl Strategy<Value = Value> {
    (
        0..8usize,
        (text(), text(), text(), text()),
        any::<bool>(),
        -1e3..1e3f64,
    )
        .prop_map(|(kind, (a, b, c, d), extra, score)| {
            let mut row = match kind {
                0 => json!({"prompt": a, "chosen": b, "rejected": c}),
                1 => json!({"prompt": [msg("user", &a)], "chosen": [msg("assistant", &b)],
                            "rejected": [msg("assistant", &c)]}),
                2 => json!({"chosen": [msg("user", &a), msg("assistant", &b)],
                            "rejected": [msg("user", &a), msg("assistant", &c)]}),
                3 => json!({"prompt": a, "chosen": [msg("user", &a), msg("assistant", &b)],
                            "rejected": [msg("user", &a), msg("assistant", &c)]}),
                4 => json!({"prompt": a, "completion": b}),
                5 => json!({"prompt": [msg("system", &d), msg("user", &a)],
                            "completion": [msg("assistant", &b)]}),
                6 => json!({"messages": [msg("system", &d), msg("user", &a),
                            msg("assistant", &b), msg("user", &c), msg("assistant", &d)]}),
                _ => json!({"prompt": a, "completion": b, "label": extra}),
            };
            if extra && let Value::Object(o) = &mut row {
                o.insert("score_chosen".into(), json!(score));
                o.insert("score_rejected".into(), json!(score - 1.0));
            }
            row
        })
}

/// How the rows are written to a file.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// `.jsonl`, lines ending in `\r\n` or not, with blank lines, with a byte-order mark.
    Jsonl { crlf: bool, blanks: bool, bom: bool },
    /// `.json` holding one array.
    JsonArray,
    /// `.json` holding JSON lines.
    JsonLines,
    /// `.parquet` (string columns and a double), compressed with one of the codecs poc reads,
    /// in one or two row groups.
    Parquet { codec: usize, groups: usize },
}

fn layout() -> impl Strategy<Value = Layout> {
    prop_oneof![
        3 => (any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(crlf, blanks, bom)| Layout::Jsonl { crlf, blanks, bom }),
        1 => Just(Layout::JsonArray),
        1 => Just(Layout::JsonLines),
        2 => (0..5usize, 1..3usize).prop_map(|(codec, groups)| Layout::Parquet { codec, groups }),
    ]
}

#[derive(Debug, Clone)]
struct DataCase {
    rows: Vec<Value>,
    /// Per row: edits of its JSON.
    row_edits: Vec<Vec<JsonEdit>>,
    layout: Layout,
    bytes: Vec<ByteEdit>,
    max_length: usize,
}

fn data_case() -> impl Strategy<Value = DataCase> {
    let edits = prop::collection::vec(
        prop_oneof![
            3 => Just(Vec::new()),
            2 => prop::collection::vec(json_edit(ROW_KEYS, ROW_WORDS), 1..4),
        ],
        0..6,
    );
    let bytes = prop_oneof![
        2 => Just(Vec::new()),
        1 => prop::collection::vec(byte_edit(), 1..5),
    ];
    (
        prop::collection::vec(seed_row(), 1..6),
        edits,
        layout(),
        bytes,
        1..64usize,
    )
        .prop_map(|(rows, row_edits, layout, bytes, max_length)| DataCase {
            rows,
            row_edits,
            layout,
            bytes,
            max_length,
        })
}

/// `rows` as a Parquet file: the string columns prompt, chosen, rejected (null where a row has
/// no string there) and the double score_chosen.
fn parquet_bytes(rows: &[Value], codec: usize, groups: usize) -> Vec<u8> {
    use parquet::basic::Compression;
    use parquet::data_type::{ByteArray, ByteArrayType, DoubleType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    let schema = parquet::schema::parser::parse_message_type(
        "message rows {
            OPTIONAL BYTE_ARRAY prompt (UTF8);
            OPTIONAL BYTE_ARRAY chosen (UTF8);
            OPTIONAL BYTE_ARRAY rejected (UTF8);
            OPTIONAL DOUBLE score_chosen;
        }",
    )
    .expect("the schema parses");
    let compression = [
        Compression::UNCOMPRESSED,
        Compression::SNAPPY,
        Compression::ZSTD(Default::default()),
        Compression::GZIP(Default::default()),
        Compression::LZ4_RAW,
    ][codec];
    let props = WriterProperties::builder()
        .set_compression(compression)
        .build();
    let mut out = Vec::new();
    let mut writer = SerializedFileWriter::new(&mut out, std::sync::Arc::new(schema), props.into())
        .expect("a Parquet writer");
    let per_group = rows.len().div_ceil(groups).max(1);
    for chunk in rows.chunks(per_group) {
        let mut group = writer.next_row_group().expect("a row group");
        for key in ["prompt", "chosen", "rejected"] {
            let mut column = group
                .next_column()
                .expect("a column")
                .expect("four columns");
            let values: Vec<ByteArray> = chunk
                .iter()
                .filter_map(|r| r.get(key).and_then(Value::as_str))
                .map(|s| ByteArray::from(s.as_bytes().to_vec()))
                .collect();
            let defs: Vec<i16> = chunk
                .iter()
                .map(|r| i16::from(r.get(key).and_then(Value::as_str).is_some()))
                .collect();
            column
                .typed::<ByteArrayType>()
                .write_batch(&values, Some(&defs), None)
                .expect("strings written");
            column.close().expect("column closed");
        }
        let mut column = group
            .next_column()
            .expect("a column")
            .expect("four columns");
        let values: Vec<f64> = chunk
            .iter()
            .filter_map(|r| r.get("score_chosen").and_then(Value::as_f64))
            .collect();
        let defs: Vec<i16> = chunk
            .iter()
            .map(|r| i16::from(r.get("score_chosen").and_then(Value::as_f64).is_some()))
            .collect();
        column
            .typed::<DoubleType>()
            .write_batch(&values, Some(&defs), None)
            .expect("doubles written");
        column.close().expect("column closed");
        group.close().expect("row group closed");
    }
    writer.close().expect("file closed");
    out
}

/// The file of a case: its name and bytes.
fn data_file(case: &DataCase) -> (&'static str, Vec<u8>) {
    let mut rows = case.rows.clone();
    for (row, edits) in rows.iter_mut().zip(&case.row_edits) {
        apply_json(row, edits);
    }
    let lines: Vec<String> = rows.iter().map(Value::to_string).collect();
    let (name, bytes) = match case.layout {
        Layout::Jsonl { crlf, blanks, bom } => {
            let sep = if crlf { "\r\n" } else { "\n" };
            let mut text = String::new();
            if bom {
                text.push('\u{feff}');
            }
            for line in &lines {
                text.push_str(line);
                text.push_str(sep);
                if blanks {
                    text.push_str(" \t");
                    text.push_str(sep);
                }
            }
            ("rows.jsonl", text.into_bytes())
        }
        Layout::JsonArray => ("rows.json", Value::Array(rows).to_string().into_bytes()),
        Layout::JsonLines => ("rows.json", lines.join("\n").into_bytes()),
        Layout::Parquet { codec, groups } => ("rows.parquet", parquet_bytes(&rows, codec, groups)),
    };
    (name, apply_bytes(bytes, &case.bytes))
}

/// Whether `msg` begins with the place of one of `rows` (`file:LINE: ` or `file, row I: `).
fn names_a_row(rows: &Rows, msg: &str) -> bool {
    rows.rows
        .iter()
        .any(|r| msg.starts_with(&format!("{}: ", rows.at(r.place))))
}

#[test]
fn data_rows_never_panic_and_name_the_bad_row() {
    let tok = Tok::tiny();
    let dir = tempfile::tempdir().unwrap();
    let tally = Tally::default();
    fuzz("data rows", data_case(), &tally, |case| {
        let (name, bytes) = data_file(&case);
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let label = path.display().to_string();
        let rows = match rows::read_file(&path) {
            Ok(rows) => rows,
            Err(e) => {
                count(&tally, "file refused");
                let msg = e.to_string();
                prop_assert!(msg.contains(&label), "the error names no file: {msg}");
                return Ok(());
            }
        };
        // Places: JSON lines by line (within the file), the rest by index, in order.
        let lines = bytes.split(|&b| b == b'\n').count();
        for (i, row) in rows.rows.iter().enumerate() {
            match row.place {
                Place::Line(n) => prop_assert!((1..=lines).contains(&n), "line {n} of {lines}"),
                Place::Index(k) => prop_assert_eq!(k, i),
            }
        }
        count(&tally, "file read");
        for strict in [false, true] {
            match pairs_from_rows(&rows, &tok, case.max_length, strict) {
                Ok((pairs, bad)) => {
                    count(
                        &tally,
                        if bad.is_empty() {
                            "all rows paired"
                        } else {
                            "some rows bad"
                        },
                    );
                    for msg in &bad {
                        prop_assert!(names_a_row(&rows, msg), "a bad row not named: {msg}");
                    }
                    prop_assert!(!strict || bad.is_empty());
                    prop_assert_eq!(pairs.len() + bad.len(), rows.rows.len());
                    for p in &pairs {
                        prop_assert!(rows.rows.iter().any(|r| r.place.number() == p.line));
                        for side in [&p.chosen, &p.rejected] {
                            prop_assert!(side.completion_start < side.ids.len());
                            prop_assert!(side.ids.len() <= case.max_length);
                        }
                    }
                    for b in batches(&pairs, 2, tok.pad, 1, true) {
                        prop_assert_eq!(b.tokens.len(), 2 * b.pairs.len());
                    }
                }
                Err(DataError::BadRows(msg)) => {
                    count(&tally, "no usable row / strict stop");
                    let no_rows = format!("{}: no usable preference rows", rows.label);
                    prop_assert!(
                        msg.starts_with(&no_rows) || names_a_row(&rows, &msg),
                        "an error that names no row: {msg}"
                    );
                }
                Err(e) => prop_assert!(false, "an error of another kind: {e}"),
            }
        }
        Ok(())
    });
    assert!(tally.borrow().contains_key("file read"));
}

// ---------------------------------------------------------------------------------------------
// 2. config.json → LlamaConfig::from_json → Arch::of

/// The keys a config mutation adds: those poc reads, those of the families, and strangers.
const CONFIG_KEYS: &[&str] = &[
    "model_type",
    "architectures",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "rope_type",
    "factor",
    "low_freq_factor",
    "high_freq_factor",
    "original_max_position_embeddings",
    "max_position_embeddings",
    "tie_word_embeddings",
    "eos_token_id",
    "bos_token_id",
    "hidden_act",
    "hidden_activation",
    "attention_bias",
    "mlp_bias",
    "sliding_window",
    "use_sliding_window",
    "max_window_layers",
    "layer_types",
    "sliding_window_pattern",
    "_sliding_window_pattern",
    "query_pre_attn_scalar",
    "attn_logit_softcapping",
    "final_logit_softcapping",
    "rope_local_base_freq",
    "partial_rotary_factor",
    "use_bidirectional_attention",
    "quantization_config",
    "torch_dtype",
    "pretraining_tp",
    "unknown_key",
];

const CONFIG_WORDS: &[&str] = &[
    "",
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma2",
    "gemma3_text",
    "gemma3",
    "phi3",
    "mixtral",
    "LlamaForCausalLM",
    "Qwen2ForSequenceClassification",
    "silu",
    "gelu",
    "gelu_pytorch_tanh",
    "tanh",
    "default",
    "linear",
    "llama3",
    "yarn",
    "dynamic",
    "full_attention",
    "sliding_attention",
    "bfloat16",
];

/// Valid configurations: the committed fixture, every preset, and the families without one
/// (Gemma 3's text decoder with local and global layers, Phi-3, Qwen3 with `layer_types`).
fn config_seeds() -> Vec<Value> {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama/config.json");
    let mut seeds = vec![serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap()];
    for name in LlamaConfig::PRESETS {
        let preset = LlamaConfig::preset(name).expect("a preset");
        seeds.push(serde_json::to_value(preset).unwrap());
    }
    seeds.push(
        json!({"model_type": "gemma3_text", "architectures": ["Gemma3ForCausalLM"],
        "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 6,
        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8,
        "query_pre_attn_scalar": 8, "sliding_window": 4, "rope_local_base_freq": 10000.0,
        "rope_scaling": {"rope_type": "linear", "factor": 8.0},
        "layer_types": ["sliding_attention", "sliding_attention", "sliding_attention",
                        "sliding_attention", "sliding_attention", "full_attention"],
        "final_logit_softcapping": null, "attn_logit_softcapping": null}),
    );
    seeds.push(
        json!({"model_type": "phi3", "architectures": ["Phi3ForCausalLM"],
        "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 2, "partial_rotary_factor": 1.0,
        "hidden_act": "silu", "rope_scaling": null, "sliding_window": 8,
        "original_max_position_embeddings": 4096, "resid_pdrop": 0.0}),
    );
    seeds.push(
        json!({"model_type": "qwen3", "vocab_size": 64, "hidden_size": 16,
        "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": 8, "use_sliding_window": true,
        "sliding_window": 4, "max_window_layers": 1,
        "layer_types": ["full_attention", "sliding_attention"],
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}}),
    );
    seeds
}

#[derive(Debug, Clone)]
struct ConfigCase {
    seed: Index,
    edits: Vec<JsonEdit>,
    bytes: Vec<ByteEdit>,
}

fn config_case() -> impl Strategy<Value = ConfigCase> {
    (
        any::<Index>(),
        prop::collection::vec(json_edit(CONFIG_KEYS, CONFIG_WORDS), 0..5),
        prop_oneof![
            3 => Just(Vec::new()),
            1 => prop::collection::vec(byte_edit(), 1..4),
        ],
    )
        .prop_map(|(seed, edits, bytes)| ConfigCase { seed, edits, bytes })
}

#[test]
fn config_json_never_panics_and_is_accepted_whole_or_refused_in_words() {
    let seeds = config_seeds();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let tally = Tally::default();
    fuzz("config.json", config_case(), &tally, |case| {
        let mut value = seeds[case.seed.index(seeds.len())].clone();
        apply_json(&mut value, &case.edits);
        let bytes = apply_bytes(value.to_string().into_bytes(), &case.bytes);
        std::fs::write(&path, &bytes).unwrap();
        // The architecture check and the parameter count on a configuration that has not
        // passed validation (any caller may build one): no panic either.
        if let Ok(raw) = serde_json::from_slice::<LlamaConfig>(&bytes) {
            let _ = (Arch::of(&raw), raw.num_params(), raw.rope());
        }
        let cfg = match LlamaConfig::from_file(&path) {
            Ok(cfg) => cfg,
            Err(e) => {
                count(&tally, "refused");
                let msg = e.to_string();
                let prefix = format!("{}: ", path.display());
                prop_assert!(
                    msg.starts_with(&prefix) && msg.len() > prefix.len() + 8,
                    "not a clear error: {msg}"
                );
                return Ok(());
            }
        };
        count(&tally, "accepted");
        // What the rest of poc asks of an accepted configuration.
        let arch = cfg.arch();
        prop_assert!(arch.is_ok(), "accepted but its arch is refused: {arch:?}");
        let arch = arch.unwrap();
        prop_assert_eq!(arch.layers.len(), cfg.num_hidden_layers);
        prop_assert!(cfg.head_dim() > 0 && cfg.kv_heads() > 0);
        prop_assert!(cfg.rope().is_ok());
        let _ = (cfg.num_params(), cfg.eos_ids(), arch.biased());
        // What poc saves of it loads again.
        let saved = serde_json::to_value(&cfg).unwrap();
        let again = LlamaConfig::from_json(saved);
        prop_assert!(again.is_ok(), "a saved config is refused: {again:?}");
        Ok(())
    });
    assert!(tally.borrow().contains_key("accepted") && tally.borrow().contains_key("refused"));
}

// ---------------------------------------------------------------------------------------------
// 3. safetensors checkpoints → load::load

/// One tensor of a safetensors file.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    dtype: String,
    shape: Vec<u64>,
    data: Vec<u8>,
}

/// A parsed safetensors file.
#[derive(Debug, Clone)]
struct Safetensors {
    metadata: Value,
    tensors: Vec<Entry>,
}

impl Safetensors {
    fn parse(bytes: &[u8]) -> Safetensors {
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        let data = &bytes[8 + n..];
        let mut metadata = Value::Null;
        let mut tensors = Vec::new();
        for (name, info) in header {
            if name == "__metadata__" {
                metadata = info;
                continue;
            }
            let offsets: Vec<usize> = info["data_offsets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            tensors.push(Entry {
                name,
                dtype: info["dtype"].as_str().unwrap().to_string(),
                shape: info["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap())
                    .collect(),
                data: data[offsets[0]..offsets[1]].to_vec(),
            });
        }
        Safetensors { metadata, tensors }
    }

    /// The header as JSON (offsets where the data will be).
    fn header(&self) -> Value {
        let mut header = Map::new();
        if !self.metadata.is_null() {
            header.insert("__metadata__".into(), self.metadata.clone());
        }
        let mut offset = 0;
        for t in &self.tensors {
            let end = offset + t.data.len();
            header.insert(
                t.name.clone(),
                json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [offset, end]}),
            );
            offset = end;
        }
        Value::Object(header)
    }

    fn data(&self) -> Vec<u8> {
        self.tensors.iter().flat_map(|t| t.data.clone()).collect()
    }
}

/// `header` and `data` framed as a safetensors file (`len` overrides the header length).
fn frame(header: &Value, data: &[u8], len: Option<u64>) -> Vec<u8> {
    let mut text = header.to_string().into_bytes();
    text.resize(text.len().div_ceil(8) * 8, b' ');
    let mut out = len.unwrap_or(text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(data);
    out
}

/// The dtypes of safetensors (with their sizes in bytes, 0 for sub-byte ones) and a few it
/// does not have.
const DTYPES: &[(&str, usize)] = &[
    ("F32", 4),
    ("F16", 2),
    ("BF16", 2),
    ("F64", 8),
    ("I8", 1),
    ("U8", 1),
    ("I16", 2),
    ("U16", 2),
    ("I32", 4),
    ("U32", 4),
    ("I64", 8),
    ("U64", 8),
    ("BOOL", 1),
    ("F8_E4M3", 1),
    ("F8_E5M2", 1),
    ("F8_E8M0", 1),
    ("C64", 8),
    ("F4", 0),
    ("F6_E2M3", 0),
    ("f32", 4),
    ("Q4_K", 1),
];

/// Names a renamed or added tensor takes: other layers, other families' tensors, heads,
/// buffers transformers skips, strangers.
const TENSOR_NAMES: &[&str] = &[
    "model.layers.0.self_attn.q_proj.bias",
    "model.layers.0.self_attn.o_proj.bias",
    "model.layers.0.mlp.down_proj.bias",
    "model.layers.1.self_attn.q_norm.weight",
    "model.layers.0.pre_feedforward_layernorm.weight",
    "model.layers.0.self_attn.qkv_proj.weight",
    "model.layers.0.mlp.gate_up_proj.weight",
    "model.layers.5.mlp.up_proj.weight",
    "model.layers.0.self_attn.rotary_emb.inv_freq",
    "lm_head.weight",
    "score.weight",
    "model.norm.weight",
    "model.embed_tokens.weight",
    "v_head.summary.weight",
    "",
    "x",
];

/// An edit that keeps the file well-formed: the loader's own checks must catch it.
#[derive(Debug, Clone)]
enum TensorEdit {
    /// Another dtype; the data resized to match.
    Recast(Index, Index),
    /// The same number of values in another shape.
    Reshape(Index, usize),
    /// One dimension grown or shrunk (the data with it).
    Resize(Index, Index, i8),
    Drop(Index),
    Rename(Index, Index),
    /// A copy under another name.
    Duplicate(Index, Index),
}

/// An edit of the file's bytes as a safetensors reader sees them.
#[derive(Debug, Clone)]
enum RawEdit {
    /// A structural edit of the header JSON (offsets, dtypes, shapes, metadata).
    Header(JsonEdit),
    /// The header length field.
    Length(u64),
    LengthBy(i8),
    Bytes(ByteEdit),
}

const HEADER_KEYS: &[&str] = &[
    "dtype",
    "shape",
    "data_offsets",
    "__metadata__",
    "model.norm.weight",
    "format",
];

const HEADER_WORDS: &[&str] = &["F32", "BF16", "F16", "F64", "I64", "BOOL", "pt", "", "XX"];

#[derive(Debug, Clone)]
struct CheckpointCase {
    seed: Index,
    tensor_edits: Vec<(Index, TensorEdit)>,
    raw_edits: Vec<(Index, RawEdit)>,
    config_edits: Vec<JsonEdit>,
    index_edits: Vec<JsonEdit>,
    remove: Option<Index>,
}

fn checkpoint_case() -> impl Strategy<Value = CheckpointCase> {
    let tensor_edit = prop_oneof![
        (any::<Index>(), any::<Index>()).prop_map(|(t, d)| TensorEdit::Recast(t, d)),
        (any::<Index>(), 0..4usize).prop_map(|(t, k)| TensorEdit::Reshape(t, k)),
        (any::<Index>(), any::<Index>(), -2..3i8)
            .prop_map(|(t, d, by)| TensorEdit::Resize(t, d, by)),
        any::<Index>().prop_map(TensorEdit::Drop),
        (any::<Index>(), any::<Index>()).prop_map(|(t, n)| TensorEdit::Rename(t, n)),
        (any::<Index>(), any::<Index>()).prop_map(|(t, n)| TensorEdit::Duplicate(t, n)),
    ];
    let raw_edit = prop_oneof![
        3 => json_edit(HEADER_KEYS, HEADER_WORDS).prop_map(RawEdit::Header),
        1 => select(vec![0u64, 1, 7, 8, 9, 1 << 20, 100_000_001, 1 << 40, u64::MAX - 7, u64::MAX])
            .prop_map(RawEdit::Length),
        1 => (-16..17i8).prop_map(RawEdit::LengthBy),
        3 => byte_edit().prop_map(RawEdit::Bytes),
    ];
    let some = |n| 0..n;
    (
        any::<Index>(),
        prop::collection::vec((any::<Index>(), tensor_edit), some(3)),
        prop::collection::vec((any::<Index>(), raw_edit), some(3)),
        prop_oneof![
            4 => Just(Vec::new()),
            1 => prop::collection::vec(json_edit(CONFIG_KEYS, CONFIG_WORDS), 1..3),
        ],
        prop_oneof![
            4 => Just(Vec::new()),
            1 => prop::collection::vec(json_edit(&["weight_map", "metadata"], &["model-00001-of-00002.safetensors", "model.safetensors", "nope.safetensors", ""]), 1..3),
        ],
        prop_oneof![9 => Just(None), 1 => any::<Index>().prop_map(Some)],
    )
        .prop_map(
            |(seed, tensor_edits, raw_edits, config_edits, index_edits, remove)| CheckpointCase {
                seed,
                tensor_edits,
                raw_edits,
                config_edits,
                index_edits,
                remove,
            },
        )
}

/// A checkpoint as files: name → bytes.
type Files = BTreeMap<String, Vec<u8>>;

/// Valid checkpoints of every family as poc saves them: tiny shapes, tied and untied heads,
/// biases, q/k norms, sandwich norms, fused projections, a reward model, bf16, shards.
fn checkpoint_seeds() -> Vec<Files> {
    let shape = json!({"vocab_size": 11, "hidden_size": 8, "intermediate_size": 12,
        "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
        "head_dim": 4, "eos_token_id": 2});
    let with = |extra: Value| {
        let mut v = shape.clone();
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    };
    let configs = [
        with(json!({"model_type": "llama", "tie_word_embeddings": false,
                    "attention_bias": true, "mlp_bias": true})),
        with(json!({"model_type": "mistral", "sliding_window": 4})),
        with(json!({"model_type": "qwen2", "tie_word_embeddings": true})),
        with(json!({"model_type": "qwen3"})),
        with(json!({"model_type": "gemma2", "query_pre_attn_scalar": 4})),
        with(json!({"model_type": "gemma3_text", "sliding_window": 2,
                    "layer_types": ["sliding_attention", "full_attention"]})),
        with(json!({"model_type": "phi3", "num_key_value_heads": 2})),
    ];
    let mut seeds = Vec::new();
    for (k, config) in configs.into_iter().enumerate() {
        let cfg = LlamaConfig::from_json(config).expect("a valid seed config");
        let mut model = Llama::random(&cfg, k as u64, &cpu());
        if k == 2 {
            model = model.with_score_head(1);
        }
        let options = SaveOptions {
            dtype: if k % 2 == 0 {
                SaveDtype::F32
            } else {
                SaveDtype::Bf16
            },
            // Shards for two of them.
            max_shard_bytes: if k % 3 == 1 { 600 } else { 1 << 30 },
        };
        let dir = tempfile::tempdir().unwrap();
        load::save_with(&model, dir.path(), &options).expect("a seed checkpoint");
        let files = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        seeds.push(files);
    }
    seeds
}

fn edit_tensors(st: &mut Safetensors, edit: &TensorEdit) {
    let n = st.tensors.len();
    let Some(t) = (match edit {
        TensorEdit::Recast(t, _)
        | TensorEdit::Reshape(t, _)
        | TensorEdit::Resize(t, _, _)
        | TensorEdit::Drop(t)
        | TensorEdit::Rename(t, _)
        | TensorEdit::Duplicate(t, _) => pick(t, n),
    }) else {
        return;
    };
    let values = |e: &Entry| e.shape.iter().product::<u64>() as usize;
    let fill = |data: &[u8], len: usize| -> Vec<u8> {
        (0..len)
            .map(|i| data.get(i % data.len().max(1)).copied().unwrap_or(0))
            .collect()
    };
    match edit {
        TensorEdit::Recast(_, d) => {
            let (dtype, size) = DTYPES[d.index(DTYPES.len())];
            let e = &mut st.tensors[t];
            let len = if size == 0 {
                values(e).div_ceil(2)
            } else {
                values(e) * size
            };
            e.data = fill(&e.data, len);
            e.dtype = dtype.to_string();
        }
        TensorEdit::Reshape(_, k) => {
            let e = &mut st.tensors[t];
            let total: u64 = e.shape.iter().product();
            e.shape = match k {
                0 => e.shape.iter().rev().copied().collect(),
                1 => vec![total],
                2 => [e.shape.clone(), vec![1]].concat(),
                _ => vec![1, total],
            };
        }
        TensorEdit::Resize(_, d, by) => {
            let e = &mut st.tensors[t];
            if let Some(d) = pick(d, e.shape.len()) {
                let size = e.data.len() / values(e).max(1);
                e.shape[d] = e.shape[d].saturating_add_signed(i64::from(*by));
                e.data = fill(&e.data, values(e) * size.max(1));
            }
        }
        TensorEdit::Drop(_) => {
            st.tensors.remove(t);
        }
        TensorEdit::Rename(_, name) => {
            let name = TENSOR_NAMES[name.index(TENSOR_NAMES.len())];
            if st.tensors.iter().all(|e| e.name != name) {
                st.tensors[t].name = name.to_string();
            }
        }
        TensorEdit::Duplicate(_, name) => {
            let name = TENSOR_NAMES[name.index(TENSOR_NAMES.len())];
            if st.tensors.iter().all(|e| e.name != name) {
                let mut copy = st.tensors[t].clone();
                copy.name = name.to_string();
                st.tensors.push(copy);
            }
        }
    }
}

/// The checkpoint of `case`, written into `dir`.
fn write_checkpoint(seeds: &[Files], case: &CheckpointCase, dir: &Path) {
    let mut files = seeds[case.seed.index(seeds.len())].clone();
    let weights: Vec<String> = files
        .keys()
        .filter(|n| n.ends_with(".safetensors"))
        .cloned()
        .collect();
    let mut parsed: BTreeMap<String, Safetensors> = weights
        .iter()
        .map(|n| (n.clone(), Safetensors::parse(&files[n])))
        .collect();
    for (file, edit) in &case.tensor_edits {
        let name = &weights[file.index(weights.len())];
        edit_tensors(parsed.get_mut(name).unwrap(), edit);
    }
    for name in &weights {
        let st = &parsed[name];
        let mut header = st.header();
        let data = st.data();
        let mut len = None;
        let mut bytes_edits = Vec::new();
        for (file, edit) in &case.raw_edits {
            if weights[file.index(weights.len())] != *name {
                continue;
            }
            match edit {
                RawEdit::Header(e) => apply_json(&mut header, std::slice::from_ref(e)),
                RawEdit::Length(n) => len = Some(*n),
                RawEdit::LengthBy(by) => {
                    let framed = frame(&header, &[], None).len() as u64 - 8;
                    len = Some(framed.saturating_add_signed(i64::from(*by)));
                }
                RawEdit::Bytes(e) => bytes_edits.push(e.clone()),
            }
        }
        files.insert(
            name.clone(),
            apply_bytes(frame(&header, &data, len), &bytes_edits),
        );
    }
    if !case.config_edits.is_empty() {
        let mut config: Value = serde_json::from_slice(&files["config.json"]).unwrap();
        apply_json(&mut config, &case.config_edits);
        files.insert("config.json".into(), config.to_string().into_bytes());
    }
    if let Some(index) = files.get("model.safetensors.index.json")
        && !case.index_edits.is_empty()
    {
        let mut index: Value = serde_json::from_slice(index).unwrap();
        apply_json(&mut index, &case.index_edits);
        files.insert(
            "model.safetensors.index.json".into(),
            index.to_string().into_bytes(),
        );
    }
    if let Some(k) = &case.remove {
        let name = files.keys().nth(k.index(files.len())).cloned().unwrap();
        files.remove(&name);
    }
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// The kind of a loader error, for the figures.
fn error_kind(e: &ModelError) -> &'static str {
    match e {
        ModelError::Io { .. } => "io error",
        ModelError::Format { path, .. } if path.ends_with("config.json") => "config refused",
        ModelError::Format { .. } => "malformed file",
        ModelError::NoWeights { .. } => "no weights",
        ModelError::MissingTensor { .. } => "missing tensor",
        ModelError::UnexpectedTensor { .. } => "unexpected tensor",
        ModelError::Shape { .. } => "wrong shape",
        ModelError::Dtype { .. } => "unread dtype",
        ModelError::Readback { .. } => "readback",
    }
}

#[test]
fn safetensors_checkpoints_never_panic_the_loader() {
    let seeds = checkpoint_seeds();
    let root = tempfile::tempdir().unwrap();
    let tally = Tally::default();
    let case_number = std::cell::Cell::new(0usize);
    fuzz("safetensors", checkpoint_case(), &tally, |case| {
        case_number.set(case_number.get() + 1);
        let dir = root.path().join(format!("case-{}", case_number.get()));
        write_checkpoint(&seeds, &case, &dir);
        let result = load::load(&dir, &cpu());
        let outcome = match result {
            Ok(model) => {
                // An accepted checkpoint computes: one short forward.
                let v = model.config.vocab_size as i64;
                let ids = Tensor::<2, Int>::from_data(
                    TensorData::new(vec![1 % v, 2 % v, 3 % v], [1, 3]),
                    &cpu(),
                );
                let out = model.forward(ids, &[vec![true; 3]]);
                prop_assert_eq!(out.dims(), [1, 3, model.config.vocab_size]);
                Ok(())
            }
            Err(e) => {
                let msg = e.to_string();
                count(&tally, error_kind(&e));
                prop_assert!(
                    msg.contains(&dir.display().to_string()),
                    "an error that names no file of the checkpoint: {msg}"
                );
                Err(msg)
            }
        };
        count(&tally, if outcome.is_ok() { "loaded" } else { "refused" });
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    });
    assert!(tally.borrow().contains_key("loaded") && tally.borrow().contains_key("refused"));
}

// ---------------------------------------------------------------------------------------------
// What the fuzz found, kept as plain cases

/// Shapes that made the configuration check, the parameter count or the loader panic (an
/// overflowing product, a layer count allocated before anything was read) or that it accepted
/// without a usable head width. Each is now refused in words.
#[test]
fn fuzz_findings_in_config_json_are_refused_in_words() {
    let tiny = || serde_json::to_value(LlamaConfig::preset("tiny").unwrap()).unwrap();
    let cases: [(&str, Value, &str); 6] = [
        ("num_hidden_layers", json!(u64::MAX), "num_hidden_layers"),
        ("num_hidden_layers", json!(1u64 << 40), "at most 65536"),
        ("head_dim", json!(0), "head_dim must be positive"),
        // No head_dim: hidden / heads = 0.
        ("num_attention_heads", json!(512), "must be positive"),
        ("vocab_size", json!(1u64 << 40), "more than 2^48 parameters"),
        (
            "intermediate_size",
            json!(u64::MAX / 2),
            "more than 2^48 parameters",
        ),
    ];
    for (key, value, words) in cases {
        let mut config = tiny();
        config[key] = value.clone();
        if key == "num_attention_heads" {
            config["head_dim"] = Value::Null;
            config["num_key_value_heads"] = json!(512);
        }
        let err = LlamaConfig::from_json(config.clone()).unwrap_err();
        assert!(err.contains(words), "{key} = {value}: {err}");
        // Unvalidated, the architecture check and the count refuse or saturate, never panic.
        let raw: LlamaConfig = serde_json::from_value(config).unwrap();
        let _ = (Arch::of(&raw), raw.num_params());
    }
}

/// Every one-byte corruption of a small Parquet file (to a few byte values) is read or refused
/// as a corrupt file, never a panic: the parquet crate panics on some of them (a page shorter
/// than its encoding says), which the row reader reports as an unreadable file.
#[test]
fn corrupt_parquet_files_are_refused_not_panicked_on() {
    let rows = vec![
        json!({"prompt": "a", "chosen": "b", "rejected": "c", "score_chosen": 1.0}),
        json!({"prompt": "é", "chosen": "", "rejected": "<|eot_id|>"}),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rows.parquet");
    // zstd-compressed, in two row groups.
    let file = parquet_bytes(&rows, 2, 2);
    let mut refused = 0;
    for at in 0..file.len() {
        for value in [0u8, b'8', 0xff] {
            let mut bytes = file.clone();
            bytes[at] = value;
            std::fs::write(&path, &bytes).unwrap();
            match std::panic::catch_unwind(|| rows::read_file(&path)) {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    refused += 1;
                    assert!(matches!(e, DataError::Parquet { .. }), "{e}");
                    assert!(e.to_string().contains(&path.display().to_string()));
                }
                Err(_) => panic!("the row reader panicked on byte {at} set to {value}"),
            }
        }
    }
    assert!(refused > 0);
}
