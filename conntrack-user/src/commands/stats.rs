//! `ctscope stats`: headless reports, one per interval.

use std::io::{self, Write as _};

use conntrack_common::setting;
use tokio::{
    sync::{Notify, mpsc, oneshot},
    time::{Instant, sleep_until},
};

use super::{signals::Signals, stdout_err};
use crate::{
    cli::{ProbeArgs, StatsArgs},
    model::{Model, RunInfo},
    probe::ProbeOptions,
    source::live::{LiveOptions, LiveSource, WALK_BUDGET},
    views::stats::{
        BUCKETS_HEADER, TABLE_HEADER, bucket_columns, json_line, mismatch_warning, table_row,
    },
};

pub async fn run(args: &StatsArgs, probe: &ProbeArgs) -> anyhow::Result<()> {
    run_until(args, probe, &Notify::new(), None).await
}

/// `run`, which also tells `attached` once the probes are attached, and
/// ends when `stop` is notified (a caller that installed its signal
/// handlers earlier; a notification sent before this runs counts).
pub async fn run_until(
    args: &StatsArgs,
    probe: &ProbeArgs,
    stop: &Notify,
    attached: Option<oneshot::Sender<()>>,
) -> anyhow::Result<()> {
    super::check_ready_file(args.ready_file.as_deref())?;
    let mut signals = Signals::install()?;
    let (tx, mut rx) = mpsc::channel(64);
    let live = LiveSource::start(
        LiveOptions {
            probe: probe.options(1),
            sample_every: args.interval,
            kernel_stats: probe.kernel_stats.into(),
            // Drop details are rare and cheap; allocation events are not
            // needed for counts.
            events: setting::EVENTS_DROP,
            // The stats record carries the summary only.
            buckets: args.buckets.then_some(0),
            holders: false,
            walk_budget: WALK_BUDGET,
        },
        tx,
    )
    .await?;
    super::write_ready_file(args.ready_file.as_deref())?;
    if let Some(attached) = attached {
        let _ = attached.send(());
    }
    let mut model = Model::new(RunInfo {
        backend: live.info.backend.to_owned(),
        kernel: live.info.kernel.clone(),
    });
    let mut out = io::stdout();
    if !args.json {
        let extra = if args.buckets { BUCKETS_HEADER } else { "" };
        if let Err(e) = writeln!(out, "{TABLE_HEADER}{extra}") {
            live.stop().await?;
            return Err(stdout_err(e));
        }
    }
    let deadline = args.duration.map(|d| Instant::now() + d);
    let mut last_report = false;
    let mut printed = 0;
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
                let line = match (args.json, args.buckets) {
                    (true, _) => json_line(interval),
                    (false, false) => table_row(interval),
                    (false, true) => table_row(interval) + &bucket_columns(interval),
                };
                if let Some(warning) = mismatch_warning(interval) {
                    eprintln!("{warning}");
                }
                if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                    // Piped into `head`: stop quietly; another error is one.
                    live.stop().await?;
                    return Err(stdout_err(e));
                }
                printed += 1;
                // A deadline that falls within a tenth of an interval of this
                // report ends the run here rather than with a sliver.
                let near_deadline = deadline
                    .is_some_and(|d| d.saturating_duration_since(Instant::now()) < args.interval / 10);
                if last_report || near_deadline || args.count.is_some_and(|n| printed >= n) {
                    break;
                }
            }
            () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() && !last_report => {
                live.sample_now();
                last_report = true;
            }
            _ = signals.recv() => break,
            () = stop.notified() => break,
        }
    }
    live.stop().await
}

impl ProbeArgs {
    /// Probe options with this command's ring buffer size unless the user
    /// chose one: every MiB of ring is two MiB of ctscope's resident memory
    /// (the kernel maps its pages twice).
    pub fn options(&self, default_ring_mib: u32) -> ProbeOptions {
        ProbeOptions {
            ring_bytes: self.ring_size.unwrap_or(default_ring_mib) << 20,
            backend: self.backend.into(),
            count: true,
            drops: true,
            floor: self.floor,
            locate: self.locate,
        }
    }
}

impl From<&ProbeArgs> for ProbeOptions {
    /// Options for commands that stream every event.
    fn from(args: &ProbeArgs) -> Self {
        args.options(16)
    }
}
