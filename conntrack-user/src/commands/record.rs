//! `ctscope record`: live capture into a trace file, headless.
//!
//! The live source sends messages; a blocking thread owns the file and
//! writes them (`trace::session`, shared with the `r` key of `ctscope
//! top`). The main task handles signals, the deadline and the status line,
//! then asks the source for a last snapshot and waits for the writer to
//! close the file.

use std::{
    io::{IsTerminal as _, Write as _},
    path::Path,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::{
    sync::mpsc,
    time::{Instant, MissedTickBehavior, interval, sleep_until},
};

use super::signals::Signals;
use crate::{
    cli::{ProbeArgs, RecordArgs},
    probe::ProbeOptions,
    source::live::{LiveOptions, LiveSource, RECORD_WALK_BUDGET},
    trace::{
        TraceWriter, WriterOptions,
        recorder::{Progress, Recorder},
        session::{self, RecorderThread},
    },
    views::tui::text::bytes as human_bytes,
};

/// Status line refresh.
const STATUS_EVERY: Duration = Duration::from_millis(500);

pub async fn run(args: &RecordArgs, probe: &ProbeArgs) -> anyhow::Result<()> {
    // Where the output goes is checked before anything is attached.
    super::check_output("-o", &args.output)?;
    super::check_ready_file(args.ready_file.as_deref())?;
    let mut signals = Signals::install()?;
    let filter = args.filter.event_filter();
    let (tx, rx) = mpsc::channel(session::CHANNEL);
    let opts = ProbeOptions::from(probe);
    let ring_bytes = opts.ring_bytes;
    let live = LiveSource::start(
        LiveOptions {
            probe: opts,
            sample_every: args.interval,
            kernel_stats: probe.kernel_stats.into(),
            events: filter.event_classes(),
            // Snapshots carry the chain-length histogram.
            buckets: Some(0),
            holders: true,
            walk_budget: RECORD_WALK_BUDGET,
        },
        tx,
    )
    .await?;
    let header = session::live_header(
        &live.info,
        args.interval,
        ring_bytes,
        super::top::read_objsize(),
        &filter,
    );
    let writer_opts = WriterOptions {
        compress: args.compress,
        max_size: args.max_size,
    };
    let writer = match TraceWriter::create(&args.output, header, writer_opts) {
        Ok(w) => w,
        Err(e) => {
            let _ = live.stop().await;
            return Err(e.into());
        }
    };
    let progress = Arc::new(Progress::default());
    let recorder = Recorder::new(writer, filter, args.count, progress.clone());
    let mut thread = RecorderThread::spawn(rx, recorder, progress.clone());
    if let Err(e) = super::write_ready_file(args.ready_file.as_deref()) {
        thread.set_reason("error");
        let _ = live.stop().await;
        let _ = thread.join().await;
        return Err(e);
    }

    let count_reached = thread.count_reached();
    let started = Instant::now();
    let status = std::io::stderr().is_terminal();
    let deadline = args.duration.map(|d| started + d);
    let mut tick = interval(STATUS_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let reason = loop {
        tokio::select! {
            _ = signals.recv() => break "signal",
            () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                break "duration";
            }
            () = count_reached.notified() => break "count",
            () = thread.ended() => break "error",
            _ = tick.tick(), if status => {
                status_line(&args.output, &progress, started.elapsed());
            }
        }
    };
    thread.set_reason(reason);
    // A last snapshot covers everything up to now; then the source closes
    // the channel and the writer finishes the file.
    live.sample_now();
    let stopped = live.stop().await;
    let written = thread.join().await;
    if status {
        eprint!("\r\x1b[K");
    }
    let totals = written?;
    stopped?;
    eprintln!(
        "ctscope: recorded {} events, {} snapshots, {} lost, {} in {:.1} s to {}{}",
        totals.events,
        totals.snapshots,
        totals.lost,
        human_bytes(totals.bytes),
        started.elapsed().as_secs_f64(),
        args.output.display(),
        if totals.parts > 1 {
            format!(" (+{} rotated parts)", totals.parts - 1)
        } else {
            String::new()
        }
    );
    Ok(())
}

fn status_line(path: &Path, p: &Progress, elapsed: Duration) {
    let secs = elapsed.as_secs();
    let line = format!(
        "\r\x1b[Krecording {}: {} events  {}  lost {}  {:02}:{:02}:{:02}",
        path.display(),
        p.events.load(Ordering::Relaxed),
        human_bytes(p.bytes.load(Ordering::Relaxed)),
        p.lost.load(Ordering::Relaxed),
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    let mut err = std::io::stderr();
    let _ = err.write_all(line.as_bytes());
    let _ = err.flush();
}
