//! The terminal side of `ctscope top`, `demo` and `replay`.
//!
//! One loop owns the model and the UI state. Everything else only sends
//! [`AppEvent`]s on one channel: the source (forwarded), a thread that
//! reads the terminal, a ticker and the signal handlers. The loop applies
//! each event, recomputes what the screen derives, and draws. What only
//! the source can do (record, seek) goes through the command's [`Driver`].

use std::{
    io::{self, Stdout},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
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
    views::tui::{UiState, render, state::Action},
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
    let _guard = TerminalGuard::enter().context("setting up the terminal")?;
    let mut terminal =
        Terminal::new(CrosstermBackend::new(io::stdout())).context("setting up the terminal")?;
    spawn_ticker(tx.clone());
    // Dropped before the guard: keys stop being read before the terminal
    // leaves raw mode, so nothing typed after exit is swallowed.
    let _input = InputReader::spawn(tx);
    super::write_ready_file(ready_file)?;
    event_loop(&mut terminal, model, ui, rx, driver, started).await
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

/// SIGINT (kill -INT; Ctrl-C arrives as a key in raw mode), SIGTERM and
/// SIGHUP (the terminal went away) end the loop, so the terminal is
/// restored and what the command changed is undone. Call it before
/// changing anything: a signal that arrives before the loop runs waits in
/// the channel.
pub fn spawn_signals(tx: &mpsc::Sender<AppEvent>) -> anyhow::Result<()> {
    for (kind, name) in [
        (SignalKind::interrupt(), "SIGINT"),
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::hangup(), "SIGHUP"),
    ] {
        let mut sig = signal(kind).with_context(|| format!("handling {name}"))?;
        let tx = tx.clone();
        tokio::spawn(async move {
            if sig.recv().await.is_some() {
                let _ = tx.send(AppEvent::Signal(name)).await;
            }
        });
    }
    Ok(())
}

/// What the terminal has for us.
enum Input {
    Ready,
    Idle,
    HungUp,
}

/// Waits up to `timeout` for the terminal (standard input) to have
/// something to read, or to hang up.
fn wait_for_input(timeout: Duration) -> Input {
    let mut fd = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut fd, 1, ms) };
    if n < 0 {
        // EINTR and friends: try again on the next round.
        return Input::Idle;
    }
    if fd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
        Input::HungUp
    } else if fd.revents & libc::POLLIN != 0 {
        Input::Ready
    } else {
        Input::Idle
    }
}

/// Reads terminal events on a thread of its own (crossterm's reader
/// blocks) and sends them on; stops when dropped.
struct InputReader {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl InputReader {
    fn spawn(tx: mpsc::Sender<AppEvent>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                // crossterm's poll spins forever on a terminal that hung up
                // (every read returns end-of-file), so wait on the terminal
                // here and leave when it is gone.
                match wait_for_input(INPUT_POLL) {
                    Input::Ready => {}
                    Input::Idle => continue,
                    Input::HungUp => {
                        let _ = tx.blocking_send(AppEvent::Signal("terminal hung up"));
                        break;
                    }
                }
                let ev = match term::poll(Duration::ZERO) {
                    Ok(false) => continue,
                    Ok(true) => term::read().map(AppEvent::Input),
                    Err(e) => Err(e),
                };
                let ev = ev.unwrap_or_else(|e| AppEvent::InputError(e.to_string()));
                let fatal = matches!(ev, AppEvent::InputError(_));
                if tx.blocking_send(ev).is_err() || fatal {
                    break;
                }
            }
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for InputReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
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
