//! The shipped objectives (`objectives/*.po`), embedded: what `use dpo` resolves to, and what
//! `poc list` and `poc explain NAME` show.

/// (name, source) of every file in `objectives/`.
pub const SHIPPED: [(&str, &str); 31] = [
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
    (
        "sigmoid_norm",
        include_str!("../../objectives/sigmoid_norm.po"),
    ),
    ("fdpo_js", include_str!("../../objectives/fdpo_js.po")),
    ("fdpo_alpha", include_str!("../../objectives/fdpo_alpha.po")),
    ("aot", include_str!("../../objectives/aot.po")),
    ("aot_pair", include_str!("../../objectives/aot_pair.po")),
    ("wpo", include_str!("../../objectives/wpo.po")),
    ("ld_dpo", include_str!("../../objectives/ld_dpo.po")),
    ("rpo", include_str!("../../objectives/rpo.po")),
    (
        "dpo_bco_sft",
        include_str!("../../objectives/dpo_bco_sft.po"),
    ),
];

/// The embedded source of a shipped objective.
pub fn shipped(name: &str) -> Option<&'static str> {
    SHIPPED.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Where `use "file.po"` reads files: the compiler is pure, so the caller that knows the file
/// system supplies this (`poc`'s is `poc_pipelines::library::Dir`).
pub trait Files {
    /// The file `path`, as written in a `use` of the file `from` (the key this returned for
    /// it; `None`: the file being compiled): its key (e.g. its canonical path, which also
    /// detects cycles) and text, or why it cannot be read.
    fn read(&self, from: Option<&str>, path: &str) -> Result<(String, String), String>;
}

/// No file system: the source was given as text, so only shipped objectives can be used.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFiles;

impl Files for NoFiles {
    fn read(&self, _from: Option<&str>, path: &str) -> Result<(String, String), String> {
        Err(format!(
            "`{path}` cannot be read: this objective was given as text, not as a file, so only shipped objectives can be used"
        ))
    }
}
