//! Builds the eBPF programs (conntrack-ebpf) for bpfel-unknown-none with the
//! nightly toolchain and bpf-linker, and hands the object to the `ctscope`
//! binary, which embeds it. `cargo xtask build` installs what this needs.
//!
//! The object is bytecode, but not independent of the CPU the binary runs on:
//! the kprobe programs read their arguments from `struct pt_regs`, whose
//! layout aya-ebpf picks with `cfg(bpf_target_arch)` (x86_64 `di`, `si`, ...;
//! aarch64 `regs[0..]`). Left alone, aya-ebpf takes the arch of the machine
//! that *builds*, so a cross-built aarch64 ctscope would read x86_64 register
//! slots. The object is therefore built for the architecture of the binary
//! being built (`CARGO_CFG_TARGET_ARCH`), passed as `AYA_BPF_TARGET_ARCH`.
use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

const SKIP: &str = "CTSCOPE_SKIP_EBPF";

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?);
    let root = manifest
        .parent()
        .context("conntrack-user has no parent directory")?;
    let ebpf_dir = root.join("conntrack-ebpf");
    for path in ["src", "Cargo.toml", "common/src", "common/Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", ebpf_dir.join(path).display());
    }
    println!("cargo:rerun-if-env-changed={SKIP}");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR")?);
    let object = out_dir.join("conntrack.bpf.o");
    let arch = env::var("CARGO_CFG_TARGET_ARCH").context("CARGO_CFG_TARGET_ARCH")?;

    if env::var_os(SKIP).is_some_and(|v| v == "1") {
        println!("cargo:warning={SKIP}=1: building ctscope without its eBPF programs");
        fs::write(&object, [])?;
    } else {
        build(&ebpf_dir, &out_dir, &object, &arch)?;
    }
    let bytes = fs::read(&object)?;
    println!(
        "cargo:rustc-env=CTSCOPE_EBPF_BUILD_ID={:016x}",
        fnv1a(&bytes)
    );
    println!("cargo:rustc-env=CTSCOPE_EBPF_ARCH={arch}");
    println!(
        "cargo:rustc-env=CTSCOPE_TARGET={}",
        env::var("TARGET").context("TARGET")?
    );
    Ok(())
}

fn build(ebpf_dir: &Path, out_dir: &Path, object: &Path, arch: &str) -> anyhow::Result<()> {
    let target_dir = out_dir.join("ebpf-target");
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "build", "--quiet", "--release"])
        .args(["--package", "conntrack-ebpf", "--bin", "conntrack"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(ebpf_dir);
    // BTF lets the kernel verify the callbacks and show source lines in
    // verifier logs; debuginfo is what bpf-linker turns into BTF.
    let mut flags = OsString::from("-Cdebuginfo=2");
    flags.push("\x1f-Clink-arg=--btf");
    // The BTF line info names source files; without this the checkout's
    // path would be part of the object, and so of its build id, and two
    // checkouts of the same commit would report different ids.
    if let Some(root) = ebpf_dir.parent() {
        flags.push("\x1f--remap-path-prefix=");
        flags.push(root);
        flags.push("=.");
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", flags);
    // Read by aya-ebpf's build script (aya-build's emit_bpf_target_arch_cfg);
    // OUT_DIR is per target triple, so each arch keeps its own eBPF build.
    cmd.env("AYA_BPF_TARGET_ARCH", arch);
    // The outer (stable) build's settings must not leak into the nightly one.
    for key in [
        "RUSTC",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "RUSTUP_TOOLCHAIN",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTFLAGS",
    ] {
        cmd.env_remove(key);
    }
    let status = cmd.status().context(
        "could not run `rustup run nightly cargo`; run `cargo xtask build`, which installs the \
         nightly toolchain pieces and bpf-linker",
    )?;
    if !status.success() {
        bail!(
            "building the eBPF programs failed ({status}). If nightly's rust-src or bpf-linker \
             is missing, `cargo xtask build` installs them (see README.md)"
        );
    }
    let built = target_dir.join("bpfel-unknown-none/release/conntrack");
    fs::copy(&built, object)
        .with_context(|| format!("copying {} to {}", built.display(), object.display()))?;
    Ok(())
}

/// A stable, dependency-free fingerprint of the object for `--version`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
