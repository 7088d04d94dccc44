//! The `r` key of `ctscope top` (and `demo`): a trace recorded while the
//! screen runs, through the same writer thread as `ctscope record`
//! (`trace::session`).
//!
//! The live source's messages pass through a forwarder on their way to the
//! screen; while recording, it hands the writer a copy of each. It waits
//! for the writer when the writer falls behind (as `ctscope record` does:
//! the kernel then counts lost events, which the trace records), while the
//! screen's loop goes on handling keys and ticks.
//!
//! A recording starts at a snapshot and ends at one, so every count in the
//! file is measured from its first snapshot: starting asks the source for
//! allocation and free events and a snapshot now, and the forwarder keeps
//! nothing before that snapshot; stopping asks for drop events only and a
//! last snapshot, and the forwarder closes the writer's channel after it.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering},
    time::{Instant, SystemTime},
};

use conntrack_common::setting;
use tokio::sync::mpsc;

use super::tui::AppEvent;
use crate::{
    event::Message,
    source::live::{LiveSource, monotonic_ns},
    trace::{
        TraceWriter, WriterOptions,
        filter::EventFilter,
        recorder::{Progress, Recorder},
        session::{self, RecorderThread},
        writer::WriterTotals,
    },
    views::tui::{UiState, feed::RecordingView, text::bytes as human_bytes},
};

/// Event classes while recording: a trace holds every allocation and free.
const RECORDING_EVENTS: u32 = setting::EVENTS_CT | setting::EVENTS_DROP;

/// What the screen's loop tells the forwarder.
#[derive(Debug)]
pub enum TeeControl {
    /// Copy messages to `to`, from the first snapshot taken at or after
    /// `from_mono_ns`.
    Start {
        to: mpsc::Sender<Message>,
        from_mono_ns: u64,
    },
    /// Close after the first snapshot taken at or after this time.
    StopAt(u64),
}

/// Which messages a recording keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gate {
    from: u64,
    until: Option<u64>,
    open: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    Skip,
    Write,
    /// Write, then close the recording.
    WriteLast,
}

impl Gate {
    pub fn new(from_mono_ns: u64) -> Self {
        Self {
            from: from_mono_ns,
            until: None,
            open: false,
        }
    }

    pub fn stop_at(&mut self, mono_ns: u64) {
        self.until.get_or_insert(mono_ns);
    }

    pub fn pass(&mut self, msg: &Message) -> Pass {
        let sampled = match msg {
            Message::Sample(s) => Some(s.mono_ns),
            _ => None,
        };
        if !self.open {
            match sampled {
                Some(t) if t >= self.from => self.open = true,
                _ => return Pass::Skip,
            }
        }
        match (sampled, self.until) {
            (Some(t), Some(until)) if t >= until => Pass::WriteLast,
            _ => Pass::Write,
        }
    }
}

/// Forwards the live source's messages to the screen's loop, and copies
/// them to a recording while one runs. Ends when the source does (or when
/// the screen is gone and nothing is being recorded).
pub fn spawn_forwarder(
    mut source: mpsc::Receiver<Message>,
    screen: mpsc::Sender<AppEvent>,
    mut control: mpsc::UnboundedReceiver<TeeControl>,
) {
    tokio::spawn(async move {
        let mut tee: Option<(mpsc::Sender<Message>, Gate)> = None;
        let mut screen_open = true;
        let mut control_open = true;
        loop {
            tokio::select! {
                biased;
                c = control.recv(), if control_open => match c {
                    Some(TeeControl::Start { to, from_mono_ns }) => {
                        tee = Some((to, Gate::new(from_mono_ns)));
                    }
                    Some(TeeControl::StopAt(t)) => {
                        if let Some((_, gate)) = &mut tee {
                            gate.stop_at(t);
                        }
                    }
                    None => control_open = false,
                },
                msg = source.recv() => {
                    let Some(msg) = msg else { break };
                    if let Some((to, gate)) = &mut tee {
                        let keep = match gate.pass(&msg) {
                            Pass::Skip => true,
                            // A writer that failed has closed its end.
                            Pass::Write => to.send(msg.clone()).await.is_ok(),
                            Pass::WriteLast => {
                                let _ = to.send(msg.clone()).await;
                                false
                            }
                        };
                        if !keep {
                            // Dropping the sender lets the writer finish.
                            tee = None;
                        }
                    }
                    if screen_open && screen.send(AppEvent::Kernel(msg)).await.is_err() {
                        screen_open = false;
                    }
                    if !screen_open && tee.is_none() {
                        break;
                    }
                }
            }
        }
    });
}

/// The recording of a live view, if one runs.
pub struct LiveRecorder<'a> {
    live: &'a LiveSource,
    tee: mpsc::UnboundedSender<TeeControl>,
    /// Where recordings go.
    dir: PathBuf,
    /// The event classes the view streams when not recording.
    idle_events: u32,
    sample_every: std::time::Duration,
    ring_bytes: u32,
    active: Option<Active>,
}

struct Active {
    path: PathBuf,
    /// The file name, for the footer.
    name: String,
    /// The path, for messages.
    shown: String,
    started: Instant,
    thread: RecorderThread,
    progress: Arc<Progress>,
    /// Stopped: waiting for the last snapshot.
    stopping: bool,
}

/// A recording that was closed.
#[derive(Debug)]
pub struct Saved {
    pub path: PathBuf,
    pub totals: WriterTotals,
    pub seconds: f64,
}

impl Saved {
    pub fn describe(&self) -> String {
        format!(
            "{} events, {} snapshots, {} lost, {} in {:.1} s",
            self.totals.events,
            self.totals.snapshots,
            self.totals.lost,
            human_bytes(self.totals.bytes),
            self.seconds
        )
    }
}

impl<'a> LiveRecorder<'a> {
    pub fn new(
        live: &'a LiveSource,
        tee: mpsc::UnboundedSender<TeeControl>,
        dir: PathBuf,
        idle_events: u32,
        sample_every: std::time::Duration,
        ring_bytes: u32,
    ) -> Self {
        Self {
            live,
            tee,
            dir,
            idle_events,
            sample_every,
            ring_bytes,
            active: None,
        }
    }

    /// `r`: starts a recording, or stops the one running.
    pub fn toggle(&mut self, ui: &mut UiState) {
        match &self.active {
            Some(a) if a.stopping => ui.say("the recording is being saved"),
            Some(_) => {
                self.stop("stopped");
                ui.say("stopping: writing a last snapshot");
            }
            None => match self.start() {
                Ok(shown) => ui.say(format!(
                    "recording every allocation, free and drop to {shown}; r stops"
                )),
                Err(e) => ui.say(format!("cannot record: {e:#}")),
            },
        }
    }

    fn start(&mut self) -> anyhow::Result<String> {
        let path = free_name(&self.dir, SystemTime::now());
        let filter = EventFilter::default();
        let header = session::live_header(
            &self.live.info,
            self.sample_every,
            self.ring_bytes,
            super::top::read_objsize(),
            &filter,
        );
        // Creating the file writes its header: a few hundred bytes, the
        // only write on this thread.
        let writer = TraceWriter::create(&path, header, WriterOptions::default())?;
        let progress = Arc::new(Progress::default());
        let recorder = Recorder::new(writer, filter, None, progress.clone());
        let (to, rx) = mpsc::channel(session::CHANNEL);
        let thread = RecorderThread::spawn(rx, recorder, progress.clone());
        let from_mono_ns = monotonic_ns();
        let _ = self.tee.send(TeeControl::Start { to, from_mono_ns });
        // The source applies these in order: events first, so nothing
        // allocated after the baseline snapshot is missing from the file.
        self.live.set(setting::EVENTS, RECORDING_EVENTS);
        self.live.sample_now();
        let shown = shown_path(&path);
        let name = path
            .file_name()
            .map_or_else(|| shown.clone(), |n| n.to_string_lossy().into_owned());
        self.active = Some(Active {
            path,
            name,
            shown: shown.clone(),
            started: Instant::now(),
            thread,
            progress,
            stopping: false,
        });
        Ok(shown)
    }

    /// Asks for the last snapshot; the writer closes the file after it.
    pub fn stop(&mut self, reason: &'static str) {
        let Some(a) = &mut self.active else { return };
        if a.stopping {
            return;
        }
        a.stopping = true;
        a.thread.set_reason(reason);
        let _ = self.tee.send(TeeControl::StopAt(monotonic_ns()));
        self.live.set(setting::EVENTS, self.idle_events);
        self.live.sample_now();
    }

    /// On every tick: the footer's numbers, and the outcome once the writer
    /// has finished (stopped, or failed).
    pub fn tick(&mut self, ui: &mut UiState) {
        let Some(a) = self.active.take() else {
            ui.recording = None;
            return;
        };
        let Active {
            path,
            name,
            shown,
            started,
            thread,
            progress,
            stopping,
        } = a;
        match thread.try_join() {
            Err(thread) => {
                ui.recording = Some(RecordingView {
                    file: name.clone(),
                    events: progress.events.load(Ordering::Relaxed),
                    bytes: progress.bytes.load(Ordering::Relaxed),
                    lost: progress.lost.load(Ordering::Relaxed),
                    elapsed: started.elapsed(),
                    starting: progress.snapshots.load(Ordering::Relaxed) == 0,
                    stopping,
                });
                self.active = Some(Active {
                    path,
                    name,
                    shown,
                    started,
                    thread,
                    progress,
                    stopping,
                });
            }
            Ok(outcome) => {
                ui.recording = None;
                if !stopping {
                    // The writer gave up on its own: stop streaming for it.
                    self.live.set(setting::EVENTS, self.idle_events);
                }
                match outcome {
                    Ok(totals) => {
                        let saved = Saved {
                            path,
                            totals,
                            seconds: started.elapsed().as_secs_f64(),
                        };
                        ui.say(format!("saved {shown}: {}", saved.describe()));
                    }
                    Err(e) => ui.say(format!("recording to {shown} failed: {e:#}")),
                }
            }
        }
    }

    /// At exit: stops a running recording. Call [`Closing::wait`] once the
    /// source has stopped (its last snapshot closes the file).
    pub fn close(mut self, reason: &'static str) -> Option<Closing> {
        self.stop(reason);
        self.active.map(|a| Closing {
            path: a.path,
            started: a.started,
            thread: a.thread,
        })
    }
}

/// A recording being closed at exit.
pub struct Closing {
    path: PathBuf,
    started: Instant,
    thread: RecorderThread,
}

impl Closing {
    pub async fn wait(self) -> anyhow::Result<Saved> {
        let totals = self.thread.join().await?;
        Ok(Saved {
            path: self.path,
            totals,
            seconds: self.started.elapsed().as_secs_f64(),
        })
    }
}

/// `DIR/ctscope-YYYYmmdd-HHMMSS.ctrace`, with `-2`, `-3`... before the
/// extension when that exists (two recordings in one second).
fn free_name(dir: &Path, now: SystemTime) -> PathBuf {
    let name = session::default_file_name(now);
    let first = dir.join(&name);
    if !first.exists() {
        return first;
    }
    let stem = name.trim_end_matches(".ctrace");
    (2..)
        .map(|n| dir.join(format!("{stem}-{n}.ctrace")))
        .find(|p| !p.exists())
        .unwrap_or(first)
}

/// The path as a user would type it: relative to the current directory
/// when it is in it.
fn shown_path(path: &Path) -> String {
    let here = std::env::current_dir().ok();
    match here.as_deref().and_then(|cwd| path.strip_prefix(cwd).ok()) {
        Some(rel) if rel.parent() == Some(Path::new("")) => rel.display().to_string(),
        _ => path.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Sample;

    fn sample(mono_ns: u64) -> Message {
        Message::Sample(Box::new(Sample {
            mono_ns,
            ..Sample::default()
        }))
    }

    #[test]
    fn a_recording_runs_from_a_snapshot_to_a_snapshot() {
        let mut gate = Gate::new(100);
        assert_eq!(gate.pass(&Message::Events(Vec::new())), Pass::Skip);
        assert_eq!(gate.pass(&sample(90)), Pass::Skip, "taken before the start");
        assert_eq!(gate.pass(&Message::Reset), Pass::Skip);
        assert_eq!(gate.pass(&sample(100)), Pass::Write, "the baseline");
        assert_eq!(gate.pass(&Message::Events(Vec::new())), Pass::Write);
        gate.stop_at(200);
        assert_eq!(
            gate.pass(&sample(150)),
            Pass::Write,
            "a snapshot queued before the stop"
        );
        assert_eq!(gate.pass(&Message::Events(Vec::new())), Pass::Write);
        gate.stop_at(300);
        assert_eq!(
            gate.pass(&sample(210)),
            Pass::WriteLast,
            "the first stop counts"
        );
    }

    #[test]
    fn names_do_not_overwrite() {
        let dir = std::env::temp_dir().join(format!("ctscope-names-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(86_400);
        let first = free_name(&dir, now);
        assert_eq!(
            first.file_name().and_then(|n| n.to_str()),
            Some("ctscope-19700102-000000.ctrace")
        );
        std::fs::write(&first, b"").expect("write");
        let second = free_name(&dir, now);
        assert_eq!(
            second.file_name().and_then(|n| n.to_str()),
            Some("ctscope-19700102-000000-2.ctrace")
        );
        std::fs::remove_dir_all(&dir).expect("clean");
    }
}
