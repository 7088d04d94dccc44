//! What happens when a conntrack entry is freed, whichever probe saw it
//! (the slab tracepoint or the `nf_conntrack_free` kprobe).

use aya_ebpf::{EbpfContext as _, programs::BtfTracePointContext};
use conntrack_common::{counter, kind, setting};

use crate::{
    kernel,
    maps::{NS_ALLOC, NS_FREE, PENDING, count, emit, netns_add, scratch_event, wanted},
};

/// Counts a free, attributes an allocation still queued for its namespace
/// (the entry was fully initialised long before it is freed), and sends the
/// events asked for, built in scratch slot `slot`. The entry is intact here
/// (nf_conntrack_free frees it after this point).
#[inline(always)]
pub fn freed(ct: u64, slot: u32) {
    count(counter::FREE);
    let netns = kernel::ct_netns(ct);
    let send = wanted(setting::EVENTS_CT);
    if let Some(p) = PENDING.get_ptr(ct) {
        // SAFETY: value pointer from a successful lookup.
        let alloc_ts_ns = unsafe { (*p).alloc_ts_ns };
        if PENDING.remove(ct).is_ok() {
            count(counter::RESOLVED_AT_FREE);
            netns_add(netns, NS_ALLOC);
            if send && let Some(ev) = scratch_event(slot) {
                kernel::ct_event(ct, kind::ALLOC, ev);
                ev.alloc_ts_ns = alloc_ts_ns;
                emit(ev);
            }
        }
    }
    netns_add(netns, NS_FREE);
    if send && let Some(ev) = scratch_event(slot) {
        kernel::ct_event(ct, kind::FREE, ev);
        emit(ev);
    }
}

/// Argument `n` of a BTF tracepoint, read from the context with a helper.
/// Before about 6.4 the verifier refuses direct context loads of `void *`
/// arguments ("arg1 type UNKNOWN is not a struct"), such as
/// `kmem_cache_alloc`'s `ptr` and `kfree_skb`'s `location` on 6.1.
#[inline(always)]
pub fn void_arg(ctx: &BtfTracePointContext, n: usize) -> u64 {
    let args = ctx.as_ptr() as *const u64;
    kernel::read::<u64>(args.wrapping_add(n) as u64).unwrap_or(0)
}
