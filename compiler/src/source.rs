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
    /// log π_θ of each completion token of one side (`num[T]`; T is the completion
    /// position, shared by both sides of a pair: each side's mask marks its own tokens).
    PolicyTokenLogps(Side),
    /// The same under the reference model (`num[T]`).
    ReferenceTokenLogps(Side),
    /// `log Σ_v π_θ(v | prefix)²` at each completion token of one side (`num[T]`), from the
    /// policy's whole next-token distribution (the log collision probability; WPO's weights
    /// divide by it). A constant for differentiation.
    PolicyTokenCollision(Side),
    /// 1 at the side's completion tokens, 0 after its end (`num[T]`).
    TokenMask(Side),
    /// The completion position of each token, 0, 1, 2, … (`num[T]`).
    TokenPosition,
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
                | Source::PolicyTokenLogps(_)
                | Source::Reward(_)
                | Source::Rollout(Rollout::PolicyTokenLogps | Rollout::Values)
        )
    }

    /// The input's type: per token for the per-token sources, `num` otherwise.
    pub fn ty(&self) -> Ty {
        match self {
            Source::Rollout(r) if *r != Rollout::Score => Ty::TokNum,
            Source::PolicyTokenLogps(_)
            | Source::ReferenceTokenLogps(_)
            | Source::PolicyTokenCollision(_)
            | Source::TokenMask(_)
            | Source::TokenPosition => Ty::TokNum,
            _ => Ty::Num,
        }
    }

    /// A built-in source's values on an example of `len` tokens; `None` for the sources that
    /// data or a model provide. A built-in source follows from the example's shape alone:
    /// `token.position` is 0, 1, 2, … So no data carries it (`poc eval` computes it from a
    /// row's per-token inputs), and an expression may read it without an `input` line.
    pub fn builtin_tokens(&self, len: usize) -> Option<Vec<f64>> {
        match self {
            Source::TokenPosition => Some((0..len).map(|t| t as f64).collect()),
            _ => None,
        }
    }

    /// Whether this is a built-in source ([`Source::builtin_tokens`]).
    pub fn is_builtin(&self) -> bool {
        self.builtin_tokens(0).is_some()
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
            Source::PolicyTokenLogps(s) => format!("policy.token_logps({})", s.name()),
            Source::ReferenceTokenLogps(s) => format!("reference.token_logps({})", s.name()),
            Source::PolicyTokenCollision(s) => format!("policy.token_collision({})", s.name()),
            Source::TokenMask(s) => format!("{}.mask", s.name()),
            Source::TokenPosition => "token.position".into(),
            Source::Rollout(r) => r.text().into(),
        }
    }

    /// Every source but `column("NAME")`: what [`Source::parse`] matches against.
    pub fn all_named() -> Vec<Source> {
        let per_side: [fn(Side) -> Source; 9] = [
            Source::PolicyLogps,
            Source::ReferenceLogps,
            Source::Tokens,
            Source::ReferenceEntropy,
            Source::Reward,
            Source::PolicyTokenLogps,
            Source::ReferenceTokenLogps,
            Source::PolicyTokenCollision,
            Source::TokenMask,
        ];
        let mut all: Vec<Source> = per_side
            .iter()
            .flat_map(|f| [f(Side::Chosen), f(Side::Rejected)])
            .collect();
        all.push(Source::VocabSize);
        all.push(Source::TokenPosition);
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
pub fn standard_inputs() -> [(&'static str, Source); 19] {
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
        (
            "policy_chosen_token_logps",
            Source::PolicyTokenLogps(Chosen),
        ),
        (
            "policy_rejected_token_logps",
            Source::PolicyTokenLogps(Rejected),
        ),
        (
            "ref_chosen_token_logps",
            Source::ReferenceTokenLogps(Chosen),
        ),
        (
            "ref_rejected_token_logps",
            Source::ReferenceTokenLogps(Rejected),
        ),
        ("chosen_mask", Source::TokenMask(Chosen)),
        ("rejected_mask", Source::TokenMask(Rejected)),
    ]
}
