//! What an arm64 guest runs: the aarch64 static ctscope of `cargo xtask
//! dist`, the integration tests cross-built the same way (static musl, zig
//! as the linker), and busybox, the tools the tests drive and their
//! libraries from Debian bookworm's arm64 packages.
//!
//! The packages come through the private apt configuration of kernel.rs
//! (architecture arm64; the machine's sources and dpkg architectures are
//! never touched) and are unpacked once under
//! target/vm/userland-bookworm-arm64/.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use super::{Arch, KernelSel, TOOLS, initrd::Built, initrd::build_tests, kernel, sh, which};
use crate::{dist, provision};

const TRIPLE: &str = "aarch64-unknown-linux-musl";

/// The Debian packages of the guest's userland: busybox and the packages
/// of [`TOOLS`] (`sysctl` is procps'), with their dependencies.
const PACKAGES: [&str; 7] = [
    "busybox-static",
    "iproute2",
    "nftables",
    "conntrack",
    "bpftool",
    "kmod",
    "procps",
];

/// Builds ctscope and the test executables for aarch64 and fetches the
/// userland. Without `filter` only the executable of the kernel's default
/// test is built (the guest runs nothing else).
pub(super) fn build(root: &Path, filter: Option<&str>) -> Result<Built> {
    let started = Instant::now();
    provision::dist_tools(root, &[TRIPLE])?;
    let ctscope = dist::build(root, TRIPLE)?;
    let mut cmd = dist::zig_cargo(root, "zigbuild", TRIPLE);
    cmd.args(["--package", "ctscope-integration"]);
    match (filter, KernelSel::Arm64Debian61.default_test()) {
        (None, Some((exe, _))) => cmd.args(["--test", exe]),
        _ => cmd.arg("--tests"),
    };
    let tests = build_tests(cmd, "the integration tests for aarch64")?;
    let built = Built {
        ctscope,
        tests,
        userland: Some(userland(root)?),
        runner: which("qemu-aarch64-static").or_else(|| which("qemu-aarch64")),
    };
    eprintln!(
        "xtask: aarch64 ctscope, tests and userland ready in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(built)
}

/// The unpacked arm64 packages (fetched on first use).
fn userland(root: &Path) -> Result<PathBuf> {
    let dir = root.join("target/vm/userland-bookworm-arm64");
    let tree = dir.join("root");
    if tree.join("bin/busybox").is_file() {
        return Ok(tree);
    }
    let apt = kernel::private_apt(root, "bookworm", Arch::Arm64)?;
    let lists = root.join("target/vm/apt-bookworm-arm64/lists");
    let has_lists = fs::read_dir(&lists)
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with("_Packages"))
        })
        .unwrap_or(false);
    if !has_lists {
        sh(
            Command::new("apt-get").args(&apt).args(["update", "-qq"]),
            "fetching bookworm's arm64 package lists",
        )?;
    }
    // Every package the tools need, dependencies of dependencies included
    // (the private status file says nothing is installed).
    let out = Command::new("apt-cache")
        .args(&apt)
        .args(["depends", "--recurse", "--no-recommends", "--no-suggests"])
        .args([
            "--no-conflicts",
            "--no-breaks",
            "--no-replaces",
            "--no-enhances",
        ])
        .args(PACKAGES)
        .output()
        .context("running apt-cache depends")?;
    if !out.status.success() {
        bail!(
            "apt-cache depends failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut names = package_names(&String::from_utf8_lossy(&out.stdout));
    names.sort();
    names.dedup();
    let debs = dir.join("debs");
    let partial = dir.join("root.partial");
    let _ = fs::remove_dir_all(&debs);
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&debs)?;
    eprintln!(
        "xtask: downloading {} arm64 packages for the guest's userland",
        names.len()
    );
    sh(
        Command::new("apt-get")
            .args(&apt)
            .args(["download", "-q"])
            .args(&names)
            .current_dir(&debs),
        "apt-get download (arm64)",
    )?;
    for deb in fs::read_dir(&debs)?.flatten().map(|e| e.path()) {
        sh(
            Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial),
            "unpacking an arm64 package",
        )?;
    }
    fs::rename(&partial, &tree)?;
    let _ = fs::remove_dir_all(&debs);
    Ok(tree)
}

/// The package names of `apt-cache depends --recurse` (its unindented
/// lines), virtual packages (`<name>`) left out.
fn package_names(depends: &str) -> Vec<String> {
    depends
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with('<') && !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
        .collect()
}

/// Copies busybox, [`TOOLS`] and every shared library of the unpacked
/// packages (with the dynamic loader) into the initramfs `stage`.
pub(super) fn copy_userland(userland: &Path, stage: &Path) -> Result<()> {
    fs::copy(userland.join("bin/busybox"), stage.join("bin/busybox"))
        .context("copying the arm64 busybox")?;
    for tool in TOOLS {
        // The program itself, not a link to it: the packages' links are
        // absolute (/sbin/ip -> /bin/ip), and would lead to this machine's.
        let path = ["sbin", "bin", "usr/sbin", "usr/bin"]
            .iter()
            .map(|d| userland.join(d).join(tool))
            .find(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
            .with_context(|| format!("no `{tool}` in the arm64 packages"))?;
        fs::copy(&path, stage.join("sbin").join(tool))
            .with_context(|| format!("copying {}", path.display()))?;
    }
    // The loader where the programs look for it, and the libraries where
    // it searches by default (no ld.so.cache in the guest).
    let libdir = stage.join("lib/aarch64-linux-gnu");
    fs::create_dir_all(&libdir)?;
    sh(
        Command::new("sh")
            .arg("-c")
            .arg(
                "cp -a \"$1\"/lib/ld-linux-aarch64.so.1 \"$2\"/lib/ && \
                 for d in \"$1\"/lib/aarch64-linux-gnu \"$1\"/usr/lib/aarch64-linux-gnu; do \
                   for f in \"$d\"/*.so*; do [ -e \"$f\" ] && cp -a \"$f\" \"$2\"/lib/aarch64-linux-gnu/; done; \
                 done; true",
            )
            .arg("sh")
            .arg(userland)
            .arg(stage),
        "copying the arm64 libraries",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recursive_depends_lists_packages_not_their_dependency_lines() {
        let out = "nftables\n  Depends: libc6\n  Depends: <libnftables1>\nlibc6\n  Depends: libgcc-s1\n<debconf-2.0>\nlibgcc-s1\n";
        assert_eq!(package_names(out), ["nftables", "libc6", "libgcc-s1"]);
    }
}
