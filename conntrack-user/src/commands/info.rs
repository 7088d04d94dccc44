//! `ctscope info`: a summary of a trace file.

use std::io::{self, Write as _};

use super::stdout_err;
use crate::{
    cli::InfoArgs,
    trace::summary::{render, summarize},
};

pub fn run(args: &InfoArgs) -> anyhow::Result<()> {
    let summary = summarize(&args.file)?;
    let text = if args.json {
        serde_json::to_string(&summary)? + "\n"
    } else {
        render(&summary)
    };
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(stdout_err)?;
    if summary.damaged {
        anyhow::bail!(
            "{}: damaged data in the middle of the file (listed above)",
            args.file.display()
        );
    }
    Ok(())
}
