//! The sweep table: one CSV row per finished task, in grid order.

use minima_shared::{TaskMetrics, TaskSpec};

/// The columns users rely on come first, in this order; more follow.
pub const TABLE_HEADER: &str = "model,layers,heads,hidden,params,top_eigenvalue,trace,test_loss,\
seed,test_accuracy,train_loss,validation_loss,initial_test_loss,trace_standard_error,\
adaptive_top_eigenvalue,adaptive_trace,epochs,task_id";

/// The columns of `coordinator --dry-run`.
pub const PLAN_HEADER: &str = "model,layers,heads,hidden,params,seed,task,epochs,task_id";

/// `heads` as the table prints it: `NA` for recurrent models.
fn heads(spec: &TaskSpec) -> String {
    spec.model
        .heads
        .map_or_else(|| "NA".to_string(), |h| h.to_string())
}

fn optional(value: Option<f64>) -> String {
    value.map_or_else(|| "NA".to_string(), |v| v.to_string())
}

/// One row of the dry-run plan.
pub fn plan_row(spec: &TaskSpec) -> String {
    let m = &spec.model;
    format!(
        "{},{},{},{},{},{},{},{},{}",
        m.arch.display_name(),
        m.layers,
        heads(spec),
        m.hidden,
        m.param_count(),
        spec.seed,
        spec.task,
        spec.train.epochs,
        spec.id()
    )
}

/// One row of the results table.
pub fn table_row(spec: &TaskSpec, metrics: &TaskMetrics) -> String {
    let m = &spec.model;
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
        m.arch.display_name(),
        m.layers,
        heads(spec),
        m.hidden,
        metrics.params,
        optional(metrics.top_eigenvalue),
        optional(metrics.trace),
        metrics.test_loss,
        spec.seed,
        optional(metrics.test_accuracy),
        metrics.train_loss,
        metrics.validation_loss,
        metrics.initial_test_loss,
        optional(metrics.trace_standard_error),
        optional(metrics.adaptive_top_eigenvalue),
        optional(metrics.adaptive_trace),
        metrics.epochs.len(),
        spec.id()
    )
}

/// The whole table for the finished tasks, header first.
pub fn render(rows: &[(TaskSpec, TaskMetrics)]) -> String {
    let mut text = String::from(TABLE_HEADER);
    text.push('\n');
    for (spec, metrics) in rows {
        text.push_str(&table_row(spec, metrics));
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_start_with_the_user_contract() {
        assert!(
            TABLE_HEADER
                .starts_with("model,layers,heads,hidden,params,top_eigenvalue,trace,test_loss")
        );
        assert!(PLAN_HEADER.starts_with("model,layers,heads,hidden,params"));
    }
}
