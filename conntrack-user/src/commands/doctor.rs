//! `ctscope doctor`: checks the kernel, the privileges and the conntrack
//! settings, and prints what to do. The exit status is the worst finding:
//! 0 fine (or only information), 1 warnings, 2 critical.

use std::io::{self, Write as _};

use crate::{
    cli::{DoctorArgs, ProbeArgs},
    doctor::{Check, LeftChanged, Status, diagnose, gather, worst},
    kernel::restore::Leftover,
};

/// The exit status doctor asks for, carried out of `run` as an error so the
/// binary's exit path stays in main.
#[derive(Debug, thiserror::Error)]
#[error("doctor found {0} finding(s) to act on")]
pub struct DoctorFindings(pub Status);

/// `leftover`: what this run found of a global sysctl left changed by an
/// earlier ctscope (and repaired, when it could).
pub async fn run(args: &DoctorArgs, probe: &ProbeArgs, leftover: &Leftover) -> anyhow::Result<()> {
    let load = !args.no_load;
    let backend = probe.backend.into();
    let mut state = tokio::task::spawn_blocking(move || gather(load, backend)).await?;
    state.left_changed = LeftChanged::from_leftover(leftover);
    let checks = diagnose(&state);
    let text = if args.json {
        let v = serde_json::json!({
            "status": worst(&checks),
            "kernel": state.kernel,
            "backend": state.backend,
            "checks": checks,
            "machine": state,
        });
        format!("{v}\n")
    } else {
        render(&state.kernel, &checks)
    };
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        // Piped into `head`: the exit status still tells the severity.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        other => other?,
    }
    match worst(&checks) {
        Status::Ok | Status::Info => Ok(()),
        status => Err(DoctorFindings(status).into()),
    }
}

/// The human report: one line per check, commands indented under it.
pub fn render(kernel: &str, checks: &[Check]) -> String {
    let mut s = format!("ctscope doctor — kernel {kernel}\n\n");
    for c in checks {
        let mark = match c.status {
            Status::Ok => "  ok  ",
            Status::Info => " info ",
            Status::Warning => " WARN ",
            Status::Critical => " CRIT ",
        };
        s.push_str(&format!("[{mark}] {:<14} {}\n", c.id, c.message));
        for cmd in &c.commands {
            s.push_str(&format!("{:24}$ {cmd}\n", ""));
        }
    }
    let w = worst(checks);
    s.push_str(&format!(
        "\nOverall: {} (exit status {})\n",
        w.as_str(),
        w.exit_code()
    ));
    s
}
