//! The on-disk layout: the preamble, frame headers and each record's payload.
//! docs/trace-format.md is the prose version of this file; keep them in step.
//!
//! Everything is little-endian. Frames carry a CRC-32 (IEEE, as in gzip and
//! PNG) over their header fields and payload, so a damaged frame is detected
//! and the reader can find the next intact one by its marker.

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use conntrack_common::{Event, Tuple};
use serde::{Deserialize, Serialize};

use crate::{
    event::{Counters, NetnsSample, Sample},
    kernel::{netns::NetnsReading, sysctl::Sysctls},
};

/// First 8 bytes of every trace file. Like PNG's signature, the high-bit
/// first byte and the final newline catch transfers that mangle bytes.
pub const MAGIC: [u8; 8] = *b"\x89CTRACE\n";
/// The version this ctscope writes. It reads this one and
/// [`FORMAT_VERSION_1`].
pub const FORMAT_VERSION: u16 = 2;
/// Format 1 (ctscope 0.1): 112-byte events, namespaces by inode number only.
pub const FORMAT_VERSION_1: u16 = 1;
/// Preamble: magic, version (u16), flags (u16), CRC-32 of the first 12 bytes.
pub const PREAMBLE_LEN: usize = 16;
/// Preamble flag: the body is a sequence of zstd frames.
pub const FLAG_ZSTD: u16 = 1;

/// First 4 bytes of every frame (`C7 54 46 1A`).
pub const FRAME_MARKER: [u8; 4] = [0xC7, b'T', b'F', 0x1A];
/// Frame header: marker, payload length (u32), type (u8), flags (u8),
/// reserved (u16, zero), sequence number (u32), timestamp (u64), CRC-32 (u32).
pub const FRAME_HEADER_LEN: usize = 28;
/// Largest payload a reader accepts; a larger length field is damage.
pub const MAX_PAYLOAD: u32 = 64 << 20;
/// Size of one encoded event (the kernel's `struct Event`).
pub const EVENT_LEN: usize = 128;
/// Size of an event in format 1 (no `netns_id`, no `location`).
pub const EVENT_LEN_V1: usize = 112;

/// Size of one event in a file of this format version.
pub fn event_len(version: u16) -> usize {
    if version == FORMAT_VERSION_1 {
        EVENT_LEN_V1
    } else {
        EVENT_LEN
    }
}
/// Size of a LOST payload.
pub const LOST_LEN: usize = 40;

/// Record types (the frame header's type byte).
pub mod rtype {
    pub const HEADER: u8 = 1;
    pub const SNAPSHOT: u8 = 2;
    pub const EVENTS: u8 = 3;
    pub const LOST: u8 = 4;
    pub const BUCKETS: u8 = 5;
    pub const END: u8 = 6;
}

/// Frame flags.
pub mod fflag {
    /// On a SNAPSHOT: a copy of the previous part's latest snapshot, written
    /// at the start of a rotated part so the part can be replayed alone.
    /// Readers that read the parts in sequence skip it.
    pub const BASELINE: u8 = 1;
}

/// Record type by name, for messages.
pub fn rtype_name(t: u8) -> &'static str {
    match t {
        rtype::HEADER => "header",
        rtype::SNAPSHOT => "snapshot",
        rtype::EVENTS => "events",
        rtype::LOST => "lost",
        rtype::BUCKETS => "buckets",
        rtype::END => "end",
        _ => "unknown",
    }
}

pub fn crc32(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

pub fn encode_preamble(compressed: bool) -> [u8; PREAMBLE_LEN] {
    let mut p = [0u8; PREAMBLE_LEN];
    p[..8].copy_from_slice(&MAGIC);
    p[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    let flags = if compressed { FLAG_ZSTD } else { 0 };
    p[10..12].copy_from_slice(&flags.to_le_bytes());
    let crc = crc32(&[&p[..12]]);
    p[12..16].copy_from_slice(&crc.to_le_bytes());
    p
}

/// A frame header as read from the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub rtype: u8,
    pub flags: u8,
    pub reserved: u16,
    pub seq: u32,
    pub ts_ns: u64,
    pub crc: u32,
}

impl FrameHeader {
    /// Parses the fixed header; `None` if the marker is not there.
    pub fn parse(b: &[u8]) -> Option<Self> {
        if b.len() < FRAME_HEADER_LEN || b[..4] != FRAME_MARKER {
            return None;
        }
        let mut r = &b[4..FRAME_HEADER_LEN];
        Some(Self {
            len: r.get_u32_le(),
            rtype: r.get_u8(),
            flags: r.get_u8(),
            reserved: r.get_u16_le(),
            seq: r.get_u32_le(),
            ts_ns: r.get_u64_le(),
            crc: r.get_u32_le(),
        })
    }

    /// Whether the fields can belong to a frame this version wrote: used to
    /// reject most false markers before reading a payload.
    pub fn plausible(&self) -> bool {
        self.len <= MAX_PAYLOAD && self.reserved == 0
    }

    /// Whether the CRC matches the header fields and `payload`.
    pub fn checks(&self, header: &[u8], payload: &[u8]) -> bool {
        crc32(&[&header[4..24], payload]) == self.crc
    }
}

/// Appends the header of a frame carrying `payload` (its CRC covers the
/// payload) but not the payload, which follows it in the file: the writer
/// sends a large payload from where it was encoded instead of copying it
/// behind the header.
pub fn encode_frame_header(
    out: &mut BytesMut,
    rtype: u8,
    flags: u8,
    seq: u32,
    ts_ns: u64,
    payload: &[u8],
) {
    let start = out.len();
    out.reserve(FRAME_HEADER_LEN);
    out.put_slice(&FRAME_MARKER);
    // Payloads are bounded by the writer (event batches, JSON snapshots).
    out.put_u32_le(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    out.put_u8(rtype);
    out.put_u8(flags);
    out.put_u16_le(0);
    out.put_u32_le(seq);
    out.put_u64_le(ts_ns);
    let crc = crc32(&[&out[start + 4..start + 24], payload]);
    out.put_u32_le(crc);
}

/// The first frame of every file: what was recorded, where and how.
/// JSON; fields added later get defaults, so older files stay readable.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Header {
    pub format_version: u16,
    pub ctscope_version: String,
    pub ebpf_build_id: String,
    /// Kernel release (`uname -r`) of the recorded machine.
    pub kernel: String,
    pub hostname: String,
    /// `tracepoint` or `kprobe`.
    pub backend: String,
    /// When this part was started: wall clock (ns since the Unix epoch) and
    /// CLOCK_MONOTONIC (the clock of every other timestamp in the file),
    /// read together, so monotonic times convert to wall-clock times.
    pub start_wall_ns: u64,
    pub start_mono_ns: u64,
    /// Conntrack sysctls at the start.
    pub sysctls: Sysctls,
    /// Requested time between snapshots.
    pub sample_interval_ms: u64,
    /// Kernel ring buffer size.
    pub ring_bytes: u32,
    /// Bytes each conntrack entry takes in its slab on the recorded machine
    /// (`/sys/kernel/slab/nf_conntrack/slab_size`), for the memory figures
    /// of a replay; `None` when it could not be read (and in traces of
    /// ctscope before 0.2), where the view says it estimates.
    pub objsize: Option<u64>,
    /// Event classes recorded: "ct" (allocations and frees), "drop".
    pub event_classes: Vec<String>,
    /// Filters applied to events before writing (snapshots are never
    /// filtered); empty when everything was recorded.
    pub filter: Vec<String>,
    /// "none" or "zstd".
    pub compression: String,
    /// Random id shared by all parts of one recording.
    pub run_id: String,
    /// 0 for the first file, then 1, 2, ... for FILE.1, FILE.2, ...
    pub part: u32,
}

impl Header {
    /// Wall-clock ns of a CLOCK_MONOTONIC timestamp from this recording.
    pub fn wall_ns(&self, mono_ns: u64) -> u64 {
        let offset = i128::from(mono_ns) - i128::from(self.start_mono_ns);
        u64::try_from(i128::from(self.start_wall_ns) + offset).unwrap_or(0)
    }
}

/// A periodic reading (JSON): the [`Sample`] that live capture sends.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Snapshot {
    pub mono_ns: u64,
    pub wall_ms: u64,
    /// In-kernel counters, in `conntrack_common::counter` order.
    pub counters: Counters,
    /// Per-namespace counts. Traces of format 1 have `inum`, `alloc`,
    /// `free` and `drops` only: their namespaces are identified by inode.
    pub netns: Vec<NetnsSample>,
    /// The kernel's own counters per namespace.
    pub kernel: Vec<NetnsReading>,
    pub sysctls: Sysctls,
}

impl From<&Sample> for Snapshot {
    fn from(s: &Sample) -> Self {
        Self {
            mono_ns: s.mono_ns,
            wall_ms: s.wall_ms,
            counters: s.counters,
            netns: s.netns.clone(),
            kernel: s.kernel.clone(),
            sysctls: s.sysctls,
        }
    }
}

impl From<Snapshot> for Sample {
    fn from(s: Snapshot) -> Self {
        let netns = s
            .netns
            .into_iter()
            .map(|mut n| {
                if n.id == 0 {
                    // Format 1: no identity but the inode number.
                    n.id = u64::from(n.inum);
                    n.alive = true;
                }
                n
            })
            .collect();
        Self {
            mono_ns: s.mono_ns,
            wall_ms: s.wall_ms,
            counters: s.counters,
            netns,
            kernel: s.kernel,
            sysctls: s.sysctls,
        }
    }
}

/// Events the kernel counted but that are not in the file, between two
/// snapshots (deltas of the in-kernel counters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lost {
    /// CLOCK_MONOTONIC of the snapshots the deltas are taken between.
    pub from_mono_ns: u64,
    pub to_mono_ns: u64,
    /// Events that did not fit in the ring buffer (`counter::LOST_EVENTS`).
    pub ring_full: u64,
    /// Allocation events without their namespace and tuple
    /// (`counter::UNRESOLVED`; in format 1, allocations the kernel could not
    /// queue, whose event was not sent).
    pub pending_overflow: u64,
    /// Drop details not sent because of in-kernel sampling
    /// (`counter::SAMPLED_OUT`); their counts are exact.
    pub sampled_out: u64,
}

impl Lost {
    pub fn total(&self) -> u64 {
        self.ring_full + self.pending_overflow + self.sampled_out
    }

    pub fn encode(&self) -> [u8; LOST_LEN] {
        let mut b = [0u8; LOST_LEN];
        let fields = [
            self.from_mono_ns,
            self.to_mono_ns,
            self.ring_full,
            self.pending_overflow,
            self.sampled_out,
        ];
        for (chunk, v) in b.chunks_exact_mut(8).zip(fields) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    pub fn decode(mut b: &[u8]) -> Result<Self, String> {
        if b.len() != LOST_LEN {
            return Err(format!("{} bytes, expected {LOST_LEN}", b.len()));
        }
        Ok(Self {
            from_mono_ns: b.get_u64_le(),
            to_mono_ns: b.get_u64_le(),
            ring_full: b.get_u64_le(),
            pending_overflow: b.get_u64_le(),
            sampled_out: b.get_u64_le(),
        })
    }
}

/// The last frame of a file that was closed properly (JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct End {
    /// Why recording stopped: "signal", "duration", "count", "rotated",
    /// "closed" (the source ended) or "error".
    pub reason: String,
    pub wall_ms: u64,
    pub mono_ns: u64,
    /// Frames in this file before this one, the header included.
    pub frames: u32,
    /// Events in this file.
    pub events: u64,
    /// For "rotated": the file name of the next part, in the same directory.
    pub next_part: Option<String>,
}

/// Appends the 128-byte little-endian encoding of `ev` (the field order of
/// the kernel's `struct Event`, conntrack-ebpf/common/src/lib.rs).
pub fn encode_event(out: &mut BytesMut, ev: &Event) {
    out.put_u64_le(ev.ts_ns);
    out.put_u64_le(ev.ct);
    out.put_u64_le(ev.alloc_ts_ns);
    out.put_u8(ev.kind);
    out.put_u8(ev.cause);
    out.put_u8(ev.tcp_flags);
    out.put_u8(ev.flags);
    out.put_u32_le(ev.cpu);
    out.put_u32_le(ev.netns);
    out.put_u32_le(ev.ifindex);
    out.put_u32_le(ev.len);
    out.put_u32_le(ev.mark);
    out.put_u32_le(ev.status);
    out.put_u16_le(ev.zone);
    out.put_u8(ev.hook);
    out.put_u8(ev._pad);
    out.put_slice(&ev.ifname);
    let t = &ev.tuple;
    out.put_slice(&t.src);
    out.put_slice(&t.dst);
    out.put_u16_le(t.sport);
    out.put_u16_le(t.dport);
    out.put_u8(t.family);
    out.put_u8(t.proto);
    out.put_slice(&t._pad);
    out.put_u64_le(ev.netns_id);
    out.put_u64_le(ev.location);
}

/// Decodes one event from exactly [`EVENT_LEN`] or, for format 1,
/// [`EVENT_LEN_V1`] bytes.
pub fn decode_event(mut b: &[u8]) -> Event {
    let take16 = |b: &mut &[u8]| {
        let mut a = [0u8; 16];
        b.copy_to_slice(&mut a);
        a
    };
    let ts_ns = b.get_u64_le();
    let ct = b.get_u64_le();
    let alloc_ts_ns = b.get_u64_le();
    let kind = b.get_u8();
    let cause = b.get_u8();
    let tcp_flags = b.get_u8();
    let flags = b.get_u8();
    let cpu = b.get_u32_le();
    let netns = b.get_u32_le();
    let ifindex = b.get_u32_le();
    let len = b.get_u32_le();
    let mark = b.get_u32_le();
    let status = b.get_u32_le();
    let zone = b.get_u16_le();
    // Padding before 0.2 (0: hook unknown).
    let hook = b.get_u8();
    let pad = b.get_u8();
    let ifname = take16(&mut b);
    let src = take16(&mut b);
    let dst = take16(&mut b);
    let sport = b.get_u16_le();
    let dport = b.get_u16_le();
    let family = b.get_u8();
    let proto = b.get_u8();
    let tpad = [b.get_u8(), b.get_u8()];
    let (netns_id, location) = if b.len() >= 16 {
        (b.get_u64_le(), b.get_u64_le())
    } else {
        // Format 1: the inode number is the only identity.
        (u64::from(netns), 0)
    };
    Event {
        ts_ns,
        ct,
        alloc_ts_ns,
        kind,
        cause,
        tcp_flags,
        flags,
        cpu,
        netns,
        ifindex,
        len,
        mark,
        status,
        zone,
        hook,
        _pad: pad,
        ifname,
        tuple: Tuple {
            src,
            dst,
            sport,
            dport,
            family,
            proto,
            _pad: tpad,
        },
        netns_id,
        location,
    }
}

/// Decodes an EVENTS payload of a file of format `version`.
pub fn decode_events(version: u16, payload: &[u8]) -> Result<Vec<Event>, String> {
    let len = event_len(version);
    if !payload.len().is_multiple_of(len) {
        return Err(format!(
            "{} bytes is not a whole number of {len}-byte events",
            payload.len()
        ));
    }
    Ok(payload.chunks_exact(len).map(decode_event).collect())
}

/// One decoded record.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Header(Box<Header>),
    Snapshot(Box<Snapshot>),
    Events(Vec<Event>),
    Lost(Lost),
    Buckets(Box<crate::model::buckets::BucketWalk>),
    End(End),
}

/// Decodes a payload whose CRC matched. An error here means the writer and
/// reader disagree (or the file was crafted): the frame is skipped.
pub fn decode_record(version: u16, rtype: u8, payload: &Bytes) -> Result<Option<Record>, String> {
    let json_err = |e: serde_json::Error| e.to_string();
    Ok(Some(match rtype {
        rtype::HEADER => Record::Header(serde_json::from_slice(payload).map_err(json_err)?),
        rtype::SNAPSHOT => Record::Snapshot(serde_json::from_slice(payload).map_err(json_err)?),
        rtype::EVENTS => Record::Events(decode_events(version, payload)?),
        rtype::LOST => Record::Lost(Lost::decode(payload)?),
        rtype::BUCKETS => Record::Buckets(serde_json::from_slice(payload).map_err(json_err)?),
        rtype::END => Record::End(serde_json::from_slice(payload).map_err(json_err)?),
        _ => return Ok(None),
    }))
}
