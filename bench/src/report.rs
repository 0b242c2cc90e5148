//! Output of `versus`: one plain line per figure for scripts, and a markdown table for
//! people.

use std::fmt::Write as _;

use crate::workload::Workload;

/// One reported figure: the median over repetitions of one metric of one workload on
/// one system.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// System name, as in [`crate::systems::System::name`].
    pub system: String,
    /// The workload measured.
    pub workload: Workload,
    /// Metric name, unit last.
    pub metric: String,
    /// The median value.
    pub value: f64,
}

impl Row {
    /// The plain line scripts read: `system workload metric value`, space-separated,
    /// the value a plain number.
    pub fn line(&self) -> String {
        format!(
            "{} {} {} {}",
            self.system,
            self.workload.name(),
            self.metric,
            plain_number(self.value)
        )
    }
}

/// A number as printed on a plain line: whole from 100 up, up to three decimals from 1
/// up, three significant digits below 1 (so a tiny `cpu_pct` does not read as 0).
pub fn plain_number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 100.0 {
        return format!("{value:.0}");
    }
    let decimals = if magnitude >= 1.0 || magnitude == 0.0 {
        3
    } else {
        (2 - magnitude.log10().floor() as i32) as usize
    };
    let text = format!("{value:.decimals$}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Whether a larger value of `metric` is better: rates are, latencies, memory and CPU
/// use are not.
pub fn higher_is_better(metric: &str) -> bool {
    metric == "per_s" || metric.ends_with("_per_s")
}

/// A number for the table: three significant digits with a k/M/G suffix.
pub fn human_number(value: f64) -> String {
    let (scaled, suffix) = match value.abs() {
        v if v >= 1e9 => (value / 1e9, " G"),
        v if v >= 1e6 => (value / 1e6, " M"),
        v if v >= 1e4 => (value / 1e3, " k"),
        _ => (value, ""),
    };
    let decimals = match scaled.abs() {
        v if v >= 100.0 => 0,
        v if v >= 10.0 => 1,
        v if v >= 1.0 || v == 0.0 => 2,
        // Three significant digits below 1: 0.123, 0.0123.
        v => (2 - v.log10().floor() as i32) as usize,
    };
    format!("{scaled:.decimals$}{suffix}")
}

/// A ratio for the table, `x0.12` style, with two significant digits below 1.
pub fn ratio(value: f64, baseline: f64) -> String {
    if baseline == 0.0 {
        return "x∞".to_owned();
    }
    let r = value / baseline;
    let decimals = if r >= 10.0 {
        1
    } else if r >= 1.0 || r <= 0.0 {
        2
    } else {
        // Two significant digits: 0.12, 0.012, 0.0012.
        (1 - r.log10().floor() as i32).max(2) as usize
    };
    format!("x{r:.decimals$}")
}

/// The markdown table of `rows`: one line per workload and metric, one column per
/// system in `systems` order (systems without figures are left out), and, when
/// `baseline` has a figure on a line, every other system's ratio to it.
pub fn table(rows: &[Row], systems: &[&str], baseline: &str) -> String {
    let columns: Vec<&str> = systems
        .iter()
        .copied()
        .filter(|s| rows.iter().any(|r| r.system == *s))
        .collect();
    let mut lines: Vec<(Workload, &str)> = Vec::new();
    for workload in Workload::ALL {
        for row in rows.iter().filter(|r| r.workload == workload) {
            if !lines.contains(&(workload, row.metric.as_str())) {
                lines.push((workload, row.metric.as_str()));
            }
        }
    }
    let has_baseline = rows.iter().any(|r| r.system == baseline);

    let mut out = String::new();
    if has_baseline {
        let _ = writeln!(
            out,
            "Ratios are system ÷ {baseline}; `better` says which direction wins."
        );
    } else {
        let _ = writeln!(out, "No {baseline} figures in this run, so no ratios.");
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "| workload | metric | better | {} |",
        columns.join(" | ")
    );
    let _ = writeln!(out, "|---|---|---|{}", "---:|".repeat(columns.len()));
    for (workload, metric) in lines {
        let find = |system: &str| {
            rows.iter()
                .find(|r| r.system == system && r.workload == workload && r.metric == metric)
                .map(|r| r.value)
        };
        let base = find(baseline);
        let cells: Vec<String> = columns
            .iter()
            .map(|&system| match (find(system), base) {
                (None, _) => "—".to_owned(),
                (Some(v), Some(b)) if system != baseline => {
                    format!("{} ({})", human_number(v), ratio(v, b))
                }
                (Some(v), _) => human_number(v),
            })
            .collect();
        let better = if higher_is_better(metric) {
            "higher"
        } else {
            "lower"
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            workload.name(),
            metric,
            better,
            cells.join(" | ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(system: &str, workload: Workload, metric: &str, value: f64) -> Row {
        Row {
            system: system.to_owned(),
            workload,
            metric: metric.to_owned(),
            value,
        }
    }

    #[test]
    fn plain_lines_are_four_fields() {
        let line = row("rtrb", Workload::Tell, "msgs_per_s", 25_600_000.4).line();
        assert_eq!(line, "rtrb tell msgs_per_s 25600000");
        assert_eq!(plain_number(0.25), "0.25");
        assert_eq!(plain_number(3.0), "3");
        assert_eq!(plain_number(36.3154), "36.315");
        assert_eq!(plain_number(0.000384), "0.000384");
        assert_eq!(plain_number(0.0), "0");
    }

    #[test]
    fn numbers_and_ratios_read_well() {
        assert_eq!(human_number(25_634_000.0), "25.6 M");
        assert_eq!(human_number(512.0), "512");
        assert_eq!(human_number(0.123), "0.123");
        assert_eq!(human_number(0.00312), "0.00312");
        assert_eq!(human_number(0.0), "0.00");
        assert_eq!(ratio(1.0, 7.0), "x0.14");
        assert_eq!(ratio(1.0, 70.0), "x0.014");
        assert_eq!(ratio(3.0, 2.0), "x1.50");
    }

    #[test]
    fn table_compares_with_the_baseline() {
        let rows = [
            row("percore", Workload::Tell, "msgs_per_s", 10e6),
            row("kameo", Workload::Tell, "msgs_per_s", 1e6),
            row("kameo", Workload::Ask, "p50_ns", 5000.0),
            row("kameo", Workload::Activate, "per_s", 2e5),
        ];
        let table = table(&rows, &["percore", "rtrb", "kameo"], "percore");
        assert!(table.contains("| workload | metric | better | percore | kameo |"));
        assert!(table.contains("| tell | msgs_per_s | higher | 10.0 M | 1.00 M (x0.10) |"));
        assert!(table.contains("| ask | p50_ns | lower | — | 5000 |"));
        assert!(table.contains("| activate | per_s | higher | — | 200 k |"));
    }
}
