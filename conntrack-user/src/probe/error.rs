//! Why the probes could not start, in words that say what to do.

use aya::{EbpfError, maps::MapError, programs::ProgramError};

use crate::{btf::BtfError, kallsyms::KallsymsError};

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "ctscope needs root (or CAP_BPF and CAP_PERFMON to load eBPF programs, CAP_SYSLOG \
         to read kernel addresses in /proc/kallsyms, CAP_SYS_ADMIN to read other network \
         namespaces' counters); run it with sudo"
    )]
    NotPrivileged,
    #[error(
        "nf_conntrack is not loaded (no /proc/sys/net/netfilter/nf_conntrack_max); \
         nothing uses connection tracking on this machine yet. Load it with \
         `modprobe nf_conntrack`, or add a `ct state` rule"
    )]
    NoConntrack,
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error(transparent)]
    Kallsyms(#[from] KallsymsError),
    #[error("reading the kernel's BTF for the loader: {0}")]
    AyaBtf(#[source] aya::BtfError),
    #[error("counting CPUs: {0}")]
    Cpus(#[source] std::io::Error),
    #[error(
        "this ctscope binary was built without its eBPF programs (CTSCOPE_SKIP_EBPF); \
         rebuild it with `cargo xtask build`"
    )]
    NoObject,
    #[error("loading the eBPF object: {0}")]
    Load(#[source] EbpfError),
    #[error("the eBPF object has no program `{0}`; rebuild with `cargo xtask build`")]
    MissingProgram(&'static str),
    #[error("the eBPF object has no map `{0}`; rebuild with `cargo xtask build`")]
    MissingMap(&'static str),
    #[error("loading eBPF program `{name}`: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error(
        "attaching eBPF program `{name}`: {source}. The kernel refused the tracepoint; \
         `ctscope doctor` shows which program types this kernel allows"
    )]
    Attach {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error(
        "no `nf_conntrack` slab cache found among {walked} kmem_caches; is nf_conntrack \
         loaded? (`grep nf_conntrack /proc/slabinfo`)"
    )]
    CacheNotFound { walked: u32 },
    #[error(transparent)]
    Backend(#[from] super::backend::KprobeUnavailable),
    #[error(
        "attaching kprobe `{name}` to {function}: {source}. Run with --backend tracepoint \
         to use the tracepoints instead"
    )]
    Kprobe {
        name: &'static str,
        function: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("reading an eBPF map: {0}")]
    Map(#[from] MapError),
}

impl ProbeError {
    /// Errors about the environment (privileges, kernel features), as opposed
    /// to failures while running; the CLI exits with status 2 for these.
    pub fn is_environment(&self) -> bool {
        !matches!(self, Self::Map(_))
    }
}
