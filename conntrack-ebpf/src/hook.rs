//! Which netfilter hook dropped a packet. `kfree_skb` does not say, and the
//! hook function that returned NF_DROP has already returned, but the
//! function that called `nf_hook_slow` is still on the stack, and each of
//! the callers the loader lists in `CONFIG.hook_callers` calls it for one
//! hook only (`ip_rcv`: PRE_ROUTING, `ip_local_deliver`: LOCAL_IN,
//! `ip_forward`: FORWARD, `__ip_local_out`: LOCAL_OUT, `ip_output`:
//! POST_ROUTING, their IPv6 twins; include/linux/netfilter.h `NF_HOOK`).

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext, helpers::generated::bpf_get_stack, macros::map, maps::PerCpuArray,
    programs::BtfTracePointContext,
};
use conntrack_common::{MAX_HOOK_CALLERS, classify::hook};

/// Return addresses read from the stack: the BPF program, the tracepoint
/// glue (`bpf_trace_run4`, `__bpf_trace_kfree_skb`), `sk_skb_reason_drop`,
/// `nf_hook_slow` and its caller fit in these.
const FRAMES: usize = 12;

/// Scratch space for the stack (the drop probe's BPF stack is nearly full).
#[map]
static STACK: PerCpuArray<[u64; FRAMES]> = PerCpuArray::with_max_entries(1, 0);

/// The hook (`classify::hook`) of a drop freed at `location`, or
/// `hook::UNKNOWN`.
#[inline(always)]
pub fn of_drop(ctx: &BtfTracePointContext, location: u64) -> u8 {
    if location == 0 {
        return hook::UNKNOWN;
    }
    let Some(buf) = STACK.get_ptr_mut(0) else {
        return hook::UNKNOWN;
    };
    // SAFETY: the destination is this CPU's map value of exactly this
    // size; the helper fills at most that many bytes.
    let n = unsafe { bpf_get_stack(ctx.as_ptr(), buf as *mut c_void, (FRAMES * 8) as u32, 0) };
    if n <= 0 {
        return hook::UNKNOWN;
    }
    // SAFETY: map value pointer from a successful lookup.
    let frames = unsafe { &*buf };
    let got = (n as usize / 8).min(FRAMES);
    // The frame of `location` (a return address in the freeing function)
    // is followed by its caller's.
    let mut caller = 0;
    for i in 0..FRAMES - 1 {
        if i + 1 >= got {
            break;
        }
        if frames[i] == location {
            caller = frames[i + 1];
            break;
        }
    }
    if caller == 0 {
        return hook::UNKNOWN;
    }
    for i in 0..MAX_HOOK_CALLERS {
        // SAFETY: CONFIG is a plain static; reading a field is always valid.
        let c =
            unsafe { core::ptr::read_volatile(&raw const crate::kernel::CONFIG.hook_callers[i]) };
        if c.lo == 0 {
            break;
        }
        if caller >= c.lo && caller < c.hi {
            return c.hook as u8;
        }
    }
    hook::UNKNOWN
}
