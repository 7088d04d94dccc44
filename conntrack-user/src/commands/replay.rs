//! `ctscope replay`: a recorded trace through the same model as live
//! capture. In a terminal, the live view (`tui`) with playback keys; with
//! --stats or when stdout is not a terminal, the JSON lines `ctscope stats
//! --json` printed.

use std::{
    io::{self, IsTerminal as _, Write as _},
    path::Path,
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot};

use super::tui::{self, Driver};
use crate::{
    cli::{ReplayArgs, Speed},
    model::Model,
    source::replay::{ReplayOptions, ReplaySource, ReplaySummary},
    trace::{Header, summary::summarize},
    views::{
        stats::json_line,
        tui::{
            UiState,
            feed::{self, ReplayAction, ReplayView},
            state::{Action, Env},
        },
    },
};

pub async fn run(args: &ReplayArgs) -> anyhow::Result<()> {
    let json = args.stats || !io::stdout().is_terminal();
    let speed = match args.speed {
        Some(Speed::Times(x)) => Some(x),
        Some(Speed::Max) => None,
        None if json => None,
        None => Some(1.0),
    };
    if !json {
        return on_screen(args, speed).await;
    }
    let (tx, mut rx) = mpsc::channel(64);
    let opts = ReplayOptions {
        speed,
        ..ReplayOptions::default()
    };
    let mut source = ReplaySource::start(&args.file, opts, tx).await?;
    let mut model = Model::new(source.info.clone());
    let mut out = io::stdout().lock();
    let mut issues_open = true;
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
                if writeln!(out, "{}", json_line(interval)).and_then(|()| out.flush()).is_err() {
                    break; // stdout closed (e.g. piped into `head`)
                }
            }
            issue = source.issues.recv(), if issues_open => match issue {
                Some(issue) => eprintln!("ctscope: warning: {}: {issue}", args.file.display()),
                None => issues_open = false,
            },
        }
    }
    drop(rx);
    while let Ok(issue) = source.issues.try_recv() {
        eprintln!("ctscope: warning: {}: {issue}", args.file.display());
    }
    let summary = source.wait().await?;
    damage_is_an_error(&args.file, &summary)
}

fn damage_is_an_error(file: &Path, summary: &ReplaySummary) -> anyhow::Result<()> {
    if summary.damaged {
        anyhow::bail!(
            "{}: damaged data was skipped (see the warnings above); the intervals around it \
             are still right, but drops in the damaged range are missing",
            file.display()
        );
    }
    Ok(())
}

/// The live view over the recording, with playback keys. It stays at the
/// end of the recording until the user quits (← goes back).
async fn on_screen(args: &ReplayArgs, speed: Option<f64>) -> anyhow::Result<()> {
    let started = Instant::now();
    let app = tui::channel();
    tui::spawn_signals(&app.0)?;
    let (tx, rx) = mpsc::channel(64);
    let opts = ReplayOptions {
        speed,
        hold_at_end: true,
        ..ReplayOptions::default()
    };
    // Opening errors (not a trace, unknown version) print before the
    // screen is taken.
    let mut source = ReplaySource::start(&args.file, opts, tx).await?;
    tui::forward(rx, app.0.clone());
    let model = Model::new(source.info.clone());
    let ui = UiState::new(replay_env(&source.header, tui::color_allowed()));
    let file = args.file.file_name().map_or_else(
        || args.file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut driver = ReplayDriver {
        source: &mut source,
        view: ReplayView {
            file,
            speed,
            ..ReplayView::default()
        },
        length: spawn_length(&args.file),
        issues: Vec::new(),
    };
    let ended = tui::on_screen(model, ui, &mut driver, app, None, started).await;
    let issues = std::mem::take(&mut driver.issues);
    drop(driver);
    let summary = source.stop().await;
    for issue in &issues {
        super::say_after_screen(&format!(
            "ctscope: warning: {}: {issue}",
            args.file.display()
        ));
    }
    if let Some(message) = ended?.message() {
        super::say_after_screen(&format!("ctscope: {message}"));
    }
    damage_is_an_error(&args.file, &summary?)
}

/// What the view knows of the recorded machine, from the trace's header:
/// the figures must be the ones the live view showed, not this machine's.
fn replay_env(header: &Header, color: bool) -> Env {
    Env {
        interval: Duration::from_millis(header.sample_interval_ms.max(1)),
        // The recorded machine's entry size: this machine's slab may differ
        // (another kernel), and the guide's upper figure is only a guess.
        objsize: header.objsize,
        color,
        bucket_walker: true,
        ..Env::default()
    }
}

/// The recording's length, read through in the background.
fn spawn_length(file: &Path) -> oneshot::Receiver<Duration> {
    let (tx, rx) = oneshot::channel();
    let file = file.to_owned();
    tokio::task::spawn_blocking(move || {
        if let Ok(summary) = summarize(&file) {
            let _ = tx.send(Duration::from_secs_f64(summary.duration_s.max(0.0)));
        }
    });
    rx
}

struct ReplayDriver<'a> {
    source: &'a mut ReplaySource,
    view: ReplayView,
    length: oneshot::Receiver<Duration>,
    /// Damage met so far, printed at exit.
    issues: Vec<String>,
}

impl Driver for ReplayDriver<'_> {
    fn tick(&mut self, ui: &mut UiState) -> Option<String> {
        if let Ok(length) = self.length.try_recv() {
            self.view.length = Some(length);
        }
        while let Ok(issue) = self.source.issues.try_recv() {
            let text = issue.to_string();
            ui.say(format!("skipped: {text}"));
            self.issues.push(text);
        }
        let status = self.source.status.borrow();
        self.view.position = status.position;
        self.view.paused = status.paused;
        self.view.finished = status.finished;
        self.view.speed = status.speed;
        self.view.damaged = status.damaged;
        ui.replay = Some(self.view.clone());
        None
    }

    fn act(&mut self, action: Action, ui: &mut UiState) {
        let Action::Replay(act) = action else { return };
        match act {
            ReplayAction::TogglePause => {
                self.source.toggle_pause();
                ui.say(if self.view.paused {
                    "playing"
                } else {
                    "paused"
                });
            }
            ReplayAction::Step => {
                self.source.step();
                ui.say("to the next snapshot");
            }
            ReplayAction::Seek(to) => {
                self.source.seek(to);
                ui.say(format!("to {}", feed::clock_span(to)));
            }
            ReplayAction::Speed(speed) => {
                self.source.set_speed(speed);
                ui.say(format!("speed {}", feed::speed_label(speed)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Live, `top` shows the slab's size (256 B here); a replay of the same
    /// table showed the guide's 320 B because it never read the recorded
    /// one (issue 18).
    #[test]
    fn a_replay_uses_the_recorded_entry_size() {
        let header = Header {
            objsize: Some(256),
            sample_interval_ms: 500,
            ..Header::default()
        };
        let env = replay_env(&header, false);
        assert_eq!(env.objsize, Some(256));
        assert_eq!(env.interval, Duration::from_millis(500));
        // A trace that did not record it: the view says it estimates.
        assert_eq!(replay_env(&Header::default(), false).objsize, None);
    }

    #[test]
    fn the_entry_size_survives_the_header_and_old_headers_read() {
        let header = Header {
            objsize: Some(256),
            ..Header::default()
        };
        let json = serde_json::to_string(&header).expect("json");
        let back: Header = serde_json::from_str(&json).expect("read back");
        assert_eq!(back.objsize, Some(256));
        // Headers written before the field existed.
        let old: Header =
            serde_json::from_str(r#"{"format_version":2,"ring_bytes":65536}"#).expect("old header");
        assert_eq!(old.objsize, None);
    }
}
