//! LoRA adapters, bf16 compute and gradient checkpointing on a small random Llama:
//! a fresh adapter changes nothing; adapters off is the base model; the merged checkpoint
//! computes what the adapted model computes; PEFT-layout adapters round-trip; only adapters
//! receive gradients; bf16 compute stays close to f32 with f32 master weights; gradient
//! checkpointing gives the same gradients as plain autodiff; frozen weights stored in bf16 compute
//! what cast-on-use computes.

use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use poc_runtime::device::training;
use poc_runtime::lower::to_f64;
use poc_runtime::model::load;
use poc_runtime::model::{Compute, Llama, LlamaConfig, LoraConfig, Target};
use poc_runtime::observe::{self, Stats, Want};

mod common;
use common::cpu;

fn config() -> LlamaConfig {
    common::small_config(2)
}

fn lora(targets: &[Target]) -> LoraConfig {
    LoraConfig {
        rank: 4,
        alpha: 8.0,
        targets: targets.to_vec(),
    }
}

/// Tokens, real-token mask and completion mask, each `[batch][time]`.
type Rows = (Vec<Vec<u32>>, Vec<Vec<bool>>, Vec<Vec<bool>>);

/// Two right-padded rows and their masks.
fn batch() -> Rows {
    let tokens = vec![
        vec![5, 17, 33, 2, 9, 40, 41, 7],
        vec![3, 8, 60, 12, 0, 0, 0, 0],
    ];
    let lens = [8usize, 4];
    let mask = lens
        .iter()
        .map(|&n| (0..8).map(|j| j < n).collect())
        .collect();
    let completion = lens
        .iter()
        .map(|&n| (0..8).map(|j| (2..n).contains(&j)).collect())
        .collect();
    (tokens, mask, completion)
}

fn logits(model: &Llama, device: &Device) -> Vec<f64> {
    let (tokens, mask, _) = batch();
    let flat: Vec<i64> = tokens.iter().flatten().map(|&t| t as i64).collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(flat, [2, 8]), device);
    to_f64(model.forward(ids, &mask).reshape([-1]))
}

/// [`batch`]'s statistics under `model`.
fn stats_of(model: &Llama, want: Want, device: &Device) -> Stats {
    let (tokens, mask, completion) = batch();
    let rows = observe::Rows {
        tokens: &tokens,
        mask: &mask,
        completion: &completion,
    };
    observe::stats(model, rows, want, device)
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Moves every adapter's B off zero (as training would), deterministically.
fn perturb(model: Llama) -> Llama {
    struct Bump(f32);
    impl burn::module::ModuleMapper for Bump {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, t, mapper) = p.consume();
            // Only the zero-initialized B matrices are all zeros.
            let zero = t.clone().abs().max().into_scalar::<f32>() == 0.0;
            let t = if zero {
                self.0 += 0.01;
                t.clone().ones_like() * self.0
            } else {
                t
            };
            Param::from_mapped_value(id, t, mapper)
        }
    }
    model.map(&mut Bump(0.0))
}

#[test]
fn a_fresh_adapter_changes_nothing_and_adapters_off_is_the_base() {
    let device = cpu();
    let base = Llama::random(&config(), 3, &device);
    let want = logits(&base, &device);
    let adapted = base.with_lora(lora(&Target::ALL), 1);
    assert!(max_diff(&logits(&adapted, &device), &want) < 1e-6);
    let mut moved = perturb(adapted);
    assert!(max_diff(&logits(&moved, &device), &want) > 1e-3);
    moved.adapters_enabled = false;
    assert!(max_diff(&logits(&moved, &device), &want) < 1e-6);
}

#[test]
fn the_merged_checkpoint_and_peft_adapters_reproduce_the_adapted_model() {
    let device = cpu();
    let dir = tempfile::tempdir().unwrap();
    let base = Llama::random(&config(), 3, &device);
    let base_logits = logits(&base, &device);
    let adapted = perturb(base.with_lora(lora(&[Target::Q, Target::V, Target::Down]), 1));
    let want = logits(&adapted, &device);
    load::save(&adapted, dir.path()).unwrap();
    load::save_adapters(&adapted, dir.path(), "tiny").unwrap();
    // The merged weights alone: a plain Llama that other tools load.
    let merged = load::load(dir.path(), &device).unwrap();
    assert!(merged.lora.is_none());
    assert!(max_diff(&logits(&merged, &device), &want) < 1e-4);
    // PEFT's files: config and A [r, in], B [out, r] under PEFT's names.
    assert!(load::has_adapters(dir.path()));
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["r"], 4);
    assert_eq!(cfg["lora_alpha"], 8.0);
    assert_eq!(
        cfg["target_modules"],
        serde_json::json!(["q_proj", "v_proj", "down_proj"])
    );
    let bytes = std::fs::read(dir.path().join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let a = st
        .tensor("base_model.model.model.layers.1.mlp.down_proj.lora_A.weight")
        .unwrap();
    assert_eq!(a.shape(), &[4, 48]);
    let b = st
        .tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight")
        .unwrap();
    assert_eq!(b.shape(), &[32, 4]);
    assert_eq!(st.len(), 2 * 2 * 3);
    // Adapters on the original base reproduce the adapted model; off, the base.
    let mut reloaded =
        load::load_adapters(dir.path(), Llama::random(&config(), 3, &device)).unwrap();
    assert_eq!(reloaded.lora, adapted.lora);
    assert!(max_diff(&logits(&reloaded, &device), &want) < 1e-5);
    reloaded.adapters_enabled = false;
    assert!(max_diff(&logits(&reloaded, &device), &base_logits) < 1e-6);
}

#[test]
fn bad_adapter_files_are_errors_that_name_the_file() {
    let device = cpu();
    let dir = tempfile::tempdir().unwrap();
    let adapted = Llama::random(&config(), 3, &device).with_lora(lora(&[Target::Q]), 1);
    load::save_adapters(&adapted, dir.path(), "tiny").unwrap();
    // A base of another shape: the adapter shapes disagree.
    let mut other = config();
    other.hidden_size = 64;
    let err = load::load_adapters(dir.path(), Llama::random(&other, 3, &device))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("adapter_model.safetensors"), "{err}");
    assert!(err.contains("lora_A"), "{err}");
    std::fs::write(dir.path().join("adapter_config.json"), "{\"r\": 4}").unwrap();
    let err = load::load_adapters(dir.path(), Llama::random(&config(), 3, &device))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("adapter_config.json") && err.contains("lora_alpha"),
        "{err}"
    );
}

#[test]
fn target_lists_parse_like_peft() {
    assert_eq!(
        Target::parse_list("all-linear").unwrap(),
        Target::ALL.to_vec()
    );
    assert_eq!(
        Target::parse_list("q_proj, v_proj,q_proj").unwrap(),
        vec![Target::Q, Target::V]
    );
    let err = Target::parse_list("q_proj,qkv").unwrap_err();
    assert!(err.contains("`qkv`") && err.contains("gate_proj"), "{err}");
    assert!(Target::parse_list("").is_err());
}

/// Sum of the completion log-probs, backpropagated; the gradients by parameter.
fn grads_of(model: &Llama, device: &Device) -> (f64, GradientsParams) {
    let loss = stats_of(model, Want::LOGPS, device).logps.unwrap().sum();
    let value = to_f64(loss.clone())[0];
    (value, GradientsParams::from_grads(loss.backward(), model))
}

#[test]
fn only_adapters_receive_gradients() {
    let ad = training(&cpu(), false);
    let model = Llama::random(&config(), 3, &ad).with_lora(lora(&[Target::Q, Target::Up]), 1);
    let (_, grads) = grads_of(&model, &ad);
    assert!(grads.get::<2>(model.embed.id).is_none());
    assert!(grads.get::<1>(model.norm.id).is_none());
    for layer in &model.layers {
        assert!(grads.get::<2>(layer.wq.id).is_none());
        let q = layer.adapters.q.as_ref().unwrap();
        // B = 0 at init, so A's gradient is zero but B's is not.
        let gb = grads.get::<2>(q.b.id).unwrap();
        assert!(gb.abs().sum().into_scalar::<f64>() > 0.0);
        assert!(grads.get::<2>(q.a.id).is_some());
        assert!(layer.adapters.k.is_none());
    }
}

#[test]
fn gradient_checkpointing_gives_the_same_gradients() {
    let plain = training(&cpu(), false);
    let ckpt = training(&cpu(), true);
    let a = Llama::random(&config(), 5, &plain);
    let b = Llama::random(&config(), 5, &ckpt);
    let (la, ga) = grads_of(&a, &plain);
    let (lb, gb) = grads_of(&b, &ckpt);
    assert!((la - lb).abs() < 1e-6 * la.abs().max(1.0));
    for (x, y) in a.layers.iter().zip(&b.layers) {
        for t in Target::ALL {
            let gx = to_f64(ga.get::<2>(x.weight(t).id).unwrap().reshape([-1]));
            let gy = to_f64(gb.get::<2>(y.weight(t).id).unwrap().reshape([-1]));
            assert!(max_diff(&gx, &gy) < 1e-6, "{t:?}");
        }
    }
}

#[test]
fn bf16_compute_is_close_to_f32_and_keeps_f32_master_weights() {
    let ad = training(&cpu(), false);
    let mut model = Llama::random(&config(), 7, &ad);
    let want = Want {
        entropy: true,
        ..Want::LOGPS
    };
    let f32_logps = to_f64(stats_of(&model, want, &ad).logps.unwrap());
    model.compute = Compute::Bf16;
    let logps = stats_of(&model, want, &ad).logps.unwrap();
    assert_eq!(logps.dtype(), DType::F32);
    let bf16_logps = to_f64(logps.clone());
    assert!(
        max_diff(&f32_logps, &bf16_logps) > 0.0,
        "bf16 compute did not run"
    );
    for (x, y) in f32_logps.iter().zip(&bf16_logps) {
        assert!((x - y).abs() < 0.02 * x.abs().max(1.0), "{x} vs {y}");
    }
    // Gradients reach the f32 parameters.
    let grads = GradientsParams::from_grads(logps.sum().backward(), &model);
    let g = grads.get::<2>(model.layers[0].wq.id).unwrap();
    assert_eq!(g.dtype(), DType::F32);
    assert!(g.abs().sum().into_scalar::<f64>() > 0.0);
    assert_eq!(model.layers[0].wq.val().dtype(), DType::F32);
}

/// Under bf16 compute, frozen matrices are stored in bf16 (the LoRA base, a frozen reference):
/// the model computes what it computed casting its f32 weights on use, adapters and norms stay
/// f32, and gradients still reach the adapters.
#[test]
fn bf16_stored_frozen_weights_compute_what_cast_on_use_computes() {
    let ad = training(&cpu(), false);
    let mut model = Llama::random(&config(), 7, &ad);
    model.compute = Compute::Bf16;
    let want = Want {
        entropy: true,
        ..Want::LOGPS
    };
    let cast_on_use = stats_of(&model, want, &ad);
    // A frozen reference: every matrix stored in bf16.
    let frozen = model.valid().store_frozen();
    assert_eq!(frozen.layers[0].wq.val().dtype(), DType::BF16);
    assert_eq!(frozen.embed.val().dtype(), DType::BF16);
    assert_eq!(frozen.layers[0].attn_norm.val().dtype(), DType::F32);
    let plain = cpu();
    let stored = stats_of(&frozen, want, &plain);
    let close = |a: Tensor<1>, b: Tensor<1>| {
        let (a, b) = (to_f64(a), to_f64(b));
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-4 * x.abs().max(1.0), "{x} vs {y}");
        }
    };
    close(cast_on_use.logps.clone().unwrap(), stored.logps.unwrap());
    close(
        cast_on_use.entropy.clone().unwrap(),
        stored.entropy.unwrap(),
    );
    // The LoRA base: frozen matrices in bf16, adapters in f32, and the adapted model trains.
    // (B = 0 at initialization, so B's gradient is the nonzero one.)
    let adapted = model.with_lora(lora(&[Target::Q, Target::Down]), 3);
    assert_eq!(adapted.layers[1].w_down.val().dtype(), DType::BF16);
    let a = adapted.layers[0].adapters.q.as_ref().expect("adapter");
    assert_eq!(a.a.val().dtype(), DType::F32);
    let logps = stats_of(&adapted, Want::LOGPS, &ad).logps.unwrap();
    let grads = GradientsParams::from_grads(logps.sum().backward(), &adapted);
    let g = grads.get::<2>(a.b.id).expect("the adapter gets a gradient");
    assert_eq!(g.dtype(), DType::F32);
    assert!(g.abs().sum().into_scalar::<f64>() > 0.0);
    assert!(grads.get::<2>(adapted.layers[0].wq.id).is_none());
}

/// The rewards of [`batch`]'s rows under a reward model.
fn rewards(model: &Llama, device: &Device) -> Tensor<1> {
    stats_of(model, Want::REWARDS, device).rewards.unwrap()
}

#[test]
fn a_lora_reward_model_trains_its_head_and_saves_it_as_peft_seq_cls() {
    let ad = training(&cpu(), false);
    let model = Llama::random(&config(), 3, &ad)
        .with_score_head(5)
        .with_lora(lora(&[Target::Q, Target::V]), 1);
    // The head trains with the adapters (PEFT's modules_to_save); the backbone does not.
    let loss = rewards(&model, &ad).sum();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let score = model.score.as_ref().unwrap();
    let g = grads
        .get::<2>(score.id)
        .expect("the reward head is trained");
    assert!(g.abs().sum().into_scalar::<f64>() > 0.0);
    assert!(grads.get::<2>(model.embed.id).is_none());
    assert!(grads.get::<2>(model.layers[0].wq.id).is_none());

    // Saved and reloaded onto a base without a head: the adapters bring the head back.
    let device = cpu();
    let adapted = perturb(model.valid());
    let mut head = adapted.clone();
    head.score = adapted
        .score
        .clone()
        .map(|s| s.map(|w| w.clone() + w.ones_like() * 0.5));
    let want = to_f64(rewards(&head, &device));
    let dir = tempfile::tempdir().unwrap();
    load::save(&head, dir.path()).unwrap();
    load::save_adapters(&head, dir.path(), "tiny").unwrap();
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["task_type"], "SEQ_CLS");
    assert_eq!(cfg["modules_to_save"], serde_json::json!(["score"]));
    let bytes = std::fs::read(dir.path().join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(
        st.tensor("base_model.model.score.weight").unwrap().shape(),
        &[1, 32]
    );
    let reloaded = load::load_adapters(dir.path(), Llama::random(&config(), 3, &device)).unwrap();
    assert!(max_diff(&to_f64(rewards(&reloaded, &device)), &want) < 1e-5);
    // The merged checkpoint is a LlamaForSequenceClassification with the same rewards.
    let merged = load::load(dir.path(), &device).unwrap();
    assert!(max_diff(&to_f64(rewards(&merged, &device)), &want) < 1e-4);
}
