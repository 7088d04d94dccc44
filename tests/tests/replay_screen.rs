//! `ctscope replay FILE` in a terminal: the live view over a trace recorded
//! from real traffic, with the playback keys, driven under tmux.

use std::{path::PathBuf, thread, time::Duration};

use ctscope_integration::{tmux::*, *};

/// A trace path under the temp dir, removed on drop.
struct TraceFile(PathBuf);

impl Drop for TraceFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn header(screen: &str) -> &str {
    screen.lines().next().unwrap_or("")
}

#[test]
fn replay_in_a_terminal_shows_the_recorded_namespace_and_quits_on_q() {
    require_root();
    if skip_without("tmux") {
        return;
    }
    let _lock = shared_lock();
    let ns = Netns::new().expect("namespace");
    let name = format!("ctscope-replay-screen-{}.ctrace", std::process::id());
    let file = TraceFile(std::env::temp_dir().join(&name));
    let path = file.0.to_str().expect("utf-8 temp path");
    let mut rec = Ctscope::start(&["record", "-o", path, "--interval", "0.5"]).expect("record");
    const FLOWS: u16 = 120;
    udp_flows(&ns, FLOWS, 32_000, false).expect("udp");
    // A few snapshots after the flows.
    thread::sleep(Duration::from_millis(1500));
    let status = rec.signal(libc::SIGINT).expect("record exits");
    assert!(status.success(), "{status}: {}", rec.stderr_text());

    let tmux = Tmux::start(120, 40);
    tmux.type_text(&format!(
        "{} replay {path}; echo ctscope-exit=$?",
        ctscope_bin().display()
    ));
    tmux.key("Enter");
    tmux.wait_for("the replay view", Duration::from_secs(15), |s| {
        header(s).contains(&format!("REPLAY {name}")) && s.contains("1 Table fill")
    });
    assert!(tmux.alternate_on(), "replay runs in the alternate screen");
    tmux.key("/");
    tmux.type_text(&format!("netns {}", ns.inum));
    tmux.key("Enter");
    tmux.wait_for(
        "the recorded namespace's allocations",
        Duration::from_secs(15),
        |s| screen_netns_row(s, ns.inum).is_some_and(|row| row.get(3) == Some(&FLOWS.to_string())),
    );
    // It holds at the end until the user quits.
    tmux.wait_for("the end of the recording", Duration::from_secs(15), |s| {
        header(s).contains(" END ")
    });

    // Paused, then back to the start: the position follows.
    tmux.key("p");
    tmux.key("Left");
    tmux.wait_for("the start, paused", Duration::from_secs(10), |s| {
        let h = header(s);
        h.contains(" 0:00 / ") && h.contains(" PAUSED ")
    });
    // A step plays to the next snapshot: the first is the baseline, the
    // second completes an interval, which the header dates.
    tmux.key("n");
    tmux.key("n");
    tmux.wait_for("two steps", Duration::from_secs(10), |s| {
        let h = header(s);
        h.contains(" PAUSED ") && h.contains(" at ")
    });

    tmux.key("q");
    let screen = tmux.wait_for("replay to exit", Duration::from_secs(10), |s| {
        exit_status(s).is_some()
    });
    assert_eq!(exit_status(&screen), Some(0), "{screen}");
    assert!(!tmux.alternate_on(), "still in the alternate screen");
}

/// The top-destination column of a replay screen: (endpoint, count as
/// shown), for the rows that end the drops panel's right-hand column.
fn top_destinations(screen: &str) -> Vec<(String, String)> {
    screen
        .lines()
        .filter_map(|l| {
            let (row, _) = l.rsplit_once('│')?;
            let mut words = row.rsplit(' ').filter(|w| !w.is_empty());
            let count = words.next()?;
            // Side by side, the column's own rule is glued to it.
            let endpoint = words.next()?.trim_start_matches('│');
            let is_count = count
                .trim_start_matches('≤')
                .chars()
                .all(|c| c.is_ascii_digit() || c == ',');
            (endpoint.starts_with("127.0.0.1:") && is_count && !count.is_empty())
                .then(|| (endpoint.to_owned(), count.to_owned()))
        })
        .collect()
}

/// Issue 18 item 6: replaying a recording, the top destinations showed `2`
/// for a destination the trace holds one drop of (more destinations than
/// the 4,096 kept: a new one inherits the count of the one it replaces),
/// and the memory per entry was the guide's 320 B where the live view read
/// the slab's 256 B. Every count shown now agrees with the trace's events
/// (exact, or marked `≤` as a bound that holds them), and the entry size is
/// the recorded machine's.
#[test]
fn replayed_figures_agree_with_the_trace_and_the_live_machine() {
    require_root();
    if skip_without("tmux") {
        return;
    }
    let _lock = shared_lock();
    let ns = Netns::new().expect("namespace");
    ns.nft("add rule inet ctscope_test in udp dport 40000-49999 drop")
        .expect("drop rule");
    let name = format!("ctscope-replay-figures-{}.ctrace", std::process::id());
    let file = TraceFile(std::env::temp_dir().join(&name));
    let path = file.0.to_str().expect("utf-8 temp path");
    let mut rec = Ctscope::start(&["record", "-o", path, "--interval", "0.5"]).expect("record");
    // 5,000 destinations dropped once each by the ruleset.
    const DESTINATIONS: u16 = 5000;
    udp_flows(&ns, DESTINATIONS, 40_000, false).expect("udp");
    thread::sleep(Duration::from_millis(1500));
    let status = rec.signal(libc::SIGINT).expect("record exits");
    assert!(status.success(), "{status}: {}", rec.stderr_text());

    // The trace's own events, per destination.
    let out = std::process::Command::new(ctscope_bin())
        .args(["export", path, "--format", "jsonl", "--kind", "drops"])
        .output()
        .expect("export");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut events: std::collections::HashMap<String, u64> = Default::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        if v["netns"].as_u64() == Some(u64::from(ns.inum)) {
            let dst = format!("{}:{}", v["dst"].as_str().unwrap_or("?"), v["dport"]);
            *events.entry(dst).or_default() += 1;
        }
    }
    assert_eq!(events.len(), usize::from(DESTINATIONS), "one drop each");

    let tmux = Tmux::start(200, 50);
    tmux.type_text(&format!(
        "{} replay --speed max {path}; echo ctscope-exit=$?",
        ctscope_bin().display()
    ));
    tmux.key("Enter");
    let screen = tmux.wait_for("the end of the replay", Duration::from_secs(30), |s| {
        header(s).contains(" END ") && !top_destinations(s).is_empty()
    });
    let shown = top_destinations(&screen);
    for (dst, count) in &shown {
        let n = events.get(dst).copied().unwrap_or(0);
        assert!(
            *count == n.to_string() || count.starts_with('≤'),
            "{dst} shown as {count}, the trace holds {n}:\n{screen}"
        );
    }
    assert!(
        shown.iter().any(|(_, c)| c.starts_with('≤')),
        "past 4,096 destinations the counts are bounds:\n{screen}"
    );

    // The entry size the live view reads (slab_size), recorded and shown.
    let live: u64 = std::fs::read_to_string("/sys/kernel/slab/nf_conntrack/slab_size")
        .expect("slab_size")
        .trim()
        .parse()
        .expect("a number");
    assert!(
        screen.contains(&format!("({live} B/entry")),
        "entry size {live} B expected:\n{screen}"
    );
    assert!(!screen.contains("mem ≤"), "not an estimate:\n{screen}");

    tmux.key("q");
    let screen = tmux.wait_for("replay to exit", Duration::from_secs(10), |s| {
        exit_status(s).is_some()
    });
    assert_eq!(exit_status(&screen), Some(0), "{screen}");
}
