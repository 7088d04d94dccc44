//! `cargo xtask image`: the OCI image of ctscope, built with podman from
//! the Containerfile and the static binaries of `cargo xtask dist`.
//!
//! The image is `$CTSCOPE_REGISTRY/ctscope:<version>`, the name
//! deploy/kubernetes/daemonset.yaml gives it (`localhost` when the variable is
//! unset: podman's prefix for images that live only in local storage). One
//! image per binary found in target/dist/ (tagged `<name>-amd64`,
//! `<name>-arm64`); with both, `<name>` is a manifest list of the two, so a
//! registry serves each node its architecture; with one, `<name>` is that
//! image. Nothing is pulled: the Containerfile starts `FROM scratch` and has
//! no RUN step, so the arm64 image builds on an x86_64 machine without
//! emulation.

use std::{
    env,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{dist, provision};

/// The variable that names the registry prefix, here and in the DaemonSet.
pub const REGISTRY_VAR: &str = "CTSCOPE_REGISTRY";
const DEFAULT_REGISTRY: &str = "localhost";

/// The OCI architecture name of each release target.
fn oci_arch(triple: &str) -> Option<&'static str> {
    match triple {
        "x86_64-unknown-linux-musl" => Some("amd64"),
        "aarch64-unknown-linux-musl" => Some("arm64"),
        _ => None,
    }
}

/// `<registry>/ctscope:<version>`.
pub fn image_name(registry: &str) -> String {
    format!(
        "{}/ctscope:{}",
        registry.trim_end_matches('/'),
        env!("CARGO_PKG_VERSION")
    )
}

pub fn run(root: &Path) -> Result<()> {
    provision::apt_install(&["podman"])?;
    let registry = env::var(REGISTRY_VAR).unwrap_or_else(|_| DEFAULT_REGISTRY.to_owned());
    ensure!(
        !registry.is_empty() && !registry.contains(char::is_whitespace),
        "{REGISTRY_VAR}={registry:?} is not a registry prefix (e.g. ghcr.io/example)"
    );
    let name = image_name(&registry);
    let dist = root.join("target/dist");

    // Everything of this name is replaced whole: an older manifest list
    // would keep stale entries, and older per-arch images would stay behind
    // untagged, 7 MB each time.
    remove(&["manifest", "rm", &name]);
    remove(&["image", "rm", &name]);
    for (triple, _) in dist::TARGETS {
        if let Some(arch) = oci_arch(triple) {
            remove(&["image", "rm", &format!("{name}-{arch}")]);
        }
    }

    let mut built = Vec::new();
    for (triple, _) in dist::TARGETS {
        if !dist.join(format!("ctscope-{triple}")).is_file() {
            continue;
        }
        let arch = oci_arch(triple).context("a release target without an OCI architecture")?;
        let tag = format!("{name}-{arch}");
        // --no-cache: buildah's layer cache ignores --platform, and would
        // hand back the image of the other architecture when both binaries
        // are unchanged copies of an earlier build's. --layers=false: no
        // intermediate image per step; with them, podman 4.3's `podman
        // images` fails on the manifest list ("locating item named
        // manifest-sha256:..."; podman issue #19757), for every image.
        podman(
            Command::new("podman")
                .args(["build", "--quiet", "--no-cache", "--layers=false", "--file"])
                .arg(root.join("Containerfile"))
                .args(["--platform", &format!("linux/{arch}")])
                .args(["--build-arg", &format!("TRIPLE={triple}")])
                .args([
                    "--build-arg",
                    &format!("VERSION={}", env!("CARGO_PKG_VERSION")),
                ])
                .args(["--tag", &tag])
                .arg(&dist),
            &format!("building {tag}"),
        )?;
        built.push(tag);
    }
    if built.is_empty() {
        bail!(
            "no binary in {}: run `cargo xtask dist` first",
            dist.display()
        );
    }

    if let [single] = built.as_slice() {
        podman(
            Command::new("podman").args(["tag", single, &name]),
            &format!("tagging {single} as {name}"),
        )?;
    } else {
        podman(
            Command::new("podman").args(["manifest", "create", &name]),
            &format!("creating the manifest list {name}"),
        )?;
        for tag in &built {
            podman(
                Command::new("podman")
                    .args(["manifest", "add", &name])
                    .arg(format!("containers-storage:{tag}")),
                &format!("adding {tag} to {name}"),
            )?;
        }
    }
    eprintln!("xtask: built {name} ({})", built.join(", "));
    let push = if built.len() > 1 {
        format!("podman manifest push --all {name} docker://{name}")
    } else {
        format!("podman push {name}")
    };
    eprintln!("xtask: publish it with `{push}`");
    Ok(())
}

/// A podman removal that may find nothing to remove (or an image a
/// container still uses, which then stays).
fn remove(args: &[&str]) {
    let _ = Command::new("podman")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn podman(cmd: &mut Command, what: &str) -> Result<()> {
    eprintln!("xtask: {what}");
    let status = cmd
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("{what}: could not start podman"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_release_target_has_an_oci_arch() {
        for (triple, _) in dist::TARGETS {
            assert!(oci_arch(triple).is_some(), "{triple}");
        }
    }

    #[test]
    fn name_is_registry_slash_ctscope_colon_version() {
        let v = env!("CARGO_PKG_VERSION");
        assert_eq!(image_name("localhost"), format!("localhost/ctscope:{v}"));
        assert_eq!(
            image_name("ghcr.io/example/"),
            format!("ghcr.io/example/ctscope:{v}")
        );
    }
}
