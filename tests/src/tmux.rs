//! `ctscope top`, `demo` and `replay` driven as a user drives them: the
//! real binary in a terminal (a private tmux server), keys sent to it, the
//! screen read back.

use std::{
    fs,
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use crate::{ctscope_bin, still_loaded, wait_for};

static NEXT_TMUX: AtomicU32 = AtomicU32::new(0);

/// A tmux server of our own (its own socket, no config) running one shell
/// in a 120x40 window. Killed on drop.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    pub fn start(width: u16, height: u16) -> Self {
        let me = Self {
            socket: format!(
                "ctscope-test-{}-{}",
                std::process::id(),
                NEXT_TMUX.fetch_add(1, Ordering::Relaxed)
            ),
        };
        me.run(&[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            "env PS1='ctscope-test$ ' bash --norc --noprofile",
        ]);
        me
    }

    pub fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("run tmux (`cargo xtask provision` installs it)");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `text` literally.
    pub fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", "t", "-l", text]);
    }

    /// Sends named keys (Enter, Escape, ...).
    pub fn key(&self, key: &str) {
        self.run(&["send-keys", "-t", "t", key]);
    }

    pub fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "t"])
    }

    /// Kills the tmux server (every pane's terminal hangs up); a server
    /// already gone is not an error.
    pub fn kill_server(&self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stderr(std::process::Stdio::null())
            .status();
    }

    /// The tmux server's pid (to stop it: a terminal nobody reads).
    pub fn server_pid(&self) -> u32 {
        self.run(&["display", "-p", "-t", "t", "#{pid}"])
            .trim()
            .parse()
            .expect("tmux server pid")
    }

    /// The pane's terminal device (/dev/pts/N).
    pub fn pane_tty(&self) -> String {
        self.run(&["display", "-p", "-t", "t", "#{pane_tty}"])
            .trim()
            .to_owned()
    }

    pub fn alternate_on(&self) -> bool {
        self.run(&["display", "-p", "-t", "t", "#{alternate_on}"])
            .trim()
            == "1"
    }

    /// Polls the screen until `ok` accepts it; panics with the last screen.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut ok: impl FnMut(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the screen:\n{screen}"
            );
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stderr(std::process::Stdio::null())
            .status();
        // kill-server leaves the socket file behind.
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        let _ = fs::remove_file(format!("/tmp/tmux-{uid}/{}", self.socket));
    }
}

/// Starts `ctscope ARGS --ready-file READY` from the shell in the pane
/// and waits for its ready file; returns the pid.
pub fn start_in_pane(tmux: &Tmux, args: &str, ready: &ReadyFile) -> u32 {
    start_in_pane_under(tmux, "", args, ready)
}

/// [`start_in_pane`] with a command in front (`setsid -w`, ...).
pub fn start_in_pane_under(tmux: &Tmux, prefix: &str, args: &str, ready: &ReadyFile) -> u32 {
    let ready = &ready.0;
    let _ = fs::remove_file(ready);
    tmux.type_text(&format!(
        "{prefix} {} {args} --ready-file {}; echo ctscope-exit=$?",
        ctscope_bin().display(),
        ready.display()
    ));
    tmux.key("Enter");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = fs::read_to_string(ready)
            && let Ok(pid) = text.trim().parse()
        {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "ctscope {args} did not attach within 30 s:\n{}",
            tmux.screen()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// The `--ready-file` path, removed on drop (also when the test fails).
pub struct ReadyFile(pub PathBuf);

impl ReadyFile {
    pub fn new() -> Self {
        Self(std::env::temp_dir().join(format!(
            "ctscope-top-ready-{}-{}",
            std::process::id(),
            NEXT_TMUX.fetch_add(1, Ordering::Relaxed)
        )))
    }
}

impl Drop for ReadyFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// The namespaces panel's row for `inum`: NETNS ENTRIES FILL ALLOC DROPS.
pub fn screen_netns_row(screen: &str, inum: u32) -> Option<Vec<String>> {
    let id = inum.to_string();
    screen.lines().find_map(|line| {
        line.split(['│', '┃'])
            .map(str::trim)
            .find(|cell| cell.split_whitespace().next() == Some(id.as_str()))
            .map(|cell| cell.split_whitespace().map(str::to_owned).collect())
    })
}

/// The status `echo ctscope-exit=$?` printed after the command, once it
/// has (the command line itself also holds `ctscope-exit=`).
pub fn exit_status(screen: &str) -> Option<i32> {
    screen
        .lines()
        .find_map(|l| l.strip_prefix("ctscope-exit=")?.trim().parse().ok())
}

/// After exit: the shell is back, out of the alternate screen, with the
/// terminal in canonical mode with echo (raw mode would show as -icanon
/// -echo here).
pub fn assert_terminal_restored(tmux: &Tmux, pid: u32, ids: &[u32]) {
    let screen = tmux.wait_for("ctscope to exit", Duration::from_secs(10), |s| {
        exit_status(s).is_some()
    });
    assert_eq!(exit_status(&screen), Some(0), "{screen}");
    assert!(!tmux.alternate_on(), "still in the alternate screen");
    tmux.type_text(
        "stty -a | tr ' ;' '\\n\\n' | grep -xE -- '-?(icanon|echo)' | tr '\\n' ' '; echo",
    );
    tmux.key("Enter");
    let screen = tmux.wait_for("stty", Duration::from_secs(5), |s| {
        s.lines()
            .any(|l| l.trim() == "icanon echo" || l.contains("-icanon") || l.contains("-echo "))
    });
    assert!(
        screen.lines().any(|l| l.trim() == "icanon echo"),
        "terminal left in raw mode:\n{screen}"
    );
    assert!(
        wait_for(Duration::from_secs(5), || !PathBuf::from(format!(
            "/proc/{pid}"
        ))
        .exists()),
        "ctscope {pid} still running"
    );
    assert!(
        wait_for(Duration::from_secs(5), || still_loaded(ids).is_empty()),
        "programs {:?} still loaded after exit",
        still_loaded(ids)
    );
}

/// CPU time (user + system) a process has used, in clock ticks; `None`
/// once it is gone.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is the
    // 3rd field, utime the 14th and stime the 15th.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The share of one CPU `pid` uses over `span` (0.0 when it exits first).
pub fn cpu_share(pid: u32, span: Duration) -> f64 {
    let Some(before) = cpu_ticks(pid) else {
        return 0.0;
    };
    let start = Instant::now();
    thread::sleep(span);
    let Some(after) = cpu_ticks(pid) else {
        return 0.0;
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (after.saturating_sub(before)) as f64 / hz / start.elapsed().as_secs_f64()
}

/// A thread of `pid` that spins: running or runnable (state R) in at least
/// 70 % of 50 looks over `span`. Unlike CPU time, this does not depend on
/// how busy the machine is (a spinning thread on a crowded machine gets
/// only part of a CPU, but it is always runnable), and a thread doing its
/// work in bursts (a walk, a frame) is seldom caught running. Its name and
/// share of looks, or `None`.
pub fn spinning_thread(pid: u32, span: Duration) -> Option<(String, f64)> {
    const LOOKS: u32 = 50;
    let mut running: std::collections::HashMap<String, u32> = Default::default();
    for _ in 0..LOOKS {
        let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
        for task in tasks.flatten() {
            let Ok(stat) = fs::read_to_string(task.path().join("stat")) else {
                continue;
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            if stat[close + 1..].split_whitespace().next() == Some("R") {
                let name = format!(
                    "{} {}",
                    task.file_name().to_string_lossy(),
                    &stat[open + 1..close]
                );
                *running.entry(name).or_default() += 1;
            }
        }
        thread::sleep(span / LOOKS);
    }
    running
        .into_iter()
        .map(|(name, n)| (name, f64::from(n) / f64::from(LOOKS)))
        .filter(|(_, share)| *share >= 0.7)
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

impl Default for ReadyFile {
    fn default() -> Self {
        Self::new()
    }
}

/// The footer: the screen's last line that is not blank.
pub fn footer(screen: &str) -> &str {
    screen
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
}
