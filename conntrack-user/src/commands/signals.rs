//! SIGINT, SIGTERM and SIGHUP end the headless long-running commands
//! (`stats`, `drops`, `record`, `load`) the same way: the command stops
//! cleanly, so `record` writes its END record and `drops` prints its
//! summary. SIGHUP is what an ssh session that drops sends; without a
//! handler it would kill ctscope mid-write. (The screen's loop has its own
//! handlers, `tui::spawn_signals`.)
//!
//! Install them before attaching anything: from then on a signal does not
//! kill ctscope, it waits here until the command's loop receives it, so a
//! signal sent during start-up still ends the run properly.

use anyhow::Context as _;
use tokio::signal::unix::{Signal, SignalKind, signal};

pub struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Signals {
    pub fn install() -> anyhow::Result<Self> {
        let handle = |kind, name| signal(kind).with_context(|| format!("handling {name}"));
        Ok(Self {
            int: handle(SignalKind::interrupt(), "SIGINT")?,
            term: handle(SignalKind::terminate(), "SIGTERM")?,
            hup: handle(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// Waits for one of the signals and names it.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}
