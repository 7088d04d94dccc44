//! `ctscope buckets`: one walk of the conntrack hash table, then exit.

use std::{
    io::{self, Write as _},
    path::Path,
};

use anyhow::Context as _;

use crate::{
    cli::{BucketsArgs, ProbeArgs},
    event::Message,
    model::{Model, RunInfo},
    probe::{ProbeOptions, Probes},
    views::buckets::{json, report},
};

pub async fn run(args: &BucketsArgs, probe: &ProbeArgs) -> anyhow::Result<()> {
    let model = walk_once(probe, args.ready_file.as_deref(), args.top, false).await?;
    let Some(walk) = &model.buckets else {
        return Ok(());
    };
    let text = if args.json { json(walk) } else { report(walk) };
    let mut out = io::stdout();
    match writeln!(out, "{}", text.trim_end()).and_then(|()| out.flush()) {
        // stdout closed early (e.g. piped into `head`): nothing left to do.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Loads the walker alone (no probes on the packet path), walks the live
/// table once, listing the `top` longest chains and, with `holders`, who
/// holds the table, and returns the model of that walk. `ctscope buckets`
/// and `ctscope holders`.
pub async fn walk_once(
    probe: &ProbeArgs,
    ready_file: Option<&Path>,
    top: usize,
    holders: bool,
) -> anyhow::Result<Model> {
    let opts = ProbeOptions {
        // The walker needs no event ring; the smallest one will do.
        ring_bytes: 4096,
        count: false,
        drops: false,
        ..ProbeOptions::from(probe)
    };
    super::check_ready_file(ready_file)?;
    let mut probes = Probes::attach(&opts)?;
    super::write_ready_file(ready_file)?;
    let mut model = Model::new(RunInfo {
        backend: probes.info.backend.to_owned(),
        kernel: probes.info.kernel.clone(),
    });
    // BPF_PROG_TEST_RUN blocks the calling thread for the walk.
    let walk = tokio::task::spawn_blocking(move || probes.walk_buckets_with(top, holders))
        .await
        .context("the walk panicked")??;
    model.apply(Message::Buckets(Box::new(walk)));
    Ok(model)
}
