//! What a scenario found: a table (one row per stack), notes, and each run's time series;
//! printed as text, written as JSON, or drawn in the HTML report ([`crate::html`]).

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Value};

use crate::load::Run;

/// How a column's numbers read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A count.
    Count,
    /// Milliseconds.
    Ms,
    /// Seconds.
    Secs,
    /// A share, printed as a percentage.
    Share,
    /// A multiple (`1.9×`).
    Times,
    /// Per second (`38.5/s`).
    PerSec,
}

/// A column of a scenario's table.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Its heading (also the JSON key).
    pub name: &'static str,
    /// Its unit.
    pub unit: Unit,
}

/// Shorthand for a [`Column`].
pub const fn col(name: &'static str, unit: Unit) -> Column {
    Column { name, unit }
}

/// One stack's row.
#[derive(Debug, Clone)]
pub struct Row {
    /// The stack, as a reader would name it.
    pub stack: String,
    /// One number per column.
    pub values: Vec<f64>,
    /// The run's series (for the charts).
    pub run: Run,
}

/// What one scenario found.
#[derive(Debug, Clone)]
pub struct ScenarioReport {
    /// Its name on the command line.
    pub name: &'static str,
    /// One line on what it shows.
    pub title: &'static str,
    /// The upstream and the load, with their numbers.
    pub setup: String,
    /// The table's columns.
    pub columns: Vec<Column>,
    /// One row per stack.
    pub rows: Vec<Row>,
    /// What the numbers say, each sentence computed from them.
    pub notes: Vec<String>,
    /// Marks on the charts' time axis (an outage's start and end), in seconds.
    pub marks: Vec<(f64, &'static str)>,
    /// Simulated (`virtual`) or `loopback`.
    pub mode: &'static str,
    /// How long the scenario took on the clock it ran on.
    pub elapsed: Duration,
}

impl ScenarioReport {
    /// A report with no chart marks; [`Scenario::run`](crate::scenario::Scenario::run)
    /// fills in the mode and the elapsed time.
    pub fn new(
        name: &'static str,
        title: &'static str,
        setup: String,
        columns: Vec<Column>,
        rows: Vec<Row>,
        notes: Vec<String>,
    ) -> Self {
        Self {
            name,
            title,
            setup,
            columns,
            rows,
            notes,
            marks: Vec::new(),
            mode: "",
            elapsed: Duration::ZERO,
        }
    }

    /// A scenario that did not run, and why: no table, the reason as its setup and note.
    pub fn skipped(name: &'static str, title: &'static str, why: String) -> Self {
        Self::new(
            name,
            title,
            format!("skipped: {why}"),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        )
    }

    /// Whether it was skipped (it has no rows).
    pub fn is_skipped(&self) -> bool {
        self.rows.is_empty()
    }

    /// With marks on the charts' time axis: `label` at `t` seconds.
    #[must_use]
    pub fn marks(mut self, marks: Vec<(f64, &'static str)>) -> Self {
        self.marks = marks;
        self
    }

    /// With an outage's start and end marked on the charts.
    #[must_use]
    pub fn outage_marks(self, from: Duration, to: Duration) -> Self {
        self.marks(vec![
            (from.as_secs_f64(), "outage starts"),
            (to.as_secs_f64(), "outage ends"),
        ])
    }

    /// A row's value for the column `name`.
    ///
    /// # Panics
    ///
    /// If there is no such row or column (a bug in the scenario).
    pub fn value(&self, stack: &str, name: &str) -> f64 {
        let c = self
            .columns
            .iter()
            .position(|c| c.name == name)
            .unwrap_or_else(|| panic!("no column {name}"));
        let row = self
            .rows
            .iter()
            .find(|r| r.stack == stack)
            .unwrap_or_else(|| panic!("no row {stack}"));
        row.values[c]
    }

    /// The table and notes as text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "== {}: {} [{}]", self.name, self.title, self.mode);
        let _ = writeln!(out, "{}", self.setup);
        if self.is_skipped() {
            return out;
        }
        let stack_w = self
            .rows
            .iter()
            .map(|r| r.stack.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let widths: Vec<usize> = self.columns.iter().map(|c| c.name.len().max(8)).collect();
        let _ = write!(out, "{:<stack_w$}", "stack");
        for (c, w) in self.columns.iter().zip(&widths) {
            let _ = write!(out, "  {:>w$}", c.name);
        }
        out.push('\n');
        for r in &self.rows {
            let _ = write!(out, "{:<stack_w$}", r.stack);
            for ((c, w), v) in self.columns.iter().zip(&widths).zip(&r.values) {
                let _ = write!(out, "  {:>w$}", format_value(c.unit, *v));
            }
            out.push('\n');
        }
        for n in &self.notes {
            let _ = writeln!(out, "- {n}");
        }
        out
    }

    /// The scenario as JSON: setup, columns with units, rows keyed by column, notes.
    pub fn json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                let metrics: serde_json::Map<String, Value> = self
                    .columns
                    .iter()
                    .zip(&r.values)
                    .map(|(c, v)| (c.name.to_owned(), json!(v)))
                    .collect();
                json!({ "stack": r.stack, "metrics": metrics })
            })
            .collect();
        let columns: Vec<Value> = self
            .columns
            .iter()
            .map(|c| json!({ "name": c.name, "unit": unit_name(c.unit) }))
            .collect();
        json!({
            "scenario": self.name,
            "title": self.title,
            "mode": self.mode,
            "setup": self.setup,
            "columns": columns,
            "rows": rows,
            "notes": self.notes,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "skipped": self.is_skipped(),
        })
    }
}

/// `count`, `ms`, `s`, `share` or `times`.
pub fn unit_name(unit: Unit) -> &'static str {
    match unit {
        Unit::Count => "count",
        Unit::Ms => "ms",
        Unit::Secs => "s",
        Unit::Share => "share",
        Unit::Times => "times",
        Unit::PerSec => "per_s",
    }
}

/// A value as the table prints it.
pub fn format_value(unit: Unit, v: f64) -> String {
    if v.is_nan() {
        return "-".to_owned();
    }
    match unit {
        Unit::Count => format!("{v:.0}"),
        Unit::Ms if v >= 100.0 => format!("{v:.0} ms"),
        Unit::Ms if v >= 1.0 || v == 0.0 => format!("{v:.1} ms"),
        Unit::Ms => format!("{v:.2} ms"),
        Unit::Secs => format!("{v:.2} s"),
        Unit::Share => format!("{:.1}%", v * 100.0),
        Unit::Times => format!("{v:.2}×"),
        Unit::PerSec => format!("{v:.1}/s"),
    }
}

/// Milliseconds of `d`.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
