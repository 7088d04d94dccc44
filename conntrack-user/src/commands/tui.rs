//! The terminal side of `ctscope top`, `demo` and `replay`.
//!
//! One loop owns the model and the UI state. Everything else only sends
//! [`AppEvent`]s on one channel: the source (forwarded), a thread that
//! reads the terminal, a ticker and the signal handlers. The loop applies
//! each event, recomputes what the screen derives, and draws. What only
//! the source can do (record, seek) goes through the command's [`Driver`].

use std::{
    io::{self, IsTerminal as _, Stdout, Write as _},
    mem::ManuallyDrop,
    os::fd::{AsRawFd as _, RawFd},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI32, AtomicU8, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use crossterm::{
    cursor,
    event::{self as term, Event as TermEvent},
    execute,
    terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
};
use ratatui::{Terminal, backend::Backend, prelude::CrosstermBackend};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
    time::{MissedTickBehavior, interval},
};

use crate::{
    event::Message,
    model::Model,
    views::tui::{UiState, keys, render, state::Action},
};

/// Screen refreshes between samples (uptime, status messages, drops).
const TICK: Duration = Duration::from_millis(250);
/// How long the terminal reader waits before checking whether to stop.
const INPUT_POLL: Duration = Duration::from_millis(100);
/// Events queued for the loop.
const CHANNEL: usize = 256;

/// What the loop reacts to.
#[derive(Debug)]
pub enum AppEvent {
    Kernel(Message),
    Input(TermEvent),
    Tick,
    /// SIGINT, SIGTERM or SIGHUP.
    Signal(&'static str),
    /// The terminal could not be read.
    InputError(String),
}

/// The command's side of the loop: the source's controls.
pub trait Driver {
    /// On every tick: bring what the screen shows of the source up to
    /// date. A reason to end the view, when there is one.
    fn tick(&mut self, ui: &mut UiState) -> Option<String>;

    /// A key asked the source for something ([`Action::Record`],
    /// [`Action::Replay`]).
    fn act(&mut self, action: Action, ui: &mut UiState);
}

pub fn channel() -> (mpsc::Sender<AppEvent>, mpsc::Receiver<AppEvent>) {
    mpsc::channel(CHANNEL)
}

/// Sends a source's messages on to the loop.
pub fn forward(mut source: mpsc::Receiver<Message>, tx: mpsc::Sender<AppEvent>) {
    tokio::spawn(async move {
        while let Some(msg) = source.recv().await {
            if tx.send(AppEvent::Kernel(msg)).await.is_err() {
                break;
            }
        }
    });
}

/// Takes over the terminal, runs the loop, and gives the terminal back
/// (also on error; on panic the hook does it).
pub async fn on_screen(
    model: Model,
    ui: UiState,
    driver: &mut impl Driver,
    (tx, rx): (mpsc::Sender<AppEvent>, mpsc::Receiver<AppEvent>),
    ready_file: Option<&Path>,
    started: Instant,
) -> anyhow::Result<Ended> {
    LOOP_STATE.store(RUNNING, Ordering::SeqCst);
    let _guard = TerminalGuard::enter().context("setting up the terminal")?;
    // Never dropped: ratatui's Terminal shows the cursor again on drop and
    // `eprintln!`s when that fails, which panics when stderr is the
    // terminal that just went away, and the panic would skip closing a
    // recording. The guard shows the cursor instead (ignoring errors).
    let mut terminal = ManuallyDrop::new(
        Terminal::new(CrosstermBackend::new(io::stdout())).context("setting up the terminal")?,
    );
    spawn_ticker(tx.clone());
    // Dropped before the guard: keys stop being read before the terminal
    // leaves raw mode, so nothing typed after exit is swallowed.
    spawn_resizes(tx.clone())?;
    let _input = InputReader::spawn(tx)?;
    super::write_ready_file(ready_file)?;
    let ended = event_loop(&mut *terminal, model, ui, rx, driver, started).await;
    LOOP_STATE.store(ENDED, Ordering::SeqCst);
    ended
}

/// Runs until the user quits or a stop arrives; `started` is when
/// ctscope started (the header's uptime).
pub async fn event_loop<B: Backend>(
    terminal: &mut Terminal<B>,
    mut model: Model,
    mut ui: UiState,
    mut rx: mpsc::Receiver<AppEvent>,
    driver: &mut impl Driver,
    started: Instant,
) -> anyhow::Result<Ended> {
    // The model shown while paused; capture goes on into `model`.
    let mut frozen: Option<Model> = None;
    driver.tick(&mut ui);
    draw(terminal, &model, &mut ui)?;
    while let Some(ev) = rx.recv().await {
        if let Some(name) = signalled() {
            return Ok(Ended::Signal(name));
        }
        let redraw = match ev {
            AppEvent::Kernel(msg) => {
                // Events are drawn on the next tick: a flood of drops must
                // not become a flood of frames.
                let news = matches!(
                    msg,
                    Message::Sample(_) | Message::Buckets(_) | Message::Reset
                );
                model.apply(msg);
                news
            }
            AppEvent::Tick => {
                ui.env.uptime = started.elapsed();
                ui.tick();
                if let Some(reason) = driver.tick(&mut ui) {
                    return Ok(Ended::Done(reason));
                }
                true
            }
            AppEvent::Input(TermEvent::Key(key)) => match ui.on_key(key) {
                Action::Quit => return Ok(Ended::Quit),
                Action::Pause(true) => {
                    frozen = Some(model.clone());
                    true
                }
                Action::Pause(false) => {
                    frozen = None;
                    true
                }
                Action::None => true,
                action @ (Action::Record | Action::Replay(_)) => {
                    driver.act(action, &mut ui);
                    true
                }
            },
            AppEvent::Input(TermEvent::Resize(..)) => true,
            AppEvent::Input(_) => false,
            AppEvent::Signal(name) => return Ok(Ended::Signal(name)),
            AppEvent::InputError(e) => anyhow::bail!("reading the terminal: {e}"),
        };
        if redraw {
            draw(terminal, frozen.as_ref().unwrap_or(&model), &mut ui)?;
        }
    }
    Ok(Ended::Quit)
}

/// Why the view ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The user quit.
    Quit,
    Signal(&'static str),
    /// The command was done (e.g. a demo's --duration passed).
    Done(String),
}

impl Ended {
    /// What to print after the terminal is back, if anything.
    pub fn message(&self) -> Option<String> {
        match self {
            Ended::Quit => None,
            Ended::Signal(name) => Some(format!("{name}: stopped")),
            Ended::Done(why) => Some(why.clone()),
        }
    }
}

/// The update step's end and the draw: derive, then render.
fn draw<B: Backend>(
    terminal: &mut Terminal<B>,
    model: &Model,
    ui: &mut UiState,
) -> anyhow::Result<()> {
    ui.refresh(model);
    terminal
        .draw(|frame| render(model, ui, frame))
        .context("drawing the screen")?;
    Ok(())
}

fn spawn_ticker(tx: mpsc::Sender<AppEvent>) {
    tokio::spawn(async move {
        let mut tick = interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            if tx.send(AppEvent::Tick).await.is_err() {
                break;
            }
        }
    });
}

/// The signal that asked the screen to stop (0: none yet). Set by the
/// signal thread; the loop checks it on every event, so a channel full of
/// kernel messages cannot keep a stop waiting behind them.
static SIGNALLED: AtomicI32 = AtomicI32::new(0);
/// Where the screen is, for the watchdog: not on screen yet (attaching,
/// changing what a demo changes), on screen, or past its loop (cleaning
/// up).
static LOOP_STATE: AtomicU8 = AtomicU8::new(STARTING);
const STARTING: u8 = 0;
const RUNNING: u8 = 1;
const ENDED: u8 = 2;

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
fn signalled() -> Option<&'static str> {
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

/// SIGWINCH: a resize, drawn at once (ratatui reads the new size when it
/// draws).
fn spawn_resizes(tx: mpsc::Sender<AppEvent>) -> anyhow::Result<()> {
    let mut winch = signal(SignalKind::window_change()).context("handling SIGWINCH")?;
    tokio::spawn(async move {
        while winch.recv().await.is_some() {
            let (w, h) = terminal::size().unwrap_or((0, 0));
            if tx
                .send(AppEvent::Input(TermEvent::Resize(w, h)))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    Ok(())
}

/// What the terminal has for us.
#[derive(Debug, PartialEq, Eq)]
enum Input {
    Ready,
    Idle,
    HungUp,
}

/// Waits up to `timeout` for the terminal to have something to read, or to
/// hang up. An error other than EINTR is the end of reading.
fn wait_for_input(fd: RawFd, timeout: Duration) -> io::Result<Input> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(Input::Idle)
        } else {
            Err(e)
        };
    }
    // Readable first: what was typed before a hang-up is read, and the read
    // after it returns end-of-file (or fails), which ends the reading too.
    Ok(if pfd.revents & libc::POLLIN != 0 {
        Input::Ready
    } else if pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
        Input::HungUp
    } else {
        Input::Idle
    })
}

/// The terminal keys come from: standard input when it is one (as for
/// crossterm's raw mode), else /dev/tty.
enum Tty {
    Stdin,
    Opened(std::fs::File),
}

impl Tty {
    fn open() -> io::Result<Self> {
        if io::stdin().is_terminal() {
            Ok(Tty::Stdin)
        } else {
            std::fs::File::open("/dev/tty").map(Tty::Opened)
        }
    }

    fn fd(&self) -> RawFd {
        match self {
            Tty::Stdin => libc::STDIN_FILENO,
            Tty::Opened(f) => f.as_raw_fd(),
        }
    }
}

/// How one read of the terminal went.
enum Read {
    Keys(Vec<term::KeyEvent>),
    /// Interrupted, or nothing there after all.
    Nothing,
    /// End of file: the terminal is gone.
    Gone,
}

fn read_keys(fd: RawFd, buf: &mut [u8]) -> io::Result<Read> {
    // SAFETY: `buf` is valid for writes of its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    match usize::try_from(n) {
        Ok(0) => Ok(Read::Gone),
        Ok(n) => Ok(Read::Keys(keys::decode(&buf[..n.min(buf.len())]))),
        Err(_) => {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => Ok(Read::Nothing),
                _ => Err(e),
            }
        }
    }
}

/// Rounds in a row in which the terminal said it was readable and gave
/// nothing, before it counts as broken (a loop that would otherwise spin).
const MAX_EMPTY_READS: u32 = 100;

/// Reads the terminal on a thread of its own and sends keys on; stops when
/// dropped, or at the terminal's first error or hang-up, which it reports:
/// it never retries a read that failed, so it cannot spin on a terminal
/// that is gone (EIO, EBADF, ENXIO or end-of-file from a closed pty).
struct InputReader {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl InputReader {
    fn spawn(tx: mpsc::Sender<AppEvent>) -> anyhow::Result<Self> {
        let tty = Tty::open().context("opening the terminal for keys")?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::Builder::new()
            .name("ctscope-keys".into())
            .spawn(move || read_terminal(tty.fd(), &flag, &tx))
            .context("starting the terminal reader")?;
        Ok(Self {
            stop,
            handle: Some(handle),
        })
    }
}

fn read_terminal(fd: RawFd, stop: &AtomicBool, tx: &mpsc::Sender<AppEvent>) {
    let mut buf = [0u8; 1024];
    let mut empty = 0;
    while !stop.load(Ordering::Relaxed) {
        let read = match wait_for_input(fd, INPUT_POLL) {
            Ok(Input::Idle) => continue,
            Ok(Input::Ready) => read_keys(fd, &mut buf),
            Ok(Input::HungUp) => Ok(Read::Gone),
            Err(e) => Err(e),
        };
        let end = match read {
            Ok(Read::Keys(keys)) => {
                empty = 0;
                for key in keys {
                    if tx
                        .blocking_send(AppEvent::Input(TermEvent::Key(key)))
                        .is_err()
                    {
                        return;
                    }
                }
                continue;
            }
            Ok(Read::Nothing) => {
                empty += 1;
                if empty < MAX_EMPTY_READS {
                    continue;
                }
                AppEvent::InputError("the terminal is readable but gives nothing".into())
            }
            Ok(Read::Gone) => AppEvent::Signal("terminal hung up"),
            Err(e) => AppEvent::InputError(e.to_string()),
        };
        let _ = tx.blocking_send(end);
        return;
    }
}

impl Drop for InputReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // The reader wakes within INPUT_POLL; one stuck elsewhere is left
        // behind rather than holding up the exit.
        let deadline = Instant::now() + INPUT_POLL * 3;
        if let Some(handle) = self.handle.take() {
            while !handle.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
    }
}

/// Raw mode and the alternate screen, undone on drop and by a panic hook
/// (a panic message printed inside the alternate screen would be lost, and
/// a raw-mode shell is unusable).
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> io::Result<Self> {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
        terminal::enable_raw_mode()?;
        let guard = Self;
        execute!(io::stdout(), EnterAlternateScreen, cursor::Hide)?;
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

fn restore_terminal() {
    let _ = terminal::disable_raw_mode();
    let mut out: Stdout = io::stdout();
    let _ = execute!(out, LeaveAlternateScreen, cursor::Show);
}

/// NO_COLOR (no-color.org): present and not empty means no colour at all.
pub fn color_allowed() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the reader sends for a descriptor, until it stops by itself.
    fn read_all(fd: RawFd) -> Vec<AppEvent> {
        let (tx, mut rx) = channel();
        let stop = AtomicBool::new(false);
        read_terminal(fd, &stop, &tx);
        drop(tx);
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    fn pipe() -> (RawFd, RawFd) {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        (fds[0], fds[1])
    }

    #[test]
    fn the_reader_sends_keys_then_stops_at_end_of_file() {
        let (r, w) = pipe();
        // SAFETY: `w` is ours; writing 4 bytes from a valid buffer.
        unsafe {
            assert_eq!(libc::write(w, b"q\x1b[A".as_ptr().cast(), 4), 4);
            libc::close(w);
        }
        let events = read_all(r);
        // SAFETY: `r` is ours.
        unsafe { libc::close(r) };
        assert!(
            matches!(
                events.as_slice(),
                [
                    AppEvent::Input(TermEvent::Key(q)),
                    AppEvent::Input(TermEvent::Key(up)),
                    AppEvent::Signal("terminal hung up"),
                ] if q.code == term::KeyCode::Char('q') && up.code == term::KeyCode::Up
            ),
            "{events:?}"
        );
    }

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

    #[test]
    fn the_reader_stops_at_a_descriptor_that_is_gone() {
        // Never a valid descriptor (far above any open-file limit), as a
        // terminal's descriptor closed under the reader would be: EBADF
        // or POLLNVAL, never a retry.
        let events = read_all(i32::MAX - 1);
        assert!(
            matches!(
                events.as_slice(),
                [AppEvent::Signal(_)] | [AppEvent::InputError(_)]
            ),
            "{events:?}"
        );
    }
}
