//! Debian kernel packages: the newest of a series, fetched with apt-get download
//! and unpacked once under target/vm/.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use super::{KernelSel, sh};

/// An unpacked kernel package.
pub(super) struct Image {
    pub(super) dir: PathBuf,
    pub(super) tree: PathBuf,
    pub(super) release: String,
}

pub(super) fn fetch_kernel(root: &Path, kernel: KernelSel) -> Result<Image> {
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
pub(super) fn newest_package(kernel: KernelSel) -> Result<String> {
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
