//! Runs: a training run's metrics.jsonl (loss, gradient norm, learning rate, every metric)
//! against the step, as small multiples; several runs overlaid.

use super::draw::{FONT, Series, draw_error, finite_range, padded, panel, render};
use super::{PlotOptions, parse_size};
use crate::{Error, Result, jsonl};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One run's logged series, in first-seen order (loss, grad_norm, lr, then the metrics).
struct RunLog {
    name: String,
    steps: Vec<f64>,
    series: Vec<(String, Vec<f64>)>,
}

/// Draws the runs in `dirs` (their metrics.jsonl against the step) as `args` asks; returns the
/// PNG written.
pub fn plot(dirs: &[PathBuf], args: &PlotOptions) -> Result<PathBuf> {
    let objectives_only = PlotOptions {
        out: args.out.clone(),
        size: args.size.clone(),
        ..PlotOptions::default()
    };
    if *args != objectives_only {
        return Err(Error::User(
            "poc plot: --set, --at, --range, --points, --csv, --normalize, --loss-axis and --grad-axis apply to objectives, not to run directories\n".into(),
        ));
    }
    let runs = dirs
        .iter()
        .map(|d| read_run(d))
        .collect::<Result<Vec<_>, _>>()?;
    let out = match (&args.out, runs.len()) {
        (Some(o), _) => o.clone(),
        (None, 1) => dirs[0].join("curves.png"),
        (None, _) => {
            return Err(Error::User(
                "poc plot: several runs need --out FILE.png (one run defaults to RUN_DIR/curves.png)\n".into(),
            ));
        }
    };
    // Panels: every series name of every run, in first-seen order.
    let mut names: Vec<&str> = Vec::new();
    for r in &runs {
        for (n, _) in &r.series {
            if !names.contains(&n.as_str()) {
                names.push(n);
            }
        }
    }
    let cols = names.len().clamp(1, 3);
    let rows = names.len().div_ceil(cols);
    let size = parse_size(args.size.as_deref(), (1200, 40 + 320 * rows as u32))?;
    let title = if runs.len() == 1 {
        format!("{}: metrics.jsonl", runs[0].name)
    } else {
        format!("{} runs", runs.len())
    };
    render(&out, size, |root| {
        let body = root.titled(&title, (FONT, 22)).map_err(draw_error)?;
        let areas = body.split_evenly((rows, cols));
        for (area, name) in areas.iter().zip(&names) {
            let series: Vec<Series> = runs
                .iter()
                .filter_map(|r| {
                    r.series
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, ys)| Series {
                            label: r.name.clone(),
                            xs: &r.steps,
                            ys,
                        })
                })
                .collect();
            let (x0, x1) = padded(finite_range(
                runs.iter().flat_map(|r| r.steps.iter().copied()),
            ));
            panel(
                area,
                name,
                "step",
                "",
                (x0, x1),
                None,
                &series,
                runs.len() > 1,
            )?;
        }
        Ok(())
    })?;
    Ok(out)
}

/// Reads RUN_DIR/metrics.jsonl; every problem names the file and line.
fn read_run(dir: &Path) -> Result<RunLog> {
    let path = dir.join("metrics.jsonl");
    let label = path.display();
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::User(format!(
            "poc: cannot read `{label}`: {e}\n  = hint: `poc run ... --out {}` writes it; is this a run directory?\n",
            dir.display()
        ))
    })?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    let mut log = RunLog {
        name,
        steps: Vec::new(),
        series: Vec::new(),
    };
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let obj = match jsonl::object(line, &label, lineno) {
            Ok(Some(o)) => o,
            Ok(None) => continue,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let Some(step) = obj.get("step").and_then(Value::as_f64) else {
            errors.push(format!("{label}:{lineno}: missing numeric `step`"));
            continue;
        };
        // (name, value) of this line; null (a non-finite value in serde_json) is a gap.
        let mut row: Vec<(String, f64)> = Vec::new();
        for key in ["loss", "grad_norm", "lr"] {
            match obj.get(key) {
                None | Some(Value::Null) => {}
                Some(v) => match v.as_f64() {
                    Some(x) => row.push((key.to_string(), x)),
                    None => errors.push(format!(
                        "{label}:{lineno}: `{key}` must be a number, found {v}"
                    )),
                },
            }
        }
        match obj.get("metrics") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                for (key, v) in m {
                    match v {
                        Value::Null => {}
                        Value::Bool(b) => row.push((key.clone(), f64::from(u8::from(*b)))),
                        v => match v.as_f64() {
                            Some(x) => row.push((key.clone(), x)),
                            None => errors.push(format!(
                                "{label}:{lineno}: metric `{key}` must be a number, found {v}"
                            )),
                        },
                    }
                }
            }
            Some(v) => errors.push(format!(
                "{label}:{lineno}: `metrics` must be an object, found {v}"
            )),
        }
        let k = log.steps.len();
        log.steps.push(step);
        for (key, x) in row {
            let column = match log.series.iter().position(|(n, _)| *n == key) {
                Some(p) => &mut log.series[p].1,
                None => {
                    log.series.push((key, Vec::new()));
                    let last = log.series.len() - 1;
                    &mut log.series[last].1
                }
            };
            column.resize(k, f64::NAN);
            column.push(x);
        }
    }
    if !errors.is_empty() {
        let shown = errors.len().min(20);
        let mut msg = errors[..shown].join("\n");
        if errors.len() > shown {
            msg.push_str(&format!("\n... and {} more", errors.len() - shown));
        }
        msg.push('\n');
        return Err(Error::User(msg));
    }
    if log.steps.is_empty() {
        return Err(Error::User(format!("poc: `{label}` has no logged steps\n")));
    }
    let n = log.steps.len();
    for (_, column) in &mut log.series {
        column.resize(n, f64::NAN);
    }
    Ok(log)
}
