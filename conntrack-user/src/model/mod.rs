//! The aggregation model: the one owner of what ctscope knows.
//!
//! Sources send [`Message`]s; [`Model::apply`] folds them in and computes
//! every derived value (deltas, rates, per-namespace rows) at that moment, so
//! views only read. Live capture and a replayed trace go through the same
//! `apply`.

pub mod advice;
pub mod buckets;
pub mod drops;
pub mod holders;
mod interval;
mod kernel;
pub mod reconcile;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use buckets::BucketWalk;
use conntrack_common::{Event, cause, counter, kind};
use drops::{DropFilter, DropLog, DropRecord};
pub use interval::{Departed, DropCounts, Interval, NetnsRow, Rates, Table, Totals};
use kernel::KernelCounters;

use crate::{
    event::{Counters, Message, NetnsSample, Sample},
    kernel::{netns::NetnsReading, stats::ConntrackStats, sysctl::Sysctls},
};

/// Intervals kept for charts: an hour at one per second.
const HISTORY: usize = 3600;
/// Intervals that keep their per-namespace rows (the TUI's growth rate
/// reads the last ten); older ones keep only machine-wide figures, so the
/// history's size does not grow with the number of namespaces: ~0.5 KiB per
/// interval plus ~0.3 KiB per namespace in the newest 60 (a little over
/// 20 MiB with 1,000 namespaces).
pub const NETNS_HISTORY: usize = 60;

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
    /// The kernel's own counters per namespace, departed ones folded in.
    kernel: KernelCounters,
    /// Counts of namespaces that went away since start.
    departed: Departed,
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
    /// Excess of ctscope's causes over the kernel's counters since start
    /// (reconcile.rs).
    mismatch_total: reconcile::CauseMismatch,
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

    /// CLOCK_MONOTONIC time of the latest sample: the moment every counter
    /// in [`Self::latest`] was read. Drops are counted by the kernel at that
    /// moment and streamed as events around it; a view that shows both
    /// counts only the events up to it.
    pub fn sampled_mono_ns(&self) -> Option<u64> {
        self.prev.as_ref().map(|m| m.mono_ns)
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
        let kernel = self.fold_kernel(s);
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
        let netns = self.netns_rows(&first.netns, &s.netns, &s.kernel);
        let causes = reconcile::reconcile(&netns, &self.mismatch_total);
        self.mismatch_total = causes.total;
        let interval = Interval {
            ts_ms: s.wall_ms,
            interval_ms: elapsed_ns / 1_000_000,
            backend: self.info.backend.clone(),
            table: table(s),
            rates: Rates::between(&before, &totals, elapsed_ns),
            totals,
            kernel,
            netns,
            causes,
            departed: self.fold_departed(&first.netns, &s.netns),
            buckets: self.buckets.as_ref().map(buckets::BucketSummary::from),
        };
        self.latest = Some(interval.clone());
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        if let Some(old) = self
            .history
            .len()
            .checked_sub(NETNS_HISTORY)
            .and_then(|i| self.history.get_mut(i))
        {
            old.netns = Vec::new();
        }
        self.history.push_back(interval);
    }

    /// Updates the kernel's counters per namespace and returns their sum
    /// since start, departed namespaces included.
    fn fold_kernel(&mut self, s: &Sample) -> ConntrackStats {
        let live = s.netns.iter().filter(|n| n.alive);
        let ids: HashMap<u32, u64> = live.clone().map(|n| (n.inum, n.id)).collect();
        let alive: HashSet<u64> = live.map(|n| n.id).collect();
        // Without the namespace sampler (traces of ctscope 0.1), identities
        // are inode numbers and nothing is known to have departed.
        let alive = (!s.netns.is_empty()).then_some(&alive);
        self.kernel.update(&s.kernel, &ids, alive)
    }

    /// Folds the final counts of namespaces in their last sample
    /// (`retired`) into the departed aggregate, so per-namespace rows plus
    /// `departed` add up to the totals while the model forgets them.
    fn fold_departed(
        &mut self,
        base: &HashMap<u64, NetnsSample>,
        counted: &[NetnsSample],
    ) -> Departed {
        for n in counted.iter().filter(|n| n.retired) {
            let b = base.get(&n.id).copied().unwrap_or_default();
            let d = &mut self.departed;
            d.namespaces += 1;
            d.alloc += n.alloc.saturating_sub(b.alloc);
            d.free += n.free.saturating_sub(b.free);
            for (i, (x, y)) in n.drops.iter().zip(b.drops).enumerate() {
                d.drops_by_cause_array[i] += x.saturating_sub(y);
            }
        }
        let mut d = self.departed.clone();
        d.drops_by_cause = DropCounts::from_array(&d.drops_by_cause_array);
        d.drops = d.drops_by_cause_array.iter().sum();
        d.kernel = self.kernel.departed;
        d
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
            // Retired: counted in `departed` from now on.
            if n.retired
                || (alloc == 0
                    && free == 0
                    && drops.iter().all(|d| *d == 0)
                    && entries.unwrap_or(0) == 0)
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
                row.owner.clone_from(&r.owner);
                row.enter.clone_from(&r.enter);
                row.tcp_timeout_established = r.tcp_timeout_established;
                if row.entries.is_none() {
                    row.entries = r.count;
                }
            }
            row.kernel = self.kernel.of(row.id);
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
