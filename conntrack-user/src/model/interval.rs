//! One reporting interval: the record `ctscope stats --json` prints and the
//! unit of the TUI's history. Field names are the documented output
//! (docs/stats.schema.json); renaming one is a breaking change.

use conntrack_common::{cause, counter};
use serde::Serialize;

use crate::{event::Counters, kernel::stats::ConntrackStats, model::drops::Cause};

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Interval {
    /// Wall clock at the end of the interval, ms since the Unix epoch.
    pub ts_ms: u64,
    /// Length of the interval.
    pub interval_ms: u64,
    pub backend: String,
    pub table: Table,
    /// Since ctscope started.
    pub totals: Totals,
    /// Per second over this interval.
    pub rates: Rates,
    /// The kernel's own counters, summed over namespaces, since start.
    pub kernel: ConntrackStats,
    pub netns: Vec<NetnsRow>,
    /// ctscope's causes against the kernel's counters (reconcile.rs).
    pub causes: super::reconcile::Reconciliation,
    /// Namespaces that went away since start, their final counts summed:
    /// `netns` rows plus this add up to the totals.
    pub departed: Departed,
    /// The latest walk of the hash table (`stats --buckets`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buckets: Option<super::buckets::BucketSummary>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Table {
    /// Entries in all namespaces ctscope can read (`nf_conntrack_count` summed).
    pub entries: Option<u64>,
    /// `nf_conntrack_max`: the limit each namespace's count is held to.
    pub max: Option<u64>,
    /// `nf_conntrack_buckets`: hash table size, shared by all namespaces.
    pub buckets: Option<u64>,
    /// Entries of the fullest namespace: the kernel holds each namespace to
    /// `max` separately, so this, not the sum, is what fills up.
    pub fullest_entries: Option<u64>,
    /// That namespace's inode number.
    pub fullest_netns: Option<u32>,
}

impl Table {
    /// Fill of the fullest namespace (1.0 = at `nf_conntrack_max`).
    pub fn fill(&self) -> Option<f64> {
        match (self.fullest_entries, self.max) {
            (Some(e), Some(m)) if m > 0 => Some(e as f64 / m as f64),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub alloc: u64,
    pub free: u64,
    pub drop_table_full: u64,
    pub drop_invalid: u64,
    pub drop_insert_failed: u64,
    pub drop_chain_too_long: u64,
    pub drop_ruleset: u64,
    /// Drops by kernel code other than conntrack and the ruleset.
    pub drop_other: u64,
    /// From the kernel's counters: this backend has no probe on early_drop().
    pub early_drop: u64,
    /// Events the kernel could not deliver: the ring buffer was full.
    pub lost_events: u64,
    /// Probe runs the kernel skipped because the same probe was already
    /// running on that CPU (an interrupt landed in it and the softirq run on
    /// its way out hit the same hook). Most concern other slab caches; the
    /// counts are exact when this is 0 and can be short by at most this
    /// many otherwise.
    pub probe_misses: u64,
}

impl Totals {
    /// Counts between two counter readings, plus the kernel's early drops.
    pub fn between(first: &Counters, now: &Counters, kernel: &ConntrackStats) -> Self {
        let d = |i: u32| now.get(i).saturating_sub(first.get(i));
        let drop = |c: u8| d(counter::DROP_FIRST + u32::from(c));
        Self {
            alloc: d(counter::ALLOC),
            free: d(counter::FREE),
            drop_table_full: drop(cause::TABLE_FULL),
            drop_invalid: drop(cause::INVALID),
            drop_insert_failed: drop(cause::INSERT_FAILED),
            drop_chain_too_long: drop(cause::CHAIN_TOO_LONG),
            drop_ruleset: drop(cause::RULESET),
            drop_other: d(counter::DROP_OTHER),
            early_drop: kernel.early_drop,
            lost_events: d(counter::LOST_EVENTS),
            probe_misses: d(counter::PROBE_MISSES),
        }
    }

    /// The drops of each cause, `other` last (the order of [`DropCounts::by_cause`]
    /// then `other`).
    pub fn by_cause(&self) -> [(Cause, u64); 6] {
        [
            (Cause::TableFull, self.drop_table_full),
            (Cause::Invalid, self.drop_invalid),
            (Cause::InsertFailed, self.drop_insert_failed),
            (Cause::ChainTooLong, self.drop_chain_too_long),
            (Cause::Ruleset, self.drop_ruleset),
            (Cause::Other, self.drop_other),
        ]
    }

    /// All drops that conntrack itself caused (not the ruleset's).
    pub fn conntrack_drops(&self) -> u64 {
        self.drop_table_full
            + self.drop_invalid
            + self.drop_insert_failed
            + self.drop_chain_too_long
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Rates {
    pub alloc: f64,
    pub free: f64,
    pub drop_table_full: f64,
    pub drop_invalid: f64,
    pub drop_insert_failed: f64,
    pub drop_chain_too_long: f64,
    pub drop_ruleset: f64,
    pub early_drop: f64,
    pub lost_events: f64,
}

impl Rates {
    pub fn between(before: &Totals, after: &Totals, elapsed_ns: u64) -> Self {
        let secs = elapsed_ns as f64 / 1e9;
        let r = |a: u64, b: u64| {
            if secs > 0.0 {
                round2(a.saturating_sub(b) as f64 / secs)
            } else {
                0.0
            }
        };
        Self {
            alloc: r(after.alloc, before.alloc),
            free: r(after.free, before.free),
            drop_table_full: r(after.drop_table_full, before.drop_table_full),
            drop_invalid: r(after.drop_invalid, before.drop_invalid),
            drop_insert_failed: r(after.drop_insert_failed, before.drop_insert_failed),
            drop_chain_too_long: r(after.drop_chain_too_long, before.drop_chain_too_long),
            drop_ruleset: r(after.drop_ruleset, before.drop_ruleset),
            early_drop: r(after.early_drop, before.early_drop),
            lost_events: r(after.lost_events, before.lost_events),
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Drops per cause, named as in the output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DropCounts {
    pub table_full: u64,
    pub invalid: u64,
    pub insert_failed: u64,
    pub chain_too_long: u64,
    pub ruleset: u64,
}

impl DropCounts {
    pub fn from_array(a: &[u64; cause::COUNT]) -> Self {
        Self {
            table_full: a[cause::TABLE_FULL as usize],
            invalid: a[cause::INVALID as usize],
            insert_failed: a[cause::INSERT_FAILED as usize],
            chain_too_long: a[cause::CHAIN_TOO_LONG as usize],
            ruleset: a[cause::RULESET as usize],
        }
    }

    /// The counts with their causes (`other` is counted machine-wide only).
    pub fn by_cause(&self) -> [(Cause, u64); 5] {
        [
            (Cause::TableFull, self.table_full),
            (Cause::Invalid, self.invalid),
            (Cause::InsertFailed, self.insert_failed),
            (Cause::ChainTooLong, self.chain_too_long),
            (Cause::Ruleset, self.ruleset),
        ]
    }
}

/// One network namespace: by inode number (as in "table full in netns N")
/// for people, by `id` for identity (inode numbers are reused).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NetnsRow {
    pub inum: u32,
    /// Identity for this boot (`net_cookie`; see `event::NetnsSample::id`).
    pub id: u64,
    /// Still exists (false: it was deleted; its counts are final).
    pub alive: bool,
    /// `ip netns` name, when it has one.
    pub name: Option<String>,
    /// The process holding it, with its container and pod, when one is
    /// found (`kernel::netns::describe_owner`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The kernel's `nf_conntrack_count` for this namespace.
    pub entries: Option<u64>,
    /// Entries allocated in this namespace since start.
    pub alloc: u64,
    pub free: u64,
    /// All netfilter drops in this namespace since start.
    pub drops: u64,
    pub drops_by_cause: DropCounts,
    /// The kernel's counters for this namespace since start.
    pub kernel: Option<ConntrackStats>,
    /// How a command reaches it, from the latest reading (not reported).
    #[serde(skip)]
    pub enter: crate::kernel::netns::Enter,
    /// Its `nf_conntrack_tcp_timeout_established` (not reported).
    #[serde(skip)]
    pub tcp_timeout_established: Option<u64>,
}

impl NetnsRow {
    pub fn new(inum: u32) -> Self {
        Self {
            inum,
            ..Self::default()
        }
    }
}

/// The final counts of every namespace that went away since start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Departed {
    /// How many.
    pub namespaces: u64,
    pub alloc: u64,
    pub free: u64,
    pub drops: u64,
    pub drops_by_cause: DropCounts,
    #[serde(skip)]
    pub drops_by_cause_array: [u64; cause::COUNT],
    /// The kernel's own counters of those namespaces.
    pub kernel: ConntrackStats,
}
