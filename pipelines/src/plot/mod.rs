//! PNG figures (`poc plot`; the compiler crate stays pure).
//!
//! Two kinds of figure:
//! - **objectives**: the loss and its derivative dL/dΔ against the implicit reward margin Δ,
//!   several objectives overlaid. The values come from the compiled program run on the f64
//!   interpreter, the derivative from the compiler's own symbolic gradient (chain rule, no
//!   finite differences).
//! - **runs**: a training run's `metrics.jsonl` (loss, gradient norm, learning rate and every
//!   metric) against the step, as small multiples.
//!
//! Δ is defined by input *sources*, never by objective name: every differentiable input (policy
//! log-probs, rewards) moves by +Δ/2 on the chosen side and by −Δ/2 on the rejected side from
//! its value at Δ = 0. Held at a reference that equals the policy at Δ = 0, the chosen log-ratio
//! is +Δ/2 and the rejected one −Δ/2, so Δ is the log-ratio margin, and
//! dL/dΔ = ½·Σ_chosen ∂L/∂x − ½·Σ_rejected ∂L/∂x.

pub mod draw;
pub mod objectives;
pub mod runs;

use crate::{Error, Result};
use std::path::PathBuf;

/// How to draw: every `poc plot` flag but the targets. The objective-only ones (`sets` to
/// `normalize`) must keep their defaults for runs.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotOptions {
    /// The PNG to write (default: plot.png for objectives, RUN_DIR/curves.png for one run).
    pub out: Option<PathBuf>,
    /// `[OBJECTIVE.]NAME=VALUE` parameter overrides.
    pub sets: Vec<String>,
    /// `[OBJECTIVE.]INPUT=VALUE` held inputs.
    pub at: Vec<String>,
    /// The interval of Δ, `LO:HI`.
    pub range: String,
    /// Number of Δ samples.
    pub points: usize,
    /// Also write the sampled table here.
    pub csv: Option<PathBuf>,
    /// The loss panel's vertical axis, `LO:HI`.
    pub loss_axis: Option<String>,
    /// The dL/dΔ panel's vertical axis, `LO:HI`.
    pub grad_axis: Option<String>,
    /// Divide each curve by its magnitude at Δ = 0.
    pub normalize: bool,
    /// Image size, `WxH`.
    pub size: Option<String>,
}

impl Default for PlotOptions {
    /// `poc plot` with no flags.
    fn default() -> Self {
        PlotOptions {
            out: None,
            sets: Vec::new(),
            at: Vec::new(),
            range: "-20:20".into(),
            points: 401,
            csv: None,
            loss_axis: None,
            grad_axis: None,
            normalize: false,
            size: None,
        }
    }
}

pub(crate) fn parse_range(flag: &str, text: &str) -> Result<(f64, f64)> {
    let bad = || {
        Error::User(format!(
            "poc: `{flag} {text}`: expected LO:HI with finite numbers LO < HI (e.g. -20:20)\n"
        ))
    };
    let (lo, hi) = text.split_once(':').ok_or_else(bad)?;
    let lo: f64 = lo.trim().parse().map_err(|_| bad())?;
    let hi: f64 = hi.trim().parse().map_err(|_| bad())?;
    if lo.is_finite() && hi.is_finite() && lo < hi {
        Ok((lo, hi))
    } else {
        Err(bad())
    }
}

pub(crate) fn parse_size(text: Option<&str>, default: (u32, u32)) -> Result<(u32, u32)> {
    let Some(text) = text else {
        return Ok(default);
    };
    let bad = || {
        Error::User(format!(
            "poc: `--size {text}`: expected WIDTHxHEIGHT in pixels, each 200 to 8000 (e.g. 1000x800)\n"
        ))
    };
    let (w, h) = text.split_once(['x', 'X']).ok_or_else(bad)?;
    let w: u32 = w.trim().parse().map_err(|_| bad())?;
    let h: u32 = h.trim().parse().map_err(|_| bad())?;
    if (200..=8000).contains(&w) && (200..=8000).contains(&h) {
        Ok((w, h))
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_reject_nonsense() {
        assert_eq!(parse_range("--range", "-20:20").ok(), Some((-20.0, 20.0)));
        assert!(parse_range("--range", "3:1").is_err());
        assert!(parse_range("--range", "nan:1").is_err());
        assert!(parse_range("--range", "1").is_err());
    }
}
