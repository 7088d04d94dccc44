//! Reading kernel structures: conntrack entries, packets' namespaces, and the
//! start-up discovery walks. All offsets come from `CONFIG`.

use core::ffi::c_void;

use aya_ebpf::helpers::{
    bpf_get_current_task, bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_kernel_buf,
    bpf_probe_read_kernel_str_bytes, generated::bpf_loop,
};
use conntrack_common::{
    CT_IMAGE, ChainNode, Config, Discovery, Event, MAX_SYSCTLS, SysctlSlot, Tuple,
    classify::{Attached, ChainVerdict, DropFacts, Entry, Fill, Freer, InsertEvidence},
    flag,
};

use crate::maps::{DISCOVERY, SYSCTLS};

/// Filled in by the loader before the programs are verified; the zero value
/// here is never used (the loader refuses to run without a complete config).
#[unsafe(no_mangle)]
pub static CONFIG: Config = unsafe { core::mem::zeroed() };

/// Reads one `CONFIG` field. The volatile read stops the compiler from
/// folding the zero initialiser; the verifier then sees the loaded constant.
macro_rules! conf {
    ($field:ident) => {
        // SAFETY: CONFIG is a plain static; reading a field is always valid.
        unsafe { core::ptr::read_volatile(&raw const $crate::kernel::CONFIG.$field) }
    };
}
pub(crate) use conf;

/// Marker for a struct member the running kernel does not have.
const ABSENT: u32 = u32::MAX;

/// `bpf_probe_read_kernel` of a `T` at a kernel address.
///
/// The destination starts zeroed (the helper zeroes it on failure too):
/// with an uninitialised one, LLVM may read the slot on the failure path
/// as well and discard the value (`unwrap_or`), which verifiers before
/// about 5.19 refuse ("invalid read from stack"; seen on 5.10).
#[inline(always)]
pub fn read<T>(addr: u64) -> Result<T, i32> {
    let mut v = core::mem::MaybeUninit::<T>::zeroed();
    // SAFETY: the destination is `size_of::<T>()` bytes of our stack; the
    // helper validates the source and fails cleanly.
    let ret = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            v.as_mut_ptr() as *mut c_void,
            core::mem::size_of::<T>() as u32,
            addr as *const c_void,
        )
    };
    if ret == 0 {
        // SAFETY: zeroed, then written by the helper: initialised for the
        // plain-data types read here.
        Ok(unsafe { v.assume_init() })
    } else {
        Err(ret as i32)
    }
}

/// Reads a member at `base + off`, or `None` when the member is absent.
#[inline(always)]
pub(crate) fn member<T>(base: u64, off: u32) -> Option<T> {
    if off == ABSENT || base == 0 {
        return None;
    }
    read::<T>(base + off as u64).ok()
}

/// Reads the original-direction tuple of a conntrack entry.
#[inline(always)]
pub(crate) fn ct_tuple(ct: u64, t: &mut Tuple) {
    let base = ct + conf!(ct_tuplehash) as u64 + conf!(th_tuple) as u64;
    t.src = read(base + conf!(tup_src_u3) as u64).unwrap_or([0; 16]);
    t.dst = read(base + conf!(tup_dst_u3) as u64).unwrap_or([0; 16]);
    t.sport = u16::from_be(read(base + conf!(tup_src_port) as u64).unwrap_or(0));
    t.dport = u16::from_be(read(base + conf!(tup_dst_port) as u64).unwrap_or(0));
    t.family = read::<u16>(base + conf!(tup_l3num) as u64).unwrap_or(0) as u8;
    t.proto = read(base + conf!(tup_protonum) as u64).unwrap_or(0);
}

/// A conntrack entry copied whole by one `bpf_probe_read_kernel`: reading
/// its fields one helper call each (fourteen for a tuple, namespace, status,
/// mark, zone and TCP state) was most of what `resolve_ct` cost.
pub struct CtImage<'a> {
    raw: &'a [u8; CT_IMAGE],
    len: usize,
}

impl<'a> CtImage<'a> {
    /// Copies the entry at `ct` into `raw`; `None` when the kernel's entry
    /// is larger than `CT_IMAGE` or the copy fails (read it field by field).
    /// The copy runs upwards, so the refcount (first member) is read before
    /// `ct_net`, as `ct_published` requires.
    #[inline(always)]
    pub fn read(ct: u64, raw: &'a mut [u8; CT_IMAGE]) -> Option<Self> {
        let len = conf!(ct_size) as usize;
        if ct == 0 || len == 0 || len > CT_IMAGE {
            return None;
        }
        let dst = raw.get_mut(..len)?;
        // SAFETY: the helper validates the source and fails cleanly.
        unsafe { bpf_probe_read_kernel_buf(ct as *const u8, dst) }.ok()?;
        Some(Self { raw, len })
    }

    /// The member at `off`, or `None` when absent (`ABSENT`) or outside the
    /// copy. The constant bound is what the verifier checks the access by.
    #[inline(always)]
    pub fn get<T: Copy>(&self, off: u32) -> Option<T> {
        let off = off as usize;
        let size = core::mem::size_of::<T>();
        if off > CT_IMAGE - size || off + size > self.len {
            return None;
        }
        // SAFETY: `off + size` is within `raw` (checked above); the read is
        // unaligned-safe.
        Some(unsafe { core::ptr::read_unaligned(self.raw.as_ptr().add(off).cast::<T>()) })
    }

    /// The original-direction tuple, as `ct_tuple` reads it from the kernel.
    #[inline(always)]
    pub fn tuple(&self, t: &mut Tuple) {
        let base = conf!(ct_tuplehash) + conf!(th_tuple);
        t.src = self.get(base + conf!(tup_src_u3)).unwrap_or([0; 16]);
        t.dst = self.get(base + conf!(tup_dst_u3)).unwrap_or([0; 16]);
        t.sport = u16::from_be(self.get(base + conf!(tup_src_port)).unwrap_or(0));
        t.dport = u16::from_be(self.get(base + conf!(tup_dst_port)).unwrap_or(0));
        t.family = self.get::<u16>(base + conf!(tup_l3num)).unwrap_or(0) as u8;
        t.proto = self.get(base + conf!(tup_protonum)).unwrap_or(0);
    }

    /// Whether `init_conntrack` has published it (see `ct_published`).
    #[inline(always)]
    pub fn published(&self) -> bool {
        self.get::<u32>(conf!(ct_use)).is_some_and(|refs| refs != 0)
    }

    /// `ct_net`.
    #[inline(always)]
    pub fn net(&self) -> u64 {
        self.get(conf!(ct_net)).unwrap_or(0)
    }

    /// Tuple, status, mark, zone, timeout and TCP state, as `ct_tuple` and
    /// `member` would read them from the kernel.
    #[inline(always)]
    pub fn describe(&self, n: &mut ChainNode) {
        self.tuple(&mut n.tuple);
        n.status = self.get::<u64>(conf!(ct_status)).unwrap_or(0) as u32;
        n.timeout = self.get(conf!(ct_timeout)).unwrap_or(0);
        n.mark = self.get(conf!(ct_mark)).unwrap_or(0);
        n.zone = self.get(conf!(ct_zone)).unwrap_or(0);
        n.tcp_state = self.get(conf!(ct_tcp_state)).unwrap_or(0);
    }
}

/// The `struct net` a conntrack entry belongs to (0 if unreadable).
#[inline(always)]
pub fn ct_net(ct: u64) -> u64 {
    member(ct, conf!(ct_net)).unwrap_or(0)
}

/// A namespace's key in the per-namespace map and in events: its
/// `net_cookie`, which the kernel never reuses within a boot (unlike the
/// inode number), or, where the kernel generates the cookie lazily (before
/// 5.12, so it may still be 0), the address of its `struct net`. 0 if
/// unknown.
#[inline(always)]
pub fn netns_key(net: u64) -> u64 {
    if net == 0 {
        return 0;
    }
    if conf!(netns_key_is_addr) != 0 {
        return net;
    }
    member::<u64>(net, conf!(net_cookie)).unwrap_or(0)
}

/// Whether `init_conntrack` has published the entry: it writes `ct_net`,
/// issues `smp_wmb()`, then sets the refcount from 0 to 1. Until then the
/// slab object may still hold a previous entry's `ct_net` (the cache is
/// SLAB_TYPESAFE_BY_RCU), which would attribute the allocation to the
/// wrong namespace. An entry that never gets there is attributed when it
/// is freed.
#[inline(always)]
pub fn ct_published(ct: u64) -> bool {
    member::<u32>(ct, conf!(ct_use)).is_some_and(|refs| refs != 0)
}

/// Fills a (zeroed) event describing a conntrack entry: namespace, tuple,
/// zone, mark, status. With `raw`, the entry is copied there in one helper
/// call and read from the copy (a field at a time costs thirteen calls, most
/// of what `record` paid per freed entry); without it, or when the copy
/// fails, field by field.
#[inline(always)]
pub fn ct_event(ct: u64, kind: u8, ev: &mut Event, raw: Option<&mut [u8; CT_IMAGE]>) {
    let image = raw.and_then(|raw| CtImage::read(ct, raw));
    // From the one copy, or (an entry larger than the copy) field by field.
    let (status, net): (u64, u64) = match &image {
        Some(img) => {
            ev.mark = img.get(conf!(ct_mark)).unwrap_or(0);
            ev.zone = img.get(conf!(ct_zone)).unwrap_or(0);
            img.tuple(&mut ev.tuple);
            (img.get(conf!(ct_status)).unwrap_or(0), img.net())
        }
        None => {
            ev.mark = member(ct, conf!(ct_mark)).unwrap_or(0);
            ev.zone = member(ct, conf!(ct_zone)).unwrap_or(0);
            ct_tuple(ct, &mut ev.tuple);
            (member(ct, conf!(ct_status)).unwrap_or(0), ct_net(ct))
        }
    };
    ev.flags = flag::HAS_CT;
    if status & (1 << (conf!(ips_confirmed_bit) & 63)) != 0 {
        ev.flags |= flag::CONFIRMED;
    }
    ev.netns = net_inum(net);
    ev.netns_id = netns_key(net);
    if ev.netns == 0 {
        ev.flags |= flag::NO_NETNS;
    }
    // SAFETY: helpers without preconditions.
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.cpu = unsafe { bpf_get_smp_processor_id() };
    ev.ct = ct;
    ev.kind = kind;
    ev.status = status as u32;
}

/// The network namespace a dropped packet belongs to, and its interface.
///
/// `skb->dev` is not set yet for locally generated packets at LOCAL_OUT (it
/// is assigned in ip_output), so fall back to the socket, then to the route's
/// device.
#[inline(always)]
pub fn skb_net(skb: u64, ev: &mut Event) -> u64 {
    let mut dev: u64 = member(skb, conf!(skb_dev)).unwrap_or(0);
    if dev == 0 {
        let refdst: u64 = member(skb, conf!(skb_refdst)).unwrap_or(0);
        // SKB_DST_NOREF is bit 0 of _skb_refdst (include/linux/skbuff.h).
        dev = member(refdst & !1, conf!(dst_dev)).unwrap_or(0);
    }
    if dev != 0 {
        ev.ifindex = member(dev, conf!(dev_ifindex)).unwrap_or(0);
        ev.ifname = member(dev, conf!(dev_name)).unwrap_or([0; 16]);
        if let Some(net) = member::<u64>(dev, conf!(dev_net))
            && net != 0
        {
            return net;
        }
    }
    let sk: u64 = member(skb, conf!(skb_sk)).unwrap_or(0);
    member(sk, conf!(sk_net)).unwrap_or(0)
}

/// Inode number of a `struct net` (0 if unreadable).
#[inline(always)]
pub fn net_inum(net: u64) -> u32 {
    member::<u32>(net, conf!(net_inum)).unwrap_or(0)
}

/// `struct nf_conntrack_net` of a namespace: `net_generic(net, id)`, or
/// the namespace itself where the count is in `struct net` (`cnet_in_net`).
#[inline(always)]
pub fn cnet_of(net: u64) -> u64 {
    // Before 5.13 the count is `net->ct.count` (no users offsets then).
    if conf!(cnet_in_net) != 0 {
        return net;
    }
    let id = conf!(cnet_id);
    if id == 0 || net == 0 {
        return 0;
    }
    let generic: u64 = member(net, conf!(net_gen)).unwrap_or(0);
    let len: u32 = member(generic, conf!(gen_len)).unwrap_or(0);
    if id >= len {
        return 0;
    }
    member(generic, conf!(gen_ptr) + 8 * id).unwrap_or(0)
}

#[inline(always)]
fn in_range(addr: u64, lo: u64, hi: u64) -> bool {
    lo != 0 && addr >= lo && addr < hi
}

#[inline(always)]
fn bit(status: u64, bit: u32) -> bool {
    status & (1 << (bit & 63)) != 0
}

/// Who freed the packet, from `kfree_skb`'s `location`. Where the address
/// of `nf_hook_slow` is unknown, every drop is taken to be a hook's.
#[inline(always)]
pub(crate) fn freer(location: u64) -> Freer {
    if in_range(location, conf!(loc_nft_lo), conf!(loc_nft_hi)) {
        Freer::NftChain
    } else if conf!(loc_hook_lo) == 0 || in_range(location, conf!(loc_hook_lo), conf!(loc_hook_hi))
    {
        Freer::HookSlow
    } else {
        Freer::Elsewhere
    }
}

/// Why netfilter dropped this packet: gathers what the pure
/// `conntrack_common::classify::classify` needs (docs/drop-causes.md) and
/// fills the event's entry fields on the way. The hash chain is walked
/// only when it decides (and `chain_walk` allows), and the kprobe
/// backend's evidence is asked for only then too.
#[inline(always)]
pub fn classify(skb: u64, net: u64, location: u64, ev: &mut Event, chain_walk: bool) -> u8 {
    let nfct: u64 = member(skb, conf!(skb_nfct)).unwrap_or(0);
    let ct = nfct & !7;
    let ctinfo = (nfct & 7) as u32;
    let mut facts = DropFacts {
        freer: freer(location),
        attached: Attached::Nothing,
        fill: Fill::Unknown,
        conntrack_in_use: None,
        refused: None,
        insert: InsertEvidence::Unknown,
        chain: ChainVerdict::Unknown,
        nat_refused: false,
        hook: ev.hook,
        proto: ev.tuple.proto,
        icmp_type: (ev.tuple.dport >> 8) as u8,
        nft_frees_own_drops: conf!(nft_frees_own_drops) != 0,
    };
    if ct == 0 {
        if nfct != 0 && ctinfo == conf!(ip_ct_untracked) {
            facts.attached = Attached::Untracked;
        } else if conntrack_common::classify::needs_users(facts.freer) {
            let cnet = cnet_of(net);
            if conntrack_common::classify::needs_fill(facts.freer) {
                facts.fill = fill(cnet);
            }
            let users_off = if ev.tuple.family == 10 {
                conf!(cnet_users6)
            } else {
                conf!(cnet_users4)
            };
            if cnet != 0 {
                facts.conntrack_in_use = member::<u32>(cnet, users_off).map(|users| users != 0);
            }
            if facts.freer == Freer::HookSlow {
                facts.refused = crate::kprobe::refused(ev);
            }
        }
        return conntrack_common::classify::classify(&facts);
    }
    ev.ct = ct;
    ev.flags |= flag::HAS_CT;
    let status: u64 = member(ct, conf!(ct_status)).unwrap_or(0);
    ev.status = status as u32;
    ev.mark = member(ct, conf!(ct_mark)).unwrap_or(0);
    ev.zone = member(ct, conf!(ct_zone)).unwrap_or(0);
    let confirmed = bit(status, conf!(ips_confirmed_bit));
    if confirmed {
        ev.flags |= flag::CONFIRMED;
    }
    if bit(status, conf!(ips_template_bit)) {
        facts.attached = Attached::Untracked;
        return conntrack_common::classify::classify(&facts);
    }
    // Never linked into the table: ORIGINAL hnnode.pprev is still the NULL
    // that __nf_conntrack_alloc wrote. Before 6.16 (2d72afb34065) confirm
    // set IPS_CONFIRMED before the failing checks, so that bit alone does
    // not tell.
    let pprev: u64 = member(ct, conf!(ct_tuplehash) + conf!(hn_pprev)).unwrap_or(1);
    let related = ctinfo == conf!(ip_ct_related) || ctinfo == conf!(ip_ct_related_reply);
    let src_nat = bit(status, conf!(ips_src_nat_done_bit));
    let dst_nat = bit(status, conf!(ips_dst_nat_done_bit));
    facts.attached = Attached::Entry(Entry {
        // Before 6.16 a failed confirm had set IPS_CONFIRMED already: an
        // entry never linked is not confirmed, whatever the bit says.
        confirmed: confirmed && pprev != 0,
        linked: pprev != 0,
        dying: bit(status, conf!(ips_dying_bit)),
        related,
        nat_half_done: src_nat != dst_nat,
    });
    // Only an ICMP error carries a RELATED entry into NAT's translation
    // (nf_nat_ipv4_fn): other drops never look for NAT's refusal. One that
    // NAT refused is located at the function that refused it.
    if related && facts.freer == Freer::HookSlow && crate::kprobe::nat_refused(skb) {
        facts.nat_refused = true;
        if conf!(loc_nat_icmp) != 0 {
            ev.location = conf!(loc_nat_icmp);
        }
    }
    if conntrack_common::classify::needs_chain(&facts) {
        facts.insert = crate::kprobe::insert_evidence(skb, ct);
    }
    // Without bpf_loop (before 5.17) the chain is not walked: the kprobe
    // backend's confirm probe tells the failures apart, and before 5.15
    // the kernel has no chain limit at all.
    if chain_walk && conntrack_common::classify::needs_chain(&facts) {
        facts.chain = crate::walk::confirm_failure(ct);
    }
    conntrack_common::classify::classify(&facts)
}

/// The namespace's count and `nf_conntrack_max`, as far as readable.
#[inline(always)]
fn fill(cnet: u64) -> Fill {
    let max_ptr = conf!(max_ptr);
    if cnet == 0 || max_ptr == 0 {
        return Fill::Unknown;
    }
    Fill::Read {
        count: member::<i32>(cnet, conf!(cnet_count)).unwrap_or(0),
        max: read::<i32>(max_ptr).unwrap_or(0),
        slack: conf!(full_slack),
    }
}

/// Upper bound on the kmem_caches walked at discovery.
const MAX_CACHES: u32 = 4096;

/// "nf_conntrack\0" as two little-endian words: bytes 0..8 and 8..13.
const NAME_LO: u64 = u64::from_le_bytes(*b"nf_connt");
const NAME_HI: u64 = u64::from_le_bytes(*b"rack\0\0\0\0");
const NAME_HI_MASK: u64 = 0x00ff_ffff_ffff;

fn is_conntrack_cache(cache: u64) -> bool {
    let name: u64 = member(cache, conf!(kc_name)).unwrap_or(0);
    matches!(
        (read::<u64>(name), read::<u64>(name + 8)),
        (Ok(lo), Ok(hi)) if lo == NAME_LO && hi & NAME_HI_MASK == NAME_HI
    )
}

/// State of the kmem_cache list walk, on the stack for `bpf_loop`.
#[repr(C)]
struct CacheWalk {
    start: u64,
    node: u64,
    found: u64,
    walked: u32,
    _pad: u32,
}

/// One step of the walk along `kmem_cache.list` (mm/slab.h); returns 1 to stop.
extern "C" fn cache_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer to our stack struct.
    let w = unsafe { &mut *(ctx as *mut CacheWalk) };
    let Ok(next) = read::<u64>(w.node) else {
        return 1;
    };
    if next == 0 || next == w.start {
        return 1;
    }
    w.walked += 1;
    let cache = next - conf!(kc_list) as u64;
    if is_conntrack_cache(cache) {
        w.found = cache;
        return 1;
    }
    w.node = next;
    0
}

pub fn discover_cache(first: u64) {
    let Some(d) = DISCOVERY.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: map value pointer from a successful lookup.
    let d: &mut Discovery = unsafe { &mut *d };
    if d.cache_walk_done != 0 || first == 0 {
        return;
    }
    let start = first + conf!(kc_list) as u64;
    let mut walk = CacheWalk {
        start,
        node: start,
        found: 0,
        walked: 0,
        _pad: 0,
    };
    // SAFETY: cache_step has the bpf_loop callback signature and `walk`
    // outlives the call.
    unsafe {
        bpf_loop(
            MAX_CACHES,
            cache_step as *mut c_void,
            &raw mut walk as *mut c_void,
            0,
        )
    };
    // The walk stops before comparing the cache it started from.
    if walk.found == 0 && is_conntrack_cache(first) {
        walk.found = first;
    }
    d.ct_cache = walk.found;
    d.caches_walked = walk.walked;
    d.cache_walk_done = 1;
}

/// Upper bound on `net_generic` slots scanned.
const MAX_GENERIC: u32 = 512;

#[repr(C)]
struct GenericScan {
    generic: u64,
    len: u32,
    id: u32,
    found: u64,
}

/// Checks `net_generic` slot `index`: is it a `struct nf_conntrack_net`, i.e.
/// does its `ecache.dwork.work.func` point at `ecache_work`?
extern "C" fn generic_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer to our stack struct.
    let s = unsafe { &mut *(ctx as *mut GenericScan) };
    let id = index as u32;
    if id >= s.len {
        return 1;
    }
    let p: u64 = member(s.generic, conf!(gen_ptr) + 8 * id).unwrap_or(0);
    if p != 0 && member::<u64>(p, conf!(cnet_ecache_func)) == Some(conf!(ecache_work)) {
        s.id = id;
        s.found = p;
        return 1;
    }
    0
}

#[repr(C)]
struct SysctlCopy {
    table: u64,
    size: u32,
    copied: u32,
}

/// Copies entry `index` of the conntrack sysctl table into `SYSCTLS`.
extern "C" fn sysctl_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer to our stack struct.
    let c = unsafe { &mut *(ctx as *mut SysctlCopy) };
    let i = index as u32;
    if i >= c.size || c.table == 0 {
        return 1;
    }
    let Some(slot) = SYSCTLS.get_ptr_mut(i) else {
        return 1;
    };
    // SAFETY: map value pointer from a successful lookup.
    let slot: &mut SysctlSlot = unsafe { &mut *slot };
    let entry = c.table + index * conf!(ctl_sizeof) as u64;
    slot.data = member(entry, conf!(ctl_data)).unwrap_or(0);
    slot.value = if slot.data == 0 {
        0
    } else {
        read(slot.data).unwrap_or(0)
    };
    let name: u64 = member(entry, conf!(ctl_procname)).unwrap_or(0);
    // Before 6.6 the header has no size and the table ends with an entry
    // whose procname is NULL (kernel/sysctl.c, register_sysctl_table).
    if name == 0 {
        return 1;
    }
    // SAFETY: the helper checks the kernel address.
    if unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, &mut slot.procname) }.is_err() {
        slot.procname = [0; 32];
    }
    c.copied += 1;
    0
}

pub fn discover_net() {
    let Some(d) = DISCOVERY.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: map value pointer from a successful lookup.
    let d: &mut Discovery = unsafe { &mut *d };
    // SAFETY: helper without preconditions.
    let task = unsafe { bpf_get_current_task() };
    let nsproxy: u64 = member(task, conf!(task_nsproxy)).unwrap_or(0);
    let net: u64 = member(nsproxy, conf!(nsproxy_net)).unwrap_or(0);
    let generic: u64 = member(net, conf!(net_gen)).unwrap_or(0);
    let mut scan = GenericScan {
        generic,
        len: member(generic, conf!(gen_len)).unwrap_or(0),
        id: 0,
        found: 0,
    };
    if generic != 0 && conf!(ecache_work) != 0 {
        // SAFETY: callback signature and context as bpf_loop requires.
        unsafe {
            bpf_loop(
                MAX_GENERIC,
                generic_step as *mut c_void,
                &raw mut scan as *mut c_void,
                0,
            )
        };
    }
    d.cnet_id = scan.id;
    d.cnet = scan.found;
    let header: u64 = member(scan.found, conf!(cnet_sysctl_header)).unwrap_or(0);
    let mut copy = SysctlCopy {
        table: member(header, conf!(hdr_table)).unwrap_or(0),
        size: member(header, conf!(hdr_size)).unwrap_or(MAX_SYSCTLS),
        copied: 0,
    };
    // SAFETY: callback signature and context as bpf_loop requires.
    unsafe {
        bpf_loop(
            MAX_SYSCTLS,
            sysctl_step as *mut c_void,
            &raw mut copy as *mut c_void,
            0,
        )
    };
    d.sysctl_count = copy.copied;
}
