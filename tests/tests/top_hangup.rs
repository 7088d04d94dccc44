//! `ctscope top` whose terminal goes away (ssh dropped, tmux killed) exits
//! and detaches its probes instead of spinning on a dead terminal.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use ctscope_integration::*;

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
