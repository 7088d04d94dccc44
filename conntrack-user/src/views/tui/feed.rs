//! What the screen knows about where its data comes from, beyond the
//! model: a recording started with `r`, the load of `ctscope demo`, or the
//! playback position of `ctscope replay`. The command copies these in as
//! they change (on ticks); rendering reads them.

use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent};

/// Seek step of ← and →.
pub const SEEK_STEP: Duration = Duration::from_secs(10);
/// Replay speeds `+` and `-` step through; past the last comes "as fast
/// as possible".
pub const SPEEDS: [f64; 10] = [0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 1000.0];

/// A recording in progress, as the footer shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordingView {
    /// The file's name.
    pub file: String,
    pub events: u64,
    pub bytes: u64,
    /// Events the kernel could not deliver while recording.
    pub lost: u64,
    pub elapsed: Duration,
    /// Waiting for the first snapshot: events are not written before it.
    pub starting: bool,
    /// Stopped: the last snapshot and the END record are being written.
    pub stopping: bool,
}

/// `ctscope demo`'s load, as the header shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DemoView {
    /// `udp`, `syn` or `tcp`.
    pub kind: &'static str,
    /// Target flows per second; `None`: as fast as possible.
    pub rate: Option<u64>,
    pub netns: u32,
    /// nf_conntrack_max for the run, when the demo lowered it.
    pub squeezed: Option<u64>,
    /// Flows sent so far, and sends the kernel refused (table full at
    /// OUTPUT shows up as EPERM).
    pub sent: u64,
    pub refused: u64,
}

/// `ctscope replay`'s playback, as the header shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReplayView {
    pub file: String,
    /// Recording time played so far.
    pub position: Duration,
    /// The recording's length, once it has been read through (in the
    /// background: a long recording takes a while).
    pub length: Option<Duration>,
    pub paused: bool,
    /// The end was reached; ← goes back.
    pub finished: bool,
    /// `None`: as fast as possible.
    pub speed: Option<f64>,
    /// Damaged records were skipped.
    pub damaged: bool,
}

/// What a key asks of a replay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReplayAction {
    TogglePause,
    /// Play up to the next snapshot, then pause.
    Step,
    /// Go to this time since the recording began.
    Seek(Duration),
    Speed(Option<f64>),
}

impl ReplayView {
    /// The replay control a key stands for, if any.
    pub fn on_key(&self, key: KeyEvent) -> Option<ReplayAction> {
        Some(match key.code {
            KeyCode::Char('p') | KeyCode::Char(' ') => ReplayAction::TogglePause,
            KeyCode::Char('n') => ReplayAction::Step,
            KeyCode::Left => ReplayAction::Seek(self.position.saturating_sub(SEEK_STEP)),
            KeyCode::Right => {
                let to = self.position + SEEK_STEP;
                ReplayAction::Seek(self.length.map_or(to, |len| to.min(len)))
            }
            KeyCode::Char('+') | KeyCode::Char('=') => ReplayAction::Speed(faster(self.speed)),
            KeyCode::Char('-') => ReplayAction::Speed(slower(self.speed)),
            _ => return None,
        })
    }
}

/// The next speed up; after the fastest step, as fast as possible.
pub fn faster(speed: Option<f64>) -> Option<f64> {
    let now = speed?;
    SPEEDS.into_iter().find(|s| *s > now * 1.0001)
}

/// The next speed down; the slowest step stays.
pub fn slower(speed: Option<f64>) -> Option<f64> {
    let Some(now) = speed else {
        return SPEEDS.last().copied();
    };
    Some(
        SPEEDS
            .into_iter()
            .rev()
            .find(|s| *s < now * 0.9999)
            .unwrap_or(SPEEDS[0]),
    )
}

/// "×2", "×0.25", "max".
pub fn speed_label(speed: Option<f64>) -> String {
    match speed {
        None => "max".to_owned(),
        Some(s) if s.fract() == 0.0 => format!("×{s:.0}"),
        Some(s) => format!("×{s}"),
    }
}

/// 83 s -> "1:23", 3723 s -> "1:02:03": a position on a timeline.
pub fn clock_span(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use crossterm::event::KeyModifiers;

    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn speed_steps_up_to_max_and_back() {
        assert_eq!(faster(Some(1.0)), Some(2.0));
        assert_eq!(faster(Some(3.0)), Some(5.0), "from a speed off the ladder");
        assert_eq!(faster(Some(1000.0)), None, "then as fast as possible");
        assert_eq!(faster(None), None);
        assert_eq!(slower(None), Some(1000.0));
        assert_eq!(slower(Some(2.0)), Some(1.0));
        assert_eq!(slower(Some(0.25)), Some(0.25), "the slowest stays");
        assert_eq!(speed_label(Some(2.0)), "×2");
        assert_eq!(speed_label(Some(0.5)), "×0.5");
        assert_eq!(speed_label(None), "max");
    }

    #[test]
    fn replay_keys_seek_within_the_recording() {
        let view = ReplayView {
            position: Duration::from_secs(25),
            length: Some(Duration::from_secs(30)),
            speed: Some(1.0),
            ..ReplayView::default()
        };
        assert_eq!(
            view.on_key(key(KeyCode::Left)),
            Some(ReplayAction::Seek(Duration::from_secs(15)))
        );
        assert_eq!(
            view.on_key(key(KeyCode::Right)),
            Some(ReplayAction::Seek(Duration::from_secs(30))),
            "not past the end"
        );
        let start = ReplayView {
            position: Duration::from_secs(4),
            ..view.clone()
        };
        assert_eq!(
            start.on_key(key(KeyCode::Left)),
            Some(ReplayAction::Seek(Duration::ZERO))
        );
        assert_eq!(
            view.on_key(key(KeyCode::Char('+'))),
            Some(ReplayAction::Speed(Some(2.0)))
        );
        assert_eq!(
            view.on_key(key(KeyCode::Char('n'))),
            Some(ReplayAction::Step)
        );
        assert_eq!(view.on_key(key(KeyCode::Char('s'))), None);
    }

    #[test]
    fn timeline_positions() {
        assert_eq!(clock_span(Duration::from_secs(83)), "1:23");
        assert_eq!(clock_span(Duration::from_secs(3723)), "1:02:03");
    }
}
