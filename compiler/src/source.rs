//! Where an input's value comes from: the observables the runtime knows ([`Source`]), their
//! one spelling table ([`Source::text`], read back by [`Source::parse`]) and the standard
//! input names that imply a source.

use crate::ops::Ty;
use poc_grammar::SourceExpr;

/// Which completion of the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Side {
    /// The preferred completion.
    Chosen,
    /// The dispreferred completion.
    Rejected,
}

impl Side {
    /// `chosen` / `rejected`.
    pub fn name(self) -> &'static str {
        match self {
            Side::Chosen => "chosen",
            Side::Rejected => "rejected",
        }
    }
}

/// What the runtime must compute (or read) for an input: the observables it knows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Source {
    /// Σ log π_θ over the completion's tokens.
    PolicyLogps(Side),
    /// The same under the reference model.
    ReferenceLogps(Side),
    /// Number of completion tokens.
    Tokens(Side),
    /// Mean full-vocabulary entropy of the reference over the completion (nats).
    ReferenceEntropy(Side),
    /// The model's vocabulary size.
    VocabSize,
    /// A reward model's scalar output.
    Reward(Side),
    /// A numeric dataset column.
    Column(String),
    /// An observable of a sampled completion (on-policy RL).
    Rollout(Rollout),
}

/// Observables of a completion sampled from the policy (on-policy RL such as PPO): the
/// runtime generates the completion, scores it, and runs the models over its tokens. Per-token
/// sources are `num[T]`: one value per completion token, padding included, with the mask
/// telling which tokens are real.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Rollout {
    /// log π_θ of each completion token (`num[T]`).
    PolicyTokenLogps,
    /// The same under the policy that sampled the completion (`num[T]`).
    OldPolicyTokenLogps,
    /// The same under the reference model (`num[T]`).
    ReferenceTokenLogps,
    /// The trained value head's estimate at each token (`num[T]`).
    Values,
    /// The value head's estimate when the completion was sampled (`num[T]`).
    OldValues,
    /// The reward model's score of the whole completion (`num`).
    Score,
    /// 1 at completion tokens, 0 at padding (`num[T]`).
    Mask,
}

impl Rollout {
    /// Every rollout source, in documentation order.
    pub const ALL: [Rollout; 7] = [
        Rollout::PolicyTokenLogps,
        Rollout::OldPolicyTokenLogps,
        Rollout::ReferenceTokenLogps,
        Rollout::Values,
        Rollout::OldValues,
        Rollout::Score,
        Rollout::Mask,
    ];

    /// The canonical source text (the one spelling table with [`Source::text`]).
    pub fn text(self) -> &'static str {
        match self {
            Rollout::PolicyTokenLogps => "policy.token_logps(completion)",
            Rollout::OldPolicyTokenLogps => "old_policy.token_logps(completion)",
            Rollout::ReferenceTokenLogps => "reference.token_logps(completion)",
            Rollout::Values => "value_head(completion)",
            Rollout::OldValues => "old_value_head(completion)",
            Rollout::Score => "score(completion)",
            Rollout::Mask => "completion.mask",
        }
    }
}

impl Source {
    /// Whether the loss is differentiated with respect to this input.
    pub fn differentiable(&self) -> bool {
        matches!(
            self,
            Source::PolicyLogps(_)
                | Source::Reward(_)
                | Source::Rollout(Rollout::PolicyTokenLogps | Rollout::Values)
        )
    }

    /// The input's type: per token for the per-token rollout sources, `num` otherwise.
    pub fn ty(&self) -> Ty {
        match self {
            Source::Rollout(r) if *r != Rollout::Score => Ty::TokNum,
            _ => Ty::Num,
        }
    }

    /// The canonical source text (`policy.logps(chosen)`): how `--emit typed`, `poc explain`
    /// and the runtime's messages print a source, and what [`Source::parse`] reads back.
    pub fn text(&self) -> String {
        match self {
            Source::PolicyLogps(s) => format!("policy.logps({})", s.name()),
            Source::ReferenceLogps(s) => format!("reference.logps({})", s.name()),
            Source::Tokens(s) => format!("tokens({})", s.name()),
            Source::ReferenceEntropy(s) => format!("reference.entropy({})", s.name()),
            Source::VocabSize => "vocab_size".into(),
            Source::Reward(s) => format!("reward({})", s.name()),
            Source::Column(c) => format!("column(\"{c}\")"),
            Source::Rollout(r) => r.text().into(),
        }
    }

    /// Every source but `column("NAME")`: what [`Source::parse`] matches against.
    pub fn all_named() -> Vec<Source> {
        let per_side: [fn(Side) -> Source; 5] = [
            Source::PolicyLogps,
            Source::ReferenceLogps,
            Source::Tokens,
            Source::ReferenceEntropy,
            Source::Reward,
        ];
        let mut all: Vec<Source> = per_side
            .iter()
            .flat_map(|f| [f(Side::Chosen), f(Side::Rejected)])
            .collect();
        all.push(Source::VocabSize);
        all.extend(Rollout::ALL.map(Source::Rollout));
        all
    }

    /// The source written as `src`: its canonical text ([`Source::text`]), with `ref.` accepted
    /// for `reference.`; `None` for a source the runtime does not know.
    pub fn parse(src: &SourceExpr) -> Option<Source> {
        if let SourceExpr::Column { name, .. } = src {
            return Some(Source::Column(name.clone()));
        }
        let text = poc_grammar::print::source_text(src);
        let text = match text.strip_prefix("ref.") {
            Some(rest) => format!("reference.{rest}"),
            None => text,
        };
        Source::all_named().into_iter().find(|s| s.text() == text)
    }

    /// The source implied by one of the standard input names ([`standard_inputs`]).
    pub fn standard(name: &str) -> Option<Source> {
        standard_inputs()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s)
    }
}

/// The standard input names with the sources they imply, in documentation order: an input
/// declared with one of these names and no `from` reads that source.
pub fn standard_inputs() -> [(&'static str, Source); 13] {
    use Side::*;
    [
        ("policy_chosen_logps", Source::PolicyLogps(Chosen)),
        ("policy_rejected_logps", Source::PolicyLogps(Rejected)),
        ("ref_chosen_logps", Source::ReferenceLogps(Chosen)),
        ("ref_rejected_logps", Source::ReferenceLogps(Rejected)),
        ("chosen_len", Source::Tokens(Chosen)),
        ("rejected_len", Source::Tokens(Rejected)),
        ("ref_chosen_entropy", Source::ReferenceEntropy(Chosen)),
        ("ref_rejected_entropy", Source::ReferenceEntropy(Rejected)),
        ("vocab_size", Source::VocabSize),
        ("score_chosen", Source::Column("score_chosen".into())),
        ("score_rejected", Source::Column("score_rejected".into())),
        ("reward_chosen", Source::Reward(Chosen)),
        ("reward_rejected", Source::Reward(Rejected)),
    ]
}
