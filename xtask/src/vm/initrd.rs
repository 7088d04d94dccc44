//! The guest's initramfs: busybox, the tools the tests drive, the conntrack
//! modules, ctscope and the test binaries, and an init script that runs them.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use super::{Arch, Image, MISSING_TOOLS, MODULES, TOOLS, arm64, sh, which};

/// The release binary and the integration test executables.
pub(super) struct Built {
    pub(super) ctscope: PathBuf,
    pub(super) tests: Vec<(String, PathBuf)>,
    /// For another CPU than this machine's: the unpacked Debian packages
    /// busybox, the tools and their libraries come from (arm64.rs), and the
    /// qemu-user that runs its executables here, if installed. `None`: this
    /// machine's own.
    pub(super) userland: Option<PathBuf>,
    pub(super) runner: Option<PathBuf>,
}

pub(super) fn build(root: &Path) -> Result<Built> {
    crate::build_release()?;
    let mut cmd = Command::new("cargo");
    cmd.args(["test", "--no-run", "--package", "ctscope-integration"]);
    Ok(Built {
        ctscope: root.join("target/release/ctscope"),
        tests: build_tests(cmd, "the integration tests")?,
        userland: None,
        runner: None,
    })
}

/// Runs `cmd`, a cargo build of the integration tests, with JSON messages
/// and returns the test executables it reported (at least one).
pub(super) fn build_tests(mut cmd: Command, what: &str) -> Result<Vec<(String, PathBuf)>> {
    let out = cmd
        .arg("--message-format=json")
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("building {what}"))?;
    if !out.status.success() {
        bail!("building {what} failed");
    }
    let tests = test_executables(&String::from_utf8_lossy(&out.stdout));
    if tests.is_empty() {
        bail!("cargo reported no executables for {what}");
    }
    Ok(tests)
}

/// (test target name, executable) of every test target in cargo's JSON
/// messages, the library's own unit-test harness excluded.
pub(super) fn test_executables(messages: &str) -> Vec<(String, PathBuf)> {
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

pub(super) fn build_initrd(
    root: &Path,
    image: &Image,
    built: &Built,
    filter: Option<&str>,
    backends: &[&str],
) -> Result<PathBuf> {
    let stage = image.dir.join("initrd");
    let _ = fs::remove_dir_all(&stage);
    for d in [
        "bin", "sbin", "proc", "sys", "dev", "run", "tmp", "etc", "t", "var",
    ] {
        fs::create_dir_all(stage.join(d))?;
    }
    std::os::unix::fs::symlink("../run", stage.join("var/run"))?;
    fs::write(stage.join("etc/passwd"), "root:x:0:0::/:/bin/sh\n")?;

    let mut libs = BTreeSet::new();
    match &built.userland {
        // Another CPU's: the unpacked packages' programs and every library
        // they ship (ctscope and the tests are static there).
        Some(userland) => arm64::copy_userland(userland, &stage)?,
        None => {
            let busybox = which("busybox").context("busybox is not installed")?;
            fs::copy(&busybox, stage.join("bin/busybox"))?;
            for tool in TOOLS {
                let Some(path) = which(tool) else {
                    bail!(
                        "`{tool}` is not installed on this machine; `cargo xtask provision` installs it"
                    );
                };
                fs::copy(&path, stage.join("sbin").join(tool))?;
                libs.extend(libraries(&path)?);
            }
            libs.extend(libraries(&built.ctscope)?);
            for (_, exe) in &built.tests {
                libs.extend(libraries(exe)?);
            }
        }
    }
    for link in ["modprobe", "insmod", "lsmod", "depmod"] {
        std::os::unix::fs::symlink("kmod", stage.join("sbin").join(link))?;
    }
    copy_stripped(&built.ctscope, &stage.join("t/ctscope"))?;
    for (name, exe) in &built.tests {
        copy_stripped(exe, &stage.join("t").join(name))?;
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
        init_script(&image.release, image.arch, &tests, filter, backends),
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
pub(super) fn copy_tree(from: &Path, stage: &Path) -> Result<()> {
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

pub(super) fn set_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Copies without debug info: the guest holds the initramfs in its RAM.
pub(super) fn copy_stripped(from: &Path, to: &Path) -> Result<()> {
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
pub(super) fn libraries(exe: &Path) -> Result<Vec<PathBuf>> {
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
pub(super) fn copy_modules(image: &Image, stage: &Path) -> Result<()> {
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
pub(super) fn init_script(
    release: &str,
    arch: Arch,
    tests: &[&str],
    filter: Option<&str>,
    backends: &[&str],
) -> String {
    let backends = backends.join(" ");
    let filter = filter.unwrap_or_default();
    // The tests' waits, stretched for a guest emulating another CPU
    // (tests/src/lib.rs, CTSCOPE_TEST_SLOWDOWN): ctscope takes about a
    // minute to attach there.
    let slowdown = match arch {
        Arch::Amd64 => 1,
        Arch::Arm64 => 8,
    };
    let modules = MODULES.join(" ");
    let tests = tests.join(" ");
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# /tmp stays on the initramfs (already in memory): the tests' docs/ and
# deploy/ are there when the tree was built under /tmp.
mount -t tmpfs run /run
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
ip link set lo up
echo "CTSCOPE-VM-KERNEL $(uname -r) (packaged {release}) cpus=$(nproc)"
for m in {modules}; do modprobe $m || echo "CTSCOPE-VM-MODPROBE-FAILED $m"; done
export CTSCOPE_BIN=/t/ctscope CTSCOPE_VM_MISSING_TOOLS={MISSING_TOOLS} RUST_BACKTRACE=1
export CTSCOPE_TEST_SLOWDOWN={slowdown}
# After a guest kernel panic the harness boots again with
# ctscope.resume=BACKEND/TEST: skip what ran before that executable.
resume=$(sed -n 's/.*ctscope\.resume=\([^ ]*\).*/\1/p' /proc/cmdline)
# Which executables this boot runs, and with how many vCPUs it was
# started (the harness boots executables that need more CPUs on their own;
# mod.rs, MORE_VCPUS).
only=$(sed -n 's/.*ctscope\.only=\([^ ]*\).*/\1/p' /proc/cmdline)
skip=$(sed -n 's/.*ctscope\.skip=\([^ ]*\).*/\1/p' /proc/cmdline)
export CTSCOPE_VM_VCPUS=$(sed -n 's/.*ctscope\.vcpus=\([^ ]*\).*/\1/p' /proc/cmdline)
for backend in {backends}; do
  export CTSCOPE_BACKEND=$backend
  echo "CTSCOPE-VM-BACKEND $backend start $(cut -d' ' -f1 /proc/uptime)"
  for t in {tests}; do
    case ",$skip," in *",$t,"*) continue ;; esac
    [ -z "$only" ] || [ "$only" = "$t" ] || continue
    if [ -n "$resume" ]; then
      [ "$resume" = "$backend/$t" ] || continue
      resume=
    fi
    echo "CTSCOPE-VM-RUN $backend $t"
    /t/$t --test-threads=1 {filter} 2>&1
    rc=$?
    # Under emulation the guest runs some fifty times slower than the host,
    # which opens races in test set-ups that real machines do not see. A
    # failed executable runs once more; the harness reports the first
    # failure either way, and a second failure fails the run.
    if [ $rc -ne 0 ]; then
      echo "CTSCOPE-VM-RETRY $backend $t $rc"
      /t/$t --test-threads=1 {filter} 2>&1
      rc=$?
    fi
    echo "CTSCOPE-VM-RESULT $backend $t $rc"
  done
  echo "CTSCOPE-VM-BACKEND $backend end $(cut -d' ' -f1 /proc/uptime)"
done
echo CTSCOPE-VM-DONE
poweroff -f
"#
    )
}
