//! A synthetic preference world with a known true reward r*(x, y), small enough for CPU.
//!
//! Prompts come from prompt *families*; each family is a string task on a short lowercase word
//! (`f3 reverse kqzm ->`, whose ideal completion is ` mzqk`). The true reward of any completion
//! is a graded edit-distance score against the task's target (see [`reward`]); it is a pure,
//! total function of the two texts and does not depend on the seed. Around it the world
//! exercises what the seed papers are about (docs/WORLD.md):
//!
//! - **dispersion** (MallowsPO): pairs are labelled by a Bradley-Terry draw
//!   P(y₁ ≻ y₂) = σ((r*(y₁) − r*(y₂)) / T_f) whose temperature T_f depends on the family;
//! - **graded scores** (MMPO): `score_chosen`/`score_rejected` are r* mapped to a 1-10 rating
//!   plus Gaussian noise, rounded to halves;
//! - **small gaps** (MPO): candidates are near-misses of the target, so most pairs differ by
//!   less than one unit of r*;
//! - **reference alignment** (MIPO): the SFT data answers some families correctly and others
//!   with a wrong habit (echoing the word), so a reference trained on it is aligned on some
//!   families and misaligned on others.
//!
//! Everything is deterministic per seed: each file has its own ChaCha8 stream, and a word is
//! held out (evaluation) or not by a fixed hash, so train and evaluation prompts never share a
//! word.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

/// Version of the world's definition (reward, tasks, generators); recorded in `world.json`.
pub const VERSION: u32 = 1;
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
/// Shortest and longest word of a prompt.
pub const WORD_LEN: (usize, usize) = (4, 7);
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
        let ok_len = (WORD_LEN.0..=WORD_LEN.1).contains(&word.len());
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

/// One prompt family: a task, how noisily its pairs are labelled, and how the SFT data treats it.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The task (defines r* for the family's prompts).
    pub task: Task,
    /// Bradley-Terry temperature of the labels: P(y₁ ≻ y₂) = σ(gap / T). Small = near
    /// deterministic, large = near random (high preference dispersion).
    pub temperature: f64,
    /// Whether the SFT data answers correctly (true) or echoes the word (false).
    pub aligned: bool,
    /// Mean number of random edits added to an SFT answer (Poisson, at most 4): the spread of
    /// the SFT distribution, hence of the reference's entropy on the family.
    pub sft_edit_rate: f64,
}

/// What a world is made of; [`WorldConfig::new`] gives the default world of a seed.
#[derive(Debug, Clone, PartialEq)]
pub struct WorldConfig {
    /// Seed of every generator.
    pub seed: u64,
    /// The families; family `i` is written `f{i}` in prompts.
    pub families: Vec<Family>,
    /// Standard deviation of the Gaussian noise on the 1-10 quality scores.
    pub score_noise: f64,
    /// Probability that a pair candidate is drawn from the SFT distribution (what the
    /// reference would say) rather than from near-misses of the target.
    pub reference_share: f64,
}

impl WorldConfig {
    /// The default world: six families crossing three label temperatures (0.25, 1, 4) with an
    /// aligned and a misaligned SFT answer; the SFT spread grows with the temperature.
    pub fn new(seed: u64) -> WorldConfig {
        let family = |task, temperature, aligned, sft_edit_rate| Family {
            task,
            temperature,
            aligned,
            sft_edit_rate,
        };
        WorldConfig {
            seed,
            families: vec![
                family(Task::Copy, 0.25, true, 0.1),
                family(Task::Upper, 0.25, false, 0.1),
                family(Task::Next, 1.0, true, 0.4),
                family(Task::Reverse, 1.0, false, 0.4),
                family(Task::Double, 4.0, true, 0.8),
                family(Task::Sort, 4.0, false, 0.8),
            ],
            score_noise: 1.0,
            reference_share: 0.5,
        }
    }
}

/// A configuration that cannot make a world.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("bad world configuration: {0}")]
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

/// One labelled preference pair.
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
    /// The label disagrees with r*: `true_reward_chosen < true_reward_rejected`.
    pub label_flipped: bool,
}

impl PreferenceRow {
    /// r*(chosen) − r*(rejected); negative exactly when the label is flipped.
    pub fn gap(&self) -> f64 {
        self.true_reward_chosen - self.true_reward_rejected
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
            "label_flipped": u8::from(self.label_flipped),
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
    /// Whether its SFT answers are correct.
    pub aligned: bool,
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
        if config.families.is_empty() || config.families.len() > 1000 {
            return Err(WorldError("between 1 and 1000 families".into()));
        }
        for (i, f) in config.families.iter().enumerate() {
            if !(f.temperature.is_finite() && f.temperature > 0.0) {
                return Err(WorldError(format!(
                    "family {i}: temperature must be positive and finite, not {}",
                    f.temperature
                )));
            }
            if !(0.0..=MAX_EDITS as f64).contains(&f.sft_edit_rate) {
                return Err(WorldError(format!(
                    "family {i}: sft_edit_rate must lie in [0, {MAX_EDITS}], not {}",
                    f.sft_edit_rate
                )));
            }
        }
        if !(config.score_noise.is_finite() && config.score_noise >= 0.0) {
            return Err(WorldError(format!(
                "score_noise must be finite and ≥ 0, not {}",
                config.score_noise
            )));
        }
        if !(0.0..=1.0).contains(&config.reference_share) {
            return Err(WorldError(format!(
                "reference_share must lie in [0, 1], not {}",
                config.reference_share
            )));
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
        loop {
            let len = rng.random_range(WORD_LEN.0..=WORD_LEN.1);
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

    /// What the SFT data answers: the target (aligned) or the word echoed (misaligned), with a
    /// Poisson(`sft_edit_rate`) number of random edits.
    fn sft_answer(&self, rng: &mut ChaCha8Rng, prompt: &Prompt) -> String {
        let family = &self.config.families[prompt.family];
        let base = if family.aligned {
            prompt.target()
        } else {
            prompt.word.clone()
        };
        let edits = poisson(rng, family.sft_edit_rate).min(MAX_EDITS);
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

    fn candidate(&self, rng: &mut ChaCha8Rng, prompt: &Prompt) -> String {
        if rng.random::<f64>() < self.config.reference_share {
            self.sft_answer(rng, prompt)
        } else {
            World::explore_answer(rng, prompt)
        }
    }

    /// A 1-10 rating of a completion: r* mapped linearly from [−1, 3] onto [1, 10], plus
    /// N(0, score_noise²), clamped to [1, 10] and rounded to halves.
    fn score(&self, rng: &mut ChaCha8Rng, true_reward: f64) -> f64 {
        let clean = 1.0 + 9.0 * (true_reward - REWARD_MIN) / (REWARD_MAX - REWARD_MIN);
        let noisy = clean + self.config.score_noise * standard_normal(rng);
        (noisy.clamp(1.0, 10.0) * 2.0).round() / 2.0
    }

    /// `n` SFT rows (training words), families in turn.
    pub fn sft_rows(&self, n: usize) -> Vec<SftRow> {
        let mut rng = self.rng(Stream::Sft);
        let k = self.config.families.len();
        (0..n)
            .map(|i| {
                let prompt = self.prompt(&mut rng, i % k, Split::Train);
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

    /// `n` training preference pairs (training words), families in turn.
    pub fn train_pairs(&self, n: usize) -> Vec<PreferenceRow> {
        self.pairs(n, Split::Train, Stream::Train)
    }

    /// `n` held-out preference pairs (held-out words), families in turn.
    pub fn heldout_pairs(&self, n: usize) -> Vec<PreferenceRow> {
        self.pairs(n, Split::Heldout, Stream::Heldout)
    }

    fn pairs(&self, n: usize, split: Split, stream: Stream) -> Vec<PreferenceRow> {
        let mut rng = self.rng(stream);
        let k = self.config.families.len();
        (0..n).map(|i| self.pair(&mut rng, i % k, split)).collect()
    }

    /// Two different candidates, labelled by a Bradley-Terry draw at the family's temperature.
    fn pair(&self, rng: &mut ChaCha8Rng, family: usize, split: Split) -> PreferenceRow {
        let prompt = self.prompt(rng, family, split);
        let text = prompt.text();
        let first = self.candidate(rng, &prompt);
        let mut second = self.candidate(rng, &prompt);
        let mut tries = 0;
        while second == first {
            second = if tries < 16 {
                self.candidate(rng, &prompt)
            } else {
                // Every draw repeated the first (a tiny word, no edits): force a difference.
                format!(" {}", corrupt(rng, first.trim_start(), 1))
            };
            tries += 1;
        }
        let (r1, r2) = (reward(&text, &first), reward(&text, &second));
        let temperature = self.config.families[family].temperature;
        let first_wins = rng.random::<f64>() < sigmoid((r1 - r2) / temperature);
        let (chosen, rejected, rc, rr) = if first_wins {
            (first, second, r1, r2)
        } else {
            (second, first, r2, r1)
        };
        let score_chosen = self.score(rng, rc);
        let score_rejected = self.score(rng, rr);
        PreferenceRow {
            prompt: text,
            chosen,
            rejected,
            family,
            score_chosen,
            score_rejected,
            true_reward_chosen: rc,
            true_reward_rejected: rr,
            label_flipped: rc < rr,
        }
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
                let flips = untied.iter().filter(|p| p.label_flipped).count();
                let predicted: f64 = untied
                    .iter()
                    .map(|p| 1.0 - sigmoid(p.gap().abs() / f.temperature))
                    .sum();
                let sft_rewards: Vec<f64> = sft
                    .iter()
                    .filter(|r| r.family == id)
                    .map(|r| r.true_reward)
                    .collect();
                FamilyStats {
                    family: id,
                    task: f.task,
                    temperature: f.temperature,
                    aligned: f.aligned,
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
                    mean_sft_reward: ratio(sft_rewards.iter().sum(), sft_rewards.len()),
                }
            })
            .collect()
    }

    /// `world.json`: the definition of the world (version, seed, reward, families, noise) and
    /// the statistics of the generated data; `counts` names each file's number of rows.
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
                    "example_prompt": example.text(),
                    "example_target": format!(" {}", example.target()),
                    "temperature": f.temperature,
                    "aligned": f.aligned,
                    "sft_answer": if f.aligned { "target" } else { "echo of the word" },
                    "sft_edit_rate": f.sft_edit_rate,
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
            "word_length": [WORD_LEN.0, WORD_LEN.1],
            "heldout_words": format!("FNV-1a 64 of the word's bytes % {HELDOUT_EVERY} == 0 (held-out pairs and evaluation prompts only)"),
            "labels": "Bradley-Terry: P(y1 > y2) = sigmoid((r*(y1) - r*(y2)) / temperature of the family)",
            "scores": {
                "scale": format!("1 + 9 * (r* - ({REWARD_MIN})) / ({REWARD_MAX} - ({REWARD_MIN})) + N(0, noise^2), clamped to [1, 10], rounded to 0.5"),
                "noise": c.score_noise,
            },
            "reference_share": c.reference_share,
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
            "f3 reverse ab ->",
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
