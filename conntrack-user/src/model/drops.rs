//! Dropped packets: the recent ones in detail, and top-N aggregations by
//! destination, source and namespace. Counts per cause come from the exact
//! in-kernel counters (see [`super::Totals`]); this is the per-packet view,
//! which the kernel may sample under a flood.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    hash::Hash,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use conntrack_common::{Event, cause, flag};
use serde::Serialize;

/// Why a packet was dropped (conntrack_common::cause, by name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    TableFull,
    Invalid,
    InsertFailed,
    ChainTooLong,
    Ruleset,
    /// Kernel code other than conntrack and the ruleset (see
    /// `DropRecord::location`).
    Other,
}

impl Cause {
    pub const ALL: [Cause; cause::ALL] = [
        Cause::TableFull,
        Cause::Invalid,
        Cause::InsertFailed,
        Cause::ChainTooLong,
        Cause::Ruleset,
        Cause::Other,
    ];

    pub fn from_raw(raw: u8) -> Option<Self> {
        Self::ALL.get(raw as usize).copied()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::TableFull => "table_full",
            Cause::Invalid => "invalid",
            Cause::InsertFailed => "insert_failed",
            Cause::ChainTooLong => "chain_too_long",
            Cause::Ruleset => "ruleset",
            Cause::Other => "other",
        }
    }

    /// Ruleset drops are the firewall's doing, not conntrack's.
    pub fn is_policy(self) -> bool {
        self == Cause::Ruleset
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let norm = text.trim().to_ascii_lowercase().replace('-', "_");
        match norm.as_str() {
            "policy" => return Ok(Cause::Ruleset),
            "full" => return Ok(Cause::TableFull),
            _ => {}
        }
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == norm)
            .ok_or_else(|| {
                format!(
                    "unknown cause `{text}`; use one of table_full, invalid, insert_failed, \
                     chain_too_long, ruleset (or policy), other"
                )
            })
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One dropped packet, decoded from a kernel event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DropRecord {
    /// CLOCK_MONOTONIC ns, the kernel's timestamp.
    pub ts_ns: u64,
    pub cause: Cause,
    pub netns: u32,
    pub ifindex: u32,
    pub ifname: String,
    /// 4 or 6; 0 when the packet was not IP.
    pub family: u8,
    pub proto: u8,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    pub tcp_flags: u8,
    pub len: u32,
    pub cpu: u32,
    /// Conntrack zone and mark, when an entry was attached.
    pub zone: Option<u16>,
    pub mark: Option<u32>,
    pub truncated: bool,
    /// The kernel address that freed the packet (0 if unknown).
    pub location: u64,
    /// The netfilter hook (`conntrack_common::classify::hook`; 0 unknown).
    pub hook: u8,
}

impl DropRecord {
    pub fn from_event(ev: &Event) -> Option<Self> {
        let cause = Cause::from_raw(ev.cause)?;
        let t = &ev.tuple;
        let (family, src, dst) = match t.family {
            2 => {
                let a = |b: &[u8; 16]| IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
                (4, a(&t.src), a(&t.dst))
            }
            10 => (
                6,
                IpAddr::V6(Ipv6Addr::from(t.src)),
                IpAddr::V6(Ipv6Addr::from(t.dst)),
            ),
            _ => (
                0,
                Ipv4Addr::UNSPECIFIED.into(),
                Ipv4Addr::UNSPECIFIED.into(),
            ),
        };
        let has_ct = ev.flags & flag::HAS_CT != 0;
        let name_end = ev
            .ifname
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(ev.ifname.len());
        Some(Self {
            ts_ns: ev.ts_ns,
            cause,
            netns: ev.netns,
            ifindex: ev.ifindex,
            ifname: String::from_utf8_lossy(&ev.ifname[..name_end]).into_owned(),
            family,
            proto: t.proto,
            src,
            sport: t.sport,
            dst,
            dport: t.dport,
            tcp_flags: ev.tcp_flags,
            len: ev.len,
            cpu: ev.cpu,
            zone: has_ct.then_some(ev.zone),
            mark: has_ct.then_some(ev.mark),
            truncated: ev.flags & (flag::TRUNCATED | flag::NON_IP) != 0,
            location: ev.location,
            hook: ev.hook,
        })
    }

    /// TCP SYN without ACK: a new connection attempt.
    pub fn is_syn(&self) -> bool {
        self.proto == 6 && self.tcp_flags & 0x02 != 0 && self.tcp_flags & 0x10 == 0
    }

    /// Protocol name as users write it.
    pub fn proto_name(&self) -> String {
        proto_name(self.proto)
    }

    /// The TCP flags as letters, e.g. "S", "SA", "FA", "R".
    pub fn flags_text(&self) -> String {
        if self.proto != 6 {
            return String::new();
        }
        tcp_flags_text(self.tcp_flags)
    }

    /// ICMP(v6) type and code, which the event carries in `dport`.
    pub fn icmp(&self) -> Option<(u8, u8)> {
        matches!(self.proto, 1 | 58).then(|| ((self.dport >> 8) as u8, self.dport as u8))
    }

    /// Destination as `addr:port` (`[v6]:port`), or the address alone for
    /// protocols without ports.
    pub fn dst_endpoint(&self) -> Endpoint {
        Endpoint {
            addr: self.dst,
            port: self.has_ports().then_some(self.dport),
        }
    }

    pub fn src_endpoint(&self) -> Endpoint {
        Endpoint {
            addr: self.src,
            port: self.has_ports().then_some(self.sport),
        }
    }

    fn has_ports(&self) -> bool {
        matches!(self.proto, 6 | 17 | 132 | 136)
    }
}

pub fn proto_name(proto: u8) -> String {
    match proto {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        136 => "udplite".into(),
        47 => "gre".into(),
        other => other.to_string(),
    }
}

/// Letters in the order tcpdump users read them: S F R P A U E C.
pub fn tcp_flags_text(flags: u8) -> String {
    const LETTERS: [(u8, char); 8] = [
        (0x02, 'S'),
        (0x01, 'F'),
        (0x04, 'R'),
        (0x08, 'P'),
        (0x10, 'A'),
        (0x20, 'U'),
        (0x40, 'E'),
        (0x80, 'C'),
    ];
    LETTERS
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, c)| *c)
        .collect()
}

/// An address with an optional port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Endpoint {
    pub addr: IpAddr,
    pub port: Option<u16>,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.addr, self.port) {
            (IpAddr::V6(a), Some(p)) => write!(f, "[{a}]:{p}"),
            (a, Some(p)) => write!(f, "{a}:{p}"),
            (a, None) => write!(f, "{a}"),
        }
    }
}

/// Counts per key, keeping at most `cap` keys: when full, the smallest
/// count is evicted (space-saving), so heavy hitters survive a flood of
/// distinct keys in bounded memory.
#[derive(Clone, Debug)]
pub struct TopN<K> {
    counts: HashMap<K, u64>,
    cap: usize,
}

impl<K: Clone + Eq + Hash + Ord> TopN<K> {
    pub fn new(cap: usize) -> Self {
        Self {
            counts: HashMap::new(),
            cap: cap.max(1),
        }
    }

    pub fn add(&mut self, key: K, n: u64) {
        if let Some(c) = self.counts.get_mut(&key) {
            *c += n;
            return;
        }
        if self.counts.len() >= self.cap
            && let Some((min_key, min)) = self
                .counts
                .iter()
                .min_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
                .map(|(k, c)| (k.clone(), *c))
        {
            self.counts.remove(&min_key);
            self.counts.insert(key, min + n);
            return;
        }
        self.counts.insert(key, n);
    }

    /// The `n` largest counts, largest first (ties by key).
    pub fn top(&self, n: usize) -> Vec<(K, u64)> {
        let mut v: Vec<(K, u64)> = self.counts.iter().map(|(k, c)| (k.clone(), *c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

/// Which drops the per-packet view keeps (`ctscope drops` filters, the
/// TUI's `/`). An empty filter keeps everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropFilter {
    pub causes: Vec<Cause>,
    pub syn_only: bool,
    pub netns: Option<u32>,
    pub proto: Option<u8>,
    pub port: Option<u16>,
    pub host: Option<IpAddr>,
}

impl DropFilter {
    pub fn matches(&self, d: &DropRecord) -> bool {
        (self.causes.is_empty() || self.causes.contains(&d.cause))
            && (!self.syn_only || d.is_syn())
            && self.netns.is_none_or(|n| n == d.netns)
            && self.proto.is_none_or(|p| p == d.proto)
            && self
                .port
                .is_none_or(|p| d.has_ports() && (d.sport == p || d.dport == p))
            && self.host.is_none_or(|h| h == d.src || h == d.dst)
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Keys kept by each top-N aggregation.
const TOP_KEYS: usize = 4096;
/// Recent drops kept for display.
const RECENT: usize = 1000;

/// The per-packet view of drops.
#[derive(Clone, Debug)]
pub struct DropLog {
    pub filter: DropFilter,
    pub recent: VecDeque<DropRecord>,
    pub top_dst: TopN<Endpoint>,
    pub top_src: TopN<IpAddr>,
    pub top_netns: TopN<u32>,
    /// Drops that passed the filter in the last batch of events applied, in
    /// order: what a streaming view prints next.
    pub fresh: Vec<DropRecord>,
    /// Drop events that passed the filter.
    pub matched: u64,
    /// Drop events received (the kernel may have sampled them).
    pub received: u64,
}

impl Default for DropLog {
    fn default() -> Self {
        Self::new(DropFilter::default())
    }
}

impl DropLog {
    pub fn new(filter: DropFilter) -> Self {
        Self {
            filter,
            recent: VecDeque::new(),
            top_dst: TopN::new(TOP_KEYS),
            top_src: TopN::new(TOP_KEYS),
            top_netns: TopN::new(TOP_KEYS),
            fresh: Vec::new(),
            matched: 0,
            received: 0,
        }
    }

    /// Starts a new batch: `fresh` will hold what the batch adds.
    pub fn begin_batch(&mut self) {
        self.fresh.clear();
    }

    /// Adds a drop if it passes the filter.
    pub fn push(&mut self, d: DropRecord) {
        self.received += 1;
        if !self.filter.matches(&d) {
            return;
        }
        self.matched += 1;
        self.top_dst.add(d.dst_endpoint(), 1);
        self.top_src.add(d.src, 1);
        self.top_netns.add(d.netns, 1);
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(d.clone());
        self.fresh.push(d);
    }
}

#[cfg(test)]
mod tests {
    use conntrack_common::{Tuple, kind};

    use super::*;

    pub fn drop_event(cause: u8, dport: u16, flags: u8) -> Event {
        let mut t = Tuple {
            family: 2,
            proto: 6,
            sport: 40000,
            dport,
            ..Tuple::default()
        };
        t.src[..4].copy_from_slice(&[10, 0, 0, 1]);
        t.dst[..4].copy_from_slice(&[10, 0, 0, 2]);
        let mut ifname = [0u8; 16];
        ifname[..2].copy_from_slice(b"lo");
        Event {
            kind: kind::DROP,
            cause,
            tcp_flags: flags,
            netns: 4026531840,
            ifname,
            tuple: t,
            ..Event::default()
        }
    }

    #[test]
    fn decodes_events() {
        let d = DropRecord::from_event(&drop_event(cause::TABLE_FULL, 443, 0x02)).expect("drop");
        assert_eq!(d.cause, Cause::TableFull);
        assert_eq!(d.dst_endpoint().to_string(), "10.0.0.2:443");
        assert_eq!(d.flags_text(), "S");
        assert!(d.is_syn());
        assert_eq!(d.ifname, "lo");
        assert_eq!(d.zone, None, "no entry attached");
        assert!(
            DropRecord::from_event(&drop_event(9, 1, 0)).is_none(),
            "unknown cause"
        );
    }

    #[test]
    fn flags_read_like_tcpdump() {
        assert_eq!(tcp_flags_text(0x12), "SA");
        assert_eq!(tcp_flags_text(0x11), "FA");
        assert_eq!(tcp_flags_text(0x04), "R");
        assert_eq!(tcp_flags_text(0x18), "PA");
    }

    #[test]
    fn ipv6_endpoints_are_bracketed() {
        let mut ev = drop_event(cause::TABLE_FULL, 80, 0x02);
        ev.tuple.family = 10;
        ev.tuple.dst = Ipv6Addr::LOCALHOST.octets();
        let d = DropRecord::from_event(&ev).expect("drop");
        assert_eq!(d.dst_endpoint().to_string(), "[::1]:80");
    }

    #[test]
    fn causes_parse_by_name_and_alias() {
        assert_eq!(Cause::parse("table-full"), Ok(Cause::TableFull));
        assert_eq!(Cause::parse("policy"), Ok(Cause::Ruleset));
        assert!(
            Cause::parse("nope")
                .expect_err("bad")
                .contains("table_full")
        );
        for c in Cause::ALL {
            assert_eq!(Cause::parse(c.as_str()), Ok(c));
        }
    }

    #[test]
    fn filter_selects_syns_ports_and_causes() {
        let syn = DropRecord::from_event(&drop_event(cause::TABLE_FULL, 443, 0x02)).expect("d");
        let ack = DropRecord::from_event(&drop_event(cause::INVALID, 80, 0x10)).expect("d");
        let f = DropFilter {
            syn_only: true,
            ..DropFilter::default()
        };
        assert!(f.matches(&syn) && !f.matches(&ack));
        let f = DropFilter {
            port: Some(80),
            ..DropFilter::default()
        };
        assert!(!f.matches(&syn) && f.matches(&ack));
        let f = DropFilter {
            causes: vec![Cause::Invalid],
            ..DropFilter::default()
        };
        assert!(!f.matches(&syn) && f.matches(&ack));
        assert!(DropFilter::default().matches(&syn));
    }

    #[test]
    fn top_n_keeps_heavy_hitters_in_bounded_memory() {
        let mut top = TopN::new(3);
        for _ in 0..100 {
            top.add("heavy", 1);
        }
        for i in 0..50 {
            top.add(["a", "b", "c", "d", "e"][i % 5], 1);
        }
        let t = top.top(2);
        assert_eq!(t[0], ("heavy", 100));
        assert!(top.counts.len() <= 3);
    }

    #[test]
    fn log_counts_only_matching_drops() {
        let mut log = DropLog::new(DropFilter {
            port: Some(443),
            ..DropFilter::default()
        });
        for port in [443, 443, 80] {
            let d = DropRecord::from_event(&drop_event(cause::TABLE_FULL, port, 2)).expect("d");
            log.push(d);
        }
        assert_eq!((log.received, log.matched), (3, 2));
        assert_eq!(log.top_dst.top(1)[0].1, 2);
        assert_eq!(log.recent.len(), 2);
        assert_eq!(log.fresh.len(), 2);
        log.begin_batch();
        assert!(log.fresh.is_empty());
    }
}
