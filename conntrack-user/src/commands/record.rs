//! `ctscope record`: live capture into a trace file, headless.
//!
//! The live source sends messages; a blocking thread owns the file and
//! writes them (compression and write(2) never stall the async runtime that
//! drains the ring buffer). The main task handles signals, the deadline and
//! the status line, then asks the source for a last snapshot and waits for
//! the writer to close the file.

use std::{
    io::{IsTerminal as _, Write as _},
    path::Path,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::Context as _;
use tokio::{
    runtime::Handle,
    signal::unix::{SignalKind, signal},
    sync::{Notify, mpsc, oneshot},
    time::{Instant, MissedTickBehavior, interval, sleep_until},
};

use crate::{
    cli::{ProbeArgs, RecordArgs, TraceFilterArgs},
    event::Message,
    kernel::sysctl::Sysctls,
    probe::{EBPF_BUILD_ID, ProbeOptions},
    source::live::{LiveOptions, LiveSource, monotonic_ns},
    trace::{
        Header, TraceError, TraceWriter, WriterOptions,
        filter::EventFilter,
        recorder::{Progress, Recorder},
        writer::{WriterTotals, wall_ns},
    },
};

/// Messages buffered between the source and the writer: 64 batches of up
/// to 4096 events, about two seconds at the fastest rate measured here.
const CHANNEL: usize = 64;
/// The writer wakes at least this often to flush when idle.
const WRITER_TICK: Duration = Duration::from_millis(100);
/// Status line refresh.
const STATUS_EVERY: Duration = Duration::from_millis(500);

impl TraceFilterArgs {
    pub fn to_filter(&self) -> EventFilter {
        EventFilter {
            causes: self.cause.clone(),
            syn_only: self.syn,
            netns: self.netns,
            proto: self.proto,
            port: self.port,
            host: self.host,
        }
    }
}

pub async fn run(args: &RecordArgs, probe: &ProbeArgs) -> anyhow::Result<()> {
    let filter = args.filter.to_filter();
    let (tx, rx) = mpsc::channel(CHANNEL);
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
        },
        tx,
    )
    .await?;
    let mut classes = Vec::new();
    if !filter.drops_only() {
        classes.push("ct".to_owned());
    }
    classes.push("drop".to_owned());
    let header = Header {
        ctscope_version: crate::version::SHORT.to_owned(),
        ebpf_build_id: EBPF_BUILD_ID.to_owned(),
        kernel: live.info.kernel.clone(),
        hostname: hostname(),
        backend: live.info.backend.to_owned(),
        start_wall_ns: wall_ns(),
        start_mono_ns: monotonic_ns(),
        sysctls: Sysctls::read(),
        sample_interval_ms: u64::try_from(args.interval.as_millis()).unwrap_or(u64::MAX),
        ring_bytes,
        event_classes: classes,
        filter: filter.describe(),
        run_id: run_id(),
        ..Header::default()
    };
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
    let count_reached = Arc::new(Notify::new());
    let (reason_tx, reason_rx) = oneshot::channel();
    let mut consumer = tokio::task::spawn_blocking({
        let count_reached = count_reached.clone();
        let handle = Handle::current();
        move || consume(&handle, rx, recorder, &count_reached, reason_rx)
    });
    if let Err(e) = super::write_ready_file(args.ready_file.as_deref()) {
        let _ = reason_tx.send("error");
        let _ = live.stop().await;
        let _ = consumer.await;
        return Err(e);
    }

    let started = Instant::now();
    let status = std::io::stderr().is_terminal();
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let deadline = args.duration.map(|d| started + d);
    let mut tick = interval(STATUS_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut writer_done = None;
    let reason = loop {
        tokio::select! {
            _ = sigint.recv() => break "signal",
            _ = sigterm.recv() => break "signal",
            () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                break "duration";
            }
            () = count_reached.notified() => break "count",
            done = &mut consumer => {
                writer_done = Some(done);
                break "error";
            }
            _ = tick.tick(), if status => {
                status_line(&args.output, &progress, started.elapsed());
            }
        }
    };
    let _ = reason_tx.send(reason);
    // A last snapshot covers everything up to now; then the source closes
    // the channel and the writer finishes the file.
    live.sample_now();
    let stopped = live.stop().await;
    let written = match writer_done {
        Some(done) => done,
        None => consumer.await,
    };
    if status {
        eprint!("\r\x1b[K");
    }
    let totals = written.context("the trace writer panicked")??;
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

/// The writer thread: applies messages until the source closes the channel.
fn consume(
    handle: &Handle,
    mut rx: mpsc::Receiver<Message>,
    mut recorder: Recorder,
    count_reached: &Notify,
    mut reason: oneshot::Receiver<&'static str>,
) -> Result<WriterTotals, TraceError> {
    let mut notified = false;
    loop {
        let next = handle.block_on(async { tokio::time::timeout(WRITER_TICK, rx.recv()).await });
        match next {
            Ok(Some(msg)) => {
                recorder.apply(monotonic_ns(), &msg)?;
                if recorder.count_reached() && !notified {
                    count_reached.notify_one();
                    notified = true;
                }
            }
            Ok(None) => break,
            Err(_elapsed) => {}
        }
        recorder.tick()?;
    }
    let reason = reason.try_recv().unwrap_or("closed");
    recorder.finish(reason)
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

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// A random id shared by the parts of one recording.
fn run_id() -> String {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        let mix = wall_ns() ^ (u64::from(std::process::id()) << 32);
        bytes = mix.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
