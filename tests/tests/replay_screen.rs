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
