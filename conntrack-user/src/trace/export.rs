//! Records as rows for `ctscope export`: JSON lines or CSV. Pure functions
//! of a record and the trace header (which turns monotonic timestamps into
//! wall-clock times). Field names are documented in docs/trace-format.md.

use conntrack_common::{Event, counter, flag, kind};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{
    filter::addrs,
    format::{Header, Lost, Snapshot},
};
use crate::{
    event::{Counters, NetnsSample},
    kernel::{netns::NetnsReading, stats::ConntrackStats, sysctl::Sysctls},
    model::drops::{Cause, proto_name, tcp_flags_text},
};

/// Names of the in-kernel counters, in `conntrack_common::counter` order,
/// as docs/trace-format.md names them (format 2). Reserved slots are not
/// exported.
pub const COUNTER_NAMES: [&str; counter::COUNT as usize] = [
    "alloc",
    "free",
    "drop_table_full",
    "drop_invalid",
    "drop_insert_failed",
    "drop_chain_too_long",
    "drop_ruleset",
    "lost_events",
    "unresolved",
    "netns_overflow",
    "reserved10",
    "reserved11",
    "sampled_out",
    "early_drop_calls",
    "inserted",
    "deleted",
    "probe_misses",
    "reserved17",
    "drop_other",
    "reserved19",
];

/// One allocation, free or drop.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventRow {
    /// "alloc", "free" or "drop".
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// CLOCK_MONOTONIC ns (the kernel's `bpf_ktime_get_ns`).
    pub ts_ns: u64,
    /// Wall-clock time, RFC 3339 UTC.
    pub time: String,
    pub netns: u32,
    pub cpu: u32,
    /// For drops: the cause.
    pub cause: Option<&'static str>,
    /// 4 or 6; 0 when not IP.
    pub family: u8,
    pub proto: String,
    pub src: String,
    pub sport: u16,
    pub dst: String,
    pub dport: u16,
    /// TCP flags as letters ("S", "SA", ...), empty for other protocols.
    pub tcp_flags: String,
    /// Packet length (drops).
    pub len: Option<u32>,
    pub ifindex: Option<u32>,
    pub ifname: Option<String>,
    /// Address of the conntrack entry, hex; absent for drops without one.
    pub ct: Option<String>,
    /// For allocations: when the slab allocation happened (monotonic ns).
    pub alloc_ts_ns: Option<u64>,
    /// Entry zone, mark and status bits, when an entry was involved.
    pub zone: Option<u16>,
    pub mark: Option<u32>,
    pub status: Option<u32>,
    /// Event flags, `|`-separated: has_ct, confirmed, truncated, non_ip,
    /// no_netns. Not `flags`, which pandas reserves (`DataFrame.flags`).
    pub event_flags: String,
}

impl EventRow {
    pub const CSV_HEADER: &str = "type,ts_ns,time,netns,cpu,cause,family,proto,src,sport,dst,\
                                  dport,tcp_flags,len,ifindex,ifname,ct,alloc_ts_ns,zone,mark,\
                                  status,event_flags";

    pub fn new(header: &Header, ev: &Event) -> Self {
        let t = &ev.tuple;
        let (src, dst) = addrs(t);
        let is_drop = ev.kind == kind::DROP;
        let has_ct = ev.flags & flag::HAS_CT != 0;
        let name_end = ev.ifname.iter().position(|b| *b == 0).unwrap_or(16);
        Self {
            kind: kind_name(ev.kind),
            ts_ns: ev.ts_ns,
            time: rfc3339(header.wall_ns(ev.ts_ns)),
            netns: ev.netns,
            cpu: ev.cpu,
            cause: is_drop.then(|| Cause::from_raw(ev.cause).map_or("unknown", Cause::as_str)),
            family: match t.family {
                2 => 4,
                10 => 6,
                _ => 0,
            },
            proto: proto_name(t.proto),
            src: src.to_string(),
            sport: t.sport,
            dst: dst.to_string(),
            dport: t.dport,
            tcp_flags: if t.proto == 6 {
                tcp_flags_text(ev.tcp_flags)
            } else {
                String::new()
            },
            len: is_drop.then_some(ev.len),
            ifindex: is_drop.then_some(ev.ifindex),
            ifname: is_drop.then(|| String::from_utf8_lossy(&ev.ifname[..name_end]).into_owned()),
            ct: (ev.ct != 0).then(|| format!("{:#x}", ev.ct)),
            alloc_ts_ns: (ev.kind == kind::ALLOC).then_some(ev.alloc_ts_ns),
            zone: has_ct.then_some(ev.zone),
            mark: has_ct.then_some(ev.mark),
            status: has_ct.then_some(ev.status),
            event_flags: flag_names(ev.flags),
        }
    }

    pub fn to_csv(&self) -> String {
        let o = |v: Option<String>| v.unwrap_or_default();
        let fields = [
            self.kind.to_owned(),
            self.ts_ns.to_string(),
            self.time.clone(),
            self.netns.to_string(),
            self.cpu.to_string(),
            self.cause.unwrap_or_default().to_owned(),
            self.family.to_string(),
            self.proto.clone(),
            self.src.clone(),
            self.sport.to_string(),
            self.dst.clone(),
            self.dport.to_string(),
            self.tcp_flags.clone(),
            o(self.len.map(|v| v.to_string())),
            o(self.ifindex.map(|v| v.to_string())),
            o(self.ifname.clone()),
            o(self.ct.clone()),
            o(self.alloc_ts_ns.map(|v| v.to_string())),
            o(self.zone.map(|v| v.to_string())),
            o(self.mark.map(|v| v.to_string())),
            o(self.status.map(|v| v.to_string())),
            self.event_flags.clone(),
        ];
        csv_line(&fields)
    }
}

pub fn kind_name(k: u8) -> &'static str {
    match k {
        kind::ALLOC => "alloc",
        kind::FREE => "free",
        kind::DROP => "drop",
        _ => "unknown",
    }
}

fn flag_names(flags: u8) -> String {
    const NAMES: [(u8, &str); 5] = [
        (flag::HAS_CT, "has_ct"),
        (flag::CONFIRMED, "confirmed"),
        (flag::TRUNCATED, "truncated"),
        (flag::NON_IP, "non_ip"),
        (flag::NO_NETNS, "no_netns"),
    ];
    NAMES
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join("|")
}

/// The first snapshot of a trace: exported counters count from it, not
/// from when ctscope loaded its probes (a recording started with `r` in
/// `top` minutes later began at those minutes' counts).
#[derive(Clone, Debug, Default)]
pub struct Baseline {
    first: Option<(Counters, Vec<NetnsSample>)>,
}

impl Baseline {
    /// `s` with its probe counters (machine-wide and per namespace) made
    /// counts since the first snapshot seen; the first becomes the base.
    pub fn rebase(&mut self, s: &Snapshot) -> Snapshot {
        let (counters, netns) = self
            .first
            .get_or_insert_with(|| (s.counters, s.netns.clone()));
        let mut out = s.clone();
        for (v, b) in out.counters.0.iter_mut().zip(counters.0) {
            *v = v.saturating_sub(b);
        }
        for n in &mut out.netns {
            // A namespace first seen later counts from 0.
            let Some(b) = netns.iter().find(|b| b.id == n.id && b.inum == n.inum) else {
                continue;
            };
            n.alloc = n.alloc.saturating_sub(b.alloc);
            n.free = n.free.saturating_sub(b.free);
            for (v, b) in n.drops.iter_mut().zip(b.drops) {
                *v = v.saturating_sub(b);
            }
        }
        out
    }
}

/// A snapshot as one JSON object: counters by name, per-namespace counters,
/// the kernel's own counters and the sysctls. Pass it through
/// [`Baseline::rebase`] for counts since the trace's start.
#[derive(Serialize)]
pub struct SnapshotRow<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub mono_ns: u64,
    pub wall_ms: u64,
    pub time: String,
    /// `nf_conntrack_count` summed over the namespaces read.
    pub entries: Option<u64>,
    pub counters: Map<String, Value>,
    pub netns: &'a [crate::event::NetnsSample],
    pub kernel: &'a [NetnsReading],
    pub sysctls: &'a Sysctls,
}

pub fn snapshot_json(header: &Header, s: &Snapshot) -> String {
    let counters: Map<String, Value> = COUNTER_NAMES
        .iter()
        .zip(s.counters.0)
        .filter(|(name, _)| !name.starts_with("reserved"))
        .map(|(name, v)| ((*name).to_owned(), Value::from(v)))
        .collect();
    let row = SnapshotRow {
        kind: "snapshot",
        mono_ns: s.mono_ns,
        wall_ms: s.wall_ms,
        time: rfc3339(header.wall_ns(s.mono_ns)),
        entries: entries(s),
        counters,
        netns: &s.netns,
        kernel: &s.kernel,
        sysctls: &s.sysctls,
    };
    serde_json::to_string(&row).unwrap_or_default()
}

fn entries(s: &Snapshot) -> Option<u64> {
    s.kernel
        .iter()
        .filter_map(|r| r.count)
        .fold(None, |acc, c| Some(acc.unwrap_or(0) + c))
}

/// CSV columns of a snapshot: totals only (per-namespace detail is in JSON).
pub fn snapshot_csv_header() -> String {
    let mut cols: Vec<String> = ["mono_ns", "wall_ms", "time", "entries", "max", "buckets"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    cols.extend(
        COUNTER_NAMES
            .iter()
            .filter(|n| !n.starts_with("reserved"))
            .map(|n| (*n).to_owned()),
    );
    cols.extend(
        ConntrackStats::FIELD_NAMES
            .iter()
            .map(|n| format!("kernel_{n}")),
    );
    cols.join(",")
}

pub fn snapshot_csv(header: &Header, s: &Snapshot) -> String {
    let o = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    let mut fields = vec![
        s.mono_ns.to_string(),
        s.wall_ms.to_string(),
        rfc3339(header.wall_ns(s.mono_ns)),
        o(entries(s)),
        o(s.sysctls.nf_conntrack_max),
        o(s.sysctls.nf_conntrack_buckets),
    ];
    fields.extend(
        COUNTER_NAMES
            .iter()
            .zip(s.counters.0)
            .filter(|(n, _)| !n.starts_with("reserved"))
            .map(|(_, v)| v.to_string()),
    );
    // The kernel's counters summed over namespaces, as read (not deltas).
    let kernel = s
        .kernel
        .iter()
        .filter_map(|r| r.stats)
        .fold(ConntrackStats::default(), |acc, k| acc.wrapping_add(&k));
    fields.extend(kernel.values().iter().map(u64::to_string));
    csv_line(&fields)
}

#[derive(Serialize)]
struct LostRow {
    #[serde(rename = "type")]
    kind: &'static str,
    from_mono_ns: u64,
    to_mono_ns: u64,
    time: String,
    ring_full: u64,
    pending_overflow: u64,
    sampled_out: u64,
}

pub fn lost_json(header: &Header, l: &Lost) -> String {
    let row = LostRow {
        kind: "lost",
        from_mono_ns: l.from_mono_ns,
        to_mono_ns: l.to_mono_ns,
        time: rfc3339(header.wall_ns(l.to_mono_ns)),
        ring_full: l.ring_full,
        pending_overflow: l.pending_overflow,
        sampled_out: l.sampled_out,
    };
    serde_json::to_string(&row).unwrap_or_default()
}

pub const LOST_CSV_HEADER: &str =
    "from_mono_ns,to_mono_ns,time,ring_full,pending_overflow,sampled_out";

pub fn lost_csv(header: &Header, l: &Lost) -> String {
    csv_line(&[
        l.from_mono_ns.to_string(),
        l.to_mono_ns.to_string(),
        rfc3339(header.wall_ns(l.to_mono_ns)),
        l.ring_full.to_string(),
        l.pending_overflow.to_string(),
        l.sampled_out.to_string(),
    ])
}

/// RFC 4180: quote fields holding a comma, a quote or a line break.
fn csv_line(fields: &[String]) -> String {
    fields
        .iter()
        .map(|f| {
            if f.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", f.replace('"', "\"\""))
            } else {
                f.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `2026-11-26T09:14:02.123456789Z` for ns since the Unix epoch.
pub fn rfc3339(wall_ns: u64) -> String {
    let secs = wall_ns / 1_000_000_000;
    let nanos = wall_ns % 1_000_000_000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
pub(super) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
