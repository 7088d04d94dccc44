//! Programs for kernels older than the ones the main programs target
//! (Debian 11's 5.10; docs/drop-causes.md, "Per kernel"). The loader picks
//! them instead of their twins when the kernel lacks what those use:
//!
//! * `ct_drop_loc` — `skb:kfree_skb` before 5.17 has no drop reason
//!   (`kfree_skb(skb, location)`, and the verifier refuses a read of a
//!   third argument), so a netfilter drop is recognised by its `location`
//!   inside `nf_hook_slow` (`classify::is_netfilter_drop`);
//! * `sample_netns_bounded` — `bpf_loop` is missing before 5.17: the same
//!   namespace walk in bounded loops, one pass per test run.

use aya_ebpf::{
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use conntrack_common::classify::{DropMark, is_netfilter_drop};

use crate::{kernel, lifecycle, netns};

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
/// resumes; the return value says what next (netns.rs).
#[raw_tracepoint(tracepoint = "ctscope_sample")]
pub fn sample_netns_bounded(ctx: RawTracePointContext) -> i32 {
    netns::sample_netns_bounded(ctx.arg(0))
}
