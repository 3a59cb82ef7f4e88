//! A synthetic preference world with a known true reward r*(x, y), small enough for CPU.
//!
//! Prompts come from prompt *families*; each family is a string task on a short lowercase word
//! (`f2 reverse kqzm ->`, whose ideal completion is ` mzqk`). The true reward of any completion
//! is a graded edit-distance score against the task's target (see [`reward`]); it is a pure,
//! total function of the two texts and does not depend on the seed. World v2 (docs/WORLD.md)
//! grades, per family and visibly in every row, the attributes the seed papers are about:
//!
//! - **reference alignment q** (MIPO): an SFT answer is the target with probability q, else the
//!   family's wrong habit (the word echoed), so a converged reference is well aligned on some
//!   families, poorly on others (the target still in its support), and on a "hard" family
//!   (q near 0) almost never says the target;
//! - **dispersion** (MallowsPO): pairs are labelled by a Bradley-Terry draw
//!   P(y₁ ≻ y₂) = σ((r*(y₁) − r*(y₂)) / T) whose temperature T goes with the SFT edit rate
//!   (the reference's entropy), except in a decoupled control family;
//! - **graded scores** (MMPO): `score_chosen`/`score_rejected` are r* mapped to a 1-10 rating
//!   plus Gaussian noise (informative or useless), with the calibrated γ of each family;
//! - **on-policy pairs**: the candidates of a prompt are draws of the SFT process (what a
//!   converged reference samples), every pair of distinct draws labelled; v1's off-policy
//!   near-miss candidates remain as a stress world ([`Candidates::NearMiss`]).
//!
//! Every pair carries its true probability σ(gap/T) (`bt_prob`), so calibration is measured
//! against the truth. Everything is deterministic per seed: each file has its own ChaCha8
//! stream (scores too), and a word is held out (evaluation) or not by a fixed hash, so train
//! and evaluation prompts never share a word.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

/// Version of the world's definition (reward, tasks, generators); recorded in `world.json`.
pub const VERSION: u32 = 2;
/// r* of a perfect answer (similarity 1 within the length budget).
pub const REWARD_MAX: f64 = 3.0;
/// The lowest r*: no similarity and the full length penalty; also r* under a prompt that is
/// not a world prompt.
pub const REWARD_MIN: f64 = -1.0;
/// Completion bytes that cost nothing; each byte beyond costs 1/[`OVERRUN_SPAN`].
pub const LENGTH_BUDGET: usize = 16;
/// Bytes past the budget over which the length penalty grows from 0 to 1.
pub const OVERRUN_SPAN: f64 = 8.0;
/// Only this many bytes of the trimmed answer are compared with the target (the rest still
/// counts for the length penalty), so r* is cheap on arbitrarily long completions.
pub const MAX_SCORED_BYTES: usize = 64;
/// Shortest and longest word of the default world's prompts.
pub const WORD_LEN: (usize, usize) = (3, 5);
/// The longest word a world prompt may have (what [`Prompt::parse`] accepts).
pub const WORD_LEN_MAX: usize = 12;
/// One word in `HELDOUT_EVERY` (by hash) is reserved for held-out pairs and evaluation prompts.
pub const HELDOUT_EVERY: u64 = 8;
/// Largest edit count of a candidate completion.
const MAX_EDITS: usize = 4;

/// A family's task: the rule that maps the prompt's word to the ideal completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// The word itself: `kqzm` → `kqzm`.
    Copy,
    /// Upper case: `kqzm` → `KQZM`.
    Upper,
    /// Each letter one further in the alphabet, `z` → `a`: `kqzm` → `lran`.
    Next,
    /// Backwards: `kqzm` → `mzqk`.
    Reverse,
    /// Each letter twice: `kqzm` → `kkqqzzmm`.
    Double,
    /// Letters in alphabetical order: `kqzm` → `kmqz`.
    Sort,
}

impl Task {
    /// Every task, in the order of the default families.
    pub const ALL: [Task; 6] = [
        Task::Copy,
        Task::Upper,
        Task::Next,
        Task::Reverse,
        Task::Double,
        Task::Sort,
    ];

    /// The task's word in prompts and `world.json`.
    pub fn name(self) -> &'static str {
        match self {
            Task::Copy => "copy",
            Task::Upper => "upper",
            Task::Next => "next",
            Task::Reverse => "reverse",
            Task::Double => "double",
            Task::Sort => "sort",
        }
    }

    /// The task named `name`, if any.
    pub fn from_name(name: &str) -> Option<Task> {
        Task::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The ideal completion (without the leading space) for `word`.
    pub fn apply(self, word: &str) -> String {
        let bytes = word.as_bytes();
        let out: Vec<u8> = match self {
            Task::Copy => bytes.to_vec(),
            Task::Upper => bytes.to_ascii_uppercase(),
            Task::Next => bytes
                .iter()
                .map(|&b| match b {
                    b'z' => b'a',
                    b'a'..=b'y' => b + 1,
                    other => other,
                })
                .collect(),
            Task::Reverse => bytes.iter().rev().copied().collect(),
            Task::Double => bytes.iter().flat_map(|&b| [b, b]).collect(),
            Task::Sort => {
                let mut v = bytes.to_vec();
                v.sort_unstable();
                v
            }
        };
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// A parsed world prompt: `f{family} {task} {word} ->`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// The family id (which sets the labelling temperature; r* ignores it).
    pub family: usize,
    /// The task, which defines the target.
    pub task: Task,
    /// The lowercase word the task applies to.
    pub word: String,
}

impl Prompt {
    /// Parses a prompt written by [`Prompt::text`]; anything else is `None`.
    pub fn parse(text: &str) -> Option<Prompt> {
        let mut parts = text.split(' ');
        let family = parts.next()?.strip_prefix('f')?;
        if family.is_empty() || family.len() > 4 || !family.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let task = Task::from_name(parts.next()?)?;
        let word = parts.next()?;
        if parts.next()? != "->" || parts.next().is_some() {
            return None;
        }
        let ok_len = (2..=WORD_LEN_MAX).contains(&word.len());
        if !ok_len || !word.bytes().all(|b| b.is_ascii_lowercase()) {
            return None;
        }
        Some(Prompt {
            family: family.parse().ok()?,
            task,
            word: word.to_string(),
        })
    }

    /// The prompt text.
    pub fn text(&self) -> String {
        format!("f{} {} {} ->", self.family, self.task.name(), self.word)
    }

    /// The ideal answer (completions are written with a leading space: ` {target}`).
    pub fn target(&self) -> String {
        self.task.apply(&self.word)
    }
}

/// The true reward r*(x, y) of completion `y` for prompt `x`, in [[`REWARD_MIN`], [`REWARD_MAX`]]:
///
/// ```text
/// a    = y without leading/trailing ASCII whitespace, first 64 bytes
/// t    = the task's target for x's word
/// sim  = 1 − lev(a, t) / max(|a|, |t|)          (byte Levenshtein distance; sim ∈ [0, 1])
/// r*   = 3 · sim − min(1, max(0, |y| − 16) / 8)   (|y| in bytes, untrimmed)
/// ```
///
/// Total: any completion (empty, invalid-looking, huge) has a finite reward, computed in time
/// linear in its length. A prompt that is not a world prompt ([`Prompt::parse`] fails) has no
/// target and gets [`REWARD_MIN`].
pub fn reward(prompt: &str, completion: &str) -> f64 {
    match Prompt::parse(prompt) {
        Some(p) => reward_against(&p.target(), completion),
        None => REWARD_MIN,
    }
}

/// r* of `completion` against an explicit `target` (the formula of [`reward`]).
pub fn reward_against(target: &str, completion: &str) -> f64 {
    let answer = completion.trim_ascii().as_bytes();
    let answer = &answer[..answer.len().min(MAX_SCORED_BYTES)];
    let target = target.as_bytes();
    let longest = answer.len().max(target.len());
    let similarity = if longest == 0 {
        1.0
    } else {
        1.0 - levenshtein(answer, target) as f64 / longest as f64
    };
    let overrun = completion.len().saturating_sub(LENGTH_BUDGET) as f64;
    REWARD_MAX * similarity - (overrun / OVERRUN_SPAN).min(1.0)
}

/// Byte edit distance (insertions, deletions, substitutions; unit costs).
fn levenshtein(a: &[u8], b: &[u8]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, &x) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, &y) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(x != y);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// σ(z), the logistic function.
pub fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// What a family is for: the stratum it stands for in the benchmark's analyses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The reference mostly answers with the target (high q).
    Aligned,
    /// The reference mostly answers with the habit (low q), but the target stays in its support.
    Misaligned,
    /// High label temperature with few SFT edits: the reference's entropy does not reveal the
    /// dispersion (MallowsPO's control).
    Decoupled,
    /// The target is almost never in the SFT data (q near zero): preference pairs of the
    /// reference's own samples rarely contain it (MPO's hard prompts).
    Hard,
}

impl Role {
    /// The role's word in `world.json` and reports.
    pub fn name(self) -> &'static str {
        match self {
            Role::Aligned => "aligned",
            Role::Misaligned => "misaligned",
            Role::Decoupled => "decoupled",
            Role::Hard => "hard",
        }
    }
}

/// One prompt family: a task, how noisily its pairs are labelled, and how the SFT data answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The task (defines r* for the family's prompts).
    pub task: Task,
    /// Bradley-Terry temperature of the labels: P(y₁ ≻ y₂) = σ(gap / T). Small = near
    /// deterministic, large = near random (high preference dispersion).
    pub temperature: f64,
    /// Reference alignment: the probability that an SFT answer is the target; otherwise it is
    /// the family's wrong habit, the word echoed.
    pub q: f64,
    /// Mean number of random edits added to an SFT answer (Poisson, at most 4): the spread of
    /// the SFT distribution, hence of the reference's entropy on the family.
    pub edit_rate: f64,
    /// The stratum the family stands for.
    pub role: Role,
}

/// The slope of the quality scores in r*: a score rises by 9/4 per unit of r*.
pub const SCORE_SLOPE: f64 = 9.0 / (REWARD_MAX - REWARD_MIN);

impl Family {
    /// The γ of MMPO's p* = σ(γ·Δscore) that reproduces the true label probability
    /// σ(Δr*/T) from noise-free scores: Δscore = (9/4)·Δr*, so γ = 1 / ((9/4)·T).
    pub fn calibrated_gamma(&self) -> f64 {
        1.0 / (SCORE_SLOPE * self.temperature)
    }

    /// `low` or `high` preference dispersion (label temperature below or from 1).
    pub fn dispersion(&self) -> &'static str {
        if self.temperature < 1.0 {
            "low"
        } else {
            "high"
        }
    }
}

/// Where the candidates of preference pairs come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidates {
    /// [`WorldConfig::samples_per_prompt`] independent draws of the SFT process per prompt (what
    /// a converged reference samples) and every pair of distinct draws: on-policy data.
    OnPolicy,
    /// World v1's off-policy stress data: each candidate is an SFT answer or, with probability
    /// 1/2, the target with 0-4 random edits (never sampled from any model); one pair per prompt.
    NearMiss,
}

impl Candidates {
    /// The name on the command line and in `world.json`.
    pub fn name(self) -> &'static str {
        match self {
            Candidates::OnPolicy => "on-policy",
            Candidates::NearMiss => "near-miss",
        }
    }

    /// The candidates named `name`.
    pub fn from_name(name: &str) -> Option<Candidates> {
        [Candidates::OnPolicy, Candidates::NearMiss]
            .into_iter()
            .find(|c| c.name() == name)
    }
}

/// Score noise under which the 1-10 scores carry real information about r*.
pub const INFORMATIVE_SCORE_NOISE: f64 = 0.5;
/// Score noise under which the scores are nearly useless (MMPO's control).
pub const USELESS_SCORE_NOISE: f64 = 3.0;

/// What a world is made of; [`WorldConfig::new`] gives the default world of a seed.
#[derive(Debug, Clone, PartialEq)]
pub struct WorldConfig {
    /// Seed of every generator.
    pub seed: u64,
    /// The families; family `i` is written `f{i}` in prompts.
    pub families: Vec<Family>,
    /// Standard deviation of the Gaussian noise on the 1-10 quality scores. Scores have their
    /// own random stream: two worlds that differ only here have the same pairs and labels.
    pub score_noise: f64,
    /// Where pair candidates come from.
    pub candidates: Candidates,
    /// Draws per prompt of on-policy candidates (all pairs of distinct draws are kept).
    pub samples_per_prompt: usize,
    /// Shortest and longest word.
    pub word_len: (usize, usize),
}

impl WorldConfig {
    /// The default world (v2): six families whose reference alignment q, label temperature T
    /// and SFT edit rate are graded so that each seed paper's mechanism has a stratum, and a
    /// control where it should not help:
    ///
    /// | family | task | T | q | edits | role |
    /// |---|---|---:|---:|---:|---|
    /// | f0 | upper | 0.25 | 0.85 | 0.1 | aligned, low dispersion |
    /// | f1 | upper | 0.25 | 0.25 | 0.1 | misaligned, low dispersion |
    /// | f2 | reverse | 2 | 0.85 | 0.8 | aligned, high dispersion |
    /// | f3 | reverse | 2 | 0.25 | 0.8 | misaligned, high dispersion |
    /// | f4 | upper | 2 | 0.85 | 0.1 | decoupled: high T, low entropy |
    /// | f5 | sort | 0.5 | 0.02 | 0.3 | hard: the target is almost never sampled |
    ///
    /// Pairs of families differ in one attribute each: f0/f1 and f2/f3 in q alone, f0/f4 in T
    /// alone (the decoupled control), so a stratum's difference is the attribute's.
    pub fn new(seed: u64) -> WorldConfig {
        let family = |task, temperature, q, edit_rate, role| Family {
            task,
            temperature,
            q,
            edit_rate,
            role,
        };
        WorldConfig {
            seed,
            families: vec![
                family(Task::Upper, 0.25, 0.85, 0.1, Role::Aligned),
                family(Task::Upper, 0.25, 0.25, 0.1, Role::Misaligned),
                family(Task::Reverse, 2.0, 0.85, 0.8, Role::Aligned),
                family(Task::Reverse, 2.0, 0.25, 0.8, Role::Misaligned),
                family(Task::Upper, 2.0, 0.85, 0.1, Role::Decoupled),
                family(Task::Sort, 0.5, 0.02, 0.3, Role::Hard),
            ],
            score_noise: INFORMATIVE_SCORE_NOISE,
            candidates: Candidates::OnPolicy,
            samples_per_prompt: 4,
            word_len: WORD_LEN,
        }
    }
}

/// A configuration that cannot make a world, or a row that is not a world row.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct WorldError(String);

/// One SFT row: a prompt and the SFT distribution's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct SftRow {
    /// The prompt text.
    pub prompt: String,
    /// The answer, with its leading space.
    pub completion: String,
    /// Family id.
    pub family: usize,
    /// r*(prompt, completion).
    pub true_reward: f64,
}

impl SftRow {
    /// The JSONL object in TRL's SFT (prompt-completion) format: `prompt`, `completion`,
    /// `family`, `true_reward`. poc's loader reads it as a demonstration row, which objectives
    /// that read only the chosen side (`sft.po`) train on.
    pub fn to_json(&self) -> Value {
        json!({
            "prompt": self.prompt,
            "completion": self.completion,
            "family": self.family,
            "true_reward": self.true_reward,
        })
    }
}

/// One labelled preference pair with the oracle's view of it.
#[derive(Debug, Clone, PartialEq)]
pub struct PreferenceRow {
    /// The prompt text.
    pub prompt: String,
    /// The completion the Bradley-Terry draw preferred.
    pub chosen: String,
    /// The other completion.
    pub rejected: String,
    /// Family id.
    pub family: usize,
    /// Noisy 1-10 rating of `chosen`.
    pub score_chosen: f64,
    /// Noisy 1-10 rating of `rejected`.
    pub score_rejected: f64,
    /// r*(prompt, chosen).
    pub true_reward_chosen: f64,
    /// r*(prompt, rejected).
    pub true_reward_rejected: f64,
    /// The family's label temperature T.
    pub temperature: f64,
    /// The family's reference alignment q.
    pub q: f64,
    /// The family's SFT edit rate.
    pub edit_rate: f64,
}

impl PreferenceRow {
    /// r*(chosen) − r*(rejected); negative exactly when the label is flipped.
    pub fn gap(&self) -> f64 {
        self.true_reward_chosen - self.true_reward_rejected
    }

    /// The label disagrees with r*: `true_reward_chosen < true_reward_rejected`.
    pub fn label_flipped(&self) -> bool {
        self.gap() < 0.0
    }

    /// The true probability that `chosen` is preferred: σ(gap / T).
    pub fn bt_prob(&self) -> f64 {
        sigmoid(self.gap() / self.temperature)
    }

    /// MMPO's calibrated γ for this pair's family: 1 / ((9/4)·T).
    pub fn calibrated_gamma(&self) -> f64 {
        1.0 / (SCORE_SLOPE * self.temperature)
    }

    /// The TRL JSONL object; every extra column is numeric (`label_flipped` is 0 or 1) so it
    /// reaches objectives as a dataset input.
    pub fn to_json(&self) -> Value {
        json!({
            "prompt": self.prompt,
            "chosen": self.chosen,
            "rejected": self.rejected,
            "score_chosen": self.score_chosen,
            "score_rejected": self.score_rejected,
            "family": self.family,
            "true_reward_chosen": self.true_reward_chosen,
            "true_reward_rejected": self.true_reward_rejected,
            "label_flipped": u8::from(self.label_flipped()),
            "bt_prob": self.bt_prob(),
            "temperature": self.temperature,
            "q": self.q,
            "edit_rate": self.edit_rate,
            "calibrated_gamma": self.calibrated_gamma(),
        })
    }
}

/// One evaluation prompt (from held-out words).
#[derive(Debug, Clone, PartialEq)]
pub struct EvalPrompt {
    /// The prompt text.
    pub prompt: String,
    /// Family id.
    pub family: usize,
    /// The ideal answer (for reading; r* is computed from the prompt).
    pub target: String,
}

impl EvalPrompt {
    /// The JSONL object: `prompt`, `family`, `target`.
    pub fn to_json(&self) -> Value {
        json!({"prompt": self.prompt, "family": self.family, "target": self.target})
    }
}

/// Per-family statistics of generated data, as `poc world` prints them.
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyStats {
    /// Family id.
    pub family: usize,
    /// Its task.
    pub task: Task,
    /// Its label temperature.
    pub temperature: f64,
    /// Its reference alignment q.
    pub q: f64,
    /// Its role.
    pub role: Role,
    /// Number of pairs of the family.
    pub pairs: usize,
    /// Pairs whose two completions have equal r* (labelled by a fair coin, never flipped).
    pub ties: usize,
    /// Pairs whose label disagrees with r*.
    pub flips: usize,
    /// Fraction of untied pairs whose label disagrees with r*.
    pub flip_rate: f64,
    /// What Bradley-Terry predicts for it: mean of 1 − σ(|gap| / T) over untied pairs.
    pub predicted_flip_rate: f64,
    /// Mean |r*(chosen) − r*(rejected)|.
    pub mean_abs_gap: f64,
    /// Fraction of pairs with |gap| < 1.
    pub small_gap_fraction: f64,
    /// Fraction of pairs one of whose completions is exactly the target.
    pub target_pair_fraction: f64,
    /// Mean r* of the family's SFT completions (NaN without SFT rows).
    pub mean_sft_reward: f64,
}

/// Which side of the held-out split a generator draws words from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    Train,
    Heldout,
}

/// The ChaCha stream of each generator, so the files do not depend on each other's sizes.
#[derive(Debug, Clone, Copy)]
enum Stream {
    Sft = 1,
    Train = 2,
    Heldout = 3,
    Prompts = 4,
    /// Scores of training pairs (their own stream: the score noise changes nothing else).
    TrainScores = 5,
    HeldoutScores = 6,
    /// Labels and scores of [`World::label`].
    Label = 7,
    LabelScores = 8,
    /// SFT rows on held-out words (the reference's held-out NLL).
    HeldoutSft = 9,
}

/// Whether `word` is reserved for evaluation: FNV-1a of its bytes, one word in
/// [`HELDOUT_EVERY`]. Fixed for every seed.
pub fn is_heldout_word(word: &str) -> bool {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in word.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.is_multiple_of(HELDOUT_EVERY)
}

/// A seeded world: generators for SFT rows, preference pairs and evaluation prompts.
#[derive(Debug, Clone, PartialEq)]
pub struct World {
    config: WorldConfig,
}

impl World {
    /// The default world of `seed`.
    pub fn new(seed: u64) -> World {
        World {
            config: WorldConfig::new(seed),
        }
    }

    /// A world from an explicit configuration, checked.
    pub fn with_config(config: WorldConfig) -> Result<World, WorldError> {
        let bad = |m: String| Err(WorldError(format!("bad world configuration: {m}")));
        if config.families.is_empty() || config.families.len() > 1000 {
            return bad("between 1 and 1000 families".into());
        }
        for (i, f) in config.families.iter().enumerate() {
            if !(f.temperature.is_finite() && f.temperature > 0.0) {
                return bad(format!(
                    "family {i}: temperature must be positive and finite, not {}",
                    f.temperature
                ));
            }
            if !(0.0..=MAX_EDITS as f64).contains(&f.edit_rate) {
                return bad(format!(
                    "family {i}: edit_rate must lie in [0, {MAX_EDITS}], not {}",
                    f.edit_rate
                ));
            }
            if !(0.0..=1.0).contains(&f.q) {
                return bad(format!("family {i}: q must lie in [0, 1], not {}", f.q));
            }
        }
        if !(config.score_noise.is_finite() && config.score_noise >= 0.0) {
            return bad(format!(
                "score_noise must be finite and ≥ 0, not {}",
                config.score_noise
            ));
        }
        // On-policy pairs need two different SFT answers; a world none of whose families can
        // give them would make `train_pairs` loop forever.
        let answers_differ =
            |f: &Family| f.edit_rate > 0.0 || (f.q > 0.0 && f.q < 1.0 && f.task != Task::Copy);
        if config.candidates == Candidates::OnPolicy && !config.families.iter().any(answers_differ)
        {
            return bad("on-policy candidates need a family whose SFT answers can be different (edit_rate > 0, or 0 < q < 1 and a task other than copy)".into());
        }
        if !(2..=16).contains(&config.samples_per_prompt) {
            return bad(format!(
                "samples_per_prompt must lie in [2, 16], not {}",
                config.samples_per_prompt
            ));
        }
        let (lo, hi) = config.word_len;
        if lo < 2 || lo > hi || hi > WORD_LEN_MAX {
            return bad(format!(
                "word lengths {lo}..{hi}: expected 2 ≤ shortest ≤ longest ≤ {WORD_LEN_MAX}"
            ));
        }
        Ok(World { config })
    }

    /// The configuration.
    pub fn config(&self) -> &WorldConfig {
        &self.config
    }

    fn rng(&self, stream: Stream) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
        rng.set_stream(stream as u64);
        rng
    }

    /// A prompt of `family` whose word lies on `split`'s side.
    fn prompt(&self, rng: &mut ChaCha8Rng, family: usize, split: Split) -> Prompt {
        let (lo, hi) = self.config.word_len;
        loop {
            let len = rng.random_range(lo..=hi);
            let word: String = (0..len)
                .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
                .collect();
            if is_heldout_word(&word) == (split == Split::Heldout) {
                return Prompt {
                    family,
                    task: self.config.families[family].task,
                    word,
                };
            }
        }
    }

    /// What the SFT process answers: the target with probability q, else the word echoed
    /// (the habit), then a Poisson(`edit_rate`) number of random edits (at most 4).
    fn sft_answer(&self, rng: &mut ChaCha8Rng, prompt: &Prompt) -> String {
        let family = &self.config.families[prompt.family];
        let base = if rng.random::<f64>() < family.q {
            prompt.target()
        } else {
            prompt.word.clone()
        };
        let edits = poisson(rng, family.edit_rate).min(MAX_EDITS);
        format!(" {}", corrupt(rng, &base, edits))
    }

    /// A near-miss of the target: 0-4 random edits, fewer more likely.
    fn explore_answer(rng: &mut ChaCha8Rng, prompt: &Prompt) -> String {
        const EDIT_WEIGHTS: [f64; MAX_EDITS + 1] = [0.25, 0.3, 0.25, 0.12, 0.08];
        let mut u = rng.random::<f64>();
        let mut edits = MAX_EDITS;
        for (k, w) in EDIT_WEIGHTS.iter().enumerate() {
            if u < *w {
                edits = k;
                break;
            }
            u -= w;
        }
        format!(" {}", corrupt(rng, &prompt.target(), edits))
    }

    /// A 1-10 rating of a completion: r* mapped linearly from [−1, 3] onto [1, 10], plus
    /// N(0, score_noise²), clamped to [1, 10] and rounded to halves.
    fn score(&self, rng: &mut ChaCha8Rng, true_reward: f64) -> f64 {
        let clean = 1.0 + SCORE_SLOPE * (true_reward - REWARD_MIN);
        let noisy = clean + self.config.score_noise * standard_normal(rng);
        (noisy.clamp(1.0, 10.0) * 2.0).round() / 2.0
    }

    /// `n` SFT rows (training words), families in turn.
    pub fn sft_rows(&self, n: usize) -> Vec<SftRow> {
        self.sft_rows_of(n, Split::Train, Stream::Sft)
    }

    /// `n` SFT rows on held-out words, families in turn: held-out NLL of a reference.
    pub fn heldout_sft_rows(&self, n: usize) -> Vec<SftRow> {
        self.sft_rows_of(n, Split::Heldout, Stream::HeldoutSft)
    }

    fn sft_rows_of(&self, n: usize, split: Split, stream: Stream) -> Vec<SftRow> {
        let mut rng = self.rng(stream);
        let k = self.config.families.len();
        (0..n)
            .map(|i| {
                let prompt = self.prompt(&mut rng, i % k, split);
                let completion = self.sft_answer(&mut rng, &prompt);
                let text = prompt.text();
                SftRow {
                    true_reward: reward(&text, &completion),
                    prompt: text,
                    completion,
                    family: prompt.family,
                }
            })
            .collect()
    }

    /// `n` training preference pairs (training words), prompts of the families in turn.
    pub fn train_pairs(&self, n: usize) -> Vec<PreferenceRow> {
        self.pairs(n, Split::Train, Stream::Train, Stream::TrainScores)
    }

    /// `n` held-out preference pairs (held-out words), prompts of the families in turn.
    pub fn heldout_pairs(&self, n: usize) -> Vec<PreferenceRow> {
        self.pairs(n, Split::Heldout, Stream::Heldout, Stream::HeldoutScores)
    }

    fn pairs(&self, n: usize, split: Split, stream: Stream, scores: Stream) -> Vec<PreferenceRow> {
        let mut rng = self.rng(stream);
        let k = self.config.families.len();
        let mut rows = Vec::with_capacity(n);
        let mut i = 0;
        while rows.len() < n {
            let prompt = self.prompt(&mut rng, i % k, split);
            i += 1;
            let candidates = match self.config.candidates {
                Candidates::OnPolicy => (0..self.config.samples_per_prompt)
                    .map(|_| self.sft_answer(&mut rng, &prompt))
                    .collect(),
                Candidates::NearMiss => self.near_miss_candidates(&mut rng, &prompt),
            };
            let text = prompt.text();
            for row in self.label_candidates(&mut rng, &text, &candidates) {
                if rows.len() < n {
                    rows.push(row);
                }
            }
        }
        self.add_scores(&mut rows, scores);
        rows
    }

    /// World v1's candidates: two different answers, each an SFT answer or a near-miss.
    fn near_miss_candidates(&self, rng: &mut ChaCha8Rng, prompt: &Prompt) -> Vec<String> {
        let draw = |rng: &mut ChaCha8Rng| {
            if rng.random::<f64>() < 0.5 {
                self.sft_answer(rng, prompt)
            } else {
                World::explore_answer(rng, prompt)
            }
        };
        let first = draw(rng);
        let mut second = draw(rng);
        let mut tries = 0;
        while second == first {
            second = if tries < 16 {
                draw(rng)
            } else {
                // Every draw repeated the first (a tiny word, no edits): force a difference.
                format!(" {}", corrupt(rng, first.trim_start(), 1))
            };
            tries += 1;
        }
        vec![first, second]
    }

    /// Every pair of distinct `candidates` of one prompt (first-seen order), each labelled by a
    /// Bradley-Terry draw at the family's temperature; a tie in r* is a fair coin. Scores are
    /// left at 0 for [`World::add_scores`].
    fn label_candidates(
        &self,
        rng: &mut ChaCha8Rng,
        prompt: &str,
        candidates: &[String],
    ) -> Vec<PreferenceRow> {
        let Some(family) = Prompt::parse(prompt).and_then(|p| self.config.families.get(p.family))
        else {
            return Vec::new();
        };
        let mut distinct: Vec<&String> = Vec::new();
        for c in candidates {
            if !distinct.contains(&c) {
                distinct.push(c);
            }
        }
        let id = Prompt::parse(prompt).map_or(0, |p| p.family);
        let mut rows = Vec::new();
        for a in 0..distinct.len() {
            for b in a + 1..distinct.len() {
                let (first, second) = (distinct[a], distinct[b]);
                let (r1, r2) = (reward(prompt, first), reward(prompt, second));
                let first_wins = rng.random::<f64>() < sigmoid((r1 - r2) / family.temperature);
                let (chosen, rejected, rc, rr) = if first_wins {
                    (first, second, r1, r2)
                } else {
                    (second, first, r2, r1)
                };
                rows.push(PreferenceRow {
                    prompt: prompt.to_string(),
                    chosen: chosen.clone(),
                    rejected: rejected.clone(),
                    family: id,
                    score_chosen: 0.0,
                    score_rejected: 0.0,
                    true_reward_chosen: rc,
                    true_reward_rejected: rr,
                    temperature: family.temperature,
                    q: family.q,
                    edit_rate: family.edit_rate,
                });
            }
        }
        rows
    }

    /// Draws both scores of every row from `stream`, in row order.
    fn add_scores(&self, rows: &mut [PreferenceRow], stream: Stream) {
        let mut rng = self.rng(stream);
        for row in rows {
            row.score_chosen = self.score(&mut rng, row.true_reward_chosen);
            row.score_rejected = self.score(&mut rng, row.true_reward_rejected);
        }
    }

    /// Labels completions of any origin (`poc world label`): the rows are grouped by prompt
    /// (first-seen order), every pair of distinct completions of a prompt is labelled by
    /// Bradley-Terry on r*, and scored. `Err` names the first row whose prompt is not a prompt
    /// of this world.
    pub fn label(&self, rows: &[(String, String)]) -> Result<Vec<PreferenceRow>, WorldError> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for (i, (prompt, completion)) in rows.iter().enumerate() {
            let known = Prompt::parse(prompt).is_some_and(|p| {
                self.config
                    .families
                    .get(p.family)
                    .is_some_and(|f| f.task == p.task)
            });
            if !known {
                return Err(WorldError(format!(
                    "row {}: `{prompt}` is not a prompt of this world (expected `f{{family}} {{task}} {{word}} ->` with a family below {} and its own task)",
                    i + 1,
                    self.config.families.len()
                )));
            }
            match groups.iter_mut().find(|(p, _)| p == prompt) {
                Some((_, cs)) => cs.push(completion.clone()),
                None => groups.push((prompt.clone(), vec![completion.clone()])),
            }
        }
        let mut rng = self.rng(Stream::Label);
        let mut out = Vec::new();
        for (prompt, completions) in &groups {
            out.extend(self.label_candidates(&mut rng, prompt, completions));
        }
        self.add_scores(&mut out, Stream::LabelScores);
        Ok(out)
    }

    /// `n` evaluation prompts (held-out words), families in turn.
    pub fn eval_prompts(&self, n: usize) -> Vec<EvalPrompt> {
        let mut rng = self.rng(Stream::Prompts);
        let k = self.config.families.len();
        (0..n)
            .map(|i| {
                let prompt = self.prompt(&mut rng, i % k, Split::Heldout);
                EvalPrompt {
                    prompt: prompt.text(),
                    family: prompt.family,
                    target: prompt.target(),
                }
            })
            .collect()
    }

    /// Per-family statistics of `pairs` (and of `sft` for the SFT column).
    pub fn family_stats(&self, sft: &[SftRow], pairs: &[PreferenceRow]) -> Vec<FamilyStats> {
        self.config
            .families
            .iter()
            .enumerate()
            .map(|(id, f)| {
                let rows: Vec<&PreferenceRow> = pairs.iter().filter(|p| p.family == id).collect();
                let untied: Vec<&&PreferenceRow> = rows.iter().filter(|p| p.gap() != 0.0).collect();
                let flips = untied.iter().filter(|p| p.label_flipped()).count();
                let predicted: f64 = untied
                    .iter()
                    .map(|p| 1.0 - sigmoid(p.gap().abs() / f.temperature))
                    .sum();
                let with_target = rows
                    .iter()
                    .filter(|p| {
                        let t = Prompt::parse(&p.prompt).map(|x| format!(" {}", x.target()));
                        t.is_some_and(|t| p.chosen == t || p.rejected == t)
                    })
                    .count();
                let sft_rewards: Vec<f64> = sft
                    .iter()
                    .filter(|r| r.family == id)
                    .map(|r| r.true_reward)
                    .collect();
                FamilyStats {
                    family: id,
                    task: f.task,
                    temperature: f.temperature,
                    q: f.q,
                    role: f.role,
                    pairs: rows.len(),
                    ties: rows.len() - untied.len(),
                    flips,
                    flip_rate: ratio(flips as f64, untied.len()),
                    predicted_flip_rate: ratio(predicted, untied.len()),
                    mean_abs_gap: ratio(rows.iter().map(|p| p.gap().abs()).sum(), rows.len()),
                    small_gap_fraction: ratio(
                        rows.iter().filter(|p| p.gap().abs() < 1.0).count() as f64,
                        rows.len(),
                    ),
                    target_pair_fraction: ratio(with_target as f64, rows.len()),
                    mean_sft_reward: ratio(sft_rewards.iter().sum(), sft_rewards.len()),
                }
            })
            .collect()
    }

    /// `world.json`: the definition of the world (version, seed, reward, families and their
    /// oracle constants, noise) and the statistics of the generated data; `counts` names each
    /// file's number of rows.
    pub fn manifest(&self, counts: &[(&str, usize)], stats: &[FamilyStats]) -> Value {
        let c = &self.config;
        let families: Vec<Value> = c
            .families
            .iter()
            .enumerate()
            .map(|(id, f)| {
                let example = Prompt {
                    family: id,
                    task: f.task,
                    word: "kqzm".into(),
                };
                let mut v = json!({
                    "id": id,
                    "task": f.task.name(),
                    "role": f.role.name(),
                    "example_prompt": example.text(),
                    "example_target": format!(" {}", example.target()),
                    "temperature": f.temperature,
                    "dispersion": f.dispersion(),
                    "q": f.q,
                    "sft_answer": format!("the target with probability {}, else the word echoed; then Poisson({}) random edits", f.q, f.edit_rate),
                    "edit_rate": f.edit_rate,
                    "calibrated_gamma": f.calibrated_gamma(),
                });
                if let (Some(s), Some(obj)) = (stats.get(id), v.as_object_mut()) {
                    obj.insert("stats".into(), stats_json(s));
                }
                v
            })
            .collect();
        let all_pairs: usize = stats.iter().map(|s| s.pairs).sum();
        let small: f64 = stats
            .iter()
            .filter(|s| s.pairs > 0)
            .map(|s| s.small_gap_fraction * s.pairs as f64)
            .sum();
        let candidates = match c.candidates {
            Candidates::OnPolicy => format!(
                "on-policy: {} draws of the SFT process per prompt, every pair of distinct draws",
                c.samples_per_prompt
            ),
            Candidates::NearMiss => "near-miss (off-policy stress): each candidate an SFT answer or, with probability 1/2, the target with 0-4 random edits; one pair per prompt".into(),
        };
        json!({
            "world_version": VERSION,
            "generator": "poc world",
            "seed": c.seed,
            "reward": {
                "formula": format!("r* = {REWARD_MAX} * (1 - lev(a, t) / max(|a|, |t|)) - min(1, max(0, |y| - {LENGTH_BUDGET}) / {OVERRUN_SPAN}); a = completion trimmed of ASCII whitespace (first {MAX_SCORED_BYTES} bytes), t = task(word), lengths in bytes"),
                "min": REWARD_MIN,
                "max": REWARD_MAX,
                "length_budget_bytes": LENGTH_BUDGET,
                "unknown_prompt": REWARD_MIN,
            },
            "prompt_format": "f{family} {task} {word} ->",
            "completion_format": " {answer}",
            "word_length": [c.word_len.0, c.word_len.1],
            "heldout_words": format!("FNV-1a 64 of the word's bytes % {HELDOUT_EVERY} == 0 (held-out pairs and evaluation prompts only)"),
            "candidates": c.candidates.name(),
            "candidates_rule": candidates,
            "labels": "Bradley-Terry: P(y1 > y2) = sigmoid((r*(y1) - r*(y2)) / temperature of the family); ties in r* by a fair coin",
            "bt_prob": "column bt_prob of every pair: the true probability sigmoid(gap / T) that chosen is preferred",
            "scores": {
                "scale": format!("1 + (9/4) * (r* - ({REWARD_MIN})) + N(0, noise^2), clamped to [1, 10], rounded to 0.5"),
                "noise": c.score_noise,
                "informative_noise": INFORMATIVE_SCORE_NOISE,
                "useless_noise": USELESS_SCORE_NOISE,
                "calibrated_gamma": "1 / ((9/4) * T): MMPO's sigmoid(gamma * score gap) then equals the true label probability for noise-free scores",
            },
            "stats_over": "each family's stats: the pairs of train.jsonl and the rows of sft.jsonl",
            "families": families,
            "files": counts.iter().map(|(name, n)| ((*name).to_string(), json!(n))).collect::<serde_json::Map<String, Value>>(),
            "train_small_gap_fraction": finite_or_null(ratio(small, all_pairs)),
        })
    }
}

fn stats_json(s: &FamilyStats) -> Value {
    json!({
        "pairs": s.pairs,
        "ties": s.ties,
        "flips": s.flips,
        "flip_rate": finite_or_null(s.flip_rate),
        "predicted_flip_rate": finite_or_null(s.predicted_flip_rate),
        "mean_abs_gap": finite_or_null(s.mean_abs_gap),
        "small_gap_fraction": finite_or_null(s.small_gap_fraction),
        "target_pair_fraction": finite_or_null(s.target_pair_fraction),
        "mean_sft_reward": finite_or_null(s.mean_sft_reward),
    })
}

fn finite_or_null(x: f64) -> Value {
    if x.is_finite() { json!(x) } else { Value::Null }
}

fn ratio(sum: f64, n: usize) -> f64 {
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

/// Rows as JSON lines.
pub fn to_jsonl(rows: impl IntoIterator<Item = Value>) -> String {
    let mut out = String::new();
    for row in rows {
        out.push_str(&row.to_string());
        out.push('\n');
    }
    out
}

/// `base` after `edits` random edits (substitute, delete, insert, swap neighbours), in the
/// letter case of `base`; never empty.
fn corrupt(rng: &mut ChaCha8Rng, base: &str, edits: usize) -> String {
    let first = if base.bytes().any(|b| b.is_ascii_uppercase()) {
        b'A'
    } else {
        b'a'
    };
    let mut s = base.as_bytes().to_vec();
    let letter = |rng: &mut ChaCha8Rng| first + rng.random_range(0..26u8);
    for _ in 0..edits {
        match rng.random_range(0..4u8) {
            0 if !s.is_empty() => {
                let i = rng.random_range(0..s.len());
                let old = s[i];
                // Another letter: 25 choices, never the same one.
                let mut new = letter(rng);
                if new == old {
                    new = first + (new - first + 1) % 26;
                }
                s[i] = new;
            }
            1 if s.len() > 1 => {
                let i = rng.random_range(0..s.len());
                s.remove(i);
            }
            3 if s.len() > 1 => {
                let i = rng.random_range(0..s.len() - 1);
                s.swap(i, i + 1);
            }
            _ => {
                let i = rng.random_range(0..=s.len());
                let c = letter(rng);
                s.insert(i, c);
            }
        }
    }
    String::from_utf8_lossy(&s).into_owned()
}

/// A Poisson(λ) draw (Knuth's product of uniforms; λ is small here).
fn poisson(rng: &mut ChaCha8Rng, lambda: f64) -> usize {
    let limit = (-lambda).exp();
    let mut product = rng.random::<f64>();
    let mut k = 0;
    while product > limit && k < 64 {
        product *= rng.random::<f64>();
        k += 1;
    }
    k
}

/// A standard normal draw (Box-Muller).
fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1 = 1.0 - rng.random::<f64>(); // (0, 1]: ln is finite
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levenshtein_counts_edits() {
        assert_eq!(levenshtein(b"", b"abc"), 3);
        assert_eq!(levenshtein(b"kitten", b"sitting"), 3);
        assert_eq!(levenshtein(b"abc", b"abc"), 0);
        assert_eq!(levenshtein(b"abcd", b"abdc"), 2);
    }

    #[test]
    fn prompts_round_trip_and_reject_strangers() {
        let p = Prompt {
            family: 3,
            task: Task::Reverse,
            word: "kqzm".into(),
        };
        assert_eq!(p.text(), "f3 reverse kqzm ->");
        assert_eq!(Prompt::parse(&p.text()), Some(p));
        for bad in [
            "",
            "f3 reverse kqzm",
            "f3 reverse kqzm -> x",
            "f reverse kqzm ->",
            "f+3 reverse kqzm ->",
            "f3 rev kqzm ->",
            "f3 reverse KQZM ->",
            "f3 reverse a ->",
            "f3  reverse kqzm ->",
        ] {
            assert_eq!(Prompt::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tasks_match_their_docs() {
        let w = "kqzm";
        let got: Vec<String> = Task::ALL.iter().map(|t| t.apply(w)).collect();
        assert_eq!(
            got,
            ["kqzm", "KQZM", "lran", "mzqk", "kkqqzzmm", "kmqz"].map(String::from)
        );
    }
}
