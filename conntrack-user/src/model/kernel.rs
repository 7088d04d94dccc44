//! The kernel's own conntrack counters (`/proc/net/stat/nf_conntrack` or
//! ctnetlink), accumulated per namespace identity so that totals are exact
//! and never go backwards: a namespace that reuses a dead one's inode
//! number starts from zero, a counter that goes backwards counts as a reset
//! (as Prometheus treats counters), and a namespace that goes away folds
//! its final counts into `departed`.

use std::collections::{HashMap, HashSet};

use crate::kernel::{netns::NetnsReading, stats::ConntrackStats};

#[derive(Clone, Copy, Debug, Default)]
struct Acc {
    /// The latest absolute reading.
    last: ConntrackStats,
    /// Counted since ctscope started (or since the namespace appeared).
    total: ConntrackStats,
}

#[derive(Clone, Debug, Default)]
pub struct KernelCounters {
    /// By namespace identity (`NetnsSample::id`, or the inode number where
    /// no identity is known).
    live: HashMap<u64, Acc>,
    /// Final counts of namespaces that went away.
    pub departed: ConntrackStats,
    /// Identities alive at the previous update; `None` before the first.
    known: Option<HashSet<u64>>,
}

impl KernelCounters {
    /// Folds in one sample's readings. `ids` maps the inode number of each
    /// live namespace to its identity; `alive` is every live identity, or
    /// `None` where the sampler did not run (then nothing departs: a
    /// namespace that could not be read this time may still exist).
    /// Returns the sum over every namespace ever read, departed included.
    pub fn update(
        &mut self,
        readings: &[NetnsReading],
        ids: &HashMap<u32, u64>,
        alive: Option<&HashSet<u64>>,
    ) -> ConntrackStats {
        let first = self.known.is_none();
        for r in readings {
            let Some(stats) = r.stats else { continue };
            // Read by entering the namespace at its inode number: it is the
            // live namespace with that number. Where the sampler saw none,
            // the namespace went away in between (or the sampler did not
            // run, and the inode is all there is).
            let id = match (ids.get(&r.inum), alive) {
                (Some(id), _) => *id,
                (None, None) => u64::from(r.inum),
                (None, Some(_)) => continue,
            };
            match self.live.get_mut(&id) {
                Some(acc) => {
                    acc.total += stats.increase_since(&acc.last);
                    acc.last = stats;
                }
                None => {
                    // At the first sample, or for a namespace that existed at
                    // the previous one, counting starts now; a namespace
                    // born since counted everything after ctscope started.
                    let existed = first
                        || self.known.as_ref().is_some_and(|k| k.contains(&id))
                        || alive.is_none();
                    let total = if existed {
                        ConntrackStats::default()
                    } else {
                        stats
                    };
                    self.live.insert(id, Acc { last: stats, total });
                }
            }
        }
        if let Some(alive) = alive {
            let gone: Vec<u64> = self
                .live
                .keys()
                .filter(|id| !alive.contains(id))
                .copied()
                .collect();
            for id in gone {
                if let Some(acc) = self.live.remove(&id) {
                    self.departed += acc.total;
                }
            }
            self.known = Some(alive.clone());
        } else {
            self.known = Some(self.live.keys().copied().collect());
        }
        self.sum()
    }

    /// Counts of one live namespace since start.
    pub fn of(&self, id: u64) -> Option<ConntrackStats> {
        self.live.get(&id).map(|a| a.total)
    }

    /// Every namespace's counts, departed included.
    pub fn sum(&self) -> ConntrackStats {
        self.live
            .values()
            .fold(self.departed, |acc, a| acc + a.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(inum: u32, invalid: u64) -> NetnsReading {
        NetnsReading {
            inum,
            name: None,
            owner: None,
            count: Some(0),
            max: None,
            stats: Some(ConntrackStats {
                invalid,
                ..ConntrackStats::default()
            }),
            source_used: None,
            error: None,
            enter: crate::kernel::netns::Enter::Unknown,
            tcp_timeout_established: None,
        }
    }

    fn set(ids: &[u64]) -> HashSet<u64> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_reused_inode_starts_from_zero_and_totals_never_go_back() {
        let mut k = KernelCounters::default();
        let ids = HashMap::from([(1, 100), (7, 700)]);
        // At start: the host (inum 1) and a namespace with 24 invalid.
        assert_eq!(
            k.update(
                &[reading(1, 5), reading(7, 24)],
                &ids,
                Some(&set(&[100, 700]))
            )
            .invalid,
            0
        );
        let s = k.update(
            &[reading(1, 5), reading(7, 30)],
            &ids,
            Some(&set(&[100, 700])),
        );
        assert_eq!(s.invalid, 6);
        // The namespace goes away: its 6 stay in the sum.
        let s = k.update(&[reading(1, 5)], &ids, Some(&set(&[100])));
        assert_eq!(s.invalid, 6);
        assert_eq!(k.departed.invalid, 6);
        // A new namespace reuses inode 7 with 3 invalid since its birth.
        let ids = HashMap::from([(1, 100), (7, 701)]);
        let s = k.update(
            &[reading(1, 5), reading(7, 3)],
            &ids,
            Some(&set(&[100, 701])),
        );
        assert_eq!(s.invalid, 9, "6 departed + 3 of the newcomer, no wrap");
        assert_eq!(k.of(701).map(|c| c.invalid), Some(3));
        assert_eq!(k.of(700), None);
    }

    #[test]
    fn without_identities_a_counter_going_backwards_is_a_reset() {
        let mut k = KernelCounters::default();
        let ids = HashMap::new();
        k.update(&[reading(7, 24)], &ids, None);
        let s = k.update(&[reading(7, 18)], &ids, None);
        assert_eq!(s.invalid, 18, "reset semantics, never 2^64");
        let s = k.update(&[reading(7, 20)], &ids, None);
        assert_eq!(s.invalid, 20);
        // An unreadable namespace does not depart without the sampler.
        let s = k.update(&[], &ids, None);
        assert_eq!(s.invalid, 20);
    }
}
