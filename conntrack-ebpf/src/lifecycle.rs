//! What happens when a conntrack entry is freed, whichever probe saw it
//! (the slab tracepoint or the `nf_conntrack_free` kprobe).

use aya_ebpf::{EbpfContext as _, programs::BtfTracePointContext};
use conntrack_common::{counter, kind, setting};

use crate::{
    kernel,
    maps::{NS_FREE, count, emit, netns_add, scratch_event, scratch_image, wanted},
};

/// Counts a free in the entry's namespace and sends the event if asked,
/// built in scratch slot `slot`. The entry is intact here (nf_conntrack_free
/// frees it after this point), and `ct_net` is valid: every entry that
/// reaches the slab free went through `__nf_conntrack_alloc`, which wrote it.
#[inline(always)]
pub fn freed(ct: u64, slot: u32) {
    count(counter::FREE);
    let net = kernel::ct_net(ct);
    netns_add(net, NS_FREE);
    if wanted(setting::EVENTS_CT)
        && let Some(ev) = scratch_event(slot)
    {
        kernel::ct_event(ct, kind::FREE, ev, scratch_image(slot));
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
