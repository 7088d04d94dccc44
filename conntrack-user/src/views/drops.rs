//! `ctscope drops` output: one line (or JSON object) per dropped packet, and
//! the summary printed at exit. Pure functions of the model.

use serde::Serialize;
use serde_json::json;

use crate::{
    kallsyms::Kallsyms,
    model::{
        Model,
        drops::{Cause, DropRecord, Tally},
    },
};

/// The netfilter hook by name (`conntrack_common::classify::hook`).
pub fn hook_name(hook: u8) -> Option<&'static str> {
    use conntrack_common::classify::hook::*;
    match hook {
        PRE_ROUTING => Some("prerouting"),
        LOCAL_IN => Some("input"),
        FORWARD => Some("forward"),
        LOCAL_OUT => Some("output"),
        POST_ROUTING => Some("postrouting"),
        _ => None,
    }
}

/// Where the kernel freed the packet: `function+0xoffset` from kallsyms
/// (of this machine: only meaningful live), else the address in hex.
pub fn location_text(d: &DropRecord, syms: Option<&Kallsyms>) -> Option<String> {
    if d.location == 0 {
        return None;
    }
    Some(
        syms.and_then(|s| s.symbolize(d.location))
            .unwrap_or_else(|| format!("{:#x}", d.location)),
    )
}

/// The word shown for a cause: ruleset drops read "policy", so users see at a
/// glance when conntrack is not at fault.
pub fn cause_label(c: Cause) -> &'static str {
    if c.is_policy() { "policy" } else { c.as_str() }
}

/// `HH:MM:SS.mmm` (UTC) of a Unix time in ms.
pub fn clock_ms(ts_ms: u64) -> String {
    let secs = ts_ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60,
        ts_ms % 1000
    )
}

/// One human line: time, cause, namespace, protocol, endpoints, flags,
/// interface; for drops of cause other, where the kernel dropped it.
pub fn line(model: &Model, d: &DropRecord, syms: Option<&Kallsyms>) -> String {
    let time = model
        .wall_ms_of(d.ts_ns)
        .map_or_else(|| "--:--:--.---".to_owned(), clock_ms);
    let what = match d.icmp() {
        Some((t, c)) => format!("{} -> {} type {t} code {c}", d.src, d.dst),
        None if d.family == 0 => "(not IP)".to_owned(),
        None => format!("{} -> {}", d.src_endpoint(), d.dst_endpoint()),
    };
    let mut out = format!(
        "{time} {cause:<14} netns {netns:<10} {proto:<6} {what}",
        cause = cause_label(d.cause),
        netns = d.netns,
        proto = d.proto_name(),
    );
    let flags = d.flags_text();
    if !flags.is_empty() {
        out.push_str(&format!(" [{flags}]"));
    }
    if !d.ifname.is_empty() {
        out.push_str(&format!(" {}", d.ifname));
    }
    if d.truncated {
        out.push_str(" (truncated)");
    }
    if d.cause == Cause::Other {
        out.push_str(&format!(
            " dropped by kernel code at {}",
            location_text(d, syms).unwrap_or_else(|| "an unknown address".to_owned())
        ));
        if let Some(h) = hook_name(d.hook) {
            out.push_str(&format!(" (hook {h})"));
        }
    }
    out
}

#[derive(Serialize)]
struct DropJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    ts_ns: u64,
    time_ms: Option<u64>,
    cause: Cause,
    policy: bool,
    netns: u32,
    ifname: &'a str,
    ifindex: u32,
    family: u8,
    proto: String,
    src: String,
    sport: u16,
    dst: String,
    dport: u16,
    tcp_flags: String,
    icmp_type: Option<u8>,
    icmp_code: Option<u8>,
    len: u32,
    cpu: u32,
    zone: Option<u16>,
    mark: Option<u32>,
    truncated: bool,
    /// Where the kernel freed the packet (`function+0xoffset`).
    location: Option<String>,
    hook: Option<&'static str>,
}

/// One JSON object per drop (docs/drops.schema.json).
pub fn json(model: &Model, d: &DropRecord, syms: Option<&Kallsyms>) -> String {
    let icmp = d.icmp();
    let ports = icmp.is_none();
    let v = DropJson {
        kind: "drop",
        ts_ns: d.ts_ns,
        time_ms: model.wall_ms_of(d.ts_ns),
        cause: d.cause,
        policy: d.cause.is_policy(),
        netns: d.netns,
        ifname: &d.ifname,
        ifindex: d.ifindex,
        family: d.family,
        proto: d.proto_name(),
        src: d.src.to_string(),
        sport: if ports { d.sport } else { 0 },
        dst: d.dst.to_string(),
        dport: if ports { d.dport } else { 0 },
        tcp_flags: d.flags_text(),
        icmp_type: icmp.map(|(t, _)| t),
        icmp_code: icmp.map(|(_, c)| c),
        len: d.len,
        cpu: d.cpu,
        zone: d.zone,
        mark: d.mark,
        truncated: d.truncated,
        location: location_text(d, syms),
        hook: hook_name(d.hook),
    };
    serde_json::to_string(&v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// What the summary reports besides the model's contents.
pub struct SummaryInput {
    /// Send one drop's details in this many (1: all).
    pub sample_rate: u32,
    pub top: usize,
}

/// The summary as JSON: exact counts by cause (all drops), then top-N of the
/// drops that matched the filters.
pub fn summary_json(model: &Model, input: &SummaryInput) -> serde_json::Value {
    let totals = model.latest.as_ref().map(|i| i.totals).unwrap_or_default();
    let log = &model.drops;
    json!({
        "type": "summary",
        "matched": log.matched,
        "received": log.received,
        "lost_events": totals.lost_events,
        "sample_rate": input.sample_rate,
        "by_cause": {
            "table_full": totals.drop_table_full,
            "invalid": totals.drop_invalid,
            "insert_failed": totals.drop_insert_failed,
            "chain_too_long": totals.drop_chain_too_long,
            "ruleset": totals.drop_ruleset,
            "other": totals.drop_other,
        },
        // `drops` is exact unless `exact` is false: then more distinct keys
        // came than are kept, and it is an upper bound (model/drops.rs TopN).
        "top_destinations": log.top_dst.top_tallies(input.top).iter()
            .map(|(e, t)| json!({"endpoint": e.to_string(), "drops": t.count, "exact": t.is_exact()}))
            .collect::<Vec<_>>(),
        "top_sources": log.top_src.top_tallies(input.top).iter()
            .map(|(a, t)| json!({"addr": a.to_string(), "drops": t.count, "exact": t.is_exact()}))
            .collect::<Vec<_>>(),
        "top_netns": log.top_netns.top_tallies(input.top).iter()
            .map(|(ns, t)| json!({"netns": ns, "drops": t.count, "exact": t.is_exact()}))
            .collect::<Vec<_>>(),
    })
}

/// The summary for people.
pub fn summary_text(model: &Model, input: &SummaryInput) -> String {
    let totals = model.latest.as_ref().map(|i| i.totals).unwrap_or_default();
    let log = &model.drops;
    let mut out = String::new();
    out.push_str(&format!(
        "--- {} drops shown ({} seen); {} events the kernel could not deliver",
        log.matched, log.received, totals.lost_events
    ));
    if input.sample_rate > 1 {
        out.push_str(&format!("; details sampled 1 in {}", input.sample_rate));
    }
    out.push('\n');
    out.push_str(&format!(
        "all drops by cause (exact): table_full {}  invalid {}  insert_failed {}  \
         chain_too_long {}  policy {}  other {}\n",
        totals.drop_table_full,
        totals.drop_invalid,
        totals.drop_insert_failed,
        totals.drop_chain_too_long,
        totals.drop_ruleset,
        totals.drop_other
    ));
    let section = |title: &str, rows: Vec<(String, Tally)>, out: &mut String| {
        if rows.is_empty() {
            return;
        }
        out.push_str(title);
        if rows.iter().any(|(_, t)| !t.is_exact()) {
            out.push_str(" (≤: at most; more distinct keys than are kept)");
        }
        out.push('\n');
        for (k, t) in rows {
            let n = t.text(|n| n.to_string());
            out.push_str(&format!("  {n:>10}  {k}\n"));
        }
    };
    section(
        "top destinations:",
        log.top_dst
            .top_tallies(input.top)
            .into_iter()
            .map(|(e, t)| (e.to_string(), t))
            .collect(),
        &mut out,
    );
    section(
        "top sources:",
        log.top_src
            .top_tallies(input.top)
            .into_iter()
            .map(|(a, t)| (a.to_string(), t))
            .collect(),
        &mut out,
    );
    section(
        "top namespaces:",
        log.top_netns
            .top_tallies(input.top)
            .into_iter()
            .map(|(ns, t)| (ns.to_string(), t))
            .collect(),
        &mut out,
    );
    out
}

#[cfg(test)]
mod tests {
    use conntrack_common::{Event, Tuple, cause, kind};

    use super::*;
    use crate::{
        event::{Message, Sample},
        model::RunInfo,
    };

    fn model_with_drop(c: u8, proto: u8, dport: u16, flags: u8) -> Model {
        model_with_event(c, proto, dport, flags, 0, 0)
    }

    fn model_with_event(c: u8, proto: u8, dport: u16, flags: u8, location: u64, hook: u8) -> Model {
        let mut m = Model::new(RunInfo::default());
        m.apply(Message::Sample(Box::new(Sample {
            mono_ns: 5_000_000_000,
            wall_ms: 1_700_000_000_000,
            ..Sample::default()
        })));
        let mut t = Tuple {
            family: 2,
            proto,
            sport: 51000,
            dport,
            ..Tuple::default()
        };
        t.src[..4].copy_from_slice(&[127, 0, 0, 1]);
        t.dst[..4].copy_from_slice(&[127, 0, 0, 2]);
        m.apply(Message::Events(vec![Event {
            kind: kind::DROP,
            cause: c,
            ts_ns: 4_000_000_000,
            tcp_flags: flags,
            netns: 42,
            tuple: t,
            location,
            hook,
            ..Event::default()
        }]));
        m
    }

    #[test]
    fn human_line_reads_like_a_tcpdump_line() {
        let m = model_with_drop(cause::TABLE_FULL, 6, 8080, 0x02);
        let d = &m.drops.fresh[0];
        let l = line(&m, d, None);
        // One second before the sample's wall clock.
        assert!(l.starts_with("22:13:19.000 table_full"), "{l}");
        assert!(l.contains("127.0.0.1:51000 -> 127.0.0.2:8080 [S]"), "{l}");
        assert!(l.contains("netns 42"), "{l}");
    }

    #[test]
    fn ruleset_drops_read_policy() {
        let m = model_with_drop(cause::RULESET, 17, 53, 0);
        let l = line(&m, &m.drops.fresh[0], None);
        assert!(l.contains(" policy "), "{l}");
        let v: serde_json::Value =
            serde_json::from_str(&json(&m, &m.drops.fresh[0], None)).expect("json");
        assert_eq!(v["cause"], "ruleset");
        assert_eq!(v["policy"], true);
        assert_eq!(v["tcp_flags"], "");
    }

    #[test]
    fn icmp_shows_type_and_code() {
        let m = model_with_drop(cause::INVALID, 1, (3 << 8) | 1, 0);
        let d = &m.drops.fresh[0];
        assert!(line(&m, d, None).contains("type 3 code 1"));
        let v: serde_json::Value = serde_json::from_str(&json(&m, d, None)).expect("json");
        assert_eq!(
            (v["icmp_type"].as_u64(), v["icmp_code"].as_u64()),
            (Some(3), Some(1))
        );
    }

    #[test]
    fn other_names_the_kernel_code_and_the_hook() {
        let syms =
            Kallsyms::parse("ffffffff81f41f00 t nf_hook_slow\nffffffff81f41f80 t ecache_work\n")
                .expect("kallsyms");
        let m = model_with_event(
            cause::OTHER,
            1,
            (5 << 8) | 1,
            0,
            0xffff_ffff_81f4_1f3a,
            conntrack_common::classify::hook::POST_ROUTING,
        );
        let d = &m.drops.fresh[0];
        let l = line(&m, d, Some(&syms));
        assert!(l.contains(" other "), "{l}");
        assert!(
            l.ends_with("dropped by kernel code at nf_hook_slow+0x3a (hook postrouting)"),
            "{l}"
        );
        let v: serde_json::Value = serde_json::from_str(&json(&m, d, Some(&syms))).expect("json");
        assert_eq!(v["cause"], "other");
        assert_eq!(v["policy"], false);
        assert_eq!(v["location"], "nf_hook_slow+0x3a");
        assert_eq!(v["hook"], "postrouting");
        // Without kallsyms (a replay elsewhere): the address.
        let l = line(&m, d, None);
        assert!(l.contains("at 0xffffffff81f41f3a"), "{l}");
    }

    #[test]
    fn summary_lists_top_destinations() {
        let m = model_with_drop(cause::TABLE_FULL, 6, 443, 0x02);
        let input = SummaryInput {
            sample_rate: 4,
            top: 5,
        };
        let text = summary_text(&m, &input);
        assert!(text.contains("127.0.0.2:443"), "{text}");
        assert!(text.contains("sampled 1 in 4"), "{text}");
        let v = summary_json(&m, &input);
        assert_eq!(v["top_destinations"][0]["endpoint"], "127.0.0.2:443");
        assert_eq!(v["matched"], 1);
    }
}
