//! Replay of a recorded trace: sends the same [`Message`]s live capture sent,
//! with the recorded timing (scaled by a speed), so the model and every view
//! work on a recording as they do live.
//!
//! The controls a viewer needs are methods: pause and resume, step to the
//! next snapshot, seek to a time, change the speed. Seeking backwards
//! starts the recording over and sends [`Message::Reset`] first, so the
//! consumer's model forgets what it had applied. Damage in the file is
//! reported on [`ReplaySource::issues`] and playback goes on with the next
//! intact record.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use tokio::{
    runtime::Handle,
    sync::{mpsc, watch},
    task::JoinHandle,
    time::Instant,
};

use crate::{
    event::{Message, Sample},
    model::RunInfo,
    trace::{Header, Issue, Item, Record, Trace, TraceError, summary::run_info},
};

#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// 1.0 plays at the recorded pace, 2.0 twice as fast; `None` sends
    /// everything as fast as the consumer takes it.
    pub speed: Option<f64>,
    pub start_paused: bool,
    /// At the end of the recording, wait for a seek or a stop instead of
    /// ending (a viewer can go back); without it the source ends there.
    pub hold_at_end: bool,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            speed: Some(1.0),
            start_paused: false,
            hold_at_end: false,
        }
    }
}

/// Where playback is, for a viewer's header.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReplayStatus {
    /// Recording time of the last record sent, since the recording began.
    pub position: Duration,
    pub paused: bool,
    /// The end of the recording was reached.
    pub finished: bool,
    pub speed: Option<f64>,
    /// Problems found in the file so far, and whether any was damage in
    /// the middle (as opposed to a cut-off tail).
    pub issues: u64,
    pub damaged: bool,
}

/// What a finished replay went through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    pub frames: u64,
    pub messages: u64,
    pub issues: u64,
    pub damaged: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Control {
    Pause,
    Resume,
    TogglePause,
    Step,
    Seek(Duration),
    Speed(Option<f64>),
    Stop,
}

pub struct ReplaySource {
    control: mpsc::UnboundedSender<Control>,
    task: JoinHandle<anyhow::Result<ReplaySummary>>,
    /// For `Model::new`.
    pub info: RunInfo,
    /// The header of the file given.
    pub header: Header,
    pub status: watch::Receiver<ReplayStatus>,
    /// Problems found in the file, in file order, as they are met.
    pub issues: mpsc::UnboundedReceiver<Issue>,
}

impl ReplaySource {
    /// Opens the recording (errors such as "not a trace" come back here,
    /// before anything is sent), then plays it into `out`.
    pub async fn start(
        path: &Path,
        opts: ReplayOptions,
        out: mpsc::Sender<Message>,
    ) -> anyhow::Result<Self> {
        let trace = Trace::open(path)?;
        let header = trace.header().clone();
        let (control, control_rx) = mpsc::unbounded_channel();
        let (issues_tx, issues) = mpsc::unbounded_channel();
        let initial = ReplayStatus {
            paused: opts.start_paused,
            speed: opts.speed,
            ..ReplayStatus::default()
        };
        let (status_tx, status) = watch::channel(initial);
        let player = Player {
            path: path.to_owned(),
            start_mono: header.start_mono_ns,
            trace,
            out,
            control: control_rx,
            status: status_tx,
            issues: issues_tx,
            handle: Handle::current(),
            paused: opts.start_paused,
            speed: opts.speed,
            hold_at_end: opts.hold_at_end,
            step: false,
            seek_to: None,
            anchor: None,
            position: header.start_mono_ns,
            summary: ReplaySummary::default(),
        };
        let task = tokio::task::spawn_blocking(move || player.run());
        Ok(Self {
            control,
            task,
            info: run_info(&header),
            header,
            status,
            issues,
        })
    }

    pub fn pause(&self) {
        let _ = self.control.send(Control::Pause);
    }

    pub fn resume(&self) {
        let _ = self.control.send(Control::Resume);
    }

    pub fn toggle_pause(&self) {
        let _ = self.control.send(Control::TogglePause);
    }

    /// Plays up to and including the next snapshot (one stats interval),
    /// then pauses.
    pub fn step(&self) {
        let _ = self.control.send(Control::Step);
    }

    /// Moves to `at` after the start of the recording: everything recorded
    /// before it is sent at once, then playback goes on from there (paused
    /// if it was paused).
    pub fn seek(&self, at: Duration) {
        let _ = self.control.send(Control::Seek(at));
    }

    /// `None`: as fast as the consumer takes messages.
    pub fn set_speed(&self, speed: Option<f64>) {
        let _ = self.control.send(Control::Speed(speed));
    }

    /// Waits until the whole recording has been sent (or the consumer went
    /// away).
    pub async fn wait(self) -> anyhow::Result<ReplaySummary> {
        self.task.await.context("the replay task panicked")?
    }

    pub async fn stop(self) -> anyhow::Result<ReplaySummary> {
        let _ = self.control.send(Control::Stop);
        self.wait().await
    }
}

/// What a control did to the record in hand.
#[derive(PartialEq, Eq)]
enum Handled {
    Continue,
    /// Started over (seek backwards): the record in hand is stale.
    Restarted,
    Stop,
}

struct Player {
    path: PathBuf,
    start_mono: u64,
    trace: Trace,
    out: mpsc::Sender<Message>,
    control: mpsc::UnboundedReceiver<Control>,
    status: watch::Sender<ReplayStatus>,
    issues: mpsc::UnboundedSender<Issue>,
    handle: Handle,
    paused: bool,
    speed: Option<f64>,
    hold_at_end: bool,
    /// Pause after the next snapshot.
    step: bool,
    /// Send without delay until this recording time (CLOCK_MONOTONIC ns).
    seek_to: Option<u64>,
    /// Wall instant at which recording time `.1` was played.
    anchor: Option<(Instant, u64)>,
    /// Recording time of the last record sent.
    position: u64,
    summary: ReplaySummary,
}

impl Player {
    fn run(mut self) -> anyhow::Result<ReplaySummary> {
        loop {
            while let Ok(c) = self.control.try_recv() {
                if self.handle(c)? == Handled::Stop {
                    return Ok(self.summary);
                }
            }
            let item = self.trace.next_item()?;
            let frame = match item {
                Some(Item::Record(frame)) => frame,
                Some(Item::Issue(issue)) => {
                    self.summary.issues += 1;
                    self.summary.damaged |= issue.is_damage();
                    let _ = self.issues.send(issue);
                    self.publish(false);
                    continue;
                }
                None => {
                    self.publish(true);
                    if !self.hold_at_end {
                        return Ok(self.summary);
                    }
                    // Only a seek (or a stop) can change anything now.
                    match self.handle.block_on(self.control.recv()) {
                        Some(c) => {
                            if self.handle(c)? == Handled::Stop {
                                return Ok(self.summary);
                            }
                            continue;
                        }
                        None => return Ok(self.summary),
                    }
                }
            };
            self.summary.frames += 1;
            let is_snapshot = matches!(frame.record, Record::Snapshot(_));
            let Some(msg) = message(frame.record) else {
                continue;
            };
            match self.pace(frame.ts_ns)? {
                Handled::Continue => {}
                Handled::Restarted => continue,
                Handled::Stop => return Ok(self.summary),
            }
            if self.handle.block_on(self.out.send(msg)).is_err() {
                return Ok(self.summary);
            }
            self.summary.messages += 1;
            self.position = self.position.max(frame.ts_ns);
            if is_snapshot && self.step {
                self.step = false;
                self.paused = true;
            }
            self.publish(false);
        }
    }

    /// Waits until a record of recording time `ts` is due, handling
    /// controls meanwhile.
    fn pace(&mut self, ts: u64) -> Result<Handled, TraceError> {
        loop {
            if let Some(target) = self.seek_to {
                if ts < target {
                    return Ok(Handled::Continue);
                }
                self.seek_to = None;
                self.anchor = None;
            }
            if self.paused && !self.step {
                self.publish(false);
                match self.handle.block_on(self.control.recv()) {
                    Some(c) => match self.handle(c)? {
                        Handled::Continue => continue,
                        other => return Ok(other),
                    },
                    None => return Ok(Handled::Stop),
                }
            }
            let Some(speed) = self.speed else {
                return Ok(Handled::Continue);
            };
            let Some((at, from)) = self.anchor else {
                self.anchor = Some((Instant::now(), ts));
                return Ok(Handled::Continue);
            };
            let ahead = Duration::from_nanos(ts.saturating_sub(from)).div_f64(speed);
            let due = at + ahead;
            if Instant::now() >= due {
                return Ok(Handled::Continue);
            }
            let control = &mut self.control;
            let woke = self.handle.block_on(async {
                tokio::select! {
                    () = tokio::time::sleep_until(due) => None,
                    c = control.recv() => Some(c),
                }
            });
            match woke {
                None => return Ok(Handled::Continue),
                Some(None) => return Ok(Handled::Stop),
                Some(Some(c)) => match self.handle(c)? {
                    Handled::Continue => {}
                    other => return Ok(other),
                },
            }
        }
    }

    fn handle(&mut self, c: Control) -> Result<Handled, TraceError> {
        match c {
            Control::Pause => self.paused = true,
            Control::Resume => {
                self.paused = false;
                self.anchor = None;
            }
            Control::TogglePause => {
                self.paused = !self.paused;
                self.anchor = None;
            }
            Control::Step => {
                self.step = true;
                self.anchor = None;
            }
            Control::Speed(speed) => {
                self.speed = speed.filter(|s| s.is_finite() && *s > 0.0);
                self.anchor = None;
            }
            Control::Seek(at) => {
                let target = self
                    .start_mono
                    .saturating_add(u64::try_from(at.as_nanos()).unwrap_or(u64::MAX));
                self.anchor = None;
                self.seek_to = Some(target);
                if target < self.position {
                    self.trace = Trace::open(&self.path)?;
                    self.position = self.start_mono;
                    if self.handle.block_on(self.out.send(Message::Reset)).is_err() {
                        return Ok(Handled::Stop);
                    }
                    self.publish(false);
                    return Ok(Handled::Restarted);
                }
            }
            Control::Stop => return Ok(Handled::Stop),
        }
        self.publish(false);
        Ok(Handled::Continue)
    }

    fn publish(&self, finished: bool) {
        let status = ReplayStatus {
            position: Duration::from_nanos(self.position.saturating_sub(self.start_mono)),
            paused: self.paused,
            finished,
            speed: self.speed,
            issues: self.summary.issues,
            damaged: self.summary.damaged,
        };
        self.status.send_if_modified(|s| {
            let changed = *s != status;
            *s = status;
            changed
        });
    }
}

/// The message live capture sent for this record, if any.
fn message(record: Record) -> Option<Message> {
    match record {
        Record::Snapshot(s) => Some(Message::Sample(Box::new(Sample::from(*s)))),
        Record::Events(events) => Some(Message::Events(events)),
        Record::Buckets(walk) => Some(Message::Buckets(walk)),
        Record::Header(_) | Record::Lost(_) | Record::End(_) => None,
    }
}
