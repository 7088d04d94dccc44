//! The aggregation model: the one owner of what ctscope knows.
//!
//! Sources send [`Message`]s; [`Model::apply`] folds them in and computes
//! every derived value (deltas, rates, per-namespace rows) at that moment, so
//! views only read. Live capture and a replayed trace go through the same
//! `apply`.

pub mod advice;
pub mod buckets;
pub mod drops;
mod interval;

use std::collections::{BTreeMap, HashMap, VecDeque};

use buckets::BucketWalk;
use conntrack_common::{Event, cause, counter, kind};
use drops::{DropFilter, DropLog, DropRecord};
pub use interval::{DropCounts, Interval, NetnsRow, Rates, Table, Totals};

use crate::{
    event::{Counters, Message, NetnsSample, Sample},
    kernel::{netns::NetnsReading, stats::ConntrackStats, sysctl::Sysctls},
};

/// Intervals kept for charts: an hour at one per second.
const HISTORY: usize = 3600;

/// Static facts about the run, shown in headers and written to traces.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunInfo {
    /// `tracepoint` (BTF tracepoints) or `kprobe`.
    pub backend: String,
    /// Kernel release of the observed machine.
    pub kernel: String,
}

/// The state of the previous sample, for deltas.
#[derive(Clone, Debug, Default)]
struct Mark {
    mono_ns: u64,
    counters: Counters,
    kernel: ConntrackStats,
    /// By namespace identity (`NetnsSample::id`).
    netns: HashMap<u64, NetnsSample>,
}

#[derive(Clone, Debug, Default)]
pub struct Model {
    pub info: RunInfo,
    first: Option<Mark>,
    prev: Option<Mark>,
    /// The most recent completed interval.
    pub latest: Option<Interval>,
    /// Completed intervals, oldest first.
    pub history: VecDeque<Interval>,
    /// Kernel counters of each namespace when ctscope first read it.
    kernel_base: HashMap<u32, ConntrackStats>,
    /// Latest kernel delta of each namespace ever read (kept after the
    /// namespace goes away, so sums never go backwards).
    kernel_delta: BTreeMap<u32, ConntrackStats>,
    pub sysctls: Sysctls,
    /// Kernel events applied so far.
    pub events_seen: u64,
    /// The kernel's own view of each namespace at the latest sample
    /// (absolute counters, entry counts).
    pub kernel_now: Vec<NetnsReading>,
    /// Dropped packets in detail, with top-N aggregations.
    pub drops: DropLog,
    /// The latest walk of the hash table, if any.
    pub buckets: Option<BucketWalk>,
    /// Wall clock minus CLOCK_MONOTONIC, in ns, from the latest sample: turns
    /// kernel timestamps into times of day.
    clock_offset_ns: Option<i128>,
}

impl Model {
    pub fn new(info: RunInfo) -> Self {
        Self {
            info,
            ..Self::default()
        }
    }

    /// A model whose per-packet drop view keeps only what `filter` matches.
    pub fn with_drop_filter(info: RunInfo, filter: DropFilter) -> Self {
        Self {
            info,
            drops: DropLog::new(filter),
            ..Self::default()
        }
    }

    pub fn apply(&mut self, msg: Message) {
        match msg {
            Message::Events(events) => self.apply_events(&events),
            Message::Sample(sample) => self.apply_sample(&sample),
            Message::Buckets(walk) => self.buckets = Some(*walk),
            Message::Reset => {
                let filter = std::mem::take(&mut self.drops.filter);
                *self = Self::with_drop_filter(std::mem::take(&mut self.info), filter);
            }
        }
    }

    fn apply_events(&mut self, events: &[Event]) {
        self.events_seen += events.len() as u64;
        self.drops.begin_batch();
        for ev in events {
            if ev.kind == kind::DROP
                && let Some(d) = DropRecord::from_event(ev)
            {
                self.drops.push(d);
            }
        }
    }

    /// Number of completed intervals.
    pub fn intervals(&self) -> usize {
        self.history.len()
    }

    /// Wall-clock ms of a kernel (CLOCK_MONOTONIC) timestamp, once a sample
    /// has tied the two clocks together.
    pub fn wall_ms_of(&self, mono_ns: u64) -> Option<u64> {
        let wall_ns = i128::from(mono_ns) + self.clock_offset_ns?;
        u64::try_from(wall_ns / 1_000_000).ok()
    }

    fn apply_sample(&mut self, s: &Sample) {
        self.sysctls = s.sysctls;
        self.kernel_now.clone_from(&s.kernel);
        self.clock_offset_ns = Some(i128::from(s.wall_ms) * 1_000_000 - i128::from(s.mono_ns));
        let kernel = self.fold_kernel(&s.kernel);
        let mark = Mark {
            mono_ns: s.mono_ns,
            counters: s.counters,
            kernel,
            netns: s.netns.iter().map(|n| (n.id, *n)).collect(),
        };
        let Some(first) = self.first.clone() else {
            self.first = Some(mark.clone());
            self.prev = Some(mark);
            return;
        };
        let prev = self.prev.replace(mark.clone()).unwrap_or_default();
        let totals = Totals::between(&first.counters, &mark.counters, &kernel);
        let before = Totals::between(&first.counters, &prev.counters, &prev.kernel);
        let elapsed_ns = mark.mono_ns.saturating_sub(prev.mono_ns);
        let interval = Interval {
            ts_ms: s.wall_ms,
            interval_ms: elapsed_ns / 1_000_000,
            backend: self.info.backend.clone(),
            table: table(s),
            rates: Rates::between(&before, &totals, elapsed_ns),
            totals,
            kernel,
            netns: self.netns_rows(&first.netns, &s.netns, &s.kernel),
            buckets: self.buckets.as_ref().map(buckets::BucketSummary::from),
        };
        self.latest = Some(interval.clone());
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(interval);
    }

    /// Updates per-namespace kernel deltas and returns their sum.
    fn fold_kernel(&mut self, readings: &[NetnsReading]) -> ConntrackStats {
        for r in readings {
            let Some(stats) = r.stats else { continue };
            let base = *self.kernel_base.entry(r.inum).or_insert(stats);
            self.kernel_delta.insert(r.inum, stats.delta_since(&base));
        }
        self.kernel_delta
            .values()
            .fold(ConntrackStats::default(), |acc, d| acc.wrapping_add(d))
    }

    /// Rows for namespaces with conntrack activity: counted by the probes,
    /// or holding entries. One row per namespace identity: two namespaces
    /// that had the same inode number in turn are two rows.
    fn netns_rows(
        &self,
        base: &HashMap<u64, NetnsSample>,
        counted: &[NetnsSample],
        readings: &[NetnsReading],
    ) -> Vec<NetnsRow> {
        // The kernel's own counters are read by entering each namespace
        // that has a path, and so are known by inode: they belong to the
        // live namespace with that inode.
        let by_inum: HashMap<u32, &NetnsReading> = readings.iter().map(|r| (r.inum, r)).collect();
        let mut rows: BTreeMap<(u32, u64), NetnsRow> = BTreeMap::new();
        let mut live_inums = std::collections::HashSet::new();
        for n in counted {
            if n.alive {
                live_inums.insert(n.inum);
            }
            let b = base.get(&n.id).copied().unwrap_or_default();
            let drops: [u64; cause::COUNT] =
                std::array::from_fn(|i| n.drops[i].saturating_sub(b.drops[i]));
            let alloc = n.alloc.saturating_sub(b.alloc);
            let free = n.free.saturating_sub(b.free);
            let reading = by_inum.get(&n.inum).filter(|_| n.alive);
            let entries = n.entries.or_else(|| reading.and_then(|r| r.count));
            if alloc == 0 && free == 0 && drops.iter().all(|d| *d == 0) && entries.unwrap_or(0) == 0
            {
                continue;
            }
            let mut row = NetnsRow::new(n.inum);
            row.id = n.id;
            row.alive = n.alive;
            row.alloc = alloc;
            row.free = free;
            row.drops_by_cause = DropCounts::from_array(&drops);
            row.drops = drops.iter().sum();
            row.entries = entries;
            rows.insert((n.inum, n.id), row);
        }
        for r in readings {
            let known = rows.keys().any(|(inum, _)| *inum == r.inum);
            if !known && !live_inums.contains(&r.inum) && r.count.unwrap_or(0) > 0 {
                let mut row = NetnsRow::new(r.inum);
                row.id = u64::from(r.inum);
                row.alive = true;
                rows.insert((r.inum, row.id), row);
            }
        }
        for row in rows.values_mut() {
            if !row.alive {
                continue;
            }
            if let Some(r) = by_inum.get(&row.inum) {
                row.name.clone_from(&r.name);
                if row.entries.is_none() {
                    row.entries = r.count;
                }
            }
            row.kernel = self.kernel_delta.get(&row.inum).copied();
        }
        rows.into_values().collect()
    }
}

fn table(s: &Sample) -> Table {
    // The live counts `sample_netns` read for every namespace on the
    // kernel's list, or where it did not run (traces of ctscope 0.1), the
    // counts read by entering each namespace.
    let counts: Vec<(u64, u32)> = if s.netns.iter().any(|n| n.alive && n.entries.is_some()) {
        s.netns
            .iter()
            .filter(|n| n.alive)
            .filter_map(|n| n.entries.map(|c| (c, n.inum)))
            .collect()
    } else {
        s.kernel
            .iter()
            .filter_map(|r| r.count.map(|c| (c, r.inum)))
            .collect()
    };
    let fullest = counts
        .iter()
        .copied()
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    Table {
        entries: (!counts.is_empty()).then(|| counts.iter().map(|c| c.0).sum()),
        max: s.sysctls.nf_conntrack_max,
        buckets: s.sysctls.nf_conntrack_buckets,
        fullest_entries: fullest.map(|f| f.0),
        fullest_netns: fullest.map(|f| f.1),
    }
}

/// Drops counted per cause by the probes.
pub fn drops_of(counters: &Counters) -> [u64; cause::COUNT] {
    std::array::from_fn(|i| counters.get(counter::DROP_FIRST + i as u32))
}

#[cfg(test)]
mod tests;
