//! `poc split`: MPO's easy/hard split by a reward model's gap (poc_pipelines::split).

use crate::edge::Failure;
use poc_pipelines::split::{self, SplitOptions};
use std::path::PathBuf;

/// Arguments of `poc split`.
#[derive(Debug, Clone, clap::Args)]
pub struct SplitArgs {
    /// The reward model: a directory written by `poc run bt_reward.po` (an HF
    /// LlamaForSequenceClassification checkpoint with tokenizer.json).
    #[arg(long, value_name = "DIR")]
    pub reward_model: PathBuf,
    /// TRL preference rows to split: a .jsonl, .json or .parquet file, or a directory or Hub
    /// dataset id ORG/NAME[@REVISION] (its `train` split).
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// δ: a pair is easy when its reward gap r(chosen) − r(rejected) exceeds δ. The default 1
    /// is the MPO paper's observation that most HH-RLHF pairs lie within a gap of 1; the gap
    /// is signed, so a pair the reward model ranks the wrong way round is always hard.
    #[arg(long, value_name = "DELTA", default_value_t = 1.0)]
    pub threshold: f64,
    /// Where easy.jsonl, hard.jsonl and gaps.png go.
    #[arg(long, value_name = "DIR", default_value = "split")]
    pub out: PathBuf,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Pairs per forward.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Truncation length (as `poc run`).
    #[arg(long, default_value_t = 512)]
    pub max_length: usize,
}

impl From<SplitArgs> for SplitOptions {
    fn from(a: SplitArgs) -> Self {
        SplitOptions {
            reward_model: a.reward_model,
            data: a.data,
            threshold: a.threshold,
            out: a.out,
            device: a.device,
            batch_size: a.batch_size,
            max_length: a.max_length,
        }
    }
}

/// Runs `poc split`.
pub fn run(args: SplitArgs) -> Result<(), Failure> {
    Ok(split::run(&args.into())?)
}
