//! Debian kernel packages: the newest of a series, fetched with apt-get download
//! and unpacked once under target/vm/.
//!
//! Bookworm's amd64 kernels come through the machine's own apt sources.
//! Other suites (bullseye's 5.10) and other architectures (bookworm's arm64
//! kernel and userland) come through a private apt configuration under
//! target/vm/apt-SUITE[-ARCH]/: its own sources list, package lists, status
//! file, cache and architecture, so the machine's sources, lists and dpkg
//! architectures are never touched.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use super::{Arch, KernelSel, sh};

/// An unpacked kernel package.
pub(super) struct Image {
    pub(super) dir: PathBuf,
    pub(super) tree: PathBuf,
    pub(super) release: String,
    pub(super) arch: Arch,
}

pub(super) fn fetch_kernel(root: &Path, kernel: KernelSel) -> Result<Image> {
    let package = newest_package(root, kernel)?;
    let dir = root.join("target/vm").join(&package);
    let tree = dir.join("root");
    if !tree.join("boot").exists() {
        fs::create_dir_all(&dir)?;
        eprintln!("xtask: downloading {package}");
        let mut download = Command::new("apt-get");
        if let Some(suite) = kernel.suite() {
            download.args(private_apt(root, suite, kernel.arch())?);
        }
        sh(
            download
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
    Ok(Image {
        dir,
        tree,
        release,
        arch: kernel.arch(),
    })
}

/// The newest image package matching the kernel's pattern.
pub(super) fn newest_package(root: &Path, kernel: KernelSel) -> Result<String> {
    let private = match kernel.suite() {
        Some(suite) => private_apt(root, suite, kernel.arch())?,
        None => Vec::new(),
    };
    let search = || -> Result<Vec<String>> {
        let out = Command::new("apt-cache")
            .args(&private)
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
            Command::new("apt-get")
                .args(&private)
                .args(["update", "-qq"]),
            "refreshing the Debian package lists",
        )?;
        names = search()?;
    }
    names.sort_by(|a, b| version_cmp(a, b));
    names.pop().with_context(|| {
        format!(
            "no Debian package matches {} in {}",
            kernel.package_pattern(),
            kernel.suite().unwrap_or("the machine's apt sources")
        )
    })
}

/// `apt-get`/`apt-cache` options that make apt read and write only a
/// private configuration for `suite` and `arch` under target/vm/apt-SUITE/
/// (apt-SUITE-ARCH/ for another architecture than amd64; created on first
/// use): sources list, lists, status, cache and architecture. The
/// signatures are checked against debian-archive-keyring, which has every
/// suite's key.
pub(super) fn private_apt(root: &Path, suite: &str, arch: Arch) -> Result<Vec<String>> {
    let name = match arch {
        Arch::Amd64 => format!("apt-{suite}"),
        other => format!("apt-{suite}-{}", other.deb()),
    };
    let dir = root.join("target/vm").join(name);
    for sub in ["lists/partial", "cache/archives/partial", "etc/parts"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    let sources = dir.join("etc/sources.list");
    fs::write(&sources, sources_list(suite))?;
    let status = dir.join("status");
    if !status.exists() {
        fs::write(&status, "")?;
    }
    let opt = |k: &str, v: &Path| vec!["-o".to_owned(), format!("{k}={}", v.display())];
    let mut args = Vec::new();
    args.extend(opt("Dir::Etc::SourceList", &sources));
    args.extend(opt("Dir::Etc::SourceParts", &dir.join("etc/parts")));
    args.extend(opt("Dir::State::Lists", &dir.join("lists")));
    args.extend(opt("Dir::State::status", &status));
    args.extend(opt("Dir::Cache", &dir.join("cache")));
    // Packages of this architecture only, whatever this machine's is.
    args.extend([
        "-o".to_owned(),
        format!("APT::Architecture={}", arch.deb()),
        "-o".to_owned(),
        format!("APT::Architectures={}", arch.deb()),
    ]);
    // Only the package indexes: no translations, no AppStream metadata.
    args.extend(["-o".to_owned(), "Acquire::Languages=none".to_owned()]);
    args.extend([
        "-o".to_owned(),
        "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".to_owned(),
    ]);
    Ok(args)
}

/// The private sources list of `suite`: its main archive and its security
/// updates (where Debian publishes the newest kernel of an LTS suite).
pub(super) fn sources_list(suite: &str) -> String {
    let key = "/usr/share/keyrings/debian-archive-keyring.gpg";
    format!(
        "deb [signed-by={key}] http://deb.debian.org/debian {suite} main\n\
         deb [signed-by={key}] http://deb.debian.org/debian-security {suite}-security main\n"
    )
}

/// Orders names by their numeric runs, so 6.1.0-9 < 6.1.0-10.
pub(super) fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
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
