//! Finding the conntrack hash table, whose address (`nf_conntrack_hash`) is
//! a data symbol missing from kallsyms on kernels without
//! CONFIG_KALLSYMS_ALL. Both locators are attached only while userspace
//! looks for the table, and only propose an address: userspace accepts it
//! after a walk in which every chain ended in its own marker (walk.rs).
//! Where kallsyms lists it (and the entry locator, a `bpf_loop`, cannot
//! load), `locate_sym` reads the pointer instead.

use core::ffi::c_void;

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, generated::bpf_loop};
use conntrack_common::{Located, located, setting};

use crate::{
    kernel::{conf, member, read},
    maps::{LOCATED, SETTINGS},
    walk::is_marker,
};

/// Nodes followed when locating the table from an entry.
const LOCATE_STEPS: u32 = 4096;

/// `kfree(ptr)` in ctscope's own thread group while `SETTINGS[LOCATE_TGID]`
/// is set: when ctscope closes /proc/net/nf_conntrack, `seq_release_net`
/// frees the iterator state, `struct ct_iter_state`, whose `hash` and
/// `htable_size` `ct_seq_start` copied from `nf_conntrack_hash` and
/// `nf_conntrack_htable_size` (net/netfilter/nf_conntrack_standalone.c).
/// Other frees in that thread give garbage candidates; the size check and
/// userspace's validation walk reject them.
pub fn locate_seq(ptr: u64) {
    let want = SETTINGS.get(setting::LOCATE_TGID).copied().unwrap_or(0);
    if want == 0 || (bpf_get_current_pid_tgid() >> 32) as u32 != want || ptr == 0 {
        return;
    }
    let (Some(hash), Some(size)) = (
        member::<u64>(ptr, conf!(iter_hash)),
        member::<u32>(ptr, conf!(iter_size)),
    ) else {
        return;
    };
    let live = conf!(size_ptr);
    let live_size = if live == 0 {
        size
    } else {
        read::<u32>(live).unwrap_or(0)
    };
    // Kernel addresses are in the upper half; heads are 8-byte aligned.
    if size == 0 || size != live_size || hash >> 63 == 0 || hash & 7 != 0 {
        return;
    }
    record(Located {
        base: hash,
        entry: 0,
        size,
        how: located::SEQ_FILE,
    });
}

/// Reads the table's address from the `nf_conntrack_hash` pointer at
/// `hash_sym` and its size from `nf_conntrack_htable_size` at `size_sym`
/// (0: unknown), both from kallsyms. Userspace validates the address with
/// a walk, as for the other locators.
pub fn locate_sym(hash_sym: u64, size_sym: u64) {
    if hash_sym == 0 {
        return;
    }
    let Ok(hash) = read::<u64>(hash_sym) else {
        return;
    };
    let size = if size_sym == 0 {
        0
    } else {
        read::<u32>(size_sym).unwrap_or(0)
    };
    // Kernel addresses are in the upper half; heads are 8-byte aligned.
    if hash >> 63 == 0 || hash & 7 != 0 {
        return;
    }
    record(Located {
        base: hash,
        entry: 0,
        size,
        how: located::SYMBOL,
    });
}

fn record(found: Located) {
    if let Some(p) = LOCATED.get_ptr_mut(0) {
        // SAFETY: map value pointer from a successful lookup.
        unsafe { *p = found };
    }
}

#[repr(C)]
struct Forward {
    node: u64,
    marker: u64,
}

/// Follows `next` to the chain's nulls marker.
extern "C" fn forward_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer to our stack struct.
    let f = unsafe { &mut *(ctx as *mut Forward) };
    match read::<u64>(f.node + conf!(hn_next) as u64) {
        Ok(next) if is_marker(next) => {
            f.marker = next;
            1
        }
        Ok(next) if next != 0 => {
            f.node = next;
            0
        }
        _ => 1,
    }
}

#[repr(C)]
struct Backward {
    slot: u64,
    head: u64,
}

/// Follows `pprev` back until it points at a bucket head. `pprev` of a node
/// points at the previous node's `next` (the node itself: `next` is its
/// first member) or at the head. A slot `p` is a node, not a head, when its
/// own `pprev` `q = *(p + 8)` is even and `*q == p` (kernel-notes.md); for a
/// head, `p + 8` is the next bucket's head, whose value is a marker or a
/// node whose `next` never points at a head.
extern "C" fn backward_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer to our stack struct.
    let b = unsafe { &mut *(ctx as *mut Backward) };
    let Ok(p) = read::<u64>(b.slot + conf!(hn_pprev) as u64) else {
        return 1;
    };
    if p == 0 || p & 7 != 0 || read::<u64>(p) != Ok(b.slot) {
        // Unlinked meanwhile (pprev is LIST_POISON2 or NULL).
        return 1;
    }
    let is_node = match read::<u64>(p + 8) {
        Ok(q) if q != 0 && !is_marker(q) => read::<u64>(q) == Ok(p),
        _ => false,
    };
    if is_node {
        b.slot = p;
        0
    } else {
        b.head = p;
        1
    }
}

/// Derives the table's address from a live, confirmed entry: the marker at
/// the end of its original-direction chain gives the bucket `b`, the walk
/// back along `pprev` gives `&hash[b]`, so the table is at `&hash[b] - 8b`.
pub fn locate_from_entry(ct: u64) {
    let status: u64 = member(ct, conf!(ct_status)).unwrap_or(0);
    if status & (1 << (conf!(ips_confirmed_bit) & 63)) == 0 {
        return;
    }
    let node = ct + conf!(ct_tuplehash) as u64;
    let mut f = Forward { node, marker: 0 };
    // SAFETY: callback signature and context as bpf_loop requires.
    unsafe {
        bpf_loop(
            LOCATE_STEPS,
            forward_step as *mut c_void,
            &raw mut f as *mut c_void,
            0,
        )
    };
    if f.marker == 0 {
        return;
    }
    let bucket = f.marker >> 1;
    let mut b = Backward {
        slot: node,
        head: 0,
    };
    // SAFETY: callback signature and context as bpf_loop requires.
    unsafe {
        bpf_loop(
            LOCATE_STEPS,
            backward_step as *mut c_void,
            &raw mut b as *mut c_void,
            0,
        )
    };
    if b.head == 0 || b.head < 8 * bucket {
        return;
    }
    record(Located {
        base: b.head - 8 * bucket,
        entry: ct,
        size: 0,
        how: located::ENTRY,
    });
}
