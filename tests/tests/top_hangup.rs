//! `ctscope top` whose terminal goes away (ssh dropped, tmux killed) exits
//! and detaches its probes instead of spinning on a dead terminal.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use ctscope_integration::{tmux::*, *};

#[test]
fn top_exits_when_its_terminal_hangs_up() {
    require_root();
    if skip_without("tmux") {
        return;
    }
    let _lock = shared_lock();
    let socket = format!("ctscope-hup-{}", std::process::id());
    let ready = std::env::temp_dir().join(format!("ctscope-hup-ready-{}", std::process::id()));
    let _ = std::fs::remove_file(&ready);
    let cmd = format!(
        "{} top --ready-file {}",
        ctscope_bin().display(),
        ready.display()
    );
    let ok = Command::new("tmux")
        .args([
            "-L",
            &socket,
            "new-session",
            "-d",
            "-x",
            "100",
            "-y",
            "30",
            &cmd,
        ])
        .status()
        .expect("tmux");
    assert!(ok.success());
    assert!(
        wait_for(Duration::from_secs(30), || ready.exists()),
        "top did not start"
    );
    let pid: u32 = std::fs::read_to_string(&ready)
        .expect("ready")
        .trim()
        .parse()
        .expect("pid");
    let ids = program_ids_of(pid);
    assert!(!ids.is_empty());
    let _ = Command::new("tmux")
        .args(["-L", &socket, "kill-server"])
        .status();
    let start = Instant::now();
    let gone = wait_for(Duration::from_secs(10), || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    if !gone {
        // SAFETY: our child's child; do not leave it spinning.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
    let _ = std::fs::remove_file(&ready);
    assert!(
        gone,
        "top still running {:?} after its terminal went away",
        start.elapsed()
    );
    assert!(
        wait_for(Duration::from_secs(5), || still_loaded(&ids).is_empty()),
        "probes left attached"
    );
}

/// How soon ctscope must be gone once its terminal is, or after SIGTERM.
const GONE_WITHIN: Duration = Duration::from_secs(2);

/// A running `top` in a tmux pane of its own, with the programs it holds.
struct Top {
    tmux: Tmux,
    _ready: ReadyFile,
    pid: u32,
    ids: Vec<u32>,
}

impl Top {
    /// `top`, started from the pane's shell through `prefix`.
    fn start(prefix: &str, args: &str) -> Self {
        let tmux = Tmux::start(100, 30);
        let ready = ReadyFile::new();
        let pid = start_in_pane_under(&tmux, prefix, &format!("top {args}"), &ready);
        let ids = program_ids_of(pid);
        assert!(ids.len() >= 4, "programs held: {ids:?}");
        tmux.wait_for("the first frame", Duration::from_secs(10), |s| {
            s.contains("1 Table fill")
        });
        Self {
            tmux,
            _ready: ready,
            pid,
            ids,
        }
    }

    fn alive(&self) -> bool {
        // A zombie (exited, not yet reaped by a parent that is itself
        // going) has left: no threads, no descriptors.
        cpu_ticks(self.pid).is_some()
            && std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
                .is_ok_and(|s| !s.contains(") Z "))
    }

    /// Waits for ctscope to be gone (killing it if not, so a failure does
    /// not leave it spinning) and its programs unloaded. `what` says what
    /// was done to it.
    fn assert_gone(&self, what: &str) {
        let start = Instant::now();
        let ticks = cpu_ticks(self.pid);
        let gone = wait_for(GONE_WITHIN, || !self.alive());
        let took = start.elapsed();
        if !gone {
            let spin = spinning_thread(self.pid, Duration::from_secs(1));
            let spun = cpu_share(self.pid, Duration::from_secs(1));
            // SAFETY: kill on the pid ctscope wrote into its ready file.
            unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
            panic!(
                "{what}: ctscope still running after {took:?}, using {:.0} % of a CPU \
                 (ticks at the start: {ticks:?}); spinning: {spin:?}",
                spun * 100.0
            );
        }
        assert!(
            wait_for(Duration::from_secs(5), || still_loaded(&self.ids)
                .is_empty()),
            "{what}: programs {:?} left loaded",
            still_loaded(&self.ids)
        );
    }
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// The pane goes away in the middle of keys: half an escape sequence, a
/// burst of keys, a recording just started. Each time ctscope ends, at
/// once, without spinning, and its probes are unloaded.
#[test]
fn top_exits_when_killed_in_the_middle_of_keys() {
    require_root();
    if skip_without("tmux") {
        return;
    }
    let _lock = shared_lock();
    let dir = std::env::temp_dir().join(format!("ctscope-hup-rec-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let cases: [(&str, &str, u64); 6] = [
        ("half an escape sequence", "\x1b[", 0),
        ("half a modified arrow", "\x1b[1;5", 30),
        ("a burst of keys", "jjjjkkkkjjjj", 0),
        ("the filter prompt", "/netns 1", 10),
        ("a recording starting", "r", 0),
        ("a recording running", "r", 700),
    ];
    for (what, keys, delay) in cases {
        let top = Top::start(
            "",
            &format!("--interval 0.5 --record-dir {}", dir.display()),
        );
        top.tmux.type_text(keys);
        sleep_ms(delay);
        top.tmux.kill_server();
        top.assert_gone(what);
    }
    // A recording cut by the hang-up is still closed with its END record.
    let traces: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    assert!(!traces.is_empty(), "no recording was started");
    for trace in &traces {
        let out = Command::new(ctscope_bin())
            .args(["info", "--json"])
            .arg(trace)
            .output()
            .expect("ctscope info");
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("info json");
        assert_eq!(info["truncated"], false, "{}: {info}", trace.display());
        // SIGHUP, or the terminal failing first (read or write).
        assert!(
            matches!(info["end_reason"].as_str(), Some("signal" | "stopped")),
            "{}: {info}",
            trace.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The pane goes away while the terminal is being resized, at several
/// points of the resize; and a resize alone must not make top spin.
#[test]
fn top_exits_when_killed_in_the_middle_of_a_resize() {
    require_root();
    if skip_without("tmux") {
        return;
    }
    let _lock = shared_lock();
    for delay in [0, 5, 20, 60, 200] {
        let top = Top::start("", "--interval 0.5");
        top.tmux
            .run(&["resize-window", "-t", "t", "-x", "80", "-y", "24"]);
        sleep_ms(delay);
        top.tmux
            .run(&["resize-window", "-t", "t", "-x", "120", "-y", "40"]);
        top.tmux.kill_server();
        top.assert_gone(&format!("killed {delay} ms into a resize"));
    }
    let top = Top::start("", "--interval 0.5");
    top.tmux
        .run(&["resize-window", "-t", "t", "-x", "80", "-y", "24"]);
    let spin = spinning_thread(top.pid, Duration::from_secs(2));
    assert!(spin.is_none(), "top spins after a resize: {spin:?}");
    top.tmux.type_text("\x1b[");
    top.tmux
        .run(&["resize-window", "-t", "t", "-x", "100", "-y", "30"]);
    top.tmux.kill_server();
    top.assert_gone("killed after half an escape sequence and a resize");
}

/// Without SIGHUP (ctscope in a session of its own, so the terminal's
/// hang-up signals nobody): reading the terminal that went away must end
/// the command by itself.
#[test]
fn top_exits_on_a_dead_terminal_without_sighup() {
    require_root();
    if skip_without("tmux") || skip_without("setsid") {
        return;
    }
    let _lock = shared_lock();
    for (what, keys) in [("idle", ""), ("half an escape sequence", "\x1b[")] {
        let top = Top::start("setsid -w", "--interval 0.5");
        top.tmux.type_text(keys);
        top.tmux
            .run(&["resize-window", "-t", "t", "-x", "90", "-y", "26"]);
        top.tmux.kill_server();
        top.assert_gone(&format!("no SIGHUP, {what}"));
    }
}

/// SIGTERM and SIGINT end top within a second or two whatever the terminal
/// does: here nobody reads it (the tmux server is stopped) and resizes
/// make top redraw whole frames into it until its writes block, which
/// holds the screen's loop (and a runtime worker) in `write`.
#[test]
fn signals_end_top_while_its_terminal_is_not_read() {
    require_root();
    if skip_without("tmux") || skip_without("stty") {
        return;
    }
    let _lock = shared_lock();
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let top = Top::start("", "--interval 0.5");
        let server = top.tmux.server_pid() as libc::pid_t;
        let tty = top.tmux.pane_tty();
        // SAFETY: kill on the tmux server this test started.
        assert_eq!(unsafe { libc::kill(server, libc::SIGSTOP) }, 0);
        // Each new size is a SIGWINCH, a cleared screen and a whole frame
        // written to a terminal whose buffer nobody empties.
        for cols in [101, 100, 101, 100, 101, 100] {
            let _ = Command::new("stty")
                .args(["-F", &tty, "cols", &cols.to_string(), "rows", "30"])
                .status();
            sleep_ms(300);
        }
        // SAFETY: kill on the pid ctscope wrote into its ready file.
        assert_eq!(unsafe { libc::kill(top.pid as libc::pid_t, signal) }, 0);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            top.assert_gone(&format!("signal {signal} with a terminal nobody reads"));
        }));
        // SAFETY: as above; the server must run again to be killed.
        unsafe { libc::kill(server, libc::SIGCONT) };
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
    }
}
