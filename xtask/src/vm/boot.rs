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

use super::{Arch, Image, Outcome};

/// The guest's kernel command line after its console: an oops anywhere
/// panics, and a panic stops the guest at once, so the harness sees it
/// instead of a hang.
const APPEND: &str = "quiet panic=-1 oops=panic";

/// The qemu program, its machine arguments and the guest's serial console.
fn machine(arch: Arch) -> (&'static str, &'static [&'static str], &'static str) {
    match arch {
        Arch::Amd64 => ("qemu-system-x86_64", &[], "ttyS0"),
        // `virt`: the generic board Debian's arm64 kernel boots on, its
        // serial port a PL011.
        Arch::Arm64 => ("qemu-system-aarch64", &["-M", "virt"], "ttyAMA0"),
    }
}

/// One boot of a kernel: how many vCPUs, and which test executables its
/// /init runs (passed on the kernel command line, so every boot of a kernel
/// shares one initramfs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Boot {
    pub vcpus: u32,
    /// Run only this executable.
    pub only: Option<String>,
    /// Run every executable but these.
    pub skip: Vec<String>,
}

impl Boot {
    /// The guest's extra kernel command line words.
    fn cmdline(&self) -> String {
        let mut words = format!(" ctscope.vcpus={}", self.vcpus);
        if let Some(only) = &self.only {
            words.push_str(&format!(" ctscope.only={only}"));
        }
        if !self.skip.is_empty() {
            words.push_str(&format!(" ctscope.skip={}", self.skip.join(",")));
        }
        words
    }

    /// Console logs of a boot for one executable are named after it.
    pub fn log_prefix(&self) -> String {
        self.only
            .as_ref()
            .map_or_else(String::new, |only| format!("{only}-"))
    }
}

/// Boots the guest, echoing its console, and returns everything it printed.
pub(super) fn boot_and_run(
    label: &str,
    image: &Image,
    initrd: &Path,
    log: &Path,
    timeout_min: u64,
    spec: &Boot,
    resume: Option<&str>,
) -> Result<String> {
    let vmlinuz = image
        .tree
        .join("boot")
        .join(format!("vmlinuz-{}", image.release));
    eprintln!(
        "xtask: booting {} under software emulation (qemu TCG), {} vCPUs",
        image.release, spec.vcpus
    );
    let (qemu, machine_args, console) = machine(image.arch);
    let append = format!("console={console} {APPEND}{}", spec.cmdline());
    let mut child = Command::new(qemu)
        .args(machine_args)
        // One host thread runs both vCPUs. With multi-threaded TCG the 6.12
        // guests died of "Oops: int3" at a tracepoint's static branch just
        // patched back (kmem_cache_alloc, kfree_skb): a vCPU ran stale code
        // after another had rewritten it. Single-threaded TCG keeps code
        // writes and execution in step, and was no slower here.
        .args(["-accel", "tcg,thread=single", "-cpu", "max"])
        .args(["-m", "2048", "-smp", &spec.vcpus.to_string()])
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(&vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(match resume {
            Some(at) => format!("{append} ctscope.resume={at}"),
            None => append,
        })
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {qemu}"))?;
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
                println!("[vm {label}] {line}");
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

/// Adds one boot's per-backend totals (libtest's "test result:" lines and
/// the markers) to `out`; a resumed boot adds to the same backend's entry.
/// An executable's counts are taken at its CTSCOPE-VM-RESULT marker; a
/// CTSCOPE-VM-RETRY marker drops the failed attempt's counts and records it
/// in `retried`, so a test that failed once is never silent.
pub(super) fn parse_console(kernel: &str, console: &str, out: &mut Vec<Outcome>) {
    let mut current: Option<usize> = None;
    // (passed, failed, ignored) of the executable running now.
    let mut pending = (0u64, 0u64, 0u64);
    for line in console.lines() {
        if let Some(rest) = line.strip_prefix("CTSCOPE-VM-BACKEND ") {
            let mut f = rest.split_whitespace();
            if let (Some(backend), Some("start")) = (f.next(), f.next()) {
                let found = out
                    .iter()
                    .position(|o| o.kernel == kernel && o.backend == backend);
                current = Some(found.unwrap_or_else(|| {
                    out.push(Outcome {
                        kernel: kernel.to_owned(),
                        backend: backend.to_owned(),
                        passed: 0,
                        failed: 0,
                        ignored: 0,
                        binaries_failed: Vec::new(),
                        retried: Vec::new(),
                    });
                    out.len() - 1
                }));
                pending = (0, 0, 0);
            }
        } else if line.starts_with("CTSCOPE-VM-RUN ") {
            pending = (0, 0, 0);
        } else if let Some(rest) = line.trim().strip_prefix("test result: ") {
            let n = |word: &str| -> u64 {
                rest.split(';')
                    .find_map(|part| {
                        let part = part.trim();
                        part.strip_suffix(word)
                            .and_then(|num| num.trim().rsplit(' ').next()?.parse().ok())
                    })
                    .unwrap_or(0)
            };
            pending.0 += n("passed");
            pending.1 += n("failed");
            pending.2 += n("ignored");
        } else if let Some(rest) = line.strip_prefix("CTSCOPE-VM-RETRY ") {
            let f: Vec<&str> = rest.split_whitespace().collect();
            if let (Some(o), [_, test, code]) = (current.and_then(|i| out.get_mut(i)), f.as_slice())
            {
                o.retried.push(format!(
                    "{test} exited {code} ({} failed), then was run again",
                    pending.1
                ));
            }
            pending = (0, 0, 0);
        } else if let Some(rest) = line.strip_prefix("CTSCOPE-VM-RESULT ") {
            let f: Vec<&str> = rest.split_whitespace().collect();
            if let Some(o) = current.and_then(|i| out.get_mut(i)) {
                o.passed += pending.0;
                o.failed += pending.1;
                o.ignored += pending.2;
                if let [_, test, code] = f.as_slice()
                    && *code != "0"
                {
                    o.binaries_failed.push(format!("{test} exited {code}"));
                }
            }
            pending = (0, 0, 0);
        }
    }
}

/// A guest kernel panic read off the console: which test executable was
/// running (`backend/test`, from the CTSCOPE-VM-RUN marker) and the oops
/// lines worth printing (the first report line, RIP, the panic line).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Panic {
    pub at: Option<String>,
    pub summary: Vec<String>,
}

pub(super) fn find_panic(console: &str) -> Option<Panic> {
    if !console.contains("Kernel panic - not syncing") {
        return None;
    }
    let at = console
        .lines()
        .filter_map(|l| l.strip_prefix("CTSCOPE-VM-RUN "))
        .next_back()
        .map(|rest| rest.split_whitespace().collect::<Vec<_>>().join("/"));
    // The kernel's log lines carry a "[  12.345678] " timestamp.
    let text = |l: &str| l.split_once("] ").map_or(l, |(_, t)| t).trim().to_owned();
    const REPORTS: [&str; 6] = [
        "BUG:",
        "Oops:",
        "general protection fault",
        "int3:",
        "invalid opcode:",
        "kernel BUG at",
    ];
    let mut summary: Vec<String> = Vec::new();
    for l in console.lines() {
        let t = text(l);
        let report = REPORTS
            .iter()
            .any(|r| t.starts_with(r) || t.contains(&format!(" {r}")));
        let wanted = report
            || t.starts_with("RIP: 0010:")
            // arm64's program counter line.
            || t.starts_with("pc : ")
            || t.starts_with("Comm:")
            || (t.starts_with("CPU: ") && t.contains("Comm:"))
            || t.starts_with("Kernel panic - not syncing");
        if wanted && !summary.contains(&t) {
            summary.push(t);
        }
    }
    Some(Panic { at, summary })
}
