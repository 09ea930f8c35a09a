//! What a run leaves behind: the result (JSON), per-second samples (CSV), the human summary,
//! and the HTML report that compares runs.

pub mod csv;
pub mod html;
pub mod result;
pub mod summary;

use std::path::Path;

use anyhow::Context;

pub use result::RunResult;

/// Writes the result as pretty JSON.
pub fn write_json(result: &RunResult, path: &Path) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(result)?;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Reads a result written by `--json`.
pub fn read_json(path: &Path) -> anyhow::Result<RunResult> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a run result", path.display()))
}

/// Writes the samples as CSV.
pub fn write_csv(result: &RunResult, path: &Path) -> anyhow::Result<()> {
    std::fs::write(path, csv::render(result))
        .with_context(|| format!("cannot write {}", path.display()))
}
