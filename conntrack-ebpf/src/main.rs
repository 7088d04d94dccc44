//! ctscope's eBPF programs.
//!
//! The build/CI kernel has neither kprobes nor fentry, so everything hangs off
//! BTF tracepoints (see ../shared/platform.md):
//!
//! * `ct_alloc` — `kmem:kmem_cache_alloc`, restricted to the `nf_conntrack`
//!   slab by comparing the cache pointer with a load-time constant;
//! * `ct_free` — `kmem:kmem_cache_free` on the same slab;
//! * `ct_drop` — `skb:kfree_skb` with `SKB_DROP_REASON_NETFILTER_DROP`,
//!   classified by what the packet carries (net/netfilter/nf_conntrack_core.c);
//! * `resolve` — run from userspace with BPF_PROG_TEST_RUN: attributes queued
//!   allocations to their network namespace once `__nf_conntrack_alloc` has
//!   written `ct_net`;
//! * `discover_cache`, `discover_net` — start-up discovery of the slab and of
//!   `struct nf_conntrack_net`, whose addresses are not in kallsyms;
//! * `walk_chunk`, `walk_bucket` — run from userspace: chain lengths of a
//!   range of hash buckets, and the entries on one chain (walk.rs);
//! * `locate_seq`, `locate_skb` — attached briefly to find the hash table
//!   (`nf_conntrack_hash`, not in kallsyms either; locate.rs).
//!
//! Every kernel struct offset comes from the read-only `CONFIG` global, filled
//! in from the running kernel's BTF by the loader. Loops are bounded, memory
//! is read with `bpf_probe_read_kernel`, and nothing here can panic.
#![no_std]
#![no_main]

mod kernel;
mod kprobe;
mod lifecycle;
mod locate;
mod maps;
mod packet;
mod walk;

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::{btf_tracepoint, kprobe, kretprobe, raw_tracepoint},
    programs::{BtfTracePointContext, ProbeContext, RawTracePointContext, RetProbeContext},
};
use conntrack_common::{Pending, counter, flag, kind, setting};

use crate::{
    kernel::conf,
    maps::{
        NS_DROP_FIRST, PENDING, count, emit, netns_add, running, scratch, scratch_event, wanted,
    },
};

// Each hot probe has a backup attached to the same tracepoint. The kernel
// skips a BPF program that is already running on the CPU
// (`__bpf_trace_run`'s recursion check, kernel/trace/bpf_trace.c): when an
// interrupt lands while a probe runs (on any slab allocation, mostly not
// conntrack's) and the softirq run on its way out allocates, frees or
// drops conntrack's objects, the probe misses them. The main probe marks
// itself running on this CPU; its backup does the work only when it finds
// that mark, that is, only for the events the main probe is skipping.

/// `kmem_cache_alloc(call_site, ptr, s, gfp_flags, node)`.
///
/// This fires for every slab allocation on the machine, so the common path is
/// one comparison against a constant the verifier knows.
#[btf_tracepoint(function = "kmem_cache_alloc")]
pub fn ct_alloc(ctx: BtfTracePointContext) -> i32 {
    maps::set_running(running::ALLOC, true);
    on_alloc(&ctx);
    maps::set_running(running::ALLOC, false);
    0
}

/// Backup of `ct_alloc` for allocations nested inside it.
#[btf_tracepoint(function = "kmem_cache_alloc")]
pub fn ct_alloc_nested(ctx: BtfTracePointContext) -> i32 {
    if maps::is_running(running::ALLOC) && on_alloc(&ctx) {
        count(counter::NESTED);
    }
    0
}

/// Counts and queues a conntrack allocation; false for other caches.
#[inline(always)]
fn on_alloc(ctx: &BtfTracePointContext) -> bool {
    let cache: u64 = ctx.arg(2);
    if cache != conf!(ct_cache) {
        return false;
    }
    let ct = lifecycle::void_arg(ctx, 1);
    if ct == 0 {
        return false;
    }
    count(counter::ALLOC);
    // SAFETY: helpers without preconditions.
    let pending = Pending {
        alloc_ts_ns: unsafe { bpf_ktime_get_ns() },
        cpu: unsafe { bpf_get_smp_processor_id() },
        _pad: 0,
    };
    if PENDING.insert(ct, pending, 0).is_err() {
        count(counter::PENDING_OVERFLOW);
    }
    true
}

/// `kmem_cache_free(call_site, ptr, s)`. Called before the object is freed,
/// so the entry is still intact (nf_conntrack_free in nf_conntrack_core.c).
#[btf_tracepoint(function = "kmem_cache_free")]
pub fn ct_free(ctx: BtfTracePointContext) -> i32 {
    maps::set_running(running::FREE, true);
    on_free(&ctx, scratch::FREE);
    maps::set_running(running::FREE, false);
    0
}

/// Backup of `ct_free` for frees nested inside it.
#[btf_tracepoint(function = "kmem_cache_free")]
pub fn ct_free_nested(ctx: BtfTracePointContext) -> i32 {
    if maps::is_running(running::FREE) && on_free(&ctx, scratch::FREE_NESTED) {
        count(counter::NESTED);
    }
    0
}

#[inline(always)]
fn on_free(ctx: &BtfTracePointContext, slot: u32) -> bool {
    let cache: u64 = ctx.arg(2);
    if cache != conf!(ct_cache) {
        return false;
    }
    let ct = lifecycle::void_arg(ctx, 1);
    if ct == 0 {
        return false;
    }
    lifecycle::freed(ct, slot);
    true
}

/// `kfree_skb(skb, location, reason, rx_sk)`: every packet netfilter drops
/// is freed here by `nf_hook_slow` with `SKB_DROP_REASON_NETFILTER_DROP`.
#[btf_tracepoint(function = "kfree_skb")]
pub fn ct_drop(ctx: BtfTracePointContext) -> i32 {
    maps::set_running(running::DROP, true);
    on_drop(&ctx, scratch::DROP);
    maps::set_running(running::DROP, false);
    0
}

/// Backup of `ct_drop` for drops nested inside it.
#[btf_tracepoint(function = "kfree_skb")]
pub fn ct_drop_nested(ctx: BtfTracePointContext) -> i32 {
    if maps::is_running(running::DROP) && on_drop(&ctx, scratch::DROP_NESTED) {
        count(counter::NESTED);
    }
    0
}

/// Classifies and counts a netfilter drop; false for other drop reasons.
#[inline(always)]
fn on_drop(ctx: &BtfTracePointContext, slot: u32) -> bool {
    let reason: u64 = ctx.arg(2);
    if reason as u32 != conf!(reason_netfilter_drop) {
        return false;
    }
    let skb: u64 = ctx.arg(0);
    let location = lifecycle::void_arg(ctx, 1);
    let Some(ev) = scratch_event(slot) else {
        return true;
    };
    ev.kind = kind::DROP;
    // SAFETY: helpers without preconditions.
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.cpu = unsafe { bpf_get_smp_processor_id() };
    let net = kernel::skb_net(skb, ev);
    ev.netns = kernel::net_inum(net);
    if ev.netns == 0 {
        ev.flags |= flag::NO_NETNS;
    }
    packet::parse(skb, ev);
    ev.cause = kernel::classify(skb, net, location, ev);
    ev.cause = kprobe::refine(skb, ev.cause, ev);
    let index = counter::DROP_FIRST + ev.cause as u32;
    count(index);
    netns_add(ev.netns, NS_DROP_FIRST + ev.cause as u32);
    if !wanted(setting::EVENTS_DROP) {
        return true;
    }
    if maps::sampled(index) {
        emit(ev);
    } else {
        count(counter::SAMPLED_OUT);
    }
    true
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

/// Attributes every queued allocation whose entry is initialised by now.
/// Userspace runs it with BPF_PROG_TEST_RUN a few times a second.
#[raw_tracepoint(tracepoint = "ctscope_resolve")]
pub fn resolve(_ctx: RawTracePointContext) -> i32 {
    maps::for_each_pending();
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
/// `arg(0)` with `arg(1)` buckets, into `WALK_OUT`.
#[raw_tracepoint(tracepoint = "ctscope_walk")]
pub fn walk_chunk(ctx: RawTracePointContext) -> i32 {
    walk::walk_chunk(ctx.arg(0), ctx.arg(1), ctx.arg(2), ctx.arg(3));
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
