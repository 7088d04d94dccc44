//! Per-namespace counts from what the kernel side reads: frees and drops
//! counted by the probes, and each namespace's live entry count listed by
//! `sample_netns`.
//!
//! No probe runs on the machine's slab allocations in counting modes (it
//! would run for every slab object of the machine, conntrack's or not).
//! Allocations are derived instead: in a namespace, allocations minus frees
//! is the change of its live count, so
//!
//! ```text
//! alloc(t) = free(t) + count(t) - count(first seen)
//! ```
//!
//! with `count(first seen)` = 0 for a namespace created after ctscope
//! started (namespaces are appended to the kernel's list, and a new one
//! starts empty). The count and the free counter are read a few
//! microseconds apart, so a reading can be off by the allocations in that
//! gap; the reported value never goes down (the next reading catches up),
//! and it is exact whenever the namespace is quiet.
//!
//! A namespace that leaves the kernel's list is being torn down: conntrack
//! frees all its entries (`nf_conntrack_cleanup_net_list` waits for its
//! count to reach 0), so from then on `alloc = max(frozen, free - base)`,
//! exact once the last entry is freed. When its counters have not moved for
//! [`RETIRE_AFTER_NS`] it is reported one last time as retired, and its
//! kernel map entry can be deleted.

use std::collections::{BTreeMap, HashMap};

use conntrack_common::{NetnsCounters, NetnsList};

use crate::event::NetnsSample;

/// How long a departed namespace's counters must stay unchanged before it
/// is retired (its entries are freed within moments of its teardown).
pub const RETIRE_AFTER_NS: u64 = 10_000_000_000;

#[derive(Clone, Debug)]
struct Tracked {
    inum: u32,
    /// Live count when first seen (0 for a namespace created since start).
    base: i64,
    /// Live count at the latest reading while on the list.
    count: i64,
    /// Frees counted at that reading.
    free_when_seen: u64,
    /// Frees counted at the last reading that found it on the list, once
    /// it has left the list.
    free_at_departure: Option<u64>,
    counters: NetnsCounters,
    /// The value reported last (never decreases).
    alloc: u64,
    /// When the counters last changed (CLOCK_MONOTONIC ns).
    changed_ns: u64,
}

impl Tracked {
    fn new(inum: u32, base: i64, now_ns: u64) -> Self {
        Self {
            inum,
            base,
            count: base,
            free_when_seen: 0,
            free_at_departure: None,
            counters: NetnsCounters::default(),
            alloc: 0,
            changed_ns: now_ns,
        }
    }

    fn alive(&self) -> bool {
        self.free_at_departure.is_none()
    }

    /// Entries live now: the latest count, or for a departed namespace the
    /// count at departure less the frees since.
    fn entries(&self) -> u64 {
        let live = match self.free_at_departure {
            None => self.count,
            Some(f) => self.count - self.counters.free.saturating_sub(f) as i64,
        };
        live.max(0) as u64
    }

    fn derive_alloc(&mut self, derive: bool) {
        let free = self.counters.free as i64;
        let alloc = if !derive {
            self.counters.alloc as i64
        } else {
            match self.free_at_departure {
                None => free + self.count - self.base,
                // Torn down: every entry still live at departure gets freed.
                Some(f) => (f as i64 + self.count).max(free) - self.base,
            }
        };
        self.alloc = self.alloc.max(alloc.max(0) as u64);
    }

    fn sample(&self, key: u64) -> NetnsSample {
        NetnsSample {
            id: key,
            inum: self.inum,
            alloc: self.alloc,
            free: self.counters.free,
            drops: self.counters.drops,
            entries: Some(self.entries()),
            alive: self.alive(),
            retired: false,
        }
    }
}

/// Turns readings into per-namespace counts; one per live source.
#[derive(Debug)]
pub struct NetnsTracker {
    /// Frees are counted by a probe, so allocations can be derived.
    derive: bool,
    started: bool,
    /// The previous walk went round the whole list.
    prev_complete: bool,
    tracked: HashMap<u64, Tracked>,
    /// Allocations of the namespaces retired so far.
    retired_alloc: u64,
}

/// The outcome of one reading.
#[derive(Debug, Default)]
pub struct Reading {
    pub rows: Vec<NetnsSample>,
    /// Keys of namespaces retired by this reading: their kernel map entries
    /// can go.
    pub retired: Vec<u64>,
}

impl NetnsTracker {
    /// `derive`: frees are counted per namespace (the free probe is
    /// attached), so allocations are derived from them; otherwise the
    /// kernel's own `alloc` counters are passed through (0 on the
    /// tracepoint backend).
    pub fn new(derive: bool) -> Self {
        Self {
            derive,
            started: false,
            prev_complete: false,
            tracked: HashMap::new(),
            retired_alloc: 0,
        }
    }

    /// Allocations in all namespaces, the retired ones included: the
    /// machine-wide total, which never goes down.
    pub fn total_alloc(&self) -> u64 {
        self.retired_alloc + self.tracked.values().map(|t| t.alloc).sum::<u64>()
    }

    /// Folds in one reading: the probes' counters, then the kernel's list of
    /// namespaces, read in that order at about `now_ns`. In that order a
    /// free between the two readings makes an allocation count too low
    /// until the next reading, never too high (which the "never goes down"
    /// rule would keep).
    pub fn update(
        &mut self,
        list: &NetnsList,
        counters: &[(u64, NetnsCounters)],
        now_ns: u64,
    ) -> Reading {
        let len = (list.len as usize).min(list.items.len());
        let live = &list.items[..len];
        let mut on_list: HashMap<u64, (u32, i64)> = HashMap::with_capacity(len);
        for item in live {
            on_list.insert(item.key, (item.inum, i64::from(item.count.max(0))));
        }
        // A namespace first seen now was created since the previous reading
        // (and started empty), unless this is the first reading or the
        // previous walk did not see the whole list.
        let unknown_history = !self.started || !self.prev_complete;
        self.started = true;
        self.prev_complete = list.complete != 0;
        let base = |count: i64| if unknown_history { count } else { 0 };
        for (key, c) in counters {
            let t = self
                .tracked
                .entry(*key)
                .or_insert_with(|| match on_list.get(key) {
                    Some(&(inum, count)) => Tracked::new(inum, base(count), now_ns),
                    // Created and gone between two readings: never seen alive.
                    None => {
                        let mut t = Tracked::new(c.inum, 0, now_ns);
                        t.count = 0;
                        t.free_at_departure = Some(0);
                        t
                    }
                });
            if t.counters != *c {
                t.changed_ns = now_ns;
                let inum = if t.inum == 0 { c.inum } else { t.inum };
                t.counters = *c;
                t.inum = inum;
            }
        }
        for (&key, &(inum, count)) in &on_list {
            let t = self
                .tracked
                .entry(key)
                .or_insert_with(|| Tracked::new(inum, base(count), now_ns));
            t.count = count;
            t.free_when_seen = t.counters.free;
            if t.inum == 0 {
                t.inum = inum;
            }
        }
        // Only a complete walk proves a namespace is gone.
        if list.complete != 0 {
            for (key, t) in &mut self.tracked {
                if t.alive() && !on_list.contains_key(key) {
                    t.free_at_departure = Some(t.free_when_seen);
                    t.changed_ns = now_ns;
                }
            }
        }
        let mut out = Reading::default();
        let mut rows: BTreeMap<u64, NetnsSample> = BTreeMap::new();
        for (key, t) in &mut self.tracked {
            t.derive_alloc(self.derive);
            let mut row = t.sample(*key);
            if !t.alive() && now_ns.saturating_sub(t.changed_ns) >= RETIRE_AFTER_NS {
                row.retired = true;
                row.entries = Some(0);
                out.retired.push(*key);
            }
            rows.insert(*key, row);
        }
        for key in &out.retired {
            if let Some(t) = self.tracked.remove(key) {
                self.retired_alloc += t.alloc;
            }
        }
        out.rows = rows.into_values().collect();
        out
    }
}

#[cfg(test)]
mod tests {
    use conntrack_common::{MAX_NETNS_SAMPLED, NetnsSample as KernelNs};

    use super::*;

    fn list(items: &[(u64, u32, i32)]) -> Box<NetnsList> {
        // SAFETY: NetnsList is plain old data; zeroes are a valid value.
        let mut l: Box<NetnsList> = unsafe { Box::new_zeroed().assume_init() };
        for (i, (key, inum, count)) in items.iter().enumerate() {
            l.items[i] = KernelNs {
                key: *key,
                cookie: *key,
                net: 0xffff_0000 + i as u64,
                inum: *inum,
                count: *count,
            };
        }
        l.len = items.len() as u32;
        l.complete = 1;
        assert!(items.len() <= MAX_NETNS_SAMPLED as usize);
        l
    }

    fn frees(inum: u32, free: u64) -> NetnsCounters {
        NetnsCounters {
            inum,
            free,
            ..NetnsCounters::default()
        }
    }

    fn row(out: &Reading, key: u64) -> NetnsSample {
        *out.rows.iter().find(|r| r.id == key).expect("row")
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn allocations_are_frees_plus_the_change_in_the_live_count() {
        let mut t = NetnsTracker::new(true);
        // 100 entries before start.
        let out = t.update(&list(&[(1, 10, 100)]), &[], 0);
        assert_eq!(row(&out, 1).alloc, 0);
        // 50 allocated, 30 freed (some of the old ones).
        let out = t.update(&list(&[(1, 10, 120)]), &[(1, frees(10, 30))], S);
        let r = row(&out, 1);
        assert_eq!((r.alloc, r.free, r.entries), (50, 30, Some(120)));
        assert!(r.alive);
    }

    #[test]
    fn a_namespace_created_after_start_counts_from_zero() {
        let mut t = NetnsTracker::new(true);
        t.update(&list(&[(1, 10, 5)]), &[], 0);
        // Namespace 2 appears with 500 entries already: all allocated since.
        let out = t.update(&list(&[(1, 10, 5), (2, 11, 500)]), &[], S);
        assert_eq!(row(&out, 2).alloc, 500);
        assert_eq!(row(&out, 1).alloc, 0);
    }

    #[test]
    fn a_reused_inode_number_is_a_new_namespace() {
        let mut t = NetnsTracker::new(true);
        t.update(&list(&[(1, 10, 0), (2, 77, 40)]), &[], 0);
        // Key 2 (inode 77) goes away after freeing its 40 entries; key 3
        // takes inode 77 and allocates 7.
        let out = t.update(&list(&[(1, 10, 0), (3, 77, 7)]), &[(2, frees(77, 40))], S);
        let (old, new) = (row(&out, 2), row(&out, 3));
        assert_eq!((old.inum, old.alloc, old.alive), (77, 0, false));
        assert_eq!((new.inum, new.alloc, new.alive), (77, 7, true));
    }

    #[test]
    fn a_torn_down_namespace_ends_with_every_entry_freed() {
        let mut t = NetnsTracker::new(true);
        t.update(&list(&[(1, 10, 0)]), &[], 0);
        t.update(&list(&[(1, 10, 0), (2, 11, 60)]), &[(2, frees(11, 40))], S);
        // Gone from the list; teardown has freed 10 of the 60 so far, and
        // 5 more had been allocated after the last reading.
        let out = t.update(&list(&[(1, 10, 0)]), &[(2, frees(11, 50))], 2 * S);
        let r = row(&out, 2);
        assert!(!r.alive);
        assert_eq!(r.alloc, 100, "frozen at frees + count at departure");
        // All 65 freed in the end: 105 allocated in all.
        let out = t.update(&list(&[(1, 10, 0)]), &[(2, frees(11, 105))], 3 * S);
        let r = row(&out, 2);
        assert_eq!((r.alloc, r.free, r.entries), (105, 105, Some(0)));
        assert!(out.retired.is_empty());
        // Retired once quiet for long enough, then forgotten.
        let out = t.update(
            &list(&[(1, 10, 0)]),
            &[(2, frees(11, 105))],
            3 * S + RETIRE_AFTER_NS,
        );
        assert_eq!(out.retired, vec![2]);
        assert!(row(&out, 2).retired);
        let out = t.update(&list(&[(1, 10, 0)]), &[], 4 * S + RETIRE_AFTER_NS);
        assert!(out.rows.iter().all(|r| r.id != 2));
        assert_eq!(t.total_alloc(), 105, "the machine total keeps it");
    }

    #[test]
    fn a_namespace_never_seen_alive_allocated_what_it_freed() {
        let mut t = NetnsTracker::new(true);
        t.update(&list(&[(1, 10, 0)]), &[], 0);
        let out = t.update(&list(&[(1, 10, 0)]), &[(9, frees(99, 12))], S);
        let r = row(&out, 9);
        assert_eq!((r.inum, r.alloc, r.free, r.alive), (99, 12, 12, false));
    }

    #[test]
    fn allocations_never_go_down() {
        let mut t = NetnsTracker::new(true);
        t.update(&list(&[(1, 10, 0)]), &[], 0);
        let out = t.update(&list(&[(1, 10, 10)]), &[(1, frees(10, 5))], S);
        assert_eq!(row(&out, 1).alloc, 15);
        // The count was read before 3 more frees landed: 7 + 5 = 12 < 15.
        let out = t.update(&list(&[(1, 10, 7)]), &[(1, frees(10, 5))], 2 * S);
        assert_eq!(row(&out, 1).alloc, 15);
        let out = t.update(&list(&[(1, 10, 7)]), &[(1, frees(10, 8))], 3 * S);
        assert_eq!(row(&out, 1).alloc, 15);
    }

    #[test]
    fn an_incomplete_walk_does_not_retire_anything() {
        let mut t = NetnsTracker::new(true);
        t.update(&list(&[(1, 10, 0), (2, 11, 3)]), &[], 0);
        let mut partial = list(&[(1, 10, 0)]);
        partial.complete = 0;
        let out = t.update(&partial, &[], S);
        assert!(row(&out, 2).alive);
    }
}
