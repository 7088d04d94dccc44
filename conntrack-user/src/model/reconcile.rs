//! Reconciliation: ctscope's drops per cause against the kernel's own
//! counters, so that a misclassification shows instead of hiding.
//!
//! Each cause has a kernel counter that every correctly classified drop of
//! that cause also raised (net/netfilter/nf_conntrack_core.c):
//!
//! | ctscope | is at most the kernel's |
//! | --- | --- |
//! | `table_full` | `drop` (a refusal bumps `drop`; so do clashes and invalid packets conntrack itself drops) |
//! | `insert_failed` + `chain_too_long` | `insert_failed` (`chaintoolong` failures bump both) |
//! | `chain_too_long` | `chaintoolong` |
//! | `invalid` | `invalid` (conntrack counts every invalid packet, dropped or not) |
//!
//! So ctscope counting more than the kernel is a misclassification (or, for
//! `invalid`, a rule drop before conntrack, see docs/drop-causes.md). The
//! comparison is per namespace, where the kernel's counters could be read,
//! on counts since start: ctscope counts a drop after the kernel does (the
//! counter is raised before the packet is freed), so a lag never shows as an
//! excess. Each interval reports how much the excess grew in it.

use serde::Serialize;

use super::interval::NetnsRow;

/// Drops ctscope gave a cause beyond what the kernel's counters allow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CauseMismatch {
    pub table_full: u64,
    /// `insert_failed + chain_too_long` beyond the kernel's `insert_failed`.
    pub insert_failed: u64,
    pub chain_too_long: u64,
    pub invalid: u64,
}

impl CauseMismatch {
    pub fn any(&self) -> bool {
        self.causes().iter().any(|(_, n)| *n > 0)
    }

    /// By cause name, as in the output.
    pub fn causes(&self) -> [(&'static str, u64); 4] {
        [
            ("table_full", self.table_full),
            ("insert_failed", self.insert_failed),
            ("chain_too_long", self.chain_too_long),
            ("invalid", self.invalid),
        ]
    }

    /// Per cause, how much `self` exceeds `before`.
    pub fn growth_since(&self, before: &CauseMismatch) -> CauseMismatch {
        CauseMismatch {
            table_full: self.table_full.saturating_sub(before.table_full),
            insert_failed: self.insert_failed.saturating_sub(before.insert_failed),
            chain_too_long: self.chain_too_long.saturating_sub(before.chain_too_long),
            invalid: self.invalid.saturating_sub(before.invalid),
        }
    }

    /// Per cause, the larger of the two.
    pub fn max(&self, other: &CauseMismatch) -> CauseMismatch {
        CauseMismatch {
            table_full: self.table_full.max(other.table_full),
            insert_failed: self.insert_failed.max(other.insert_failed),
            chain_too_long: self.chain_too_long.max(other.chain_too_long),
            invalid: self.invalid.max(other.invalid),
        }
    }
}

/// What one interval says about the causes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Reconciliation {
    /// Excess that appeared during this interval: a warning when non-zero.
    pub interval: CauseMismatch,
    /// Excess since start (never decreasing: the
    /// `ctscope_cause_mismatch_total` counters).
    pub total: CauseMismatch,
}

/// The excess of ctscope's counts over the kernel's, summed over the
/// namespaces whose kernel counters are known; counts since start.
pub fn excess(rows: &[NetnsRow]) -> CauseMismatch {
    let mut out = CauseMismatch::default();
    for row in rows {
        let Some(k) = row.kernel else { continue };
        let d = &row.drops_by_cause;
        out.table_full += d.table_full.saturating_sub(k.drop);
        out.insert_failed += (d.insert_failed + d.chain_too_long).saturating_sub(k.insert_failed);
        out.chain_too_long += d.chain_too_long.saturating_sub(k.chaintoolong);
        out.invalid += d.invalid.saturating_sub(k.invalid);
    }
    out
}

/// This interval's reconciliation, given the excess since start now and the
/// running total before it.
pub fn reconcile(rows: &[NetnsRow], total_before: &CauseMismatch) -> Reconciliation {
    let now = excess(rows);
    Reconciliation {
        interval: now.growth_since(total_before),
        total: now.max(total_before),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{kernel::stats::ConntrackStats, model::interval::DropCounts};

    fn row(ours: DropCounts, kernel: Option<ConntrackStats>) -> NetnsRow {
        NetnsRow {
            drops_by_cause: ours,
            kernel,
            ..NetnsRow::new(7)
        }
    }

    #[test]
    fn agreement_is_no_mismatch() {
        let r = row(
            DropCounts {
                table_full: 5,
                insert_failed: 2,
                chain_too_long: 3,
                invalid: 4,
                ruleset: 100,
            },
            Some(ConntrackStats {
                drop: 7,
                insert_failed: 5,
                chaintoolong: 3,
                invalid: 9,
                ..ConntrackStats::default()
            }),
        );
        let rec = reconcile(&[r], &CauseMismatch::default());
        assert!(!rec.interval.any(), "{rec:?}");
        assert_eq!(rec.total, CauseMismatch::default());
    }

    #[test]
    fn issue_17_insert_failed_against_a_kernel_zero_is_an_excess() {
        // Before the fix: two ICMP redirects reported as insert_failed
        // while the kernel's insert_failed stayed 0.
        let r = row(
            DropCounts {
                insert_failed: 2,
                ..DropCounts::default()
            },
            Some(ConntrackStats::default()),
        );
        let rec = reconcile(&[r], &CauseMismatch::default());
        assert_eq!(rec.interval.insert_failed, 2);
        assert_eq!(rec.total.insert_failed, 2);
        assert_eq!(
            rec.interval.causes().iter().filter(|(_, n)| *n > 0).count(),
            1
        );
    }

    #[test]
    fn the_earlier_chain_excess_shows_and_then_stays_counted() {
        // The run of drop-causes.md: 4,534 chain_too_long against the
        // kernel's 4,522.
        let ours = DropCounts {
            chain_too_long: 4534,
            ..DropCounts::default()
        };
        let kernel = ConntrackStats {
            chaintoolong: 4522,
            insert_failed: 4522,
            ..ConntrackStats::default()
        };
        let first = reconcile(&[row(ours, Some(kernel))], &CauseMismatch::default());
        assert_eq!(first.interval.chain_too_long, 12);
        assert_eq!(first.interval.insert_failed, 12);
        // The next interval adds nothing new: no warning, total kept.
        let next = reconcile(&[row(ours, Some(kernel))], &first.total);
        assert!(!next.interval.any());
        assert_eq!(next.total.chain_too_long, 12);
        // The kernel catching up never makes the total go back.
        let caught_up = ConntrackStats {
            chaintoolong: 4534,
            insert_failed: 4534,
            ..kernel
        };
        let later = reconcile(&[row(ours, Some(caught_up))], &next.total);
        assert_eq!(later.total.chain_too_long, 12);
        assert!(!later.interval.any());
    }

    #[test]
    fn namespaces_without_kernel_counters_and_lags_are_not_excess() {
        let unknown = row(
            DropCounts {
                table_full: 9,
                ..DropCounts::default()
            },
            None,
        );
        // The kernel counted a refusal that ctscope has not yet seen.
        let lag = row(
            DropCounts::default(),
            Some(ConntrackStats {
                drop: 1,
                ..ConntrackStats::default()
            }),
        );
        let rec = reconcile(&[unknown, lag], &CauseMismatch::default());
        assert!(!rec.interval.any(), "{rec:?}");
    }

    #[test]
    fn excess_is_per_namespace_not_netted_across_them() {
        let over = row(
            DropCounts {
                invalid: 3,
                ..DropCounts::default()
            },
            Some(ConntrackStats::default()),
        );
        let under = row(
            DropCounts::default(),
            Some(ConntrackStats {
                invalid: 10,
                ..ConntrackStats::default()
            }),
        );
        assert_eq!(excess(&[over, under]).invalid, 3);
    }
}
