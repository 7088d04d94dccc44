//! The release binaries of `cargo xtask dist` (target/dist/): static,
//! stripped, summed, and the aarch64 one actually runs: `--version` and
//! `doctor --no-load` under qemu-user, against this machine's kernel.
//!
//! `cargo xtask test` builds or refreshes them first and installs
//! qemu-user-static, and sets CTSCOPE_REQUIRE_DIST, under which a missing
//! binary or qemu fails the test. Run on their own (plain `cargo test`),
//! the tests skip with a message when target/dist or qemu-aarch64 is
//! missing.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

const X86: &str = "ctscope-x86_64-unknown-linux-musl";
const ARM: &str = "ctscope-aarch64-unknown-linux-musl";

fn dist_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/dist")
}

/// Says why a test cannot run: a failure under `cargo xtask test`
/// (CTSCOPE_REQUIRE_DIST, which builds and installs everything needed), a
/// skip otherwise.
fn skip(why: &str) {
    if std::env::var_os("CTSCOPE_REQUIRE_DIST").is_some() {
        panic!("{why} (CTSCOPE_REQUIRE_DIST is set: `cargo xtask test` should have provided it)");
    }
    eprintln!("SKIPPED: {why}");
}

/// The dist binary `name`, or None (after saying why) when it is missing.
fn dist_binary(name: &str) -> Option<PathBuf> {
    let p = dist_dir().join(name);
    if p.exists() {
        Some(p)
    } else {
        skip(&format!(
            "{} does not exist; run `cargo xtask dist` first",
            p.display()
        ));
        None
    }
}

fn in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// qemu-user for aarch64, called directly (binfmt_misc may not be set up).
fn qemu_aarch64() -> Option<PathBuf> {
    let found = in_path("qemu-aarch64").or_else(|| in_path("qemu-aarch64-static"));
    if found.is_none() {
        skip(
            "no qemu-aarch64 or qemu-aarch64-static in PATH \
             (Debian: apt-get install qemu-user-static)",
        );
    }
    found
}

/// Runs `cmd`; returns (exit code, stdout).
fn output(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().expect("run the dist binary");
    assert!(
        out.status.code().is_some(),
        "killed by a signal: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The `key: value` line of `--version`.
fn field<'a>(version: &'a str, key: &str) -> Option<&'a str> {
    version
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
}

/// `doctor --json`'s checks as (id, status) pairs.
fn checks(json: &str) -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(json).expect("doctor --json is JSON");
    v["checks"]
        .as_array()
        .expect("doctor --json has checks")
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap_or_default().to_owned(),
                c["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn aarch64_binary_runs_version_and_doctor_under_qemu_user() {
    let (Some(arm), Some(qemu)) = (dist_binary(ARM), qemu_aarch64()) else {
        return;
    };
    let (code, version) = output(Command::new(&qemu).arg(&arm).arg("--version"));
    assert_eq!(code, 0, "{version}");
    assert_eq!(
        version.lines().next(),
        Some(concat!("ctscope ", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    let id = field(&version, "eBPF object build id").unwrap_or_default();
    assert!(
        id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "{version}"
    );
    // The eBPF object was built for aarch64's pt_regs, not the build machine's.
    assert_eq!(
        field(&version, "eBPF object arch"),
        Some("aarch64"),
        "{version}"
    );
    assert_eq!(
        field(&version, "target"),
        Some("aarch64-unknown-linux-musl"),
        "{version}"
    );

    // doctor reads this machine's kernel (BTF, kallsyms, /proc, every
    // namespace's counters) through the emulated syscalls; without
    // --no-load it would need the bpf syscall, which qemu-user lacks.
    let (code, json) =
        output(
            Command::new(&qemu)
                .arg(&arm)
                .args(["doctor", "--no-load", "--json"]),
        );
    let arm_checks = checks(&json);
    for id in ["privileges", "btf", "conntrack", "backend", "counters"] {
        assert!(
            arm_checks.iter().any(|(i, _)| i == id),
            "doctor under qemu has no {id} check: {json}"
        );
    }
    // The same checks, with the same verdicts, as the native binary on the
    // same machine: the aarch64 build reads the kernel the same way.
    if let Some(x86) = dist_binary(X86) {
        let (native_code, native) =
            output(Command::new(x86).args(["doctor", "--no-load", "--json"]));
        assert_eq!(
            checks(&native),
            arm_checks,
            "native: {native}\nqemu: {json}"
        );
        assert_eq!(native_code, code);
    }
}

#[test]
fn dist_binaries_are_static_stripped_and_summed() {
    let (Some(x86), Some(arm)) = (dist_binary(X86), dist_binary(ARM)) else {
        return;
    };
    let sums = std::fs::read_to_string(dist_dir().join("SHA256SUMS")).expect("read SHA256SUMS");
    for (bin, name) in [(&x86, X86), (&arm, ARM)] {
        let (code, line) = output(Command::new("sha256sum").arg(bin));
        assert_eq!(code, 0);
        let digest = line.split_whitespace().next().unwrap_or_default();
        assert!(
            sums.lines().any(|l| l == format!("{digest}  {name}")),
            "SHA256SUMS does not list {name} with {digest}:\n{sums}"
        );
        if in_path("file").is_none() {
            skip("`file` is not installed (apt-get install file): linkage not checked by it");
            continue;
        }
        let (_, described) = output(Command::new("file").arg(bin));
        assert!(
            described.contains("statically linked") || described.contains("static-pie linked"),
            "{described}"
        );
        assert!(described.contains(", stripped"), "{described}");
    }
    let (code, version) = output(Command::new(&x86).arg("--version"));
    assert_eq!(code, 0);
    assert_eq!(
        field(&version, "eBPF object arch"),
        Some("x86_64"),
        "{version}"
    );
}
