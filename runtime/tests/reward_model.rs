//! Reward models: a scalar head on the decoder, pooled at each row's last real token, saved
//! as transformers' `LlamaForSequenceClassification` (checked against transformers itself) and
//! loaded back; gradients reach the head and the backbone.

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::Device;
use poc_runtime::device::training;
use poc_runtime::lower::to_f64;
use poc_runtime::model::load;
use poc_runtime::model::{Llama, LlamaConfig};
use poc_runtime::observe::{self, Want};

mod common;
use common::cpu;

fn config() -> LlamaConfig {
    let mut c = common::small_config(2);
    c.extra.insert("pad_token_id".into(), 0.into());
    c
}

/// Unpadded rows, the same right-padded, and the real-token masks.
type Rows = (Vec<Vec<u32>>, Vec<Vec<u32>>, Vec<Vec<bool>>);

/// Rows of different lengths, right-padded with 0, and their masks.
fn rows() -> Rows {
    let raw: Vec<Vec<u32>> = vec![
        vec![5, 17, 33, 2, 9, 40],
        vec![3, 8, 60],
        vec![7, 7, 7, 7, 7],
    ];
    let t = 6;
    let padded = raw
        .iter()
        .map(|r| {
            let mut p = r.clone();
            p.resize(t, 0);
            p
        })
        .collect();
    let mask = raw
        .iter()
        .map(|r| (0..t).map(|j| j < r.len()).collect())
        .collect();
    (raw, padded, mask)
}

fn rewards(model: &Llama, device: &Device) -> Vec<f64> {
    let (_, tokens, mask) = rows();
    to_f64(rewards_of(model, &tokens, &mask, device))
}

/// The rewards of rows (the whole row is the completion).
fn rewards_of(
    model: &Llama,
    tokens: &[Vec<u32>],
    mask: &[Vec<bool>],
    device: &Device,
) -> burn::tensor::Tensor<1> {
    let rows = observe::Rows {
        tokens,
        mask,
        completion: mask,
    };
    let st = observe::stats(model, rows, Want::REWARDS, device);
    st.rewards.unwrap()
}

#[test]
fn rewards_pool_the_last_real_token_and_ignore_padding() {
    let device = cpu();
    let model = Llama::random(&config(), 1, &device).with_score_head(2);
    let r = rewards(&model, &device);
    assert_eq!(r.len(), 3);
    assert!(r.iter().all(|x| x.is_finite()));
    // The same row alone (no padding) gets the same reward.
    let (raw, _, _) = rows();
    let alone = rewards_of(&model, &[raw[1].clone()], &[vec![true; 3]], &device);
    assert!((to_f64(alone)[0] - r[1]).abs() < 1e-5);
}

#[test]
fn a_saved_reward_model_loads_back_and_in_transformers() {
    let device = cpu();
    let dir = tempfile::tempdir().unwrap();
    let model = Llama::random(&config(), 1, &device).with_score_head(2);
    let want = rewards(&model, &device);
    load::save(&model, dir.path()).unwrap();
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(
        cfg["architectures"],
        serde_json::json!(["LlamaForSequenceClassification"])
    );
    assert_eq!(cfg["num_labels"], 1);
    let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("score.weight").unwrap().shape(), &[1, 32]);
    assert!(st.tensor("lm_head.weight").is_err());
    let back = load::load(dir.path(), &device).unwrap();
    assert!(back.score.is_some());
    let got = rewards(&back, &device);
    for (a, b) in want.iter().zip(&got) {
        assert!((a - b).abs() < 1e-6, "{want:?} vs {got:?}");
    }
    // transformers' LlamaForSequenceClassification gives the same rewards.
    let Some(python) = common::python::python_with(
        "a reward model against transformers",
        &["torch", "transformers"],
    ) else {
        return;
    };
    let (raw, _, _) = rows();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/check_reward_model.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(dir.path())
        .arg(serde_json::to_string(&raw).unwrap())
        .output()
        .expect("the Python of scripts/setup.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hf: Vec<f64> = serde_json::from_slice(&out.stdout).unwrap();
    for (a, b) in want.iter().zip(&hf) {
        assert!((a - b).abs() < 1e-4, "poc {want:?} vs transformers {hf:?}");
    }
}

#[test]
fn gradients_reach_the_head_and_the_backbone() {
    let ad = training(&cpu(), false);
    let model = Llama::random(&config(), 1, &ad).with_score_head(2);
    let (_, tokens, mask) = rows();
    let rewards = rewards_of(&model, &tokens, &mask, &ad);
    let grads = GradientsParams::from_grads(rewards.sum().backward(), &model);
    let score = model.score.as_ref().unwrap();
    assert!(grads.get::<2>(score.id).is_some());
    assert!(grads.get::<2>(model.layers[0].wq.id).is_some());
    // The output head plays no part in a reward.
    assert!(
        model.lm_head.is_none() || grads.get::<2>(model.lm_head.as_ref().unwrap().id).is_none()
    );
    let _ = model.valid();
}
