//! `ctscope holders` output: one JSON object (docs/holders.md) or a table
//! for people. Pure functions of a walk's [`Holders`].

use std::fmt::Write as _;

use serde::Serialize;

use crate::model::{
    buckets::BucketWalk,
    holders::{By, HolderRow, Holders},
};

/// A top holder with more than this share of the entries is "one client".
const DOMINANT: f64 = 0.5;

#[derive(Serialize)]
struct Out<'a> {
    /// Wall clock when the walk finished, ms since the Unix epoch.
    ts_ms: u64,
    /// Wall time and CPU time of the walk (holders included).
    walk_ns: u64,
    walk_cpu_ns: u64,
    /// Buckets of the table walked.
    buckets: u64,
    #[serde(flatten)]
    holders: &'a Holders,
}

/// The walk's holders, each grouping cut to `top` rows, as one JSON object.
pub fn json(walk: &BucketWalk, holders: &Holders) -> String {
    let out = Out {
        ts_ms: walk.ts_ms,
        walk_ns: walk.duration_ns,
        walk_cpu_ns: walk.cpu_ns,
        buckets: walk.buckets,
        holders,
    };
    serde_json::to_string(&out).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// `holders` with every grouping cut to `top` rows.
pub fn cut(holders: &Holders, top: usize) -> Holders {
    let mut h = holders.clone();
    for rows in [
        &mut h.by_dst,
        &mut h.by_src,
        &mut h.by_state,
        &mut h.by_netns,
    ] {
        rows.truncate(top);
    }
    h
}

fn by_title(by: By) -> &'static str {
    match by {
        By::Dst => "destination",
        By::Src => "source",
        By::State => "state",
        By::Netns => "namespace",
    }
}

/// The namespace as people know it: its name, or its inode number.
pub fn netns_text(r: &HolderRow) -> String {
    match &r.netns_name {
        Some(n) => format!("{} ({n})", r.netns),
        None => r.netns.to_string(),
    }
}

/// Seconds as the shortest readable unit: 45s, 12m, 5h, 4d.
pub fn secs_text(s: i64) -> String {
    let a = s.unsigned_abs();
    let sign = if s < 0 { "-" } else { "" };
    if a < 120 {
        format!("{sign}{a}s")
    } else if a < 7200 {
        format!("{sign}{}m", a / 60)
    } else if a < 172_800 {
        format!("{sign}{}h", a / 3600)
    } else {
        format!("{sign}{}d", a / 86_400)
    }
}

/// The timeout range of a row: `4d` or `59s-4d`.
pub fn left_text(r: &HolderRow) -> String {
    let (lo, hi) = (secs_text(r.timeout_min_s), secs_text(r.timeout_max_s));
    if lo == hi { lo } else { format!("{lo}-{hi}") }
}

/// The main state of a row with its count, and `+N` other states.
pub fn state_text(r: &HolderRow) -> String {
    match r.main_state() {
        Some((s, n)) if r.states.len() > 1 => format!("{s} {n} +{}", r.states.len() - 1),
        Some((s, _)) => s.to_owned(),
        None => String::new(),
    }
}

/// What to do about the table's holders: one line.
pub fn verdict(h: &Holders) -> Option<String> {
    let top = h.by_dst.first()?;
    if h.entries == 0 {
        return None;
    }
    let share = top.count as f64 / h.entries as f64;
    Some(if share > DOMINANT {
        format!(
            "{} of {} entries ({:.0}%) go to {} in netns {}: look at that client before raising the limit",
            top.count,
            h.entries,
            share * 100.0,
            top.what(),
            netns_text(top),
        )
    } else {
        format!(
            "no destination holds more than {:.0}% of the entries: if the table is full, \
             the load is spread out; raise the limit (see ctscope doctor)",
            share * 100.0
        )
    })
}

/// A table of the `by` grouping, `top` rows, for people.
pub fn report(walk: &BucketWalk, h: &Holders, by: By, top: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} entries in the table (walk {:.1} ms); top {} by {}:",
        h.entries,
        walk.duration_ns as f64 / 1e6,
        top,
        by_title(by)
    );
    let rows = h.rows(by);
    if rows.is_empty() {
        out.push_str("  (no entries)\n");
        return out;
    }
    let what_head = match by {
        By::Dst => "PROTO DESTINATION",
        By::Src => "PROTO SOURCE",
        By::State => "PROTO STATE",
        By::Netns => "",
    };
    let ns_w = rows
        .iter()
        .take(top)
        .map(|r| netns_text(r).len())
        .max()
        .unwrap_or(5)
        .max(5);
    let what_w = rows
        .iter()
        .take(top)
        .map(|r| r.what().len())
        .max()
        .unwrap_or(0)
        .max(what_head.len());
    let line = format!(
        "{:>8} {:>6}  {:<ns_w$}  {:<what_w$}  {:<20} LEFT",
        "ENTRIES", "SHARE", "NETNS", what_head, "STATES"
    );
    let _ = writeln!(out, "{}", line.trim_end());
    for r in rows.iter().take(top) {
        let share = if h.entries > 0 {
            r.count as f64 * 100.0 / h.entries as f64
        } else {
            0.0
        };
        let line = format!(
            "{:>8} {:>5.1}%  {:<ns_w$}  {:<what_w$}  {:<20} {}",
            r.count,
            share,
            netns_text(r),
            r.what(),
            state_text(r),
            left_text(r),
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if h.approximate {
        let _ = writeln!(
            out,
            "counts are upper bounds: more than {} distinct keys in a grouping",
            h.keys_cap
        );
    }
    if h.missed > 0 {
        let _ = writeln!(
            out,
            "{} buckets' entries could not all be recorded",
            h.missed
        );
    }
    if let Some(v) = verdict(h) {
        let _ = writeln!(out, "{v}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::holders::{HolderEntry, HoldersBuilder};

    fn holders() -> Holders {
        let mut b = HoldersBuilder::default();
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[10, 0, 0, 1]);
        let mut dst = [0u8; 16];
        dst[..4].copy_from_slice(&[10, 0, 0, 2]);
        for i in 0..40 {
            b.add(&HolderEntry {
                netns: 4026532178,
                family: 2,
                proto: 6,
                state: 3,
                src,
                dst,
                dport: 9000,
                timeout_s: 431_990 + i,
            });
        }
        let mut h = b.finish(
            10,
            &["NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED"].map(String::from),
        );
        h.name_namespaces(|_| Some("incident".into()));
        h
    }

    #[test]
    fn report_names_the_top_destination_and_what_to_do() {
        let walk = BucketWalk {
            duration_ns: 2_500_000,
            ..BucketWalk::default()
        };
        let text = report(&walk, &holders(), By::Dst, 5);
        assert!(
            text.starts_with("40 entries in the table (walk 2.5 ms)"),
            "{text}"
        );
        assert!(
            text.contains("      40 100.0%  4026532178 (incident)  tcp 10.0.0.2:9000  ESTABLISHED"),
            "{text}"
        );
        assert!(text.contains("4d"), "{text}");
        assert!(
            text.contains("look at that client before raising the limit"),
            "{text}"
        );
    }

    #[test]
    fn json_is_flat_and_cut() {
        let h = cut(&holders(), 1);
        let v: serde_json::Value =
            serde_json::from_str(&json(&BucketWalk::default(), &h)).expect("json");
        assert_eq!(v["entries"], 40);
        assert_eq!(v["by_dst"][0]["count"], 40);
        assert_eq!(v["by_dst"][0]["dport"], 9000);
        assert_eq!(v["by_dst"][0]["netns"], 4026532178u64);
        assert_eq!(v["by_dst"][0]["netns_name"], "incident");
        assert_eq!(v["by_dst"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn seconds_read_in_the_largest_unit() {
        assert_eq!(secs_text(59), "59s");
        assert_eq!(secs_text(600), "10m");
        assert_eq!(secs_text(432_000), "5d");
        assert_eq!(secs_text(-3), "-3s");
    }
}
