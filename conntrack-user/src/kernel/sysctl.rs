//! Conntrack sysctls under /proc/sys/net/netfilter.
//!
//! /proc/sys/net is per network namespace, and which namespace a file shows is decided
//! when it is *opened*, from the opening thread (`net_ctl_header_lookup` in
//! net/sysctl_net.c uses `current->nsproxy->net_ns`). So a thread that has entered a
//! namespace with setns(2) reads that namespace's values through these same paths.
//! `nf_conntrack_max` and `nf_conntrack_buckets` are global and read-only outside the
//! initial namespace (`nf_conntrack_standalone_init_sysctl` in
//! net/netfilter/nf_conntrack_standalone.c); the rest are per namespace.

use std::io;
use std::path::Path;

/// Where the conntrack sysctls are.
pub const SYSCTL_DIR: &str = "/proc/sys/net/netfilter";

/// Conntrack sysctls of one namespace; `None` when the file is missing (older kernel,
/// feature compiled out) or unreadable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sysctls {
    /// Global limit on entries, compared against each namespace's count.
    pub nf_conntrack_max: Option<u64>,
    /// Hash table size, shared by all namespaces.
    pub nf_conntrack_buckets: Option<u64>,
    /// Entries in this namespace.
    pub nf_conntrack_count: Option<u64>,
    /// Seconds an established TCP entry lives without traffic.
    pub nf_conntrack_tcp_timeout_established: Option<u64>,
    /// 1 when mid-stream TCP connections are picked up.
    pub nf_conntrack_tcp_loose: Option<u64>,
    /// Seconds an unreplied UDP entry lives.
    pub nf_conntrack_udp_timeout: Option<u64>,
    /// Seconds an entry of an untracked-protocol lives.
    pub nf_conntrack_generic_timeout: Option<u64>,
    /// Limit on expectations.
    pub nf_conntrack_expect_max: Option<u64>,
    /// 1 when checksums are verified (bad ones count as invalid).
    pub nf_conntrack_checksum: Option<u64>,
    /// 1 when per-entry byte/packet accounting is on.
    pub nf_conntrack_acct: Option<u64>,
    /// Event delivery mode (0 off, 1 on, 2 auto since 6.0).
    pub nf_conntrack_events: Option<u64>,
}

impl Sysctls {
    /// Reads the calling thread's namespace's sysctls from [`SYSCTL_DIR`].
    pub fn read() -> Self {
        Self::read_from(Path::new(SYSCTL_DIR))
    }

    /// Reads the sysctls from `dir` (a test can point this at a fixture directory).
    pub fn read_from(dir: &Path) -> Self {
        let get = |name: &str| read_u64_file(&dir.join(name)).ok().flatten();
        Self {
            nf_conntrack_max: get("nf_conntrack_max"),
            nf_conntrack_buckets: get("nf_conntrack_buckets"),
            nf_conntrack_count: get("nf_conntrack_count"),
            nf_conntrack_tcp_timeout_established: get("nf_conntrack_tcp_timeout_established"),
            nf_conntrack_tcp_loose: get("nf_conntrack_tcp_loose"),
            nf_conntrack_udp_timeout: get("nf_conntrack_udp_timeout"),
            nf_conntrack_generic_timeout: get("nf_conntrack_generic_timeout"),
            nf_conntrack_expect_max: get("nf_conntrack_expect_max"),
            nf_conntrack_checksum: get("nf_conntrack_checksum"),
            nf_conntrack_acct: get("nf_conntrack_acct"),
            nf_conntrack_events: get("nf_conntrack_events"),
        }
    }
}

/// Reads one unsigned integer file: `Ok(None)` if it does not exist, an error if it
/// cannot be read or does not hold a single unsigned number.
pub fn read_u64_file(path: &Path) -> io::Result<Option<u64>> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_u64(&text).map(Some).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} holds {:?}, not an unsigned number",
                    path.display(),
                    text.trim()
                ),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot read {}: {e}", path.display()),
        )),
    }
}

fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// Reads sysctl `name` (e.g. `nf_conntrack_count`) of the calling thread's namespace.
pub fn read_sysctl(name: &str) -> io::Result<Option<u64>> {
    read_u64_file(&sysctl_path(name)?)
}

/// Writes sysctl `name` (a file name under [`SYSCTL_DIR`], e.g. `nf_conntrack_max`)
/// in the calling thread's namespace. Needs root; `nf_conntrack_max` and
/// `nf_conntrack_buckets` can be written only from the initial namespace, and they are
/// global, so a test that lowers them must restore them and must not run in parallel
/// with other conntrack tests.
pub fn write_sysctl(name: &str, value: impl std::fmt::Display) -> io::Result<()> {
    let path = sysctl_path(name)?;
    std::fs::write(&path, format!("{value}\n")).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot write {value} to {}: {e} (needs root; nf_conntrack_max and \
                 nf_conntrack_buckets are writable only in the initial namespace)",
                path.display()
            ),
        )
    })
}

/// Path of a conntrack sysctl; refuses names that would escape [`SYSCTL_DIR`].
fn sysctl_path(name: &str) -> io::Result<std::path::PathBuf> {
    let name = name.strip_prefix("net.netfilter.").unwrap_or(name);
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a sysctl name under {SYSCTL_DIR}"),
        ));
    }
    Ok(Path::new(SYSCTL_DIR).join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fixture_dir_with_missing_and_bad_files() {
        let dir = std::env::temp_dir().join(format!("ctscope-sysctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("nf_conntrack_max"), "262144\n").expect("write");
        std::fs::write(dir.join("nf_conntrack_count"), "17\n").expect("write");
        std::fs::write(dir.join("nf_conntrack_events"), "two\n").expect("write");
        let s = Sysctls::read_from(&dir);
        let bad = read_u64_file(&dir.join("nf_conntrack_events"));
        std::fs::remove_dir_all(&dir).expect("cleanup");
        assert_eq!(s.nf_conntrack_max, Some(262_144));
        assert_eq!(s.nf_conntrack_count, Some(17));
        assert_eq!(s.nf_conntrack_events, None);
        assert_eq!(s.nf_conntrack_acct, None);
        assert!(bad.expect_err("not a number").to_string().contains("two"));
        let json = serde_json::to_value(s).expect("serialises");
        assert_eq!(json["nf_conntrack_max"], 262_144);
    }

    #[test]
    fn names_cannot_escape_the_directory() {
        for name in ["../../kernel/hostname", "", ".", "a/b"] {
            let err = write_sysctl(name, 1).expect_err("refused");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name}");
        }
        let p = sysctl_path("net.netfilter.nf_conntrack_max").expect("valid");
        assert_eq!(p, Path::new("/proc/sys/net/netfilter/nf_conntrack_max"));
    }

    #[test]
    fn reads_this_machine_when_present() {
        // Every kernel with nf_conntrack has these; skip silently elsewhere.
        if Path::new(SYSCTL_DIR).join("nf_conntrack_max").exists() {
            let s = Sysctls::read();
            assert!(s.nf_conntrack_max.is_some());
            assert!(s.nf_conntrack_count.is_some());
        }
    }
}
