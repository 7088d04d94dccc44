//! ctscope's eBPF programs.
//!
//! The build/CI kernel has neither kprobes nor fentry, so everything hangs off
//! BTF tracepoints (see ../shared/platform.md). The loader attaches only the
//! hooks the running mode needs, one program per hook: every program on a
//! slab tracepoint runs for every slab object of the machine, and its
//! dispatch is most of what ctscope costs (docs/benchmarks.md).
//!
//! * `ct_free` — `kmem:kmem_cache_free`, restricted to the `nf_conntrack`
//!   slab by comparing the cache pointer with a load-time constant; counts
//!   frees per namespace (`ct_net` is valid there). Allocations per
//!   namespace are derived in userspace from these frees and the live count
//!   `sample_netns` reads, so counting modes need no allocation probe;
//! * `ct_alloc` — `kmem:kmem_cache_alloc` on the same slab, attached only
//!   while allocation events are recorded;
//! * `ct_drop` — `skb:kfree_skb` with `SKB_DROP_REASON_NETFILTER_DROP`,
//!   classified by what the packet carries (net/netfilter/nf_conntrack_core.c);
//! * `noop_*` — the same hooks doing nothing, for the benchmark's floor;
//! * `sample_netns`, `resolve_ct` — run from userspace with
//!   BPF_PROG_TEST_RUN: the namespaces and their live counts, and the
//!   namespace and tuple of recorded allocations (netns.rs);
//! * `discover_cache`, `discover_net` — start-up discovery of the slab and of
//!   `struct nf_conntrack_net`, whose addresses are not in kallsyms;
//! * `walk_chunk`, `walk_bucket` — run from userspace: chain lengths of a
//!   range of hash buckets, and the entries on one chain (walk.rs);
//! * `locate_seq`, `locate_skb` — attached briefly to find the hash table
//!   (`nf_conntrack_hash`, not in kallsyms either; locate.rs); `locate_sym`
//!   reads it where kallsyms lists it;
//! * legacy.rs — the twins of some of these for kernels without
//!   `bpf_loop` or drop reasons.
//!
//! When an interrupt lands while a probe runs and the softirq run on its
//! way out hits the same hook, the kernel skips the nested run
//! (`__bpf_trace_run`'s recursion check, kernel/trace/bpf_trace.c) and
//! counts it in the program's `recursion_misses`, which userspace reports as
//! `probe_misses`: the counts are exact when it is 0, and short by at most
//! that many otherwise (almost all misses are other caches' objects).
//!
//! Every kernel struct offset comes from the read-only `CONFIG` global, filled
//! in from the running kernel's BTF by the loader. Loops are bounded, memory
//! is read with `bpf_probe_read_kernel`, and nothing here can panic.
#![no_std]
#![no_main]
#![expect(
    internal_features,
    reason = "atomic_xadd: the BPF target's AtomicU64 has no fetch_add"
)]
#![feature(core_intrinsics)]

mod holders;
mod hook;
mod kernel;
mod kprobe;
mod legacy;
mod lifecycle;
mod locate;
mod maps;
mod netns;
mod packet;
mod walk;

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::{btf_tracepoint, kprobe, kretprobe, raw_tracepoint},
    programs::{BtfTracePointContext, ProbeContext, RawTracePointContext, RetProbeContext},
};
use conntrack_common::{AllocRecord, cause, counter, flag, kind, setting};

use crate::{
    kernel::conf,
    maps::{
        EVENTS, NS_DROP_FIRST, count, count_shared, emit, netns_add, scratch, scratch_event, wanted,
    },
};

/// `kmem_cache_alloc(call_site, ptr, s, gfp_flags, node)`: fires for every
/// slab allocation on the machine, so the common path is one comparison
/// against a constant the verifier knows. Attached only while allocation
/// events are wanted: the entry's namespace and tuple are not written yet,
/// so the event carries the address and time, and userspace reads the rest
/// later (`resolve_ct`) or takes it from the entry's free event.
#[btf_tracepoint(function = "kmem_cache_alloc")]
pub fn ct_alloc(ctx: BtfTracePointContext) -> i32 {
    let cache: u64 = ctx.arg(2);
    if cache != conf!(ct_cache) {
        return 0;
    }
    let ct = lifecycle::void_arg(&ctx, 1);
    if ct == 0 {
        return 0;
    }
    count(counter::ALLOC);
    if !wanted(setting::EVENTS_CT) {
        return 0;
    }
    // The short record (AllocRecord): most of what a whole Event cost here
    // was writing its 136 bytes to cold ring memory.
    match EVENTS.reserve::<AllocRecord>(0) {
        Some(mut entry) => {
            entry.write(AllocRecord {
                ct,
                // SAFETY: helpers without preconditions.
                ts_ns: unsafe { bpf_ktime_get_ns() },
                cpu: unsafe { bpf_get_smp_processor_id() },
                _pad: 0,
            });
            entry.submit(maps::wake_flag());
        }
        None => count_shared(counter::LOST_EVENTS),
    }
    0
}

/// `kmem_cache_free(call_site, ptr, s)`. Called before the object is freed,
/// so the entry is still intact (nf_conntrack_free in nf_conntrack_core.c).
#[btf_tracepoint(function = "kmem_cache_free")]
pub fn ct_free(ctx: BtfTracePointContext) -> i32 {
    let cache: u64 = ctx.arg(2);
    if cache != conf!(ct_cache) {
        return 0;
    }
    let ct = lifecycle::void_arg(&ctx, 1);
    if ct != 0 {
        lifecycle::freed(ct, scratch::FREE);
    }
    0
}

/// `kfree_skb(skb, location, reason, rx_sk)`: every packet netfilter drops
/// is freed here by `nf_hook_slow` with `SKB_DROP_REASON_NETFILTER_DROP`.
#[btf_tracepoint(function = "kfree_skb")]
pub fn ct_drop(ctx: BtfTracePointContext) -> i32 {
    let reason: u64 = ctx.arg(2);
    if reason as u32 != conf!(reason_netfilter_drop) {
        return 0;
    }
    on_drop(&ctx, true);
    0
}

/// Classifies and counts a netfilter drop. `chain_walk`: whether the
/// classification may walk the entry's hash chain (a `bpf_loop`, so false
/// in the programs of kernels without it, legacy.rs).
#[inline(always)]
pub(crate) fn on_drop(ctx: &BtfTracePointContext, chain_walk: bool) {
    // The kprobe backend's findings for packets dropped in a softirq that
    // interrupts this run go to stacks of their own (kprobe.rs, `DropLevel`).
    let level = kprobe::DropLevel::enter();
    classify_drop(ctx, chain_walk);
    level.leave();
}

#[inline(always)]
fn classify_drop(ctx: &BtfTracePointContext, chain_walk: bool) {
    let skb: u64 = ctx.arg(0);
    let location = lifecycle::void_arg(ctx, 1);
    let Some(ev) = scratch_event(scratch::DROP) else {
        return;
    };
    ev.kind = kind::DROP;
    // SAFETY: helpers without preconditions.
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.cpu = unsafe { bpf_get_smp_processor_id() };
    ev.location = location;
    let net = kernel::skb_net(skb, ev);
    ev.netns = kernel::net_inum(net);
    ev.netns_id = kernel::netns_key(net);
    if ev.netns == 0 {
        ev.flags |= flag::NO_NETNS;
    }
    packet::parse(skb, ev);
    // The hook matters to the classification only for packets that carry
    // something of conntrack's, and to the user for drops of cause other:
    // the stack is not read for the (possibly many) table-full refusals.
    let nfct: u64 = kernel::member(skb, conf!(skb_nfct)).unwrap_or(0);
    if nfct != 0 {
        ev.hook = hook::of_drop(ctx, location);
    }
    ev.cause = kernel::classify(skb, net, location, ev, chain_walk);
    if ev.cause == cause::OTHER && ev.hook == 0 {
        ev.hook = hook::of_drop(ctx, location);
    }
    let index = counter::drop_index(ev.cause);
    count(index);
    // Per namespace: the five conntrack causes (`other` is counted
    // machine-wide only).
    if (ev.cause as usize) < cause::COUNT {
        netns_add(net, NS_DROP_FIRST + ev.cause as u32);
    }
    if !wanted(setting::EVENTS_DROP) {
        return;
    }
    if maps::sampled(index) {
        emit(ev);
    } else {
        count(counter::SAMPLED_OUT);
    }
}

/// The hooks above doing nothing: `cargo xtask bench` attaches these to
/// measure what the dispatch alone costs (the floor of this design).
#[btf_tracepoint(function = "kmem_cache_alloc")]
pub fn noop_alloc(_ctx: BtfTracePointContext) -> i32 {
    0
}

/// See `noop_alloc`.
#[btf_tracepoint(function = "kmem_cache_free")]
pub fn noop_free(_ctx: BtfTracePointContext) -> i32 {
    0
}

/// See `noop_alloc`.
#[btf_tracepoint(function = "kfree_skb")]
pub fn noop_drop(_ctx: BtfTracePointContext) -> i32 {
    0
}

/// The kprobe backend (kprobe.rs); the loader attaches each to the function
/// named in its comment, or falls back to the tracepoints per hook.
/// `__nf_conntrack_alloc` entry.
#[kprobe]
pub fn kp_alloc(ctx: ProbeContext) -> u32 {
    kprobe::alloc_entry(&ctx);
    0
}

/// `__nf_conntrack_alloc` return.
#[kretprobe]
pub fn kp_alloc_ret(ctx: RetProbeContext) -> u32 {
    kprobe::alloc_return(&ctx);
    0
}

/// `nf_conntrack_free` entry.
#[kprobe]
pub fn kp_free(ctx: ProbeContext) -> u32 {
    kprobe::free(&ctx);
    0
}

/// `__nf_conntrack_confirm` entry.
#[kprobe]
pub fn kp_confirm(ctx: ProbeContext) -> u32 {
    kprobe::confirm_entry(&ctx);
    0
}

/// `__nf_conntrack_confirm` return.
#[kretprobe]
pub fn kp_confirm_ret(ctx: RetProbeContext) -> u32 {
    kprobe::confirm_return(&ctx);
    0
}

/// `__nf_conntrack_hash_insert` entry.
#[kprobe]
pub fn kp_insert(ctx: ProbeContext) -> u32 {
    kprobe::insert(&ctx);
    0
}

/// `nf_ct_delete` entry.
#[kprobe]
pub fn kp_delete(ctx: ProbeContext) -> u32 {
    kprobe::delete_entry(&ctx);
    0
}

/// `nf_ct_delete` return.
#[kretprobe]
pub fn kp_delete_ret(ctx: RetProbeContext) -> u32 {
    kprobe::delete_return(&ctx);
    0
}

/// `early_drop` return.
#[kretprobe]
pub fn kp_early_drop_ret(ctx: RetProbeContext) -> u32 {
    kprobe::early_drop_return(&ctx);
    0
}

/// `nf_nat_icmp_reply_translation` entry.
#[kprobe]
pub fn kp_nat_icmp(ctx: ProbeContext) -> u32 {
    kprobe::nat_icmp_entry(&ctx);
    0
}

/// `nf_nat_icmp_reply_translation` return.
#[kretprobe]
pub fn kp_nat_icmp_ret(ctx: RetProbeContext) -> u32 {
    kprobe::nat_icmp_return(&ctx);
    0
}

/// Lists the network namespaces and their live counts (netns.rs).
#[raw_tracepoint(tracepoint = "ctscope_sample")]
pub fn sample_netns(_ctx: RawTracePointContext) -> i32 {
    netns::sample_netns();
    0
}

/// Reads the namespace and tuple of the entries userspace lists (netns.rs).
#[raw_tracepoint(tracepoint = "ctscope_resolve")]
pub fn resolve_ct(_ctx: RawTracePointContext) -> i32 {
    netns::resolve_ct();
    0
}

/// Finds the `nf_conntrack` kmem_cache by walking the list of all caches from
/// the first one allocated from, comparing names once. Attached briefly at
/// start-up; the hot probes then compare pointers only.
#[btf_tracepoint(function = "kmem_cache_alloc")]
pub fn discover_cache(ctx: BtfTracePointContext) -> i32 {
    let cache: u64 = ctx.arg(2);
    kernel::discover_cache(cache);
    0
}

/// Finds the calling task's `struct nf_conntrack_net` and copies its sysctl
/// table (names and data addresses). Run once with BPF_PROG_TEST_RUN.
#[raw_tracepoint(tracepoint = "ctscope_discover")]
pub fn discover_net(_ctx: RawTracePointContext) -> i32 {
    kernel::discover_net();
    0
}

/// Chain lengths of buckets `arg(2) .. arg(2) + arg(3)` of the table at
/// `arg(0)` with `arg(1)` buckets, into `WALK_OUT`; with `arg(4)` = 1 also
/// the entries' holders facts, into `HOLDERS_OUT` (holders.rs).
#[raw_tracepoint(tracepoint = "ctscope_walk")]
pub fn walk_chunk(ctx: RawTracePointContext) -> i32 {
    let holders: u64 = ctx.arg(4);
    walk::walk_chunk(ctx.arg(0), ctx.arg(1), ctx.arg(2), ctx.arg(3), holders == 1);
    0
}

/// The entries on the chain of bucket `arg(2)` of the table at `arg(0)`
/// with `arg(1)` buckets, into `BUCKET_OUT`.
#[raw_tracepoint(tracepoint = "ctscope_bucket")]
pub fn walk_bucket(ctx: RawTracePointContext) -> i32 {
    walk::walk_bucket(ctx.arg(0), ctx.arg(1), ctx.arg(2));
    0
}

/// `kfree(call_site, ptr)`: the iterator of /proc/net/nf_conntrack that
/// ctscope itself closes holds the table's address.
#[btf_tracepoint(function = "kfree")]
pub fn locate_seq(ctx: BtfTracePointContext) -> i32 {
    // kfree(call_site, ptr): `const void *`, read with a helper (6.1).
    locate::locate_seq(lifecycle::void_arg(&ctx, 1));
    0
}

/// Reads the table's address from `nf_conntrack_hash` at `arg(0)` and its
/// size from `nf_conntrack_htable_size` at `arg(1)` (kallsyms addresses;
/// run with BPF_PROG_TEST_RUN).
#[raw_tracepoint(tracepoint = "ctscope_locate")]
pub fn locate_sym(ctx: RawTracePointContext) -> i32 {
    locate::locate_sym(ctx.arg(0), ctx.arg(1));
    0
}

/// `consume_skb(skb, location)`: a packet of a tracked flow carries its
/// confirmed entry, which leads to the table.
#[btf_tracepoint(function = "consume_skb")]
pub fn locate_skb(ctx: BtfTracePointContext) -> i32 {
    let skb: u64 = ctx.arg(0);
    let nfct: u64 = kernel::member(skb, conf!(skb_nfct)).unwrap_or(0);
    let ct = nfct & !7;
    if ct != 0 {
        locate::locate_from_entry(ct);
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach this.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
