//! One module per subcommand; each wires a source, the model and a view.
pub mod buckets;
pub mod demo;
pub mod docs;
pub mod doctor;
pub mod drops;
pub mod export;
pub mod info;
pub mod live_record;
pub mod load;
pub mod record;
pub mod replay;
pub mod serve;
pub mod stats;
pub mod top;
pub mod tui;

use std::{fs, path::Path};

use anyhow::Context as _;

/// Creates the `--ready-file` once the probes are attached (its content is
/// ctscope's pid), so scripts can start traffic without sleeping.
pub fn write_ready_file(path: Option<&Path>) -> anyhow::Result<()> {
    if let Some(path) = path {
        fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing the ready file {}", path.display()))?;
    }
    Ok(())
}

/// An argument combination or input that cannot work (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);
