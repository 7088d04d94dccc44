//! `ctscope top` driven as a user drives it: the real binary in a terminal
//! (a private tmux server), keys sent to it, the screen read back, while
//! real traffic fills a private namespace's conntrack table.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use ctscope_integration::*;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A tmux server of our own (its own socket, no config) running one shell
/// in a 120x40 window. Killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(width: u16, height: u16) -> Self {
        let me = Self {
            socket: format!(
                "ctscope-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
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

    fn run(&self, args: &[&str]) -> String {
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
    fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", "t", "-l", text]);
    }

    /// Sends named keys (Enter, Escape, ...).
    fn key(&self, key: &str) {
        self.run(&["send-keys", "-t", "t", key]);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "t"])
    }

    fn alternate_on(&self) -> bool {
        self.run(&["display", "-p", "-t", "t", "#{alternate_on}"])
            .trim()
            == "1"
    }

    /// Polls the screen until `ok` accepts it; panics with the last screen.
    fn wait_for(&self, what: &str, timeout: Duration, mut ok: impl FnMut(&str) -> bool) -> String {
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
            .status();
        // kill-server leaves the socket file behind.
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        let _ = fs::remove_file(format!("/tmp/tmux-{uid}/{}", self.socket));
    }
}

/// Starts `ctscope top` from the shell in the pane and waits for its
/// ready file; returns the pid.
fn start_top(tmux: &Tmux, ready: &ReadyFile) -> u32 {
    let ready = &ready.0;
    let _ = fs::remove_file(ready);
    tmux.type_text(&format!(
        "{} top --interval 0.5 --ready-file {}; echo ctscope-exit=$?",
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
            "ctscope top did not attach within 30 s:\n{}",
            tmux.screen()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// The `--ready-file` path, removed on drop (also when the test fails).
struct ReadyFile(PathBuf);

impl ReadyFile {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!(
            "ctscope-top-ready-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )))
    }
}

impl Drop for ReadyFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// The namespaces panel's row for `inum`: NETNS ENTRIES FILL ALLOC DROPS.
fn netns_row(screen: &str, inum: u32) -> Option<Vec<String>> {
    let id = inum.to_string();
    screen.lines().find_map(|line| {
        line.split(['│', '┃'])
            .map(str::trim)
            .find(|cell| cell.split_whitespace().next() == Some(id.as_str()))
            .map(|cell| cell.split_whitespace().map(str::to_owned).collect())
    })
}

/// After exit: the shell is back, out of the alternate screen, with the
/// terminal in canonical mode with echo (raw mode would show as -icanon
/// -echo here).
fn assert_terminal_restored(tmux: &Tmux, pid: u32, ids: &[u32]) {
    let screen = tmux.wait_for("ctscope to exit", Duration::from_secs(10), |s| {
        s.contains("ctscope-exit=")
    });
    assert!(screen.contains("ctscope-exit=0"), "{screen}");
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

#[test]
fn top_shows_entries_and_drops_then_quits_cleanly() {
    require_root();
    let mut sysctl = SysctlGuard::new().expect("sysctl lock");
    let ns = Netns::new().expect("namespace");
    // 260 new flows into a limit of 200 per namespace: the table fills and
    // the rest are dropped (or early-dropped, which the kernel counts too).
    sysctl
        .set("nf_conntrack_max", 200)
        .expect("lower nf_conntrack_max");
    let tmux = Tmux::start(120, 40);
    let ready = ReadyFile::new();
    let pid = start_top(&tmux, &ready);
    let ids = program_ids_of(pid);
    assert!(ids.len() >= 4, "programs held: {ids:?}");
    tmux.wait_for("the first frame", Duration::from_secs(10), |s| {
        s.contains("1 Table fill")
    });
    assert!(tmux.alternate_on(), "top runs in the alternate screen");

    let before = ns.kernel_stats().expect("kernel stats");
    udp_flows(&ns, 260, 40000, false).expect("udp");
    let kernel_drops = ns.kernel_stats().expect("kernel stats")["drop"] - before["drop"];
    assert!(kernel_drops > 0, "the table never filled");
    let entries = ns.count().expect("count");

    // Narrow the view to our namespace, as a user would.
    tmux.key("/");
    tmux.type_text(&format!("netns {}", ns.inum));
    tmux.key("Enter");
    let screen = tmux.wait_for(
        "the namespace's entries and drops",
        Duration::from_secs(15),
        |s| {
            netns_row(s, ns.inum).is_some_and(|row| {
                row.get(1) == Some(&entries.to_string())
                    && row.get(4) == Some(&kernel_drops.to_string())
            })
        },
    );
    let row = netns_row(&screen, ns.inum).expect("row");
    assert_eq!(row[2], "100%", "{screen}");
    // The gauge follows the namespace filter (other namespaces on a shared
    // machine may be fuller, even past a lowered limit).
    assert!(
        screen.contains(&format!("{entries} of 200 · {}", ns.name)),
        "fill gauge:\n{screen}"
    );
    // The dropped packets themselves, with their destination.
    assert!(
        screen
            .lines()
            .any(|l| l.contains(" full ") && l.contains("→ 127.0.0.1:4")),
        "no table-full drop listed:\n{screen}"
    );
    assert!(screen.contains("TOP DESTINATIONS"), "{screen}");
    assert!(
        screen.contains("CRITICAL"),
        "advice on a full table:\n{screen}"
    );

    tmux.key("?");
    tmux.wait_for("the help overlay", Duration::from_secs(5), |s| {
        s.contains("Help · any key closes")
    });
    tmux.key("Escape");
    tmux.wait_for("help to close", Duration::from_secs(5), |s| {
        !s.contains("Help · any key closes")
    });
    tmux.key("q");
    assert_terminal_restored(&tmux, pid, &ids);
}

#[test]
fn reflows_on_resize_and_sigterm_restores_the_terminal() {
    require_root();
    let _lock = shared_lock();
    let tmux = Tmux::start(100, 30);
    let ready = ReadyFile::new();
    let pid = start_top(&tmux, &ready);
    let ids = program_ids_of(pid);
    assert!(ids.len() >= 4, "programs held: {ids:?}");
    tmux.wait_for("the first frame", Duration::from_secs(10), |s| {
        s.contains("1 Table fill")
    });
    assert!(tmux.alternate_on());
    // The layout follows the terminal: down to 80x24 every panel and the
    // key hints still show; below that it says what it needs.
    tmux.run(&["resize-window", "-t", "t", "-x", "80", "-y", "24"]);
    let screen = tmux.wait_for("the 80x24 layout", Duration::from_secs(5), |s| {
        s.lines().count() <= 24 && s.contains("6 Advice") && s.contains("r record")
    });
    assert!(screen.lines().all(|l| l.chars().count() <= 80), "{screen}");
    tmux.run(&["resize-window", "-t", "t", "-x", "60", "-y", "20"]);
    tmux.wait_for("the too-small notice", Duration::from_secs(5), |s| {
        s.contains("needs 80x24")
    });
    tmux.run(&["resize-window", "-t", "t", "-x", "100", "-y", "30"]);
    tmux.wait_for("the full layout again", Duration::from_secs(5), |s| {
        s.contains("6 Advice")
    });
    // SAFETY: kill on the pid ctscope wrote into its ready file.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) }, 0);
    assert_terminal_restored(&tmux, pid, &ids);
    let screen = tmux.screen();
    assert!(screen.contains("SIGTERM: stopped"), "{screen}");
}

#[test]
fn without_a_terminal_ctscope_prints_stats_lines() {
    require_root();
    let _lock = shared_lock();
    let mut child = Command::new(ctscope_bin())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ctscope");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let header = lines.next().expect("a line").expect("utf-8");
    let row = lines.next().expect("a row").expect("utf-8");
    // SAFETY: kill on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let out = child.wait_with_output().expect("exit");
    assert!(out.status.success(), "{}", out.status);
    assert!(
        header.starts_with("TIME") && header.contains("ALLOC/s"),
        "{header}"
    );
    assert_eq!(
        row.split_whitespace().count(),
        header.split_whitespace().count(),
        "{row}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stdout is not a terminal"), "{stderr}");
}
