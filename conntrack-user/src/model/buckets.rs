//! The latest walk of the conntrack hash table: chain lengths per bucket.
//!
//! Produced by the bucket walker (probe/walk.rs); kept by the model for the
//! TUI, `stats --buckets` and the metrics. The aggregation from raw chain
//! lengths ([`summarize`]) and the advice ([`warnings`]) are pure functions.
//! Field names are the documented output (docs/buckets.schema.json).

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
    /// The entry's original-direction tuple (as `conntrack -L` prints first).
    pub src: String,
    pub sport: u16,
    pub dst: String,
    pub dport: u16,
    /// Protocol state, e.g. ESTABLISHED for TCP; empty when not applicable.
    pub state: String,
    pub netns: u32,
    /// Seconds until the entry expires (negative: expired, awaiting GC).
    pub timeout_s: i64,
    pub zone: u16,
    pub mark: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HotBucket {
    pub index: u64,
    pub len: u32,
    /// The nodes on the chain when it was listed (at most 128), head first.
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
    /// How the table was found: "seq_file", "entry", or "" when the table
    /// is empty and was not needed.
    pub located_by: String,
    /// Times the table had to be found again (resizes) since ctscope started.
    pub relocations: u64,
    /// Chains longer than the walker counts (65535 nodes).
    pub truncated: u64,
    /// The kernel's smallest chain limit (MIN_CHAINLEN): inserts fail on a
    /// chain of more than a random limit of at least this many nodes.
    pub chain_limit: u32,
    /// Who holds the table: the entries grouped (walks with holders on;
    /// absent from plain walks and from traces written before holders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holders: Option<super::holders::Holders>,
}

impl BucketWalk {
    /// A walk of an empty table of `buckets` buckets.
    pub fn empty(buckets: u64) -> Self {
        let mut histogram = [0; 13];
        histogram[0] = buckets;
        Self {
            buckets,
            histogram,
            heat: Vec::new(),
            ..Self::default()
        }
    }
}

/// What [`summarize`] derives from the chain lengths.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub nodes: u64,
    pub histogram: [u64; 13],
    pub mean: f64,
    pub mean_nonempty: f64,
    pub max: u32,
    pub p99: u32,
    pub heat: Vec<u32>,
    /// (bucket, length) of the `top` longest chains, longest first, lower
    /// index first among equals.
    pub hottest: Vec<(u64, u32)>,
}

/// Histogram, means, max, p99, heat strip and the `top` longest chains of
/// a walk's chain lengths (one per bucket, in bucket order).
pub fn summarize(lens: &[u16], top: usize, heat_slices: usize) -> Summary {
    let mut s = Summary::default();
    let mut counts = vec![0u64; usize::from(u16::MAX) + 1];
    let mut nonempty = 0u64;
    for &len in lens {
        counts[usize::from(len)] += 1;
        s.nodes += u64::from(len);
        nonempty += u64::from(len > 0);
        s.histogram[histogram_class(u32::from(len))] += 1;
    }
    let n = lens.len() as u64;
    if n == 0 {
        return s;
    }
    s.mean = round3(s.nodes as f64 / n as f64);
    s.mean_nonempty = if nonempty > 0 {
        round3(s.nodes as f64 / nonempty as f64)
    } else {
        0.0
    };
    s.max = counts.iter().rposition(|c| *c > 0).unwrap_or(0) as u32;
    // Nearest rank: the smallest length at or below which 99% of buckets are.
    let rank = (n * 99).div_ceil(100);
    let mut seen = 0;
    for (len, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            s.p99 = len as u32;
            break;
        }
    }
    let slices = heat_slices.clamp(1, lens.len());
    s.heat = (0..slices)
        .map(|i| {
            let lo = i * lens.len() / slices;
            let hi = (i + 1) * lens.len() / slices;
            lens[lo..hi].iter().copied().max().map_or(0, u32::from)
        })
        .collect();
    s.hottest = top_chains(lens, top);
    s
}

/// The `k` longest chains, longest first, by counting down from the longest
/// length (no sort of the whole table).
fn top_chains(lens: &[u16], k: usize) -> Vec<(u64, u32)> {
    if k == 0 {
        return Vec::new();
    }
    let mut best: Vec<(u64, u32)> = Vec::with_capacity(k + 1);
    for (i, &len) in lens.iter().enumerate() {
        let len = u32::from(len);
        if len == 0 || (best.len() == k && best.last().is_some_and(|(_, l)| *l >= len)) {
            continue;
        }
        let pos = best.partition_point(|(_, l)| *l >= len);
        best.insert(pos, (i as u64, len));
        best.truncate(k);
    }
    best
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Advice from the tuning guide (shared/seed/conntrack-tuning-guide.md): a
/// mean chain above 1 slows every lookup, and chains near the kernel's
/// limit mean inserts are about to fail (`chaintoolong`).
pub fn warnings(w: &BucketWalk) -> Vec<String> {
    let mut out = Vec::new();
    if w.mean > 1.0 {
        let want = w.nodes.next_power_of_two().max(w.buckets * 2);
        out.push(format!(
            "mean chain length {:.2} is above 1: every lookup walks a long chain. Raise the \
             hash table size to at least the number of nodes: `sysctl -w \
             net.netfilter.nf_conntrack_buckets={want}`",
            w.mean
        ));
    }
    let near = w.chain_limit.saturating_sub(w.chain_limit / 5).max(1);
    if w.chain_limit > 0 && w.max >= near {
        let hot = w
            .hottest
            .first()
            .map_or(String::new(), |b| format!(" (bucket {})", b.index));
        out.push(format!(
            "longest chain has {} nodes{hot}: the kernel refuses inserts into chains longer \
             than a random limit of {} to {} nodes, so insert failures (chaintoolong drops) \
             are coming; raise net.netfilter.nf_conntrack_buckets",
            w.max,
            w.chain_limit + 2,
            w.chain_limit + 31
        ));
    }
    if w.truncated > 0 {
        out.push(format!(
            "{} chains are longer than 65535 nodes and were counted as 65535",
            w.truncated
        ));
    }
    out
}

/// The walk in one `stats` record: the summary without the entries.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BucketSummary {
    pub ts_ms: u64,
    pub buckets: u64,
    pub entries: u64,
    pub nodes: u64,
    pub mean: f64,
    pub mean_nonempty: f64,
    pub max: u32,
    pub p99: u32,
    pub histogram: [u64; 13],
    pub duration_ns: u64,
    pub cpu_ns: u64,
    pub restarts: u64,
    pub warnings: Vec<String>,
}

impl From<&BucketWalk> for BucketSummary {
    fn from(w: &BucketWalk) -> Self {
        Self {
            ts_ms: w.ts_ms,
            buckets: w.buckets,
            entries: w.entries,
            nodes: w.nodes,
            mean: w.mean,
            mean_nonempty: w.mean_nonempty,
            max: w.max,
            p99: w.p99,
            histogram: w.histogram,
            duration_ns: w.duration_ns,
            cpu_ns: w.cpu_ns,
            restarts: w.restarts,
            warnings: w.warnings.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_every_length() {
        assert_eq!(histogram_class(0), 0);
        assert_eq!(histogram_class(8), 8);
        assert_eq!(histogram_class(9), 9);
        assert_eq!(histogram_class(16), 9);
        assert_eq!(histogram_class(17), 10);
        assert_eq!(histogram_class(64), 11);
        assert_eq!(histogram_class(65), 12);
        assert_eq!(histogram_class(u32::MAX), 12);
    }

    #[test]
    fn summary_of_a_small_table() {
        // 10 buckets, 12 nodes, 6 non-empty.
        let lens = [0, 2, 0, 5, 1, 0, 1, 0, 2, 1];
        let s = summarize(&lens, 3, 5);
        assert_eq!(s.nodes, 12);
        assert_eq!(s.histogram[0], 4);
        assert_eq!(s.histogram[1], 3);
        assert_eq!(s.histogram[2], 2);
        assert_eq!(s.histogram[5], 1);
        assert_eq!(s.histogram.iter().sum::<u64>(), 10);
        assert_eq!(s.mean, 1.2);
        assert_eq!(s.mean_nonempty, 2.0);
        assert_eq!(s.max, 5);
        assert_eq!(s.p99, 5);
        assert_eq!(s.heat, vec![2, 5, 1, 1, 2]);
        assert_eq!(s.hottest, vec![(3, 5), (1, 2), (8, 2)]);
    }

    #[test]
    fn p99_is_the_nearest_rank() {
        // 1000 buckets: 990 of length 1, 10 of length 9.
        let mut lens = vec![1u16; 990];
        lens.extend([9u16; 10]);
        assert_eq!(summarize(&lens, 0, 1).p99, 1);
        lens[0] = 9;
        assert_eq!(summarize(&lens, 0, 1).p99, 9);
    }

    #[test]
    fn empty_and_degenerate_inputs() {
        let s = summarize(&[], 5, 64);
        assert_eq!(s, Summary::default());
        let s = summarize(&[0, 0, 0], 5, 64);
        assert_eq!(s.mean_nonempty, 0.0);
        assert_eq!(s.heat, vec![0, 0, 0], "no more slices than buckets");
        assert!(s.hottest.is_empty(), "empty chains are never hot");
        let w = BucketWalk::empty(128);
        assert_eq!(w.histogram[0], 128);
        assert!(warnings(&w).is_empty());
    }

    #[test]
    fn top_k_keeps_the_longest() {
        let lens: Vec<u16> = (0..1000).map(|i| (i * 7919 % 1000) as u16).collect();
        let top = top_chains(&lens, 4);
        assert_eq!(
            top.iter().map(|(_, l)| *l).collect::<Vec<_>>(),
            vec![999, 998, 997, 996]
        );
        for (i, l) in top {
            assert_eq!(u32::from(lens[i as usize]), l);
        }
    }

    #[test]
    fn warnings_follow_the_tuning_guide() {
        let mut w = BucketWalk {
            buckets: 1024,
            nodes: 3000,
            entries: 1500,
            mean: 2.93,
            max: 9,
            chain_limit: 50,
            ..BucketWalk::default()
        };
        let ws = warnings(&w);
        assert_eq!(ws.len(), 1, "{ws:?}");
        assert!(
            ws[0].contains("sysctl -w net.netfilter.nf_conntrack_buckets=4096"),
            "{ws:?}"
        );
        w.mean = 0.5;
        w.max = 41;
        w.hottest = vec![HotBucket {
            index: 7,
            len: 41,
            entries: vec![],
        }];
        let ws = warnings(&w);
        assert_eq!(ws.len(), 1, "{ws:?}");
        assert!(
            ws[0].contains("41 nodes (bucket 7)") && ws[0].contains("52 to 81"),
            "{ws:?}"
        );
        w.max = 39;
        assert!(warnings(&w).is_empty());
    }
}
