//! `ctscope top` driven as a user drives it: the real binary in a terminal
//! (a private tmux server), keys sent to it, the screen read back, while
//! real traffic fills a private namespace's conntrack table.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use ctscope_integration::{tmux::*, *};

#[test]
fn top_shows_entries_and_drops_then_quits_cleanly() {
    require_root();
    if skip_without("tmux") {
        return;
    }
    let mut sysctl = SysctlGuard::new().expect("sysctl lock");
    let ns = Netns::new().expect("namespace");
    // 260 new flows into a limit of 200 per namespace: the table fills and
    // the rest are dropped (or early-dropped, which the kernel counts too).
    sysctl
        .set("nf_conntrack_max", 200)
        .expect("lower nf_conntrack_max");
    let tmux = Tmux::start(120, 40);
    let ready = ReadyFile::new();
    let pid = start_in_pane(&tmux, "top --interval 0.5", &ready);
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
            screen_netns_row(s, ns.inum).is_some_and(|row| {
                row.get(1) == Some(&entries.to_string())
                    && row.get(4) == Some(&kernel_drops.to_string())
            })
        },
    );
    let row = screen_netns_row(&screen, ns.inum).expect("row");
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
    if skip_without("tmux") {
        return;
    }
    let _lock = shared_lock();
    let tmux = Tmux::start(100, 30);
    let ready = ReadyFile::new();
    let pid = start_in_pane(&tmux, "top --interval 0.5", &ready);
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

/// A directory under the temp dir, removed with its contents on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ctscope-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }

    /// The trace files in it, sorted by name.
    fn traces(&self) -> Vec<std::path::PathBuf> {
        let mut files: Vec<_> = std::fs::read_dir(&self.0)
            .expect("read dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "ctrace"))
            .collect();
        files.sort();
        files
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Allocation events of namespace `inum` in a trace, by `ctscope export`.
fn allocations_in(file: &str, inum: u32) -> usize {
    ctscope_ok(&["export", file, "--format", "jsonl", "--kind", "alloc"])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .filter(|r| r["type"] == "alloc" && r["netns"].as_u64() == Some(u64::from(inum)))
        .count()
}

/// The event count in the recording indicator.
fn recorded_events(footer: &str) -> Option<u64> {
    footer
        .split(" · ")
        .find_map(|part| part.strip_suffix(" events"))
        .and_then(|n| n.replace(',', "").parse().ok())
}

#[test]
fn r_records_a_trace_of_the_traffic_while_top_runs() {
    require_root();
    if skip_without("tmux") {
        return;
    }
    let _lock = shared_lock();
    let ns = Netns::new().expect("namespace");
    let dir = TempDir::new("top-record");
    let tmux = Tmux::start(120, 40);
    let ready = ReadyFile::new();
    let pid = start_in_pane(
        &tmux,
        &format!("top --interval 0.5 --record-dir {}", dir.path()),
        &ready,
    );
    let ids = program_ids_of(pid);
    tmux.wait_for("the first frame", Duration::from_secs(10), |s| {
        s.contains("1 Table fill")
    });
    tmux.key("/");
    tmux.type_text(&format!("netns {}", ns.inum));
    tmux.key("Enter");
    // Traffic before the recording: on screen, not in the trace's counts.
    const BEFORE: u16 = 50;
    udp_flows(&ns, BEFORE, 20_000, false).expect("udp");
    tmux.wait_for("the allocations before", Duration::from_secs(15), |s| {
        screen_netns_row(s, ns.inum).is_some_and(|row| row.get(3) == Some(&BEFORE.to_string()))
    });

    // The recording starts at its first snapshot; the footer says so.
    tmux.key("r");
    tmux.wait_for("the recording to start", Duration::from_secs(10), |s| {
        footer(s).contains("● REC ctscope-") && !footer(s).contains("starting")
    });
    const FLOWS: u16 = 150;
    let sent = udp_flows(&ns, FLOWS, 30_000, false).expect("udp");
    assert_eq!(sent, usize::from(FLOWS));
    // The screen counts allocations from the snapshots; once it shows all of
    // them, the events before that snapshot have gone by too.
    let screen = tmux.wait_for(
        "the namespace's allocations",
        Duration::from_secs(15),
        |s| {
            screen_netns_row(s, ns.inum)
                .is_some_and(|row| row.get(3) == Some(&(BEFORE + FLOWS).to_string()))
        },
    );
    assert!(footer(&screen).contains("● REC ctscope-"), "{screen}");
    tmux.wait_for(
        "the footer to count the events",
        Duration::from_secs(5),
        |s| recorded_events(footer(s)).is_some_and(|n| n >= u64::from(FLOWS)),
    );

    tmux.key("r");
    let screen = tmux.wait_for("the recording to be saved", Duration::from_secs(10), |s| {
        footer(s).contains(" saved /") && footer(s).contains(".ctrace: ")
    });
    let traces = dir.traces();
    assert_eq!(traces.len(), 1, "{traces:?}");
    let file = traces[0].to_str().expect("utf-8");
    let name = traces[0]
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name");
    assert!(
        name.starts_with("ctscope-") && name.len() == "ctscope-YYYYmmdd-HHMMSS.ctrace".len(),
        "{name}"
    );
    assert!(footer(&screen).contains(name), "{screen}");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(file).expect("trace").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "traces hold addresses");

    // A normal trace: every flow is one allocation of the namespace.
    assert_eq!(allocations_in(file, ns.inum), usize::from(FLOWS));
    // Its snapshots count from the recording's start, not from ctscope's
    // (issue 18 item 12): the namespace's allocations are the recorded ones.
    let snapshots: Vec<serde_json::Value> =
        ctscope_ok(&["export", file, "--format", "jsonl", "--kind", "snapshots"])
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
    let first = snapshots.first().expect("a snapshot");
    assert_eq!(num(first, "/counters/alloc"), 0, "{first}");
    let last = snapshots.last().expect("a snapshot");
    let row = last["netns"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["inum"] == ns.inum))
        .expect("the namespace in the last snapshot");
    assert_eq!(num(row, "/alloc"), u64::from(FLOWS), "{row}");
    let info: serde_json::Value =
        serde_json::from_str(&ctscope_ok(&["info", file, "--json"])).expect("info json");
    assert_eq!(info["end_reason"], "stopped", "{info}");
    assert_eq!(info["truncated"], false, "{info}");
    assert_eq!(info["damaged"], false, "{info}");
    assert_eq!(num(&info, "/lost/ring_full"), 0, "{info}");
    assert!(num(&info, "/snapshots") >= 2, "{info}");
    assert_eq!(info["event_classes"], serde_json::json!(["ct", "drop"]));

    // Quitting while recording closes the file properly too.
    tmux.key("r");
    tmux.wait_for("the second recording", Duration::from_secs(10), |s| {
        footer(s).contains("● REC ctscope-") && !footer(s).contains("starting")
    });
    udp_flows(&ns, 20, 31_000, false).expect("udp");
    tmux.key("q");
    assert_terminal_restored(&tmux, pid, &ids);
    let screen = tmux.screen();
    assert!(screen.contains("ctscope: recorded "), "{screen}");
    let traces = dir.traces();
    assert_eq!(traces.len(), 2, "{traces:?}");
    let second = traces
        .iter()
        .find(|p| p.to_str() != Some(file))
        .and_then(|p| p.to_str())
        .expect("second trace");
    let info: serde_json::Value =
        serde_json::from_str(&ctscope_ok(&["info", second, "--json"])).expect("info json");
    assert_eq!(info["end_reason"], "stopped", "{info}");
    assert_eq!(info["truncated"], false, "{info}");
}

/// Issue 18, item 5: after `r` started a recording and the terminal was
/// resized, the next key was lost (crossterm's reader reported the resize
/// and left the key read with it unreported until another key came, and
/// spun meanwhile). Each round: `r`, a resize, then `?` must open the help
/// at once; another resize, then `/` must open the filter prompt; and `r`
/// must save the recording with its END.
#[test]
fn the_key_after_r_and_a_resize_takes_effect() {
    require_root();
    if skip_without("tmux") {
        return;
    }
    let _lock = shared_lock();
    let dir = TempDir::new("top-record-resize");
    let tmux = Tmux::start(120, 40);
    let ready = ReadyFile::new();
    let pid = start_in_pane(
        &tmux,
        &format!("top --interval 0.5 --record-dir {}", dir.path()),
        &ready,
    );
    let ids = program_ids_of(pid);
    tmux.wait_for("the first frame", Duration::from_secs(10), |s| {
        s.contains("1 Table fill")
    });
    let sizes = [("100", "30"), ("120", "40"), ("90", "28")];
    for (round, (x, y)) in sizes.into_iter().enumerate() {
        tmux.key("r");
        tmux.wait_for("the recording to start", Duration::from_secs(10), |s| {
            footer(s).contains("● REC ctscope-") && !footer(s).contains("starting")
        });
        tmux.run(&["resize-window", "-t", "t", "-x", x, "-y", y]);
        tmux.key("?");
        // A lost key would only show after the next one: nothing else is
        // sent until the help is up.
        tmux.wait_for(
            &format!("round {round}: the help after the resize"),
            Duration::from_secs(3),
            |s| s.contains("Help · any key closes"),
        );
        let spin = spinning_thread(pid, Duration::from_secs(1));
        assert!(
            spin.is_none(),
            "round {round}: top spins after a resize: {spin:?}"
        );
        tmux.key("Escape");
        tmux.wait_for("help to close", Duration::from_secs(3), |s| {
            !s.contains("Help · any key closes")
        });
        tmux.run(&["resize-pane", "-t", "t", "-x", "110", "-y", "35"]);
        // The filter prompt, in the footer (the header, where PAUSED shows,
        // is cut at some of these widths).
        tmux.key("/");
        tmux.wait_for(
            &format!("round {round}: the filter prompt after the resize"),
            Duration::from_secs(3),
            |s| footer(s).contains(" filter: "),
        );
        tmux.key("Escape");
        tmux.wait_for("the prompt to close", Duration::from_secs(3), |s| {
            !footer(s).contains(" filter: ")
        });
        tmux.key("r");
        tmux.wait_for(
            &format!("round {round}: the recording to be saved"),
            Duration::from_secs(10),
            |s| footer(s).contains(" saved ") && footer(s).contains(".ctrace: "),
        );
        assert_eq!(dir.traces().len(), round + 1, "{:?}", dir.traces());
    }
    tmux.key("q");
    assert_terminal_restored(&tmux, pid, &ids);
    for trace in dir.traces() {
        let file = trace.to_str().expect("utf-8");
        let info: serde_json::Value =
            serde_json::from_str(&ctscope_ok(&["info", file, "--json"])).expect("info json");
        assert_eq!(info["end_reason"], "stopped", "{file}: {info}");
        assert_eq!(info["truncated"], false, "{file}: {info}");
    }
}
