//! The namespace load runs in: a fresh one (held by a file descriptor, gone
//! when ctscope lets go of it) or an existing named one.

use std::{
    fs::File,
    io::{self, Write as _},
    os::{
        fd::{AsRawFd as _, OwnedFd},
        unix::fs::MetadataExt as _,
    },
    process::{Command, Stdio},
    sync::Arc,
    thread,
};

/// Makes conntrack track everything in the namespace: a ruleset that uses
/// `ct state` registers conntrack's hooks there (nf_ct_netns_get).
const RULESET: &str = "
table inet ctscope_load {
    chain in { type filter hook input priority 0; ct state established,related accept; }
    chain out { type filter hook output priority 0; ct state established,related accept; }
}";

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("creating a network namespace: {0} (ctscope load needs root)")]
    Unshare(#[source] io::Error),
    #[error("opening network namespace {path}: {source}; list them with `ip netns list`")]
    Open {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("entering the load namespace: {0}")]
    Enter(#[source] io::Error),
    #[error("bringing up loopback in the load namespace: {0}")]
    Loopback(#[source] io::Error),
    #[error(
        "running `nft` to turn conntrack on in the load namespace: {0}; install nftables \
         (`apt-get install nftables`)"
    )]
    Nft(String),
    #[error("the namespace thread panicked")]
    Thread,
}

impl NamespaceError {
    /// The machine or the arguments are at fault (exit status 2): no
    /// privilege, no such namespace, no nft.
    pub fn is_environment(&self) -> bool {
        match self {
            Self::Unshare(_) | Self::Open { .. } | Self::Nft(_) => true,
            Self::Enter(e) | Self::Loopback(e) => e.kind() == io::ErrorKind::PermissionDenied,
            Self::Thread => false,
        }
    }
}

/// A network namespace for load, kept alive by an open nsfs file.
#[derive(Debug)]
pub struct LoadNamespace {
    fd: Arc<OwnedFd>,
    inum: u32,
    created: bool,
}

/// A cheap handle worker threads use to enter the namespace.
#[derive(Clone, Debug)]
pub struct NamespaceHandle(Arc<OwnedFd>);

impl NamespaceHandle {
    /// Moves the calling thread into the namespace (setns affects only it).
    pub fn enter(&self) -> Result<(), NamespaceError> {
        // SAFETY: a valid nsfs fd.
        if unsafe { libc::setns(self.0.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(NamespaceError::Enter(io::Error::last_os_error()));
        }
        Ok(())
    }
}

impl LoadNamespace {
    /// A new namespace with loopback up and conntrack active. Nothing in it
    /// is reachable from, or routed to, anywhere else.
    pub fn create() -> Result<Self, NamespaceError> {
        thread::spawn(|| -> Result<Self, NamespaceError> {
            // SAFETY: unshare affects only this (short-lived) thread.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(NamespaceError::Unshare(io::Error::last_os_error()));
            }
            loopback_up().map_err(NamespaceError::Loopback)?;
            // A child forked from this thread starts in its namespace.
            let mut child = Command::new("nft")
                .args(["-f", "-"])
                .stdin(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| NamespaceError::Nft(e.to_string()))?;
            if let Some(mut stdin) = child.stdin.take() {
                stdin
                    .write_all(RULESET.as_bytes())
                    .map_err(|e| NamespaceError::Nft(e.to_string()))?;
            }
            let out = child
                .wait_with_output()
                .map_err(|e| NamespaceError::Nft(e.to_string()))?;
            if !out.status.success() {
                return Err(NamespaceError::Nft(
                    String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                ));
            }
            let file = File::open("/proc/thread-self/ns/net").map_err(NamespaceError::Enter)?;
            Self::from_file(file, true)
        })
        .join()
        .map_err(|_| NamespaceError::Thread)?
    }

    /// An existing namespace: a name from `ip netns list` or a path such as
    /// /proc/PID/ns/net.
    pub fn open(name: &str) -> Result<Self, NamespaceError> {
        let path = if name.contains('/') {
            name.to_owned()
        } else {
            format!("/run/netns/{name}")
        };
        let file = File::open(&path).map_err(|source| NamespaceError::Open {
            path: path.clone(),
            source,
        })?;
        let ns = Self::from_file(file, false).map_err(|e| match e {
            NamespaceError::Enter(source) => NamespaceError::Open {
                path: path.clone(),
                source,
            },
            other => other,
        })?;
        // Entering it now, from a thread that ends right after, turns "not
        // a namespace" or "no privilege" into an error here rather than
        // into flows that are all refused.
        let handle = ns.handle();
        thread::spawn(move || handle.enter())
            .join()
            .map_err(|_| NamespaceError::Thread)?
            .map_err(|e| match e {
                NamespaceError::Enter(source) => NamespaceError::Open { path, source },
                other => other,
            })?;
        Ok(ns)
    }

    fn from_file(file: File, created: bool) -> Result<Self, NamespaceError> {
        let inum = file.metadata().map_err(NamespaceError::Enter)?.ino() as u32;
        Ok(Self {
            fd: Arc::new(OwnedFd::from(file)),
            inum,
            created,
        })
    }

    pub fn handle(&self) -> NamespaceHandle {
        NamespaceHandle(Arc::clone(&self.fd))
    }

    /// Inode number, as ctscope reports namespaces.
    pub fn inum(&self) -> u32 {
        self.inum
    }

    /// Whether ctscope created it (and it disappears when dropped).
    pub fn created(&self) -> bool {
        self.created
    }
}

/// `ip link set lo up`, with the ioctls it uses.
fn loopback_up() -> io::Result<()> {
    // SAFETY: a plain socket used only for the interface ioctls, closed below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain data; zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // ioctl's request is c_ulong in glibc and c_int in musl (static builds);
    // libc::Ioctl names whichever this build links, and both values fit.
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write req.ifr_ifru.ifru_flags.
    let result = unsafe {
        if libc::ioctl(sock, libc::SIOCGIFFLAGS as libc::Ioctl, &mut req) < 0 {
            Err(io::Error::last_os_error())
        } else {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            if libc::ioctl(sock, libc::SIOCSIFFLAGS as libc::Ioctl, &req) < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(sock) };
    result
}
