//! What `ctscope holders` needs from each entry the table walk passes
//! (walk.rs, `walk_chunk` with holders on): who holds the table.
//!
//! Per node the walk already reads the `next` link; with holders on it also
//! copies the node's `struct nf_conntrack_tuple` as it is (40 bytes, one
//! read, mostly the same cache line as the link) and stops there for reply
//! nodes (`dst.dir` = 1: each entry is linked twice). For the original node
//! it adds three reads of the entry: `timeout` (next to the node), `ct_net`
//! (the namespace's inode number is read again only when `ct_net` changes),
//! and the TCP state or, for other protocols, the status bits. Grouping and
//! counting happen in userspace (conntrack-user model/holders.rs).

use core::ffi::c_void;

use aya_ebpf::helpers::{bpf_jiffies64, generated::bpf_probe_read_kernel};
use conntrack_common::{HOLDER_CAP, HOLDER_SOFT_CAP};

use crate::{
    kernel::{self, conf, member},
    maps::HOLDERS_OUT,
};

/// IPPROTO_TCP.
const TCP: u8 = 6;

/// The holders part of one chunk walk, on the stack with it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Gather {
    /// 1: record entries; 0: a plain walk (nothing below runs).
    pub on: u32,
    /// Records kept so far.
    len: u32,
    /// Lowest bucket with an entry that found no room; `u32::MAX`: none.
    lost_from: u32,
    /// The namespace of the last entry recorded (most neighbours share it).
    inum: u32,
    net: u64,
}

impl Gather {
    pub fn new(on: bool) -> Self {
        if on && let Some(out) = HOLDERS_OUT.get_ptr_mut(0) {
            // SAFETY: map value pointer from a successful lookup; helper
            // without preconditions.
            unsafe { (*out).jiffies = bpf_jiffies64() };
        }
        Self {
            on: on as u32,
            len: 0,
            lost_from: u32::MAX,
            inum: 0,
            net: 0,
        }
    }

    /// No new bucket should be started: the records left are kept for the
    /// chains already under way.
    #[inline(always)]
    pub fn full(&self) -> bool {
        self.on != 0 && self.len >= HOLDER_SOFT_CAP
    }

    /// Records the entry behind `node` if it is the entry's original
    /// direction. `bucket` is the index within the chunk.
    #[inline(always)]
    pub fn record(&mut self, node: u64, bucket: u32, tries: u32) {
        if self.on == 0 {
            return;
        }
        let Some(out) = HOLDERS_OUT.get_ptr_mut(0) else {
            return;
        };
        let tuple = node + conf!(th_tuple) as u64;
        if self.len >= HOLDER_CAP {
            let dir: u8 = member(tuple, conf!(tup_dst_dir)).unwrap_or(0);
            if dir & 1 == 0 && bucket < self.lost_from {
                self.lost_from = bucket;
            }
            return;
        }
        // SAFETY: map value pointer from a successful lookup; the index is
        // masked into the array.
        let rec = unsafe { &mut (*out).recs[(self.len & (HOLDER_CAP - 1)) as usize] };
        // SAFETY: the destination is 40 bytes of the map value; the helper
        // checks the source.
        let ret = unsafe {
            bpf_probe_read_kernel(
                rec.tuple.as_mut_ptr() as *mut c_void,
                40,
                tuple as *const c_void,
            )
        };
        if ret != 0 {
            return;
        }
        let dir = rec
            .tuple
            .get(conf!(tup_dst_dir) as usize)
            .copied()
            .unwrap_or(1);
        if dir & 1 != 0 {
            // The reply node: the slot is reused by the next entry.
            return;
        }
        let ct = node - conf!(ct_tuplehash) as u64;
        rec.timeout = member(ct, conf!(ct_timeout)).unwrap_or(0);
        let net: u64 = member(ct, conf!(ct_net)).unwrap_or(0);
        if net != self.net {
            self.net = net;
            self.inum = kernel::net_inum(net);
        }
        rec.netns = self.inum;
        let proto = rec
            .tuple
            .get(conf!(tup_protonum) as usize)
            .copied()
            .unwrap_or(0);
        if proto == TCP {
            rec.tcp_state = member(ct, conf!(ct_tcp_state)).unwrap_or(0);
            rec.status = 0;
        } else {
            rec.tcp_state = 0;
            rec.status = member(ct, conf!(ct_status)).unwrap_or(0);
        }
        rec.bucket = bucket as u16;
        rec.tries = tries as u8;
        self.len += 1;
    }

    /// Publishes the count of records and the first bucket that lost one.
    #[inline(always)]
    pub fn finish(&self) {
        if self.on == 0 {
            return;
        }
        if let Some(out) = HOLDERS_OUT.get_ptr_mut(0) {
            // SAFETY: map value pointer from a successful lookup.
            unsafe {
                (*out).len = self.len;
                (*out).lost_from = self.lost_from;
            }
        }
    }
}
