//! Walking the conntrack hash table (`nf_conntrack_hash`; locate.rs finds it).
//!
//! The table is an array of `struct hlist_nulls_head`, one 8-byte `first`
//! pointer per bucket. Bucket `i` is initialised with
//! `INIT_HLIST_NULLS_HEAD(&hash[i], i)` (nf_ct_alloc_hashtable in
//! net/netfilter/nf_conntrack_core.c), so its chain ends in the odd "nulls"
//! marker `(i << 1) | 1` (include/linux/list_nulls.h). Every walk checks that
//! marker: a chain that ends in another bucket's marker crossed into another
//! chain because an entry moved under the walk, and is walked again. A chain
//! can only be trusted when it ends in its own marker; userspace accepts a
//! table address only when every chain of a walk did.
//!
//! All reads go through `bpf_probe_read_kernel`, so a stale or wrong address
//! gives failed reads and unverified chains, never a fault. The programs run
//! from userspace with BPF_PROG_TEST_RUN, inside `rcu_read_lock()`
//! (net/bpf/test_run.c), which keeps the table the walk started on alive for
//! the length of one chunk (nf_conntrack_hash_resize frees the old table after
//! `synchronize_net()`).

use core::ffi::c_void;

use aya_ebpf::helpers::{
    bpf_jiffies64, bpf_ktime_get_ns,
    generated::{bpf_loop, bpf_probe_read_kernel},
};
use aya_ebpf::{macros::map, maps::Array};
use conntrack_common::{
    CHAIN_CAP, ChainNode, LIST_PASS_STEPS, MAX_BUCKET_ENTRIES, TableInfo, WALK_CHUNK,
    WALK_PASS_STEPS, classify::ChainVerdict,
};

use crate::{
    holders::Gather,
    kernel::{self, conf, member, read},
    maps::{BUCKET_OUT, HEADS, TABLE, WALK_OUT},
};

/// Walks of one chain before it is reported unverified.
const MAX_TRIES: u32 = 3;
/// Loop iterations (one memory read each) of one `walk_chunk` run. A chunk
/// that runs out returns early with `done` < its length; userspace resumes.
const CHUNK_BUDGET: u32 = 1 << 20;

/// Is `v` a nulls marker (rather than a node pointer)?
#[inline(always)]
pub fn is_marker(v: u64) -> bool {
    v & 1 == 1
}

/// The head of bucket `b`.
#[inline(always)]
fn head(base: u64, b: u32) -> u64 {
    base + 8 * b as u64
}

/// Chains walked side by side. Each `bpf_loop` iteration advances one lane
/// by one read, round robin, so consecutive reads belong to different
/// chains and do not depend on each other: the CPU overlaps their cache
/// misses instead of waiting for each node in turn (one chain is a chain of
/// dependent loads).
const LANES: usize = 8;

/// One chain being walked.
#[repr(C)]
#[derive(Clone, Copy)]
struct Lane {
    /// Current node, or 0 when the bucket's head is to be read next.
    node: u64,
    /// A value already read for this lane (the bucket's head, from the
    /// batch in `HEADS`), examined instead of reading; 0: none.
    have: u64,
    /// Index of the bucket within the chunk; `IDLE` when the lane has none.
    i: u32,
    /// Nodes on the chain so far.
    len: u32,
    tries: u32,
    _pad: u32,
}

const IDLE: u32 = u32::MAX;
/// A lane that has not had its first bucket yet.
const NEW: u32 = u32::MAX - 1;

/// State of one chunk walk, in `WALK_STATE`.
#[repr(C)]
struct Chunk {
    base: u64,
    start: u32,
    count: u32,
    /// Next bucket (within the chunk) to hand to a lane.
    next: u32,
    /// Lanes that still have a bucket.
    busy: u32,
    /// Chunk index of `HEADS[0]`, and how many heads it holds.
    batch_start: u32,
    batch_len: u32,
    lanes: [Lane; LANES],
    /// Each lane's next value as `read_ahead` found it at the start of the
    /// round (`walk_chunk` only; the bounded walk leaves it 0); 0: not
    /// read, unreadable or NULL, and the lane's step reads itself.
    ahead: [u64; LANES],
    /// Holders recording (holders.rs); off for a plain walk.
    gather: Gather,
}

/// Records the length of a lane's chain and gives it the next bucket.
#[inline(always)]
fn finish(c: &mut Chunk, lane: usize, len: u32, verified: bool, truncated: bool) {
    let l = c.lanes[lane];
    if let Some(out) = WALK_OUT.get_ptr_mut(0) {
        // SAFETY: map value pointer from a successful lookup; only this
        // program writes it, and test runs of it do not overlap.
        let out = unsafe { &mut *out };
        out.lens[(l.i & (WALK_CHUNK - 1)) as usize] = len as u16;
        out.nodes += len as u64;
        if !verified {
            out.unverified += 1;
        }
        if truncated {
            out.truncated += 1;
        }
        out.restarts += l.tries;
    }
    assign(c, lane);
}

/// Hands the next bucket of the chunk to a lane, or idles it.
#[inline(always)]
fn assign(c: &mut Chunk, lane: usize) {
    // With the holders buffer nearly full, no new bucket: the run ends
    // when the lanes' chains do, and userspace resumes at `next`.
    let i = if c.gather.full() { c.count } else { c.next };
    if i < c.count && i >= c.batch_start + c.batch_len {
        refill(c, i);
    }
    let have = match HEADS.get_ptr(0) {
        Some(h) if i >= c.batch_start && i < c.batch_start + c.batch_len => {
            // SAFETY: map value pointer from a successful lookup; the index
            // is masked into the array.
            unsafe { (*h)[((i - c.batch_start) as usize) & (HEAD_BATCH - 1)] }
        }
        _ => 0,
    };
    let l = &mut c.lanes[lane];
    l.node = 0;
    l.have = have;
    l.len = 0;
    l.tries = 0;
    if i < c.count {
        l.i = i;
        c.next += 1;
    } else {
        if l.i != IDLE {
            c.busy -= 1;
        }
        l.i = IDLE;
    }
}

/// Heads read with one `bpf_probe_read_kernel`: most buckets then cost no
/// helper call for their head, and empty ones none at all.
const HEAD_BATCH: usize = 512;

/// Reads the heads of buckets `i ..` of the chunk into `HEADS`. The table
/// size is a multiple of 512 heads (nf_ct_alloc_hashtable rounds it up to a
/// page), so a batch never runs past the array; if the read fails anyway,
/// the lanes read their heads one by one.
#[inline(always)]
fn refill(c: &mut Chunk, i: u32) {
    c.batch_start = i;
    c.batch_len = 0;
    let Some(h) = HEADS.get_ptr_mut(0) else {
        return;
    };
    let src = head(c.base, c.start + i);
    // SAFETY: the destination is a map value of exactly this size; the
    // helper checks the source.
    let ret = unsafe {
        bpf_probe_read_kernel(
            h as *mut c_void,
            (HEAD_BATCH * 8) as u32,
            src as *const c_void,
        )
    };
    if ret == 0 {
        c.batch_len = (HEAD_BATCH as u32).min(c.count - i);
    }
}

/// One `bpf_loop` iteration: lanes take turns; at lane 0's turn, every
/// lane's next read is made ahead ([`read_ahead`]).
extern "C" fn chunk_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer to our stack slot, which
    // holds the pointer to the chunk in `WALK_STATE`.
    let c = unsafe { &mut **(ctx as *mut *mut Chunk) };
    let lane = (index as usize) & (LANES - 1);
    if lane == 0 {
        read_ahead(c);
    }
    chunk_visit(c, lane)
}

/// Reads the next value of every lane into `ahead`, back to back, before
/// any of them is used, so the CPU overlaps their cache misses. Made one per
/// step, between a few hundred instructions of `bpf_loop`'s call and a
/// lane's bookkeeping, they were mostly waited for one at a time (perf: the
/// walk's time was in `copy_from_kernel_nofault`). No branch on what was
/// read: a lane without a chain reads address 0, which fails and leaves 0
/// (the helper zeroes its destination on failure).
#[inline(always)]
fn read_ahead(c: &mut Chunk) {
    for lane in 0..LANES {
        let l = c.lanes[lane];
        let addr = if l.i >= NEW { 0 } else { next_addr(c, &l) };
        // SAFETY: the destination is this lane's slot of `ahead`; the
        // helper checks the source.
        unsafe {
            bpf_probe_read_kernel(
                (&raw mut c.ahead[lane]).cast::<c_void>(),
                8,
                addr as *const c_void,
            )
        };
    }
}

/// Where a lane (with a bucket) reads next: its bucket's head, or the
/// `next` link of its current node.
#[inline(always)]
fn next_addr(c: &Chunk, l: &Lane) -> u64 {
    if l.node == 0 {
        head(c.base, c.start + l.i)
    } else {
        l.node + conf!(hn_next) as u64
    }
}

/// One read for one lane: a bucket head or the next node. Returns 1 to
/// stop. The per-node logic of both walks: `walk_chunk`'s `bpf_loop` and
/// the bounded loop of kernels without it (`walk_chunk_bounded`).
#[inline(always)]
fn chunk_visit(c: &mut Chunk, lane: usize) -> i64 {
    if c.busy == 0 {
        return 1;
    }
    let l = c.lanes[lane];
    if l.i == IDLE {
        return 0;
    }
    if l.i == NEW {
        assign(c, lane);
        return 0;
    }
    let bucket = c.start + l.i;
    let addr = next_addr(c, &l);
    let ahead = c.ahead[lane];
    let value = if l.have != 0 {
        c.lanes[lane].have = 0;
        Ok(l.have)
    } else if ahead != 0 {
        Ok(ahead)
    } else {
        read::<u64>(addr)
    };
    let next = match value {
        Ok(v) if v != 0 => v,
        // An unreadable node or a NULL link: not a table we can trust.
        _ => {
            finish(c, lane, l.len, false, false);
            return 0;
        }
    };
    if is_marker(next) {
        if next >> 1 == bucket as u64 {
            finish(c, lane, l.len, true, false);
        } else if l.tries < MAX_TRIES {
            // The walk left its chain (an entry was moved or freed and
            // reused meanwhile): walk this bucket again.
            let l = &mut c.lanes[lane];
            l.tries += 1;
            l.node = 0;
            l.have = 0;
            l.len = 0;
        } else {
            finish(c, lane, l.len, false, false);
        }
        return 0;
    }
    if l.len + 1 >= CHAIN_CAP {
        finish(c, lane, CHAIN_CAP, true, true);
        return 0;
    }
    c.gather.record(next, l.i, l.tries);
    let l = &mut c.lanes[lane];
    l.len += 1;
    l.node = next;
    0
}

/// Resets `WALK_OUT` for a chunk run; returns the buckets to walk, or
/// `None` when there are none (nothing readable, or past the end).
#[inline(always)]
fn chunk_begin(base: u64, size: u32, start: u32, count: u32) -> Option<u32> {
    let out = WALK_OUT.get_ptr_mut(0)?;
    // SAFETY: map value pointer from a successful lookup.
    let out = unsafe { &mut *out };
    out.start = start;
    out.done = 0;
    out.nodes = 0;
    out.restarts = 0;
    out.unverified = 0;
    out.truncated = 0;
    let count = count.min(WALK_CHUNK).min(size.saturating_sub(start));
    if base == 0 || count == 0 {
        return None;
    }
    Some(count)
}

impl Chunk {
    /// A chunk walk with `lanes` (at most [`LANES`]) chains at a time.
    #[inline(always)]
    fn new(base: u64, start: u32, count: u32, holders: bool, lanes: u32) -> Self {
        let mut c = Chunk {
            base,
            start,
            count,
            next: 0,
            busy: lanes,
            batch_start: 0,
            batch_len: 0,
            lanes: [Lane {
                node: 0,
                have: 0,
                i: NEW,
                len: 0,
                tries: 0,
                _pad: 0,
            }; LANES],
            ahead: [0; LANES],
            gather: Gather::new(holders),
        };
        for (n, l) in c.lanes.iter_mut().enumerate() {
            if n as u32 >= lanes {
                l.i = IDLE;
            }
        }
        c
    }
}

/// Publishes how far the chunk got: lanes take buckets in order, so every
/// bucket below the lowest one still in a lane is complete: that is `done`.
#[inline(always)]
fn chunk_end(c: &Chunk) {
    c.gather.finish();
    let mut done = c.next;
    for l in c.lanes {
        if l.i < done {
            done = l.i;
        }
    }
    if let Some(out) = WALK_OUT.get_ptr_mut(0) {
        // SAFETY: map value pointer from a successful lookup.
        unsafe { (*out).done = done };
    }
}

/// Walks buckets `start .. start + count` (at most [`WALK_CHUNK`]) of the
/// table at `base` and writes their chain lengths to `WALK_OUT`. When the
/// iteration budget runs out, `done` says how far it got.
/// With `holders`, each entry is also recorded (holders.rs).
pub fn walk_chunk(base: u64, size: u32, start: u32, count: u32, holders: bool) {
    let Some(count) = chunk_begin(base, size, start, count) else {
        return;
    };
    // The chunk lives in a map value, not on the stack: the verifier tracks
    // stack contents exactly and followed each combination of the lanes'
    // states (~0.4 s and ~270 MB of kernel memory charged to ctscope's
    // cgroup at every start, more than a container's limit), while map
    // contents are unknown values to it (13 ms, 16 MB).
    let Some(mut cp) = WALK_STATE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: map value pointer from a successful lookup; test runs of the
    // walker do not overlap (userspace runs them one at a time).
    let c = unsafe { &mut *cp };
    *c = Chunk::new(base, start, count, holders, LANES as u32);
    // SAFETY: chunk_step has the bpf_loop callback signature and `cp`
    // outlives the call (bpf_loop's context must be on the stack).
    unsafe {
        bpf_loop(
            CHUNK_BUDGET,
            chunk_step as *mut c_void,
            &raw mut cp as *mut c_void,
            0,
        )
    };
    // SAFETY: as above.
    chunk_end(unsafe { &*cp });
}

/// Chains walked side by side by the bounded walk: each lane's steps are
/// verified one by one, so fewer lanes keep the program small.
const BOUNDED_LANES: usize = 2;

/// The chunk being walked: `walk_chunk`'s for the length of its run, the
/// bounded walk's between its passes.
#[map]
static WALK_STATE: Array<Chunk> = Array::with_max_entries(1, 0);

/// `walk_chunk` for kernels without `bpf_loop` (before 5.17): the same
/// steps ([`chunk_visit`]) in bounded loops of [`WALK_PASS_STEPS`], one
/// pass per test run, with the chunk's state kept in `WALK_STATE` between
/// passes. `resume` 0 starts the chunk, 1 continues it. Each pass
/// publishes `done` as `walk_chunk` does. Returns 1 while lanes still have
/// buckets (another pass is needed), else 0.
///
/// Between passes no RCU read lock is held, so a node a lane stopped at
/// may be freed (or the table resized) before the next pass: reads stay
/// safe (`bpf_probe_read_kernel`), and a chain that left its bucket ends
/// in another bucket's marker and is walked again, as within one run.
pub fn walk_chunk_bounded(
    base: u64,
    size: u32,
    start: u32,
    count: u32,
    holders: bool,
    resume: bool,
) -> i32 {
    let Some(c) = WALK_STATE.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: map value pointer from a successful lookup; test runs of
    // this program do not overlap (userspace runs them one at a time).
    let c = unsafe { &mut *c };
    if !resume {
        let Some(count) = chunk_begin(base, size, start, count) else {
            return 0;
        };
        *c = Chunk::new(base, start, count, holders, BOUNDED_LANES as u32);
    }
    for i in 0..WALK_PASS_STEPS {
        if chunk_visit(c, (i as usize) & (BOUNDED_LANES - 1)) != 0 {
            break;
        }
    }
    chunk_end(c);
    (c.busy != 0) as i32
}

/// State of a one-bucket walk that lists the entries.
#[repr(C)]
struct Listing {
    base: u64,
    node: u64,
    bucket: u32,
    len: u32,
    listed: u32,
    verified: u32,
}

/// Copies what `ctscope buckets` shows of the entry behind `node`.
#[inline(always)]
fn describe(node: u64, n: &mut ChainNode) {
    let dir: u8 = member(node, conf!(th_tuple) + conf!(tup_dst_dir)).unwrap_or(0) & 1;
    let ct = node - conf!(ct_tuplehash) as u64 - dir as u64 * conf!(th_sizeof) as u64;
    n.ct = ct;
    n.dir = dir;
    kernel::ct_tuple(ct, &mut n.tuple);
    n.status = member(ct, conf!(ct_status)).unwrap_or(0);
    n.timeout = member(ct, conf!(ct_timeout)).unwrap_or(0);
    n.netns = kernel::net_inum(kernel::ct_net(ct));
    n.mark = member(ct, conf!(ct_mark)).unwrap_or(0);
    n.zone = member(ct, conf!(ct_zone)).unwrap_or(0);
    n.tcp_state = member(ct, conf!(ct_tcp_state)).unwrap_or(0);
}

extern "C" fn list_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer to our stack struct.
    list_visit(unsafe { &mut *(ctx as *mut Listing) })
}

/// One node of a listing; returns 1 to stop. Shared by `walk_bucket` and
/// `walk_bucket_bounded`.
#[inline(always)]
fn list_visit(l: &mut Listing) -> i64 {
    let addr = if l.node == 0 {
        head(l.base, l.bucket)
    } else {
        l.node + conf!(hn_next) as u64
    };
    let Ok(next) = read::<u64>(addr) else {
        return 1;
    };
    if next == 0 {
        return 1;
    }
    if is_marker(next) {
        l.verified = (next >> 1 == l.bucket as u64) as u32;
        return 1;
    }
    if l.listed < MAX_BUCKET_ENTRIES
        && let Some(out) = BUCKET_OUT.get_ptr_mut(0)
    {
        // SAFETY: map value pointer from a successful lookup.
        let out = unsafe { &mut *out };
        // Read again (volatile) so that the mask stays: LLVM drops it after
        // the bound check above, and the 5.10 verifier does not carry that
        // check's range to the index ("unbounded memory access").
        // SAFETY: a read of our own field.
        let listed = unsafe { core::ptr::read_volatile(&raw const l.listed) };
        let i = (listed & (MAX_BUCKET_ENTRIES - 1)) as usize;
        describe(next, &mut out.nodes[i]);
        l.listed += 1;
    }
    l.len += 1;
    l.node = next;
    (l.len >= CHAIN_CAP) as i64
}

/// Resets `BUCKET_OUT` for a listing; false when there is nothing to
/// walk (`base` 0 is how userspace reads the clocks alone).
#[inline(always)]
fn bucket_begin(base: u64, size: u32, bucket: u32) -> bool {
    let Some(out) = BUCKET_OUT.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: map value pointer from a successful lookup.
    let out = unsafe { &mut *out };
    // SAFETY: helpers without preconditions.
    out.jiffies = unsafe { bpf_jiffies64() };
    out.ktime_ns = unsafe { bpf_ktime_get_ns() };
    out.bucket = bucket;
    out.len = 0;
    out.listed = 0;
    out.verified = 0;
    base != 0 && bucket < size
}

#[inline(always)]
fn bucket_end(l: &Listing) {
    if let Some(out) = BUCKET_OUT.get_ptr_mut(0) {
        // SAFETY: map value pointer from a successful lookup.
        let out = unsafe { &mut *out };
        out.len = l.len;
        out.listed = l.listed;
        out.verified = l.verified;
    }
}

impl Listing {
    #[inline(always)]
    fn new(base: u64, bucket: u32) -> Self {
        Listing {
            base,
            node: 0,
            bucket,
            len: 0,
            listed: 0,
            verified: 0,
        }
    }
}

/// Lists the entries on the chain of `bucket` into `BUCKET_OUT`.
pub fn walk_bucket(base: u64, size: u32, bucket: u32) {
    if !bucket_begin(base, size, bucket) {
        return;
    }
    let mut l = Listing::new(base, bucket);
    // SAFETY: callback signature and context as bpf_loop requires.
    unsafe {
        bpf_loop(
            CHAIN_CAP + 1,
            list_step as *mut c_void,
            &raw mut l as *mut c_void,
            0,
        )
    };
    bucket_end(&l);
}

/// The bounded listing between passes.
#[map]
static LIST_STATE: Array<Listing> = Array::with_max_entries(1, 0);

/// `walk_bucket` for kernels without `bpf_loop`: [`list_visit`] in bounded
/// loops of [`LIST_PASS_STEPS`], one pass per test run (`resume` as in
/// [`walk_chunk_bounded`]). Returns 1 while the chain goes on, else 0.
pub fn walk_bucket_bounded(base: u64, size: u32, bucket: u32, resume: bool) -> i32 {
    let Some(l) = LIST_STATE.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: map value pointer from a successful lookup; test runs do not
    // overlap.
    let l = unsafe { &mut *l };
    if !resume {
        if !bucket_begin(base, size, bucket) {
            return 0;
        }
        *l = Listing::new(base, bucket);
    }
    let mut more = 1;
    for _ in 0..LIST_PASS_STEPS {
        if list_visit(l) != 0 {
            more = 0;
            break;
        }
    }
    bucket_end(l);
    more
}

/// State of the bounded walk the drop probe makes.
#[repr(C)]
struct Count {
    node: u64,
    bucket: u64,
    len: u32,
    verified: u32,
}

extern "C" fn count_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer to our stack struct.
    let c = unsafe { &mut *(ctx as *mut Count) };
    match read::<u64>(c.node + conf!(hn_next) as u64) {
        Ok(next) if is_marker(next) => {
            c.verified = (next >> 1 == c.bucket) as u32;
            1
        }
        Ok(next) if next != 0 => {
            c.len += 1;
            c.node = next;
            0
        }
        _ => 1,
    }
}

/// Longest walk of the drop probe: past the kernel's largest limit
/// (MIN_CHAINLEN 50 + MAX_CHAINLEN 30 since 6.3).
const DROP_WALK: u32 = 80;

/// Classifies a confirm failure. `__nf_conntrack_alloc` saved the raw
/// 32-bit hash of the original tuple in the reply node's `pprev`, and
/// `__nf_conntrack_confirm` puts the entry in bucket
/// `reciprocal_scale(hash, nf_conntrack_htable_size)` and gives up with
/// `chaintoolong` once `chainlen++ > max_chainlen` (a random 50-79 since
/// 6.3), i.e. on a chain of at least MIN_CHAINLEN + 2 nodes. The reply
/// direction's bucket needs the secret hash seed, so a failure there is
/// inferred from the longest chain of the latest walk (docs/drop-causes.md).
pub fn confirm_failure(ct: u64) -> ChainVerdict {
    let Some(table) = TABLE.get(0).copied() else {
        return ChainVerdict::Unknown;
    };
    let live = conf!(size_ptr);
    let size = if live == 0 {
        table.size
    } else {
        read::<u32>(live).unwrap_or(0)
    };
    let limit = conf!(chain_min) + 2;
    let long_elsewhere = table_has_long_chains(&table, limit);
    if table.base == 0 || size == 0 || size != table.size {
        return if long_elsewhere {
            ChainVerdict::LongElsewhere
        } else {
            ChainVerdict::Unknown
        };
    }
    let hash: u64 = member(ct, conf!(ct_tuplehash) + conf!(th_sizeof) + conf!(hn_pprev))
        .unwrap_or(0)
        & 0xffff_ffff;
    let bucket = (hash * size as u64) >> 32;
    let mut c = Count {
        // The head acts as a node whose `next` is at offset 0.
        node: head(table.base, bucket as u32) - conf!(hn_next) as u64,
        bucket,
        len: 0,
        verified: 0,
    };
    // SAFETY: callback signature and context as bpf_loop requires.
    unsafe {
        bpf_loop(
            DROP_WALK,
            count_step as *mut c_void,
            &raw mut c as *mut c_void,
            0,
        )
    };
    if c.len >= limit {
        ChainVerdict::TooLong
    } else if long_elsewhere {
        ChainVerdict::LongElsewhere
    } else {
        ChainVerdict::Short
    }
}

#[inline(always)]
fn table_has_long_chains(table: &TableInfo, limit: u32) -> bool {
    table.base != 0 && table.max_chain >= limit
}
