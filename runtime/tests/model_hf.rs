//! The Llama implementation against `transformers`: a tiny HF checkpoint (made by
//! scripts/make_llama_fixture.py, with Llama-3 rope scaling, GQA and untied head) loaded by
//! poc must give the logits, completion log-probs and entropies transformers computed. Also the
//! sharded layout, transformers-5's `rope_parameters`, save→load round trips and loader errors.

use burn::tensor::{Device, Int, Tensor, TensorData};
use poc_runtime::device::DeviceSpec;
use poc_runtime::model::{Llama, LlamaConfig, load};
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama")
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json")).unwrap())
        .unwrap()
}

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

fn logits(model: &Llama, c: &Case, dev: &Device) -> Vec<Vec<Vec<f32>>> {
    let (b, t) = (c.tokens.len(), c.tokens[0].len());
    let flat: Vec<i64> = c.tokens.iter().flatten().map(|&x| x as i64).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(flat, [b, t]), dev);
    let out = model.forward(ids, &c.mask);
    let v = out.dims()[2];
    let data: Vec<f32> = out.into_data().try_into_vec_as::<f32>().unwrap();
    (0..b)
        .map(|i| {
            (0..c.lengths[i])
                .map(|j| data[(i * t + j) * v..(i * t + j + 1) * v].to_vec())
                .collect()
        })
        .collect()
}

fn assert_logits_match(got: &[Vec<Vec<f32>>], want: &serde_json::Value, tol: f32) {
    let mut worst = 0.0f32;
    for (b, rows) in got.iter().enumerate() {
        for (j, row) in rows.iter().enumerate() {
            for (k, x) in row.iter().enumerate() {
                let w = want[b][j][k].as_f64().unwrap() as f32;
                worst = worst.max((x - w).abs());
            }
        }
    }
    assert!(
        worst < tol,
        "max |logit difference| = {worst} (tolerance {tol})"
    );
}

#[test]
fn logits_and_logps_match_transformers() {
    let dev = DeviceSpec::Cpu.device();
    let model = load::load(&fixture(), &dev).unwrap();
    let c = case();
    let e = expected();
    assert_logits_match(&logits(&model, &c, &dev), &e["logits"], 1e-4);
    let stats = model.sequence_stats(&c.tokens, &c.mask, &c.completion, true, &dev);
    let lp = poc_runtime::objective::to_f64(stats.logps);
    let n = poc_runtime::objective::to_f64(stats.tokens);
    let ent = poc_runtime::objective::to_f64(stats.entropy.unwrap());
    for b in 0..c.tokens.len() {
        let want = e["completion_logps"][b].as_f64().unwrap();
        assert!(
            (lp[b] - want).abs() < 1e-3 * (1.0 + want.abs()),
            "row {b}: logps {} vs {want}",
            lp[b]
        );
        assert_eq!(n[b], e["completion_tokens"][b].as_f64().unwrap());
        let want = e["mean_entropy"][b].as_f64().unwrap();
        assert!(
            (ent[b] - want).abs() < 1e-4,
            "row {b}: entropy {} vs {want}",
            ent[b]
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn sharded_checkpoint_loads_the_same() {
    let dev = DeviceSpec::Cpu.device();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::copy(fixture().join("config.json"), dir.join("config.json")).unwrap();
    let bytes = std::fs::read(fixture().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    let half = names.len() / 2;
    let mut weight_map = serde_json::Map::new();
    for (k, part) in [&names[..half], &names[half..]].into_iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", k + 1);
        let views: Vec<(String, safetensors::tensor::TensorView)> = part
            .iter()
            .map(|n| (n.clone(), st.tensor(n).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join(&file)).unwrap();
        for n in part {
            weight_map.insert(n.clone(), serde_json::json!(file));
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let model = load::load(dir, &dev).unwrap();
    assert_logits_match(&logits(&model, &case(), &dev), &expected()["logits"], 1e-4);
}

#[test]
fn transformers5_rope_parameters_form_is_equivalent() {
    let dev = DeviceSpec::Cpu.device();
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture(), tmp.path());
    let path = tmp.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let obj = cfg.as_object_mut().unwrap();
    let mut rope = obj.remove("rope_scaling").unwrap();
    let theta = obj.remove("rope_theta").unwrap();
    rope.as_object_mut()
        .unwrap()
        .insert("rope_theta".into(), theta);
    obj.insert("rope_parameters".into(), rope);
    std::fs::write(&path, cfg.to_string()).unwrap();
    let parsed = LlamaConfig::from_file(&path).unwrap();
    assert!(parsed.rope().unwrap().llama3.is_some());
    let model = load::load(tmp.path(), &dev).unwrap();
    assert_logits_match(&logits(&model, &case(), &dev), &expected()["logits"], 1e-4);
}

#[test]
fn save_then_load_round_trips() {
    let dev = DeviceSpec::Cpu.device();
    let model = load::load(&fixture(), &dev).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    load::save(&model, tmp.path()).unwrap();
    let again = load::load(tmp.path(), &dev).unwrap();
    let c = case();
    let (a, b) = (logits(&model, &c, &dev), logits(&again, &c, &dev));
    assert_eq!(a, b, "a saved checkpoint must load to the identical model");
    // No temporary files are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("tmp"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn loader_errors_name_the_problem() {
    let dev = DeviceSpec::Cpu.device();
    let tmp = tempfile::tempdir().unwrap();
    let err = load::load(tmp.path(), &dev).unwrap_err().to_string();
    assert!(err.contains("config.json"), "{err}");
    copy_dir(&fixture(), tmp.path());
    // Wrong shape: claim a wider model than the weights.
    let path = tmp.path().join("config.json");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"hidden_size\": 64", "\"hidden_size\": 128");
    std::fs::write(&path, text).unwrap();
    let err = load::load(tmp.path(), &dev).unwrap_err().to_string();
    assert!(err.contains("has shape") && err.contains("model."), "{err}");
    // Missing tensor.
    std::fs::write(
        &path,
        std::fs::read_to_string(fixture().join("config.json")).unwrap(),
    )
    .unwrap();
    let bytes = std::fs::read(fixture().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView)> = st
        .names()
        .into_iter()
        .filter(|n| !n.contains("layers.1.mlp.up_proj"))
        .map(|n| (n.to_string(), st.tensor(n).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &tmp.path().join("model.safetensors")).unwrap();
    let err = load::load(tmp.path(), &dev).unwrap_err().to_string();
    assert!(
        err.contains("lacks tensor `model.layers.1.mlp.up_proj.weight`"),
        "{err}"
    );
    // A bad config names the file.
    std::fs::write(&path, "{\"hidden_size\": 1}").unwrap();
    let err = load::load(tmp.path(), &dev).unwrap_err().to_string();
    assert!(
        err.contains("config.json") && err.contains("missing field"),
        "{err}"
    );
}

#[test]
fn presets_have_the_published_shapes() {
    let p = |n| LlamaConfig::preset(n).unwrap();
    assert!(
        (p("llama3-8b").num_params() as f64 / 1e9 - 8.03).abs() < 0.01,
        "{}",
        p("llama3-8b").num_params()
    );
    assert!(
        (p("llama3.2-1b").num_params() as f64 / 1e9 - 1.236).abs() < 0.01,
        "{}",
        p("llama3.2-1b").num_params()
    );
    assert!(
        (p("llama3.2-3b").num_params() as f64 / 1e9 - 3.213).abs() < 0.01,
        "{}",
        p("llama3.2-3b").num_params()
    );
    assert!(p("llama3.1-8b").rope().unwrap().llama3.is_some());
    let tiny = p("tiny").num_params();
    assert!(
        (1_000_000..10_000_000).contains(&tiny),
        "tiny has {tiny} parameters"
    );
    let _ = Llama::random(&p("tiny"), 0, &DeviceSpec::Cpu.device());
}
