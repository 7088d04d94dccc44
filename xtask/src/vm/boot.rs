//! Booting the guest under qemu and reading the results off its console.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::{Image, Outcome};

/// Boots the guest, echoing its console, and returns everything it printed.
pub(super) fn boot_and_run(
    image: &Image,
    initrd: &Path,
    log: &Path,
    timeout_min: u64,
) -> Result<String> {
    let vmlinuz = image
        .tree
        .join("boot")
        .join(format!("vmlinuz-{}", image.release));
    eprintln!(
        "xtask: booting {} under software emulation (qemu TCG)",
        image.release
    );
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-m", "2048", "-smp", "2"])
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(&vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 quiet panic=-1 oops=panic"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let stdout = child.stdout.take().context("qemu stdout")?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut file = fs::File::create(log)?;
    let mut console = String::new();
    let deadline = Instant::now() + Duration::from_secs(timeout_min * 60);
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(line) => {
                let line = line.replace('\r', "");
                println!("[vm] {line}");
                writeln!(file, "{line}")?;
                console.push_str(&line);
                console.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if Instant::now() > deadline {
                    eprintln!("xtask: the guest ran past {timeout_min} min; stopping it");
                    let _ = child.kill();
                    break;
                }
            }
        }
    }
    let _ = child.wait();
    Ok(console)
}

/// Per-backend totals from libtest's "test result:" lines and the markers.
pub(super) fn parse_console(kernel: &str, console: &str) -> Vec<Outcome> {
    let mut out: Vec<Outcome> = Vec::new();
    for line in console.lines() {
        if let Some(rest) = line.strip_prefix("CTSCOPE-VM-BACKEND ") {
            let mut f = rest.split_whitespace();
            if let (Some(backend), Some("start")) = (f.next(), f.next()) {
                out.push(Outcome {
                    kernel: kernel.to_owned(),
                    backend: backend.to_owned(),
                    passed: 0,
                    failed: 0,
                    ignored: 0,
                    binaries_failed: Vec::new(),
                });
            }
        } else if let Some(rest) = line.trim().strip_prefix("test result: ") {
            if let Some(o) = out.last_mut() {
                let n = |word: &str| -> u64 {
                    rest.split(';')
                        .find_map(|part| {
                            let part = part.trim();
                            part.strip_suffix(word)
                                .and_then(|num| num.trim().rsplit(' ').next()?.parse().ok())
                        })
                        .unwrap_or(0)
                };
                o.passed += n("passed");
                o.failed += n("failed");
                o.ignored += n("ignored");
            }
        } else if let Some(rest) = line.strip_prefix("CTSCOPE-VM-RESULT ") {
            let f: Vec<&str> = rest.split_whitespace().collect();
            if let (Some(o), [_, test, code]) = (out.last_mut(), f.as_slice())
                && *code != "0"
            {
                o.binaries_failed.push(format!("{test} exited {code}"));
            }
        }
    }
    out
}
