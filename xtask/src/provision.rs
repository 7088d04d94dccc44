//! Installs what building and testing ctscope needs, only when missing.
//!
//! The recipe is the one verified in ../shared/platform.md: nightly's
//! rust-src for `-Z build-std=core`, and bpf-linker 0.13 built against
//! Debian's LLVM 22 (the LLVM of nightly rustc 1.97).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// Debian packages bpf-linker links against.
const LLVM_PACKAGES: [&str; 4] = [
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];
/// Debian packages the integration tests drive: nft rules in namespaces,
/// `conntrack -L/-S` as ground truth, `ip netns`, tmux for the TUI test,
/// bpftool to check that nothing stays attached, a real Prometheus to scrape
/// `ctscope serve`, podman to build and run the container image (with runc:
/// crun refuses hosts whose cgroup v2 hierarchy holds controllers next to
/// v1, as this build machine's does).
const TEST_PACKAGES: [(&str, &str); 10] = [
    ("nft", "nftables"),
    ("conntrack", "conntrack"),
    ("ip", "iproute2"),
    ("tmux", "tmux"),
    ("bpftool", "bpftool"),
    ("prometheus", "prometheus"),
    ("podman", "podman"),
    ("runc", "runc"),
    // tests/tests/dist.rs: the aarch64 binary under qemu-user, and `file`'s
    // word on its linkage.
    ("qemu-aarch64-static", "qemu-user-static"),
    ("file", "file"),
];
const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    eprintln!("xtask: {what}");
    let status = cmd
        .status()
        .with_context(|| format!("{what}: could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// `apt-get install` of the packages not yet installed.
pub fn apt_install(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages: {}. Install them with `sudo apt-get install -y {}`, \
             or run this as root",
            missing.join(" "),
            missing.join(" ")
        );
    }
    // A fresh machine may never have fetched the package lists.
    run(
        Command::new("apt-get").args(["update", "-qq"]),
        "refreshing the Debian package lists",
    )?;
    run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &format!("installing {}", missing.join(" ")),
    )
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Nightly with rust-src, and bpf-linker against LLVM 22.
pub fn toolchain() -> Result<()> {
    if !succeeds(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        run(
            Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
            ]),
            "installing the nightly toolchain (the eBPF programs need -Z build-std)",
        )?;
    }
    let components = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .context("listing nightly's components")?;
    if !String::from_utf8_lossy(&components.stdout).contains("rust-src") {
        run(
            Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
            "adding rust-src to nightly",
        )?;
    }
    if bpf_linker_ok() {
        return Ok(());
    }
    apt_install(&LLVM_PACKAGES)?;
    run(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .env(
                "PATH",
                format!(
                    "/usr/lib/llvm-22/bin:{}",
                    std::env::var("PATH").unwrap_or_default()
                ),
            ),
        "building bpf-linker against LLVM 22 (about 3 minutes, once)",
    )
}

fn bpf_linker_ok() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
        })
}

/// Tools the integration tests use.
pub fn test_tools() -> Result<()> {
    let missing: Vec<&str> = TEST_PACKAGES
        .iter()
        .filter(|(bin, _)| !succeeds(Command::new("sh").args(["-c", &format!("command -v {bin}")])))
        .map(|(_, pkg)| *pkg)
        .collect();
    apt_install(&missing)
}

/// What `cargo xtask dist` cross-links with: cargo-zigbuild drives `zig cc`
/// as the linker and C compiler (zstd-sys is C) for both musl targets, with
/// zig's own musl headers and libc, so no per-arch cross gcc is needed.
const CARGO_ZIGBUILD_VERSION: &str = "0.24.1";
/// The zig toolchain, from PyPI's `ziglang` wheel.
pub const ZIGLANG_VERSION: &str = "0.17.1";

/// Where the pinned `ziglang` package is installed (`pip install --target`):
/// private to the project, so it neither needs nor touches the machine's
/// Python site-packages (which Debian's Python refuses to let pip change).
/// Put it on `PYTHONPATH`; cargo-zigbuild runs `python3 -m ziglang`.
pub fn ziglang_dir(root: &Path) -> PathBuf {
    root.join("target/tools/ziglang").join(ZIGLANG_VERSION)
}

/// The rustup targets, zig and cargo-zigbuild for `cargo xtask dist`.
pub fn dist_tools(root: &Path, targets: &[&str]) -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("listing rustup's installed targets")?;
    let installed = String::from_utf8_lossy(&installed.stdout);
    let missing: Vec<&str> = targets
        .iter()
        .copied()
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect();
    if !missing.is_empty() {
        run(
            Command::new("rustup")
                .args(["target", "add"])
                .args(&missing),
            &format!("adding the Rust targets {}", missing.join(" ")),
        )?;
    }

    let zig = ziglang_dir(root);
    let zig_ok = Command::new("python3")
        .args(["-m", "ziglang", "version"])
        .env("PYTHONPATH", &zig)
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == ZIGLANG_VERSION
        });
    if !zig_ok {
        pip_install_target(
            &zig,
            &format!("ziglang=={ZIGLANG_VERSION}"),
            &format!("installing zig {ZIGLANG_VERSION} (PyPI ziglang) under target/tools"),
        )?;
    }

    let zigbuild_ok = Command::new("cargo-zigbuild")
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains(CARGO_ZIGBUILD_VERSION)
        });
    if !zigbuild_ok {
        run(
            Command::new("cargo").args([
                "install",
                "cargo-zigbuild",
                "--locked",
                "--version",
                CARGO_ZIGBUILD_VERSION,
            ]),
            "installing cargo-zigbuild (about 2 minutes, once)",
        )?;
    }
    Ok(())
}

/// `pip install --target dir spec`: a PyPI package private to the project.
fn pip_install_target(dir: &Path, spec: &str, what: &str) -> Result<()> {
    if !succeeds(Command::new("python3").args(["-m", "pip", "--version"])) {
        apt_install(&["python3-pip"])?;
    }
    run(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(["--upgrade", "--target"])
            .arg(dir)
            .arg(spec),
        what,
    )
}

/// The Kubernetes schema validator the deploy tests run on
/// deploy/kubernetes/ (PyPI `kubernetes-validate`: the API's OpenAPI schemas
/// for every release, offline).
pub const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

/// Where it is installed, as zig is: put it on `PYTHONPATH` and run
/// `python3 -m kubernetes_validate`. tests/tests/deploy.rs looks here.
pub fn kubernetes_validate_dir(root: &Path) -> PathBuf {
    root.join("target/tools/kubernetes-validate")
        .join(KUBERNETES_VALIDATE_VERSION)
}

/// Installs kubernetes-validate under target/tools when missing.
pub fn manifest_tools(root: &Path) -> Result<()> {
    let dir = kubernetes_validate_dir(root);
    let ok = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--version"])
        .env("PYTHONPATH", &dir)
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains(KUBERNETES_VALIDATE_VERSION)
        });
    if ok {
        return Ok(());
    }
    pip_install_target(
        &dir,
        &format!("kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"),
        &format!(
            "installing kubernetes-validate {KUBERNETES_VALIDATE_VERSION} (PyPI) under target/tools"
        ),
    )
}
