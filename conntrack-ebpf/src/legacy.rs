//! Programs for kernels older than the ones the main programs target
//! (Debian 11's 5.10; docs/drop-causes.md, "Per kernel"). The loader picks
//! them instead of their twins when the kernel lacks what those use:
//!
//! * `ct_drop_loc` — `skb:kfree_skb` before 5.17 has no drop reason
//!   (`kfree_skb(skb, location)`, and the verifier refuses a read of a
//!   third argument), so a netfilter drop is recognised by its `location`
//!   inside `nf_hook_slow` (`classify::is_netfilter_drop`);
//! * `sample_netns_bounded` — `bpf_loop` is missing before 5.17: the same
//!   namespace walk in bounded loops, one pass per test run;
//! * `walk_chunk_bounded`, `walk_bucket_bounded` — the hash table walk and
//!   listing the same way (walk.rs), their state in maps between passes.

use aya_ebpf::{
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use conntrack_common::classify::{DropMark, is_netfilter_drop};

use crate::{kernel, lifecycle, maps::PASS_RESULT, netns, walk};

/// `kfree_skb(skb, location)` on kernels without drop reasons.
#[btf_tracepoint(function = "kfree_skb")]
pub fn ct_drop_loc(ctx: BtfTracePointContext) -> i32 {
    let location = lifecycle::void_arg(&ctx, 1);
    if !is_netfilter_drop(DropMark::NoReason, kernel::freer(location)) {
        return 0;
    }
    crate::on_drop(&ctx, false);
    0
}

/// `sample_netns` without `bpf_loop`, in passes: `arg(0)` 0 starts, 1
/// resumes; `PASS_RESULT` says what next (netns.rs).
#[raw_tracepoint(tracepoint = "ctscope_sample")]
pub fn sample_netns_bounded(ctx: RawTracePointContext) -> i32 {
    pass_result(netns::sample_netns_bounded(ctx.arg(0)))
}

/// Publishes what a pass says next in `PASS_RESULT`: the test run's return
/// value is always 0 (the macro drops the function's).
#[inline(always)]
fn pass_result(next: i32) -> i32 {
    if let Some(p) = PASS_RESULT.get_ptr_mut(0) {
        // SAFETY: map value pointer from a successful lookup.
        unsafe { *p = next as u32 };
    }
    next
}

/// `walk_chunk` without `bpf_loop`, in passes: arguments as `walk_chunk`'s,
/// plus `arg(5)` 0 to start the chunk, 1 to resume it; `PASS_RESULT` is 1
/// while another pass is needed (walk.rs).
#[raw_tracepoint(tracepoint = "ctscope_walk")]
pub fn walk_chunk_bounded(ctx: RawTracePointContext) -> i32 {
    let holders: u64 = ctx.arg(4);
    let resume: u64 = ctx.arg(5);
    pass_result(walk::walk_chunk_bounded(
        ctx.arg(0),
        ctx.arg(1),
        ctx.arg(2),
        ctx.arg(3),
        holders == 1,
        resume == 1,
    ))
}

/// `walk_bucket` without `bpf_loop`, in passes: `arg(3)` 0 starts, 1
/// resumes; `PASS_RESULT` is 1 while another pass is needed.
#[raw_tracepoint(tracepoint = "ctscope_bucket")]
pub fn walk_bucket_bounded(ctx: RawTracePointContext) -> i32 {
    let resume: u64 = ctx.arg(3);
    pass_result(walk::walk_bucket_bounded(
        ctx.arg(0),
        ctx.arg(1),
        ctx.arg(2),
        resume == 1,
    ))
}
