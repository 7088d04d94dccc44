//! SIGINT, SIGTERM and SIGHUP for the screen, and the watchdog that makes
//! them end ctscope whatever the terminal and the runtime are doing.

use std::{
    io::{self, Write as _},
    sync::atomic::{AtomicI32, AtomicU8, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use crossterm::{
    cursor, execute,
    terminal::{self, LeaveAlternateScreen},
};
use tokio::sync::mpsc;

use super::AppEvent;

/// The signal that asked the screen to stop (0: none yet). Set by the
/// signal thread; the loop checks it on every event, so a channel full of
/// kernel messages cannot keep a stop waiting behind them.
static SIGNALLED: AtomicI32 = AtomicI32::new(0);
/// Where the screen is, for the watchdog: not on screen yet (attaching,
/// changing what a demo changes), on screen, or past its loop (cleaning
/// up).
pub(super) static LOOP_STATE: AtomicU8 = AtomicU8::new(STARTING);
const STARTING: u8 = 0;
pub(super) const RUNNING: u8 = 1;
pub(super) const ENDED: u8 = 2;

/// After a signal, how long the screen's loop has to end (counted from
/// when it started, for a signal sent during start-up)...
const LOOP_GRACE: Duration = Duration::from_secs(1);
/// ...how long start-up may go on before the loop (which ends at once on
/// a signal that came meanwhile)...
const STARTUP_GRACE: Duration = Duration::from_secs(10);
/// ...and how long the command has after its loop (detach the probes,
/// close a recording, undo a demo's changes).
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// The watchdog's clock, from the first signal on.
struct Watchdog {
    signal_at: Instant,
    running_at: Option<Instant>,
    ended_at: Option<Instant>,
}

impl Watchdog {
    fn new(signal_at: Instant) -> Self {
        Self {
            signal_at,
            running_at: None,
            ended_at: None,
        }
    }

    /// Given where the screen is now, why to give up on a clean end, if
    /// it is time to.
    fn overdue(&mut self, state: u8, now: Instant) -> Option<&'static str> {
        if state >= RUNNING {
            self.running_at.get_or_insert(now);
        }
        if state >= ENDED {
            self.ended_at.get_or_insert(now);
        }
        let since = |t: Instant| now.saturating_duration_since(t);
        match (self.running_at, self.ended_at) {
            (_, Some(ended)) => (since(ended) >= EXIT_GRACE)
                .then_some("the command did not finish within 5 s of its screen"),
            (Some(running), None) => (since(running.max(self.signal_at)) >= LOOP_GRACE)
                .then_some("the screen did not stop within 1 s"),
            (None, None) => (since(self.signal_at) >= STARTUP_GRACE)
                .then_some("start-up did not stop within 10 s"),
        }
    }
}

/// SIGINT (kill -INT; Ctrl-C arrives as a key in raw mode), SIGTERM and
/// SIGHUP (the terminal went away) end the loop, so the terminal is
/// restored and what the command changed is undone. Call it before
/// changing anything: a signal that arrives before the loop runs waits in
/// the channel.
///
/// The signals are received on a thread of their own, not on the async
/// runtime: with both of its workers blocked (a write to a terminal that
/// is not read) a signal task would never run, and ctscope, having
/// replaced the default action, would ignore SIGTERM. The same thread is
/// the watchdog: if the loop has not ended within a second of a signal (or
/// of its start, for a signal during start-up), or the command within a
/// few seconds more, or a second signal comes, it restores
/// what it can of the terminal and exits (the probes detach as the
/// process's file descriptors close).
pub fn spawn_signals(tx: &mpsc::Sender<AppEvent>) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("handling SIGINT, SIGTERM and SIGHUP")?;
    let tx = tx.clone();
    thread::Builder::new()
        .name("ctscope-signals".into())
        .spawn(move || {
            let mut first: Option<(i32, Watchdog)> = None;
            loop {
                let Some((signo, watchdog)) = &mut first else {
                    // Nothing pending: wait for the first signal.
                    if let Some(signo) = signals.forever().next() {
                        SIGNALLED.store(signo, Ordering::SeqCst);
                        let _ = tx.try_send(AppEvent::Signal(signal_name(signo)));
                        first = Some((signo, Watchdog::new(Instant::now())));
                    }
                    continue;
                };
                if signals.pending().next().is_some() {
                    force_exit(*signo, "a second signal");
                }
                if let Some(why) =
                    watchdog.overdue(LOOP_STATE.load(Ordering::SeqCst), Instant::now())
                {
                    force_exit(*signo, why);
                }
                thread::sleep(Duration::from_millis(20));
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}

fn signal_name(signo: i32) -> &'static str {
    match signo {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// The signal the loop must stop for, if one came.
pub(super) fn signalled() -> Option<&'static str> {
    match SIGNALLED.load(Ordering::SeqCst) {
        0 => None,
        signo => Some(signal_name(signo)),
    }
}

/// The watchdog's last resort: raw mode off (tcsetattr does not wait on
/// the terminal), the alternate screen left and a word said by a thread
/// that may block on a terminal nobody reads (given 200 ms), then exit at
/// once, as the signal's default action would have. The kernel detaches
/// the probes as the process's descriptors close.
fn force_exit(signo: i32, why: &str) -> ! {
    let _ = terminal::disable_raw_mode();
    let message = format!(
        "ctscope: {}: {why}; exiting without the usual cleanup\n",
        signal_name(signo)
    );
    let writer = thread::spawn(move || {
        let _ = execute!(io::stdout(), LeaveAlternateScreen, cursor::Show);
        let _ = io::stderr().write_all(message.as_bytes());
    });
    let deadline = Instant::now() + Duration::from_millis(200);
    while !writer.is_finished() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: _exit has no preconditions; it skips atexit handlers and
    // buffered output, either of which could block here.
    unsafe { libc::_exit(128 + signo) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_gives_the_loop_a_second_and_the_cleanup_five() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        // On screen when the signal comes.
        let mut w = Watchdog::new(t0);
        assert_eq!(w.overdue(RUNNING, at(0)), None);
        assert_eq!(w.overdue(RUNNING, at(999)), None);
        assert!(w.overdue(RUNNING, at(1000)).is_some());
        // The loop ended in time: the cleanup has 5 s from then.
        let mut w = Watchdog::new(t0);
        assert_eq!(w.overdue(RUNNING, at(0)), None);
        assert_eq!(w.overdue(ENDED, at(400)), None);
        assert_eq!(w.overdue(ENDED, at(5399)), None);
        assert!(w.overdue(ENDED, at(5400)).is_some());
        // During start-up: the loop, once it runs, has its second.
        let mut w = Watchdog::new(t0);
        assert_eq!(w.overdue(STARTING, at(3000)), None);
        assert_eq!(w.overdue(RUNNING, at(3100)), None);
        assert_eq!(w.overdue(RUNNING, at(4099)), None);
        assert!(w.overdue(RUNNING, at(4100)).is_some());
        // A start-up that never gets there.
        let mut w = Watchdog::new(t0);
        assert_eq!(w.overdue(STARTING, at(9999)), None);
        assert!(w.overdue(STARTING, at(10_000)).is_some());
    }
}
