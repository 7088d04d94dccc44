//! Messages from event sources to the one owner of the state.
//!
//! Producers (the live probes, a recorded trace, the terminal) only send
//! these; the model applies them in order. A replayed trace produces exactly
//! the messages live capture produced, so every view works on both.

use conntrack_common::{Event, cause, counter};

use crate::kernel::{netns::NetnsReading, sysctl::Sysctls};

/// Totals of the in-kernel per-CPU counters, summed over CPUs, indexed by
/// `conntrack_common::counter`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters(pub [u64; counter::COUNT as usize]);

impl Counters {
    pub fn get(&self, index: u32) -> u64 {
        self.0.get(index as usize).copied().unwrap_or(0)
    }
}

/// A periodic reading of everything that is counted rather than streamed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// CLOCK_MONOTONIC in ns, the clock of `Event::ts_ns`.
    pub mono_ns: u64,
    /// Wall clock, ms since the Unix epoch.
    pub wall_ms: u64,
    /// In-kernel counters (exact, never sampled).
    pub counters: Counters,
    /// Per-namespace counts (source/netns.rs), by namespace identity.
    pub netns: Vec<NetnsSample>,
    /// The kernel's own counters, per namespace ctscope could enter.
    pub kernel: Vec<NetnsReading>,
    /// Sysctls of ctscope's own namespace (max and buckets are global).
    pub sysctls: Sysctls,
}

/// One network namespace's counts at a sample, cumulative since the probes
/// were attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct NetnsSample {
    /// Its identity for this boot: `net_cookie` (never reused), or the
    /// address of its `struct net` on kernels before 5.12; in traces
    /// written before 0.2, the inode number.
    pub id: u64,
    /// Inode number, as in "table full in netns N" (reused by the kernel
    /// as soon as a namespace is freed).
    pub inum: u32,
    /// Entries allocated: derived from frees and the live count
    /// (source/netns.rs).
    pub alloc: u64,
    pub free: u64,
    /// By cause, in `conntrack_common::cause` order.
    pub drops: [u64; cause::COUNT],
    /// Live entries (`nf_conntrack_count`); `None` where unknown.
    pub entries: Option<u64>,
    /// Still on the kernel's list of namespaces.
    pub alive: bool,
    /// Gone, and its counts final: this is the last sample that lists it.
    pub retired: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// Kernel events, in ring-buffer order.
    Events(Vec<Event>),
    /// Counters read at the end of an interval.
    Sample(Box<Sample>),
    /// A completed walk of the hash table.
    Buckets(Box<crate::model::buckets::BucketWalk>),
    /// The source starts over (a replay seeking backwards): forget
    /// everything applied so far; what follows is a new run.
    Reset,
}
