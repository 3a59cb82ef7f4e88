//! Value parsers for numeric flags: every number is checked against its allowed range when
//! the command line is parsed (clap then names the flag, the value and the range, exit code 2),
//! so a bad value never reaches a run that would blame something else for it.

/// A float that must be finite.
fn finite(s: &str) -> Result<f64, String> {
    let x: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))?;
    if x.is_finite() {
        Ok(x)
    } else {
        Err("must be a finite number".into())
    }
}

/// A finite float above 0 (learning rates, temperatures, timeouts, LoRA's α).
pub fn positive(s: &str) -> Result<f64, String> {
    let x = finite(s)?;
    if x > 0.0 {
        Ok(x)
    } else {
        Err("must be a finite number above 0".into())
    }
}

/// A finite float of at least 0 (weight decay, a clipping norm where 0 disables).
pub fn non_negative(s: &str) -> Result<f64, String> {
    let x = finite(s)?;
    if x >= 0.0 {
        Ok(x)
    } else {
        Err("must be a finite number of at least 0".into())
    }
}

/// A fraction in [0, 1] (warm-up ratio).
pub fn fraction(s: &str) -> Result<f64, String> {
    let x = finite(s)?;
    if (0.0..=1.0).contains(&x) {
        Ok(x)
    } else {
        Err("must lie in [0, 1]".into())
    }
}

/// A fraction in [0, 1) (a held-out share: something must remain to train on).
pub fn held_out_fraction(s: &str) -> Result<f64, String> {
    let x = finite(s)?;
    if (0.0..1.0).contains(&x) {
        Ok(x)
    } else {
        Err("must lie in [0, 1): the rest is trained on".into())
    }
}

/// A count of at least 1 (batch sizes, steps, epochs, ranks).
pub fn at_least_one(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number"))?;
    if n >= 1 {
        Ok(n)
    } else {
        Err("must be at least 1".into())
    }
}

/// A sequence length of at least 4 tokens (a prompt and a completion need room).
pub fn max_length(s: &str) -> Result<usize, String> {
    let n = at_least_one(s)?;
    if n >= 4 {
        Ok(n)
    } else {
        Err("must be at least 4 tokens".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        for bad in ["nan", "inf", "-inf", "0", "-1", "x", ""] {
            assert!(positive(bad).is_err(), "{bad}");
        }
        assert_eq!(positive("1e-6"), Ok(1e-6));
        assert!(non_negative("-0.1").is_err() && non_negative("nan").is_err());
        assert_eq!(non_negative("0"), Ok(0.0));
        assert!(fraction("1.5").is_err() && fraction("-0.1").is_err());
        assert_eq!(fraction("1"), Ok(1.0));
        assert!(held_out_fraction("1").is_err());
        assert!(at_least_one("0").is_err() && at_least_one("-2").is_err());
        assert_eq!(at_least_one("3"), Ok(3));
        assert!(max_length("3").is_err());
    }
}
