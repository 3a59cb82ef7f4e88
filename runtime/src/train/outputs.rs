//! Where a compiled program's outputs become what training uses: the per-example loss (checked
//! finite), the metrics, and the surrogate whose backward applies the compiler's gradient.

use crate::lower::{TensorColumn, surrogate_columns, to_f64};
use burn::tensor::Tensor;
use poc_compiler::{Compiled, OutputKind};

/// One evaluation of the program over a batch of B rows, routed by output kind.
pub struct Outputs {
    /// The per-example loss, `[B]`.
    loss: Vec<f64>,
    /// Per metric (in declaration order), the sum over the B rows.
    metric_sums: Vec<f64>,
    /// The differentiable inputs and the program's gradient with respect to each.
    grads: Vec<(TensorColumn, TensorColumn)>,
}

impl Outputs {
    /// Routes `outs`, the outputs of `compiled.program` on `inputs` (the columns it was given,
    /// in input order). A per-token loss or metric is summed over its tokens.
    pub fn read(compiled: &Compiled, outs: Vec<TensorColumn>, inputs: &[TensorColumn]) -> Outputs {
        let mut loss = Vec::new();
        let mut metric_sums = vec![0.0; compiled.gradient.metrics.len()];
        let mut grads = Vec::new();
        for (o, out) in compiled.program.outputs.iter().zip(outs) {
            match o.kind {
                OutputKind::Loss => loss = to_f64(per_example(out)),
                OutputKind::Metric(m) => {
                    metric_sums[m as usize] += to_f64(per_example(out)).iter().sum::<f64>()
                }
                OutputKind::Grad(i) => grads.push((inputs[i as usize].clone(), out)),
            }
        }
        Outputs {
            loss,
            metric_sums,
            grads,
        }
    }

    /// The first row whose loss is NaN or infinite, if any: training must stop there.
    pub fn first_not_finite(&self) -> Option<usize> {
        self.loss.iter().position(|v| !v.is_finite())
    }

    /// The loss summed over the rows.
    pub fn loss_sum(&self) -> f64 {
        self.loss.iter().sum::<f64>()
    }

    /// Each metric summed over the rows, in declaration order.
    pub fn metric_sums(&self) -> &[f64] {
        &self.metric_sums
    }

    /// `Σ detach(∂L/∂x)·x` over the differentiable inputs, summed over the rows (unscaled):
    /// its backward gives the policy the compiler's gradient.
    pub fn surrogate(&self) -> Tensor<1> {
        let (xs, gs): (Vec<TensorColumn>, Vec<TensorColumn>) = self.grads.iter().cloned().unzip();
        surrogate_columns(&xs, &gs)
    }
}

/// Why row `row`'s loss is not finite, in words that blame the right cause: the objective
/// (its formula or its parameters) when every input it read there is finite, with their
/// values; otherwise the first input that is not (a model's statistics that diverged).
pub fn blame(compiled: &Compiled, inputs: &[TensorColumn], row: usize) -> String {
    let mut shown = Vec::new();
    for (input, col) in compiled.objective.inputs.iter().zip(inputs) {
        let values = match col {
            TensorColumn::Scalar(t) => to_f64(t.clone().narrow(0, row, 1)),
            TensorColumn::Tokens(t) => {
                let width = t.dims()[1];
                to_f64(t.clone().narrow(0, row, 1).reshape([width]))
            }
        };
        if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
            let per_token = matches!(col, TensorColumn::Tokens(_));
            return format!(
                "because the objective's input `{}` is {bad}{} there (the model's statistics diverged: lower --lr, or check the model)",
                input.name,
                if per_token { " at a token" } else { "" },
            );
        }
        if let (TensorColumn::Scalar(_), Some(v)) = (col, values.first()) {
            shown.push(format!("{} = {v:.6}", input.name));
        }
    }
    let values = if shown.is_empty() {
        String::new()
    } else {
        format!(" ({})", shown.join(", "))
    };
    format!(
        "on finite inputs{values}: objective `{}` gives NaN or inf there; check its formula and its parameter values (--set)",
        compiled.objective.name
    )
}

/// A per-example output column as `[B]` (a per-token one summed over its tokens).
fn per_example(col: TensorColumn) -> Tensor<1> {
    match col {
        TensorColumn::Scalar(t) => t,
        TensorColumn::Tokens(t) => {
            let b = t.dims()[0];
            t.sum_dim(1).reshape([b])
        }
    }
}

/// Means of `sums` over `rows`, keyed by the objective's metric names.
pub fn metric_means(
    compiled: &Compiled,
    sums: &[f64],
    rows: usize,
    prefix: &str,
) -> serde_json::Map<String, serde_json::Value> {
    compiled
        .gradient
        .metrics
        .iter()
        .zip(sums)
        .map(|(m, sum)| {
            (
                format!("{prefix}{}", m.0),
                serde_json::json!(sum / rows as f64),
            )
        })
        .collect()
}
