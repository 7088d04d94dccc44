//! The terminal side of `ctscope top`, `demo` and `replay`.
//!
//! One loop owns the model and the UI state. Everything else only sends
//! [`AppEvent`]s on one channel: the source (forwarded), a thread that
//! reads the terminal, a ticker and the signal handlers. The loop applies
//! each event, recomputes what the screen derives, and draws. What only
//! the source can do (record, seek) goes through the command's [`Driver`].

mod input;
mod signals;

use std::{
    io::{self, Stdout},
    mem::ManuallyDrop,
    path::Path,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use crossterm::{
    cursor,
    event::Event as TermEvent,
    execute,
    terminal::{self, EnterAlternateScreen, LeaveAlternateScreen},
};
use ratatui::{Terminal, backend::Backend, prelude::CrosstermBackend};
use tokio::{
    sync::mpsc,
    time::{MissedTickBehavior, interval},
};

pub use self::signals::spawn_signals;
use self::{
    input::{InputReader, spawn_resizes},
    signals::{ENDED, LOOP_STATE, RUNNING, signalled},
};
use crate::{
    event::Message,
    model::Model,
    views::tui::{UiState, render, state::Action},
};

/// Screen refreshes between samples (uptime, status messages, drops).
const TICK: Duration = Duration::from_millis(250);
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

    /// A sample (the kernel's counters) was just applied: figures of a
    /// companion read now are of the same moment as the counters beside
    /// them on screen (the demo's sent and refused flows).
    fn sampled(&mut self, _ui: &mut UiState) {}
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
    let _on_screen = OnScreen::enter();
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
    event_loop(&mut *terminal, model, ui, rx, driver, started).await
}

/// Tells the watchdog the screen is up, and (on drop, on every way out,
/// after the terminal is given back) that it is done.
struct OnScreen;

impl OnScreen {
    fn enter() -> Self {
        LOOP_STATE.store(RUNNING, Ordering::SeqCst);
        Self
    }
}

impl Drop for OnScreen {
    fn drop(&mut self) {
        LOOP_STATE.store(ENDED, Ordering::SeqCst);
    }
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
                let sampled = matches!(msg, Message::Sample(_));
                model.apply(msg);
                // Paused, the screen keeps the figures of the frozen model.
                if sampled && frozen.is_none() {
                    driver.sampled(&mut ui);
                }
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
