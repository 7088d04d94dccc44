//! Who holds the table: the entries one walk found, grouped by destination,
//! source, state and namespace. When the table is full, this tells "raise
//! the limit" (many clients, each a little) from "fix the client that leaks
//! connections" (one destination or source holding most entries).
//!
//! The walker (probe/walk.rs) decodes each entry into a [`HolderEntry`] and
//! feeds a [`HoldersBuilder`]; [`HoldersBuilder::finish`] keeps the top rows
//! of each grouping. Memory is bounded whatever the table holds: each
//! grouping counts at most [`KEYS`] distinct keys with the space-saving
//! algorithm (model/drops.rs `TopN`), so counts are exact while a grouping
//! has fewer distinct keys than that, and any key holding more than
//! 1/[`KEYS`] of the entries is always listed. Field names are the
//! documented output (docs/holders.md).

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
};

use serde::{Deserialize, Serialize};

use super::drops::{TopN, proto_name};

/// Distinct keys each grouping counts exactly (space-saving beyond).
pub const KEYS: usize = 16384;
/// Rows of each grouping kept in a walk (the model, traces, the TUI).
pub const ROWS: usize = 64;

/// `IPS_SEEN_REPLY_BIT` and `IPS_ASSURED_BIT` (include/uapi/linux/netfilter/
/// nf_conntrack_common.h; part of the UAPI, stable).
const IPS_SEEN_REPLY: u32 = 1 << 1;
const IPS_ASSURED: u32 = 1 << 2;

/// State codes of protocols without their own state machine here, after the
/// TCP states (`enum tcp_conntrack` has fewer than 13 values).
pub const STATE_UNREPLIED: u8 = 13;
pub const STATE_REPLIED: u8 = 14;
pub const STATE_ASSURED: u8 = 15;

/// The state code of an entry: the TCP state, or from the status bits.
pub fn state_code(proto: u8, tcp_state: u8, status: u32) -> u8 {
    if proto == 6 {
        tcp_state.min(12)
    } else if status & IPS_ASSURED != 0 {
        STATE_ASSURED
    } else if status & IPS_SEEN_REPLY != 0 {
        STATE_REPLIED
    } else {
        STATE_UNREPLIED
    }
}

/// The name of a state code; `tcp` holds `enum tcp_conntrack` names by value.
pub fn state_name(code: u8, tcp: &[String]) -> String {
    match code {
        STATE_UNREPLIED => "UNREPLIED".into(),
        STATE_REPLIED => "REPLIED".into(),
        STATE_ASSURED => "ASSURED".into(),
        c => tcp
            .get(usize::from(c))
            .cloned()
            .unwrap_or_else(|| c.to_string()),
    }
}

/// One entry, as the walk found it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HolderEntry {
    pub netns: u32,
    /// 2 (IPv4) or 10 (IPv6).
    pub family: u8,
    pub proto: u8,
    /// [`state_code`].
    pub state: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Destination port (ICMP: `type << 8 | code`).
    pub dport: u16,
    /// Seconds until the entry expires (negative: expired, awaiting GC).
    pub timeout_s: i32,
}

/// How entries are grouped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum By {
    /// Namespace, protocol, destination address and port.
    #[default]
    Dst,
    /// Namespace, protocol, source address.
    Src,
    /// Namespace, protocol, state.
    State,
    /// Namespace.
    Netns,
}

impl By {
    pub const ALL: [By; 4] = [By::Dst, By::Src, By::State, By::Netns];

    pub fn as_str(self) -> &'static str {
        match self {
            By::Dst => "dst",
            By::Src => "src",
            By::State => "state",
            By::Netns => "netns",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        By::ALL
            .into_iter()
            .find(|b| b.as_str() == s)
            .ok_or_else(|| format!("unknown grouping {s:?}: use dst, src, state or netns"))
    }
}

/// A grouping key; fields a grouping does not use stay zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    netns: u32,
    proto: u8,
    family: u8,
    state: u8,
    addr: [u8; 16],
    port: u16,
}

impl Key {
    fn of(by: By, e: &HolderEntry) -> Self {
        let netns = Key {
            netns: e.netns,
            ..Key::default()
        };
        match by {
            By::Netns => netns,
            By::State => Key {
                proto: e.proto,
                state: e.state,
                ..netns
            },
            By::Src => Key {
                proto: e.proto,
                family: e.family,
                addr: e.src,
                ..netns
            },
            By::Dst => Key {
                proto: e.proto,
                family: e.family,
                addr: e.dst,
                port: e.dport,
                ..netns
            },
        }
    }
}

/// What is kept per key besides its count.
#[derive(Clone, Copy, Debug)]
struct Acc {
    timeout_min: i32,
    timeout_max: i32,
    /// Entries by state code.
    states: [u32; 16],
}

impl Default for Acc {
    fn default() -> Self {
        Self {
            timeout_min: i32::MAX,
            timeout_max: i32::MIN,
            states: [0; 16],
        }
    }
}

/// One grouping being counted.
#[derive(Clone, Debug)]
struct Grouping {
    by: By,
    counts: TopN<Key>,
    /// By the key's slot in `counts` (one hash per entry, not two).
    accs: Vec<Acc>,
}

impl Grouping {
    fn new(by: By, keys: usize) -> Self {
        Self {
            by,
            counts: TopN::new(keys),
            accs: Vec::new(),
        }
    }

    fn add(&mut self, e: &HolderEntry) {
        let (slot, fresh, _) = self.counts.add_slot(Key::of(self.by, e));
        if slot >= self.accs.len() {
            self.accs.resize(slot + 1, Acc::default());
        }
        let acc = &mut self.accs[slot];
        if fresh {
            *acc = Acc::default();
        }
        acc.timeout_min = acc.timeout_min.min(e.timeout_s);
        acc.timeout_max = acc.timeout_max.max(e.timeout_s);
        acc.states[usize::from(e.state & 15)] += 1;
    }

    fn rows(&self, n: usize, tcp: &[String]) -> Vec<HolderRow> {
        self.counts
            .top_slots(n)
            .into_iter()
            .map(|(k, count, slot)| {
                let acc = self.accs.get(slot).copied().unwrap_or_default();
                row(self.by, &k, count, &acc, tcp)
            })
            .collect()
    }
}

fn addr_text(family: u8, a: &[u8; 16]) -> String {
    if family == 10 {
        Ipv6Addr::from(*a).to_string()
    } else {
        Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string()
    }
}

fn row(by: By, k: &Key, count: u64, acc: &Acc, tcp: &[String]) -> HolderRow {
    let mut states = BTreeMap::new();
    for (code, &n) in acc.states.iter().enumerate() {
        if n > 0 {
            states.insert(state_name(code as u8, tcp), u64::from(n));
        }
    }
    let (lo, hi) = if acc.timeout_min <= acc.timeout_max {
        (i64::from(acc.timeout_min), i64::from(acc.timeout_max))
    } else {
        (0, 0)
    };
    let proto = (by != By::Netns).then(|| proto_name(k.proto));
    HolderRow {
        netns: k.netns,
        netns_name: None,
        proto,
        dst: (by == By::Dst).then(|| addr_text(k.family, &k.addr)),
        dport: (by == By::Dst).then_some(k.port),
        src: (by == By::Src).then(|| addr_text(k.family, &k.addr)),
        state: (by == By::State).then(|| state_name(k.state, tcp)),
        count,
        timeout_min_s: lo,
        timeout_max_s: hi,
        states,
    }
}

/// One group of entries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderRow {
    /// Namespace inode number (as in "table full in netns N").
    pub netns: u32,
    /// Its `ip netns` name, when it has one and the view looked it up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_name: Option<String>,
    /// Protocol (every grouping but `netns`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    /// Destination address and port (grouping `dst`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    /// Source address (grouping `src`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    /// State (grouping `state`): the TCP state, or UNREPLIED / REPLIED /
    /// ASSURED from the status bits for other protocols.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Entries in the group.
    pub count: u64,
    /// Seconds left before the soonest and the latest of them expire.
    pub timeout_min_s: i64,
    pub timeout_max_s: i64,
    /// The group's entries by state.
    #[serde(default)]
    pub states: BTreeMap<String, u64>,
}

impl HolderRow {
    /// What the row is about, for people: `tcp 10.0.0.2:9000`, `udp
    /// 10.0.0.7`, `tcp ESTABLISHED`, or empty for a namespace row.
    pub fn what(&self) -> String {
        let proto = self.proto.as_deref().unwrap_or("");
        match (&self.dst, self.dport, &self.src, &self.state) {
            (Some(d), Some(p), ..) if d.contains(':') => format!("{proto} [{d}]:{p}"),
            (Some(d), Some(p), ..) => format!("{proto} {d}:{p}"),
            (_, _, Some(s), _) => format!("{proto} {s}"),
            (_, _, _, Some(st)) => format!("{proto} {st}"),
            _ => String::new(),
        }
    }

    /// The most common state of the group, with its count.
    pub fn main_state(&self) -> Option<(&str, u64)> {
        self.states
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(s, n)| (s.as_str(), *n))
    }
}

/// The holders of one walk.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holders {
    /// Entries the walk found (each once, by its original direction).
    pub entries: u64,
    /// Entries the walk passed but could not record (its buffer was full on
    /// a chain it could not split); 0 normally.
    pub missed: u64,
    /// Distinct keys each grouping counts exactly; `approximate` is set
    /// when a grouping met more (counts are then upper bounds, heavy
    /// holders still always listed).
    pub keys_cap: u64,
    pub approximate: bool,
    pub by_dst: Vec<HolderRow>,
    pub by_src: Vec<HolderRow>,
    pub by_state: Vec<HolderRow>,
    pub by_netns: Vec<HolderRow>,
}

impl Holders {
    pub fn rows(&self, by: By) -> &[HolderRow] {
        match by {
            By::Dst => &self.by_dst,
            By::Src => &self.by_src,
            By::State => &self.by_state,
            By::Netns => &self.by_netns,
        }
    }

    /// Fills in namespace names from `name(inum)`.
    pub fn name_namespaces(&mut self, name: impl Fn(u32) -> Option<String>) {
        for by in By::ALL {
            let rows = match by {
                By::Dst => &mut self.by_dst,
                By::Src => &mut self.by_src,
                By::State => &mut self.by_state,
                By::Netns => &mut self.by_netns,
            };
            for r in rows {
                r.netns_name = name(r.netns);
            }
        }
    }
}

/// Counts the entries of one walk.
#[derive(Clone, Debug)]
pub struct HoldersBuilder {
    groupings: [Grouping; 4],
    entries: u64,
    missed: u64,
    keys: usize,
}

impl Default for HoldersBuilder {
    fn default() -> Self {
        Self::with_keys(KEYS)
    }
}

impl HoldersBuilder {
    /// A builder counting at most `keys` distinct keys per grouping.
    pub fn with_keys(keys: usize) -> Self {
        Self {
            groupings: By::ALL.map(|by| Grouping::new(by, keys)),
            entries: 0,
            missed: 0,
            keys,
        }
    }

    pub fn add(&mut self, e: &HolderEntry) {
        self.entries += 1;
        for g in &mut self.groupings {
            g.add(e);
        }
    }

    /// Entries passed but not recorded.
    pub fn add_missed(&mut self, n: u64) {
        self.missed += n;
    }

    /// The `rows` largest groups of each grouping; `tcp` names TCP states.
    pub fn finish(&self, rows: usize, tcp: &[String]) -> Holders {
        let [dst, src, state, netns] = &self.groupings;
        Holders {
            entries: self.entries,
            missed: self.missed,
            keys_cap: self.keys as u64,
            approximate: self.groupings.iter().any(|g| g.counts.len() >= self.keys),
            by_dst: dst.rows(rows, tcp),
            by_src: src.rows(rows, tcp),
            by_state: state.rows(rows, tcp),
            by_netns: netns.rows(rows, tcp),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_names() -> Vec<String> {
        [
            "NONE",
            "SYN_SENT",
            "SYN_RECV",
            "ESTABLISHED",
            "FIN_WAIT",
            "CLOSE_WAIT",
            "LAST_ACK",
            "TIME_WAIT",
            "CLOSE",
        ]
        .map(String::from)
        .to_vec()
    }

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut b = [0; 16];
        b[..4].copy_from_slice(&a);
        b
    }

    fn tcp(netns: u32, src: [u8; 4], dst: [u8; 4], dport: u16, state: u8, t: i32) -> HolderEntry {
        HolderEntry {
            netns,
            family: 2,
            proto: 6,
            state,
            src: v4(src),
            dst: v4(dst),
            dport,
            timeout_s: t,
        }
    }

    #[test]
    fn forty_idle_connections_to_one_port_are_the_top_holder() {
        let mut b = HoldersBuilder::default();
        for i in 0..40 {
            b.add(&tcp(7, [10, 0, 0, 1], [10, 0, 0, 2], 9000, 3, 431_000 + i));
        }
        for p in 0..25u16 {
            b.add(&tcp(7, [10, 0, 0, 3], [10, 0, 0, 4], 1000 + p, 7, 60));
        }
        b.add(&tcp(8, [10, 0, 0, 1], [10, 0, 0, 2], 9000, 3, 5));
        let h = b.finish(ROWS, &tcp_names());
        assert_eq!(h.entries, 66);
        assert!(!h.approximate);
        let top = &h.by_dst[0];
        assert_eq!(top.count, 40);
        assert_eq!(top.netns, 7);
        assert_eq!(top.what(), "tcp 10.0.0.2:9000");
        assert_eq!((top.timeout_min_s, top.timeout_max_s), (431_000, 431_039));
        assert_eq!(top.main_state(), Some(("ESTABLISHED", 40)));
        // The same destination in another namespace is another group.
        assert!(h.by_dst.iter().any(|r| r.netns == 8 && r.count == 1));
        assert_eq!(h.by_src[0].count, 40);
        assert_eq!(h.by_src[1].src.as_deref(), Some("10.0.0.3"));
        assert_eq!(h.by_src[1].count, 25);
        assert_eq!(h.by_state[0].state.as_deref(), Some("ESTABLISHED"));
        assert_eq!(h.by_state[0].count, 40);
        assert_eq!(h.by_state[1].state.as_deref(), Some("TIME_WAIT"));
        assert_eq!(h.by_netns[0].count, 65);
        assert_eq!(h.by_netns[1].count, 1);
        assert_eq!(h.by_netns[0].proto, None);
    }

    #[test]
    fn rows_are_cut_to_the_requested_number() {
        let mut b = HoldersBuilder::default();
        for p in 0..100u16 {
            for _ in 0..=(p % 3) {
                b.add(&tcp(1, [1, 1, 1, 1], [2, 2, 2, 2], p, 3, 1));
            }
        }
        let h = b.finish(5, &tcp_names());
        assert_eq!(h.by_dst.len(), 5);
        assert!(h.by_dst.iter().all(|r| r.count == 3));
        assert_eq!(h.entries, 199);
    }

    #[test]
    fn a_heavy_holder_survives_a_flood_of_distinct_keys() {
        // More distinct sources than the builder keeps: the one holding
        // many entries is still listed, with a count never below its own.
        let mut b = HoldersBuilder::with_keys(64);
        for i in 0..5000u32 {
            let b4 = i.to_be_bytes();
            b.add(&tcp(1, [10, b4[1], b4[2], b4[3]], [9, 9, 9, 9], 80, 2, 30));
            if i % 50 == 0 {
                b.add(&tcp(1, [192, 0, 2, 1], [9, 9, 9, 9], 80, 2, 30));
            }
        }
        let h = b.finish(3, &tcp_names());
        assert!(h.approximate);
        assert_eq!(h.by_src[0].src.as_deref(), Some("192.0.2.1"));
        assert!(h.by_src[0].count >= 100);
        assert_eq!(h.by_dst[0].count, 5100);
    }

    #[test]
    fn states_of_other_protocols_come_from_the_status_bits() {
        assert_eq!(state_code(17, 0, 0), STATE_UNREPLIED);
        assert_eq!(state_code(17, 0, IPS_SEEN_REPLY), STATE_REPLIED);
        assert_eq!(
            state_code(17, 0, IPS_SEEN_REPLY | IPS_ASSURED),
            STATE_ASSURED
        );
        assert_eq!(state_code(6, 3, IPS_ASSURED), 3);
        assert_eq!(state_name(STATE_ASSURED, &[]), "ASSURED");
        assert_eq!(state_name(3, &tcp_names()), "ESTABLISHED");
        assert_eq!(state_name(11, &tcp_names()), "11");
    }

    #[test]
    fn ipv6_destinations_are_bracketed_and_json_round_trips() {
        let mut b = HoldersBuilder::default();
        let mut dst = [0u8; 16];
        dst[15] = 1;
        b.add(&HolderEntry {
            netns: 3,
            family: 10,
            proto: 17,
            state: STATE_UNREPLIED,
            dst,
            dport: 53,
            timeout_s: 29,
            ..HolderEntry::default()
        });
        let mut h = b.finish(4, &[]);
        h.name_namespaces(|n| (n == 3).then(|| "blue".to_owned()));
        assert_eq!(h.by_dst[0].what(), "udp [::1]:53");
        assert_eq!(h.by_dst[0].netns_name.as_deref(), Some("blue"));
        let json = serde_json::to_string(&h).expect("json");
        assert!(json.contains("\"dport\":53"), "{json}");
        let v: serde_json::Value = serde_json::from_str(&json).expect("value");
        assert!(v["by_dst"][0].get("src").is_none(), "{json}");
        let back: Holders = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, h);
    }

    #[test]
    fn groupings_parse_by_name() {
        assert_eq!(By::parse("src"), Ok(By::Src));
        assert!(By::parse("port").is_err());
    }
}
