//! The kprobe backend: conntrack's own functions, on kernels that have
//! kprobes (distribution kernels, where nf_conntrack is a module). It feeds
//! the same counters and events as the tracepoint backend, more directly:
//!
//! * `__nf_conntrack_alloc` return: the entry is initialised (tuple, `ct_net`)
//!   when the function returns, so allocations are attributed at once, with
//!   no pending queue; an `ERR_PTR` return is a refusal (table full: early
//!   drop found nothing), remembered for the drop probe on this CPU.
//! * `nf_conntrack_free`: the only release path of an entry.
//! * `__nf_conntrack_confirm` return: `NF_DROP` means the insert failed; the
//!   drop probe then knows the packet it frees is a confirm failure and not a
//!   rule drop (the two look alike before 6.7, see docs/drop-causes.md).
//! * `__nf_conntrack_hash_insert(ct, hash, reply_hash)` and `nf_ct_delete`:
//!   bucket occupancy kept in `BUCKETS`.
//! * `early_drop` return: how often early drop made room.
//!
//! Sources: net/netfilter/nf_conntrack_core.c (6.1, 6.12).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id},
    macros::map,
    maps::{HashMap, PerCpuArray, PerCpuHashMap},
    programs::{ProbeContext, RetProbeContext},
};
use conntrack_common::{
    Event, cause, classify::InsertEvidence, counter, kind, kprobe_hook, setting,
};

use crate::{
    kernel::{self, conf, member, read},
    lifecycle,
    maps::{NS_ALLOC, count, emit, netns_add, scratch, scratch_event, wanted},
};

/// `__nf_conntrack_alloc`'s `net` argument, kept for its return probe, by task.
#[map]
static ALLOC_NET: HashMap<u64, u64> = HashMap::with_max_entries(4096, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct ConfirmArgs {
    skb: u64,
    net: u64,
    /// This CPU's `chaintoolong` counter at entry (u64::MAX: unreadable).
    chaintoolong: u64,
}

/// `__nf_conntrack_confirm`'s arguments, kept for its return probe, by task.
#[map]
static CONFIRM_ARGS: HashMap<u64, ConfirmArgs> = HashMap::with_max_entries(4096, 0);

/// `nf_ct_delete`'s entry, kept for its return probe, by task.
#[map]
static DELETE_ARG: HashMap<u64, u64> = HashMap::with_max_entries(4096, 0);

/// What the conntrack probes learnt about the packet the drop probe will
/// see next on this CPU: conntrack returns `NF_DROP` and `nf_hook_slow`
/// frees the packet right after, without leaving the CPU.
#[repr(C)]
#[derive(Clone, Copy)]
struct Hint {
    /// Refusals by `__nf_conntrack_alloc` not yet matched with their drop.
    refusals: u64,
    /// Namespace inode of the last refusal.
    refused_netns: u64,
    /// Packet whose confirm failed, and the cause.
    failed_skb: u64,
    failed_cause: u64,
}

#[map]
static HINTS: PerCpuArray<Hint> = PerCpuArray::with_max_entries(1, 0);

/// The two buckets of each entry in the hash table, by entry address. The
/// loader sizes it from nf_conntrack_max when the insert hook is used, and
/// to one entry otherwise (hash maps are preallocated).
#[map]
static INSERTED: HashMap<u64, [u32; 2]> = HashMap::with_max_entries(1 << 18, 0);

/// Nodes linked into each hash bucket (each entry is in the table twice),
/// as per-CPU deltas that userspace sums (an entry may be inserted on one
/// CPU and deleted on another; BPF has no 32-bit atomics here). Sized by
/// the loader to `nf_conntrack_buckets`; a resize makes it approximate until
/// the entries inserted before it are gone.
#[map]
pub static BUCKETS: PerCpuArray<i32> = PerCpuArray::with_max_entries(1, 0);

/// Last `insert_failed` value seen per namespace on this CPU, for the
/// tracepoint backend on kernels where rule drops and confirm failures are
/// both freed by `nf_hook_slow`.
#[map]
static LAST_INSERT_FAILED: PerCpuHashMap<u64, u32> = PerCpuHashMap::with_max_entries(1024, 0);

/// `IS_ERR_VALUE`: the top 4095 addresses are error codes.
#[inline(always)]
fn is_err(ptr: u64) -> bool {
    ptr >= (-4095i64) as u64
}

#[inline(always)]
fn task() -> u64 {
    bpf_get_current_pid_tgid()
}

pub fn alloc_entry(ctx: &ProbeContext) {
    let net: u64 = ctx.arg(0).unwrap_or(0);
    let _ = ALLOC_NET.insert(task(), net, 0);
}

pub fn alloc_return(ctx: &RetProbeContext) {
    let ct: u64 = ctx.ret();
    let key = task();
    // SAFETY: value pointer from a successful lookup.
    let net = ALLOC_NET.get_ptr(key).map(|p| unsafe { *p }).unwrap_or(0);
    let _ = ALLOC_NET.remove(key);
    if ct == 0 || is_err(ct) {
        if let Some(h) = HINTS.get_ptr_mut(0) {
            // SAFETY: this CPU's slot; kprobe programs do not nest on a CPU.
            let h = unsafe { &mut *h };
            h.refusals += 1;
            h.refused_netns = u64::from(kernel::net_inum(net));
        }
        return;
    }
    count(counter::ALLOC);
    netns_add(kernel::ct_net(ct), NS_ALLOC);
    if wanted(setting::EVENTS_CT)
        && let Some(ev) = scratch_event(scratch::ALLOC)
    {
        kernel::ct_event(ct, kind::ALLOC, ev);
        ev.alloc_ts_ns = ev.ts_ns;
        emit(ev);
    }
}

pub fn free(ctx: &ProbeContext) {
    let ct: u64 = ctx.arg(0).unwrap_or(0);
    if ct == 0 {
        return;
    }
    // An entry freed without going through nf_ct_delete (never confirmed,
    // or its delete was missed) leaves the table here.
    unlink(ct, false);
    lifecycle::freed(ct, crate::maps::scratch::FREE);
}

/// This CPU's value of a `struct ip_conntrack_stat` member in `net`:
/// `per_cpu_ptr(net->ct.stat, cpu)`, computed from `__per_cpu_offset`
/// because this kernel's BTF has no percpu type tags.
#[inline(always)]
fn cpu_stat(net: u64, member_off: u32) -> Option<u32> {
    let offsets = conf!(per_cpu_offset);
    if offsets == 0 || net == 0 || member_off == u32::MAX {
        return None;
    }
    // SAFETY: helper without preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() } as u64;
    let pcpu: u64 = read(offsets + 8 * cpu).ok()?;
    let stat: u64 = member(net, conf!(net_ct_stat))?;
    if stat == 0 {
        return None;
    }
    read::<u32>(stat + pcpu + u64::from(member_off)).ok()
}

/// The namespace of the entry a packet carries.
#[inline(always)]
fn skb_ct_net(skb: u64) -> u64 {
    let nfct: u64 = member(skb, conf!(skb_nfct)).unwrap_or(0);
    member(nfct & !7, conf!(ct_net)).unwrap_or(0)
}

pub fn confirm_entry(ctx: &ProbeContext) {
    let skb: u64 = ctx.arg(0).unwrap_or(0);
    let net = skb_ct_net(skb);
    let args = ConfirmArgs {
        skb,
        net,
        chaintoolong: cpu_stat(net, conf!(stat_chaintoolong)).map_or(u64::MAX, u64::from),
    };
    let _ = CONFIRM_ARGS.insert(task(), args, 0);
}

pub fn confirm_return(ctx: &RetProbeContext) {
    let verdict: u64 = ctx.ret();
    let key = task();
    // SAFETY: value pointer from a successful lookup.
    let Some(args) = CONFIRM_ARGS.get_ptr(key).map(|p| unsafe { *p }) else {
        return;
    };
    let _ = CONFIRM_ARGS.remove(key);
    // NF_DROP is 0 (include/uapi/linux/netfilter.h); the int is in eax.
    if verdict as u32 != 0 {
        return;
    }
    // chaintoolong is bumped with bottom halves off on this CPU right
    // before the NF_DROP (__nf_conntrack_confirm), so a rise means this one.
    let after = cpu_stat(args.net, conf!(stat_chaintoolong)).map_or(u64::MAX, u64::from);
    let cause = if args.chaintoolong != u64::MAX && after != u64::MAX && after > args.chaintoolong {
        cause::CHAIN_TOO_LONG
    } else {
        cause::INSERT_FAILED
    };
    if let Some(h) = HINTS.get_ptr_mut(0) {
        // SAFETY: this CPU's slot.
        let h = unsafe { &mut *h };
        h.failed_skb = args.skb;
        h.failed_cause = u64::from(cause);
    }
}

#[inline(always)]
fn bucket_add(bucket: u32, delta: i32) {
    if let Some(p) = BUCKETS.get_ptr_mut(bucket) {
        // SAFETY: this CPU's slot of a per-CPU array.
        unsafe { *p = (*p).wrapping_add(delta) };
    }
}

/// `__nf_conntrack_hash_insert(ct, hash, reply_hash)`: both arguments are
/// bucket indexes already (scale_hash in __nf_conntrack_confirm).
pub fn insert(ctx: &ProbeContext) {
    let ct: u64 = ctx.arg(0).unwrap_or(0);
    let hash: u64 = ctx.arg(1).unwrap_or(0);
    let reply: u64 = ctx.arg(2).unwrap_or(0);
    let buckets = [hash as u32, reply as u32];
    if INSERTED.insert(ct, buckets, 0).is_err() {
        return;
    }
    count(counter::INSERTED);
    bucket_add(buckets[0], 1);
    bucket_add(buckets[1], 1);
}

/// Takes an entry out of the occupancy map, if it is there.
#[inline(always)]
fn unlink(ct: u64, deleted: bool) {
    // SAFETY: value pointer from a successful lookup.
    let Some(buckets) = INSERTED.get_ptr(ct).map(|p| unsafe { *p }) else {
        return;
    };
    if INSERTED.remove(ct).is_err() {
        return;
    }
    if deleted {
        count(counter::DELETED);
    }
    bucket_add(buckets[0], -1);
    bucket_add(buckets[1], -1);
}

pub fn delete_entry(ctx: &ProbeContext) {
    let ct: u64 = ctx.arg(0).unwrap_or(0);
    let _ = DELETE_ARG.insert(task(), ct, 0);
}

/// `nf_ct_delete` returns true when it unlinked the entry (false when it
/// was already dying).
pub fn delete_return(ctx: &RetProbeContext) {
    let unlinked: u64 = ctx.ret();
    let key = task();
    // SAFETY: value pointer from a successful lookup.
    let Some(ct) = DELETE_ARG.get_ptr(key).map(|p| unsafe { *p }) else {
        return;
    };
    let _ = DELETE_ARG.remove(key);
    if unlinked & 0xff != 0 {
        unlink(ct, true);
    }
}

/// `early_drop` returns true when it killed at least one entry.
pub fn early_drop_return(ctx: &RetProbeContext) {
    let freed: u64 = ctx.ret();
    if freed & 0xff != 0 {
        count(counter::EARLY_DROP);
    }
}

/// kprobe backend: did `__nf_conntrack_alloc` refuse an entry in the
/// packet's namespace on this CPU just before this drop (a packet with no
/// entry attached)? Consumes the refusal. `None` without the alloc probe:
/// the classification then reads the namespace's count.
#[inline(always)]
pub fn refused(ev: &Event) -> Option<bool> {
    if conf!(kp_hooks) & kprobe_hook::ALLOC == 0 {
        return None;
    }
    if let Some(h) = HINTS.get_ptr_mut(0) {
        // SAFETY: this CPU's slot.
        let h = unsafe { &mut *h };
        if h.refusals > 0 && h.refused_netns == u64::from(ev.netns) {
            h.refusals -= 1;
            return Some(true);
        }
    }
    Some(false)
}

/// Did the kernel's insert-failure path run for this packet, which
/// carries the never-inserted entry `ct`?
///
/// * With the confirm probe: `__nf_conntrack_confirm` returned NF_DROP for
///   this very packet (and whether `chaintoolong` rose), or it did not.
/// * Without it, where this CPU's `insert_failed` counter is readable
///   (kernels with CONFIG_KALLSYMS_ALL): a counter that has not moved since
///   the last such drop in the namespace (or is still 0) rules a failure
///   out; one that moved leaves the chain walk to tell which failure.
#[inline(always)]
pub fn insert_evidence(skb: u64, ct: u64) -> InsertEvidence {
    if conf!(kp_hooks) & kprobe_hook::CONFIRM != 0 {
        if let Some(h) = HINTS.get_ptr_mut(0) {
            // SAFETY: this CPU's slot.
            let h = unsafe { &mut *h };
            if h.failed_skb == skb {
                h.failed_skb = 0;
                return InsertEvidence::Failed {
                    chain_too_long: h.failed_cause == u64::from(cause::CHAIN_TOO_LONG),
                };
            }
        }
        return InsertEvidence::NotFailed;
    }
    let net = member(ct, conf!(ct_net)).unwrap_or(0);
    let Some(now) = cpu_stat(net, conf!(stat_insert_failed)) else {
        return InsertEvidence::Unknown;
    };
    // SAFETY: value pointer from a successful lookup.
    let before = LAST_INSERT_FAILED.get_ptr(net).map(|p| unsafe { *p });
    let _ = LAST_INSERT_FAILED.insert(net, now, 0);
    match before {
        Some(b) if now == b => InsertEvidence::NotFailed,
        None if now == 0 => InsertEvidence::NotFailed,
        _ => InsertEvidence::Unknown,
    }
}
