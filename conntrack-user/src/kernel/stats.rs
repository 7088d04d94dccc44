//! The kernel's own per-namespace conntrack counters, summed over CPUs.
//!
//! The kernel keeps one `struct ip_conntrack_stat` per CPU per network namespace
//! (`net->ct.stat`, include/linux/netfilter/nf_conntrack_common.h) and exports it in
//! two ways: the hex table /proc/net/stat/nf_conntrack (`ct_cpu_seq_show` in
//! net/netfilter/nf_conntrack_standalone.c, only with CONFIG_NF_CONNTRACK_PROCFS) and
//! ctnetlink (`ctnetlink_ct_stat_cpu_fill_info` and `ctnetlink_exp_stat_fill_info` in
//! net/netfilter/nf_conntrack_netlink.c). Both sources are parsed into this one type so
//! ctscope can show them next to its eBPF counts whichever is available.

use std::iter::Sum;
use std::ops::{Add, AddAssign};

/// Conntrack counters of one network namespace, summed over all CPUs.
///
/// The per-CPU kernel counters are `unsigned int`, so each one wraps at 2^32. The sums
/// here are `u64`; [`ConntrackStats::delta_since`] is exact as long as no single CPU's
/// counter wrapped between the two readings (at 130k events/s on one CPU that takes
/// about 9 hours).
///
/// Deprecated counters (`searched`, `new`, `ignore`, `delete`, `delete_list`) are
/// always 0 on current kernels and are not kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConntrackStats {
    /// Lookups that found an existing entry.
    pub found: u64,
    /// Packets that could not be tracked (bad headers, out-of-window TCP, ...).
    pub invalid: u64,
    /// Entries inserted by ctnetlink or BPF (`nf_conntrack_hash_check_insert`); normal
    /// packet-path inserts are not counted here.
    pub insert: u64,
    /// Confirmations that failed: an unresolvable clash or a chain that was too long.
    pub insert_failed: u64,
    /// Packets conntrack dropped: table full, or an unresolvable clash.
    pub drop: u64,
    /// Entries evicted by `early_drop()` to make room while the table was full.
    pub early_drop: u64,
    /// ICMP(v6) errors that failed validation (`error` in ctnetlink and `conntrack -S`).
    pub icmp_error: u64,
    /// Expectations allocated.
    pub expect_new: u64,
    /// Expectations inserted.
    pub expect_create: u64,
    /// Expectations removed.
    pub expect_delete: u64,
    /// Hash lookups restarted because an entry moved to another chain.
    pub search_restart: u64,
    /// UDP/ICMP insert clashes that were resolved (not drops). `clashres` in procfs.
    pub clash_resolve: u64,
    /// Inserts refused because the hash chain was too long. `chainlength` in procfs.
    pub chaintoolong: u64,
}

impl ConntrackStats {
    /// Field names in declaration order, as serialised; handy for table headers.
    pub const FIELD_NAMES: [&'static str; 13] = [
        "found",
        "invalid",
        "insert",
        "insert_failed",
        "drop",
        "early_drop",
        "icmp_error",
        "expect_new",
        "expect_create",
        "expect_delete",
        "search_restart",
        "clash_resolve",
        "chaintoolong",
    ];

    /// Counters in declaration order (the order of [`Self::FIELD_NAMES`]).
    pub fn values(&self) -> [u64; 13] {
        [
            self.found,
            self.invalid,
            self.insert,
            self.insert_failed,
            self.drop,
            self.early_drop,
            self.icmp_error,
            self.expect_new,
            self.expect_create,
            self.expect_delete,
            self.search_restart,
            self.clash_resolve,
            self.chaintoolong,
        ]
    }

    /// Applies `f` to each pair of corresponding fields.
    fn zip_with(&self, other: &Self, f: impl Fn(u64, u64) -> u64) -> Self {
        Self {
            found: f(self.found, other.found),
            invalid: f(self.invalid, other.invalid),
            insert: f(self.insert, other.insert),
            insert_failed: f(self.insert_failed, other.insert_failed),
            drop: f(self.drop, other.drop),
            early_drop: f(self.early_drop, other.early_drop),
            icmp_error: f(self.icmp_error, other.icmp_error),
            expect_new: f(self.expect_new, other.expect_new),
            expect_create: f(self.expect_create, other.expect_create),
            expect_delete: f(self.expect_delete, other.expect_delete),
            search_restart: f(self.search_restart, other.search_restart),
            clash_resolve: f(self.clash_resolve, other.clash_resolve),
            chaintoolong: f(self.chaintoolong, other.chaintoolong),
        }
    }

    /// Counts since `earlier` (a reading of the same namespace), field by field with
    /// wrapping subtraction, so a reset or per-CPU wrap gives a huge value instead of a
    /// panic; callers that care can compare against [`Self::values`] of `earlier`.
    pub fn delta_since(&self, earlier: &Self) -> Self {
        self.zip_with(earlier, u64::wrapping_sub)
    }

    /// Counts since `earlier` (a reading of the same namespace), field by
    /// field, treating a counter that went backwards as a reset (as
    /// Prometheus does): it counts what it holds now, never 2^64.
    pub fn increase_since(&self, earlier: &Self) -> Self {
        self.zip_with(
            earlier,
            |now, before| {
                if now >= before { now - before } else { now }
            },
        )
    }

    /// Field-by-field wrapping sum, e.g. to total several namespaces.
    pub fn wrapping_add(&self, other: &Self) -> Self {
        self.zip_with(other, u64::wrapping_add)
    }

    /// The counter with the given kernel column or attribute name, accepting the
    /// procfs spellings (`clashres`, `chainlength`, `icmp_error`) and the ctnetlink /
    /// `conntrack -S` spellings (`clash_resolve`, `chaintoolong`, `error`). Returns
    /// `None` for deprecated or unknown names, which callers ignore.
    pub fn field_mut(&mut self, name: &str) -> Option<&mut u64> {
        Some(match name {
            "found" => &mut self.found,
            "invalid" => &mut self.invalid,
            "insert" => &mut self.insert,
            "insert_failed" => &mut self.insert_failed,
            "drop" => &mut self.drop,
            "early_drop" => &mut self.early_drop,
            "icmp_error" | "error" => &mut self.icmp_error,
            "expect_new" => &mut self.expect_new,
            "expect_create" => &mut self.expect_create,
            "expect_delete" => &mut self.expect_delete,
            "search_restart" => &mut self.search_restart,
            "clashres" | "clash_resolve" => &mut self.clash_resolve,
            "chainlength" | "chaintoolong" => &mut self.chaintoolong,
            _ => return None,
        })
    }
}

impl Add for ConntrackStats {
    type Output = Self;
    fn add(self, rhs: Self) -> Self {
        self.wrapping_add(&rhs)
    }
}

impl AddAssign for ConntrackStats {
    fn add_assign(&mut self, rhs: Self) {
        *self = self.wrapping_add(&rhs);
    }
}

impl Sum for ConntrackStats {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::default(), |acc, s| acc + s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_going_backwards_is_a_reset_not_a_wrap() {
        let before = ConntrackStats {
            invalid: 24,
            found: 7,
            ..ConntrackStats::default()
        };
        let now = ConntrackStats {
            invalid: 6,
            found: 9,
            ..ConntrackStats::default()
        };
        let d = now.increase_since(&before);
        assert_eq!(d.invalid, 6, "reset: counts what it holds now");
        assert_eq!(d.found, 2);
    }

    #[test]
    fn delta_add_and_names() {
        let a = ConntrackStats {
            found: 10,
            drop: 3,
            chaintoolong: 1,
            ..Default::default()
        };
        let b = ConntrackStats {
            found: 15,
            drop: 3,
            chaintoolong: 4,
            ..Default::default()
        };
        let d = b.delta_since(&a);
        assert_eq!((d.found, d.drop, d.chaintoolong), (5, 0, 3));
        assert_eq!(a.delta_since(&b).found, u64::MAX - 4);
        assert_eq!((a + b).found, 25);
        let total: ConntrackStats = [a, b, a].into_iter().sum();
        assert_eq!(total.chaintoolong, 6);
        let mut c = a;
        c += b;
        assert_eq!(c, a + b);
        let mut s = ConntrackStats::default();
        for (i, name) in ConntrackStats::FIELD_NAMES.iter().enumerate() {
            *s.field_mut(name).expect("known field") = i as u64 + 1;
        }
        assert_eq!(s.values().to_vec(), (1..=13).collect::<Vec<u64>>());
        assert!(s.field_mut("searched").is_none());
        let json = serde_json::to_value(s).expect("serialises");
        assert_eq!(json["chaintoolong"], 13);
    }
}
