//! `ctscope load`: new conntrack flows at a chosen rate, inside a private
//! network namespace, to see the table fill (and, squeezed, drop).

use std::{
    io::{IsTerminal as _, Write as _},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    cli::LoadArgs,
    kernel::sysctl::{read_sysctl, write_sysctl},
    loadgen::{self, LoadNamespace, LoadPlan, Progress},
};

pub async fn run(args: &LoadArgs) -> anyhow::Result<()> {
    let ns = match &args.netns {
        Some(name) => LoadNamespace::open(name)?,
        None => LoadNamespace::create()?,
    };
    let _squeeze = match args.squeeze {
        Some(max) => Some(Squeeze::apply(max)?),
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
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut status = tokio::time::interval(Duration::from_secs(1));
    let tty = std::io::stderr().is_terminal();
    let report = loop {
        tokio::select! {
            r = &mut worker => break r.context("the load generator panicked")?,
            _ = sigint.recv() => progress.stop.store(true, Ordering::Relaxed),
            _ = sigterm.recv() => progress.stop.store(true, Ordering::Relaxed),
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
    let mut out = std::io::stdout();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        writeln!(
            out,
            "{} {} flows in {:.2} s: {:.0}/s ({} refused)",
            report.flows + report.refused,
            report.kind,
            report.seconds,
            report.rate,
            report.refused
        )?;
    }
    Ok(())
}

/// Lowers `nf_conntrack_max` for the run and puts it back when dropped
/// (normal end, Ctrl-C, SIGTERM, a panic; not SIGKILL).
struct Squeeze {
    original: u64,
}

impl Squeeze {
    fn apply(max: u64) -> anyhow::Result<Self> {
        let original = read_sysctl("nf_conntrack_max")?
            .context("nf_conntrack_max is not readable; is nf_conntrack loaded?")?;
        write_sysctl("nf_conntrack_max", max).context("lowering nf_conntrack_max")?;
        eprintln!(
            "ctscope load: nf_conntrack_max lowered from {original} to {max} for this run \
             (every namespace on this machine is held to it)"
        );
        Ok(Self { original })
    }
}

impl Drop for Squeeze {
    fn drop(&mut self) {
        match write_sysctl("nf_conntrack_max", self.original) {
            Ok(()) => eprintln!(
                "ctscope load: nf_conntrack_max restored to {}",
                self.original
            ),
            Err(e) => eprintln!(
                "ctscope load: could not restore nf_conntrack_max to {}: {e}; run \
                 `sysctl -w net.netfilter.nf_conntrack_max={}`",
                self.original, self.original
            ),
        }
    }
}
