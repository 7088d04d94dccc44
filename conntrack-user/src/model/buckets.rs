//! The latest walk of the conntrack hash table: chain lengths per bucket.
//!
//! Produced by the bucket walker (issue: per-bucket occupancy); kept by the
//! model for the TUI, `stats --buckets` and the metrics.

use serde::{Deserialize, Serialize};

/// Histogram classes of chain length: 0 to 8 one by one, then 9-16, 17-32,
/// 33-64 and more than 64.
pub const HISTOGRAM_LABELS: [&str; 13] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9-16", "17-32", "33-64", ">64",
];

/// Histogram class of a chain length.
pub fn histogram_class(len: u32) -> usize {
    match len {
        0..=8 => len as usize,
        9..=16 => 9,
        17..=32 => 10,
        33..=64 => 11,
        _ => 12,
    }
}

/// One entry (one of its two tuple nodes) found in a hot bucket.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChainEntry {
    /// "original" or "reply": which of the entry's two nodes is in this bucket.
    pub direction: String,
    pub proto: String,
    pub src: String,
    pub sport: u16,
    pub dst: String,
    pub dport: u16,
    /// Protocol state, e.g. ESTABLISHED for TCP; empty when not applicable.
    pub state: String,
    pub netns: u32,
    /// Seconds until the entry expires (negative: expired, awaiting GC).
    pub timeout_s: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HotBucket {
    pub index: u64,
    pub len: u32,
    pub entries: Vec<ChainEntry>,
}

/// The result of one full walk.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BucketWalk {
    /// Wall clock when the walk finished, ms since the Unix epoch.
    pub ts_ms: u64,
    /// Buckets walked (`nf_conntrack_buckets`).
    pub buckets: u64,
    /// Entries: nodes / 2 (each entry is linked twice, once per direction).
    pub entries: u64,
    /// Nodes counted on all chains.
    pub nodes: u64,
    /// Buckets per chain-length class ([`HISTOGRAM_LABELS`]).
    pub histogram: [u64; 13],
    /// Mean chain length over all buckets.
    pub mean: f64,
    /// Mean chain length over non-empty buckets.
    pub mean_nonempty: f64,
    pub max: u32,
    pub p99: u32,
    /// The longest chains, longest first, with their entries.
    pub hottest: Vec<HotBucket>,
    /// Longest chain in each of equal slices of the bucket space, for a heat
    /// strip.
    pub heat: Vec<u32>,
    /// Wall time of the walk.
    pub duration_ns: u64,
    /// CPU time the walk used in the kernel.
    pub cpu_ns: u64,
    /// Chains re-walked because an entry moved under the walk.
    pub restarts: u64,
    /// Advice from the tuning guide, one line each.
    pub warnings: Vec<String>,
}
