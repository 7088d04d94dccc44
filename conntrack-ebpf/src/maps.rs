//! Maps shared with userspace, and the small operations on them.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    bindings::{
        BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE,
    },
    macros::map,
    maps::{Array, PerCpuArray, PerCpuHashMap, RingBuf},
};
use conntrack_common::{
    BucketEntries, CT_IMAGE, Discovery, Event, HolderChunk, Located, MAX_SYSCTLS, NetnsCounters,
    NetnsList, ResolveBatch, SysctlSlot, TableInfo, WalkChunk, counter, setting,
};

use crate::kernel;

/// Events for userspace. The loader sizes it (`--ring-size`); a full ring is
/// counted in `COUNTERS[LOST_EVENTS]`, never silently.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 << 20, 0);

/// Machine-wide counters, one slot per CPU so the probes never contend.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Counters per network namespace, by its key (`kernel::netns_key`).
/// Userspace deletes the entries of namespaces that are gone.
#[map]
pub static NETNS: PerCpuHashMap<u64, NetnsCounters> = PerCpuHashMap::with_max_entries(8192, 0);

/// The kernel's list of namespaces as `sample_netns` last read it.
#[map]
pub static NETNS_LIST: Array<NetnsList> = Array::with_max_entries(1, 0);

/// Entries for `resolve_ct` to read, and what it read.
#[map]
pub static RESOLVE: Array<ResolveBatch> = Array::with_max_entries(1, 0);

/// Runtime settings written by userspace, indexed by `conntrack_common::setting`.
#[map]
pub static SETTINGS: Array<u32> = Array::with_max_entries(setting::COUNT, 0);

/// Output of the discovery programs.
#[map]
pub static DISCOVERY: Array<Discovery> = Array::with_max_entries(1, 0);

/// The conntrack sysctl table, copied at discovery.
#[map]
pub static SYSCTLS: Array<SysctlSlot> = Array::with_max_entries(MAX_SYSCTLS, 0);

/// Chain lengths of the latest `walk_chunk` run.
#[map]
pub static WALK_OUT: Array<WalkChunk> = Array::with_max_entries(1, 0);

/// A batch of bucket heads read at once by `walk_chunk` (walk.rs).
#[map]
pub static HEADS: Array<[u64; 512]> = Array::with_max_entries(1, 0);

/// Entries of the chain the latest `walk_bucket` run listed.
#[map]
pub static BUCKET_OUT: Array<BucketEntries> = Array::with_max_entries(1, 0);

/// Entries the latest `walk_chunk` run with holders on found (holders.rs).
#[map]
pub static HOLDERS_OUT: Array<HolderChunk> = Array::with_max_entries(1, 0);

/// The latest candidate address of the hash table from the locators.
#[map]
pub static LOCATED: Array<Located> = Array::with_max_entries(1, 0);

/// What the latest pass of a bounded program (legacy.rs) says next: the
/// raw tracepoint macro of aya-ebpf 0.2 returns 0 whatever the function
/// returns, so a test run's return value cannot carry it.
#[map]
pub static PASS_RESULT: Array<u32> = Array::with_max_entries(1, 0);

/// The hash table as userspace last validated it, for the drop probe.
#[map]
pub static TABLE: Array<TableInfo> = Array::with_max_entries(1, 0);

/// Adds one to a machine-wide counter that only one program writes (the
/// kernel never runs a program nested in itself on a CPU, so a plain add
/// cannot lose an increment).
#[inline(always)]
pub fn count(index: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot from a successful lookup.
        unsafe { *p += 1 };
    }
}

/// Adds one to a counter that several programs write: one can interrupt
/// another on the same CPU (a probe on a slab free, then a drop in the
/// softirq run at the end of the interrupt), so the add must be atomic.
#[inline(always)]
pub fn count_shared(index: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot from a successful lookup, 8-byte aligned.
        // The BPF target's AtomicU64 has no fetch_add; the intrinsic
        // compiles to the BPF atomic add instruction.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, 1) };
    }
}

/// Whether userspace asked for events of this class (`setting::EVENTS_*`).
#[inline(always)]
pub fn wanted(class: u32) -> bool {
    SETTINGS
        .get(setting::EVENTS)
        .is_some_and(|mask| mask & class != 0)
}

/// The flag for submitting an event: no wake-up of the reader while the
/// ring is less than an eighth full, since the reader drains it on its own
/// timer (conntrack-user/src/source/live.rs, POLL_EVERY); a wake-up per
/// event would cost the load an irq_work and a context switch each.
#[inline(always)]
pub fn wake_flag() -> u64 {
    let size = EVENTS.query(u64::from(BPF_RB_RING_SIZE));
    if EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) >= size / 8 {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

/// Sends an event, counting it as lost when the ring buffer is full.
#[inline(always)]
pub fn emit(ev: &Event) {
    if EVENTS.output::<Event>(ev, wake_flag()).is_err() {
        count_shared(counter::LOST_EVENTS);
    }
}

/// Whether to send the details of a drop whose per-CPU counter is `index`.
#[inline(always)]
pub fn sampled(index: u32) -> bool {
    let rate = SETTINGS.get(setting::DROP_SAMPLE).copied().unwrap_or(1);
    if rate <= 1 {
        return true;
    }
    match COUNTERS.get(index) {
        Some(n) => *n % rate as u64 == 0,
        None => true,
    }
}

/// Initial value for a namespace seen for the first time. A static (in the
/// object's read-only data) rather than a stack value: the drop probe is
/// close to the 512-byte stack limit.
static ZERO_NETNS: NetnsCounters = NetnsCounters {
    inum: 0,
    _pad: 0,
    alloc: 0,
    free: 0,
    drops: [0; conntrack_common::cause::COUNT],
};

/// Adds one to field `field` of the counters of namespace `net` (a
/// `struct net` address), viewed as `[u64]` after the inode number. Each
/// program adds to its own fields (allocations, frees, drops), so a plain
/// add on this CPU's copy cannot lose an increment.
#[inline(always)]
pub fn netns_add(net: u64, field: u32) {
    const FIELDS: u32 = (core::mem::size_of::<NetnsCounters>() / 8 - 1) as u32;
    if field >= FIELDS {
        return;
    }
    let key = kernel::netns_key(net);
    let p = match NETNS.get_ptr_mut(key) {
        Some(p) => p,
        None => {
            // Fails harmlessly if another CPU created it first.
            #[expect(
                clippy::needless_borrows_for_generic_args,
                reason = "pass the static's address, not a stack copy"
            )]
            let _ = NETNS.insert(key, &ZERO_NETNS, BPF_NOEXIST as u64);
            match NETNS.get_ptr_mut(key) {
                Some(p) => p,
                None => {
                    count_shared(counter::NETNS_OVERFLOW);
                    return;
                }
            }
        }
    };
    // SAFETY: per-CPU value from a successful lookup, `field` in bounds.
    unsafe {
        if (*p).inum == 0 {
            (*p).inum = kernel::net_inum(net);
        }
        *(p as *mut u64).add(1 + field as usize) += 1;
    }
}

/// Per-CPU scratch events, one slot per program so that a probe interrupted
/// by another on the same CPU keeps its own: the 112-byte event does not fit
/// on the BPF stack next to everything else the drop probe holds.
#[map]
pub static SCRATCH: PerCpuArray<Event> = PerCpuArray::with_max_entries(scratch::COUNT, 0);

/// Slots of [`SCRATCH`], one per program that builds an event there: a
/// program never nests in itself on a CPU, but one program can interrupt
/// another.
pub mod scratch {
    pub const DROP: u32 = 0;
    pub const FREE: u32 = 1;
    /// The kprobe backend's allocation return probe.
    pub const ALLOC: u32 = 2;
    pub const COUNT: u32 = 3;
}

/// This CPU's scratch event for a program, zeroed.
#[inline(always)]
pub fn scratch_event(slot: u32) -> Option<&'static mut Event> {
    let p = SCRATCH.get_ptr_mut(slot)?;
    // SAFETY: per-CPU map value; only this program uses this slot on this
    // CPU, and BPF recursion protection keeps it from nesting with itself.
    let ev = unsafe { &mut *p };
    *ev = Event::default();
    Some(ev)
}

/// Per-CPU copies of conntrack entries, by [`scratch`] slot like
/// [`SCRATCH`]: the entry an event describes is read in one helper call
/// (`kernel::ct_event`), and 512 bytes do not fit on the BPF stack.
#[map]
pub static IMAGES: PerCpuArray<[u8; CT_IMAGE]> = PerCpuArray::with_max_entries(scratch::COUNT, 0);

/// This CPU's entry copy for a program (not zeroed: `CtImage::read`
/// overwrites what it reads and nothing reads past that).
#[inline(always)]
pub fn scratch_image(slot: u32) -> Option<&'static mut [u8; CT_IMAGE]> {
    let p = IMAGES.get_ptr_mut(slot)?;
    // SAFETY: as in `scratch_event`.
    Some(unsafe { &mut *p })
}

/// Index of the `alloc` field of `NetnsCounters` viewed as `[u64]` after
/// the inode number.
pub const NS_ALLOC: u32 = 0;
/// Index of the `free` field.
pub const NS_FREE: u32 = 1;
/// Index of the first drop counter; causes follow in order.
pub const NS_DROP_FIRST: u32 = 2;
