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
//! * `nf_nat_icmp_reply_translation` (nf_nat) entry and return: 0 means NAT
//!   refused an ICMP error and its hook returns `NF_DROP` (`nf_nat_ipv4_fn`,
//!   net/netfilter/nf_nat_proto.c); the drop probe then knows the packet it
//!   frees is NAT's drop and not a rule's. Called only for ICMP packets
//!   that carry a RELATED entry (errors), never per packet of a flow.
//!
//! Entry and return probes are paired through per-CPU stacks of frames
//! keyed by the current task (`conntrack_common::frames`, which says why
//! neither the pid nor the stack pointer will do): a softirq runs in the
//! task it interrupted — the idle task, pid 0 on every CPU, or a process
//! inside one of these very functions — so keying by pid let CPUs and
//! nested calls overwrite each other's state. Nothing here inserts into a
//! hash map per allocation any more (issue 12).
//!
//! Sources: net/netfilter/nf_conntrack_core.c (6.1, 6.12).

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, generated::bpf_get_current_task},
    macros::map,
    maps::{HashMap, PerCpuArray, PerCpuHashMap},
    programs::{ProbeContext, RetProbeContext},
};
use conntrack_common::{
    Event, cause, classify::InsertEvidence, counter, frames::Frames, kind, kprobe_hook, setting,
};

use crate::{
    kernel::{self, conf, member, read},
    lifecycle,
    maps::{NS_ALLOC, count, emit, netns_add, scratch, scratch_event, scratch_image, wanted},
};

/// `__nf_conntrack_alloc`'s `net` argument, kept for its return probe.
#[map]
static ALLOC_NET: PerCpuArray<Frames<u64>> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct ConfirmArgs {
    skb: u64,
    net: u64,
    /// This CPU's `chaintoolong` counter at entry (u64::MAX: unreadable).
    chaintoolong: u64,
}

/// `__nf_conntrack_confirm`'s arguments, kept for its return probe.
#[map]
static CONFIRM_ARGS: PerCpuArray<Frames<ConfirmArgs>> = PerCpuArray::with_max_entries(1, 0);

/// `nf_ct_delete`'s entry, kept for its return probe.
#[map]
static DELETE_ARG: PerCpuArray<Frames<u64>> = PerCpuArray::with_max_entries(1, 0);

/// Allocation refusals not yet matched with their drop, keyed by the
/// namespace's inode number. Conntrack returns `NF_DROP` and `nf_hook_slow`
/// frees the packet right after, on the same CPU; a stack, because a
/// softirq can refuse and drop a packet of its own in between. Two stacks
/// per CPU, by [`DropLevel`]: index 1 for packets whose drop will come
/// while the drop probe is already running on the CPU.
#[map]
static REFUSED: PerCpuArray<Frames<u64>> = PerCpuArray::with_max_entries(2, 0);

/// Packets whose confirm failed, keyed by the packet, with the cause; for
/// the drop probe, like [`REFUSED`].
#[map]
static FAILED: PerCpuArray<Frames<u64>> = PerCpuArray::with_max_entries(2, 0);

/// How many runs of the drop probe are in progress on this CPU (0, or 1;
/// 2 where a softirq's drop runs it nested inside another run).
#[map]
static DROP_DEPTH: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Which of a CPU's two finding stacks a refusal or failed confirm goes to,
/// and its drop takes from: 1 when the drop probe was running on the CPU
/// when the softirq that refused or confirmed the packet began, else 0.
///
/// Since 6.1 the kernel skips a run of the drop probe nested in another on
/// the same CPU (`probe_misses`): the drops of a softirq that interrupts
/// the drop probe are never classified, and their findings would stay on
/// the stack. Eight of them push out the frame of the drop the softirq
/// interrupted (a failed confirm then reads as none: `ruleset` before 6.7,
/// `other` after; seen once, 1 of 594 insert failures on 6.1), and a later
/// drop with none of its own could take one. On their own stack they only
/// push out each other. Where the nested run does happen, it takes from the
/// same stack its softirq pushed to.
pub struct DropLevel(bool);

impl DropLevel {
    /// Marks a run of the drop probe on this CPU (kprobe backend only).
    #[inline(always)]
    pub fn enter() -> Self {
        if conf!(kp_hooks) == 0 {
            return Self(false);
        }
        match DROP_DEPTH.get_ptr_mut(0) {
            Some(d) => {
                // SAFETY: this CPU's value; the drop probe does not migrate,
                // and a nested run leaves it as it found it.
                unsafe { *d = (*d).wrapping_add(1) };
                Self(true)
            }
            None => Self(false),
        }
    }

    /// Ends the run [`DropLevel::enter`] marked.
    #[inline(always)]
    pub fn leave(self) {
        if !self.0 {
            return;
        }
        if let Some(d) = DROP_DEPTH.get_ptr_mut(0) {
            // SAFETY: as in `enter`.
            unsafe { *d = (*d).saturating_sub(1) };
        }
    }
}

/// Runs of the drop probe in progress on this CPU ([`DROP_DEPTH`]).
#[inline(always)]
fn drop_depth() -> u32 {
    // SAFETY: this CPU's value.
    DROP_DEPTH.get_ptr(0).map_or(0, |d| unsafe { *d })
}

/// The finding stack for a refusal or confirm happening now: 1 inside a
/// run of the drop probe (see [`DropLevel`]).
#[inline(always)]
fn push_level() -> u32 {
    u32::from(drop_depth() != 0)
}

/// The finding stack for the drop being classified: the drop probe's own
/// run is counted already, so one more run under it means nested.
#[inline(always)]
fn take_level() -> u32 {
    u32::from(drop_depth() > 1)
}

/// `nf_nat_icmp_reply_translation`'s packet, kept for its return probe.
#[map]
static NAT_ICMP_SKB: PerCpuArray<Frames<u64>> = PerCpuArray::with_max_entries(1, 0);

/// Packets NAT refused (`nf_nat_icmp_reply_translation` returned 0), keyed
/// by the packet; for the drop probe, like [`FAILED`]. NAT's hook returns
/// `NF_DROP` at once and `nf_hook_slow` frees the packet on this CPU.
#[map]
static NAT_REFUSED: PerCpuArray<Frames<u64>> = PerCpuArray::with_max_entries(1, 0);

/// Keeps a call's state for its return probe: on this CPU's stack, under
/// the current task.
#[inline(always)]
fn enter<T: Copy>(map: &PerCpuArray<Frames<T>>, value: T) {
    if let Some(s) = map.get_ptr_mut(0) {
        // SAFETY: this CPU's value; kprobe programs do not nest on a CPU
        // (bpf_prog_active), so nothing else touches it meanwhile.
        unsafe { (*s).push(task(), value) };
    }
}

/// The state the entry probe kept for the call that is returning.
#[inline(always)]
fn leave<T: Copy>(map: &PerCpuArray<Frames<T>>) -> Option<T> {
    let s = map.get_ptr_mut(0)?;
    // SAFETY: as in `enter`.
    unsafe { (*s).take(task()) }
}

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

/// The current task (`struct task_struct *`): the same for every call
/// nested on a CPU at one time, softirqs included, and different for each
/// CPU's idle task, unlike its pid.
#[inline(always)]
fn task() -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_get_current_task() }
}

pub fn alloc_entry(ctx: &ProbeContext) {
    let net: u64 = ctx.arg(0).unwrap_or(0);
    enter(&ALLOC_NET, net);
}

pub fn alloc_return(ctx: &RetProbeContext) {
    let ct: u64 = ctx.ret();
    let net = leave(&ALLOC_NET).unwrap_or(0);
    if ct == 0 || is_err(ct) {
        if let Some(r) = REFUSED.get_ptr_mut(push_level()) {
            // SAFETY: this CPU's value; see `enter`.
            unsafe { (*r).push(u64::from(kernel::net_inum(net)), 0) };
        }
        return;
    }
    count(counter::ALLOC);
    netns_add(kernel::ct_net(ct), NS_ALLOC);
    if wanted(setting::EVENTS_CT)
        && let Some(ev) = scratch_event(scratch::ALLOC)
    {
        kernel::ct_event(ct, kind::ALLOC, ev, scratch_image(scratch::ALLOC));
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

/// Whether conntrack's kprobes are being skipped on this CPU right now: a
/// BPF program of the kprobe kind (or a BPF syscall's map operation) is
/// running here (`bpf_prog_active`, kernel/trace/bpf_trace.c
/// `trace_call_bpf`), or a kprobe handler is (`current_kprobe`; the kprobe
/// core counts the hit as missed). A softirq that runs inside either, at
/// the end of an interrupt, refuses or confirms and drops its packet
/// unseen by the kprobes, and only the drop probe (a BTF tracepoint, which
/// neither blocks) sees it. Unknown (false) without the variables'
/// addresses, which, like `__per_cpu_offset`, only CONFIG_KALLSYMS_ALL
/// kernels list.
#[inline(always)]
fn kprobes_blind() -> bool {
    let offsets = conf!(per_cpu_offset);
    let active = conf!(bpf_prog_active);
    let current = conf!(current_kprobe);
    if offsets == 0 || (active == 0 && current == 0) {
        return false;
    }
    // SAFETY: helper without preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() } as u64;
    let Ok(pcpu) = read::<u64>(offsets + 8 * cpu) else {
        return false;
    };
    (active != 0 && read::<i32>(pcpu + active).is_ok_and(|v| v != 0))
        || (current != 0 && read::<u64>(pcpu + current).is_ok_and(|v| v != 0))
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
    enter(&CONFIRM_ARGS, args);
}

pub fn confirm_return(ctx: &RetProbeContext) {
    let verdict: u64 = ctx.ret();
    let Some(args) = leave(&CONFIRM_ARGS) else {
        return;
    };
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
    if let Some(f) = FAILED.get_ptr_mut(push_level()) {
        // SAFETY: this CPU's value; see `enter`.
        unsafe { (*f).push(args.skb, u64::from(cause)) };
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
    enter(&DELETE_ARG, ct);
}

/// `nf_ct_delete` returns true when it unlinked the entry (false when it
/// was already dying).
pub fn delete_return(ctx: &RetProbeContext) {
    let unlinked: u64 = ctx.ret();
    let Some(ct) = leave(&DELETE_ARG) else {
        return;
    };
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

/// `nf_nat_icmp_reply_translation(skb, ct, ctinfo, hooknum)` entry.
pub fn nat_icmp_entry(ctx: &ProbeContext) {
    let skb: u64 = ctx.arg(0).unwrap_or(0);
    enter(&NAT_ICMP_SKB, skb);
}

/// `nf_nat_icmp_reply_translation` returns 0 when NAT cannot translate the
/// ICMP error (not writable, bad checksum, a failed rewrite, or a redirect
/// whose entry's NAT is not done or is done with a mapping), and 1
/// otherwise.
pub fn nat_icmp_return(ctx: &RetProbeContext) {
    let translated: u64 = ctx.ret();
    let Some(skb) = leave(&NAT_ICMP_SKB) else {
        return;
    };
    // An int: only the low 32 bits are the return value.
    if translated as u32 != 0 || skb == 0 {
        return;
    }
    if let Some(r) = NAT_REFUSED.get_ptr_mut(0) {
        // SAFETY: this CPU's value; see `enter`.
        unsafe { (*r).push(skb, 0) };
    }
}

/// kprobe backend: did NAT refuse this packet just before its drop
/// (`nf_nat_icmp_reply_translation` returned 0 for it on this CPU)?
/// Consumes the finding. False without the NAT probe, or when the kprobes
/// were blind then (the drop keeps the cause it would have without it).
#[inline(always)]
pub fn nat_refused(skb: u64) -> bool {
    if conf!(kp_hooks) & kprobe_hook::NAT_ICMP == 0 {
        return false;
    }
    // SAFETY: this CPU's value; see `refused`.
    NAT_REFUSED
        .get_ptr_mut(0)
        .is_some_and(|r| unsafe { (*r).take(skb) }.is_some())
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
    // A drop the kprobes are blind to had its refusal, if any, unseen too:
    // both run in one softirq (or one process-context call), and a softirq
    // is blind from start to end when it runs inside a kprobe program or
    // handler. Such a drop must not take a refusal off the stack either:
    // the one there belongs to the call this softirq interrupted (its
    // return probe pushed it, and the interrupt came before its drop),
    // whose own drop would then find nothing. The namespace's count
    // decides.
    if kprobes_blind() {
        return None;
    }
    // SAFETY: this CPU's value. The drop probe is not a kprobe program: a
    // conntrack probe may run in a softirq that interrupts it here, but it
    // pushes and takes frames of its own packet.
    let seen = REFUSED
        .get_ptr_mut(take_level())
        .is_some_and(|r| unsafe { (*r).take(u64::from(ev.netns)) }.is_some());
    Some(seen)
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
        // Unseen while the kprobes were blind (see `refused`): the chain
        // decides, and nothing is taken from the stack.
        if kprobes_blind() {
            return InsertEvidence::Unknown;
        }
        let found = match FAILED.get_ptr_mut(take_level()) {
            // SAFETY: this CPU's value; see `refused`.
            Some(f) => unsafe { (*f).take(skb) },
            None => None,
        };
        return match found {
            Some(c) => InsertEvidence::Failed {
                chain_too_long: c == u64::from(cause::CHAIN_TOO_LONG),
            },
            None => InsertEvidence::NotFailed,
        };
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
