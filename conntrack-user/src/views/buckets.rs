//! `ctscope buckets` output: one JSON object (docs/buckets.schema.json) or a
//! report for people. Pure functions of a [`BucketWalk`].

use std::fmt::Write as _;

use crate::model::buckets::{BucketWalk, HISTOGRAM_LABELS};

/// The walk as one JSON object.
pub fn json(walk: &BucketWalk) -> String {
    serde_json::to_string(walk).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// Width of the longest histogram bar.
const BAR: u64 = 40;
/// Shades of the heat strip, from empty to the longest chain.
const SHADES: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// A report for people: totals, chain-length statistics, histogram, heat
/// strip, the hottest chains with their entries, and the warnings.
pub fn report(w: &BucketWalk) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "conntrack hash table: {} buckets, {} entries ({} nodes)",
        w.buckets, w.entries, w.nodes
    );
    let _ = writeln!(
        out,
        "walk: {:.1} ms, {:.1} ms CPU, {} chains re-walked{}",
        w.duration_ns as f64 / 1e6,
        w.cpu_ns as f64 / 1e6,
        w.restarts,
        if w.located_by.is_empty() {
            String::from(", table empty")
        } else {
            format!(", table found via {}", w.located_by)
        }
    );
    let _ = writeln!(
        out,
        "chain length: mean {:.3}, mean of non-empty {:.3}, p99 {}, max {}",
        w.mean, w.mean_nonempty, w.p99, w.max
    );
    out.push_str("\nchain length  buckets\n");
    let peak = w.histogram.iter().copied().max().unwrap_or(0).max(1);
    for (label, count) in HISTOGRAM_LABELS.iter().zip(w.histogram) {
        let pct = if w.buckets > 0 {
            count as f64 * 100.0 / w.buckets as f64
        } else {
            0.0
        };
        let bar = "█".repeat((count * BAR).div_ceil(peak) as usize);
        let line = format!("{label:>12}  {count:>9} {pct:>5.1}%  {bar}");
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if !w.heat.is_empty() {
        let top = w.heat.iter().copied().max().unwrap_or(0).max(1);
        let strip: String = w
            .heat
            .iter()
            .map(|&v| SHADES[((v as usize * 8).div_ceil(top as usize)).min(8)])
            .collect();
        let _ = writeln!(
            out,
            "\nlongest chain across the table (left: bucket 0; full block: {top})\n  [{strip}]"
        );
    }
    if !w.hottest.is_empty() {
        out.push_str("\nhottest buckets\n");
    }
    for b in &w.hottest {
        let _ = writeln!(out, "  bucket {}: {} nodes", b.index, b.len);
        for e in &b.entries {
            let state = if e.state.is_empty() {
                String::new()
            } else {
                format!(" {}", e.state)
            };
            let _ = writeln!(
                out,
                "    {:<8} {:<6} {}:{} -> {}:{}{state}  netns {}  expires in {}s",
                e.direction, e.proto, e.src, e.sport, e.dst, e.dport, e.netns, e.timeout_s
            );
        }
        if (b.entries.len() as u64) < u64::from(b.len) {
            let _ = writeln!(
                out,
                "    ... {} more",
                u64::from(b.len) - b.entries.len() as u64
            );
        }
    }
    for warning in &w.warnings {
        let _ = writeln!(out, "\nwarning: {warning}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::buckets::{ChainEntry, HotBucket};

    fn walk() -> BucketWalk {
        let mut histogram = [0; 13];
        histogram[0] = 6;
        histogram[1] = 1;
        histogram[12] = 1;
        BucketWalk {
            buckets: 8,
            entries: 36,
            nodes: 72,
            histogram,
            mean: 9.0,
            mean_nonempty: 36.0,
            max: 71,
            p99: 71,
            heat: vec![0, 71, 1, 0],
            hottest: vec![HotBucket {
                index: 3,
                len: 71,
                entries: vec![ChainEntry {
                    direction: "reply".into(),
                    proto: "tcp".into(),
                    src: "10.0.0.1".into(),
                    sport: 4000,
                    dst: "10.0.0.2".into(),
                    dport: 80,
                    state: "ESTABLISHED".into(),
                    netns: 4026531840,
                    timeout_s: 431999,
                    ..ChainEntry::default()
                }],
            }],
            duration_ns: 1_500_000,
            cpu_ns: 1_200_000,
            located_by: "seq_file".into(),
            warnings: vec!["mean chain length 9.00 is above 1".into()],
            ..BucketWalk::default()
        }
    }

    #[test]
    fn report_shows_every_part() {
        let r = report(&walk());
        assert!(r.starts_with("conntrack hash table: 8 buckets, 36 entries (72 nodes)"));
        assert!(r.contains("walk: 1.5 ms, 1.2 ms CPU"), "{r}");
        assert!(r.contains("p99 71, max 71"), "{r}");
        assert!(r.contains("         >64          1  12.5%"), "{r}");
        assert!(r.contains("[ █▁ ]"), "{r}");
        assert!(r.contains("bucket 3: 71 nodes"), "{r}");
        assert!(
            r.contains("reply    tcp    10.0.0.1:4000 -> 10.0.0.2:80 ESTABLISHED"),
            "{r}"
        );
        assert!(r.contains("... 70 more"), "{r}");
        assert!(r.contains("warning: mean chain length"), "{r}");
    }

    #[test]
    fn json_round_trips_the_fields() {
        let v: serde_json::Value = serde_json::from_str(&json(&walk())).expect("json");
        assert_eq!(v["buckets"], 8);
        assert_eq!(v["histogram"][12], 1);
        assert_eq!(v["hottest"][0]["entries"][0]["state"], "ESTABLISHED");
        assert_eq!(v["located_by"], "seq_file");
    }
}
