//! Every architecture poc implements, against transformers: tiny random models built and
//! scored by transformers (scripts/arch_parity.py: norms and biases perturbed away from their
//! initialization, sliding windows shorter than the rows, soft-caps that bite) must give, loaded
//! by poc, the same sequence log-probs, the same greedy tokens (batched, left-padded, with the
//! KV cache) and, for each family's `*ForSequenceClassification` twin, the same rewards; a
//! checkpoint poc saves must reload in transformers with the same log-probs.
//!
//! The refusals of what is not implemented are tested without Python, on checkpoints poc
//! writes itself and then edits.

mod common;

use common::cpu;
use poc_runtime::lower::to_f64;
use poc_runtime::model::generate::{GenerateOptions, generate};
use poc_runtime::model::load::{self, SaveDtype, SaveOptions};
use poc_runtime::model::{Llama, LlamaConfig};
use poc_runtime::observe::{self, Rows, Want};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The largest |poc − transformers| allowed on a sequence log-prob (sums of 4–12 token
/// log-probs, f32 on both sides; measured at most 4.8e-6 with transformers 4.57.1).
const LOGP_TOL: f64 = 1e-5;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/arch_parity.py")
}

/// The Python with torch and transformers (None: skipped, outside CI).
fn python() -> Option<PathBuf> {
    static PY: OnceLock<Option<PathBuf>> = OnceLock::new();
    PY.get_or_init(|| {
        common::python::python_with(
            "architecture parity with transformers",
            &["torch", "transformers"],
        )
    })
    .clone()
}

/// The fixtures, made once per test process by transformers.
fn fixtures() -> Option<&'static Path> {
    static DIR: OnceLock<Option<tempfile::TempDir>> = OnceLock::new();
    DIR.get_or_init(|| {
        let python = python()?;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let out = std::process::Command::new(python)
            .arg(script())
            .arg("make")
            .arg(dir.path())
            .output()
            .expect("running scripts/arch_parity.py");
        assert!(
            out.status.success(),
            "scripts/arch_parity.py make failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(dir)
    })
    .as_ref()
    .map(|d| d.path())
}

/// Rows of expected.json as poc's forward takes them.
struct Batch {
    tokens: Vec<Vec<u32>>,
    mask: Vec<Vec<bool>>,
    completion: Vec<Vec<bool>>,
}

fn batch(rows: &Value) -> Batch {
    let rows = rows.as_array().expect("rows");
    let tokens: Vec<Vec<u32>> = rows
        .iter()
        .map(|r| serde_json::from_value(r["tokens"].clone()).unwrap())
        .collect();
    let t = tokens.iter().map(Vec::len).max().unwrap_or(0);
    let mask = tokens
        .iter()
        .map(|r| (0..t).map(|j| j < r.len()).collect())
        .collect();
    let completion = rows
        .iter()
        .zip(&tokens)
        .map(|(r, toks)| {
            let start = r["completion_start"].as_u64().unwrap() as usize;
            (0..t).map(|j| j >= start && j < toks.len()).collect()
        })
        .collect();
    Batch {
        tokens: tokens
            .into_iter()
            .map(|mut r| {
                r.resize(t, 0);
                r
            })
            .collect(),
        mask,
        completion,
    }
}

fn stats(model: &Llama, b: &Batch, want: Want) -> observe::Stats {
    let rows = Rows {
        tokens: &b.tokens,
        mask: &b.mask,
        completion: &b.completion,
    };
    observe::stats(model, rows, want, &cpu())
}

fn max_err(got: &[f64], want: &Value) -> f64 {
    let want: Vec<f64> = serde_json::from_value(want.clone()).unwrap();
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f64::max)
}

/// The whole comparison for one case of scripts/arch_parity.py.
fn parity(case: &str) {
    let Some(root) = fixtures() else { return };
    let dir = root.join(case);
    let e: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let model = load::load(&dir, &cpu()).unwrap_or_else(|err| panic!("{case}: {err}"));
    let b = batch(&e["rows"]);
    // Sequence log-probs.
    let logps = to_f64(stats(&model, &b, Want::LOGPS).logps.unwrap());
    let err = max_err(&logps, &e["logps"]);
    eprintln!("{case}: max |log-prob − transformers| = {err:.2e}");
    assert!(
        err < LOGP_TOL,
        "{case}: poc {logps:?} vs transformers {} (max error {err})",
        e["logps"]
    );
    // Greedy tokens: both prompts in one left-padded batch, through the KV cache.
    let prompts: Vec<Vec<u32>> = serde_json::from_value(e["prompts"].clone()).unwrap();
    let greedy: Vec<Vec<u32>> = serde_json::from_value(e["greedy"].clone()).unwrap();
    let opts = GenerateOptions {
        max_new_tokens: 8,
        temperature: 0.0,
        batch_size: 2,
        ..GenerateOptions::default()
    };
    let got = generate(&model, &prompts, &opts).unwrap();
    assert_eq!(
        got, greedy,
        "{case}: greedy tokens differ from transformers'"
    );
    // The reward-model twin.
    let rm = load::load(&dir.join("reward"), &cpu()).unwrap_or_else(|err| panic!("{case}: {err}"));
    let want = Want {
        rewards: true,
        ..Want::NONE
    };
    let rewards = to_f64(stats(&rm, &b, want).rewards.unwrap());
    let err = max_err(&rewards, &e["rewards"]);
    assert!(
        err < 1e-4,
        "{case}: rewards {rewards:?} vs {}",
        e["rewards"]
    );
    // Saved by poc (f32), reloaded by transformers: the same log-probs.
    let out = tempfile::tempdir().unwrap();
    let opts = SaveOptions {
        dtype: SaveDtype::F32,
        ..SaveOptions::default()
    };
    load::save_with(&model, out.path(), &opts).unwrap();
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(
        saved["architectures"],
        json!([model.arch.family.causal_lm_class()])
    );
    let rows_file = out.path().join("rows.json");
    std::fs::write(&rows_file, e["rows"].to_string()).unwrap();
    let run = std::process::Command::new(python().unwrap())
        .arg(script())
        .arg("score")
        .arg(out.path())
        .arg(&rows_file)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{case}: transformers could not reload poc's checkpoint:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let reloaded: Value = serde_json::from_slice(&run.stdout).unwrap();
    let err = max_err(&logps, &reloaded);
    assert!(
        err < LOGP_TOL,
        "{case}: transformers on poc's checkpoint gives {reloaded}, poc {logps:?}"
    );
    // One DPO step: loss and global gradient norm of a full fine-tune, and of LoRA.
    let mut dpo = e["dpo"].clone();
    dpo["rows"] = e["rows"].clone();
    dpo_step(case, &dir, &b, &dpo);
    // And poc reads its own checkpoint back to the bit.
    let back = load::load(out.path(), &cpu()).unwrap();
    let again = to_f64(stats(&back, &b, Want::LOGPS).logps.unwrap());
    assert_eq!(again, logps, "{case}: poc's own round trip");
}

/// Sums the squares of every parameter's gradient.
struct SquaredNorm<'a> {
    grads: &'a burn::optim::GradientsParams,
    sum: f64,
}

impl burn::module::ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(
        &mut self,
        param: &burn::module::Param<burn::tensor::Tensor<D>>,
    ) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            self.sum += g.powf_scalar(2.0).sum().into_scalar::<f64>();
        }
    }
}

/// DPO (β and the constant reference log-probs of expected.json) on the pairs (row 0 over row
/// 1, row 2 over row 3): the loss and the global norm of the trained parameters' gradient.
fn dpo_loss_and_norm(model: &Llama, b: &Batch, want: &Value) -> (f64, f64) {
    use burn::module::Module;
    use burn::tensor::{Tensor, TensorData, activation::log_sigmoid};
    let device = model.embed.val().device();
    let rows = Rows {
        tokens: &b.tokens,
        mask: &b.mask,
        completion: &b.completion,
    };
    let logps = observe::stats(model, rows, Want::LOGPS, &device)
        .logps
        .unwrap();
    let reference: Vec<f32> = serde_json::from_value(want["ref"].clone()).unwrap();
    let reference = Tensor::<1>::from_data(TensorData::new(reference, [4]), &device);
    let beta = want["beta"].as_f64().unwrap();
    let margin = logps - reference;
    let pick = |i: usize| margin.clone().narrow(0, i, 1);
    let delta = Tensor::cat(vec![pick(0) - pick(1), pick(2) - pick(3)], 0);
    let loss = log_sigmoid(delta * beta).neg().mean();
    let value = loss.clone().into_scalar::<f64>();
    let grads = burn::optim::GradientsParams::from_grads(loss.backward(), model);
    let mut norm = SquaredNorm {
        grads: &grads,
        sum: 0.0,
    };
    model.visit(&mut norm);
    (value, norm.sum.sqrt())
}

fn assert_step(case: &str, what: &str, got: (f64, f64), want: (f64, f64)) {
    eprintln!(
        "{case}: {what} DPO loss {:.6} vs {:.6}, gradient norm {:.6} vs {:.6}",
        got.0, want.0, got.1, want.1
    );
    assert!(
        (got.0 - want.0).abs() < 1e-5,
        "{case}: {what} DPO loss {} vs {}",
        got.0,
        want.0
    );
    assert!(
        (got.1 - want.1).abs() < 1e-4 * want.1,
        "{case}: {what} gradient norm {} vs transformers' {}",
        got.1,
        want.1
    );
}

/// One DPO step of a full fine-tune against transformers', then of LoRA adapters (random A and
/// B, on every projection the family exposes as its own module) against PEFT's on the adapters
/// poc saved.
fn dpo_step(case: &str, dir: &Path, b: &Batch, want: &Value) {
    use burn::tensor::{Tensor, TensorData};
    use poc_runtime::model::{Adapter, BlockAdapters, LoraConfig, Target};
    use rand::{Rng, SeedableRng};
    let device = poc_runtime::device::training(&cpu(), false);
    let model = load::load(dir, &device).unwrap();
    let full = dpo_loss_and_norm(&model, b, want);
    let expected = |v: &Value| {
        (
            v["loss"].as_f64().unwrap(),
            v["grad_norm"].as_f64().unwrap(),
        )
    };
    assert_step(case, "full", full, expected(want));
    // LoRA: A and B both random (a fresh B = 0 would leave A without gradient).
    let targets: Vec<Target> = Target::ALL
        .into_iter()
        .filter(|&t| model.arch.check_lora_targets(&[t]).is_ok())
        .collect();
    let lora = LoraConfig {
        rank: 4,
        alpha: 8.0,
        targets: targets.clone(),
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut random = |rows: usize, cols: usize| {
        let v: Vec<f32> = (0..rows * cols)
            .map(|_| rng.random_range(-0.2f32..0.2))
            .collect();
        burn::module::Param::from_tensor(Tensor::<2>::from_data(
            TensorData::new(v, [rows, cols]),
            &device,
        ))
    };
    let adapters = model
        .layers
        .iter()
        .map(|layer| {
            let mut set = BlockAdapters::default();
            for &t in &targets {
                let [inp, out] = layer.weight(t).val().dims();
                *set.slot_mut(t) = Some(Adapter {
                    a: random(inp, 4),
                    b: random(4, out),
                });
            }
            set
        })
        .collect();
    let model = model.with_adapters(lora, adapters);
    let adapted = dpo_loss_and_norm(&model, b, want);
    let adapter_dir = tempfile::tempdir().unwrap();
    load::save_adapters(&model, adapter_dir.path(), &dir.display().to_string()).unwrap();
    let rows_file = adapter_dir.path().join("rows.json");
    std::fs::write(&rows_file, want["rows"].to_string()).unwrap();
    let Some(python) =
        common::python::python_with("LoRA parity with PEFT", &["torch", "transformers", "peft"])
    else {
        return;
    };
    let run = std::process::Command::new(python)
        .arg(script())
        .arg("lora")
        .arg(dir)
        .arg(adapter_dir.path())
        .arg(&rows_file)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{case}: PEFT on poc's adapters:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let peft: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_step(case, "LoRA", adapted, expected(&peft));
}

#[test]
fn llama_with_llama3_rope_scaling() {
    parity("llama");
}

#[test]
fn llama_with_biases_gelu_and_a_tied_head() {
    parity("llama-bias-gelu");
}

#[test]
fn mistral_with_a_sliding_window() {
    parity("mistral");
}

#[test]
fn qwen2_with_qkv_biases_and_a_tied_head() {
    parity("qwen2");
}

#[test]
fn qwen2_with_sliding_layers() {
    parity("qwen2-sliding");
}

#[test]
fn qwen3_with_qk_norms() {
    parity("qwen3");
}

#[test]
fn gemma2_with_soft_caps_and_local_layers() {
    parity("gemma2");
}

#[test]
fn gemma3_text_with_local_rope_and_qk_norms() {
    parity("gemma3");
}

#[test]
fn phi3_with_fused_projections() {
    parity("phi3");
}

// ---------------------------------------------------------------------------------------------
// Refusals (no Python): a checkpoint poc writes, then edits.

/// A small config of `family` as transformers would write it.
fn config_of(model_type: &str, extra: Value) -> LlamaConfig {
    let mut v = json!({
        "model_type": model_type,
        "vocab_size": 40, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 8, "max_position_embeddings": 64,
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    LlamaConfig::from_json(v).unwrap_or_else(|e| panic!("{model_type}: {e}"))
}

/// `model` saved to a fresh directory.
fn saved(model: &Llama) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    load::save(model, dir.path()).unwrap();
    dir
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let path = dir.join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, v.to_string()).unwrap();
}

fn load_err(dir: &Path) -> String {
    match load::load(dir, &cpu()) {
        Ok(_) => panic!("loaded a checkpoint that should be refused"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_family_saves_and_loads_back_exactly() {
    for (family, extra) in [
        ("llama", json!({"attention_bias": true, "mlp_bias": true})),
        ("mistral", json!({"sliding_window": 3})),
        ("qwen2", json!({})),
        ("qwen3", json!({})),
        ("gemma2", json!({})),
        ("gemma3_text", json!({})),
        ("phi3", json!({})),
    ] {
        let model = Llama::random(&config_of(family, extra), 3, &cpu());
        let dir = saved(&model);
        let back = load::load(dir.path(), &cpu()).unwrap_or_else(|e| panic!("{family}: {e}"));
        assert_eq!(back.arch, model.arch, "{family}");
        let b = Batch {
            tokens: vec![vec![1, 5, 9, 3, 7, 2, 4, 8]],
            mask: vec![vec![true; 8]],
            completion: vec![(0..8).map(|j| j >= 3).collect()],
        };
        let want = to_f64(stats(&model, &b, Want::LOGPS).logps.unwrap());
        let got = to_f64(stats(&back, &b, Want::LOGPS).logps.unwrap());
        assert_eq!(want, got, "{family}");
    }
}

#[test]
fn unknown_model_types_are_refused_by_name() {
    let dir = saved(&Llama::random(&config_of("llama", json!({})), 0, &cpu()));
    for (model_type, says) in [
        ("gemma", "Gemma 1 is not implemented"),
        ("gemma3", "multimodal"),
        ("mixtral", "mixture-of-experts"),
        ("falcon", "model_type `falcon` is not implemented"),
    ] {
        edit_config(dir.path(), |c| c["model_type"] = model_type.into());
        let err = load_err(dir.path());
        assert!(err.contains(says) && err.contains("config.json"), "{err}");
    }
    edit_config(dir.path(), |c| {
        c.as_object_mut().unwrap().remove("model_type");
    });
    assert!(load_err(dir.path()).contains("no `model_type`"));
}

#[test]
fn settings_that_change_the_math_are_refused_by_name() {
    let dir = saved(&Llama::random(&config_of("llama", json!({})), 0, &cpu()));
    let cases: Vec<(Value, &str)> = vec![
        (json!({"hidden_act": "mish"}), "hidden activation `mish`"),
        (
            json!({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}),
            "rope_type `yarn`",
        ),
        (
            json!({"sliding_window": 16}),
            "`sliding_window` is not a Llama setting",
        ),
        (
            json!({"quantization_config": {"quant_method": "bitsandbytes"}}),
            "quantization_config",
        ),
        (json!({"some_new_knob": 3}), "`some_new_knob`"),
        (
            json!({"architectures": ["LlamaForTokenClassification"]}),
            "LlamaForTokenClassification",
        ),
    ];
    for (edit, says) in cases {
        edit_config(dir.path(), |c| {
            for (k, v) in edit.as_object().unwrap() {
                c[k] = v.clone();
            }
        });
        let err = load_err(dir.path());
        assert!(err.contains(says), "{edit}: {err}");
        // Restore.
        edit_config(dir.path(), |c| {
            for k in edit.as_object().unwrap().keys() {
                c.as_object_mut().unwrap().remove(k);
            }
        });
    }
    let phi = saved(&Llama::random(&config_of("phi3", json!({})), 0, &cpu()));
    edit_config(phi.path(), |c| c["partial_rotary_factor"] = 0.75.into());
    assert!(load_err(phi.path()).contains("partial_rotary_factor"));
    let phi_long = saved(&Llama::random(&config_of("phi3", json!({})), 0, &cpu()));
    edit_config(
        phi_long.path(),
        |c| {
            c["rope_scaling"] =
                json!({"rope_type": "longrope", "short_factor": [1.0], "long_factor": [1.0]})
        },
    );
    assert!(load_err(phi_long.path()).contains("rope_type `longrope`"));
}

#[test]
fn a_tensor_the_architecture_lacks_is_refused_by_name() {
    // A Qwen2 checkpoint (q/k/v biases) relabelled as a Llama without attention biases: the
    // biases would be dropped, so the load is refused and names one.
    let dir = saved(&Llama::random(&config_of("qwen2", json!({})), 0, &cpu()));
    edit_config(dir.path(), |c| {
        c["model_type"] = "llama".into();
        c["architectures"] = json!(["LlamaForCausalLM"]);
    });
    let err = load_err(dir.path());
    assert!(
        err.contains("model.layers.0.self_attn.")
            && err.contains(".bias")
            && err.contains("not part of a llama model"),
        "{err}"
    );
    // Qwen3's per-head norms under a Qwen2 label.
    let dir = saved(&Llama::random(&config_of("qwen3", json!({})), 0, &cpu()));
    edit_config(dir.path(), |c| {
        c["model_type"] = "llama".into();
        c["architectures"] = json!(["LlamaForCausalLM"]);
    });
    assert!(load_err(dir.path()).contains("k_norm"));
}

#[test]
fn missing_keys_take_the_family_defaults() {
    // transformers omits `tie_word_embeddings` from a Gemma config (it equals the base default,
    // true): such a checkpoint has no lm_head and must load as tied.
    let model = Llama::random(&config_of("gemma2", json!({})), 0, &cpu());
    assert!(model.lm_head.is_none());
    let dir = saved(&model);
    edit_config(dir.path(), |c| {
        c.as_object_mut().unwrap().remove("tie_word_embeddings");
    });
    let back = load::load(dir.path(), &cpu()).unwrap();
    assert!(back.config.tie_word_embeddings);
    assert_eq!(back.arch.attn_softcap, Some(50.0));
    assert_eq!(back.arch.final_softcap, Some(30.0));
    // Gemma 2 alternates local and global layers, local first.
    let windows: Vec<_> = back.arch.layers.iter().map(|l| l.window).collect();
    assert_eq!(windows, vec![Some(4096), None]);
    // Mistral's default window, and a null one.
    let m = config_of("mistral", json!({})).arch().unwrap();
    assert_eq!(m.layers[0].window, Some(4096));
    let m = config_of("mistral", json!({"sliding_window": null}))
        .arch()
        .unwrap();
    assert_eq!(m.layers[0].window, None);
}

#[test]
fn lora_on_a_fused_projection_is_refused() {
    use poc_runtime::model::Target;
    let arch = config_of("phi3", json!({})).arch().unwrap();
    let err = arch
        .check_lora_targets(&[Target::Q, Target::V])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("qkv_proj") && err.contains("`q_proj`"),
        "{err}"
    );
    assert!(arch.check_lora_targets(&[Target::O, Target::Down]).is_ok());
}
