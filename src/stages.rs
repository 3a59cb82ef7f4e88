//! The command lines of pipeline stages: a typed [`Stage`] (poc_pipelines::stage) written as
//! the arguments of the `poc` command it describes. The flags are the binary's, so this is
//! where they are spelled; the tests parse every kind of stage back with the real command line
//! and check that it reads as the same value, so renaming a flag breaks here, at test time.

use poc_pipelines::mpo::{MpoOptions, RewardModel};
use poc_pipelines::split::SplitOptions;
use poc_pipelines::stage::{RunStage, Stage};
use poc_pipelines::world::WorldOptions;
use std::ffi::{OsStr, OsString};
use std::fmt::Display;

/// A command line being written.
#[derive(Default)]
struct Argv(Vec<OsString>);

impl Argv {
    fn word(&mut self, w: impl AsRef<OsStr>) -> &mut Self {
        self.0.push(w.as_ref().to_os_string());
        self
    }

    /// `--flag VALUE`, or `--flag=VALUE` for a value that begins with `-` (a negative
    /// number), which would otherwise read as a flag.
    fn path(&mut self, flag: &str, value: impl AsRef<OsStr>) -> &mut Self {
        let value = value.as_ref();
        if value.to_string_lossy().starts_with('-') {
            let mut joined = OsString::from(format!("{flag}="));
            joined.push(value);
            return self.word(joined);
        }
        self.word(flag).word(value)
    }

    /// `--flag VALUE` for a number or a string.
    fn value(&mut self, flag: &str, value: impl Display) -> &mut Self {
        self.path(flag, value.to_string())
    }

    /// `--flag VALUE` when there is a value.
    fn optional<T>(&mut self, flag: &str, value: Option<T>) -> &mut Self
    where
        T: Display,
    {
        if let Some(v) = value {
            self.value(flag, v);
        }
        self
    }

    /// `--flag VALUE` when there is a path.
    fn optional_path(&mut self, flag: &str, value: Option<impl AsRef<OsStr>>) -> &mut Self {
        if let Some(v) = value {
            self.path(flag, v);
        }
        self
    }

    /// `--flag` when it is on.
    fn switch(&mut self, flag: &str, on: bool) -> &mut Self {
        if on {
            self.word(flag);
        }
        self
    }

    /// `--flag VALUE` once per value, in order.
    fn each(&mut self, flag: &str, values: &[String]) -> &mut Self {
        for v in values {
            self.value(flag, v);
        }
        self
    }
}

/// The arguments of the `poc` command that runs `stage` (without the program name).
pub fn command_line(stage: &Stage) -> Vec<OsString> {
    let mut a = Argv::default();
    match stage {
        Stage::World(w) => world(&mut a, w),
        Stage::Run(r) => run(&mut a, r),
        Stage::Split(s) => split(&mut a, s),
        Stage::Mpo(m) => mpo(&mut a, m),
    }
    a.0
}

fn world(a: &mut Argv, w: &WorldOptions) {
    a.word("world")
        .path("--out", &w.out)
        .value("--seed", w.seed)
        .value("--pairs", w.pairs)
        .value("--heldout", w.heldout)
        .value("--sft", w.sft)
        .value("--eval-prompts", w.eval_prompts)
        .value("--candidates", w.candidates.name());
}

fn run(a: &mut Argv, r: &RunStage) {
    a.word("run")
        .word(&r.objective)
        .value("--model", &r.model)
        .optional_path("--data", r.data.as_ref())
        .optional_path("--eval-data", r.eval_data.as_ref())
        .value("--eval-every", r.eval_every)
        .optional_path("--reward-model", r.reward_model.as_ref())
        .optional("--reward", r.world_reward.then_some("world"))
        .optional_path("--prompts", r.prompts.as_ref())
        .path("--out", &r.out)
        .value("--max-steps", r.max_steps)
        .value("--batch-size", r.batch_size)
        .value("--seed", r.seed)
        .optional("--lr", r.lr)
        .value("--device", &r.device)
        .value("--save-every", r.save_every)
        .value("--max-new-tokens", r.max_new_tokens)
        .optional("--lora", r.lora)
        .each("--set", &r.sets)
        .optional_path("--resume", r.resume.as_ref())
        .switch("--no-progress", r.no_progress)
        .optional("--nproc", r.nproc);
}

fn split(a: &mut Argv, s: &SplitOptions) {
    a.word("split")
        .path("--reward-model", &s.reward_model)
        .path("--data", &s.data)
        .value("--threshold", s.threshold)
        .path("--out", &s.out)
        .value("--device", &s.device)
        .value("--batch-size", s.batch_size)
        .value("--max-length", s.max_length);
}

fn mpo(a: &mut Argv, m: &MpoOptions) {
    a.word("mpo")
        .value("--model", &m.model)
        .optional_path("--data", m.data.as_ref())
        .path("--out", &m.out)
        .value("--threshold", m.threshold);
    // `--reward-steps` and `--reward-lr` conflict with `--reward-model`.
    match &m.reward {
        RewardModel::Train { steps, lr } => {
            a.value("--reward-steps", steps)
                .optional("--reward-lr", *lr);
        }
        RewardModel::Given(dir) => {
            a.path("--reward-model", dir);
        }
        RewardModel::World => {
            a.value("--reward", "world");
        }
    }
    a.value("--dpo-steps", m.dpo_steps)
        .value("--ppo-steps", m.ppo_steps)
        .value("--batch-size", m.batch_size)
        .value("--max-new-tokens", m.max_new_tokens)
        .value("--device", &m.device)
        .optional("--nproc", m.nproc)
        .value("--seed", m.seed)
        .optional("--lora", m.lora)
        .value("--save-every", m.save_every)
        .optional("--lr", m.lr)
        .switch("--no-progress", m.no_progress)
        .each("--set", &m.sets);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{BenchCommand, Cli, Command};
    use crate::commands::run::RunArgs;
    use clap::Parser;
    use poc_pipelines::align::AlignOptions;
    use poc_pipelines::plot::PlotOptions;
    use std::path::PathBuf;

    /// The `poc run` flags a [`RunStage`] sets, read back from parsed arguments.
    fn run_stage_of(objective: String, a: &RunArgs) -> RunStage {
        RunStage {
            objective,
            model: a.model.clone(),
            data: a.data.clone(),
            eval_data: a.eval_data.clone(),
            eval_every: a.eval_every,
            reward_model: a.reward_model.clone(),
            world_reward: a.reward.as_deref() == Some("world"),
            prompts: a.prompts.clone(),
            out: a.out.clone().unwrap_or_default(),
            max_steps: a.max_steps.unwrap_or_default(),
            batch_size: a.batch_size,
            seed: a.seed,
            lr: a.lr,
            device: a.device.clone(),
            save_every: a.save_every,
            max_new_tokens: a.max_new_tokens,
            lora: a.lora,
            sets: a.sets.clone(),
            resume: a.resume.clone(),
            no_progress: a.no_progress,
            nproc: a.nproc.map(|n| n as usize),
        }
    }

    /// `stage` written as a command line, parsed by the real command line, read back.
    fn round_trip(stage: &Stage) -> Stage {
        let argv = std::iter::once(OsString::from("poc")).chain(command_line(stage));
        let cli = match Cli::try_parse_from(argv) {
            Ok(cli) => cli,
            Err(e) => panic!("{stage:?} does not parse:\n{e}"),
        };
        match cli.command {
            Command::World(a) => Stage::World(a.into()),
            Command::Run { objective, args } => Stage::Run(run_stage_of(objective, &args)),
            Command::Split(a) => Stage::Split(a.into()),
            Command::Mpo(a) => Stage::Mpo(a.into()),
            other => panic!("{stage:?} parsed as {other:?}"),
        }
    }

    fn parse(args: &[&str]) -> Command {
        match Cli::try_parse_from(std::iter::once("poc").chain(args.iter().copied())) {
            Ok(cli) => cli.command,
            Err(e) => panic!("{args:?} does not parse:\n{e}"),
        }
    }

    #[test]
    fn every_kind_of_stage_parses_back_to_itself() {
        let world = WorldOptions {
            out: PathBuf::from("out dir/world"),
            seed: 7,
            pairs: 96,
            heldout: 48,
            sft: 96,
            eval_prompts: 12,
            candidates: poc_runtime::data::world::Candidates::NearMiss,
        };
        let bare_run = RunStage::new("bt_reward", PathBuf::from("o/rm"), 8);
        let full_run = RunStage {
            model: "o/reference/checkpoint-12".into(),
            data: Some("o/world/train.jsonl".into()),
            eval_data: Some("o/world/heldout.jsonl".into()),
            eval_every: 10,
            reward_model: Some("o/rm/checkpoint-8".into()),
            prompts: Some("o/world/prompts.jsonl".into()),
            batch_size: 16,
            seed: 3,
            lr: Some(2e-4),
            device: "cuda:1".into(),
            save_every: 5,
            max_new_tokens: 12,
            lora: Some(4),
            sets: vec!["beta=0.2".into(), "kl_coef=0.05".into()],
            resume: Some("o/ppo/checkpoint-2".into()),
            no_progress: true,
            nproc: Some(2),
            ..RunStage::new("objectives/ppo.po", PathBuf::from("o/ppo"), 40)
        };
        let oracle_run = RunStage {
            world_reward: true,
            prompts: Some("o/world/train.jsonl".into()),
            ..RunStage::new("ppo", PathBuf::from("o/ppo_oracle"), 4)
        };
        let split = SplitOptions {
            threshold: -0.5,
            device: "cuda".into(),
            batch_size: 4,
            max_length: 256,
            ..SplitOptions::new("rm".into(), "prefs.jsonl".into(), "split".into())
        };
        let mpo_trained = MpoOptions {
            data: Some("prefs.jsonl".into()),
            reward: RewardModel::Train {
                steps: 30,
                lr: Some(1e-4),
            },
            lora: Some(8),
            lr: Some(5e-6),
            no_progress: true,
            nproc: Some(2),
            sets: vec!["dpo.beta=0.2".into(), "ppo.kl_coef=0.1".into()],
            ..MpoOptions::new("./sft", "runs/mpo".into())
        };
        let mpo_oracle = MpoOptions {
            reward: RewardModel::World,
            ..MpoOptions::new("tiny", "o/runs/seed1/mpo_oracle".into())
        };
        let mpo_given = MpoOptions {
            reward: RewardModel::Given("runs/rm/checkpoint-100".into()),
            threshold: 0.25,
            ..MpoOptions::new("tiny", "o/runs/seed1/mpo".into())
        };
        for stage in [
            Stage::World(world),
            Stage::World(WorldOptions::default()),
            Stage::Run(bare_run),
            Stage::Run(full_run),
            Stage::Run(oracle_run),
            Stage::Split(split),
            Stage::Mpo(mpo_trained),
            Stage::Mpo(mpo_oracle),
            Stage::Mpo(mpo_given),
        ] {
            assert_eq!(round_trip(&stage), stage);
        }
    }

    #[test]
    fn the_library_defaults_are_the_command_lines() {
        let Command::World(w) = parse(&["world"]) else {
            panic!("not world")
        };
        assert_eq!(WorldOptions::from(w), WorldOptions::default());
        let Command::Split(s) = parse(&["split", "--reward-model", "rm", "--data", "d"]) else {
            panic!("not split")
        };
        assert_eq!(
            SplitOptions::from(s),
            SplitOptions::new("rm".into(), "d".into(), "split".into())
        );
        let Command::Mpo(m) = parse(&["mpo"]) else {
            panic!("not mpo")
        };
        assert_eq!(
            MpoOptions::from(m),
            MpoOptions::new("tiny", "runs/mpo".into())
        );
        let Command::Run { objective, args } =
            parse(&["run", "dpo", "--out", "o", "--max-steps", "3"])
        else {
            panic!("not run")
        };
        assert_eq!(
            run_stage_of(objective, &args),
            RunStage::new("dpo", "o".into(), 3)
        );
        let Command::Plot(p) = parse(&["plot", "dpo"]) else {
            panic!("not plot")
        };
        assert_eq!(p.into_parts().1, PlotOptions::default());
        let Command::Bench {
            which: BenchCommand::Align(a),
        } = parse(&["bench", "align", "--quick"])
        else {
            panic!("not bench align")
        };
        let a = AlignOptions::from(a);
        assert!(a.quick && a.objectives.is_empty() && a.world_seed == 1);
    }
}
