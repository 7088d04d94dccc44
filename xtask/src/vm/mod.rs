//! `cargo xtask vm-test`: the integration suite on stock Debian kernels, in
//! qemu under software emulation (../shared/platform.md: guests crash under
//! KVM on these machines).
//!
//! For each kernel: fetch its package with `apt-get download` (cached under
//! target/vm/; bullseye's 5.10 through a private apt configuration,
//! kernel.rs), build an initramfs with busybox, the tools the tests drive
//! and their libraries, the conntrack modules, the release `ctscope` and the
//! integration test executables, boot it, and run the suite once per
//! backend (the tracepoint backend only where the kernel allows it). The
//! guest prints markers on the serial console; this side reads them and
//! reports pass/fail per kernel and backend. Two kernels' guests run at a
//! time, so `--kernel all` takes about as long as the longest pair in
//! sequence: within `.ci/run`'s hour.
//!
//! One kernel is arm64 (arm64.rs): Debian's arm64 kernel in
//! qemu-system-aarch64, with the aarch64 static ctscope of `cargo xtask
//! dist`, test executables cross-built the same way, and an arm64 userland
//! (busybox and the tools the tests drive) from Debian's arm64 packages.
//! Emulating another CPU is several times slower again, so that guest runs
//! one test unless `--filter` asks for others ([`KernelSel::default_test`]).

use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

mod arm64;
mod boot;
mod initrd;
mod kernel;

use boot::{Boot, boot_and_run, find_panic, parse_console};
use initrd::{Built, build, build_initrd};
use kernel::{Image, fetch_kernel};

/// A stock kernel the suite runs on, found by package name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelSel {
    /// Debian 11's kernel (linux-image-5.10.0-N-amd64, suite bullseye,
    /// fetched through a private apt configuration).
    #[value(name = "debian-5.10")]
    Debian510,
    /// Debian 12's own kernel (linux-image-6.1.0-N-amd64).
    #[value(name = "debian-6.1")]
    Debian61,
    /// Debian 12's backports kernel (linux-image-6.12.N+deb12-amd64).
    #[value(name = "debian-6.12")]
    Debian612,
    /// Debian 12's arm64 kernel (linux-image-6.1.0-N-arm64) in
    /// qemu-system-aarch64, running the aarch64 static binary; one stats
    /// test unless `--filter` is given.
    #[value(name = "debian-arm64-6.1")]
    Arm64Debian61,
    /// Every kernel above.
    All,
}

/// The CPU a guest emulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    /// Debian's name of the architecture.
    pub fn deb(self) -> &'static str {
        match self {
            Self::Amd64 => "amd64",
            Self::Arm64 => "arm64",
        }
    }
}

impl KernelSel {
    fn expand(self) -> Vec<Self> {
        match self {
            // Longest first: with two guests at a time, 5.10 (one backend)
            // follows whichever of the two finishes first.
            // arm64 last: its one test (about 2 minutes, and as much again
            // to cross-build and fetch the first time) fits beside 5.10 in
            // the time 6.12 takes longer than 6.1, when a core would idle.
            Self::All => vec![
                Self::Debian612,
                Self::Debian61,
                Self::Debian510,
                Self::Arm64Debian61,
            ],
            k => vec![k],
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Debian510 => "debian-5.10",
            Self::Debian61 => "debian-6.1",
            Self::Debian612 => "debian-6.12",
            Self::Arm64Debian61 => "debian-arm64-6.1",
            Self::All => "all",
        }
    }

    /// `apt-cache search --names-only` pattern of the image package.
    fn package_pattern(self) -> &'static str {
        match self {
            Self::Debian510 => r"^linux-image-5\.10\.0-[0-9]+-amd64$",
            Self::Debian61 => r"^linux-image-6\.1\.0-[0-9]+-amd64$",
            Self::Arm64Debian61 => r"^linux-image-6\.1\.0-[0-9]+-arm64$",
            Self::Debian612 | Self::All => r"^linux-image-6\.12\.[0-9]+\+deb12-amd64$",
        }
    }

    /// The Debian suite fetched through a private apt configuration, or
    /// `None` for the machine's own sources (bookworm).
    fn suite(self) -> Option<&'static str> {
        match self {
            Self::Debian510 => Some("bullseye"),
            // The machine's sources are amd64 only.
            Self::Arm64Debian61 => Some("bookworm"),
            _ => None,
        }
    }

    fn arch(self) -> Arch {
        match self {
            Self::Arm64Debian61 => Arch::Arm64,
            _ => Arch::Amd64,
        }
    }

    /// The one test the guest runs when no `--filter` is given, as
    /// (executable, exact test name), for a guest too slow for the suite:
    /// an arm64 guest on an x86_64 host runs some 5-10 times slower than
    /// an amd64 one, and ctscope takes about a minute to attach there. This
    /// test loads the programs, attaches them and compares exact per
    /// namespace allocation counts with the kernel's, the core of ctscope.
    fn default_test(self) -> Option<(&'static str, &'static str)> {
        match self {
            Self::Arm64Debian61 => Some(("stats", "allocations_are_counted_exactly_per_namespace")),
            _ => None,
        }
    }

    /// Why the tracepoint backend does not run on this kernel, if it
    /// does not (docs/drop-causes.md, "Per kernel").
    fn no_tracepoint_backend(self) -> Option<&'static str> {
        match self {
            Self::Debian510 => Some(
                "5.10's kmem_cache_alloc/kmem_cache_free tracepoints carry no kmem_cache \
                 pointer (added in 6.1), so the tracepoint backend cannot tell conntrack's \
                 entries from other slab objects; ctscope refuses it there for counting",
            ),
            _ => None,
        }
    }
}

/// Which probes ctscope is told to use inside the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendSel {
    Auto,
    Kprobe,
    Tracepoint,
    /// kprobe, then tracepoint, in the same boot.
    All,
}

impl BackendSel {
    fn expand(self) -> Vec<&'static str> {
        match self {
            Self::Auto => vec!["auto"],
            Self::Kprobe => vec!["kprobe"],
            Self::Tracepoint => vec!["tracepoint"],
            Self::All => vec!["kprobe", "tracepoint"],
        }
    }
}

pub struct VmOptions {
    pub kernel: KernelSel,
    pub backend: BackendSel,
    pub filter: Option<String>,
    /// Minutes before a guest is killed.
    pub timeout_min: u64,
}

/// Modules the tests need; `modprobe --show-depends` adds their dependencies.
/// `crc32c_generic` first: libcrc32c asks the crypto API for "crc32c", which
/// would otherwise need a usermode module request during boot.
const MODULES: [&str; 13] = [
    "crc32c_generic",
    "nf_defrag_ipv4",
    "nf_defrag_ipv6",
    "nfnetlink",
    "nf_conntrack",
    "nf_conntrack_netlink",
    "nf_tables",
    "nft_ct",
    // The NAT router of tests/tests/drops.rs (issue 17): a veth pair and a
    // nat table with dnat and masquerade.
    "veth",
    "nf_nat",
    "nft_chain_nat",
    "nft_nat",
    "nft_masq",
];

/// Host programs copied into the guest with their libraries. The tests drive
/// `ip`, `nft`, `conntrack`, `sysctl` and `bpftool`; `kmod` loads modules.
const TOOLS: [&str; 6] = ["ip", "nft", "conntrack", "bpftool", "kmod", "sysctl"];
/// Tools the tests use that the guest does not have; tests that need them
/// skip themselves when `CTSCOPE_VM_MISSING_TOOLS` names them.
const MISSING_TOOLS: &str = "tmux,prometheus,promtool,bash";

/// vCPUs of the guest that runs the suite. Single-threaded TCG runs every
/// vCPU on one host thread (boot.rs), so more vCPUs add no speed.
const VCPUS: u32 = 2;
/// Test executables that need more vCPUs: each runs in a boot of its own
/// with that many, after the main boot (which skips them). tests/tests/cpus.rs
/// sends flows on four CPUs at once.
const MORE_VCPUS: [(&str, u32); 1] = [("cpus", 4)];

/// The boots of one kernel: the main one with every other executable, then
/// one per executable of [`MORE_VCPUS`]; a boot none of whose executables
/// has a test matching the filter is left out (`matches`).
fn boot_plan(tests: &[&str], matches: impl Fn(&str) -> bool) -> Vec<Boot> {
    let special = |t: &str| MORE_VCPUS.iter().any(|(name, _)| *name == t);
    let mut plan = Vec::new();
    if tests.iter().any(|t| !special(t) && matches(t)) {
        plan.push(Boot {
            vcpus: VCPUS,
            only: None,
            skip: MORE_VCPUS.iter().map(|(n, _)| (*n).to_owned()).collect(),
        });
    }
    for (name, vcpus) in MORE_VCPUS {
        if tests.contains(&name) && matches(name) {
            plan.push(Boot {
                vcpus,
                only: Some(name.to_owned()),
                skip: Vec::new(),
            });
        }
    }
    plan
}

/// Whether a test executable has a test whose name contains `filter`
/// (`--list` runs nothing, and needs no root). An executable for another
/// CPU is listed through `runner` (qemu-user), and counts as matching when
/// there is none.
fn lists_tests(exe: &Path, filter: Option<&str>, runner: Option<&Path>) -> bool {
    let Some(filter) = filter else { return true };
    let mut cmd = match runner {
        Some(runner) => {
            let mut c = Command::new(runner);
            c.arg(exe);
            c
        }
        None => Command::new(exe),
    };
    cmd.args(["--list", filter]).output().map_or(true, |o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l.ends_with(": test"))
    })
}

/// One (kernel, backend) outcome.
struct Outcome {
    pub(super) kernel: String,
    pub(super) backend: String,
    pub(super) passed: u64,
    pub(super) failed: u64,
    pub(super) ignored: u64,
    pub(super) binaries_failed: Vec<String>,
    /// Executables that failed and passed when run again (reported, never
    /// hidden: see the guest's /init).
    pub(super) retried: Vec<String>,
}

/// Guests run at once: this machine has two cores, and each guest runs on
/// one host thread (single-threaded TCG, see boot.rs).
const PARALLEL_GUESTS: usize = 2;

/// What one kernel's run produced.
struct KernelRun {
    outcomes: Vec<Outcome>,
    timing: Option<(&'static str, String, Duration, Duration)>,
    notes: Vec<(&'static str, String)>,
}

pub fn run(root: &Path, opts: &VmOptions) -> Result<()> {
    let kernels = opts.kernel.expand();
    let wants = |arch: Arch| kernels.iter().any(|k| k.arch() == arch);
    for tool in ["qemu-system-x86_64", "busybox", "cpio"] {
        if !on_path(tool) {
            crate::provision::apt_install(&["qemu-system-x86", "busybox-static", "cpio", "kmod"])?;
            break;
        }
    }
    if wants(Arch::Arm64) && !on_path("qemu-system-aarch64") {
        crate::provision::apt_install(&["qemu-system-arm"])?;
    }
    let amd64 = if wants(Arch::Amd64) {
        Some(build(root)?)
    } else {
        None
    };
    // The kernels' guests run PARALLEL_GUESTS at a time, each kernel's
    // whole run (fetch, initramfs, boots) on one worker thread; results
    // are reported in the order of the kernel list.
    let queue = Mutex::new((0..kernels.len()).collect::<VecDeque<usize>>());
    let results: Mutex<Vec<(usize, Result<KernelRun>)>> = Mutex::new(Vec::new());
    let wall = Instant::now();
    thread::scope(|scope| {
        for _ in 0..PARALLEL_GUESTS.min(kernels.len()) {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                    let Some(i) = next else { break };
                    // The arm64 pieces are built by the worker that boots
                    // them (one kernel uses them), so that the build runs
                    // beside a guest instead of before all of them.
                    let run = match kernels[i].arch() {
                        Arch::Amd64 => amd64
                            .as_ref()
                            .context("nothing was built for amd64")
                            .and_then(|built| run_kernel(root, kernels[i], built, opts)),
                        Arch::Arm64 => arm64::build(root, opts.filter.as_deref())
                            .and_then(|built| run_kernel(root, kernels[i], &built, opts)),
                    };
                    if let Ok(mut r) = results.lock() {
                        r.push((i, run));
                    }
                }
            });
        }
    });
    let mut results = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a VM worker thread panicked"))?;
    results.sort_by_key(|(i, _)| *i);
    let mut outcomes = Vec::new();
    let mut timings = Vec::new();
    let mut notes: Vec<(&str, String)> = Vec::new();
    for (i, run) in results {
        match run {
            Ok(r) => {
                outcomes.extend(r.outcomes);
                timings.extend(r.timing);
                notes.extend(r.notes);
            }
            Err(e) => outcomes.push(Outcome {
                kernel: kernels[i].label().to_owned(),
                backend: "-".into(),
                passed: 0,
                failed: 1,
                ignored: 0,
                binaries_failed: vec![format!("{e:#}")],
                retried: Vec::new(),
            }),
        }
    }
    eprintln!(
        "\nvm-test summary ({} kernel(s), {} guest(s) at a time, {:.0} s in all)",
        kernels.len(),
        PARALLEL_GUESTS.min(kernels.len()),
        wall.elapsed().as_secs_f64()
    );
    for (label, release, prepared, ran) in &timings {
        eprintln!(
            "  {label} ({release}): prepared in {:.0} s, booted and tested in {:.0} s",
            prepared.as_secs_f64(),
            ran.as_secs_f64()
        );
    }
    for (label, note) in &notes {
        eprintln!("  NOTE {label}: {note}");
    }
    let mut failed = false;
    for o in &outcomes {
        let verdict = if o.failed == 0 && o.binaries_failed.is_empty() {
            "PASS"
        } else {
            failed = true;
            "FAIL"
        };
        eprintln!(
            "  {verdict} {} backend={}: {} passed, {} failed, {} ignored{}",
            o.kernel,
            o.backend,
            o.passed,
            o.failed,
            o.ignored,
            if o.binaries_failed.is_empty() {
                String::new()
            } else {
                format!(" ({})", o.binaries_failed.join(", "))
            }
        );
        for r in &o.retried {
            eprintln!("    FAILED ONCE {} backend={}: {r}", o.kernel, o.backend);
        }
    }
    let total_pass: u64 = outcomes.iter().map(|o| o.passed).sum();
    let total_fail: u64 = outcomes.iter().map(|o| o.failed).sum();
    let retried: usize = outcomes.iter().map(|o| o.retried.len()).sum();
    println!(
        "vm-test: {total_pass} passed, {total_fail} failed, {retried} executable(s) run again after a failure"
    );
    if failed || outcomes.is_empty() {
        bail!("the integration suite failed in a VM");
    }
    Ok(())
}

/// One kernel: fetch, build its initramfs, boot (again after a panic, to
/// resume at the executable that was running), and read the results.
fn run_kernel(
    root: &Path,
    kernel: KernelSel,
    tests: &Built,
    opts: &VmOptions,
) -> Result<KernelRun> {
    let mut outcomes = Vec::new();
    let mut notes: Vec<(&'static str, String)> = Vec::new();
    let mut backends = opts.backend.expand();
    if let Some(why) = kernel.no_tracepoint_backend()
        && backends.contains(&"tracepoint")
    {
        backends.retain(|b| *b != "tracepoint");
        notes.push((kernel.label(), format!("tracepoint backend not run: {why}")));
    }
    if backends.is_empty() {
        outcomes.push(Outcome {
            kernel: kernel.label().to_owned(),
            backend: "-".into(),
            passed: 0,
            failed: 1,
            ignored: 0,
            binaries_failed: vec!["no backend of those asked for runs on this kernel".into()],
            retried: Vec::new(),
        });
        return Ok(KernelRun {
            outcomes,
            timing: None,
            notes,
        });
    }
    let started = Instant::now();
    let image = fetch_kernel(root, kernel)?;
    // `--filter` as given, or the one test of a slow guest; a filter is
    // passed to the test executables word for word.
    let filter = match (&opts.filter, kernel.default_test()) {
        (Some(f), _) => Some(f.clone()),
        (None, Some((_, name))) => Some(format!("--exact {name}")),
        (None, None) => None,
    };
    let initrd = build_initrd(root, &image, tests, filter.as_deref(), &backends)?;
    let prepared = started.elapsed();
    let boot = Instant::now();
    let names: Vec<&str> = tests.tests.iter().map(|(n, _)| n.as_str()).collect();
    let plan = boot_plan(&names, |name| {
        tests.tests.iter().any(|(n, exe)| {
            n == name && lists_tests(exe, opts.filter.as_deref(), tests.runner.as_deref())
        })
    });
    for spec in &plan {
        let mut resume: Option<String> = None;
        for attempt in 1.. {
            let log = image
                .dir
                .join(format!("console-{}{attempt}.log", spec.log_prefix()));
            let console = boot_and_run(
                kernel.label(),
                &image,
                &initrd,
                &log,
                opts.timeout_min,
                spec,
                resume.as_deref(),
            )?;
            parse_console(kernel.label(), &console, &mut outcomes);
            if console.contains("CTSCOPE-VM-DONE") {
                break;
            }
            let panic = find_panic(&console);
            let why = match &panic {
                Some(p) => format!(
                    "the guest kernel panicked during {} (see {}): {}",
                    p.at.as_deref().unwrap_or("boot"),
                    log.display(),
                    p.summary.join(" | ")
                ),
                None => format!("the guest did not finish (see {})", log.display()),
            };
            eprintln!("xtask: {}: {why}", kernel.label());
            // A panic under software emulation is retried once per test
            // executable, in a fresh boot that resumes there; the panic is
            // still reported. The same executable panicking twice, or a
            // guest that stops without a panic, is a failure.
            let retry = panic
                .and_then(|p| p.at)
                .filter(|at| attempt < 4 && resume.as_ref() != Some(at));
            notes.push((kernel.label(), why.clone()));
            match retry {
                Some(at) => {
                    eprintln!("xtask: booting {} again to resume at {at}", image.release);
                    resume = Some(at);
                }
                None => {
                    outcomes.push(Outcome {
                        kernel: kernel.label().to_owned(),
                        backend: "-".into(),
                        passed: 0,
                        failed: 1,
                        ignored: 0,
                        binaries_failed: vec![why],
                        retried: Vec::new(),
                    });
                    break;
                }
            }
        }
    }
    Ok(KernelRun {
        outcomes,
        timing: Some((
            kernel.label(),
            image.release.clone(),
            prepared,
            boot.elapsed(),
        )),
        notes,
    })
}

fn on_path(tool: &str) -> bool {
    which(tool).is_some()
}

fn which(tool: &str) -> Option<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
}

fn sh(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("{what}: could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{initrd::test_executables, kernel::version_cmp, *};

    #[test]
    fn newest_kernel_sorts_numerically() {
        let mut v = [
            "linux-image-6.1.0-9-amd64",
            "linux-image-6.1.0-56-amd64",
            "linux-image-6.1.0-10-amd64",
        ];
        v.sort_by(|a, b| version_cmp(a, b));
        assert_eq!(v.last(), Some(&"linux-image-6.1.0-56-amd64"));
        assert!(
            version_cmp(
                "linux-image-6.12.99+deb12-amd64",
                "linux-image-6.12.117+deb12-amd64"
            )
            .is_lt()
        );
    }

    #[test]
    fn all_kernels_include_bullseye_through_a_private_apt_configuration() {
        let all = KernelSel::All.expand();
        assert!(all.contains(&KernelSel::Debian510), "{all:?}");
        assert_eq!(all.len(), 4);
        assert_eq!(KernelSel::Debian510.suite(), Some("bullseye"));
        assert_eq!(
            KernelSel::Debian61.suite(),
            None,
            "bookworm: the machine's sources"
        );
        let list = kernel::sources_list("bullseye");
        assert!(list.contains(" bullseye main"), "{list}");
        assert!(
            list.contains("debian-security bullseye-security main"),
            "{list}"
        );
        assert!(list.contains("signed-by=/usr/share/keyrings/"), "{list}");
        assert_eq!(KernelSel::Arm64Debian61.suite(), Some("bookworm"));
        assert_eq!(KernelSel::Arm64Debian61.arch(), Arch::Arm64);
        assert!(KernelSel::Debian510.no_tracepoint_backend().is_some());
        assert!(KernelSel::Debian612.no_tracepoint_backend().is_none());
    }

    #[test]
    fn console_results_are_counted_per_backend() {
        let console = "\
CTSCOPE-VM-BACKEND kprobe start 3.1
test result: ok. 6 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 9.1s
CTSCOPE-VM-RESULT kprobe stats 0
test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out
CTSCOPE-VM-RESULT kprobe drops 101
CTSCOPE-VM-BACKEND kprobe end 50
CTSCOPE-VM-BACKEND tracepoint start 51
test result: ok. 9 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out
CTSCOPE-VM-RESULT tracepoint stats 0
CTSCOPE-VM-DONE
";
        let mut o = Vec::new();
        parse_console("debian-6.1", console, &mut o);
        assert_eq!(o.len(), 2);
        assert_eq!((o[0].passed, o[0].failed, o[0].ignored), (8, 1, 1));
        assert_eq!(o[0].binaries_failed, vec!["drops exited 101".to_owned()]);
        assert_eq!(
            (o[1].backend.as_str(), o[1].passed, o[1].failed),
            ("tracepoint", 9, 0)
        );
    }

    #[test]
    fn a_retried_executable_counts_once_and_is_reported() {
        let console = "\
CTSCOPE-VM-BACKEND tracepoint start 3.1
CTSCOPE-VM-RUN tracepoint trace
test result: FAILED. 4 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out
CTSCOPE-VM-RETRY tracepoint trace 101
test result: ok. 5 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out
CTSCOPE-VM-RESULT tracepoint trace 0
CTSCOPE-VM-RUN tracepoint drops
test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out
CTSCOPE-VM-RETRY tracepoint drops 101
test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out
CTSCOPE-VM-RESULT tracepoint drops 101
CTSCOPE-VM-DONE
";
        let mut o = Vec::new();
        parse_console("debian-6.1", console, &mut o);
        assert_eq!((o[0].passed, o[0].failed, o[0].ignored), (7, 1, 1));
        assert_eq!(
            o[0].retried,
            vec![
                "trace exited 101 (1 failed), then was run again".to_owned(),
                "drops exited 101 (1 failed), then was run again".to_owned(),
            ]
        );
        assert_eq!(o[0].binaries_failed, vec!["drops exited 101".to_owned()]);
    }

    #[test]
    fn a_resumed_boot_adds_to_the_same_backend() {
        let first = "\
CTSCOPE-VM-BACKEND kprobe start 3.1
CTSCOPE-VM-RUN kprobe buckets
test result: ok. 5 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out
CTSCOPE-VM-RESULT kprobe buckets 0
CTSCOPE-VM-RUN kprobe cli
test a ... ok
[  120.971271] Code: 48 8b 54 24 08 66 <90> 48 89 df
[  120.900000] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI
[  120.900001] CPU: 1 UID: 0 PID: 0 Comm: swapper/1 Not tainted 6.12.117+deb12-amd64 #1
[  120.900002] RIP: 0010:sk_skb_reason_drop+0x20/0x100
[  120.971503] Kernel panic - not syncing: Fatal exception in interrupt
";
        let p = find_panic(first).expect("a panic");
        assert_eq!(p.at.as_deref(), Some("kprobe/cli"));
        assert_eq!(
            p.summary,
            vec![
                "Oops: int3: 0000 [#1] PREEMPT SMP NOPTI".to_owned(),
                "CPU: 1 UID: 0 PID: 0 Comm: swapper/1 Not tainted 6.12.117+deb12-amd64 #1"
                    .to_owned(),
                "RIP: 0010:sk_skb_reason_drop+0x20/0x100".to_owned(),
                "Kernel panic - not syncing: Fatal exception in interrupt".to_owned(),
            ]
        );
        let second = "\
CTSCOPE-VM-BACKEND kprobe start 2.0
CTSCOPE-VM-RUN kprobe cli
test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out
CTSCOPE-VM-RESULT kprobe cli 0
CTSCOPE-VM-BACKEND kprobe end 9
CTSCOPE-VM-DONE
";
        assert_eq!(find_panic(second), None);
        let mut o = Vec::new();
        parse_console("debian-6.12", first, &mut o);
        parse_console("debian-6.12", second, &mut o);
        assert_eq!(o.len(), 1);
        assert_eq!((o[0].passed, o[0].failed, o[0].ignored), (8, 0, 1));
    }

    #[test]
    fn executables_that_need_more_cpus_boot_on_their_own() {
        let plan = boot_plan(&["buckets", "cpus", "drops"], |_| true);
        assert_eq!(
            plan,
            vec![
                Boot {
                    vcpus: VCPUS,
                    only: None,
                    skip: vec!["cpus".to_owned()],
                },
                Boot {
                    vcpus: 4,
                    only: Some("cpus".to_owned()),
                    skip: Vec::new(),
                },
            ]
        );
        // A filter that only the multi-CPU test matches boots once.
        let plan = boot_plan(&["buckets", "cpus", "drops"], |t| t == "cpus");
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].vcpus, 4);
        assert!(boot_plan(&["buckets"], |_| false).is_empty());
    }

    #[test]
    fn test_executables_come_from_cargo_messages() {
        let msgs = r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"ctscope_integration"},"profile":{"test":true},"executable":"/x/deps/ctscope_integration-1"}
{"reason":"compiler-artifact","target":{"kind":["test"],"name":"stats"},"profile":{"test":true},"executable":"/x/deps/stats-2"}
{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"anyhow"},"profile":{"test":false},"executable":null}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            test_executables(msgs),
            vec![("stats".to_owned(), PathBuf::from("/x/deps/stats-2"))]
        );
    }
}
