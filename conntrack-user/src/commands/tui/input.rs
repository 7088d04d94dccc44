//! Keys and resizes: the terminal read on a thread of its own, which ends
//! at the terminal's first error instead of retrying it.

use std::{
    io::{self, IsTerminal as _},
    os::fd::{AsRawFd as _, RawFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use crossterm::{
    event::{self as term, Event as TermEvent},
    terminal,
};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use super::AppEvent;
use crate::views::tui::keys;

/// How long the terminal reader waits before checking whether to stop.
const INPUT_POLL: Duration = Duration::from_millis(100);

/// SIGWINCH: a resize, drawn at once (ratatui reads the new size when it
/// draws).
pub(super) fn spawn_resizes(tx: mpsc::Sender<AppEvent>) -> anyhow::Result<()> {
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
pub(super) struct InputReader {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl InputReader {
    pub(super) fn spawn(tx: mpsc::Sender<AppEvent>) -> anyhow::Result<Self> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::tui::channel;

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
