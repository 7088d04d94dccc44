//! `ctscope stats` output: JSON lines, or a compact table for people.

use crate::model::Interval;

/// One JSON object per interval (docs/stats.schema.json).
pub fn json_line(interval: &Interval) -> String {
    serde_json::to_string(interval).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

pub const TABLE_HEADER: &str = "TIME        ENTRIES       MAX  FILL   ALLOC/s    FREE/s  FULL/s  INVAL/s  INSERT/s  CHAIN/s  RULES/s  LOST";

/// One table row: entries and fill, rates per second, lost events since start.
pub fn table_row(i: &Interval) -> String {
    let entries = i.table.entries.map_or("-".to_owned(), |e| e.to_string());
    let max = i.table.max.map_or("-".to_owned(), |m| m.to_string());
    // Fill of the fullest namespace: each is held to max on its own.
    let fill = match i.table.fill() {
        Some(f) => format!("{:>3.0}%", f * 100.0),
        None => "   -".to_owned(),
    };
    let r = &i.rates;
    format!(
        "{time:<9} {entries:>9} {max:>9} {fill} {a:>9.0} {f:>9.0} {full:>7.0} {inv:>8.0} {ins:>9.0} {chain:>8.0} {rules:>8.0} {lost:>5}",
        time = clock(i.ts_ms),
        a = r.alloc,
        f = r.free,
        full = r.drop_table_full,
        inv = r.drop_invalid,
        ins = r.drop_insert_failed,
        chain = r.drop_chain_too_long,
        rules = r.drop_ruleset,
        lost = i.totals.lost_events,
    )
}

/// A warning when drops were given a cause beyond the kernel's own counter
/// for it during this interval (model/reconcile.rs), for stderr.
pub fn mismatch_warning(i: &Interval) -> Option<String> {
    let c = &i.causes.interval;
    if !c.any() {
        return None;
    }
    let over: Vec<String> = c
        .causes()
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(cause, n)| format!("{cause} +{n}"))
        .collect();
    Some(format!(
        "ctscope: warning: drop causes exceed the kernel's counters ({}); \
         some drops were misclassified (docs/drop-causes.md)",
        over.join(", ")
    ))
}

/// Columns `stats --buckets` adds: the latest walk's longest chain, mean
/// chain length and 99th percentile.
pub const BUCKETS_HEADER: &str = "  LONGEST  MEANLEN  P99LEN";

/// The values under [`BUCKETS_HEADER`] ("-" until the first walk).
pub fn bucket_columns(i: &Interval) -> String {
    match &i.buckets {
        Some(b) => format!("  {:>7} {:>8.3} {:>7}", b.max, b.mean, b.p99),
        None => format!("  {:>7} {:>8} {:>7}", "-", "-", "-"),
    }
}

/// `HH:MM:SS` (UTC) of a Unix time in ms.
pub(crate) fn clock(ts_ms: u64) -> String {
    let secs = ts_ms / 1000;
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Rates, Table, Totals};

    fn interval() -> Interval {
        Interval {
            ts_ms: 3_723_000,
            interval_ms: 1000,
            backend: "tracepoint".into(),
            table: Table {
                entries: Some(950),
                max: Some(1000),
                buckets: Some(1024),
                fullest_entries: Some(950),
                fullest_netns: Some(7),
            },
            totals: Totals {
                alloc: 1000,
                lost_events: 0,
                drop_table_full: 7,
                ..Totals::default()
            },
            rates: Rates {
                alloc: 120.0,
                drop_table_full: 7.0,
                ..Rates::default()
            },
            ..Interval::default()
        }
    }

    #[test]
    fn row_shows_fill_and_rates() {
        let row = table_row(&interval());
        assert!(row.starts_with("01:02:03"), "{row}");
        assert!(row.contains(" 95%"), "{row}");
        assert!(row.contains(" 120 "), "{row}");
        assert_eq!(
            TABLE_HEADER.split_whitespace().count(),
            row.split_whitespace().count(),
            "every column has a value:\n{TABLE_HEADER}\n{row}"
        );
    }

    #[test]
    fn a_cause_mismatch_is_a_warning_only_in_its_interval() {
        let mut i = interval();
        assert_eq!(mismatch_warning(&i), None);
        i.causes.total.insert_failed = 2;
        assert_eq!(mismatch_warning(&i), None, "an old excess is not news");
        i.causes.interval.insert_failed = 2;
        i.causes.interval.invalid = 1;
        let w = mismatch_warning(&i).expect("warning");
        assert!(w.contains("insert_failed +2, invalid +1"), "{w}");
    }

    #[test]
    fn bucket_columns_line_up() {
        let mut i = interval();
        let empty = bucket_columns(&i);
        assert_eq!(empty.split_whitespace().count(), 3);
        i.buckets = Some(crate::model::buckets::BucketSummary {
            max: 71,
            mean: 0.25,
            p99: 3,
            ..Default::default()
        });
        let row = table_row(&i) + &bucket_columns(&i);
        let header = format!("{TABLE_HEADER}{BUCKETS_HEADER}");
        assert_eq!(
            header.split_whitespace().count(),
            row.split_whitespace().count()
        );
        assert!(row.ends_with("       71    0.250       3"), "{row}");
        let v: serde_json::Value = serde_json::from_str(&json_line(&i)).expect("json");
        assert_eq!(v.pointer("/buckets/max"), Some(&serde_json::json!(71)));
        assert!(
            serde_json::from_str::<serde_json::Value>(&json_line(&interval()))
                .expect("json")
                .get("buckets")
                .is_none(),
            "no buckets object without a walk"
        );
    }

    #[test]
    fn json_has_the_documented_fields() {
        let v: serde_json::Value = serde_json::from_str(&json_line(&interval())).expect("json");
        for path in [
            "/ts_ms",
            "/interval_ms",
            "/backend",
            "/table/entries",
            "/table/max",
            "/table/buckets",
            "/totals/alloc",
            "/totals/free",
            "/totals/drop_table_full",
            "/totals/drop_invalid",
            "/totals/drop_insert_failed",
            "/totals/drop_chain_too_long",
            "/totals/drop_ruleset",
            "/totals/drop_other",
            "/causes/interval/insert_failed",
            "/causes/total/table_full",
            "/totals/early_drop",
            "/totals/lost_events",
            "/rates/alloc",
            "/rates/drop_table_full",
            "/kernel/drop",
            "/kernel/insert_failed",
            "/kernel/early_drop",
            "/kernel/chaintoolong",
            "/kernel/clash_resolve",
            "/kernel/invalid",
            "/kernel/search_restart",
            "/netns",
        ] {
            assert!(v.pointer(path).is_some(), "missing {path} in {v}");
        }
        assert_eq!(
            v.pointer("/totals/drop_table_full"),
            Some(&serde_json::json!(7))
        );
    }
}
