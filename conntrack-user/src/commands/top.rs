//! `ctscope top`: the live terminal view.
//!
//! One loop owns the model and the UI state. Everything else only sends
//! [`AppEvent`]s on one channel: the live source (forwarded), a thread that
//! reads the terminal, a ticker and the signal handlers. The loop applies
//! each event, recomputes what the screen derives, and draws.

use std::{
    io::{self, IsTerminal as _, Stdout},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use conntrack_common::setting;
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
    cli::{ProbeArgs, StatsArgs, TopArgs},
    event::Message,
    model::{Model, RunInfo},
    source::live::{LiveOptions, LiveSource},
    views::tui::{
        UiState, render,
        state::{Action, Env},
    },
};

/// Screen refreshes between samples (uptime, status messages, drops).
const TICK: Duration = Duration::from_millis(250);
/// How long the terminal reader waits before checking whether to stop.
const INPUT_POLL: Duration = Duration::from_millis(100);

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

pub async fn run(args: &TopArgs, probe: &ProbeArgs) -> anyhow::Result<()> {
    if !io::stdout().is_terminal() {
        eprintln!(
            "ctscope: stdout is not a terminal, so printing `ctscope stats` lines instead of \
             the live view (use `ctscope stats --json` in scripts)"
        );
        let stats = StatsArgs {
            json: false,
            interval: args.interval,
            count: None,
            duration: None,
            ready_file: args.ready_file.clone(),
            buckets: false,
        };
        return super::stats::run(&stats, probe).await;
    }
    let started = Instant::now();
    let (kernel_tx, mut kernel_rx) = mpsc::channel(64);
    // Attach before touching the terminal, so errors print normally.
    let live = LiveSource::start(
        LiveOptions {
            // Like `drops`: only drop events stream, and they are bursty.
            probe: probe.options(4),
            sample_every: args.interval,
            kernel_stats: probe.kernel_stats.into(),
            events: setting::EVENTS_DROP,
            // The buckets panel: histogram, heat strip, longest chain.
            buckets: Some(0),
        },
        kernel_tx,
    )
    .await?;
    let model = Model::new(RunInfo {
        backend: live.info.backend.to_owned(),
        kernel: live.info.kernel.clone(),
    });
    let env = Env {
        interval: args.interval,
        objsize: read_objsize(),
        conntrack_module: conntrack_is_module(),
        color: color_allowed(),
        bucket_walker: true,
        ..Env::default()
    };

    let (tx, rx) = mpsc::channel(256);
    let forward = tx.clone();
    tokio::spawn(async move {
        while let Some(msg) = kernel_rx.recv().await {
            if forward.send(AppEvent::Kernel(msg)).await.is_err() {
                break;
            }
        }
    });
    spawn_ticker(tx.clone());
    spawn_signals(tx.clone())?;

    let outcome = on_screen(model, UiState::new(env), tx, rx, args, started).await;
    // Whatever happened on screen, the probes detach before ctscope exits.
    let stopped = live.stop().await;
    let reason = outcome?;
    stopped?;
    if let Some(reason) = reason {
        eprintln!("ctscope: {reason}");
    }
    Ok(())
}

/// Takes over the terminal, runs the loop, and gives the terminal back
/// (also on error; on panic the hook does it).
async fn on_screen(
    model: Model,
    ui: UiState,
    tx: mpsc::Sender<AppEvent>,
    rx: mpsc::Receiver<AppEvent>,
    args: &TopArgs,
    started: Instant,
) -> anyhow::Result<Option<String>> {
    let _guard = TerminalGuard::enter().context("setting up the terminal")?;
    let mut terminal =
        Terminal::new(CrosstermBackend::new(io::stdout())).context("setting up the terminal")?;
    // Dropped before the guard: keys stop being read before the terminal
    // leaves raw mode, so nothing typed after exit is swallowed.
    let _input = InputReader::spawn(tx);
    super::write_ready_file(args.ready_file.as_deref())?;
    event_loop(&mut terminal, model, ui, rx, started).await
}

/// Runs until the user quits or a signal arrives; returns why, when it
/// is worth saying.
pub async fn event_loop<B: Backend>(
    terminal: &mut Terminal<B>,
    mut model: Model,
    mut ui: UiState,
    mut rx: mpsc::Receiver<AppEvent>,
    started: Instant,
) -> anyhow::Result<Option<String>> {
    // The model shown while paused; capture goes on into `model`.
    let mut frozen: Option<Model> = None;
    draw(terminal, &model, &mut ui)?;
    while let Some(ev) = rx.recv().await {
        let redraw = match ev {
            AppEvent::Kernel(msg) => {
                // Events are drawn on the next tick: a flood of drops must
                // not become a flood of frames.
                let news = matches!(msg, Message::Sample(_) | Message::Buckets(_));
                model.apply(msg);
                news
            }
            AppEvent::Tick => {
                ui.env.uptime = started.elapsed();
                ui.tick();
                true
            }
            AppEvent::Input(TermEvent::Key(key)) => match ui.on_key(key) {
                Action::Quit => return Ok(None),
                Action::Pause(true) => {
                    frozen = Some(model.clone());
                    true
                }
                Action::Pause(false) => {
                    frozen = None;
                    true
                }
                Action::None => true,
            },
            AppEvent::Input(TermEvent::Resize(..)) => true,
            AppEvent::Input(_) => false,
            AppEvent::Signal(name) => return Ok(Some(format!("{name}: stopped"))),
            AppEvent::InputError(e) => anyhow::bail!("reading the terminal: {e}"),
        };
        if redraw {
            draw(terminal, frozen.as_ref().unwrap_or(&model), &mut ui)?;
        }
    }
    Ok(None)
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
/// restored and the probes detach.
fn spawn_signals(tx: mpsc::Sender<AppEvent>) -> anyhow::Result<()> {
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

/// Bytes each conntrack entry takes in its slab: `slab_size` (the object
/// plus SLUB's metadata, 256 here for a 248-byte `struct nf_conn`), which
/// is what /proc/slabinfo calls objsize. Read once.
pub fn read_objsize() -> Option<u64> {
    if let Ok(text) = std::fs::read_to_string("/sys/kernel/slab/nf_conntrack/slab_size")
        && let Ok(bytes) = text.trim().parse()
    {
        return Some(bytes);
    }
    slabinfo_objsize(&std::fs::read_to_string("/proc/slabinfo").ok()?)
}

/// The `<objsize>` column of the `nf_conntrack` row of /proc/slabinfo.
fn slabinfo_objsize(text: &str) -> Option<u64> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"nf_conntrack"))
        .and_then(|f| f.get(3)?.parse().ok())
}

/// A loadable module has `initstate` under /sys/module; a built-in one has
/// only its parameters there.
pub fn conntrack_is_module() -> Option<bool> {
    let dir = std::path::Path::new("/sys/module/nf_conntrack");
    if !dir.exists() {
        return None;
    }
    Some(dir.join("initstate").exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slabinfo_row_gives_objsize() {
        let text = "slabinfo - version: 2.1\n\
            # name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab>\n\
            nf_conntrack_expect      0      0    256   16    1 : tunables    0    0    0\n\
            nf_conntrack         144    144    320   12    1 : tunables    0    0    0\n";
        assert_eq!(slabinfo_objsize(text), Some(320));
        assert_eq!(slabinfo_objsize("slabinfo - version: 2.1\n"), None);
    }

    #[test]
    fn this_machine_has_a_conntrack_slab() {
        // nf_conntrack is built in on the build machines (platform.md).
        if std::path::Path::new("/sys/kernel/slab/nf_conntrack").exists() {
            let bytes = read_objsize().expect("objsize");
            assert!((128..=1024).contains(&bytes), "{bytes}");
        }
    }
}
