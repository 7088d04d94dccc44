//! Reading the kernel's own conntrack counters and sysctls, per network namespace.
//!
//! ctscope counts conntrack events with eBPF; this module reads what the kernel itself
//! counts (`struct ip_conntrack_stat`, per CPU, per namespace) so the two can be shown
//! side by side and checked against each other.
//!
//! - [`stats`]: [`ConntrackStats`], the counters summed over CPUs.
//! - [`procfs`]: parser for /proc/net/stat/nf_conntrack.
//! - [`ctnetlink`] (+ `nlwire`): the same counters over netlink, for kernels without
//!   CONFIG_NF_CONNTRACK_PROCFS.
//! - [`sysctl`]: /proc/sys/net/netfilter values and a writer for tests.
//! - [`netns`]: enumerates network namespaces and reads each from inside it.

pub mod ctnetlink;
pub mod netns;
mod nlwire;
pub mod procfs;
pub mod restore;
pub mod stats;
pub mod sysctl;

#[cfg(test)]
mod live_tests;

pub use ctnetlink::{CtnetlinkError, CtnetlinkReading, CtnetlinkSocket};
pub use netns::{
    Enter, NetnsError, NetnsHandle, NetnsReading, OpenStats, StatsSource, StatsSourceUsed,
    list_namespaces, own_netns_inode, read_namespaces, read_one, read_these,
};
pub use procfs::ProcfsError;
pub use stats::ConntrackStats;
pub use sysctl::{Sysctls, write_sysctl};
