//! Sampling with a KV cache on small random Llamas (multi-head, grouped-query, Llama-3.1 rope
//! scaling with an untied head, LoRA, bf16 compute): the incremental forward gives
//! `Llama::forward`'s logits; greedy decoding with the cache is greedy decoding that recomputes
//! the whole forward each step; a batch decodes as its rows alone; top-p → 0 is greedy; seeds
//! are deterministic; EOS and the context length stop a row; bad input is an error.

use burn::module::{Module, Param};
use burn::tensor::{Int, Tensor, TensorData};
use poc_runtime::lower::to_f64;
use poc_runtime::model::generate::{
    GenerateError, GenerateOptions, KvCache, forward_step, generate, sample,
};
use poc_runtime::model::{Compute, Llama, LlamaConfig, LoraConfig, Target};
use rand::SeedableRng;

mod common;
use common::cpu;

/// Multi-head attention, tied head.
fn mha() -> LlamaConfig {
    common::small_config(4)
}

/// Grouped-query attention (2 query heads per key/value head).
fn gqa() -> LlamaConfig {
    let mut c = mha();
    c.num_key_value_heads = Some(2);
    c
}

/// Llama-3.1 rope scaling (θ = 500000; with head_dim 8 and an original context of 64 the four
/// frequencies fall in every band: kept, smoothed, scaled), 4:1 GQA, untied output head.
fn llama31() -> LlamaConfig {
    let mut c = mha();
    c.num_key_value_heads = Some(1);
    c.rope_theta = Some(500000.0);
    c.rope_scaling = Some(serde_json::json!({"rope_type": "llama3", "factor": 8.0,
        "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}));
    c.tie_word_embeddings = false;
    c.validate().unwrap();
    c
}

fn configs() -> Vec<(&'static str, LlamaConfig)> {
    vec![("mha", mha()), ("gqa", gqa()), ("llama3.1", llama31())]
}

fn ids(rows: &[Vec<u32>]) -> Tensor<2, Int> {
    let t = rows[0].len();
    let flat: Vec<i64> = rows.iter().flatten().map(|&x| i64::from(x)).collect();
    Tensor::<2, Int>::from_data(TensorData::new(flat, [rows.len(), t]), &cpu())
}

/// `[row][position][vocab]` of a `[b, t, v]` tensor.
fn rows_of(logits: Tensor<3>) -> Vec<Vec<Vec<f64>>> {
    let [b, t, v] = logits.dims();
    let flat = to_f64(logits.reshape([b * t * v]));
    (0..b)
        .map(|i| {
            (0..t)
                .map(|j| flat[(i * t + j) * v..(i * t + j + 1) * v].to_vec())
                .collect()
        })
        .collect()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Two right-padded rows (lengths 9 and 6) and their masks.
fn right_padded() -> (Vec<Vec<u32>>, Vec<Vec<bool>>, [usize; 2]) {
    let tokens = vec![
        vec![256, 72, 101, 108, 108, 111, 44, 32, 119],
        vec![256, 5, 200, 17, 33, 90, 261, 261, 261],
    ];
    let lens = [9, 6];
    let mask = lens
        .iter()
        .map(|&n| (0..9).map(|j| j < n).collect())
        .collect();
    (tokens, mask, lens)
}

/// Feeds the batch to `forward_step` in pieces (`cuts` are the column boundaries) and checks
/// every real position's logits against one `forward` over the whole.
fn assert_incremental_matches_forward(model: &Llama, cuts: &[usize], tol: f64, what: &str) {
    let (tokens, mask, lens) = right_padded();
    let full = rows_of(model.forward(ids(&tokens), &mask));
    let mut cache = KvCache::new(model, tokens.len());
    let mut pieces: Vec<Vec<Vec<Vec<f64>>>> = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain([&tokens[0].len()]) {
        let piece: Vec<Vec<u32>> = tokens.iter().map(|r| r[start..end].to_vec()).collect();
        let piece_mask: Vec<Vec<bool>> = mask.iter().map(|r| r[start..end].to_vec()).collect();
        pieces.push(rows_of(forward_step(
            model,
            ids(&piece),
            &piece_mask,
            &mut cache,
        )));
        start = end;
    }
    assert_eq!(cache.len(), tokens[0].len());
    for (row, &n) in lens.iter().enumerate() {
        let stepped: Vec<Vec<f64>> = pieces.iter().flat_map(|p| p[row].clone()).collect();
        for pos in 0..n {
            let d = max_diff(&stepped[pos], &full[row][pos]);
            assert!(
                d < tol,
                "{what}: row {row} position {pos}: incremental logits differ from forward by {d}"
            );
        }
    }
}

#[test]
fn the_incremental_forward_gives_forwards_logits() {
    for (name, config) in configs() {
        let model = Llama::random(&config, 3, &cpu());
        // The whole at once, a prefill then single tokens, and one token at a time.
        assert_incremental_matches_forward(&model, &[], 1e-5, name);
        assert_incremental_matches_forward(&model, &[4, 5, 6, 7, 8], 1e-5, name);
        assert_incremental_matches_forward(&model, &[1, 2, 3, 4, 5, 6, 7, 8], 1e-5, name);
    }
}

/// Moves every LoRA `B` off zero, deterministically, so the adapters change the function.
fn perturb_adapters(model: Llama) -> Llama {
    struct Bump(f32);
    impl burn::module::ModuleMapper for Bump {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, t, mapper) = p.consume();
            // Only the zero-initialized B matrices are all zeros.
            let t = if t.clone().abs().max().into_scalar::<f32>() == 0.0 {
                self.0 += 0.01;
                t.ones_like() * self.0
            } else {
                t
            };
            Param::from_mapped_value(id, t, mapper)
        }
    }
    model.map(&mut Bump(0.0))
}

#[test]
fn the_incremental_forward_uses_lora_adapters_and_the_compute_dtype() {
    let lora = LoraConfig {
        rank: 4,
        alpha: 8.0,
        targets: Target::ALL.to_vec(),
    };
    let base = Llama::random(&gqa(), 3, &cpu());
    let adapted = perturb_adapters(Llama::random(&gqa(), 3, &cpu()).with_lora(lora, 1));
    let (tokens, mask, _) = right_padded();
    let differ = max_diff(
        &to_f64(base.forward(ids(&tokens), &mask).reshape([-1])),
        &to_f64(adapted.forward(ids(&tokens), &mask).reshape([-1])),
    );
    assert!(differ > 1e-3, "the adapters change the model ({differ})");
    assert_incremental_matches_forward(&adapted, &[4, 5, 6, 7, 8], 1e-5, "lora");
    let mut bf16 = Llama::random(&gqa(), 3, &cpu());
    bf16.compute = Compute::Bf16;
    assert_incremental_matches_forward(&bf16, &[4, 5, 6, 7, 8], 2e-2, "bf16");
}

#[test]
fn left_padding_computes_what_each_row_computes_alone() {
    for (name, config) in configs() {
        let model = Llama::random(&config, 5, &cpu());
        let rows = [vec![256u32, 10, 20, 30, 40, 50, 60], vec![256, 99, 98]];
        let width = 7;
        let padded: Vec<Vec<u32>> = rows
            .iter()
            .map(|r| {
                let mut p = vec![0u32; width - r.len()];
                p.extend(r);
                p
            })
            .collect();
        let mask: Vec<Vec<bool>> = rows
            .iter()
            .map(|r| (0..width).map(|j| j >= width - r.len()).collect())
            .collect();
        let mut cache = KvCache::new(&model, 2);
        let batched = rows_of(forward_step(&model, ids(&padded), &mask, &mut cache));
        for (i, r) in rows.iter().enumerate() {
            let alone =
                rows_of(model.forward(ids(std::slice::from_ref(r)), &[vec![true; r.len()]]));
            for (pos, expected) in alone[0].iter().enumerate() {
                let got = &batched[i][width - r.len() + pos];
                let d = max_diff(got, expected);
                assert!(d < 1e-5, "{name}: row {i} position {pos} differs by {d}");
            }
        }
    }
}

fn argmax(v: &[f64]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Greedy decoding the slow way: the whole forward over prompt + completion at every step.
fn greedy_without_cache(model: &Llama, prompt: &[u32], n: usize, eos: &[u32]) -> Vec<u32> {
    let mut seq = prompt.to_vec();
    let mut out = Vec::new();
    while out.len() < n {
        let logits =
            rows_of(model.forward(ids(std::slice::from_ref(&seq)), &[vec![true; seq.len()]]));
        let next = argmax(&logits[0][seq.len() - 1]);
        out.push(next);
        seq.push(next);
        if eos.contains(&next) {
            break;
        }
    }
    out
}

fn prompts() -> Vec<Vec<u32>> {
    vec![
        vec![256, 72, 105, 33],
        vec![256, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        vec![256],
        vec![256, 200, 150, 100, 50, 25],
        vec![256, 42, 42],
    ]
}

fn greedy(max_new_tokens: usize, batch_size: usize) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens,
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
        eos: Vec::new(),
        pad: 261,
        batch_size,
    }
}

#[test]
fn greedy_with_the_cache_is_greedy_without_it_and_a_batch_is_its_rows() {
    for (name, config) in configs() {
        let model = Llama::random(&config, 11, &cpu());
        let prompts = prompts();
        let expected: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| greedy_without_cache(&model, p, 12, &[]))
            .collect();
        for batch_size in [1, 2, 5] {
            let got = generate(&model, &prompts, &greedy(12, batch_size)).unwrap();
            assert_eq!(got, expected, "{name}, batch size {batch_size}");
        }
    }
}

#[test]
fn top_p_near_zero_is_greedy() {
    let model = Llama::random(&gqa(), 11, &cpu());
    let expected = generate(&model, &prompts(), &greedy(10, 5)).unwrap();
    for top_p in [0.0, 1e-9] {
        let opts = GenerateOptions {
            temperature: 1.0,
            top_p,
            seed: 9,
            ..greedy(10, 5)
        };
        assert_eq!(generate(&model, &prompts(), &opts).unwrap(), expected);
    }
}

#[test]
fn the_same_seed_gives_the_same_samples_in_any_batch() {
    let model = Llama::random(&gqa(), 11, &cpu());
    let opts = |seed, top_p, batch_size| GenerateOptions {
        temperature: 1.0,
        top_p,
        seed,
        ..greedy(16, batch_size)
    };
    let a = generate(&model, &prompts(), &opts(1, 0.95, 5)).unwrap();
    assert_eq!(a, generate(&model, &prompts(), &opts(1, 0.95, 5)).unwrap());
    let b = generate(&model, &prompts(), &opts(2, 0.95, 5)).unwrap();
    assert_ne!(a, b, "another seed draws other samples");
    // The random model's distribution is nearly flat: sampling is far from greedy.
    assert_ne!(a, generate(&model, &prompts(), &greedy(16, 5)).unwrap());
    // Each prompt has its own random stream: the batch it shares does not matter. (Without a
    // nucleus cut, whose membership near-ties of this flat distribution could flip by rounding.)
    let full = generate(&model, &prompts(), &opts(1, 1.0, 5)).unwrap();
    for batch_size in [1, 2] {
        assert_eq!(
            full,
            generate(&model, &prompts(), &opts(1, 1.0, batch_size)).unwrap()
        );
    }
}

#[test]
fn a_tokens_position_counts_the_real_tokens_before_it() {
    let model = Llama::random(&gqa(), 11, &cpu());
    let mut cache = KvCache::new(&model, 2);
    // Row 0 is left-padded by two columns, row 1 has a padding column in the middle.
    let mask = vec![
        vec![false, false, true, true],
        vec![true, true, false, true],
    ];
    assert_eq!(cache.positions(&mask), [[0, 0, 0, 1], [0, 1, 2, 2]]);
    forward_step(
        &model,
        ids(&[vec![0, 0, 256, 5], vec![256, 5, 0, 6]]),
        &mask,
        &mut cache,
    );
    assert_eq!(cache.len(), 4);
    assert_eq!(cache.positions(&[vec![true], vec![true]]), [[2], [3]]);
    cache.retain(&[1]);
    assert_eq!((cache.batch(), cache.len()), (1, 4));
    assert_eq!(cache.positions(&[vec![true, true]]), [[3, 4]]);
}

#[test]
fn eos_stops_a_row_and_the_others_go_on() {
    let model = Llama::random(&gqa(), 11, &cpu());
    let prompts = prompts();
    let free = generate(&model, &prompts, &greedy(12, 5)).unwrap();
    // Stop at the third token row 0 would generate; the other rows stop there too if they
    // produce it, else they run to the limit.
    let stop = free[0][2];
    let opts = GenerateOptions {
        eos: vec![stop],
        ..greedy(12, 5)
    };
    let got = generate(&model, &prompts, &opts).unwrap();
    for (row, (g, f)) in got.iter().zip(&free).enumerate() {
        let expected = match f.iter().position(|&t| t == stop) {
            Some(k) => &f[..=k],
            None => &f[..],
        };
        assert_eq!(g.as_slice(), expected, "row {row}");
        assert_eq!(g, &greedy_without_cache(&model, &prompts[row], 12, &[stop]));
    }
    assert!(got[0].len() <= 3 && got[0].last() == Some(&stop));
    assert!(
        got.iter().any(|g| g.len() == 12),
        "some row runs to the limit"
    );
}

#[test]
fn the_context_length_caps_a_completion() {
    let mut config = gqa();
    config.max_position_embeddings = 8;
    let model = Llama::random(&config, 11, &cpu());
    let got = generate(
        &model,
        &[vec![256, 1, 2, 3, 4, 5], vec![256]],
        &greedy(10, 2),
    )
    .unwrap();
    assert_eq!(got[0].len(), 2);
    assert_eq!(got[1].len(), 7);
    assert_eq!(
        generate(&model, &[vec![256]], &greedy(0, 1)).unwrap(),
        vec![Vec::<u32>::new()]
    );
}

#[test]
fn bad_prompts_and_options_are_errors() {
    let model = Llama::random(&gqa(), 11, &cpu());
    let bad_prompt = |p: Vec<u32>| generate(&model, &[vec![256, 1], p], &greedy(4, 2));
    for p in [vec![], vec![256, 100_000], vec![1; 600]] {
        match bad_prompt(p) {
            Err(GenerateError::BadPrompt { index: 1, .. }) => {}
            other => panic!("expected a bad prompt 1, got {other:?}"),
        }
    }
    let bad_opts = [
        GenerateOptions {
            temperature: -1.0,
            ..greedy(4, 1)
        },
        GenerateOptions {
            temperature: f64::NAN,
            ..greedy(4, 1)
        },
        GenerateOptions {
            top_p: 1.5,
            ..greedy(4, 1)
        },
        GenerateOptions {
            batch_size: 0,
            ..greedy(4, 1)
        },
        GenerateOptions {
            eos: vec![70_000],
            ..greedy(4, 1)
        },
    ];
    for opts in bad_opts {
        let e = generate(&model, &[vec![256]], &opts);
        assert!(
            matches!(e, Err(GenerateError::BadOptions(_))),
            "{opts:?}: {e:?}"
        );
    }
}

#[test]
fn sampling_keeps_the_nucleus() {
    let logits = [
        0.5f32.ln(),
        0.3f32.ln(),
        0.2f32.ln(),
        f32::NAN,
        f32::NEG_INFINITY,
    ];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut counts = [0usize; 5];
    for _ in 0..4000 {
        counts[sample(&logits, 1.0, 0.7, &mut rng) as usize] += 1;
    }
    // 0.5 < 0.7 ≤ 0.8: the nucleus is {0, 1}, renormalized to 5:3.
    assert_eq!(counts[2] + counts[3] + counts[4], 0, "{counts:?}");
    let share = counts[0] as f64 / 4000.0;
    assert!((share - 0.625).abs() < 0.03, "{counts:?}");
    let mut counts = [0usize; 5];
    for _ in 0..4000 {
        counts[sample(&logits, 1.0, 1.0, &mut rng) as usize] += 1;
    }
    assert!(counts[2] > 600 && counts[3] + counts[4] == 0, "{counts:?}");
    // Greedy: the largest logit, the lowest id on ties.
    assert_eq!(sample(&[1.0, 3.0, 3.0, f32::NAN], 0.0, 1.0, &mut rng), 1);
    // A high temperature flattens, a low one sharpens.
    let hot = (0..2000)
        .filter(|_| sample(&logits, 100.0, 1.0, &mut rng) == 2)
        .count();
    let cold = (0..2000)
        .filter(|_| sample(&logits, 0.05, 1.0, &mut rng) == 0)
        .count();
    assert!(hot > 550 && cold > 1990, "hot {hot}, cold {cold}");
}
