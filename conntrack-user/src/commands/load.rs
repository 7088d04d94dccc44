//! `ctscope load`: new conntrack flows at a chosen rate, inside a private
//! network namespace, to see the table fill (and, squeezed, drop).

use std::{
    io::{IsTerminal as _, Write as _},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::Context as _;

use super::{signals::Signals, stdout_err};
use crate::{
    cli::LoadArgs,
    loadgen::{self, LoadNamespace, LoadPlan, Progress, Squeeze},
};

pub async fn run(args: &LoadArgs) -> anyhow::Result<()> {
    super::check_ready_file(args.ready_file.as_deref())?;
    let mut signals = Signals::install()?;
    let ns = match &args.netns {
        Some(name) => LoadNamespace::open(name)?,
        None => LoadNamespace::create()?,
    };
    let _squeeze = match args.squeeze {
        Some(max) => Some(Squeeze::apply(max, "ctscope load")?),
        None => None,
    };
    let plan = LoadPlan {
        kind: args.kind,
        rate: args.rate.filter(|r| *r > 0),
        count: args.count,
        duration: args.duration.or(if args.count.is_none() {
            Some(Duration::from_secs(10))
        } else {
            None
        }),
        threads: args.threads as usize,
        ramp: None,
    };
    eprintln!(
        "ctscope load: {} flows{} in network namespace {}{}",
        plan.kind.name(),
        plan.rate.map_or_else(
            || " as fast as possible".to_owned(),
            |r| format!(" at {r}/s")
        ),
        ns.inum(),
        if ns.created() {
            " (private, removed at exit)"
        } else {
            ""
        }
    );
    super::write_ready_file(args.ready_file.as_deref())?;
    let progress = Arc::new(Progress::default());
    let worker = {
        let progress = Arc::clone(&progress);
        let plan = plan.clone();
        tokio::task::spawn_blocking(move || loadgen::run(&ns, &plan, &progress))
    };
    tokio::pin!(worker);
    let mut status = tokio::time::interval(Duration::from_secs(1));
    let tty = std::io::stderr().is_terminal();
    let report = loop {
        tokio::select! {
            r = &mut worker => break r.context("the load generator panicked")?,
            _ = signals.recv() => progress.stop.store(true, Ordering::Relaxed),
            _ = status.tick(), if tty => {
                eprint!(
                    "\r{} flows, {} refused   ",
                    progress.sent.load(Ordering::Relaxed),
                    progress.refused.load(Ordering::Relaxed)
                );
            }
        }
    };
    if tty {
        eprintln!();
    }
    let line = if args.json {
        serde_json::to_string(&report)?
    } else {
        format!(
            "{} {} flows in {:.2} s: {:.0}/s ({} refused)",
            report.flows + report.refused,
            report.kind,
            report.seconds,
            report.rate,
            report.refused
        )
    };
    let mut out = std::io::stdout();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(stdout_err)
}
