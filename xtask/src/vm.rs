//! `cargo xtask vm-test`: the integration suite on stock Debian kernels, in
//! qemu under software emulation (../shared/platform.md: guests crash under
//! KVM on these machines).
//!
//! For each kernel: fetch its package with `apt-get download` (cached under
//! target/vm/), build an initramfs with busybox, the tools the tests drive
//! and their libraries, the conntrack modules, the release `ctscope` and the
//! integration test executables, boot it, and run the suite once per
//! backend. The guest prints markers on the serial console; this side reads
//! them and reports pass/fail per kernel and backend.

use std::{
    collections::BTreeSet,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// A stock kernel the suite runs on, found by package name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelSel {
    /// Debian 12's own kernel (linux-image-6.1.0-N-amd64).
    #[value(name = "debian-6.1")]
    Debian61,
    /// Debian 12's backports kernel (linux-image-6.12.N+deb12-amd64).
    #[value(name = "debian-6.12")]
    Debian612,
    /// Every kernel above.
    All,
}

impl KernelSel {
    fn expand(self) -> Vec<Self> {
        match self {
            Self::All => vec![Self::Debian61, Self::Debian612],
            k => vec![k],
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Debian61 => "debian-6.1",
            Self::Debian612 => "debian-6.12",
            Self::All => "all",
        }
    }

    /// `apt-cache search --names-only` pattern of the image package.
    fn package_pattern(self) -> &'static str {
        match self {
            Self::Debian61 => r"^linux-image-6\.1\.0-[0-9]+-amd64$",
            Self::Debian612 | Self::All => r"^linux-image-6\.12\.[0-9]+\+deb12-amd64$",
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
const MODULES: [&str; 8] = [
    "crc32c_generic",
    "nf_defrag_ipv4",
    "nf_defrag_ipv6",
    "nfnetlink",
    "nf_conntrack",
    "nf_conntrack_netlink",
    "nf_tables",
    "nft_ct",
];

/// Host programs copied into the guest with their libraries. The tests drive
/// `ip`, `nft`, `conntrack`, `sysctl` and `bpftool`; `kmod` loads modules.
const TOOLS: [&str; 6] = ["ip", "nft", "conntrack", "bpftool", "kmod", "sysctl"];
/// Tools the tests use that the guest does not have; tests that need them
/// skip themselves when `CTSCOPE_VM_MISSING_TOOLS` names them.
const MISSING_TOOLS: &str = "tmux,prometheus,promtool";

/// One (kernel, backend) outcome.
struct Outcome {
    kernel: String,
    backend: String,
    passed: u64,
    failed: u64,
    ignored: u64,
    binaries_failed: Vec<String>,
}

pub fn run(root: &Path, opts: &VmOptions) -> Result<()> {
    for tool in ["qemu-system-x86_64", "busybox", "cpio"] {
        if !on_path(tool) {
            crate::provision::apt_install(&["qemu-system-x86", "busybox-static", "cpio", "kmod"])?;
            break;
        }
    }
    let tests = build(root)?;
    let mut outcomes = Vec::new();
    let mut timings = Vec::new();
    for kernel in opts.kernel.expand() {
        let started = Instant::now();
        let image = fetch_kernel(root, kernel)?;
        let initrd = build_initrd(root, &image, &tests, opts)?;
        let prepared = started.elapsed();
        let log = image.dir.join("console.log");
        let boot = Instant::now();
        let console = boot_and_run(&image, &initrd, &log, opts.timeout_min)?;
        let ran = boot.elapsed();
        outcomes.extend(parse_console(kernel.label(), &console));
        timings.push((kernel.label(), image.release.clone(), prepared, ran));
        if !console.contains("CTSCOPE-VM-DONE") {
            outcomes.push(Outcome {
                kernel: kernel.label().to_owned(),
                backend: "-".into(),
                passed: 0,
                failed: 1,
                ignored: 0,
                binaries_failed: vec![format!("the guest did not finish (see {})", log.display())],
            });
        }
    }
    eprintln!("\nvm-test summary");
    for (label, release, prepared, ran) in &timings {
        eprintln!(
            "  {label} ({release}): prepared in {:.0} s, booted and tested in {:.0} s",
            prepared.as_secs_f64(),
            ran.as_secs_f64()
        );
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
    }
    let total_pass: u64 = outcomes.iter().map(|o| o.passed).sum();
    let total_fail: u64 = outcomes.iter().map(|o| o.failed).sum();
    println!("vm-test: {total_pass} passed, {total_fail} failed");
    if failed || outcomes.is_empty() {
        bail!("the integration suite failed in a VM");
    }
    Ok(())
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

/// The release binary and the integration test executables.
struct Built {
    ctscope: PathBuf,
    tests: Vec<(String, PathBuf)>,
}

fn build(root: &Path) -> Result<Built> {
    crate::build_release()?;
    let out = Command::new("cargo")
        .args([
            "test",
            "--no-run",
            "--package",
            "ctscope-integration",
            "--message-format=json",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("building the integration tests")?;
    if !out.status.success() {
        bail!("building the integration tests failed");
    }
    let tests = test_executables(&String::from_utf8_lossy(&out.stdout));
    if tests.is_empty() {
        bail!("cargo reported no integration test executables");
    }
    Ok(Built {
        ctscope: root.join("target/release/ctscope"),
        tests,
    })
}

/// (test target name, executable) of every test target in cargo's JSON
/// messages, the library's own unit-test harness excluded.
fn test_executables(messages: &str) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for line in messages.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact" || !v["profile"]["test"].as_bool().unwrap_or(false) {
            continue;
        }
        let kinds = v["target"]["kind"].as_array().cloned().unwrap_or_default();
        if !kinds.iter().any(|k| k == "test") {
            continue;
        }
        if let (Some(name), Some(exe)) = (v["target"]["name"].as_str(), v["executable"].as_str()) {
            out.push((name.to_owned(), PathBuf::from(exe)));
        }
    }
    out.sort();
    out
}

/// An unpacked kernel package.
struct Image {
    dir: PathBuf,
    tree: PathBuf,
    release: String,
}

fn fetch_kernel(root: &Path, kernel: KernelSel) -> Result<Image> {
    let package = newest_package(kernel)?;
    let dir = root.join("target/vm").join(&package);
    let tree = dir.join("root");
    if !tree.join("boot").exists() {
        fs::create_dir_all(&dir)?;
        eprintln!("xtask: downloading {package}");
        sh(
            Command::new("apt-get")
                .args(["download", "-q", &package])
                .current_dir(&dir),
            "apt-get download",
        )?;
        let deb = fs::read_dir(&dir)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .context("apt-get download left no .deb")?;
        let partial = dir.join("root.partial");
        let _ = fs::remove_dir_all(&partial);
        sh(
            Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial),
            "unpacking the kernel package",
        )?;
        fs::rename(&partial, &tree)?;
        let _ = fs::remove_file(&deb);
    }
    let release = fs::read_dir(tree.join("lib/modules"))?
        .flatten()
        .find_map(|e| e.file_name().to_str().map(str::to_owned))
        .context("the kernel package has no lib/modules/<release>")?;
    Ok(Image { dir, tree, release })
}

/// The newest image package matching the kernel's pattern.
fn newest_package(kernel: KernelSel) -> Result<String> {
    let search = || -> Result<Vec<String>> {
        let out = Command::new("apt-cache")
            .args(["search", "--names-only", kernel.package_pattern()])
            .output()
            .context("running apt-cache search")?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect())
    };
    let mut names = search()?;
    if names.is_empty() {
        sh(
            Command::new("apt-get").args(["update", "-qq"]),
            "refreshing the Debian package lists",
        )?;
        names = search()?;
    }
    names.sort_by(|a, b| version_cmp(a, b));
    names.pop().with_context(|| {
        format!(
            "no Debian package matches {} (is bookworm-backports in the apt sources?)",
            kernel.package_pattern()
        )
    })
}

/// Orders names by their numeric runs, so 6.1.0-9 < 6.1.0-10.
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(s: &str) -> Vec<Result<u64, String>> {
        let mut out = Vec::new();
        let mut cur = String::new();
        let mut digits = false;
        for c in s.chars() {
            if c.is_ascii_digit() != digits && !cur.is_empty() {
                out.push(if digits {
                    Ok(cur.parse().unwrap_or(u64::MAX))
                } else {
                    Err(cur.clone())
                });
                cur.clear();
            }
            digits = c.is_ascii_digit();
            cur.push(c);
        }
        if !cur.is_empty() {
            out.push(if digits {
                Ok(cur.parse().unwrap_or(u64::MAX))
            } else {
                Err(cur)
            });
        }
        out
    }
    parts(a).cmp(&parts(b))
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

fn build_initrd(root: &Path, image: &Image, built: &Built, opts: &VmOptions) -> Result<PathBuf> {
    let stage = image.dir.join("initrd");
    let _ = fs::remove_dir_all(&stage);
    for d in [
        "bin", "sbin", "proc", "sys", "dev", "run", "tmp", "etc", "t", "var",
    ] {
        fs::create_dir_all(stage.join(d))?;
    }
    std::os::unix::fs::symlink("../run", stage.join("var/run"))?;
    fs::write(stage.join("etc/passwd"), "root:x:0:0::/:/bin/sh\n")?;

    let busybox = which("busybox").context("busybox is not installed")?;
    fs::copy(&busybox, stage.join("bin/busybox"))?;
    let mut libs = BTreeSet::new();
    for tool in TOOLS {
        let Some(path) = which(tool) else {
            bail!("`{tool}` is not installed on this machine; `cargo xtask provision` installs it");
        };
        fs::copy(&path, stage.join("sbin").join(tool))?;
        libs.extend(libraries(&path)?);
    }
    for link in ["modprobe", "insmod", "lsmod", "depmod"] {
        std::os::unix::fs::symlink("kmod", stage.join("sbin").join(link))?;
    }
    copy_stripped(&built.ctscope, &stage.join("t/ctscope"))?;
    libs.extend(libraries(&built.ctscope)?);
    for (name, exe) in &built.tests {
        copy_stripped(exe, &stage.join("t").join(name))?;
        libs.extend(libraries(exe)?);
    }
    for lib in libs {
        let dest = stage.join(lib.strip_prefix("/").unwrap_or(&lib));
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::copy(&lib, &dest).with_context(|| format!("copying {}", lib.display()))?;
    }
    // The tests read docs/ (schemas) and deploy/ (manifests) at the paths
    // they were built with, spelt <root>/tests/../docs, so tests/ must exist
    // too.
    let tests_dir = root.join("tests");
    fs::create_dir_all(stage.join(tests_dir.strip_prefix("/").unwrap_or(&tests_dir)))?;
    for dir in ["docs", "deploy"] {
        copy_tree(&root.join(dir), &stage)?;
    }
    copy_modules(image, &stage)?;
    let tests: Vec<&str> = built.tests.iter().map(|(n, _)| n.as_str()).collect();
    fs::write(
        stage.join("init"),
        init_script(&image.release, &tests, opts),
    )?;
    set_executable(&stage.join("init"))?;

    let cpio = image.dir.join("initrd.cpio");
    let file = fs::File::create(&cpio)?;
    let status = Command::new("sh")
        .args(["-c", "find . -print0 | cpio --null -o -H newc --quiet"])
        .current_dir(&stage)
        .stdout(file)
        .status()
        .context("running cpio")?;
    if !status.success() {
        bail!("building the initramfs with cpio failed");
    }
    Ok(cpio)
}

/// Copies a directory tree to the same absolute path under `stage`.
fn copy_tree(from: &Path, stage: &Path) -> Result<()> {
    let to = stage.join(from.strip_prefix("/").unwrap_or(from));
    fs::create_dir_all(&to)?;
    for entry in fs::read_dir(from)?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            copy_tree(&path, stage)?;
        } else {
            fs::copy(&path, to.join(entry.file_name()))
                .with_context(|| format!("copying {}", path.display()))?;
        }
    }
    Ok(())
}

fn set_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Copies without debug info: the guest holds the initramfs in its RAM.
fn copy_stripped(from: &Path, to: &Path) -> Result<()> {
    let status = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(to)
        .arg(from)
        .status();
    if !status.is_ok_and(|s| s.success()) {
        fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    }
    Ok(())
}

/// Shared libraries of an executable, from `ldd`.
fn libraries(exe: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(exe)
        .output()
        .context("running ldd")?;
    let mut libs = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// Copies the modules the tests need, with their dependencies, and indexes
/// them with depmod.
fn copy_modules(image: &Image, stage: &Path) -> Result<()> {
    let release = &image.release;
    sh(
        Command::new("depmod")
            .arg("-b")
            .arg(&image.tree)
            .arg(release),
        "depmod on the unpacked kernel",
    )?;
    let mut files = BTreeSet::new();
    for module in MODULES {
        let out = Command::new("modprobe")
            .arg("-d")
            .arg(&image.tree)
            .args(["-S", release, "--show-depends", module])
            .output()
            .context("running modprobe --show-depends")?;
        if !out.status.success() {
            bail!(
                "module {module} not found in {release}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(path) = line
                .strip_prefix("insmod ")
                .and_then(|r| r.split_whitespace().next())
            {
                files.insert(PathBuf::from(path));
            }
        }
    }
    for file in files {
        let rel = file
            .strip_prefix(&image.tree)
            .with_context(|| format!("{} is outside the kernel tree", file.display()))?;
        let dest = stage.join(rel);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        // Decompressed here: whether the guest's kernel or this machine's
        // kmod can read .ko.xz depends on how each was built.
        if file.extension().is_some_and(|e| e == "xz") {
            let out = fs::File::create(dest.with_extension(""))?;
            let status = Command::new("xz")
                .arg("-dc")
                .arg(&file)
                .stdout(out)
                .status()
                .context("running xz")?;
            if !status.success() {
                bail!("decompressing {} failed", file.display());
            }
        } else {
            fs::copy(&file, &dest)?;
        }
    }
    let moddir = format!("lib/modules/{release}");
    for f in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        let _ = fs::copy(
            image.tree.join(&moddir).join(f),
            stage.join(&moddir).join(f),
        );
    }
    sh(
        Command::new("depmod").arg("-b").arg(stage).arg(release),
        "depmod on the initramfs",
    )
}

/// The guest's /init: mount what the tests use, load the modules, run every
/// test executable once per backend, print markers, power off.
fn init_script(release: &str, tests: &[&str], opts: &VmOptions) -> String {
    let backends = opts.backend.expand().join(" ");
    let filter = opts.filter.clone().unwrap_or_default();
    let modules = MODULES.join(" ");
    let tests = tests.join(" ");
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs run /run
mount -t tmpfs tmp /tmp
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
ip link set lo up
echo "CTSCOPE-VM-KERNEL $(uname -r) (packaged {release}) cpus=$(nproc)"
for m in {modules}; do modprobe $m || echo "CTSCOPE-VM-MODPROBE-FAILED $m"; done
export CTSCOPE_BIN=/t/ctscope CTSCOPE_VM_MISSING_TOOLS={MISSING_TOOLS} RUST_BACKTRACE=1
for backend in {backends}; do
  export CTSCOPE_BACKEND=$backend
  echo "CTSCOPE-VM-BACKEND $backend start $(cut -d' ' -f1 /proc/uptime)"
  for t in {tests}; do
    /t/$t --test-threads=1 {filter} 2>&1
    echo "CTSCOPE-VM-RESULT $backend $t $?"
  done
  echo "CTSCOPE-VM-BACKEND $backend end $(cut -d' ' -f1 /proc/uptime)"
done
echo CTSCOPE-VM-DONE
poweroff -f
"#
    )
}

/// Boots the guest, echoing its console, and returns everything it printed.
fn boot_and_run(image: &Image, initrd: &Path, log: &Path, timeout_min: u64) -> Result<String> {
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
fn parse_console(kernel: &str, console: &str) -> Vec<Outcome> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let o = parse_console("debian-6.1", console);
        assert_eq!(o.len(), 2);
        assert_eq!((o[0].passed, o[0].failed, o[0].ignored), (8, 1, 1));
        assert_eq!(o[0].binaries_failed, vec!["drops exited 101".to_owned()]);
        assert_eq!(
            (o[1].backend.as_str(), o[1].passed, o[1].failed),
            ("tracepoint", 9, 0)
        );
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
