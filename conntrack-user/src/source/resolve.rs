//! Completing allocation events in userspace.
//!
//! The allocation probe fires inside `kmem_cache_alloc`, before
//! `__nf_conntrack_alloc` has written the entry's namespace and tuple, so its
//! event carries only the address and time (conntrack-ebpf/src/main.rs).
//! The rest comes from one of two places:
//!
//! * the entry's free event, which carries everything (the entry is intact
//!   when it goes back to the slab);
//! * or, for entries that live on, a read of the entry (`resolve_ct`) once
//!   it is at least [`MIN_AGE_NS`] old and published (refcount set, after
//!   `ct_net` is written). The slab is `SLAB_TYPESAFE_BY_RCU`: the address
//!   may have been freed and reused by the time it is read. A free before
//!   the read shows up as a free event timestamped before the read, so a
//!   read is used only after [`GRACE_NS`] without such a free; otherwise the
//!   free event resolves the allocation.
//!
//! Nothing here runs in the kernel's packet path: this replaces a hash map
//! insert per allocation in the probe.

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasherDefault, Hasher},
};

use conntrack_common::{AllocRecord, ChainNode, Event, RESOLVE_BATCH, flag, kind};

/// Allocations younger than this may still be inside `__nf_conntrack_alloc`.
pub const MIN_AGE_NS: u64 = 1_000_000;
/// How long a read waits for a free event that would contradict it: free
/// events reach userspace within microseconds of being produced.
pub const GRACE_NS: u64 = 50_000_000;
/// Reads of an entry that is still not published before its allocation
/// event is sent without namespace (an entry whose set-up failed is freed,
/// and its free event resolves it first).
const MAX_TRIES: u32 = 50;
/// `IPS_CONFIRMED_BIT` (uapi: include/uapi/linux/netfilter/nf_conntrack_common.h).
const IPS_CONFIRMED: u32 = 1 << 3;

/// Reads entries for the resolver: the time of the read (CLOCK_MONOTONIC ns)
/// and, per address, the namespace key and the entry's fields (`ct` 0 when
/// it is not published).
pub trait EntryReader {
    fn read(&mut self, cts: &[u64]) -> anyhow::Result<(u64, Vec<(u64, ChainNode)>)>;
}

/// Where a held allocation stands.
#[derive(Clone, Copy, Debug)]
enum State {
    /// Not read yet, or read before the entry was published (`tries`).
    Waiting { tries: u32 },
    /// Read at `at`: namespace key and fields, sent after [`GRACE_NS`].
    Read { at: u64, key: u64, node: ChainNode },
    /// Sent (completed by its free event, its read, or given up).
    Done,
}

/// A held allocation: what its short record carried (an allocation event
/// still to be completed never holds more), 24 bytes instead of a whole
/// event copied in and out of the queue.
#[derive(Clone, Debug)]
struct Slot {
    rec: AllocRecord,
    state: State,
}

/// Hashes entry addresses (8-byte aligned kernel pointers): one multiply,
/// folded so that both the low bits (bucket) and the high bits (hashbrown's
/// control byte) vary. The default SipHash was a tenth of `record`'s CPU at
/// the load generator's full rate.
#[derive(Default)]
struct AddrHasher(u64);

impl Hasher for AddrHasher {
    fn finish(&self) -> u64 {
        let m = self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        m ^ (m >> 29)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Holds allocation events until their namespace and tuple are known.
///
/// Held events sit in a queue in ring order (which is time order up to the
/// few events two CPUs reserve at the same moment), so a round looks only
/// at the front of it, the allocations old enough to be read; an index by
/// address finds the slot a free event completes. Nothing is moved or
/// rehashed per event beyond the index's one `u64` pair: at the load
/// generator's full rate (100 k allocations/s) tens of thousands are held
/// at a time.
#[derive(Debug, Default)]
pub struct AllocResolver {
    queue: VecDeque<Slot>,
    /// Sequence number of `queue[0]`.
    head: u64,
    /// Address -> sequence number of its held (not `Done`) slot.
    index: HashMap<u64, u64, BuildHasherDefault<AddrHasher>>,
    /// Allocation events sent without namespace so far.
    pub unresolved: u64,
}

impl AllocResolver {
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn slot(&mut self, seq: u64) -> Option<&mut Slot> {
        let i = usize::try_from(seq.checked_sub(self.head)?).ok()?;
        self.queue.get_mut(i)
    }

    /// Takes the held slot `seq` out (marks it sent) and returns its event.
    fn take(&mut self, seq: u64) -> Option<(Event, State)> {
        let slot = self.slot(seq)?;
        let state = std::mem::replace(&mut slot.state, State::Done);
        match state {
            State::Done => None,
            _ => Some((slot.rec.event(), state)),
        }
    }

    /// Drops sent slots from the front of the queue.
    fn trim(&mut self) {
        while self
            .queue
            .front()
            .is_some_and(|s| matches!(s.state, State::Done))
        {
            self.queue.pop_front();
            self.head += 1;
        }
    }

    /// Takes events in ring order; returns those ready to go on, in order.
    pub fn push(&mut self, events: Vec<Event>) -> Vec<Event> {
        let mut out = Vec::with_capacity(events.len());
        for ev in events {
            match ev.kind {
                // The kprobe backend's allocation events are complete: read
                // at `__nf_conntrack_alloc`'s return, once the entry has its
                // namespace and tuple (HAS_CT). Nothing to resolve, and on
                // kernels without bpf_loop there is no resolver program.
                kind::ALLOC if ev.flags & flag::HAS_CT != 0 => out.push(ev),
                kind::ALLOC => {
                    let seq = self.head + self.queue.len() as u64;
                    self.queue.push_back(Slot {
                        rec: AllocRecord {
                            ct: ev.ct,
                            ts_ns: ev.ts_ns,
                            cpu: ev.cpu,
                            _pad: 0,
                        },
                        state: State::Waiting { tries: 0 },
                    });
                    // A second allocation of the address without a free in
                    // between: the free was missed (a probe miss).
                    if let Some(old) = self.index.insert(ev.ct, seq)
                        && let Some((old, _)) = self.take(old)
                    {
                        out.push(self.unresolved(old));
                    }
                }
                kind::FREE => {
                    if let Some(seq) = self.index.remove(&ev.ct)
                        && let Some((alloc, _)) = self.take(seq)
                    {
                        out.push(from_free(alloc, &ev));
                    }
                    out.push(ev);
                }
                _ => out.push(ev),
            }
        }
        self.trim();
        out
    }

    /// One round, at `now_ns`: sends the allocations whose read has stood
    /// for [`GRACE_NS`], and reads the ones old enough to be published.
    pub fn round(
        &mut self,
        now_ns: u64,
        reader: &mut dyn EntryReader,
    ) -> anyhow::Result<Vec<Event>> {
        let mut out = Vec::new();
        // The front of the queue: everything old enough to be read.
        let aged = self
            .queue
            .iter()
            .position(|s| s.rec.ts_ns + MIN_AGE_NS > now_ns)
            .unwrap_or(self.queue.len());
        let mut due: Vec<(u64, u64)> = Vec::new();
        for i in 0..aged {
            let seq = self.head + i as u64;
            let slot = &mut self.queue[i];
            match slot.state {
                State::Read { at, key, node } if at + GRACE_NS <= now_ns => {
                    slot.state = State::Done;
                    let ev = slot.rec.event();
                    self.index.remove(&ev.ct);
                    out.push(from_read(ev, key, &node));
                }
                State::Waiting { .. } => due.push((slot.rec.ct, seq)),
                _ => {}
            }
        }
        for chunk in due.chunks(RESOLVE_BATCH as usize) {
            let cts: Vec<u64> = chunk.iter().map(|(ct, _)| *ct).collect();
            let (at, read) = reader.read(&cts)?;
            for (&(ct, seq), (key, node)) in chunk.iter().zip(read) {
                let Some(slot) = self.slot(seq) else {
                    continue;
                };
                let State::Waiting { tries } = slot.state else {
                    continue;
                };
                if node.ct == ct && at >= slot.rec.ts_ns {
                    slot.state = State::Read { at, key, node };
                } else if tries + 1 >= MAX_TRIES {
                    slot.state = State::Done;
                    let ev = slot.rec.event();
                    self.index.remove(&ct);
                    out.push(self.unresolved(ev));
                } else {
                    slot.state = State::Waiting { tries: tries + 1 };
                }
            }
        }
        self.trim();
        out.sort_by_key(|e| e.ts_ns);
        Ok(out)
    }

    /// At the end of a capture: reads what was never read, and sends
    /// everything still held (without namespace what could not be read).
    pub fn flush(&mut self, reader: &mut dyn EntryReader) -> Vec<Event> {
        let due: Vec<(u64, u64)> = self
            .queue
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s.state, State::Waiting { .. }))
            .map(|(i, s)| (s.rec.ct, self.head + i as u64))
            .collect();
        for chunk in due.chunks(RESOLVE_BATCH as usize) {
            let cts: Vec<u64> = chunk.iter().map(|(ct, _)| *ct).collect();
            let Ok((at, read)) = reader.read(&cts) else {
                break;
            };
            for (&(ct, seq), (key, node)) in chunk.iter().zip(read) {
                if let Some(slot) = self.slot(seq)
                    && matches!(slot.state, State::Waiting { .. })
                    && node.ct == ct
                    && at >= slot.rec.ts_ns
                {
                    slot.state = State::Read { at, key, node };
                }
            }
        }
        let mut out: Vec<Event> = Vec::with_capacity(self.index.len());
        for slot in std::mem::take(&mut self.queue) {
            match slot.state {
                State::Read { key, node, .. } => out.push(from_read(slot.rec.event(), key, &node)),
                State::Waiting { .. } => out.push(self.unresolved(slot.rec.event())),
                State::Done => {}
            }
        }
        self.index.clear();
        self.head = 0;
        out.sort_by_key(|e| e.ts_ns);
        out
    }

    fn unresolved(&mut self, mut ev: Event) -> Event {
        self.unresolved += 1;
        ev.flags |= flag::NO_NETNS;
        ev
    }
}

/// The allocation event completed from the entry's free event.
fn from_free(mut alloc: Event, free: &Event) -> Event {
    alloc.netns = free.netns;
    alloc.netns_id = free.netns_id;
    alloc.tuple = free.tuple;
    alloc.zone = free.zone;
    alloc.mark = free.mark;
    // As it was at allocation: not confirmed yet.
    alloc.status = free.status & !IPS_CONFIRMED;
    alloc.flags = flag::HAS_CT | (free.flags & flag::NO_NETNS);
    alloc
}

/// The allocation event completed from a read of the entry.
fn from_read(mut alloc: Event, key: u64, node: &ChainNode) -> Event {
    alloc.netns = node.netns;
    alloc.netns_id = key;
    alloc.tuple = node.tuple;
    alloc.zone = node.zone;
    alloc.mark = node.mark;
    alloc.status = node.status;
    alloc.flags = flag::HAS_CT;
    if node.status & IPS_CONFIRMED != 0 {
        alloc.flags |= flag::CONFIRMED;
    }
    if node.netns == 0 {
        alloc.flags |= flag::NO_NETNS;
    }
    alloc
}

#[cfg(test)]
mod tests {
    use conntrack_common::Tuple;

    use super::*;

    const MS: u64 = 1_000_000;

    /// Entries as the kernel holds them: address -> (namespace key, inode,
    /// destination port); absent: not published.
    #[derive(Default)]
    struct FakeKernel {
        now: u64,
        live: HashMap<u64, (u64, u32, u16)>,
        reads: usize,
    }

    impl EntryReader for FakeKernel {
        fn read(&mut self, cts: &[u64]) -> anyhow::Result<(u64, Vec<(u64, ChainNode)>)> {
            self.reads += 1;
            let out = cts
                .iter()
                .map(|ct| match self.live.get(ct) {
                    Some(&(key, inum, port)) => (
                        key,
                        ChainNode {
                            ct: *ct,
                            netns: inum,
                            tuple: Tuple {
                                dport: port,
                                ..Tuple::default()
                            },
                            ..ChainNode::default()
                        },
                    ),
                    None => (0, ChainNode::default()),
                })
                .collect();
            Ok((self.now, out))
        }
    }

    fn alloc(ct: u64, ts: u64) -> Event {
        Event {
            kind: kind::ALLOC,
            ct,
            ts_ns: ts,
            alloc_ts_ns: ts,
            ..Event::default()
        }
    }

    fn free(ct: u64, ts: u64, key: u64, inum: u32, port: u16) -> Event {
        Event {
            kind: kind::FREE,
            ct,
            ts_ns: ts,
            netns: inum,
            netns_id: key,
            flags: flag::HAS_CT | flag::CONFIRMED,
            status: IPS_CONFIRMED,
            tuple: Tuple {
                dport: port,
                ..Tuple::default()
            },
            ..Event::default()
        }
    }

    #[test]
    fn a_free_event_completes_its_allocation_and_follows_it() {
        let mut r = AllocResolver::default();
        assert!(r.push(vec![alloc(0xa0, MS)]).is_empty());
        let out = r.push(vec![free(0xa0, 2 * MS, 7, 4026532000, 53)]);
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].kind, out[0].netns, out[0].netns_id),
            (kind::ALLOC, 4026532000, 7)
        );
        assert_eq!(out[0].tuple.dport, 53);
        assert_eq!(out[0].flags, flag::HAS_CT, "not confirmed when allocated");
        assert_eq!(out[1].kind, kind::FREE);
        assert!(r.is_empty());
        // What the short record carried comes back whole: address, times, CPU.
        let mut held = alloc(0xb0, 3 * MS);
        held.cpu = 1;
        assert!(r.push(vec![held]).is_empty());
        let out = r.push(vec![free(0xb0, 4 * MS, 7, 4026532000, 53)]);
        assert_eq!(
            (out[0].ct, out[0].ts_ns, out[0].alloc_ts_ns, out[0].cpu),
            (0xb0, 3 * MS, 3 * MS, 1)
        );
    }

    #[test]
    fn a_complete_allocation_from_the_kprobe_backend_passes_straight_through() {
        let mut r = AllocResolver::default();
        let mut ev = free(0xb0, MS, 9, 4026532001, 80);
        ev.kind = kind::ALLOC;
        let out = r.push(vec![ev]);
        assert_eq!(out.len(), 1, "nothing held back");
        assert_eq!(
            (out[0].netns, out[0].netns_id, out[0].tuple.dport),
            (4026532001, 9, 80)
        );
        assert!(r.is_empty(), "nothing left to read");
    }

    #[test]
    fn a_live_entry_is_read_then_sent_after_the_grace_period() {
        let mut k = FakeKernel::default();
        let mut r = AllocResolver::default();
        r.push(vec![alloc(0xb0, 10 * MS)]);
        // Too young to read.
        k.now = 10 * MS + MIN_AGE_NS / 2;
        assert!(r.round(k.now, &mut k).expect("round").is_empty());
        assert_eq!(k.reads, 0);
        k.live.insert(0xb0, (9, 4026532009, 80));
        k.now = 20 * MS;
        assert!(r.round(k.now, &mut k).expect("round").is_empty());
        assert_eq!(k.reads, 1);
        k.now = 20 * MS + GRACE_NS;
        let out = r.round(k.now, &mut k).expect("round");
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].netns, out[0].netns_id, out[0].tuple.dport),
            (4026532009, 9, 80)
        );
        assert_eq!(r.unresolved, 0);
    }

    #[test]
    fn a_free_before_the_read_wins_over_the_read_of_the_reused_address() {
        let mut k = FakeKernel::default();
        let mut r = AllocResolver::default();
        r.push(vec![alloc(0xc0, MS)]);
        // The entry was freed at 3 ms and the address reused by another
        // namespace's entry at 4 ms; the read at 5 ms sees the new one.
        k.live.insert(0xc0, (2, 4026532002, 443));
        k.now = 5 * MS;
        r.round(k.now, &mut k).expect("round");
        // The free event (and the new allocation) arrive after the read.
        let out = r.push(vec![
            free(0xc0, 3 * MS, 1, 4026532001, 22),
            alloc(0xc0, 4 * MS),
        ]);
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[0].kind, out[0].netns_id, out[0].tuple.dport),
            (kind::ALLOC, 1, 22)
        );
        // The new allocation is read on its own.
        k.now = 10 * MS;
        r.round(k.now, &mut k).expect("round");
        k.now = 10 * MS + GRACE_NS;
        let out = r.round(k.now, &mut k).expect("round");
        assert_eq!(
            (out[0].netns_id, out[0].tuple.dport, out[0].ts_ns),
            (2, 443, 4 * MS)
        );
    }

    #[test]
    fn an_entry_never_published_is_sent_without_namespace_in_the_end() {
        let mut k = FakeKernel::default();
        let mut r = AllocResolver::default();
        r.push(vec![alloc(0xd0, MS)]);
        for i in 0..MAX_TRIES {
            k.now = (10 + u64::from(i)) * MS;
            let out = r.round(k.now, &mut k).expect("round");
            if i + 1 < MAX_TRIES {
                assert!(out.is_empty());
            } else {
                assert_eq!(out.len(), 1);
                assert_ne!(out[0].flags & flag::NO_NETNS, 0);
            }
        }
        assert_eq!(r.unresolved, 1);
    }

    #[test]
    fn flush_reads_what_is_left_and_sends_everything() {
        let mut k = FakeKernel::default();
        let mut r = AllocResolver::default();
        r.push(vec![alloc(0xe0, MS), alloc(0xf0, 2 * MS)]);
        k.live.insert(0xe0, (5, 4026532005, 8080));
        k.now = 3 * MS;
        let out = r.flush(&mut k);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].ct, out[0].netns_id), (0xe0, 5));
        assert_ne!(out[1].flags & flag::NO_NETNS, 0);
        assert_eq!(r.unresolved, 1);
        assert!(r.is_empty());
    }

    #[test]
    fn every_allocation_is_sent_exactly_once_at_scale() {
        // 50,000 allocations over 500 ms, every third freed 2 ms later, the
        // rest live and read; rounds every 100 ms as the live source runs.
        let mut k = FakeKernel::default();
        let mut r = AllocResolver::default();
        let mut sent: HashMap<u64, u32> = HashMap::new();
        let mut note = |out: Vec<Event>| {
            for e in out.iter().filter(|e| e.kind == kind::ALLOC) {
                *sent.entry(e.ct).or_default() += 1;
            }
        };
        let n = 50_000u64;
        for i in 0..n {
            let (ct, ts) = (0x1000 + 64 * i, i * 10_000);
            let mut batch = vec![alloc(ct, ts)];
            if i % 3 == 0 {
                batch.push(free(ct, ts + 2 * MS, 1, 4026532001, 9));
            } else {
                k.live.insert(ct, (2, 4026532002, 80));
            }
            note(r.push(batch));
            if i % 10_000 == 9_999 {
                k.now = ts;
                note(r.round(k.now, &mut k).expect("round"));
            }
        }
        for step in 1..=3 {
            k.now = n * 10_000 + step * 100 * MS;
            note(r.round(k.now, &mut k).expect("round"));
        }
        assert!(r.is_empty(), "everything sent once read and past grace");
        assert_eq!(sent.len() as u64, n);
        assert!(sent.values().all(|&c| c == 1));
        assert_eq!(r.unresolved, 0);
        assert!(r.queue.is_empty(), "sent slots are trimmed");
    }

    #[test]
    fn drops_pass_straight_through() {
        let mut r = AllocResolver::default();
        let d = Event {
            kind: kind::DROP,
            ..Event::default()
        };
        assert_eq!(r.push(vec![d]), vec![d]);
    }
}
