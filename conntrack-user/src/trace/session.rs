//! A recording in progress, shared by `ctscope record` and the `r` key of
//! `ctscope top`: the trace header of a live capture, and the blocking
//! thread that owns the [`TraceWriter`] and applies the live source's
//! messages to it (compression and write(2) never stall the async runtime
//! that drains the ring buffer, nor a screen that is being drawn).
//!
//! The thread ends when every sender of its channel is gone: whoever feeds
//! it asks the live source for a last snapshot first, so the file ends
//! with one, then an END record with the reason set here.

use std::{
    future::Future as _,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use tokio::{
    runtime::Handle,
    sync::{Notify, mpsc, oneshot},
    task::{JoinError, JoinHandle},
};

use super::{
    Header, TraceError,
    filter::EventFilter,
    recorder::{Progress, Recorder},
    writer::{WriterTotals, wall_ns},
};
use crate::{
    event::Message,
    kernel::sysctl::Sysctls,
    probe::{EBPF_BUILD_ID, ProbeInfo},
    source::live::monotonic_ns,
};

/// Messages buffered between the source and the writer: 64 batches of up
/// to 4096 events, about two seconds at the fastest rate measured here.
pub const CHANNEL: usize = 64;
/// The writer wakes at least this often to flush when idle.
const WRITER_TICK: Duration = Duration::from_millis(100);

/// The header of a trace of live capture started now; `objsize` is the
/// conntrack slab's object size read on this machine, if it could be.
pub fn live_header(
    info: &ProbeInfo,
    interval: Duration,
    ring_bytes: u32,
    objsize: Option<u64>,
    filter: &EventFilter,
) -> Header {
    let mut classes = Vec::new();
    if !filter.drops_only() {
        classes.push("ct".to_owned());
    }
    classes.push("drop".to_owned());
    Header {
        ctscope_version: crate::version::SHORT.to_owned(),
        ebpf_build_id: EBPF_BUILD_ID.to_owned(),
        kernel: info.kernel.clone(),
        hostname: hostname(),
        backend: info.backend.to_owned(),
        start_wall_ns: wall_ns(),
        start_mono_ns: monotonic_ns(),
        sysctls: Sysctls::read(),
        sample_interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
        ring_bytes,
        objsize,
        event_classes: classes,
        filter: filter.describe(),
        run_id: run_id(),
        ..Header::default()
    }
}

/// The writer thread of one recording.
pub struct RecorderThread {
    /// Events, bytes and lost events written so far, for a status line.
    pub progress: Arc<Progress>,
    count_reached: Arc<Notify>,
    reason: Option<oneshot::Sender<&'static str>>,
    handle: JoinHandle<Result<WriterTotals, TraceError>>,
    outcome: Option<Result<Result<WriterTotals, TraceError>, JoinError>>,
}

impl RecorderThread {
    /// Starts writing what arrives on `rx` through `recorder` (whose
    /// progress is reported on `progress`).
    pub fn spawn(rx: mpsc::Receiver<Message>, recorder: Recorder, progress: Arc<Progress>) -> Self {
        let count_reached = Arc::new(Notify::new());
        let (reason_tx, reason_rx) = oneshot::channel();
        let handle = tokio::task::spawn_blocking({
            let count_reached = count_reached.clone();
            let runtime = Handle::current();
            move || consume(&runtime, rx, recorder, &count_reached, reason_rx)
        });
        Self {
            progress,
            count_reached,
            reason: Some(reason_tx),
            handle,
            outcome: None,
        }
    }

    /// The reason the END record gives (docs/trace-format.md); the first
    /// one set counts. Set it before the channel closes.
    pub fn set_reason(&mut self, reason: &'static str) {
        if let Some(tx) = self.reason.take() {
            let _ = tx.send(reason);
        }
    }

    /// Notified once the recorder's event limit (`--count`) is reached
    /// (the permit is kept until someone waits).
    pub fn count_reached(&self) -> Arc<Notify> {
        self.count_reached.clone()
    }

    /// Resolves when the thread has ended: the channel closed, or writing
    /// failed. Cancel-safe.
    pub async fn ended(&mut self) {
        if self.outcome.is_none() {
            self.outcome = Some((&mut self.handle).await);
        }
    }

    /// The totals if the thread has ended, without waiting (for a loop
    /// that must not block); `Err(self)` while it runs.
    pub fn try_join(mut self) -> Result<anyhow::Result<WriterTotals>, Self> {
        if self.outcome.is_none() && self.handle.is_finished() {
            // A finished task's handle is ready at the first poll.
            let mut cx = Context::from_waker(Waker::noop());
            if let Poll::Ready(done) = Pin::new(&mut self.handle).poll(&mut cx) {
                self.outcome = Some(done);
            }
        }
        match self.outcome.take() {
            Some(done) => Ok(totals(done)),
            None => Err(self),
        }
    }

    /// Waits for the file to be closed; the totals written.
    pub async fn join(mut self) -> anyhow::Result<WriterTotals> {
        self.ended().await;
        match self.outcome {
            Some(done) => totals(done),
            None => anyhow::bail!("the trace writer did not finish"),
        }
    }
}

fn totals(
    done: Result<Result<WriterTotals, TraceError>, JoinError>,
) -> anyhow::Result<WriterTotals> {
    Ok(done.context("the trace writer panicked")??)
}

/// The writer thread: applies messages until the source closes the channel.
fn consume(
    runtime: &Handle,
    mut rx: mpsc::Receiver<Message>,
    mut recorder: Recorder,
    count_reached: &Notify,
    mut reason: oneshot::Receiver<&'static str>,
) -> Result<WriterTotals, TraceError> {
    let mut notified = false;
    loop {
        let next = runtime.block_on(async { tokio::time::timeout(WRITER_TICK, rx.recv()).await });
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

/// `ctscope-YYYYmmdd-HHMMSS.ctrace` for a wall-clock time (UTC, like every
/// time ctscope prints).
pub fn default_file_name(wall: SystemTime) -> String {
    let secs = wall
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = super::export::civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "ctscope-{y:04}{m:02}{d:02}-{:02}{:02}{:02}.ctrace",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_follow_the_utc_date_and_time() {
        let at = |secs: u64| default_file_name(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "ctscope-19700101-000000.ctrace");
        // 2026-11-26 12:34:56 UTC.
        assert_eq!(at(1_795_696_496), "ctscope-20261126-123456.ctrace");
        // A leap day.
        assert_eq!(at(1_709_164_800 + 3599), "ctscope-20240229-005959.ctrace");
    }
}
