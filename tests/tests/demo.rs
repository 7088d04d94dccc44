//! `ctscope demo` driven as a new user drives it: the real binary in a
//! terminal (tmux), a squeezed table that fills and drops within seconds,
//! and everything put back after `q`.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use ctscope_integration::{tmux::*, *};

const MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";

fn read_max() -> u64 {
    fs::read_to_string(MAX)
        .expect("nf_conntrack_max")
        .trim()
        .parse()
        .expect("a number")
}

/// Whether any process still holds the network namespace `inum` (as its
/// own or through an open file).
fn namespace_held(inum: u32) -> bool {
    let needle = format!("net:[{inum}]");
    let Ok(procs) = fs::read_dir("/proc") else {
        return false;
    };
    procs.filter_map(Result::ok).any(|p| {
        let links = fs::read_dir(p.path().join("fd"))
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .chain([p.path().join("ns/net")]);
        links
            .filter_map(|l| fs::read_link(l).ok())
            .any(|t| t.to_string_lossy() == needle)
    })
}

/// The demo namespace from the header: `DEMO udp 2,000/s → netns N · ...`.
fn demo_netns(screen: &str) -> Option<u32> {
    let header = screen.lines().next()?;
    let (_, rest) = header.split_once("→ netns ")?;
    rest.split_whitespace().next()?.parse().ok()
}

#[test]
fn demo_fills_and_drops_then_restores_everything_on_q() {
    require_root();
    if skip_without("tmux") {
        return;
    }
    // The demo changes nf_conntrack_max itself; the guard holds the
    // exclusive lock and puts the value back should the demo not.
    let mut sysctl = SysctlGuard::new().expect("sysctl lock");
    let before = read_max();
    sysctl
        .set("nf_conntrack_max", before)
        .expect("remember nf_conntrack_max");
    let tmux = Tmux::start(120, 40);
    let ready = ReadyFile::new();
    let pid = start_in_pane(
        &tmux,
        "demo --squeeze 300 --rate 2000 --interval 0.5",
        &ready,
    );
    let ids = program_ids_of(pid);
    assert!(ids.len() >= 4, "programs held: {ids:?}");
    assert_eq!(read_max(), 300, "squeezed while the demo runs");
    let screen = tmux.wait_for("the demo header", Duration::from_secs(10), |s| {
        demo_netns(s).is_some()
    });
    assert!(
        screen.lines().next().is_some_and(
            |h| h.contains("DEMO udp 2,000/s → netns ") && h.contains("max 300 (squeezed)")
        ),
        "{screen}"
    );
    let inum = demo_netns(&screen).expect("netns");
    assert!(tmux.alternate_on());

    // The load ramps up over 5 s: the namespace's entries are seen rising
    // before they reach the limit, then table-full drops follow.
    let mut seen = Vec::new();
    let screen = tmux.wait_for("the table to fill and drop", Duration::from_secs(20), |s| {
        let Some(row) = screen_netns_row(s, inum) else {
            return false;
        };
        let entries: u64 = row.get(1).and_then(|e| e.parse().ok()).unwrap_or(0);
        if seen.last() != Some(&entries) {
            seen.push(entries);
        }
        let drops: u64 = row.get(4).and_then(|d| d.parse().ok()).unwrap_or(0);
        entries == 300 && drops > 0
    });
    assert!(
        seen.first().is_some_and(|e| (1..300).contains(e)),
        "entries did not rise: {seen:?}"
    );
    assert!(
        screen
            .lines()
            .any(|l| l.contains(" full ") && l.contains("→ 127.")),
        "no table-full drop listed:\n{screen}"
    );
    assert!(
        screen.contains("CRITICAL"),
        "advice on a full table:\n{screen}"
    );

    tmux.key("q");
    assert_terminal_restored(&tmux, pid, &ids);
    let screen = tmux.screen();
    assert!(
        screen.contains(&format!("nf_conntrack_max restored to {before}")),
        "{screen}"
    );
    assert_eq!(read_max(), before, "nf_conntrack_max restored");
    assert!(
        wait_for(Duration::from_secs(5), || !namespace_held(inum)),
        "namespace {inum} still held"
    );
}

#[test]
fn sigterm_ends_the_demo_and_restores_everything() {
    require_root();
    if skip_without("tmux") {
        return;
    }
    let mut sysctl = SysctlGuard::new().expect("sysctl lock");
    let before = read_max();
    sysctl
        .set("nf_conntrack_max", before)
        .expect("remember nf_conntrack_max");
    let tmux = Tmux::start(100, 30);
    let ready = ReadyFile::new();
    let pid = start_in_pane(&tmux, "demo --squeeze 300 --kind syn", &ready);
    let ids = program_ids_of(pid);
    assert_eq!(read_max(), 300);
    let screen = tmux.wait_for("the demo header", Duration::from_secs(10), |s| {
        demo_netns(s).is_some()
    });
    let inum = demo_netns(&screen).expect("netns");
    assert!(screen.contains("DEMO syn 2,000/s"), "{screen}");
    // SAFETY: kill on the pid ctscope wrote into its ready file.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) }, 0);
    assert_terminal_restored(&tmux, pid, &ids);
    let screen = tmux.screen();
    assert!(screen.contains("SIGTERM: stopped"), "{screen}");
    assert_eq!(read_max(), before, "nf_conntrack_max restored");
    assert!(
        wait_for(Duration::from_secs(5), || !namespace_held(inum)),
        "namespace {inum} still held"
    );
}

#[test]
fn without_a_terminal_the_demo_prints_stats_lines_for_its_duration() {
    require_root();
    let _lock = shared_lock();
    let before = read_max();
    let child = Command::new(ctscope_bin())
        .args(["demo", "--duration", "2", "--interval", "0.5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ctscope demo");
    let out = child.wait_with_output().expect("exit");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {stderr}", out.status);
    assert!(stderr.contains("stdout is not a terminal"), "{stderr}");
    assert!(stderr.contains("for 2s"), "{stderr}");
    let lines: Vec<String> = BufReader::new(&out.stdout[..])
        .lines()
        .map(|l| l.expect("utf-8"))
        .collect();
    assert!(
        lines.first().is_some_and(|h| h.starts_with("TIME")),
        "{lines:?}"
    );
    // A row every half second for two seconds, the last cut at the end.
    assert!((4..=6).contains(&(lines.len() - 1)), "{lines:?}");
    // The load ran: allocations were counted.
    let alloc_col = lines[0]
        .split_whitespace()
        .position(|c| c == "ALLOC/s")
        .expect("ALLOC/s column");
    assert!(
        lines[1..].iter().any(|l| l
            .split_whitespace()
            .nth(alloc_col)
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| v > 0.0)),
        "{lines:?}"
    );
    assert_eq!(read_max(), before, "no --squeeze: nothing changed");
}
