//! The userspace half of a walk with holders on: reads what each
//! `walk_chunk` run recorded (`HOLDERS_OUT`, conntrack-ebpf holders.rs),
//! keeps the records of the buckets the run completed, decodes the raw
//! tuples with the running kernel's offsets and counts them
//! (model/holders.rs).

use aya::maps::{Array, MapData};
use conntrack_common::{Config, HolderChunk, HolderRec, WALK_CHUNK};

use super::WalkError;
use crate::model::holders::{HolderEntry, HoldersBuilder, state_code};

/// Where the fields of `struct nf_conntrack_tuple` are (from BTF).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TupleOffsets {
    pub src_u3: u32,
    pub dst_u3: u32,
    pub dst_port: u32,
    pub l3num: u32,
    pub protonum: u32,
}

impl TupleOffsets {
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            src_u3: cfg.tup_src_u3,
            dst_u3: cfg.tup_dst_u3,
            dst_port: cfg.tup_dst_port,
            l3num: cfg.tup_l3num,
            protonum: cfg.tup_protonum,
        }
    }
}

fn bytes<const N: usize>(t: &[u8; 40], off: u32) -> [u8; N] {
    let mut out = [0u8; N];
    let off = off as usize;
    if let Some(src) = t.get(off..off + N) {
        out.copy_from_slice(src);
    }
    out
}

/// Decodes one record. `jiffies` is when the run started, `hz` the tick
/// rate.
pub fn decode(rec: &HolderRec, offs: &TupleOffsets, jiffies: u64, hz: u32) -> HolderEntry {
    let t = &rec.tuple;
    let family = u16::from_ne_bytes(bytes(t, offs.l3num)) as u8;
    let proto = bytes::<1>(t, offs.protonum)[0];
    let mut src: [u8; 16] = bytes(t, offs.src_u3);
    let mut dst: [u8; 16] = bytes(t, offs.dst_u3);
    if family != 10 {
        src[4..].fill(0);
        dst[4..].fill(0);
    }
    // nf_ct_expires(): a confirmed entry's timeout is absolute, in the low
    // 32 bits of jiffies (nfct_time_stamp).
    let left = rec.timeout.wrapping_sub(jiffies as u32) as i32;
    HolderEntry {
        netns: rec.netns,
        family,
        proto,
        state: state_code(proto, rec.tcp_state, rec.status),
        src,
        dst,
        dport: u16::from_be_bytes(bytes(t, offs.dst_port)),
        timeout_s: left / hz.max(1) as i32,
    }
}

/// Keeps the records of buckets below `done` from the last walk of each,
/// and returns how far the run's results can be trusted: `done`, or less
/// when an entry below it found no room (the next run starts there).
/// `missed` counts buckets whose entries could not all be recorded (only
/// when a single chain overflows the buffer at the start of a run).
pub fn take(
    out: &Array<MapData, HolderChunk>,
    offs: &TupleOffsets,
    hz: u32,
    done: u32,
    builder: &mut HoldersBuilder,
) -> Result<u32, WalkError> {
    let chunk = out.get(&0, 0)?;
    let mut done = done;
    if chunk.lost_from < done {
        if chunk.lost_from > 0 {
            done = chunk.lost_from;
        } else {
            builder.add_missed(1);
        }
    }
    let recs = &chunk.recs[..(chunk.len as usize).min(chunk.recs.len())];
    for e in kept(recs, done) {
        builder.add(&decode(e, offs, chunk.jiffies, hz));
    }
    Ok(done)
}

/// The records of buckets below `done`, each bucket's from its last walk
/// only (a chain walked again repeats its entries).
fn kept(recs: &[HolderRec], done: u32) -> impl Iterator<Item = &HolderRec> {
    let mut last = vec![0u8; WALK_CHUNK as usize];
    for r in recs {
        if let Some(t) = last.get_mut(usize::from(r.bucket)) {
            *t = (*t).max(r.tries);
        }
    }
    recs.iter().filter(move |r| {
        u32::from(r.bucket) < done && last.get(usize::from(r.bucket)) == Some(&r.tries)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offs() -> TupleOffsets {
        // x86_64 6.18: src.u3 0, src.u 16, src.l3num 18, dst.u3 20,
        // dst.u 36, dst.protonum 38, dst.dir 39.
        TupleOffsets {
            src_u3: 0,
            dst_u3: 20,
            dst_port: 36,
            l3num: 18,
            protonum: 38,
        }
    }

    fn rec(bucket: u16, tries: u8, dport: u16) -> HolderRec {
        let mut tuple = [0u8; 40];
        tuple[..4].copy_from_slice(&[10, 0, 0, 1]);
        tuple[18..20].copy_from_slice(&2u16.to_ne_bytes());
        tuple[20..24].copy_from_slice(&[10, 0, 0, 2]);
        tuple[36..38].copy_from_slice(&dport.to_be_bytes());
        tuple[38] = 6;
        HolderRec {
            tuple,
            timeout: 1000 + 250 * 60,
            netns: 42,
            status: 0,
            bucket,
            tries,
            tcp_state: 3,
        }
    }

    #[test]
    fn decodes_a_raw_tuple() {
        let e = decode(&rec(0, 0, 9000), &offs(), 1000, 250);
        assert_eq!(e.family, 2);
        assert_eq!(e.proto, 6);
        assert_eq!(&e.dst[..4], &[10, 0, 0, 2]);
        assert_eq!(&e.src[..4], &[10, 0, 0, 1]);
        assert_eq!(e.dport, 9000);
        assert_eq!(e.timeout_s, 60);
        assert_eq!(e.state, 3);
        assert_eq!(e.netns, 42);
        // Expired, awaiting the garbage collector: negative.
        assert_eq!(
            decode(&rec(0, 0, 1), &offs(), 1000 + 250 * 61, 250).timeout_s,
            -1
        );
    }

    #[test]
    fn only_completed_buckets_and_their_last_walk_count() {
        let recs = [
            rec(0, 0, 1),
            rec(1, 0, 2), // bucket 1 walked again: this one is stale
            rec(1, 1, 3),
            rec(2, 0, 4),
            rec(5, 0, 5), // beyond `done`
        ];
        let ports: Vec<u16> = kept(&recs, 5)
            .map(|r| u16::from_be_bytes([r.tuple[36], r.tuple[37]]))
            .collect();
        assert_eq!(ports, vec![1, 3, 4]);
    }
}
