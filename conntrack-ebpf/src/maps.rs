//! Maps shared with userspace, and the small operations on them.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns, generated::bpf_for_each_map_elem},
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use conntrack_common::{
    BucketEntries, Discovery, Event, Located, MAX_SYSCTLS, NetnsCounters, Pending, SysctlSlot,
    TableInfo, WalkChunk, counter, kind, setting,
};

use crate::kernel;

/// Events for userspace. The loader sizes it (`--ring-size`); a full ring is
/// counted in `COUNTERS[LOST_EVENTS]`, never silently.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 << 20, 0);

/// Machine-wide counters, one slot per CPU so the probes never contend.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Counters per network namespace inode.
#[map]
pub static NETNS: PerCpuHashMap<u32, NetnsCounters> = PerCpuHashMap::with_max_entries(8192, 0);

/// Allocations waiting for their namespace, keyed by entry address. Sized
/// for about a second of the fastest allocation rate measured here; the
/// resolver empties it several times a second.
#[map]
pub static PENDING: HashMap<u64, Pending> = HashMap::with_max_entries(1 << 17, 0);

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

/// The latest candidate address of the hash table from the locators.
#[map]
pub static LOCATED: Array<Located> = Array::with_max_entries(1, 0);

/// The hash table as userspace last validated it, for the drop probe.
#[map]
pub static TABLE: Array<TableInfo> = Array::with_max_entries(1, 0);

/// Adds one to a machine-wide counter.
#[inline(always)]
pub fn count(index: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot from a successful lookup; nothing else on this
        // CPU runs this program concurrently.
        unsafe { *p += 1 };
    }
}

/// Whether userspace asked for events of this class (`setting::EVENTS_*`).
#[inline(always)]
pub fn wanted(class: u32) -> bool {
    SETTINGS
        .get(setting::EVENTS)
        .is_some_and(|mask| mask & class != 0)
}

/// Sends an event, counting it as lost when the ring buffer is full.
#[inline(always)]
pub fn emit(ev: &Event) {
    if EVENTS.output::<Event>(ev, 0).is_err() {
        count(counter::LOST_EVENTS);
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
    alloc: 0,
    free: 0,
    drops: [0; conntrack_common::cause::COUNT],
};

/// Adds one to field `field` of a namespace's counters (viewed as `[u64; 7]`).
#[inline(always)]
pub fn netns_add(netns: u32, field: u32) {
    const FIELDS: u32 = (core::mem::size_of::<NetnsCounters>() / 8) as u32;
    if field >= FIELDS {
        return;
    }
    let p = match NETNS.get_ptr_mut(netns) {
        Some(p) => p,
        None => {
            // Fails harmlessly if another CPU created it first.
            #[expect(
                clippy::needless_borrows_for_generic_args,
                reason = "pass the static's address, not a stack copy"
            )]
            let _ = NETNS.insert(netns, &ZERO_NETNS, BPF_NOEXIST as u64);
            match NETNS.get_ptr_mut(netns) {
                Some(p) => p,
                None => {
                    count(counter::NETNS_OVERFLOW);
                    return;
                }
            }
        }
    };
    // SAFETY: per-CPU value from a successful lookup, `field` in bounds.
    unsafe { *(p as *mut u64).add(field as usize) += 1 };
}

/// Per-CPU scratch events, one slot per program so that a probe interrupted
/// by another on the same CPU keeps its own: the 112-byte event does not fit
/// on the BPF stack next to everything else the drop probe holds.
#[map]
pub static SCRATCH: PerCpuArray<Event> = PerCpuArray::with_max_entries(scratch::COUNT, 0);

/// Slots of [`SCRATCH`].
pub mod scratch {
    pub const DROP: u32 = 0;
    pub const FREE: u32 = 1;
    pub const RESOLVE: u32 = 2;
    /// The backup probes' slots (see `running`): they run while the main
    /// probe is suspended mid-event on the same CPU.
    pub const DROP_NESTED: u32 = 3;
    pub const FREE_NESTED: u32 = 4;
    pub const COUNT: u32 = 5;
}

/// CPUs the `RUNNING` flags cover (CPU numbers are masked to stay in bounds;
/// beyond this, CPUs would share flags).
const FLAG_CPUS: u32 = 8192;

/// Which probe is running on which CPU, one byte each, in the object's
/// .bss: written on every run, so a plain global rather than a map lookup.
#[unsafe(no_mangle)]
static mut RUNNING: [u8; 3 * FLAG_CPUS as usize] = [0; 3 * FLAG_CPUS as usize];

/// Probes with a backup (`running` flags).
pub mod running {
    pub const ALLOC: u32 = 0;
    pub const FREE: u32 = 1;
    pub const DROP: u32 = 2;
}

#[inline(always)]
fn running_slot(probe: u32) -> *mut u8 {
    // SAFETY: helper without preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() } & (FLAG_CPUS - 1);
    let index = (probe % 3) * FLAG_CPUS + cpu;
    // SAFETY: index < 3 * FLAG_CPUS, inside the array.
    unsafe { (&raw mut RUNNING).cast::<u8>().add(index as usize) }
}

/// Marks `probe` as running (or not) on this CPU.
#[inline(always)]
pub fn set_running(probe: u32, on: bool) {
    // SAFETY: in-bounds byte of a global only BPF programs touch.
    unsafe { core::ptr::write_volatile(running_slot(probe), u8::from(on)) };
}

/// Whether `probe` is running on this CPU: a backup probe that sees this
/// was invoked from inside it (an interrupt nested in the probe), where the
/// kernel skips the main probe.
#[inline(always)]
pub fn is_running(probe: u32) -> bool {
    // SAFETY: in-bounds byte of a global only BPF programs touch.
    unsafe { core::ptr::read_volatile(running_slot(probe)) != 0 }
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

/// Entries younger than this may still be inside `__nf_conntrack_alloc`,
/// with `ct_net` not yet written; they wait for the next round.
const MIN_AGE_NS: u64 = 1_000_000;

/// Index of the `alloc` field of `NetnsCounters` viewed as `[u64; 7]`.
pub const NS_ALLOC: u32 = 0;
/// Index of the `free` field.
pub const NS_FREE: u32 = 1;
/// Index of the first drop counter; causes follow in order.
pub const NS_DROP_FIRST: u32 = 2;

pub fn for_each_pending() {
    // SAFETY: PENDING is a hash map and `resolve_one` has the callback
    // signature bpf_for_each_map_elem requires.
    unsafe {
        bpf_for_each_map_elem(
            &raw const PENDING as *mut c_void,
            resolve_one as *mut c_void,
            core::ptr::null_mut(),
            0,
        )
    };
}

extern "C" fn resolve_one(
    _map: *mut c_void,
    key: *const u64,
    value: *const Pending,
    _ctx: *mut c_void,
) -> i64 {
    // SAFETY: the kernel passes valid key and value pointers.
    let (ct, alloc_ts_ns) = unsafe { (*key, (*value).alloc_ts_ns) };
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if now.wrapping_sub(alloc_ts_ns) < MIN_AGE_NS || !kernel::ct_published(ct) {
        return 0;
    }
    let netns = kernel::ct_netns(ct);
    // The element may have been freed and its address reused since the
    // iteration reached it; only the allocation we read is resolved here.
    // SAFETY: value pointer from a successful lookup.
    let current = PENDING.get_ptr(ct).map(|p| unsafe { (*p).alloc_ts_ns });
    if current != Some(alloc_ts_ns) {
        return 0;
    }
    if PENDING.remove(ct).is_ok() {
        count(counter::RESOLVED);
        netns_add(netns, NS_ALLOC);
        if wanted(setting::EVENTS_CT)
            && let Some(ev) = scratch_event(scratch::RESOLVE)
        {
            kernel::ct_event(ct, kind::ALLOC, ev);
            ev.alloc_ts_ns = alloc_ts_ns;
            emit(ev);
        }
    }
    0
}
