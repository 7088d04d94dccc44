//! The conntrack counters over ctnetlink, as `conntrack -S` reads them.
//!
//! Distribution kernels often lack CONFIG_NF_CONNTRACK_PROCFS, so
//! /proc/net/stat/nf_conntrack may not exist; ctnetlink (CONFIG_NF_CT_NETLINK) carries
//! the same per-CPU `ip_conntrack_stat` counters. A netlink socket is bound to the
//! network namespace of the thread that *creates* it (`sock_net` is set in
//! `__netlink_create` from `current->nsproxy->net_ns`), so to read another namespace
//! the socket must be opened after setns(2), on that thread.
//!
//! The wire format lives in [`super::nlwire`]; this file only does the socket I/O.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

pub use super::nlwire::{CtnetlinkReading, Query};
use super::nlwire::{Progress, decode_datagram, encode_request};

/// Receive buffer. Dump replies are built in skbs of at most 32 KiB (`netlink_dump`),
/// and MSG_TRUNC tells us if one ever were larger.
const RECV_BUF: usize = 64 * 1024;
/// Upper bound on datagrams per request (one per CPU would be plenty), so a kernel or
/// proxy that never sends NLMSG_DONE cannot keep us looping.
const MAX_DATAGRAMS: usize = 8192;
/// How long to wait for each reply datagram.
/// (Not `libc::time_t`: libc deprecates that alias for musl targets.)
const RECV_TIMEOUT_SECS: u8 = 2;

/// What went wrong talking ctnetlink.
#[derive(Debug, thiserror::Error)]
pub enum CtnetlinkError {
    /// socket(2) or bind(2) failed.
    #[error(
        "cannot open a NETLINK_NETFILTER socket: {0}; the kernel needs \
         CONFIG_NETFILTER_NETLINK, and netlink sockets must be allowed (seccomp/LSM)"
    )]
    Socket(#[source] io::Error),
    /// send or receive failed.
    #[error("ctnetlink {op} failed for the {query} request: {source}")]
    Io {
        op: &'static str,
        query: Query,
        #[source]
        source: io::Error,
    },
    /// No reply in time.
    #[error(
        "no ctnetlink reply to the {query} request within {RECV_TIMEOUT_SECS} s; \
         check that nf_conntrack_netlink is loaded"
    )]
    Timeout { query: Query },
    /// A reply larger than the receive buffer.
    #[error("a {needed}-byte ctnetlink reply to {query} does not fit the {RECV_BUF}-byte buffer")]
    Truncated { query: Query, needed: usize },
    /// The kernel answered with an error.
    #[error(
        "the kernel rejected the ctnetlink {query} request: {}; {}",
        io::Error::from_raw_os_error(*.errno),
        errno_hint(*.errno)
    )]
    Kernel { query: Query, errno: i32 },
    /// The reply did not parse.
    #[error("malformed ctnetlink reply to the {query} request: {detail}")]
    Malformed { query: Query, detail: String },
    /// The reply never ended.
    #[error("the ctnetlink {query} reply did not end after {MAX_DATAGRAMS} datagrams")]
    Unterminated { query: Query },
}

fn errno_hint(errno: i32) -> &'static str {
    match errno {
        libc::EPERM | libc::EACCES => "ctnetlink needs CAP_NET_ADMIN in the namespace; run as root",
        libc::EINVAL | libc::EOPNOTSUPP | libc::ENOENT => {
            "ctnetlink is not available: load nf_conntrack_netlink (CONFIG_NF_CT_NETLINK)"
        }
        _ => "see the kernel log",
    }
}

/// A NETLINK_NETFILTER socket in the network namespace of the thread that opened it.
pub struct CtnetlinkSocket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl CtnetlinkSocket {
    /// Opens and binds the socket in the calling thread's current network namespace.
    pub fn open() -> Result<Self, CtnetlinkError> {
        // SAFETY: plain syscall with constant arguments; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            return Err(CtnetlinkError::Socket(io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let addr = kernel_addr();
        // SAFETY: `addr` is a valid sockaddr_nl and the length matches it.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(CtnetlinkError::Socket(io::Error::last_os_error()));
        }
        let tv = libc::timeval {
            tv_sec: RECV_TIMEOUT_SECS.into(),
            tv_usec: 0,
        };
        // SAFETY: `tv` is a valid timeval and the length matches it.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(CtnetlinkError::Socket(io::Error::last_os_error()));
        }
        Ok(Self {
            fd,
            seq: 0,
            buf: vec![0; RECV_BUF],
        })
    }

    /// Per-CPU counters (conntrack and expectation) summed, plus the entry count and
    /// nf_conntrack_max, of this socket's namespace.
    pub fn read(&mut self) -> Result<CtnetlinkReading, CtnetlinkError> {
        let mut acc = CtnetlinkReading::default();
        for query in [Query::CpuStats, Query::ExpectCpuStats, Query::Global] {
            self.query(query, &mut acc)?;
        }
        Ok(acc)
    }

    /// Sends one request and folds all its replies into `acc`.
    pub fn query(
        &mut self,
        query: Query,
        acc: &mut CtnetlinkReading,
    ) -> Result<(), CtnetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let req = encode_request(query, seq);
        let addr = kernel_addr();
        let sent = retry_eintr(|| {
            // SAFETY: `req` and `addr` are valid for the lengths passed.
            unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    req.as_ptr().cast(),
                    req.len(),
                    0,
                    (&raw const addr).cast(),
                    size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            }
        })
        .map_err(|source| CtnetlinkError::Io {
            op: "sendto",
            query,
            source,
        })?;
        if sent != req.len() {
            return Err(CtnetlinkError::Io {
                op: "sendto",
                query,
                source: io::Error::new(io::ErrorKind::WriteZero, "short netlink send"),
            });
        }
        for _ in 0..MAX_DATAGRAMS {
            // SAFETY: all-zero bytes are a valid sockaddr_nl.
            let mut from: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            let mut from_len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            let n = retry_eintr(|| {
                // SAFETY: `buf`, `from` and `from_len` are valid for the sizes passed.
                unsafe {
                    libc::recvfrom(
                        self.fd.as_raw_fd(),
                        self.buf.as_mut_ptr().cast(),
                        self.buf.len(),
                        libc::MSG_TRUNC,
                        (&raw mut from).cast(),
                        &mut from_len,
                    )
                }
            })
            .map_err(|source| match source.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    CtnetlinkError::Timeout { query }
                }
                _ => CtnetlinkError::Io {
                    op: "recvfrom",
                    query,
                    source,
                },
            })?;
            if n > self.buf.len() {
                return Err(CtnetlinkError::Truncated { query, needed: n });
            }
            if from.nl_pid != 0 {
                continue; // not from the kernel
            }
            if decode_datagram(&self.buf[..n], query, seq, acc)? == Progress::Finished {
                return Ok(());
            }
        }
        Err(CtnetlinkError::Unterminated { query })
    }
}

/// Reads the counters of the calling thread's network namespace with a fresh socket.
pub fn read_stats() -> Result<CtnetlinkReading, CtnetlinkError> {
    CtnetlinkSocket::open()?.read()
}

/// The kernel's netlink address (also fine for bind: port 0 lets the kernel choose).
fn kernel_addr() -> libc::sockaddr_nl {
    // SAFETY: all-zero bytes are a valid sockaddr_nl.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr
}

/// Runs a syscall until it is not interrupted by a signal.
fn retry_eintr(mut f: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let rc = f();
        if let Ok(n) = usize::try_from(rc) {
            return Ok(n);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}
