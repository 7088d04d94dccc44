//! `ctscope replay`: a recorded trace through the same model as live
//! capture. Until the TUI lands, it prints what `ctscope stats` printed:
//! JSON lines with --stats or when stdout is not a terminal, else the table
//! at the recorded pace.

use std::io::{self, IsTerminal as _, Write as _};

use tokio::sync::mpsc;

use crate::{
    cli::{ReplayArgs, Speed},
    model::Model,
    source::replay::{ReplayOptions, ReplaySource},
    views::stats::{TABLE_HEADER, json_line, table_row},
};

pub async fn run(args: &ReplayArgs) -> anyhow::Result<()> {
    let json = args.stats || !io::stdout().is_terminal();
    let speed = match args.speed {
        Some(Speed::Times(x)) => Some(x),
        Some(Speed::Max) => None,
        None if json => None,
        None => Some(1.0),
    };
    let (tx, mut rx) = mpsc::channel(64);
    let opts = ReplayOptions {
        speed,
        ..ReplayOptions::default()
    };
    let mut source = ReplaySource::start(&args.file, opts, tx).await?;
    let mut model = Model::new(source.info.clone());
    let mut out = io::stdout().lock();
    if !json {
        writeln!(out, "{TABLE_HEADER}")?;
    }
    let mut issues_open = true;
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                let before = model.intervals();
                model.apply(msg);
                if model.intervals() == before {
                    continue;
                }
                let Some(interval) = &model.latest else { continue };
                let line = if json { json_line(interval) } else { table_row(interval) };
                if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                    break; // stdout closed (e.g. piped into `head`)
                }
            }
            issue = source.issues.recv(), if issues_open => match issue {
                Some(issue) => eprintln!("ctscope: warning: {}: {issue}", args.file.display()),
                None => issues_open = false,
            },
        }
    }
    drop(rx);
    while let Ok(issue) = source.issues.try_recv() {
        eprintln!("ctscope: warning: {}: {issue}", args.file.display());
    }
    let summary = source.wait().await?;
    if summary.damaged {
        anyhow::bail!(
            "{}: damaged data was skipped (see the warnings above); the intervals around it \
             are still right, but drops in the damaged range are missing",
            args.file.display()
        );
    }
    Ok(())
}
