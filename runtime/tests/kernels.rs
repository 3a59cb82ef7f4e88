//! The fused kernels against the compositions they replace: values and gradients of causal
//! attention (with and without padding masks, grouped-query heads, f32 and bf16) and of the
//! chunked log-prob head (log-probs, entropies, several chunks), on an autodiff CPU device.

use burn::tensor::{Bool, DType, Device, Int, Tensor, TensorData};
use poc_runtime::device::DeviceSpec;
use poc_runtime::kernels::{
    attention, composed_attention, composed_token_logps, token_collision, token_logps_in_chunks,
};
use rand::{Rng, SeedableRng};

mod common;

fn randn(dims: &[usize], seed: u64, scale: f32) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = dims.iter().product();
    (0..n)
        .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale)
        .collect()
}

fn tensor<const D: usize>(
    dims: [usize; D],
    seed: u64,
    scale: f32,
    device: &Device,
    dtype: DType,
) -> Tensor<D> {
    Tensor::<D>::from_data(TensorData::new(randn(&dims, seed, scale), dims), device).cast(dtype)
}

fn values(t: Tensor<4>) -> Vec<f32> {
    t.cast(DType::F32).into_data().try_to_vec::<f32>().unwrap()
}

/// The largest |a − b| over entries where `keep` holds.
fn max_diff(a: &[f32], b: &[f32], keep: impl Fn(usize) -> bool) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .map(|(_, (x, y))| (x - y).abs())
        .fold(0.0, f32::max)
}

/// `got` = `want` to `tol` relative to the largest |want| (at least 1).
fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs())).max(1.0);
    let diff = max_diff(got, want, |_| true);
    assert!(
        diff <= tol * scale,
        "{what} differ by {diff} (scale {scale})"
    );
}

/// One attention case: shapes, mask (rows of real tokens), dtype, tolerance.
struct Case {
    b: usize,
    heads: usize,
    kv_heads: usize,
    t: usize,
    d: usize,
    /// `[b][t]` real tokens; `None` for unmasked causal attention.
    mask: Option<Vec<Vec<bool>>>,
    dtype: DType,
    tol: f32,
}

/// `[b, 1, t, t]`: query i may attend to real key j ≤ i.
fn allowed(mask: &[Vec<bool>], device: &Device) -> Tensor<4, Bool> {
    let (b, t) = (mask.len(), mask[0].len());
    let data: Vec<bool> = mask
        .iter()
        .flat_map(|row| (0..t).flat_map(move |i| (0..t).map(move |j| row[j] && j <= i)))
        .collect();
    Tensor::from_data(TensorData::new(data, [b, 1, t, t]), device)
}

fn check(case: &Case) {
    let device = DeviceSpec::Cpu.device().autodiff();
    let Case {
        b,
        heads,
        kv_heads,
        t,
        d,
        ..
    } = *case;
    let scale = 1.0 / (d as f64).sqrt();
    let q0 = tensor([b, heads, t, d], 1, 1.5, &device, case.dtype);
    let k0 = tensor([b, kv_heads, t, d], 2, 1.5, &device, case.dtype);
    let v0 = tensor([b, kv_heads, t, d], 3, 1.0, &device, case.dtype);
    let upstream = tensor([b, heads, t, d], 4, 1.0, &device, DType::F32);
    let mask = case.mask.as_ref().map(|m| allowed(m, &device));
    // Only real query rows are compared (a padding row's output is meaningless).
    let real = |i: usize| {
        let (row, pos) = (i / (heads * t * d), (i / d) % t);
        case.mask.as_ref().is_none_or(|m| m[row][pos])
    };
    let run = |fused: bool| {
        let (q, k, v) = (
            q0.clone().require_grad(),
            k0.clone().require_grad(),
            v0.clone().require_grad(),
        );
        let f = if fused { attention } else { composed_attention };
        let out = f(q.clone(), k.clone(), v.clone(), mask.as_ref(), scale);
        // Gradients flow only from real rows.
        let keep: Vec<f32> = (0..b * heads * t * d)
            .map(|i| if real(i) { 1.0 } else { 0.0 })
            .collect();
        let keep = Tensor::<4>::from_data(TensorData::new(keep, [b, heads, t, d]), &device);
        let grads = (out.clone().cast(DType::F32) * upstream.clone() * keep)
            .sum()
            .backward();
        let g = |x: &Tensor<4>| values(x.grad(&grads).expect("a gradient reaches the input"));
        (values(out), g(&q), g(&k), g(&v))
    };
    let (fused, composed) = (run(true), run(false));
    let what = format!(
        "b={b} heads={heads} kv={kv_heads} t={t} d={d} masked={} {:?}",
        case.mask.is_some(),
        case.dtype
    );
    let out_diff = max_diff(&fused.0, &composed.0, real);
    assert!(out_diff <= case.tol, "{what}: outputs differ by {out_diff}");
    for (name, a, c) in [
        ("q", &fused.1, &composed.1),
        ("k", &fused.2, &composed.2),
        ("v", &fused.3, &composed.3),
    ] {
        assert_close(a, c, case.tol, &format!("{what}: d/d{name}"));
        assert!(
            a.iter().all(|x| x.is_finite()),
            "{what}: d/d{name} has a non-finite entry"
        );
    }
}

#[test]
fn fused_attention_equals_the_composition() {
    let right = vec![vec![true; 9], [vec![true; 6], vec![false; 3]].concat()];
    let left = vec![[vec![false; 4], vec![true; 5]].concat(), vec![true; 9]];
    for dtype in [DType::F32, DType::BF16] {
        let tol = if dtype == DType::F32 { 2e-5 } else { 3e-2 };
        for (heads, kv_heads) in [(4, 4), (4, 2), (6, 1)] {
            for mask in [None, Some(right.clone()), Some(left.clone())] {
                check(&Case {
                    b: 2,
                    heads,
                    kv_heads,
                    t: 9,
                    d: 16,
                    mask,
                    dtype,
                    tol,
                });
            }
        }
    }
}

/// A query with no key it may attend to (a left-padding position of a fully padded prefix)
/// gets a finite output (the mean of the values), never NaN, so nothing poisons later layers.
#[test]
fn fused_attention_is_finite_where_nothing_is_allowed() {
    let device = DeviceSpec::Cpu.device();
    let (b, h, t, d) = (1, 2, 4, 8);
    let q = tensor([b, h, t, d], 5, 1.0, &device, DType::F32);
    let k = tensor([b, h, t, d], 6, 1.0, &device, DType::F32);
    let v = tensor([b, h, t, d], 7, 1.0, &device, DType::F32);
    let mask = allowed(&[vec![false, false, true, true]], &device);
    let out = values(attention(q, k, v.clone(), Some(&mask), 0.35));
    assert!(out.iter().all(|x| x.is_finite()), "{out:?}");
    let mean: Vec<f32> = values(v.mean_dim(2).expand([b, h, t, d]));
    // Row 0 (position 0, nothing allowed) of each head is the mean of that head's values.
    for head in 0..h {
        for j in 0..d {
            let i = head * t * d + j;
            assert!(
                (out[i] - mean[i]).abs() < 1e-5,
                "head {head}: {} vs mean {}",
                out[i],
                mean[i]
            );
        }
    }
}

fn vec1(t: Tensor<1>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

fn vec2(t: Tensor<2>) -> Vec<f32> {
    t.cast(DType::F32).into_data().try_to_vec::<f32>().unwrap()
}

#[test]
fn chunked_head_equals_the_full_log_softmax() {
    let device = DeviceSpec::Cpu.device().autodiff();
    let (n, h, vocab) = (23, 16, 301);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let targets: Vec<i64> = (0..n).map(|_| rng.random_range(0..vocab as i64)).collect();
    let targets = Tensor::<1, Int>::from_data(TensorData::new(targets, [n]), &device);
    let up_tok = tensor([n], 10, 1.0, &device, DType::F32);
    let up_ent = tensor([n], 11, 1.0, &device, DType::F32);
    for dtype in [DType::F32, DType::BF16] {
        let tol = if dtype == DType::F32 { 1e-4 } else { 2e-2 };
        let hidden0 = tensor([n, h], 12, 2.0, &device, dtype);
        let head0 = tensor([h, vocab], 13, 1.0, &device, dtype);
        let run = |chunk: Option<usize>| {
            let (hidden, head) = (hidden0.clone().require_grad(), head0.clone().require_grad());
            let (tok, ent) = match chunk {
                Some(c) => token_logps_in_chunks(hidden.clone(), head.clone(), targets.clone(), c),
                None => composed_token_logps(hidden.clone(), head.clone(), targets.clone()),
            };
            let grads = (tok.clone() * up_tok.clone() + ent.clone() * up_ent.clone())
                .sum()
                .backward();
            let gh = vec2(hidden.grad(&grads).expect("gradient of the hidden states"));
            let gw = vec2(head.grad(&grads).expect("gradient of the head"));
            (vec1(tok), vec1(ent), gh, gw)
        };
        let full = run(None);
        // One chunk, several uneven ones, one position per chunk.
        for chunk in [n, 7, 1] {
            let got = run(Some(chunk));
            for (name, a, b) in [
                ("log-probs", &got.0, &full.0),
                ("entropies", &got.1, &full.1),
                ("d/d hidden", &got.2, &full.2),
                ("d/d head", &got.3, &full.3),
            ] {
                assert_close(a, b, tol, &format!("{dtype:?} chunk {chunk}: {name}"));
            }
        }
        // Entropies are those of real distributions: between 0 and log(vocab).
        assert!(
            full.1
                .iter()
                .all(|&e| e >= -1e-4 && e <= (vocab as f32).ln() + 1e-3)
        );
    }
}

/// `log Σ_v p(v)²` against the whole distribution computed in f64 on the host, for a
/// sharp and a flat distribution, and its bounds: ≤ 0, ≥ 2·log max p, = −log V when uniform.
#[test]
fn token_collision_is_the_log_sum_of_squared_probabilities() {
    let device = DeviceSpec::Cpu.device();
    let (b, n, h, vocab) = (2, 3, 8, 50);
    for scale in [0.1f32, 3.0] {
        let hidden = tensor([b, n, h], 21, scale, &device, DType::F32);
        let head = tensor([h, vocab], 22, 1.0, &device, DType::F32);
        let got = vec2(token_collision(hidden.clone(), head.clone(), None));
        let logits = vec2(hidden.reshape([b * n, h]).matmul(head));
        for (row, g) in logits.chunks(vocab).zip(&got) {
            let top = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
            let z: f64 = row.iter().map(|&x| (x as f64 - top).exp()).sum();
            let p: Vec<f64> = row.iter().map(|&x| (x as f64 - top).exp() / z).collect();
            let want = p.iter().map(|q| q * q).sum::<f64>().ln();
            let pmax = p.iter().cloned().fold(0.0, f64::max);
            assert!(
                (*g as f64 - want).abs() < 1e-4,
                "scale {scale}: {g} vs {want}"
            );
            assert!(want <= 0.0 && want >= 2.0 * pmax.ln() - 1e-12);
        }
    }
    // A zero head: every logit 0, the uniform distribution.
    let hidden = tensor([1, 2, h], 23, 1.0, &device, DType::F32);
    let head = Tensor::<2>::zeros([h, vocab], &device);
    for g in vec2(token_collision(hidden, head, None)) {
        assert!((g + (vocab as f32).ln()).abs() < 1e-5, "{g}");
    }
}

/// A frozen head (LoRA's case) gets no gradient, and the hidden states still do.
#[test]
fn chunked_head_skips_a_frozen_head() {
    let device = DeviceSpec::Cpu.device().autodiff();
    let (n, h, vocab) = (5, 8, 50);
    let hidden = tensor([n, h], 14, 1.0, &device, DType::F32).require_grad();
    let head = tensor([h, vocab], 15, 1.0, &device, DType::F32);
    let targets =
        Tensor::<1, Int>::from_data(TensorData::new(vec![1i64, 2, 3, 4, 5], [n]), &device);
    let (tok, _) = token_logps_in_chunks(hidden.clone(), head.clone(), targets, 2);
    let grads = tok.sum().backward();
    assert!(hidden.grad(&grads).is_some());
    assert!(head.grad(&grads).is_none());
}

/// A row's statistics do not depend on the batch it is computed in: to the bit beside other
/// rows of the same padded width, and up to f32 rounding at another width (libtorch's CPU
/// attention kernel blocks by length).
#[test]
fn a_rows_statistics_do_not_depend_on_its_batch() {
    use poc_runtime::model::Llama;
    use poc_runtime::observe::{self, Rows, Want};
    let device = DeviceSpec::Cpu.device();
    let model = Llama::random(&common::small_config(2), 4, &device);
    let row = |n: usize, seed: u32| -> Vec<u32> {
        (0..n as u32).map(|j| (j * 7 + seed) % 200 + 3).collect()
    };
    let stats = |rows: &[Vec<u32>], width: usize| {
        let tokens: Vec<Vec<u32>> = rows
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.resize(width, 0);
                r
            })
            .collect();
        let mask: Vec<Vec<bool>> = rows
            .iter()
            .map(|r| (0..width).map(|j| j < r.len()).collect())
            .collect();
        let completion: Vec<Vec<bool>> = rows
            .iter()
            .map(|r| (0..width).map(|j| (5..r.len()).contains(&j)).collect())
            .collect();
        let want = Want {
            entropy: true,
            ..Want::LOGPS
        };
        let s = observe::stats(
            &model,
            Rows {
                tokens: &tokens,
                mask: &mask,
                completion: &completion,
            },
            want,
            &device,
        );
        (vec1(s.logps.unwrap()), vec1(s.entropy.unwrap()))
    };
    let (a, b) = (row(30, 1), row(45, 2));
    // Beside other rows at the same padded width: the same numbers to the bit.
    let alone = stats(std::slice::from_ref(&a), 45);
    let with_b = stats(&[b.clone(), a.clone(), row(12, 3)], 45);
    assert_eq!(
        alone.0[0].to_bits(),
        with_b.0[1].to_bits(),
        "log-prob beside other rows"
    );
    assert_eq!(
        alone.1[0].to_bits(),
        with_b.1[1].to_bits(),
        "entropy beside other rows"
    );
    // Padded to another width, libtorch's CPU flash-attention kernel splits the sequence into
    // other blocks (its sums may round differently in the last bit, as on AMD EPYC with torch
    // 2.9): the same numbers up to f32 rounding.
    let narrow = stats(std::slice::from_ref(&a), 30);
    let wide = stats(std::slice::from_ref(&a), 64);
    for (what, x, y) in [
        ("log-prob", narrow.0[0], wide.0[0]),
        ("entropy", narrow.1[0], wide.1[0]),
        ("log-prob", narrow.0[0], alone.0[0]),
    ] {
        assert!(
            (x - y).abs() <= 1e-6 * x.abs().max(1.0),
            "{what} padded wider: {x} vs {y}"
        );
    }
}
