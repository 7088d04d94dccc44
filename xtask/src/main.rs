//! `cargo xtask`: build, run and test ctscope on a fresh machine.
//!
//! Each command first provisions what is missing (nightly's rust-src,
//! bpf-linker built against Debian's LLVM 22, the tools the tests drive) and
//! does nothing extra when everything is already there.

mod bench;
mod dist;
mod image;
mod provision;
mod vm;

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, run and test ctscope")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing, then build the release `ctscope` binary
    /// (target/release/ctscope) with the eBPF object embedded.
    Build,
    /// Build, then run ctscope with the given arguments (as root; through
    /// sudo when invoked as another user).
    Run {
        /// Arguments for ctscope, after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every check: formatting, clippy, unit tests and the integration
    /// tests against the real kernel (needs root).
    Test {
        /// Skip formatting and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Only integration tests whose name contains this.
        #[arg(long)]
        filter: Option<String>,
        /// Skip the integration suite in qemu on Debian kernels (about 21
        /// minutes for the four kernels, two guests at a time).
        #[arg(long)]
        no_vm: bool,
        /// Do not build or refresh the static binaries of target/dist/ (4-10
        /// minutes from nothing, seconds when nothing changed); the
        /// container and qemu-user tests then skip if it is absent, and
        /// the musl clippy is not run.
        #[arg(long)]
        no_dist: bool,
    },
    /// Static, stripped release binaries for x86_64 and aarch64 (musl)
    /// under target/dist/, with SHA256SUMS; installs the Rust targets, zig
    /// and cargo-zigbuild when missing.
    Dist,
    /// The OCI image `$CTSCOPE_REGISTRY/ctscope:<version>` (registry
    /// `localhost` when unset) from the Containerfile and target/dist/, with
    /// podman: one image per binary and, with both, a multi-arch manifest
    /// list under that name.
    Image,
    /// Install the toolchain pieces and test tools only.
    Provision,
    /// Measure what ctscope costs and compare it with conntrack-tools; writes
    /// docs/benchmarks.md (needs root, takes a few minutes).
    Bench {
        /// A short run that only checks the harness (writes
        /// target/bench-smoke.md).
        #[arg(long)]
        smoke: bool,
        /// Only these sections (comma-separated: rate, slab, loss, walk,
        /// own, flood, fleet), written to target/bench-only.md.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Run the integration suite in qemu (software emulation) on stock
    /// Debian kernels, where nf_conntrack is a module and kprobes exist;
    /// once per backend. Kernel packages are cached under target/vm/.
    VmTest {
        /// Which kernel(s) to boot.
        #[arg(long, value_enum, default_value = "all")]
        kernel: vm::KernelSel,
        /// Which ctscope backend(s) the suite runs with (`all`: kprobe,
        /// then tracepoint, in the same boot).
        #[arg(long, value_enum, default_value = "all")]
        backend: vm::BackendSel,
        /// Only integration tests whose name contains this.
        #[arg(long)]
        filter: Option<String>,
        /// Minutes before a guest is stopped as hung.
        #[arg(long, default_value_t = 80)]
        timeout: u64,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let root = workspace_root()?;
    env::set_current_dir(&root)?;
    match cli.command {
        Cmd::Provision => {
            provision::toolchain()?;
            provision::test_tools()?;
            provision::manifest_tools(&root)
        }
        Cmd::Dist => dist::run(&root),
        Cmd::Image => image::run(&root),
        Cmd::Build => {
            provision::toolchain()?;
            build_release()
        }
        Cmd::Run { args } => {
            provision::toolchain()?;
            build_release()?;
            run_ctscope(&root.join("target/release/ctscope"), &args)
        }
        Cmd::Bench { smoke, only } => {
            provision::toolchain()?;
            provision::test_tools()?;
            build_release()?;
            let (scale, mut out) = if smoke {
                (bench::SMOKE, root.join("target/bench-smoke.md"))
            } else {
                (bench::FULL, root.join("docs/benchmarks.md"))
            };
            if !only.is_empty() {
                out = root.join("target/bench-only.md");
            }
            bench::run(&root, scale, &only, &out)
        }
        Cmd::VmTest {
            kernel,
            backend,
            filter,
            timeout,
        } => {
            provision::toolchain()?;
            provision::test_tools()?;
            vm::run(
                &root,
                &vm::VmOptions {
                    kernel,
                    backend,
                    filter,
                    timeout_min: timeout,
                },
            )
        }
        Cmd::Test {
            no_lint,
            filter,
            no_vm,
            no_dist,
        } => {
            provision::toolchain()?;
            provision::test_tools()?;
            provision::manifest_tools(&root)?;
            if no_dist && !root.join("target/dist").is_dir() {
                eprintln!(
                    "xtask: --no-dist and no target/dist/: the container and qemu-user tests \
                     (tests/tests/image.rs, dist.rs) will skip"
                );
            }
            test(&root, no_lint, !no_dist, filter.as_deref())?;
            if no_vm {
                return Ok(());
            }
            // The same suite on the kernels users run: nf_conntrack as a
            // module, kprobes present, both backends.
            vm::run(
                &root,
                &vm::VmOptions {
                    kernel: vm::KernelSel::All,
                    backend: vm::BackendSel::All,
                    filter,
                    timeout_min: 30,
                },
            )
        }
    }
}

fn workspace_root() -> Result<PathBuf> {
    let manifest = env::var_os("CARGO_MANIFEST_DIR").context("run this through `cargo xtask`")?;
    Path::new(&manifest)
        .parent()
        .map(Path::to_owned)
        .context("xtask has no parent directory")
}

fn build_release() -> Result<()> {
    cargo(&[
        "build",
        "--release",
        "--package",
        "conntrack-user",
        "--bin",
        "ctscope",
    ])
}

fn run_ctscope(bin: &Path, args: &[String]) -> Result<()> {
    let mut cmd = if provision::is_root() {
        Command::new(bin)
    } else {
        eprintln!("xtask: ctscope loads eBPF programs and needs root; running it through sudo");
        let mut sudo = Command::new("sudo");
        sudo.arg(bin);
        sudo
    };
    let status = cmd.args(args).status().context("starting ctscope")?;
    if !status.success() {
        bail!("ctscope exited with {status}");
    }
    Ok(())
}

/// `dist`: build or refresh target/dist/ after the lints (4-5 minutes
/// from nothing on a quiet 2-core machine, seconds when nothing changed),
/// lint its musl build, and make the tests that run it fail rather than
/// skip when it is missing (CTSCOPE_REQUIRE_DIST): tests/tests/image.rs
/// and dist.rs.
fn test(root: &Path, no_lint: bool, dist: bool, filter: Option<&str>) -> Result<()> {
    if !no_lint {
        cargo(&["fmt", "--all", "--", "--check"])?;
        cargo(&[
            "clippy",
            "--workspace",
            "--exclude",
            "conntrack-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])?;
        // The eBPF crate builds only for the BPF target, with nightly.
        let status = Command::new("rustup")
            .args([
                "run",
                "nightly",
                "cargo",
                "clippy",
                "--release",
                "--package",
            ])
            .args([
                "conntrack-ebpf",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
            ])
            .args(["--", "-D", "warnings"])
            .env_remove("RUSTUP_TOOLCHAIN")
            .status()
            .context("running clippy on the eBPF crate")?;
        if !status.success() {
            bail!("clippy found problems in conntrack-ebpf");
        }
    }
    if dist {
        dist::run(root)?;
    }
    if dist && !no_lint {
        // The static binaries are musl builds: code under
        // cfg(target_env = "musl") (libc's types differ there) is linted
        // nowhere else. About a minute from nothing (its dependencies are
        // checked for that target).
        let triple = "x86_64-unknown-linux-musl";
        let status = dist::zig_cargo(root, "clippy", triple)
            .args(["--release", "--package", "conntrack-user"])
            .args(["--", "-D", "warnings"])
            .status()
            .context("running clippy for the musl target")?;
        if !status.success() {
            bail!("clippy found problems in conntrack-user built for {triple}");
        }
    }
    if !provision::is_root() {
        bail!(
            "the tests load eBPF programs and change network namespaces: \
             run `sudo cargo xtask test`"
        );
    }
    // Unit tests of every host crate; `--include-ignored` adds the ones that
    // read this machine's kernel as root.
    cargo(&[
        "test",
        "--workspace",
        "--exclude",
        "conntrack-ebpf",
        "--exclude",
        "ctscope-integration",
        "--",
        "--include-ignored",
    ])?;
    // The release binary is what users run; the tests drive it.
    build_release()?;
    let bin = root.join("target/release/ctscope");
    let mut args = vec![
        "test",
        "--package",
        "ctscope-integration",
        "--",
        // Tests share the global conntrack table and sysctls: one at a time.
        "--test-threads=1",
    ];
    if let Some(f) = filter {
        args.push(f);
    }
    let mut cmd = Command::new("cargo");
    cmd.args(&args).env("CTSCOPE_BIN", &bin);
    if dist {
        cmd.env("CTSCOPE_REQUIRE_DIST", "1");
    }
    let status = cmd.status().context("running the integration tests")?;
    if !status.success() {
        bail!("integration tests failed");
    }
    Ok(())
}

fn cargo(args: &[&str]) -> Result<()> {
    let status = Command::new("cargo")
        .args(args)
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed", args.join(" "));
    }
    Ok(())
}
