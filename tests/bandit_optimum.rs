//! `poc run OBJECTIVE` reaches the objective's optimum on a bandit, an optimum this test
//! computes on its own.
//!
//! The bandit: one prompt, four single-letter answers, and 60 preference pairs over them:
//! each unordered pair of answers 10 times, labelled in Bradley–Terry proportions (both labels
//! occur for every pair, so no objective here is pushed to an infinite margin). poc trains the
//! committed 2-layer Llama fixture on all pairs at once (full batch) until it converges; the
//! test then reads the answers' log-probs under the trained checkpoint (`poc logps`) and compares
//! them with the minimiser of the objective's total loss, which it finds by Newton's method in
//! f64 from the loss formula written out below, independently of the `.po` file.
//!
//! What is optimised. poc appends EOS to a plain-text completion, so the objective reads
//! ℓ_i = log π(a_i | x) + log π(EOS | x, a_i) for answer a_i, and both terms are trained: the
//! first is the answer's share of the next-token distribution at the prompt (which also covers
//! the vocabulary's other tokens), the second a distribution of its own at each answer's
//! context. Both are < 0, and any ℓ with Σ_i exp ℓ_i < 1 is reachable (give answer i the mass
//! exp(ℓ_i + δ) and its EOS the probability exp(−δ), for a small δ > 0). So the reachable
//! completion log-probs are the open set Ω = {ℓ ∈ R^K : Σ_i exp ℓ_i < 1}, the test minimises
//! the loss over ℓ itself, and how the policy splits ℓ_i between the answer and its EOS (which
//! no objective sees) is not compared. Length-normalised objectives see 2 tokens per
//! completion.
//!
//! Two kinds of objective. Most read ℓ only through differences ℓ_i − ℓ_j (DPO and its
//! relatives, IPO, SimPO, MIPO, MallowsPO): shifting every ℓ_i by the same c leaves the loss
//! unchanged, the optimum is the part of a line ℓ* + c·1 inside Ω, and what is identified is
//! the distribution over the answers, log softmax(ℓ): the answers' log-probs up to one free
//! normaliser. Those are compared centred (ℓ_i − mean ℓ). The others (SPPO, NCA, BCO) read
//! each ℓ_i − ℓ_i^ref on its own; their optimum is a point, which the test requires inside Ω
//! (else it is only approached as logits diverge) and compares as it is. The test tells the
//! kinds apart by shifting the loss, and checks that the optimum is a strict minimum on the
//! identified coordinates (a positive definite Hessian) that Newton's method reaches from
//! several starts. Most of these losses are convex in ℓ, so that minimum is the only one; EXO's
//! and MallowsPO-φ's are not (each pair's term is unimodal in its margin, not convex), and for
//! them the several starts are the evidence.
//!
//! Left out, and why:
//! - hinge: piecewise linear. Each unordered pair's loss is minimal exactly at the kink
//!   β·Δ = 1 and the four answers cannot put all six pairs there, so the minimiser is a vertex
//!   (or a face) of a linear program: not a stationary point that a gradient method converges
//!   to, and not always unique.
//! - apo_zero: per answer the loss is w_i + (l_i − w_i)·σ(β·ρ_i), monotone in ρ_i: answers
//!   chosen more often than rejected are pushed to probability 1, the others to −∞.
//! - apo_down: its second term depends on each margin through a monotone
//!   n_ij + (n_ji − n_ij)·σ(β·Δ_ij), which pushes margins to ±∞, and its first term pushes every
//!   log-prob to −∞: no finite optimum.
//! - discopop: not convex; on this data every unordered pair's loss has a second, spurious local
//!   minimum at a small negative margin (β·Δ ≈ −0.2, where the gate σ(β·Δ/τ) switches), and
//!   the gradient at Δ = 0 points towards it, so which minimum training ends in is not
//!   determined by the objective alone.
//! - orpo: its odds-ratio term is a Bradley–Terry loss in the log-odds u_i = ℓ̄_i − log(1 −
//!   exp ℓ̄_i) of the length-averaged log-probs, whose minimisers form a curve (u* + c·1) that is
//!   not a shift of ℓ; its NLL term then pushes along that curve towards the boundary of Ω.
//! - sft (not pairwise), and the compositions with an SFT term, rpo and dpo_bco_sft: the NLL of
//!   the chosen answers puts all mass on the answers and their EOS, on the boundary of Ω.
//! - wpo: its pair weights depend on the policy without gradient, so training ends at a
//!   stationary point of a re-weighted DPO whose weights move with the policy, not at the
//!   minimum of one fixed function the test could minimise.
//! - aot, aot_pair: the loss pairs the batch's order statistics; with ten identical copies of
//!   each pair in the batch the sorted margins tie everywhere, the loss is only piecewise smooth
//!   in ℓ, and its minimiser is not the stationary point Newton's method finds.
//! - fdpo_js, fdpo_alpha: the divergence's f'(u) is bounded on one side (JS: log(2u/(1+u)) < log 2;
//!   α-divergence with TRL's a < 1: (u^(a−1) − 1)/(a − 1) < 1/(1 − a)), so the implicit reward
//!   margin saturates and the infimum is approached along directions where a log-ratio grows
//!   without bound: Newton's method finds no strict minimum, or different points from different
//!   starts.
//! - ppo (on-policy), bt_reward and mmpo_reward (they train a reward model, not log-probs).
//!
//! Adding an objective is one entry of [`CASES`] and no other code: its name, the parameters
//! to `--set`, and its per-pair loss written from its paper.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The prompt every pair shares.
const PROMPT: &str = "Pick one:\n";
/// The answers: one token each (checked).
const ANSWERS: [&str; 4] = ["a", "b", "c", "d"];
/// Bradley–Terry strengths of the answers; also the rows' `score_chosen`/`score_rejected`.
const STRENGTHS: [f64; 4] = [0.8, 0.3, -0.2, -0.9];
/// Pairs per unordered pair of answers.
const PER_PAIR: usize = 10;

/// Full-batch AdamW steps of each run. With [`LR`] and poc's default schedule (10% warm-up,
/// cosine decay to zero) the worst case below ends 5.5e-3 nats from its optimum, a quarter of
/// [`TOL`] (at 300 steps every case is within 1e-4: the runs do converge to it).
const STEPS: usize = 100;
/// The peak learning rate (2e-2 and 1e-1 leave twice the error at 100 steps).
const LR: &str = "3e-2";

/// How far a trained log-prob (centred, for the shift-invariant objectives) may lie from the
/// optimum, in nats. The independent optimum is exact to ~1e-8 (Newton to a gradient of
/// 1e-9 on a loss of order 1); poc's log-probs carry f32 rounding (~1e-6 at ℓ ≈ −10). What is
/// left is the optimizer's: a finite number of AdamW steps in the network's weights, not in ℓ,
/// on a learning rate that decays to zero. 2e-2 nats is a 2% error in an answer's probability:
/// four times what the runs leave (see [`STEPS`]), and well below what a wrong formula moves
/// the optimum by. Measured by breaking one loss here at a time: DPO with β 10% too large
/// puts the optimum 0.17 nats away, IPO without its length normalisation 0.40, NCA with the
/// rejected term's ½ dropped 0.57 (and each also fails the loss checks).
const TOL: f64 = 2e-2;

/// One row's inputs, as the objectives declare them: the policy's and the reference's
/// summed completion log-probs, token counts, the reference's mean entropies, the vocabulary
/// and the rows' scores.
#[derive(Debug, Clone, Copy)]
struct Pair {
    /// log π(chosen), log π(rejected).
    w: f64,
    l: f64,
    /// The same under the reference (the starting model).
    ref_w: f64,
    ref_l: f64,
    /// Completion tokens.
    len_w: f64,
    len_l: f64,
    /// The reference's mean full-vocabulary entropy over each completion's tokens (nats).
    ent_w: f64,
    ent_l: f64,
    /// The vocabulary size.
    vocab: f64,
    /// `score_chosen`, `score_rejected`.
    score_w: f64,
    score_l: f64,
}

impl Pair {
    /// log π/π_ref of the chosen and of the rejected completion.
    fn rho_w(&self) -> f64 {
        self.w - self.ref_w
    }
    fn rho_l(&self) -> f64 {
        self.l - self.ref_l
    }
    /// The log-ratio margin Δ = ρ_w − ρ_l.
    fn margin(&self) -> f64 {
        self.rho_w() - self.rho_l()
    }
    /// The length-averaged log-probs' margin (reference-free).
    fn avg_margin(&self) -> f64 {
        self.w / self.len_w - self.l / self.len_l
    }
    /// MallowsPO's dispersion weight −φ*·log(H̄ / log V), H̄ the pair's mean reference entropy.
    fn mallows_nld(&self, phi_star: f64) -> f64 {
        -phi_star * ((self.ent_w + self.ent_l) / 2.0 / self.vocab.ln()).ln()
    }
}

/// The parameters a case sets, by name (`p["beta"]`).
struct Params(&'static [(&'static str, f64)]);

impl std::ops::Index<&str> for Params {
    type Output = f64;
    fn index(&self, name: &str) -> &f64 {
        &self
            .0
            .iter()
            .find(|(k, _)| *k == name)
            .unwrap_or_else(|| panic!("the case sets no `{name}`"))
            .1
    }
}

/// One objective to check: the shipped objective's name, the parameters given to `--set`
/// (every parameter its loss below reads), and its per-pair loss.
struct Case {
    objective: &'static str,
    set: &'static [(&'static str, f64)],
    loss: fn(&Pair, &Params) -> f64,
}

fn log_sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        -(-x).exp().ln_1p()
    } else {
        x - x.exp().ln_1p()
    }
}

fn sigmoid(x: f64) -> f64 {
    log_sigmoid(x).exp()
}

fn softplus(x: f64) -> f64 {
    -log_sigmoid(-x)
}

/// Cross-entropy of a label that is 1 with probability `p` against the prediction σ(z).
fn bce(p: f64, z: f64) -> f64 {
    -p * log_sigmoid(z) - (1.0 - p) * log_sigmoid(-z)
}

/// KL(Bernoulli(p) ‖ Bernoulli(q)).
fn kl_bernoulli(p: f64, q: f64) -> f64 {
    p * (p / q).ln() + (1.0 - p) * ((1.0 - p) / (1.0 - q)).ln()
}

/// The Mallows-φ model's probability g(s) that of two items the one `s ≥ 0` places higher is
/// preferred: g(d) = (d+1)/(1−φ^(d+1)) − d/(1−φ^d) with φ = e^(−a) (d/(1−φ^d) → 1/a at d = 0),
/// extended by g(s) = 1 − g(−s) to s < 0.
fn mallows_phi_g(s: f64, a: f64) -> f64 {
    let h = |t: f64| {
        if t == 0.0 {
            1.0 / a
        } else {
            t / -(-a * t).exp_m1()
        }
    };
    if s >= 0.0 {
        h(s + 1.0) - h(s)
    } else {
        1.0 - (h(-s + 1.0) - h(-s))
    }
}

/// The objectives, each with its loss from its paper (the formula, not the `.po` text).
const CASES: &[Case] = &[
    // DPO (Rafailov et al. 2023, eq. 7): −log σ(β·Δ).
    Case {
        objective: "dpo",
        set: &[("beta", 0.5)],
        loss: |x, p| -log_sigmoid(p["beta"] * x.margin()),
    },
    // cDPO (Mitchell 2023): the DPO loss against labels flipped with probability ε.
    Case {
        objective: "dpo",
        set: &[("beta", 0.5), ("label_smoothing", 0.1)],
        loss: |x, p| bce(1.0 - p["label_smoothing"], p["beta"] * x.margin()),
    },
    // rDPO (Chowdhury et al. 2024): the unbiased loss [(1−ε)·ℓ(Δ) − ε·ℓ(−Δ)]/(1−2ε),
    // ℓ(Δ) = −log σ(β·Δ).
    Case {
        objective: "robust",
        set: &[("beta", 0.5), ("label_smoothing", 0.1)],
        loss: |x, p| {
            let (e, z) = (p["label_smoothing"], p["beta"] * x.margin());
            ((1.0 - e) * -log_sigmoid(z) - e * -log_sigmoid(-z)) / (1.0 - 2.0 * e)
        },
    },
    // IPO (Azar et al. 2023; per-token averages as in TRL): (Δ̄ − 1/(2β))².
    Case {
        objective: "ipo",
        set: &[("beta", 0.5)],
        loss: |x, p| (x.rho_w() / x.len_w - x.rho_l() / x.len_l - 1.0 / (2.0 * p["beta"])).powi(2),
    },
    // SPPO (Wu et al. 2024): each log-ratio regressed onto η·(P − ½), η = 1/β, with hard
    // labels P = 1 (chosen) and P = 0 (rejected).
    Case {
        objective: "sppo_hard",
        set: &[("beta", 0.5)],
        loss: |x, p| {
            let eta = 1.0 / p["beta"];
            (x.rho_w() - eta / 2.0).powi(2) + (x.rho_l() + eta / 2.0).powi(2)
        },
    },
    // EXO (Ji et al. 2024, eq. 16, pairwise): KL of the policy's pair distribution σ(βΔ)
    // from the smoothed label 1 − ε.
    Case {
        objective: "exo_pair",
        set: &[("beta", 0.5), ("label_smoothing", 0.1)],
        loss: |x, p| kl_bernoulli(sigmoid(p["beta"] * x.margin()), 1.0 - p["label_smoothing"]),
    },
    // NCA (Chen et al. 2024, pairwise): each completion's own reward classified.
    Case {
        objective: "nca_pair",
        set: &[("beta", 1.0)],
        loss: |x, p| {
            let (rw, rl) = (p["beta"] * x.rho_w(), p["beta"] * x.rho_l());
            -log_sigmoid(rw) - 0.5 * (log_sigmoid(-rw) + log_sigmoid(-rl))
        },
    },
    // BCO (Jung et al. 2024, pairwise, no reward shift): chosen → 1, rejected → 0.
    Case {
        objective: "bco_pair",
        set: &[("beta", 1.0)],
        loss: |x, p| bce(1.0, p["beta"] * x.rho_w()) + bce(0.0, p["beta"] * x.rho_l()),
    },
    // SimPO (Meng et al. 2024): −log σ(β·(ℓ̄_w − ℓ̄_l) − γ), reference-free.
    Case {
        objective: "simpo",
        set: &[("beta", 2.0), ("gamma", 1.0)],
        loss: |x, p| -log_sigmoid(p["beta"] * x.avg_margin() - p["gamma"]),
    },
    // MIPO (Jang 2024): −log σ(β·(θ − softplus(K))), θ and K the policy's and the
    // reference's length-averaged margins.
    Case {
        objective: "mipo",
        set: &[("beta", 5.0)],
        loss: |x, p| {
            let k = x.ref_w / x.len_w - x.ref_l / x.len_l;
            -log_sigmoid(p["beta"] * (x.avg_margin() - softplus(k)))
        },
    },
    // MMPO (Kim et al. 2024): DPO against the soft label σ(γ·(s_w − s_l)).
    Case {
        objective: "mmpo",
        set: &[("beta", 0.5), ("gamma", 1.0)],
        loss: |x, p| {
            bce(
                sigmoid(p["gamma"] * (x.score_w - x.score_l)),
                p["beta"] * x.margin(),
            )
        },
    },
    // MallowsPO's dispersion weight nld is ≈ 0.13·φ* here (the fixture's entropies are ~0.88 of
    // log V), so φ* = 3 rather than the default 0.29 keeps its optimal margins a few nats wide.
    // The weight differs by pair (0.38–0.41), which a wrongly read entropy would show.
    // MallowsPO-θ (Chen et al. 2024): cDPO with the margin weighted by the dispersion.
    Case {
        objective: "mallows_theta",
        set: &[("beta", 0.5), ("label_smoothing", 0.1), ("phi_star", 3.0)],
        loss: |x, p| {
            let z = p["beta"] * x.mallows_nld(p["phi_star"]) * x.margin();
            bce(1.0 - p["label_smoothing"], z)
        },
    },
    // MallowsPO-θ on SimPO's reference-free length-averaged margin.
    Case {
        objective: "mallows_theta_simpo",
        set: &[
            ("beta", 2.0),
            ("label_smoothing", 0.05),
            ("phi_star", 3.0),
            ("home_advantage", 0.2),
        ],
        loss: |x, p| {
            let m = x.avg_margin() - p["home_advantage"];
            bce(
                1.0 - p["label_smoothing"],
                p["beta"] * x.mallows_nld(p["phi_star"]) * m,
            )
        },
    },
    // MallowsPO-φ (Chen et al. 2024, Mallows-φ model): −log g_φ(β·Δ), φ = exp(−nld).
    Case {
        objective: "mallows_phi",
        set: &[("beta", 2.0), ("phi_star", 3.0)],
        loss: |x, p| {
            let a = x.mallows_nld(p["phi_star"]);
            -mallows_phi_g(p["beta"] * x.margin(), a).ln()
        },
    },
    // Length-normalised DPO (TRL's sigmoid_norm, as for Tülu 3): −log σ(β·(ρ̄_w − ρ̄_l)) on
    // per-token averages.
    Case {
        objective: "sigmoid_norm",
        set: &[("beta", 2.0)],
        loss: |x, p| -log_sigmoid(p["beta"] * (x.rho_w() / x.len_w - x.rho_l() / x.len_l)),
    },
    // LD-DPO (Liu et al. 2024): both answers have the same length here, so the shared prefix is
    // the whole answer and the loss is DPO's, through the per-token inputs of the runtime.
    Case {
        objective: "ld_dpo",
        set: &[("beta", 0.5), ("ld_alpha", 0.5)],
        loss: |x, p| -log_sigmoid(p["beta"] * x.margin()),
    },
];

// ---------------------------------------------------------------------------------------------
// The bandit and its data files.

/// The pairs of the bandit: `(chosen, rejected)` answer indices, one per data row.
fn bandit_pairs() -> Vec<(usize, usize)> {
    let mut rows = Vec::new();
    for (i, si) in STRENGTHS.iter().enumerate() {
        for (j, sj) in STRENGTHS.iter().enumerate().skip(i + 1) {
            let p = sigmoid(si - sj);
            let wins = (PER_PAIR as f64 * p).round() as usize;
            assert!(
                (1..PER_PAIR).contains(&wins),
                "both labels of answers {i}, {j} must occur"
            );
            rows.extend(std::iter::repeat_n((i, j), wins));
            rows.extend(std::iter::repeat_n((j, i), PER_PAIR - wins));
        }
    }
    rows
}

/// A data row: the pair, the answers' strengths as its scores, and the chosen answer's index
/// (an `answer` column, read by the entropy probe).
fn pair_row(chosen: usize, rejected: usize) -> String {
    serde_json::json!({
        "prompt": PROMPT,
        "chosen": ANSWERS[chosen],
        "rejected": ANSWERS[rejected],
        "score_chosen": STRENGTHS[chosen],
        "score_rejected": STRENGTHS[rejected],
        "answer": chosen as f64,
    })
    .to_string()
        + "\n"
}

/// What the test knows about each answer under the starting model.
#[derive(Debug, Clone, Copy)]
struct Answer {
    /// Its completion log-prob ℓ^ref (answer + EOS).
    ref_logp: f64,
    /// Its completion tokens.
    len: f64,
    /// The reference's mean entropy over its completion tokens.
    entropy: f64,
}

/// The bandit as the objectives see it.
struct Bandit {
    answers: Vec<Answer>,
    pairs: Vec<(usize, usize)>,
    vocab: f64,
}

impl Bandit {
    /// The mean loss of `case` over the pairs when the answers' completion log-probs are `l`.
    fn loss(&self, case: &Case, l: &[f64]) -> f64 {
        let p = Params(case.set);
        let sum: f64 = self
            .pairs
            .iter()
            .map(|&(w, r)| {
                let (aw, ar) = (self.answers[w], self.answers[r]);
                let x = Pair {
                    w: l[w],
                    l: l[r],
                    ref_w: aw.ref_logp,
                    ref_l: ar.ref_logp,
                    len_w: aw.len,
                    len_l: ar.len,
                    ent_w: aw.entropy,
                    ent_l: ar.entropy,
                    vocab: self.vocab,
                    score_w: STRENGTHS[w],
                    score_l: STRENGTHS[r],
                };
                (case.loss)(&x, &p)
            })
            .sum();
        sum / self.pairs.len() as f64
    }

    fn ref_logps(&self) -> Vec<f64> {
        self.answers.iter().map(|a| a.ref_logp).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The independent optimum: Newton's method in f64.

/// ∇f at `x` by central differences.
fn gradient(f: &dyn Fn(&[f64]) -> f64, x: &[f64]) -> Vec<f64> {
    let h = 1e-5;
    (0..x.len())
        .map(|i| {
            let (mut a, mut b) = (x.to_vec(), x.to_vec());
            a[i] += h;
            b[i] -= h;
            (f(&a) - f(&b)) / (2.0 * h)
        })
        .collect()
}

/// ∇²f at `x` by central differences.
fn hessian(f: &dyn Fn(&[f64]) -> f64, x: &[f64]) -> Vec<Vec<f64>> {
    let h = 1e-4;
    let at = |i: usize, si: f64, j: usize, sj: f64| {
        let mut y = x.to_vec();
        y[i] += si * h;
        y[j] += sj * h;
        f(&y)
    };
    let second = |i, j| {
        (at(i, 1.0, j, 1.0) - at(i, 1.0, j, -1.0) - at(i, -1.0, j, 1.0) + at(i, -1.0, j, -1.0))
            / (4.0 * h * h)
    };
    (0..x.len())
        .map(|i| (0..x.len()).map(|j| second(i, j)).collect())
        .collect()
}

/// The Cholesky factor of `a`, or `None` if `a` is not positive definite.
fn cholesky(a: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let n = a.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = a[i][j] - (0..j).map(|k| l[i][k] * l[j][k]).sum::<f64>();
            if i == j {
                if s <= 0.0 {
                    return None;
                }
                l[i][i] = s.sqrt();
            } else {
                l[i][j] = s / l[j][j];
            }
        }
    }
    Some(l)
}

/// Solves L·Lᵀ·x = b.
fn cholesky_solve(l: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
    let n = b.len();
    let mut y = vec![0.0; n];
    for i in 0..n {
        y[i] = (b[i] - (0..i).map(|k| l[i][k] * y[k]).sum::<f64>()) / l[i][i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        x[i] = (y[i] - (i + 1..n).map(|k| l[k][i] * x[k]).sum::<f64>()) / l[i][i];
    }
    x
}

/// The largest eigenvalue of the symmetric positive semi-definite `a` (power iteration).
fn largest_eigenvalue(a: &[Vec<f64>]) -> f64 {
    let n = a.len();
    let mut v = vec![1.0; n];
    let mut lambda = 0.0;
    for _ in 0..200 {
        let w: Vec<f64> = (0..n)
            .map(|i| (0..n).map(|j| a[i][j] * v[j]).sum())
            .collect();
        lambda = w.iter().map(|x| x * x).sum::<f64>().sqrt();
        v = w.iter().map(|x| x / lambda).collect();
    }
    lambda
}

/// A minimiser of `f` from `x`: Newton steps, damped (H + λI) where the Hessian is not positive
/// definite, with a backtracking line search. Errors unless it ends at a point with a
/// vanishing gradient and a positive definite Hessian (a strict local minimum).
fn newton(f: &dyn Fn(&[f64]) -> f64, mut x: Vec<f64>) -> Result<Vec<f64>, String> {
    for _ in 0..200 {
        let fx = f(&x);
        let g = gradient(f, &x);
        let gmax = g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let h = hessian(f, &x);
        if gmax < 1e-9 * (1.0 + fx.abs()) {
            return match cholesky(&h) {
                Some(_) => Ok(x),
                None => Err(format!(
                    "a stationary point that is no strict minimum: {x:?}"
                )),
            };
        }
        let mut damping = 0.0;
        let l = loop {
            let shifted: Vec<Vec<f64>> = (0..x.len())
                .map(|i| {
                    let mut row = h[i].clone();
                    row[i] += damping;
                    row
                })
                .collect();
            if let Some(l) = cholesky(&shifted) {
                break l;
            }
            damping = (damping * 4.0f64).max(1e-6 * (1.0 + gmax));
        };
        let d: Vec<f64> = cholesky_solve(&l, &g).iter().map(|v| -v).collect();
        let slope: f64 = g.iter().zip(&d).map(|(a, b)| a * b).sum();
        let mut t = 1.0;
        loop {
            let y: Vec<f64> = x.iter().zip(&d).map(|(a, b)| a + t * b).collect();
            if f(&y) <= fx + 1e-4 * t * slope {
                x = y;
                break;
            }
            t /= 2.0;
            if t < 1e-12 {
                return Err(format!("the line search stalled at {x:?} (gradient {g:?})"));
            }
        }
    }
    Err(format!("no convergence in 200 Newton steps (at {x:?})"))
}

/// The optimum of one case: the minimising completion log-probs (any one of the line for a
/// shift-invariant loss), whether the loss is shift-invariant, the minimal mean loss, and the
/// largest curvature of the loss there (along the identified coordinates).
struct Optimum {
    logps: Vec<f64>,
    shift_invariant: bool,
    loss: f64,
    curvature: f64,
}

fn optimum(bandit: &Bandit, case: &Case) -> Result<Optimum, String> {
    let k = bandit.answers.len();
    let start = bandit.ref_logps();
    let f = |l: &[f64]| bandit.loss(case, l);
    // Shift-invariant: the loss at a few points is unchanged by adding 0.7 to every log-prob.
    let probes = [0.0, 0.3, -0.8];
    let shift_invariant = probes.iter().all(|&t| {
        let l: Vec<f64> = start
            .iter()
            .enumerate()
            .map(|(i, v)| v + t * (i as f64 - 1.5))
            .collect();
        let shifted: Vec<f64> = l.iter().map(|v| v + 0.7).collect();
        (f(&l) - f(&shifted)).abs() <= 1e-12 * (1.0 + f(&l).abs())
    });
    // Coordinates: all K log-probs, or with the line's gauge fixed by ℓ_0 = ℓ_0^ref.
    let free = if shift_invariant { 1 } else { 0 };
    let expand = |y: &[f64]| -> Vec<f64> {
        let mut l = start.clone();
        l[free..].copy_from_slice(y);
        l
    };
    let g = |y: &[f64]| f(&expand(y));
    // Several starts around the reference (a fixed pseudo-random pattern, in nats; none at
    // Δ = 0 itself, where MallowsPO-φ's loss jumps): all must reach the same minimum.
    let offsets = [0.1, 0.9, -1.3, 1.7, -0.4, 0.6, -2.1, 1.1];
    let mut found: Vec<Vec<f64>> = Vec::new();
    for s in 0..4 {
        let y0: Vec<f64> = (free..k)
            .map(|i| start[i] + offsets[(3 * s + i) % offsets.len()])
            .collect();
        found.push(newton(&g, y0).map_err(|e| format!("start {s}: {e}"))?);
    }
    let centred = |l: &[f64]| -> Vec<f64> {
        let m = l.iter().sum::<f64>() / l.len() as f64;
        l.iter().map(|v| v - m).collect()
    };
    let key = |y: &[f64]| {
        let l = expand(y);
        if shift_invariant { centred(&l) } else { l }
    };
    for y in &found[1..] {
        let (a, b) = (key(&found[0]), key(y));
        if a.iter().zip(&b).any(|(p, q)| (p - q).abs() > 1e-6) {
            return Err(format!("two minima from two starts: {a:?} and {b:?}"));
        }
    }
    let y = &found[0];
    Ok(Optimum {
        logps: expand(y),
        shift_invariant,
        loss: g(y),
        curvature: largest_eigenvalue(&hessian(&g, y)),
    })
}

// ---------------------------------------------------------------------------------------------
// poc through its binary.

fn poc() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_poc"));
    // The runs go side by side, one per core.
    cmd.env("OMP_NUM_THREADS", "1").env("MKL_NUM_THREADS", "1");
    cmd
}

fn output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The starting model: the committed 2-layer transformers fixture (hidden size 64, vocabulary
/// 312; 0.1M parameters). A run of [`STEPS`] takes ~3 s on one core, against ~40 s for the
/// `tiny` preset (3.3M parameters). Its 64 hidden units can set the next-token logits at the
/// bandit's five contexts (the prompt, and the prompt plus each answer) independently, which
/// is what makes all of Ω reachable.
fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("runtime/tests/fixtures/tiny-llama")
}

/// Per answer (file `answers`, one row per answer with chosen = rejected = the answer), its
/// completion log-prob and token count under `model`.
fn answer_logps(model: &Path, answers: &Path) -> Result<Vec<(f64, f64)>, String> {
    let text = output(
        poc()
            .args(["logps", "--model"])
            .arg(model)
            .arg("--data")
            .arg(answers),
    )?;
    Ok(json_lines(&text)
        .iter()
        .map(|r| {
            (
                r["chosen_logps"].as_f64().unwrap(),
                r["chosen_len"].as_f64().unwrap(),
            )
        })
        .collect())
}

/// Per answer, the reference's mean entropy over its completion, and the vocabulary size: read
/// through a probe objective's metrics, one answer per step.
fn reference_entropies(tmp: &Path, answers: &Path) -> Result<(Vec<f64>, f64), String> {
    let probe = tmp.join("probe.po");
    std::fs::write(
        &probe,
        "/// Reports the reference's entropy of each answer (for the bandit test).\n\
         objective probe\n\
         input policy_chosen_logps\ninput ref_chosen_entropy\ninput vocab_size\n\
         input answer from column(\"answer\")\n\
         loss = -policy_chosen_logps\n\
         metric answer = answer\nmetric entropy = ref_chosen_entropy\nmetric vocab = vocab_size\n",
    )
    .unwrap();
    let out = tmp.join("probe");
    output(
        poc()
            .arg("run")
            .arg(&probe)
            .arg("--model")
            .arg(fixture())
            .arg("--data")
            .arg(answers)
            .args(["--batch-size", "1", "--no-progress", "--out"])
            .arg(&out),
    )?;
    let rows = json_lines(&std::fs::read_to_string(out.join("metrics.jsonl")).unwrap());
    let mut ent = vec![f64::NAN; ANSWERS.len()];
    let mut vocab = f64::NAN;
    for r in &rows {
        let m = &r["metrics"];
        ent[m["answer"].as_f64().unwrap() as usize] = m["entropy"].as_f64().unwrap();
        vocab = m["vocab"].as_f64().unwrap();
    }
    Ok((ent, vocab))
}

/// What one case's run reached.
struct Reached {
    /// The answers' completion log-probs under the final checkpoint.
    logps: Vec<f64>,
    /// The logged loss of the first step (at the starting model) and the held-out loss after
    /// the last (the same pairs, at the final model).
    first_loss: f64,
    final_loss: f64,
}

fn train(case: &Case, dir: &Path, pairs: &Path, answers: &Path) -> Result<Reached, String> {
    let out = dir.join("run");
    let mut cmd = poc();
    cmd.args(["run", case.objective, "--model"])
        .arg(fixture())
        .arg("--data")
        .arg(pairs)
        .arg("--eval-data")
        .arg(pairs)
        .args(["--batch-size", &bandit_pairs().len().to_string()])
        .args(["--max-steps", &STEPS.to_string(), "--lr", LR])
        // The fixture is bf16; the trained weights are compared exactly.
        .args(["--save-dtype", "f32", "--precompute-ref", "--no-progress"]);
    for (k, v) in case.set {
        cmd.arg("--set").arg(format!("{k}={v}"));
    }
    output(cmd.arg("--out").arg(&out))?;
    let metrics = json_lines(&std::fs::read_to_string(out.join("metrics.jsonl")).unwrap());
    let (first, last) = (&metrics[0], &metrics[metrics.len() - 1]);
    let logps = answer_logps(&out.join(format!("checkpoint-{STEPS}")), answers)?;
    Ok(Reached {
        logps: logps.into_iter().map(|(l, _)| l).collect(),
        first_loss: first["loss"].as_f64().unwrap(),
        final_loss: last["metrics"]["eval/loss"].as_f64().unwrap(),
    })
}

/// Checks one case; `Ok` carries a line for the summary table.
fn check(
    bandit: &Bandit,
    case: &Case,
    dir: &Path,
    pairs: &Path,
    answers: &Path,
) -> Result<String, String> {
    let opt = optimum(bandit, case)?;
    let mass: f64 = opt.logps.iter().map(|l| l.exp()).sum();
    if !opt.shift_invariant && mass >= 0.5 {
        return Err(format!(
            "the optimum {:?} puts mass {mass:.3} on the answers: too near the edge of what a \
             policy can reach (choose parameters that keep it inside)",
            opt.logps
        ));
    }
    let reached = train(case, dir, pairs, answers)?;
    let mut errors = Vec::new();
    let close = |a: f64, b: f64, rel: f64| (a - b).abs() <= rel * (1.0 + b.abs());
    // The loss poc computes at the start is the one written here, at ℓ = ℓ^ref.
    let start_loss = bandit.loss(case, &bandit.ref_logps());
    if !close(reached.first_loss, start_loss, 1e-4) {
        errors.push(format!(
            "the first step's loss {} is not the loss at the reference {start_loss}",
            reached.first_loss
        ));
    }
    let centred = |l: &[f64]| -> Vec<f64> {
        let m = l.iter().sum::<f64>() / l.len() as f64;
        l.iter().map(|v| v - m).collect()
    };
    let (got, want) = if opt.shift_invariant {
        (centred(&reached.logps), centred(&opt.logps))
    } else {
        (reached.logps.clone(), opt.logps.clone())
    };
    let worst = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f64::max);
    if worst > TOL {
        errors.push(format!(
            "log-probs{} {got:.4?}, optimum {want:.4?}: {worst:.4} nats apart",
            if opt.shift_invariant {
                " (centred)"
            } else {
                ""
            }
        ));
    }
    // The final loss: poc's own equals this test's at the trained log-probs, and that lies above
    // the minimum by no more than log-probs within TOL allow (½·λ_max·K·TOL²), less f32 noise.
    let at_reached = bandit.loss(case, &reached.logps);
    if !close(reached.final_loss, at_reached, 1e-4) {
        errors.push(format!(
            "poc's final loss {} is not the loss at its log-probs {at_reached}",
            reached.final_loss
        ));
    }
    let gap = reached.final_loss - opt.loss;
    let allowed = 0.5 * opt.curvature * ANSWERS.len() as f64 * TOL * TOL;
    let noise = 1e-5 * (1.0 + opt.loss.abs());
    if gap < -noise || gap > allowed + noise {
        errors.push(format!(
            "final loss {} vs minimum {}: gap {gap:.2e}, allowed [0, {allowed:.2e}]",
            reached.final_loss, opt.loss
        ));
    }
    if errors.is_empty() {
        Ok(format!(
            "{:<20} {:<50} loss {:.6} (min {:.6}), max |Δℓ| {worst:.1e}",
            case.objective,
            format!("{:?}", case.set),
            reached.final_loss,
            opt.loss
        ))
    } else {
        Err(errors.join("; "))
    }
}

#[test]
fn training_reaches_each_objectives_optimum_on_a_bandit() {
    let tmp = tempfile::tempdir().unwrap();
    let pairs_file = tmp.path().join("pairs.jsonl");
    let pairs = bandit_pairs();
    let text: String = pairs.iter().map(|&(w, r)| pair_row(w, r)).collect();
    std::fs::write(&pairs_file, text).unwrap();
    let answers_file = tmp.path().join("answers.jsonl");
    let text: String = (0..ANSWERS.len()).map(|i| pair_row(i, i)).collect();
    std::fs::write(&answers_file, text).unwrap();

    let start = answer_logps(&fixture(), &answers_file).unwrap();
    let (entropies, vocab) = reference_entropies(tmp.path(), &answers_file).unwrap();
    for (i, &(_, len)) in start.iter().enumerate() {
        assert_eq!(
            len, 2.0,
            "answer {:?} is not one token plus EOS",
            ANSWERS[i]
        );
    }
    let bandit = Bandit {
        answers: start
            .iter()
            .zip(&entropies)
            .map(|(&(ref_logp, len), &entropy)| Answer {
                ref_logp,
                len,
                entropy,
            })
            .collect(),
        pairs,
        vocab,
    };

    // The cases side by side, one per core (each run is single-threaded).
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(BTreeMap::new());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(case) = CASES.get(i) else { break };
                    let dir = tmp.path().join(format!("case{i}"));
                    std::fs::create_dir_all(&dir).unwrap();
                    let r = check(&bandit, case, &dir, &pairs_file, &answers_file);
                    results.lock().unwrap().insert(i, r);
                }
            });
        }
    });
    let results = results.into_inner().unwrap();
    let mut failures = Vec::new();
    for (i, r) in &results {
        match r {
            Ok(line) => eprintln!("ok   {line}"),
            Err(e) => {
                let c = &CASES[*i];
                eprintln!("FAIL {} {:?}: {e}", c.objective, c.set);
                failures.push(format!("{} {:?}: {e}", c.objective, c.set));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
