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

use std::collections::HashMap;

use conntrack_common::{ChainNode, Event, RESOLVE_BATCH, flag, kind};

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

#[derive(Clone, Debug)]
struct Pending {
    ev: Event,
    /// A read of the entry: (when, namespace key, fields).
    read: Option<(u64, u64, ChainNode)>,
    tries: u32,
}

/// Holds allocation events until their namespace and tuple are known.
#[derive(Debug, Default)]
pub struct AllocResolver {
    pending: HashMap<u64, Pending>,
    /// Allocation events sent without namespace so far.
    pub unresolved: u64,
}

impl AllocResolver {
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
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
                    // A second allocation of the address without a free in
                    // between: the free was missed (a probe miss).
                    if let Some(old) = self.pending.insert(
                        ev.ct,
                        Pending {
                            ev,
                            read: None,
                            tries: 0,
                        },
                    ) {
                        out.push(self.unresolved(old.ev));
                    }
                }
                kind::FREE => {
                    if let Some(p) = self.pending.remove(&ev.ct) {
                        out.push(from_free(p.ev, &ev));
                    }
                    out.push(ev);
                }
                _ => out.push(ev),
            }
        }
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
        let ready: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.read.is_some_and(|(at, _, _)| at + GRACE_NS <= now_ns))
            .map(|(ct, _)| *ct)
            .collect();
        for ct in ready {
            if let Some(p) = self.pending.remove(&ct)
                && let Some((_, key, node)) = p.read
            {
                out.push(from_read(p.ev, key, &node));
            }
        }
        let mut due: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.read.is_none() && p.ev.ts_ns + MIN_AGE_NS <= now_ns)
            .map(|(ct, _)| *ct)
            .collect();
        due.sort_unstable();
        for chunk in due.chunks(RESOLVE_BATCH as usize) {
            let (at, read) = reader.read(chunk)?;
            for (ct, (key, node)) in chunk.iter().zip(read) {
                let Some(p) = self.pending.get_mut(ct) else {
                    continue;
                };
                if node.ct == *ct && at >= p.ev.ts_ns {
                    p.read = Some((at, key, node));
                } else {
                    p.tries += 1;
                    if p.tries >= MAX_TRIES
                        && let Some(p) = self.pending.remove(ct)
                    {
                        out.push(self.unresolved(p.ev));
                    }
                }
            }
        }
        out.sort_by_key(|e| e.ts_ns);
        Ok(out)
    }

    /// At the end of a capture: reads what was never read, and sends
    /// everything still held (without namespace what could not be read).
    pub fn flush(&mut self, reader: &mut dyn EntryReader) -> Vec<Event> {
        let mut due: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.read.is_none())
            .map(|(ct, _)| *ct)
            .collect();
        due.sort_unstable();
        for chunk in due.chunks(RESOLVE_BATCH as usize) {
            let Ok((at, read)) = reader.read(chunk) else {
                break;
            };
            for (ct, (key, node)) in chunk.iter().zip(read) {
                if let Some(p) = self.pending.get_mut(ct)
                    && node.ct == *ct
                    && at >= p.ev.ts_ns
                {
                    p.read = Some((at, key, node));
                }
            }
        }
        let mut out: Vec<Event> = Vec::with_capacity(self.pending.len());
        for (_, p) in std::mem::take(&mut self.pending) {
            match p.read {
                Some((_, key, node)) => out.push(from_read(p.ev, key, &node)),
                None => out.push(self.unresolved(p.ev)),
            }
        }
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
    fn drops_pass_straight_through() {
        let mut r = AllocResolver::default();
        let d = Event {
            kind: kind::DROP,
            ..Event::default()
        };
        assert_eq!(r.push(vec![d]), vec![d]);
    }
}
