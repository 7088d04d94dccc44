//! Dropped packets: the recent ones in detail, and top-N aggregations by
//! destination, source and namespace. Counts per cause come from the exact
//! in-kernel counters (see [`super::Totals`]); this is the per-packet view,
//! which the kernel may sample under a flood.

use std::{
    collections::VecDeque,
    fmt,
    hash::{BuildHasher as _, Hash, RandomState},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use hashbrown::HashTable;

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
    /// The kernel address that freed the packet, or the NAT function that
    /// refused it (kprobe backend; `conntrack_common::Event::location`); 0
    /// if unknown.
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

/// Counts per key in bounded memory: the space-saving algorithm (Metwally,
/// Agrawal, El Abbadi, "Efficient computation of frequent and top-k elements
/// in data streams", 2005) over a stream-summary, so a spoofed SYN flood of
/// distinct sources costs O(1) per drop instead of a scan of every key.
///
/// While at most `cap` distinct keys have been seen, every count is exact.
/// Past that, a new key takes the place of one with the smallest count `m`
/// and starts at `m + 1`. With `N` adds in all:
/// - a count is never below the key's true count, and overestimates it by at
///   most the count the key inherited, which is at most `N / cap`;
/// - every key whose true count exceeds `N / cap` is kept, so a heavy hitter
///   (more than 1/4096 of the drops with the default cap) is always listed.
///
/// Each slot keeps the count it inherited (its `error`): a count with no
/// inherited part is exact, and views say which counts are bounds
/// ([`Tally`]). Without that, a destination dropped once showed `2` (it took
/// the place of a key counted once) where a trace held one event.
///
/// Memory is three arrays of `cap` entries and a hash table of `cap` slot
/// numbers. Keys are hashed once per add with std's randomly keyed SipHash
/// (the keys are addresses an attacker chooses); an evicted key leaves the
/// table by its stored hash.
#[derive(Clone, Debug)]
pub struct TopN<K> {
    /// Slots by the hash of their key.
    index: HashTable<u32>,
    hasher: RandomState,
    slots: Vec<Slot<K>>,
    /// Slots by count, largest first: `order[slots[s].rank] == s`.
    order: Vec<u32>,
    /// Runs of equal counts in `order`, each a range of ranks.
    runs: Vec<Run>,
    /// Unused entries of `runs`.
    free_runs: Vec<u32>,
    cap: usize,
}

#[derive(Clone, Debug)]
struct Slot<K> {
    key: K,
    /// `hasher.hash_one(&key)`.
    hash: u64,
    count: u64,
    /// The part of `count` inherited from the key this one replaced: the
    /// key's true count is between `count - error` and `count`.
    error: u64,
    /// Position in `order`.
    rank: u32,
    /// The run (in `runs`) holding this slot.
    run: u32,
}

/// A key's count in a [`TopN`]: exact, or (once more distinct keys came
/// than are kept) an upper bound on the true count, which is at least
/// `count - error`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub count: u64,
    pub error: u64,
}

impl Tally {
    pub fn exact(count: u64) -> Self {
        Self { count, error: 0 }
    }

    pub fn is_exact(&self) -> bool {
        self.error == 0
    }

    /// The count as shown: `≤N` when it is an upper bound.
    pub fn text(&self, number: impl Fn(u64) -> String) -> String {
        if self.is_exact() {
            number(self.count)
        } else {
            format!("≤{}", number(self.count))
        }
    }
}

/// Ranks `start..=end` of `order` all hold `count`.
#[derive(Clone, Copy, Debug)]
struct Run {
    count: u64,
    start: u32,
    end: u32,
}

impl<K: Clone + Eq + Hash + Ord> TopN<K> {
    pub fn new(cap: usize) -> Self {
        // Ranks are u32; more keys than that would not fit in memory anyway.
        let cap = cap.clamp(1, u32::MAX as usize);
        Self {
            index: HashTable::new(),
            hasher: RandomState::new(),
            slots: Vec::new(),
            order: Vec::new(),
            runs: Vec::new(),
            free_runs: Vec::new(),
            cap,
        }
    }

    /// Counts one more for `key`.
    pub fn add(&mut self, key: K) {
        self.add_slot(key);
    }

    /// Counts one more for `key`. Returns the key's slot (below the cap,
    /// stable while the key is held), whether the slot was taken just now
    /// (new, or another key's: a caller keeping more per slot starts it
    /// afresh), and the key it replaced.
    pub fn add_slot(&mut self, key: K) -> (usize, bool, Option<K>) {
        let hash = self.hasher.hash_one(&key);
        let slots = &self.slots;
        if let Some(&s) = self.index.find(hash, |s| slots[*s as usize].key == key) {
            self.increment(s);
            return (s as usize, false, None);
        }
        if self.slots.len() < self.cap {
            let s = self.slots.len();
            self.insert(key, hash);
            return (s, true, None);
        }
        // Space-saving: the new key takes the place of one with the smallest
        // count (the last rank), inherits that count, and counts its own add
        // on top.
        let Some(&s) = self.order.last() else {
            return (0, false, None);
        };
        if let Ok(old) = self
            .index
            .find_entry(self.slots[s as usize].hash, |x| *x == s)
        {
            old.remove();
        }
        let slot = &mut self.slots[s as usize];
        let evicted = std::mem::replace(&mut slot.key, key);
        slot.hash = hash;
        slot.error = slot.count;
        let slots = &self.slots;
        self.index
            .insert_unique(hash, s, |x| slots[*x as usize].hash);
        self.increment(s);
        (s as usize, true, Some(evicted))
    }

    /// The `n` largest counts with their slots (see [`Self::add_slot`]).
    pub fn top_slots(&self, n: usize) -> Vec<(K, u64, usize)> {
        let mut v: Vec<(K, u64, usize)> = self
            .top(n)
            .into_iter()
            .filter_map(|(k, c)| {
                let h = self.hasher.hash_one(&k);
                let s = *self.index.find(h, |s| self.slots[*s as usize].key == k)?;
                Some((k, c, s as usize))
            })
            .collect();
        v.truncate(n);
        v
    }

    /// A new key with count 1 goes last: every other count is at least 1.
    fn insert(&mut self, key: K, hash: u64) {
        let s = self.slots.len() as u32;
        let rank = self.order.len() as u32;
        let tail = self
            .order
            .last()
            .map(|o| self.slots[*o as usize].run)
            .filter(|r| self.runs[*r as usize].count == 1);
        let run = match tail {
            Some(r) => {
                self.runs[r as usize].end = rank;
                r
            }
            None => self.new_run(1, rank),
        };
        self.order.push(s);
        self.slots.push(Slot {
            key,
            hash,
            count: 1,
            error: 0,
            rank,
            run,
        });
        let slots = &self.slots;
        self.index
            .insert_unique(hash, s, |x| slots[*x as usize].hash);
    }

    fn new_run(&mut self, count: u64, rank: u32) -> u32 {
        let run = Run {
            count,
            start: rank,
            end: rank,
        };
        match self.free_runs.pop() {
            Some(r) => {
                self.runs[r as usize] = run;
                r
            }
            None => {
                self.runs.push(run);
                self.runs.len() as u32 - 1
            }
        }
    }

    /// Adds one to slot `s`: it swaps with the first slot of its run, the
    /// run then starts one rank later, and `s` joins the run before it if
    /// that one counts exactly one more. `order` stays sorted.
    fn increment(&mut self, s: u32) {
        let Slot { rank, run: r, .. } = self.slots[s as usize];
        let run = self.runs[r as usize];
        let first = run.start;
        if first != rank {
            let other = self.order[first as usize];
            self.order.swap(rank as usize, first as usize);
            self.slots[other as usize].rank = rank;
            self.slots[s as usize].rank = first;
        }
        if run.end == first {
            self.free_runs.push(r);
        } else {
            self.runs[r as usize].start = first + 1;
        }
        let count = run.count.saturating_add(1);
        let before = first
            .checked_sub(1)
            .map(|b| self.slots[self.order[b as usize] as usize].run)
            .filter(|b| self.runs[*b as usize].count == count);
        let joined = match before {
            Some(b) => {
                self.runs[b as usize].end = first;
                b
            }
            None => self.new_run(count, first),
        };
        let slot = &mut self.slots[s as usize];
        slot.count = count;
        slot.run = joined;
    }

    /// The `n` largest counts, largest first (ties by key). Past the cap
    /// they are upper bounds: [`Self::top_tallies`] says which.
    pub fn top(&self, n: usize) -> Vec<(K, u64)> {
        self.top_tallies(n)
            .into_iter()
            .map(|(k, t)| (k, t.count))
            .collect()
    }

    /// The `n` largest counts, largest first (ties by key), each with the
    /// part of it that may not be the key's own.
    pub fn top_tallies(&self, n: usize) -> Vec<(K, Tally)> {
        let Some(last) = n.min(self.order.len()).checked_sub(1) else {
            return Vec::new();
        };
        // Take the whole run tied with the last one that makes the cut, so
        // ties are broken by key rather than by arrival.
        let s = self.order[last] as usize;
        let end = self.runs[self.slots[s].run as usize].end as usize;
        let mut v: Vec<(K, Tally)> = self.order[..=end]
            .iter()
            .map(|s| {
                let slot = &self.slots[*s as usize];
                let tally = Tally {
                    count: slot.count,
                    error: slot.error,
                };
                (slot.key.clone(), tally)
            })
            .collect();
        v.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Keys held: at most the cap.
    pub fn len(&self) -> usize {
        self.slots.len()
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
        self.top_dst.add(d.dst_endpoint());
        self.top_src.add(d.src);
        self.top_netns.add(d.netns);
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

    /// `order` sorted by count, largest first, with ranks, runs and the
    /// index all agreeing.
    fn check_invariants<K: Clone + Eq + Hash + Ord + fmt::Debug>(top: &TopN<K>) {
        assert!(top.slots.len() <= top.cap);
        assert_eq!(top.index.len(), top.slots.len());
        assert_eq!(top.order.len(), top.slots.len());
        for (rank, s) in top.order.iter().enumerate() {
            let slot = &top.slots[*s as usize];
            assert_eq!(slot.rank as usize, rank);
            assert_eq!(slot.hash, top.hasher.hash_one(&slot.key));
            let found = top
                .index
                .find(slot.hash, |x| top.slots[*x as usize].key == slot.key);
            assert_eq!(found, Some(s));
            let run = top.runs[slot.run as usize];
            assert_eq!(run.count, slot.count);
            assert!(run.start as usize <= rank && rank <= run.end as usize);
            if let Some(next) = top.order.get(rank + 1) {
                let next = &top.slots[*next as usize];
                assert!(next.count <= slot.count, "sorted");
                assert_eq!(next.run == slot.run, next.count == slot.count);
            }
        }
    }

    /// Counts and sorts the way the view did before the sketch.
    fn exact_top(stream: &[u32], n: usize) -> Vec<(u32, u64)> {
        let mut counts: std::collections::HashMap<u32, u64> = Default::default();
        for k in stream {
            *counts.entry(*k).or_default() += 1;
        }
        let mut v: Vec<(u32, u64)> = counts.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    /// A deterministic pseudo-random stream (xorshift), skewed so counts
    /// spread over many runs.
    fn skewed_stream(len: usize, keys: u32) -> Vec<u32> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let r = (x % u64::from(keys)) as u32;
                // Squaring the fraction favours small keys.
                ((u64::from(r) * u64::from(r)) / u64::from(keys)) as u32
            })
            .collect()
    }

    #[test]
    fn top_n_is_exact_while_keys_fit() {
        let stream = skewed_stream(20_000, 300);
        let mut top = TopN::new(300);
        for (i, k) in stream.iter().enumerate() {
            top.add(*k);
            if i % 997 == 0 {
                check_invariants(&top);
            }
        }
        check_invariants(&top);
        for n in [0, 1, 5, 10, 50, 300, 1000] {
            assert_eq!(top.top(n), exact_top(&stream, n), "top {n}");
        }
    }

    #[test]
    fn top_n_breaks_ties_by_key() {
        let mut top = TopN::new(10);
        for k in ["d", "b", "c", "a", "b", "c"] {
            top.add(k);
        }
        assert_eq!(top.top(3), vec![("b", 2), ("c", 2), ("a", 1)]);
        assert_eq!(top.top(1), vec![("b", 2)]);
    }

    #[test]
    fn top_n_keeps_heavy_hitters_in_bounded_memory() {
        let mut top = TopN::new(3);
        for _ in 0..100 {
            top.add("heavy");
        }
        for i in 0..50 {
            top.add(["a", "b", "c", "d", "e"][i % 5]);
        }
        check_invariants(&top);
        let t = top.top(2);
        assert_eq!(t[0], ("heavy", 100));
        assert!(top.len() <= 3);
    }

    /// A spoofed flood: a million distinct sources, and one real source
    /// with 1 % of the drops, well above the guarantee of N / cap.
    #[test]
    fn top_n_finds_a_heavy_hitter_among_a_million_distinct_keys() {
        const CAP: usize = 4096;
        const HEAVY: u32 = u32::MAX;
        let mut top = TopN::new(CAP);
        let (mut n, mut heavy) = (0u64, 0u64);
        for i in 0..1_000_000u32 {
            top.add(i);
            n += 1;
            if i % 100 == 0 {
                top.add(HEAVY);
                n += 1;
                heavy += 1;
            }
        }
        check_invariants(&top);
        assert_eq!(top.len(), CAP, "bounded");
        assert!(
            top.index.capacity() < 4 * CAP,
            "the map did not grow past the cap"
        );
        assert!(top.runs.len() <= CAP + 1);
        let first = top.top(1)[0];
        assert_eq!(first.0, HEAVY);
        // Never below the true count, above it by at most N / cap.
        assert!(
            first.1 >= heavy && first.1 <= heavy + n / CAP as u64,
            "{first:?}"
        );
        // Every other count is at most N / cap (each key's own count is 1).
        let second = top.top(2)[1].1;
        assert!(second <= n / CAP as u64 + 1, "{second}");
    }

    /// More distinct keys than kept, each added once (a demo's table-full
    /// drops, one per new destination): a key that took another's place
    /// counted 2 and showed as exactly 2 (issue 18). Its tally now says the
    /// count is only a bound, and the bound holds its true count.
    #[test]
    fn inherited_counts_are_marked_as_bounds() {
        let mut top = TopN::new(4);
        for k in 0..6u32 {
            top.add(k);
        }
        top.add(0);
        check_invariants(&top);
        let all = top.top_tallies(10);
        assert_eq!(all.len(), 4);
        for (k, t) in &all {
            // True counts: 2 for key 0 (evicted once, then back), 1 else.
            let truth = if *k == 0 { 2 } else { 1 };
            assert!(t.count - t.error <= truth && truth <= t.count, "{k}: {t:?}");
        }
        let replaced: Vec<_> = all.iter().filter(|(_, t)| !t.is_exact()).collect();
        assert!(!replaced.is_empty(), "{all:?}");
        // Keys 4 and 5 came after the cap and counted 2 for one add each.
        for k in [4, 5] {
            let t = all.iter().find(|(key, _)| *key == k).map(|(_, t)| *t);
            assert_eq!(t, Some(Tally { count: 2, error: 1 }), "{all:?}");
        }
        assert_eq!(Tally { count: 2, error: 1 }.text(|n| n.to_string()), "≤2");
        assert_eq!(Tally::exact(1).text(|n| n.to_string()), "1");
        // Below the cap every count is exact.
        let mut small = TopN::new(10);
        for k in [1, 2, 1] {
            small.add(k);
        }
        assert!(small.top_tallies(10).iter().all(|(_, t)| t.is_exact()));
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
