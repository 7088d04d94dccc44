//! Programs userspace runs with BPF_PROG_TEST_RUN to read what the hot
//! probes leave out:
//!
//! * `sample_netns` lists every network namespace with its live conntrack
//!   count. Userspace derives allocations per namespace from it (frees plus
//!   the change in the count), so no probe has to run on every slab
//!   allocation of the machine in counting modes.
//! * `resolve_ct` reads the namespace and tuple of entries whose allocation
//!   the allocation probe reported (it fires before `__nf_conntrack_alloc`
//!   has written them).
//!
//! Both run inside `rcu_read_lock()` (net/bpf/test_run.c): the namespace
//! list is RCU-protected (`for_each_net_rcu`), and a `struct net` is freed
//! only after `cleanup_net` has waited for a grace period.

use core::ffi::c_void;

use aya_ebpf::helpers::{bpf_get_current_task, bpf_ktime_get_ns, generated::bpf_loop};
use aya_ebpf::{macros::map, maps::Array};
use conntrack_common::{MAX_NETNS_SAMPLED, NETNS_PASS_STEPS, RESOLVE_BATCH};

use crate::{
    kernel::{self, CtImage, conf, member},
    maps::{NETNS_LIST, RESOLVE},
};

/// State of the walk along `net->list`, on the stack for `bpf_loop`. The
/// count of namespaces found lives in the map value, not here: a counter
/// the verifier knows exactly would make it verify every iteration of the
/// loop separately.
#[repr(C)]
#[derive(Clone, Copy)]
struct ListWalk {
    /// The `list` node of the namespace the walk started from.
    start: u64,
    /// The node most recently visited.
    node: u64,
    /// `ns.ops` of every namespace: the list's head (`net_namespace_list`,
    /// a bare `list_head`, not in kallsyms) has something else there.
    ops: u64,
}

/// One step along the list; returns 1 to stop.
extern "C" fn list_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer to our stack struct.
    let w = unsafe { &mut *(ctx as *mut ListWalk) };
    list_visit(w)
}

/// The body of one step, shared by the `bpf_loop` walk and the bounded
/// loop of kernels without `bpf_loop` (before 5.17).
#[inline(always)]
fn list_visit(w: &mut ListWalk) -> i64 {
    let Some(next) = member::<u64>(w.node, 0) else {
        return 1;
    };
    if next == 0 {
        return 1;
    }
    let Some(list) = NETNS_LIST.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: map value pointer from a successful lookup; test runs of this
    // program do not overlap (userspace runs them one at a time).
    let list = unsafe { &mut *list };
    if next == w.start {
        list.complete = 1;
        return 1;
    }
    w.node = next;
    let net = next - u64::from(conf!(net_list));
    if member::<u64>(net, conf!(net_ns_ops)) != Some(w.ops) {
        // The list's head.
        return 0;
    }
    let len = list.len;
    if len >= MAX_NETNS_SAMPLED {
        return 1;
    }
    let item = &mut list.items[(len & (MAX_NETNS_SAMPLED - 1)) as usize];
    item.net = net;
    item.key = kernel::netns_key(net);
    item.cookie = if conf!(net_cookie) == u32::MAX {
        0
    } else {
        member::<u64>(net, conf!(net_cookie)).unwrap_or(0)
    };
    item.inum = kernel::net_inum(net);
    let cnet = kernel::cnet_of(net);
    item.count = member::<i32>(cnet, conf!(cnet_count)).unwrap_or(-1);
    list.len = len + 1;
    0
}

/// Lists the namespaces on the kernel's list into `NETNS_LIST`, starting
/// from the calling task's own.
pub fn sample_netns() {
    let Some(mut walk) = sample_begin() else {
        return;
    };
    // SAFETY: list_step has the bpf_loop callback signature and `walk`
    // outlives the call.
    unsafe {
        bpf_loop(
            MAX_NETNS_SAMPLED + 1,
            list_step as *mut c_void,
            &raw mut walk as *mut c_void,
            0,
        )
    };
}

/// Where a bounded sample stopped, for its next pass (`node` 0: done).
#[map]
static SAMPLE_WALK: Array<ListWalk> = Array::with_max_entries(1, 0);

/// `list_del_rcu` leaves `prev` poisoned (include/linux/poison.h,
/// `LIST_POISON2` with x86_64's `POISON_POINTER_DELTA`).
const LIST_POISON2: u64 = 0xdead_0000_0000_0122;

/// `sample_netns` for kernels without `bpf_loop` (before 5.17): the same
/// steps in bounded loops of [`NETNS_PASS_STEPS`], one per test run. The
/// verifier follows a bounded loop iteration by iteration and keeps a
/// pending state for each branch not yet taken, and refuses more than
/// 8192 of them: the whole list (4097 steps) in one run is too much for
/// it. `resume` 0 starts a sample, 1 continues where the last pass
/// stopped. Returns 0 when the sample is finished, 1 when another pass
/// is needed, 2 when the namespace the last pass stopped at has left the
/// list since (between passes no RCU read lock is held): start again.
pub fn sample_netns_bounded(resume: u64) -> i32 {
    let mut walk = if resume == 0 {
        match sample_begin() {
            Some(w) => w,
            None => return 0,
        }
    } else {
        let Some(saved) = SAMPLE_WALK.get_ptr_mut(0) else {
            return 0;
        };
        // SAFETY: map value pointer from a successful lookup.
        let saved = unsafe { *saved };
        if saved.node == 0 {
            return 0;
        }
        if saved.node != saved.start {
            let net = saved.node - u64::from(conf!(net_list));
            let prev = member::<u64>(saved.node, 8).unwrap_or(LIST_POISON2);
            if member::<u64>(net, conf!(net_ns_ops)) != Some(saved.ops) || prev == LIST_POISON2 {
                return 2;
            }
        }
        saved
    };
    let mut more = 1;
    for _ in 0..NETNS_PASS_STEPS {
        if list_visit(&mut walk) != 0 {
            more = 0;
            break;
        }
    }
    if more == 0 {
        walk.node = 0;
    }
    if let Some(saved) = SAMPLE_WALK.get_ptr_mut(0) {
        // SAFETY: as above; test runs do not overlap.
        unsafe { *saved = walk };
    }
    more
}

/// Records the calling task's namespace and returns the walk's start.
#[inline(always)]
fn sample_begin() -> Option<ListWalk> {
    let list = NETNS_LIST.get_ptr_mut(0)?;
    // SAFETY: helpers without preconditions.
    let (task, now) = unsafe { (bpf_get_current_task(), bpf_ktime_get_ns()) };
    let nsproxy: u64 = member(task, conf!(task_nsproxy)).unwrap_or(0);
    let own: u64 = member(nsproxy, conf!(nsproxy_net)).unwrap_or(0);
    // SAFETY: as in `list_step`.
    let list = unsafe { &mut *list };
    list.ktime_ns = now;
    list.len = 0;
    list.complete = 0;
    let ops = member::<u64>(own, conf!(net_ns_ops))?;
    let start = own + u64::from(conf!(net_list));
    // The walk visits every node after `start`; the own namespace is the
    // last one (where the walk stops), so record it first.
    let walk = ListWalk {
        start,
        node: start,
        ops,
    };
    {
        let item = &mut list.items[0];
        item.net = own;
        item.key = kernel::netns_key(own);
        item.cookie = if conf!(net_cookie) == u32::MAX {
            0
        } else {
            member::<u64>(own, conf!(net_cookie)).unwrap_or(0)
        };
        item.inum = kernel::net_inum(own);
        let cnet = kernel::cnet_of(own);
        item.count = member::<i32>(cnet, conf!(cnet_count)).unwrap_or(-1);
        list.len = 1;
    }
    Some(walk)
}

/// The namespace of the entry read last: entries of one batch mostly
/// share a few namespaces, so their key and inode are read once per run of
/// entries of the same namespace.
#[repr(C)]
struct LastNet {
    net: u64,
    key: u64,
    inum: u32,
    _pad: u32,
}

/// Reads entry `index` of the batch in `RESOLVE`; returns 1 to stop.
extern "C" fn resolve_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer to our stack struct.
    let last = unsafe { &mut *(ctx as *mut LastNet) };
    let Some(batch) = RESOLVE.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: map value pointer from a successful lookup; test runs do not
    // overlap.
    let batch = unsafe { &mut *batch };
    let i = index as u32;
    if i >= batch.len || i >= RESOLVE_BATCH {
        return 1;
    }
    let i = (i & (RESOLVE_BATCH - 1)) as usize;
    let ct = batch.cts[i];
    let out = &mut batch.out[i];
    out.ct = 0;
    if ct == 0 {
        return 0;
    }
    let net = match CtImage::read(ct, &mut batch.image) {
        Some(image) => {
            if !image.published() {
                return 0;
            }
            image.describe(out);
            image.net()
        }
        // An entry larger than the copy: field by field.
        None => {
            if !kernel::ct_published(ct) {
                return 0;
            }
            out.status = member::<u64>(ct, conf!(ct_status)).unwrap_or(0) as u32;
            out.mark = member(ct, conf!(ct_mark)).unwrap_or(0);
            out.zone = member(ct, conf!(ct_zone)).unwrap_or(0);
            out.tcp_state = member(ct, conf!(ct_tcp_state)).unwrap_or(0);
            kernel::ct_tuple(ct, &mut out.tuple);
            kernel::ct_net(ct)
        }
    };
    if net != last.net || net == 0 {
        last.net = net;
        last.key = kernel::netns_key(net);
        last.inum = kernel::net_inum(net);
    }
    batch.keys[i] = last.key;
    out.netns = last.inum;
    out.ct = ct;
    0
}

/// Reads the entries listed in `RESOLVE`.
pub fn resolve_ct() {
    if let Some(batch) = RESOLVE.get_ptr_mut(0) {
        // SAFETY: map value pointer from a successful lookup.
        unsafe { (*batch).ktime_ns = bpf_ktime_get_ns() };
    }
    let mut last = LastNet {
        net: 0,
        key: 0,
        inum: 0,
        _pad: 0,
    };
    // SAFETY: callback signature and context as bpf_loop requires; `last`
    // outlives the call.
    unsafe {
        bpf_loop(
            RESOLVE_BATCH,
            resolve_step as *mut c_void,
            &raw mut last as *mut c_void,
            0,
        )
    };
}
