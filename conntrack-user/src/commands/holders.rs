//! `ctscope holders`: one walk of the conntrack hash table with the
//! entries grouped by who holds them, then exit.

use std::{
    io::{self, Write as _},
    path::Path,
};

use tokio::sync::mpsc;

use crate::{
    cli::{HoldersArgs, ProbeArgs},
    kernel::netns::list_namespaces,
    model::{
        Model,
        holders::{By, ROWS},
    },
    source::replay::{ReplayOptions, ReplaySource},
    views::holders::{cut, json, report},
};

pub async fn run(args: &HoldersArgs, probe: &ProbeArgs) -> anyhow::Result<()> {
    let by = By::parse(&args.by).map_err(anyhow::Error::msg)?;
    let top = args.top.min(ROWS);
    let model = match &args.trace {
        Some(file) => from_trace(file).await?,
        None => live(args, probe).await?,
    };
    let Some(walk) = &model.buckets else {
        anyhow::bail!(match &args.trace {
            Some(f) => format!("{}: the trace holds no table walk", f.display()),
            None => "the walk returned nothing (an internal error; please report it)".to_owned(),
        });
    };
    let Some(holders) = &walk.holders else {
        anyhow::bail!("the table walk holds no holders (a trace recorded before ctscope had them)");
    };
    // Names from the model's namespaces (a trace's), else from this
    // machine's /run/netns when walking live.
    let named: Vec<(u32, String)> = match &args.trace {
        Some(_) => model
            .latest
            .iter()
            .flat_map(|i| &i.netns)
            .filter_map(|r| Some((r.inum, r.name.clone()?)))
            .collect(),
        None => list_namespaces()
            .into_iter()
            .filter_map(|h| Some((h.inum, h.display_name()?)))
            .collect(),
    };
    let mut holders = cut(holders, top);
    holders.name_namespaces(|inum| {
        named
            .iter()
            .find(|(i, _)| *i == inum)
            .map(|(_, n)| n.clone())
    });
    let text = if args.json {
        json(walk, &holders)
    } else {
        report(walk, &holders, by, top)
    };
    let mut out = io::stdout();
    match writeln!(out, "{}", text.trim_end()).and_then(|()| out.flush()) {
        // stdout closed early (e.g. piped into `head`): nothing left to do.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// A trace replayed as fast as it reads into a model: its last walk.
async fn from_trace(file: &Path) -> anyhow::Result<Model> {
    let (tx, mut rx) = mpsc::channel(64);
    let opts = ReplayOptions {
        speed: None,
        ..ReplayOptions::default()
    };
    let mut source = ReplaySource::start(file, opts, tx).await?;
    let mut model = Model::new(source.info.clone());
    while let Some(msg) = rx.recv().await {
        model.apply(msg);
    }
    while let Ok(issue) = source.issues.try_recv() {
        eprintln!("ctscope: warning: {}: {issue}", file.display());
    }
    source.wait().await?;
    Ok(model)
}

/// One walk of the live table, with holders.
async fn live(args: &HoldersArgs, probe: &ProbeArgs) -> anyhow::Result<Model> {
    super::buckets::walk_once(probe, args.ready_file.as_deref(), 0, true).await
}
