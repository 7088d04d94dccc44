//! `cargo xtask dist`: static, stripped release binaries for x86_64 and
//! aarch64 under target/dist/, with a SHA256SUMS file.
//!
//! Each binary is built with cargo-zigbuild for its `*-unknown-linux-musl`
//! target (musl targets link statically by default; zig is the linker and the
//! C compiler for zstd). conntrack-user's build script builds the eBPF object
//! for the binary's architecture and embeds it, so each file is all a node
//! needs. Before writing SHA256SUMS the binaries are checked: an ELF of the
//! right machine, no program interpreter (static or static-pie), no symbol
//! table (stripped).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::provision;

/// The release targets and the ELF `e_machine` each must carry.
pub const TARGETS: [(&str, u16); 2] = [
    ("x86_64-unknown-linux-musl", EM_X86_64),
    ("aarch64-unknown-linux-musl", EM_AARCH64),
];
const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;

pub fn run(root: &Path) -> Result<()> {
    let start = Instant::now();
    provision::toolchain()?;
    let triples: Vec<&str> = TARGETS.iter().map(|(t, _)| *t).collect();
    provision::dist_tools(root, &triples)?;
    let dist = root.join("target/dist");
    fs::create_dir_all(&dist).with_context(|| format!("creating {}", dist.display()))?;

    let mut names = Vec::new();
    for (triple, machine) in TARGETS {
        let built = build(root, triple)?;
        let name = format!("ctscope-{triple}");
        let out = dist.join(&name);
        fs::copy(&built, &out)
            .with_context(|| format!("copying {} to {}", built.display(), out.display()))?;
        let bytes = fs::read(&out).with_context(|| format!("reading {}", out.display()))?;
        let elf = Elf::parse(&bytes)
            .with_context(|| format!("{} is not an ELF64 file", out.display()))?;
        ensure!(
            elf.machine == machine,
            "{name}: ELF machine {} where {machine} was expected",
            elf.machine
        );
        ensure!(
            !elf.has_interpreter,
            "{name} asks for a dynamic loader (PT_INTERP): it is not statically linked"
        );
        ensure!(
            !elf.has_symtab,
            "{name} still has a symbol table: it is not stripped"
        );
        names.push((name, bytes.len()));
    }

    let sums = Command::new("sha256sum")
        .args(names.iter().map(|(n, _)| n))
        .current_dir(&dist)
        .output()
        .context("running sha256sum")?;
    if !sums.status.success() {
        bail!(
            "sha256sum failed: {}",
            String::from_utf8_lossy(&sums.stderr)
        );
    }
    fs::write(dist.join("SHA256SUMS"), &sums.stdout).context("writing SHA256SUMS")?;

    for (name, size) in &names {
        eprintln!(
            "xtask: target/dist/{name}: {size} bytes ({:.1} MiB), static, stripped",
            *size as f64 / (1024.0 * 1024.0)
        );
    }
    eprintln!(
        "xtask: target/dist/SHA256SUMS written; dist took {:.0} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `cargo-zigbuild SUBCOMMAND --target TRIPLE` (`zigbuild` is `cargo
/// build`; `clippy` is cargo-zigbuild's too), with the settings every build
/// for that target shares.
pub fn zig_cargo(root: &Path, subcommand: &str, triple: &str) -> Command {
    // Strip through the target's own rustflags: with `--target`, these do not
    // reach build scripts and proc macros, so the host artifacts that
    // `cargo xtask build` shares stay fresh. Everything built for the
    // target (the vm-test's cross-built tests too) must use the same flags,
    // or each build would rebuild the other's dependencies.
    let rustflags_var = format!(
        "CARGO_TARGET_{}_RUSTFLAGS",
        triple.to_uppercase().replace('-', "_")
    );
    let mut cmd = Command::new("cargo-zigbuild");
    cmd.args([subcommand, "--target", triple])
        .env(rustflags_var, "-Cstrip=symbols")
        // cargo-zigbuild runs `python3 -m ziglang`: the pinned copy.
        .env("PYTHONPATH", provision::ziglang_dir(root));
    cmd
}

/// One release build of ctscope for `triple` (its Rust target and zig must
/// be installed: [`provision::dist_tools`]); returns the binary's path.
pub fn build(root: &Path, triple: &str) -> Result<PathBuf> {
    let status = zig_cargo(root, "zigbuild", triple)
        .args([
            "--release",
            "--package",
            "conntrack-user",
            "--bin",
            "ctscope",
        ])
        .status()
        .context("running cargo-zigbuild")?;
    if !status.success() {
        bail!("building ctscope for {triple} failed ({status})");
    }
    Ok(root.join("target").join(triple).join("release/ctscope"))
}

/// What the checks need from an ELF64 little-endian header.
#[derive(Debug, PartialEq, Eq)]
struct Elf {
    machine: u16,
    has_interpreter: bool,
    has_symtab: bool,
}

const PT_INTERP: u32 = 3;
const SHT_SYMTAB: u32 = 2;

impl Elf {
    /// Reads the ELF header, the program headers (for PT_INTERP) and the
    /// section headers (for SHT_SYMTAB). `None` when the file is not a
    /// well-formed ELF64 little-endian file.
    fn parse(b: &[u8]) -> Option<Elf> {
        let u16_at = |o: usize| -> Option<u16> {
            Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
        };
        let u32_at = |o: usize| -> Option<u32> {
            Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
        };
        let u64_at = |o: usize| -> Option<usize> {
            usize::try_from(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?)).ok()
        };
        // Magic, ELFCLASS64, ELFDATA2LSB.
        if b.get(0..6)? != b"\x7fELF\x02\x01" {
            return None;
        }
        let machine = u16_at(18)?;
        let (phoff, shoff) = (u64_at(32)?, u64_at(40)?);
        let (phentsize, phnum) = (usize::from(u16_at(54)?), usize::from(u16_at(56)?));
        let (shentsize, shnum) = (usize::from(u16_at(58)?), usize::from(u16_at(60)?));
        let mut has_interpreter = false;
        for i in 0..phnum {
            has_interpreter |= u32_at(phoff.checked_add(i.checked_mul(phentsize)?)?)? == PT_INTERP;
        }
        let mut has_symtab = false;
        for i in 0..shnum {
            let sh = shoff.checked_add(i.checked_mul(shentsize)?)?;
            has_symtab |= u32_at(sh.checked_add(4)?)? == SHT_SYMTAB;
        }
        Some(Elf {
            machine,
            has_interpreter,
            has_symtab,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_unstripped_host_binary_is_recognised_as_such() {
        // The test binary itself: built by cargo for the host (glibc,
        // dynamically linked, with symbols).
        let exe = std::env::current_exe().expect("current_exe");
        let bytes = fs::read(exe).expect("read the test binary");
        let elf = Elf::parse(&bytes).expect("the test binary is ELF64");
        assert!(elf.has_interpreter);
        assert!(elf.has_symtab);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(elf.machine, EM_X86_64);
    }

    #[test]
    fn truncated_or_foreign_files_are_not_elf() {
        assert_eq!(Elf::parse(b""), None);
        assert_eq!(Elf::parse(b"#!/bin/sh\n"), None);
        // A valid start whose header is cut short.
        assert_eq!(Elf::parse(b"\x7fELF\x02\x01\x01\x00"), None);
        // 32-bit ELF is not what dist builds.
        let mut b = vec![0u8; 64];
        b[..6].copy_from_slice(b"\x7fELF\x01\x01");
        assert_eq!(Elf::parse(&b), None);
    }

    #[test]
    fn a_header_with_no_program_or_section_headers_is_static_and_stripped() {
        let mut b = vec![0u8; 64];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        b[18..20].copy_from_slice(&EM_AARCH64.to_le_bytes());
        assert_eq!(
            Elf::parse(&b),
            Some(Elf {
                machine: EM_AARCH64,
                has_interpreter: false,
                has_symtab: false
            })
        );
    }
}
