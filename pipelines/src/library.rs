//! The shipped objective library, embedded in the binary so `poc list`, `poc explain dpo`
//! and the embedded demo work from any directory.

/// (name, source) of every file in `objectives/`.
pub const SHIPPED: [(&str, &str); 22] = [
    ("dpo", include_str!("../../objectives/dpo.po")),
    ("ipo", include_str!("../../objectives/ipo.po")),
    ("hinge", include_str!("../../objectives/hinge.po")),
    ("robust", include_str!("../../objectives/robust.po")),
    ("exo_pair", include_str!("../../objectives/exo_pair.po")),
    ("nca_pair", include_str!("../../objectives/nca_pair.po")),
    ("bco_pair", include_str!("../../objectives/bco_pair.po")),
    ("sppo_hard", include_str!("../../objectives/sppo_hard.po")),
    ("apo_zero", include_str!("../../objectives/apo_zero.po")),
    ("apo_down", include_str!("../../objectives/apo_down.po")),
    ("discopop", include_str!("../../objectives/discopop.po")),
    ("simpo", include_str!("../../objectives/simpo.po")),
    ("orpo", include_str!("../../objectives/orpo.po")),
    ("mipo", include_str!("../../objectives/mipo.po")),
    (
        "mallows_theta",
        include_str!("../../objectives/mallows_theta.po"),
    ),
    (
        "mallows_theta_simpo",
        include_str!("../../objectives/mallows_theta_simpo.po"),
    ),
    (
        "mallows_phi",
        include_str!("../../objectives/mallows_phi.po"),
    ),
    ("mmpo", include_str!("../../objectives/mmpo.po")),
    (
        "mmpo_reward",
        include_str!("../../objectives/mmpo_reward.po"),
    ),
    ("bt_reward", include_str!("../../objectives/bt_reward.po")),
    ("ppo", include_str!("../../objectives/ppo.po")),
    ("sft", include_str!("../../objectives/sft.po")),
];

/// The embedded source of a shipped objective.
pub fn shipped(name: &str) -> Option<&'static str> {
    SHIPPED.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// A shipped objective, compiled. A shipped objective that is missing or does not compile is
/// a bug in poc, not the user's doing.
pub fn compiled(name: &str) -> crate::Result<poc_compiler::Compiled> {
    let src = shipped(name)
        .ok_or_else(|| crate::Error::Internal(format!("`{name}` is not a shipped objective")))?;
    poc_compiler::compile(src)
        .map_err(|e| crate::Error::Internal(format!("shipped objective `{name}`: {e}")))
}
