//! The Llama implementation against `transformers`. The fixture (made by
//! scripts/make_llama_fixture.py) is a tiny bf16 HF checkpoint with Llama-3 rope scaling,
//! grouped-query attention and an untied head; loaded by poc it must give the logits,
//! completion log-probs and entropies transformers computed. Also: the tied head, the other
//! dtypes, the sharded layout, transformers-5's `rope_parameters`, save→load round trips
//! (single file, sharded, bf16) and the loader's errors.

use burn::tensor::{Int, Tensor, TensorData};
use poc_runtime::data::{Tok, batch_of, parse_pairs};
use poc_runtime::lower::to_f64;
use poc_runtime::model::config::inv_frequencies;
use poc_runtime::model::load::{self, SaveDtype, SaveOptions};
use poc_runtime::model::{Llama, LlamaConfig};
use poc_runtime::observe::{self, Rows, Stats, Want};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama")
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json")).unwrap())
        .unwrap()
}

mod common;
use common::cpu;

/// The sequence statistics of `rows` (log-probs, and entropies when `entropy`).
fn seq_stats(
    model: &Llama,
    tokens: &[Vec<u32>],
    mask: &[Vec<bool>],
    completion: &[Vec<bool>],
    entropy: bool,
) -> Stats {
    let rows = Rows {
        tokens,
        mask,
        completion,
    };
    let want = Want {
        entropy,
        ..Want::LOGPS
    };
    observe::stats(model, rows, want, &cpu())
}

/// The batch of expected.json: tokens, real-token mask, completion mask, lengths.
struct Case {
    tokens: Vec<Vec<u32>>,
    mask: Vec<Vec<bool>>,
    completion: Vec<Vec<bool>>,
    lengths: Vec<usize>,
}

fn case() -> Case {
    let e = expected();
    let tokens: Vec<Vec<u32>> = serde_json::from_value(e["tokens"].clone()).unwrap();
    let lengths: Vec<usize> = serde_json::from_value(e["lengths"].clone()).unwrap();
    let starts: Vec<usize> = serde_json::from_value(e["completion_start"].clone()).unwrap();
    let t = tokens[0].len();
    let mask = lengths
        .iter()
        .map(|&n| (0..t).map(|j| j < n).collect())
        .collect();
    let completion = lengths
        .iter()
        .zip(&starts)
        .map(|(&n, &s)| (0..t).map(|j| j >= s && j < n).collect())
        .collect();
    Case {
        tokens,
        mask,
        completion,
        lengths,
    }
}

/// Logits of the real positions of each row: `[row][position][vocab]`.
fn logits(model: &Llama, c: &Case) -> Vec<Vec<Vec<f32>>> {
    let (b, t) = (c.tokens.len(), c.tokens[0].len());
    let flat: Vec<i64> = c.tokens.iter().flatten().map(|&x| x as i64).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(flat, [b, t]), &cpu());
    let out = model.forward(ids, &c.mask);
    let v = out.dims()[2];
    let data: Vec<f32> = out.try_into_vec_as::<f32>().unwrap();
    (0..b)
        .map(|i| {
            (0..c.lengths[i])
                .map(|j| data[(i * t + j) * v..(i * t + j + 1) * v].to_vec())
                .collect()
        })
        .collect()
}

fn max_abs_diff(got: &[f32], want: &Value) -> f32 {
    let want = want.as_array().unwrap();
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(x, w)| (x - w.as_f64().unwrap() as f32).abs())
        .fold(0.0, f32::max)
}

fn assert_logits_match(got: &[Vec<Vec<f32>>], want: &Value, tol: f32) {
    let mut worst = 0.0f32;
    for (b, rows) in got.iter().enumerate() {
        for (j, row) in rows.iter().enumerate() {
            worst = worst.max(max_abs_diff(row, &want[b][j]));
        }
    }
    assert!(
        worst < tol,
        "max |logit - transformers| = {worst} (tolerance {tol})"
    );
}

fn assert_close(what: &str, got: &[f64], want: &Value, tol: f64) {
    for (b, g) in got.iter().enumerate() {
        let w = want[b].as_f64().unwrap();
        assert!(
            (g - w).abs() < tol,
            "{what}, row {b}: poc {g} vs transformers {w} (tolerance {tol})"
        );
    }
}

/// Checks poc's observables for the expected batch against transformers'.
fn assert_observables_match(model: &Llama, c: &Case, e: &Value) {
    let stats = seq_stats(model, &c.tokens, &c.mask, &c.completion, true);
    assert_close(
        "completion log-prob",
        &to_f64(stats.logps.unwrap()),
        &e["completion_logps"],
        2e-4,
    );
    assert_close(
        "token count",
        &to_f64(observe::token_counts(&c.completion, &cpu())),
        &e["completion_tokens"],
        1e-9,
    );
    assert_close(
        "mean entropy",
        &to_f64(stats.entropy.unwrap()),
        &e["mean_entropy"],
        1e-5,
    );
}

#[test]
fn bf16_checkpoint_gives_transformers_logits_logps_and_entropies() {
    let model = load::load(&fixture(), &cpu()).unwrap();
    let (c, e) = (case(), expected());
    assert_logits_match(&logits(&model, &c), &e["logits"], 1e-4);
    assert_observables_match(&model, &c, &e);
    // Without entropies asked for, none are computed; the log-probs are the same.
    let stats = seq_stats(&model, &c.tokens, &c.mask, &c.completion, false);
    assert!(stats.entropy.is_none());
    assert_close(
        "completion log-prob",
        &to_f64(stats.logps.unwrap()),
        &e["completion_logps"],
        2e-4,
    );
}

#[test]
fn jsonl_rows_through_the_loader_score_like_transformers() {
    // The whole path the trainer takes: JSONL rows → TRL tokenization → padded batch →
    // observables, against transformers on the same rows.
    let e = expected();
    let config = LlamaConfig::from_file(&fixture().join("config.json")).unwrap();
    let tok = Tok::from_file(&fixture().join("tokenizer.json"), config.eos_ids()[0]).unwrap();
    let text: String = e["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{r}\n"))
        .collect();
    let (pairs, bad) = parse_pairs(&text, "rows", &tok, 512, true).unwrap();
    assert!(bad.is_empty());
    let idx: Vec<usize> = (0..pairs.len()).collect();
    let batch = batch_of(&pairs, &idx, tok.pad);
    let c = case();
    assert_eq!(batch.tokens, c.tokens);
    assert_eq!(batch.mask, c.mask);
    assert_eq!(batch.completion, c.completion);
    let model = load::load(&fixture(), &cpu()).unwrap();
    let stats = observe::stats(&model, Rows::from(&batch), Want::LOGPS, &cpu());
    assert_close(
        "completion log-prob",
        &to_f64(stats.logps.unwrap()),
        &e["completion_logps"],
        2e-4,
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Rewrites `dir/model.safetensors` with every tensor passed through `f` (name, dtype,
/// shape, bytes) → Some((dtype, bytes)) to keep it, None to drop it.
fn rewrite_weights(dir: &Path, f: impl Fn(&str, Dtype, &[u8]) -> Option<(Dtype, Vec<u8>)>) {
    let bytes = std::fs::read(fixture().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .filter_map(|(name, v)| {
            f(&name, v.dtype(), v.data()).map(|(d, b)| (name, d, v.shape().to_vec(), b))
        })
        .collect();
    let views: Vec<(String, TensorView)> = kept
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
}

fn bf16_values(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(2)
        .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
}

#[test]
fn f32_and_f16_checkpoints_load_the_same_weights() {
    let base = logits(&load::load(&fixture(), &cpu()).unwrap(), &case());
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture(), tmp.path());
    // bf16 → f32 is exact: the same model.
    rewrite_weights(tmp.path(), |_, d, b| {
        assert_eq!(d, Dtype::BF16);
        Some((
            Dtype::F32,
            bf16_values(b).flat_map(f32::to_le_bytes).collect(),
        ))
    });
    let f32_model = load::load(tmp.path(), &cpu()).unwrap();
    assert_eq!(logits(&f32_model, &case()), base);
    // bf16 → f16 rounds only the tiniest weights (f16's smaller exponent range).
    rewrite_weights(tmp.path(), |_, _, b| {
        let values = bf16_values(b).map(|x| half::f16::from_f32(x).to_le_bytes());
        Some((Dtype::F16, values.flatten().collect()))
    });
    let f16_model = load::load(tmp.path(), &cpu()).unwrap();
    assert_logits_match(&logits(&f16_model, &case()), &expected()["logits"], 1e-2);
}

#[test]
fn tied_head_matches_transformers() {
    // HF writes a tied model without lm_head.weight.
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture(), tmp.path());
    edit_config(tmp.path(), |c| {
        c["tie_word_embeddings"] = true.into();
    });
    rewrite_weights(tmp.path(), |name, d, b| {
        (name != "lm_head.weight").then(|| (d, b.to_vec()))
    });
    let model = load::load(tmp.path(), &cpu()).unwrap();
    assert!(model.lm_head.is_none());
    let (c, e) = (case(), expected());
    let got = logits(&model, &c);
    for (b, rows) in got.iter().enumerate() {
        let last = rows.last().unwrap();
        let worst = max_abs_diff(last, &e["tied"]["last_logits"][b]);
        assert!(worst < 1e-4, "row {b}: max |logit difference| {worst}");
    }
    let stats = seq_stats(&model, &c.tokens, &c.mask, &c.completion, false);
    assert_close(
        "tied completion log-prob",
        &to_f64(stats.logps.unwrap()),
        &e["tied"]["completion_logps"],
        2e-4,
    );
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut Value)) {
    let path = dir.join("config.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    f(&mut cfg);
    std::fs::write(&path, cfg.to_string()).unwrap();
}

#[test]
fn sharded_checkpoint_loads_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::copy(fixture().join("config.json"), dir.join("config.json")).unwrap();
    let bytes = std::fs::read(fixture().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let third = names.len() / 3;
    let parts = [
        &names[..third],
        &names[third..2 * third],
        &names[2 * third..],
    ];
    let mut weight_map = serde_json::Map::new();
    for (k, part) in parts.into_iter().enumerate() {
        let file = format!("model-{:05}-of-00003.safetensors", k + 1);
        let views: Vec<(String, TensorView)> = part
            .iter()
            .map(|n| (n.clone(), st.tensor(n).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join(&file)).unwrap();
        for n in part {
            weight_map.insert(n.clone(), serde_json::json!(file));
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let model = load::load(dir, &cpu()).unwrap();
    assert_logits_match(&logits(&model, &case()), &expected()["logits"], 1e-4);
}

#[test]
fn transformers5_rope_parameters_form_is_equivalent() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture(), tmp.path());
    // transformers 5: rope_theta and the scaling move into one `rope_parameters` object.
    edit_config(tmp.path(), |cfg| {
        let obj = cfg.as_object_mut().unwrap();
        let mut rope = obj.remove("rope_scaling").unwrap();
        let theta = obj.remove("rope_theta").unwrap();
        rope["rope_theta"] = theta;
        obj.insert("rope_parameters".into(), rope);
    });
    let parsed = LlamaConfig::from_file(&tmp.path().join("config.json")).unwrap();
    let original = LlamaConfig::from_file(&fixture().join("config.json")).unwrap();
    assert_eq!(parsed.rope().unwrap(), original.rope().unwrap());
    let model = load::load(tmp.path(), &cpu()).unwrap();
    assert_logits_match(&logits(&model, &case()), &expected()["logits"], 1e-4);
    // A rope_parameters object without rope_theta takes the top-level one.
    edit_config(tmp.path(), |cfg| {
        let theta = cfg["rope_parameters"]
            .as_object_mut()
            .unwrap()
            .remove("rope_theta")
            .unwrap();
        cfg["rope_theta"] = theta;
    });
    let parsed = LlamaConfig::from_file(&tmp.path().join("config.json")).unwrap();
    assert_eq!(parsed.rope().unwrap(), original.rope().unwrap());
}

#[test]
fn llama31_rope_frequencies_match_transformers() {
    let rope = LlamaConfig::preset("llama3.1-8b").unwrap().rope().unwrap();
    let got = inv_frequencies(&rope, 128);
    let want = expected()["llama3.1_inv_freq"].clone();
    let want = want.as_array().unwrap();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let w = w.as_f64().unwrap();
        assert!(
            (g - w).abs() <= 1e-6 * w.abs(),
            "frequency {i}: poc {g} vs transformers {w}"
        );
    }
}

fn no_temporary_files(dir: &Path) {
    let leftovers: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn save_then_load_round_trips() {
    let model = load::load(&fixture(), &cpu()).unwrap();
    let c = case();
    let want = logits(&model, &c);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    load::save(&model, dir).unwrap();
    assert_eq!(files(dir), ["config.json", "model.safetensors"]);
    let again = load::load(dir, &cpu()).unwrap();
    assert_eq!(
        logits(&again, &c),
        want,
        "f32 save must load to the identical model"
    );
    assert_eq!(again.config.rope(), model.config.rope());
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["dtype"], "float32");
    assert_eq!(saved["model_type"], "llama", "unknown fields are kept");
    assert_eq!(saved["eos_token_id"], serde_json::json!([307, 310]));
    no_temporary_files(dir);

    // Sharded: three tensors per shard at most, listed by the index.
    let per_tensor = 64 * 160 * 4;
    let opts = SaveOptions {
        dtype: SaveDtype::F32,
        max_shard_bytes: 3 * per_tensor as u64,
    };
    load::save_with(&model, dir, &opts).unwrap();
    let names = files(dir);
    assert!(
        names.contains(&"model.safetensors.index.json".to_string()),
        "{names:?}"
    );
    assert!(
        !names.contains(&"model.safetensors".to_string()),
        "the earlier single file is removed: {names:?}"
    );
    let shards = names.iter().filter(|n| n.starts_with("model-0")).count();
    assert!(shards > 3, "{names:?}");
    assert!(names.contains(&format!("model-00001-of-{shards:05}.safetensors")));
    assert_eq!(logits(&load::load(dir, &cpu()).unwrap(), &c), want);

    // bf16: the fixture's weights are bf16 values, so nothing is rounded.
    let opts = SaveOptions {
        dtype: SaveDtype::Bf16,
        ..SaveOptions::default()
    };
    load::save_with(&model, dir, &opts).unwrap();
    assert_eq!(
        files(dir),
        ["config.json", "model.safetensors"],
        "a single-file save removes the shards and the index"
    );
    let on_disk = std::fs::metadata(dir.join("model.safetensors"))
        .unwrap()
        .len();
    let fixture_size = std::fs::metadata(fixture().join("model.safetensors"))
        .unwrap()
        .len();
    assert!(
        on_disk.abs_diff(fixture_size) < 4096,
        "{on_disk} vs {fixture_size}"
    );
    assert_eq!(logits(&load::load(dir, &cpu()).unwrap(), &c), want);
    no_temporary_files(dir);
}

#[test]
fn random_models_are_seeded_and_round_trip() {
    let config = LlamaConfig::from_file(&fixture().join("config.json")).unwrap();
    let a = Llama::random(&config, 7, &cpu());
    let b = Llama::random(&config, 7, &cpu());
    let c = Llama::random(&config, 8, &cpu());
    let case = case();
    assert_eq!(logits(&a, &case), logits(&b, &case));
    assert_ne!(logits(&a, &case), logits(&c, &case));
    let tmp = tempfile::tempdir().unwrap();
    load::save(&a, tmp.path()).unwrap();
    assert_eq!(
        logits(&load::load(tmp.path(), &cpu()).unwrap(), &case),
        logits(&a, &case)
    );
}

#[test]
fn short_rows_have_no_scored_tokens() {
    let model = load::load(&fixture(), &cpu()).unwrap();
    let stats = seq_stats(&model, &[vec![306]], &[vec![true]], &[vec![true]], true);
    assert_eq!(to_f64(stats.logps.unwrap()), [0.0]);
    assert_eq!(to_f64(observe::token_counts(&[vec![true]], &cpu())), [0.0]);
    assert_eq!(to_f64(stats.entropy.unwrap()), [0.0]);
}

#[test]
fn loader_errors_name_the_tensor_and_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let err = load::load(tmp.path(), &cpu()).unwrap_err().to_string();
    assert!(err.contains("config.json"), "{err}");
    copy_dir(&fixture(), tmp.path());
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    let err = load::load(tmp.path(), &cpu()).unwrap_err().to_string();
    assert!(err.contains("no model.safetensors"), "{err}");
    copy_dir(&fixture(), tmp.path());

    // Wrong shape: claim a wider MLP than the weights have.
    edit_config(tmp.path(), |c| c["intermediate_size"] = 192.into());
    let err = load::load(tmp.path(), &cpu()).unwrap_err().to_string();
    assert!(
        err.contains("model.safetensors: tensor `model.layers.0.mlp.gate_proj.weight` has shape [160, 64], config.json implies [192, 64]"),
        "{err}"
    );
    copy_dir(&fixture(), tmp.path());

    // Missing tensor.
    rewrite_weights(tmp.path(), |name, d, b| {
        (!name.contains("layers.1.mlp.up_proj")).then(|| (d, b.to_vec()))
    });
    let err = load::load(tmp.path(), &cpu()).unwrap_err().to_string();
    assert!(
        err.contains(
            "model.safetensors: checkpoint lacks tensor `model.layers.1.mlp.up_proj.weight`"
        ),
        "{err}"
    );

    // Unsupported dtype.
    rewrite_weights(tmp.path(), |name, d, b| {
        Some(if name == "model.norm.weight" {
            (Dtype::I16, b.to_vec())
        } else {
            (d, b.to_vec())
        })
    });
    let err = load::load(tmp.path(), &cpu()).unwrap_err().to_string();
    assert!(err.contains("`model.norm.weight` has dtype I16"), "{err}");

    // A shard the index names but that is absent.
    let names =
        SafeTensors::deserialize(&std::fs::read(fixture().join("model.safetensors")).unwrap())
            .unwrap()
            .names()
            .into_iter()
            .map(|n| {
                (
                    n.to_string(),
                    Value::from("model-00001-of-00002.safetensors"),
                )
            })
            .collect::<serde_json::Map<_, _>>();
    let index = serde_json::json!({ "weight_map": names });
    std::fs::write(
        tmp.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let err = load::load(tmp.path(), &cpu()).unwrap_err().to_string();
    assert!(err.contains("model-00001-of-00002.safetensors"), "{err}");
    std::fs::remove_file(tmp.path().join("model.safetensors.index.json")).unwrap();

    // A bad config names the file and the field.
    std::fs::write(tmp.path().join("config.json"), "{\"hidden_size\": 1}").unwrap();
    let err = load::load(tmp.path(), &cpu()).unwrap_err().to_string();
    assert!(
        err.contains("config.json") && err.contains("missing field `vocab_size`"),
        "{err}"
    );
    copy_dir(&fixture(), tmp.path());
    edit_config(tmp.path(), |c| {
        c["rope_scaling"]["rope_type"] = "yarn".into()
    });
    let err = load::load(tmp.path(), &cpu()).unwrap_err().to_string();
    assert!(
        err.contains("config.json") && err.contains("`yarn`"),
        "{err}"
    );
    edit_config(tmp.path(), |c| c["num_key_value_heads"] = 3.into());
    let err = load::load(tmp.path(), &cpu()).unwrap_err().to_string();
    assert!(err.contains("multiple of num_key_value_heads (3)"), "{err}");
}

#[test]
fn configs_parse_both_eos_forms() {
    let cfg = LlamaConfig::from_file(&fixture().join("config.json")).unwrap();
    assert_eq!(cfg.eos_ids(), [307, 310]);
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("config.json")).unwrap())
            .unwrap();
    v["eos_token_id"] = 307.into();
    let cfg: LlamaConfig = serde_json::from_value(v).unwrap();
    assert_eq!(cfg.eos_ids(), [307]);
}

#[test]
fn presets_have_the_published_shapes() {
    let p = |n| LlamaConfig::preset(n).unwrap();
    let billions = |n| p(n).num_params() as f64 / 1e9;
    assert!(
        (billions("llama3-8b") - 8.030).abs() < 0.001,
        "{}",
        billions("llama3-8b")
    );
    assert!((billions("llama3.1-8b") - 8.030).abs() < 0.001);
    assert!(
        (billions("llama3.2-1b") - 1.236).abs() < 0.001,
        "{}",
        billions("llama3.2-1b")
    );
    assert!(
        (billions("llama3.2-3b") - 3.213).abs() < 0.001,
        "{}",
        billions("llama3.2-3b")
    );
    assert!(p("llama3-8b").rope().unwrap().llama3.is_none());
    for (name, factor) in [
        ("llama3.1-8b", 8.0),
        ("llama3.2-1b", 32.0),
        ("llama3.2-3b", 32.0),
    ] {
        let scaling = p(name).rope().unwrap().llama3.unwrap();
        assert_eq!(scaling.factor, factor, "{name}");
        assert_eq!(scaling.original_max_position_embeddings, 8192);
        assert_eq!(p(name).max_position_embeddings, 131072);
    }
    assert_eq!(p("llama3.2-3b").head_dim(), 128);
    assert_eq!(p("llama3.2-1b").head_dim(), 64);
    for name in LlamaConfig::PRESETS {
        p(name).validate().unwrap();
    }
    let tiny = p("tiny").num_params();
    assert!(
        (1_000_000..10_000_000).contains(&tiny),
        "tiny has {tiny} parameters"
    );
    assert_eq!(p("tiny").vocab_size, poc_runtime::data::tiny_vocab_size());
}

/// poc's saved checkpoint read back by transformers (needs Python with torch and
/// transformers: the policy of `common::python`).
#[test]
fn transformers_loads_a_poc_checkpoint() {
    let Some(python) = common::python::python_with(
        "transformers_loads_a_poc_checkpoint",
        &["torch", "transformers"],
    ) else {
        return;
    };
    let config = LlamaConfig::from_file(&fixture().join("config.json")).unwrap();
    let model = Llama::random(&config, 3, &cpu());
    let tmp = tempfile::tempdir().unwrap();
    let opts = SaveOptions {
        dtype: SaveDtype::F32,
        max_shard_bytes: 200_000,
    };
    load::save_with(&model, tmp.path(), &opts).unwrap();
    let c = case();
    let script = r#"
import json, sys, torch
from transformers import LlamaForCausalLM
m = LlamaForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32).eval()
tokens, lengths = json.loads(sys.argv[2]), json.loads(sys.argv[3])
ids = torch.tensor(tokens)
mask = torch.tensor([[1 if j < n else 0 for j in range(ids.shape[1])] for n in lengths])
with torch.no_grad():
    out = m(input_ids=ids, attention_mask=mask).logits
print(json.dumps([out[b, :n].tolist() for b, n in enumerate(lengths)]))
"#;
    let out = std::process::Command::new(&python)
        .args([
            "-c",
            script,
            tmp.path().to_str().unwrap(),
            &serde_json::to_string(&c.tokens).unwrap(),
            &serde_json::to_string(&c.lengths).unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_logits_match(&logits(&model, &c), &want, 1e-4);
}
