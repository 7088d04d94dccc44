//! Unit tests of the trace format: layout, round trips, and every kind of
//! bad input the reader must report by offset and get past.

use std::path::{Path, PathBuf};

use conntrack_common::{Event, Tuple, counter, kind};

use super::{
    Issue, IssueKind, Item, Record, Trace, TraceError, TraceReader, TraceWriter, WriterOptions,
    format::{self, EVENT_LEN, FRAME_HEADER_LEN, Header, Lost, PREAMBLE_LEN, Snapshot},
    recorder::{Progress, Recorder},
};
use crate::{
    event::{Counters, Message, Sample},
    kernel::sysctl::Sysctls,
    model::buckets::BucketWalk,
};

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("ctscope-trace-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn event(i: u64, k: u8) -> Event {
    let mut t = Tuple {
        family: 2,
        proto: 17,
        sport: 40000,
        dport: 20000 + (i % 1000) as u16,
        ..Tuple::default()
    };
    t.src[..4].copy_from_slice(&[127, 0, 0, 1]);
    t.dst[..4].copy_from_slice(&[127, 0, (i >> 8) as u8, i as u8]);
    let mut ifname = [0u8; 16];
    ifname[..2].copy_from_slice(b"lo");
    Event {
        ts_ns: 1_000_000_000 + i * 1000,
        ct: 0xffff_8880_0000_0000 + i * 256,
        alloc_ts_ns: 1_000_000_000 + i * 1000 - 500,
        kind: k,
        cause: if k == kind::DROP { (i % 5) as u8 } else { 0 },
        tcp_flags: 0x12,
        flags: 1,
        cpu: (i % 2) as u32,
        netns: 4_026_532_000 + (i % 3) as u32,
        ifindex: 1,
        len: 60,
        mark: 7,
        status: 8,
        zone: 3,
        hook: (i % 6) as u8,
        _pad: 0,
        ifname,
        tuple: t,
        netns_id: 0x1000 + i % 3,
        location: 0xffff_ffff_8100_0000 + i,
    }
}

pub fn sample(i: u64, allocs: u64) -> Sample {
    let mut counters = Counters::default();
    counters.0[counter::ALLOC as usize] = allocs;
    counters.0[counter::LOST_EVENTS as usize] = i;
    Sample {
        mono_ns: 1_000_000_000 + i * 1_000_000_000,
        wall_ms: 1_795_000_000_000 + i * 1000,
        counters,
        netns: vec![crate::event::NetnsSample {
            id: 0x1000,
            inum: 4_026_532_000,
            alloc: allocs,
            free: 1,
            drops: [1, 2, 3, 4, 5],
            entries: Some(allocs.saturating_sub(1)),
            alive: true,
            retired: false,
        }],
        kernel: Vec::new(),
        sysctls: Sysctls {
            nf_conntrack_max: Some(262_144),
            ..Sysctls::default()
        },
    }
}

pub fn header() -> Header {
    Header {
        ctscope_version: "test".into(),
        kernel: "6.18.0-test".into(),
        hostname: "host".into(),
        backend: "tracepoint".into(),
        start_wall_ns: 1_795_000_000_000_000_000,
        start_mono_ns: 1_000_000_000,
        sample_interval_ms: 1000,
        run_id: "0123456789abcdef".into(),
        event_classes: vec!["ct".into(), "drop".into()],
        ..Header::default()
    }
}

/// What a small recording holds: snapshots around batches of events, a
/// loss record and a bucket walk.
pub fn messages(snapshots: u64, per_batch: u64) -> Vec<Message> {
    let mut out = vec![Message::Sample(Box::new(sample(0, 0)))];
    let mut n = 0;
    for s in 1..=snapshots {
        for b in 0..2 {
            let events = (0..per_batch)
                .map(|j| {
                    n += 1;
                    event(
                        n,
                        [kind::ALLOC, kind::FREE, kind::DROP][((b + j) % 3) as usize],
                    )
                })
                .collect();
            out.push(Message::Events(events));
        }
        if s == 2 {
            out.push(Message::Buckets(Box::new(BucketWalk {
                buckets: 1024,
                mean: 0.25,
                ..BucketWalk::default()
            })));
        }
        out.push(Message::Sample(Box::new(sample(s, n))));
    }
    out
}

/// Records `msgs` into `path` through the recorder, as `ctscope record` does.
pub fn record(path: &Path, msgs: &[Message], opts: WriterOptions) -> super::writer::WriterTotals {
    let writer = TraceWriter::create(path, header(), opts).expect("create");
    let mut rec = Recorder::new(
        writer,
        super::filter::EventFilter::default(),
        None,
        std::sync::Arc::new(Progress::default()),
    );
    for (i, m) in msgs.iter().enumerate() {
        rec.apply(1_000_000_000 + i as u64 * 100_000_000, m)
            .expect("apply");
    }
    rec.finish("closed").expect("finish")
}

/// Everything a reader yields.
pub fn read_all(path: &Path) -> Result<(Vec<super::Frame>, Vec<Issue>), TraceError> {
    let mut t = Trace::open(path)?;
    let mut frames = Vec::new();
    let mut issues = Vec::new();
    while let Some(item) = t.next_item()? {
        match item {
            Item::Record(f) => frames.push(f),
            Item::Issue(i) => issues.push(i),
        }
    }
    Ok((frames, issues))
}

/// The messages a replay of these frames sends.
fn replayed(frames: &[super::Frame]) -> Vec<Message> {
    frames
        .iter()
        .filter_map(|f| match &f.record {
            Record::Snapshot(s) => Some(Message::Sample(Box::new(Sample::from((**s).clone())))),
            Record::Events(e) => Some(Message::Events(e.clone())),
            Record::Buckets(b) => Some(Message::Buckets(b.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn events_are_the_kernels_112_byte_layout_little_endian() {
    let ev = event(0x0102_0304, kind::DROP);
    let mut enc = bytes::BytesMut::new();
    format::encode_event(&mut enc, &ev);
    assert_eq!(enc.len(), EVENT_LEN);
    assert_eq!(std::mem::size_of::<Event>(), EVENT_LEN);
    // On this (little-endian) host the encoding is the struct's memory.
    // SAFETY: Event is repr(C) plain old data without implicit padding.
    let raw: [u8; EVENT_LEN] = unsafe { std::mem::transmute(ev) };
    if cfg!(target_endian = "little") {
        assert_eq!(&enc[..], &raw[..]);
    }
    assert_eq!(format::decode_event(&enc), ev);
    assert_eq!(&enc[0..8], &ev.ts_ns.to_le_bytes());
    assert_eq!(enc[24], kind::DROP);
    assert_eq!(&enc[32..36], &ev.netns.to_le_bytes());
    assert_eq!(&enc[56..58], b"lo");
    assert_eq!(&enc[104..106], &ev.tuple.sport.to_le_bytes());
    assert_eq!(enc[109], 17, "protocol at offset 109");
}

#[test]
fn a_recording_reads_back_exactly_plain_and_compressed() {
    let dir = TempDir::new("roundtrip");
    let msgs = messages(4, 50);
    for compress in [false, true] {
        let path = dir.path(if compress { "z.ctrace" } else { "p.ctrace" });
        let totals = record(
            &path,
            &msgs,
            WriterOptions {
                compress,
                max_size: None,
            },
        );
        assert_eq!(totals.events, 4 * 2 * 50);
        assert_eq!(totals.snapshots, 5);
        let (frames, issues) = read_all(&path).expect("read");
        assert_eq!(issues, vec![], "compress={compress}");
        assert_eq!(replayed(&frames), msgs, "compress={compress}");
        let lost: Vec<&Lost> = frames
            .iter()
            .filter_map(|f| match &f.record {
                Record::Lost(l) => Some(l),
                _ => None,
            })
            .collect();
        // The loss counter rises by one per snapshot in `sample`.
        assert_eq!(lost.len(), 4);
        assert!(
            lost.iter()
                .all(|l| l.ring_full == 1 && l.from_mono_ns < l.to_mono_ns)
        );
        let end = frames.last().expect("frames");
        assert!(matches!(&end.record, Record::End(e) if e.reason == "closed" && e.events == 400));
        let reader = TraceReader::open(&path).expect("open");
        assert_eq!(reader.header().kernel, "6.18.0-test");
        assert_eq!(
            reader.header().compression,
            if compress { "zstd" } else { "none" }
        );
        assert_eq!(reader.is_compressed(), compress);
    }
}

#[test]
fn files_are_created_mode_0600_even_over_an_existing_file() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new("mode");
    let path = dir.path("t.ctrace");
    std::fs::write(&path, "old").expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    record(&path, &messages(1, 1), WriterOptions::default());
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // Never written through a symlink.
    let link = dir.path("link.ctrace");
    std::os::unix::fs::symlink(&path, &link).expect("symlink");
    let err = TraceWriter::create(&link, header(), WriterOptions::default())
        .err()
        .expect("refused");
    assert!(err.to_string().contains("link.ctrace"), "{err}");
}

/// Offsets of each frame in an uncompressed file.
fn frame_offsets(path: &Path) -> Vec<(u64, u64)> {
    let bytes = std::fs::read(path).expect("read");
    let mut out = Vec::new();
    let mut at = PREAMBLE_LEN;
    while at < bytes.len() {
        let h = format::FrameHeader::parse(&bytes[at..]).expect("frame");
        let len = (FRAME_HEADER_LEN + h.len as usize) as u64;
        out.push((at as u64, len));
        at += len as usize;
    }
    out
}

#[test]
fn a_cut_off_file_reads_up_to_the_cut_and_says_where() {
    let dir = TempDir::new("cut");
    let path = dir.path("t.ctrace");
    let msgs = messages(3, 20);
    record(&path, &msgs, WriterOptions::default());
    let full = std::fs::read(&path).expect("read");
    let frames = frame_offsets(&path);
    // Cut inside each frame after the header, and exactly between frames.
    for (i, (off, len)) in frames.iter().enumerate().skip(1) {
        for cut in [*off + len / 2, *off] {
            let cut_path = dir.path("cut.ctrace");
            std::fs::write(&cut_path, &full[..cut as usize]).expect("write");
            let (got, issues) = read_all(&cut_path).expect("readable");
            assert_eq!(got.len(), i - 1, "frames before the cut at {cut}");
            assert_eq!(issues.len(), 1, "{issues:?}");
            let issue = &issues[0];
            assert!(!issue.is_damage());
            assert_eq!(issue.offset, *off, "{issue}");
            let want = if cut == *off {
                IssueKind::Unfinished
            } else {
                IssueKind::Truncated
            };
            assert_eq!(issue.kind, want, "{issue}");
            assert!(
                issue.to_string().contains(&format!("byte offset {off}")),
                "{issue}"
            );
        }
    }
}

#[test]
fn a_flipped_bit_in_the_middle_skips_one_frame_and_names_its_offset() {
    let dir = TempDir::new("flip");
    let path = dir.path("t.ctrace");
    let msgs = messages(3, 20);
    record(&path, &msgs, WriterOptions::default());
    let full = std::fs::read(&path).expect("read");
    let frames = frame_offsets(&path);
    let (original, _) = read_all(&path).expect("read");
    // Flip one bit in the header, then in the payload, of each frame but
    // the file header.
    for (i, (off, len)) in frames.iter().enumerate().skip(1) {
        for at in [*off + 5, *off + len - 1] {
            let mut bad = full.clone();
            bad[at as usize] ^= 0x10;
            let bad_path = dir.path("bad.ctrace");
            std::fs::write(&bad_path, &bad).expect("write");
            let (got, issues) = read_all(&bad_path).expect("readable");
            let mut want = original.clone();
            want.remove(i - 1);
            assert_eq!(got, want, "flip at {at}");
            assert_eq!(issues.len(), 1, "{issues:?}");
            let issue = &issues[0];
            if i == frames.len() - 1 && at == off + 5 {
                // A damaged length in the last frame reads as a cut-off
                // tail: nothing follows to tell the two apart.
                assert_eq!(issue.kind, IssueKind::Truncated, "{issue}");
                continue;
            }
            assert_eq!(issue.kind, IssueKind::Corrupt, "{issue}");
            assert!(issue.is_damage());
            assert_eq!(issue.offset, *off, "{issue}");
            if i < frames.len() - 1 {
                assert_eq!(issue.resumed_at, Some(off + len), "{issue}");
                assert_eq!(issue.frames_lost, Some(1), "{issue}");
            }
            assert!(
                issue.to_string().contains(&format!("byte offset {off}")),
                "{issue}"
            );
        }
    }
}

#[test]
fn garbage_inserted_between_frames_is_skipped() {
    let dir = TempDir::new("garbage");
    let path = dir.path("t.ctrace");
    record(&path, &messages(2, 10), WriterOptions::default());
    let (original, _) = read_all(&path).expect("read");
    let full = std::fs::read(&path).expect("read");
    let (off, _) = frame_offsets(&path)[2];
    let mut bad = full[..off as usize].to_vec();
    // Includes a false frame marker.
    bad.extend_from_slice(b"junk\xC7TF\x1Ajunk");
    bad.extend_from_slice(&full[off as usize..]);
    std::fs::write(&path, &bad).expect("write");
    let (got, issues) = read_all(&path).expect("read");
    let records = |f: &[super::Frame]| f.iter().map(|f| f.record.clone()).collect::<Vec<_>>();
    assert_eq!(
        records(&got),
        records(&original),
        "every frame, later ones 12 bytes on"
    );
    assert_eq!(issues.len(), 1);
    assert_eq!((issues[0].offset, issues[0].len), (off, Some(12)));
    assert_eq!(issues[0].frames_lost, Some(0));
}

#[test]
fn files_that_are_not_readable_traces_say_why_and_where() {
    let dir = TempDir::new("bad");
    let path = dir.path("t.ctrace");
    record(&path, &messages(1, 1), WriterOptions::default());
    let good = std::fs::read(&path).expect("read");
    let check = |bytes: &[u8], want: &str| {
        let p = dir.path("x.ctrace");
        std::fs::write(&p, bytes).expect("write");
        let err = Trace::open(&p).err().expect("an error");
        assert!(err.is_bad_input());
        let text = err.to_string();
        assert!(text.contains(want), "{text}");
        assert!(text.contains("x.ctrace"), "{text}");
    };
    check(b"", "not a ctscope trace");
    check(b"{\"ts_ms\": 1}\n", "not a ctscope trace");
    check(&good[..10], "too short");
    let mut v = good.clone();
    v[8] = 3;
    let crc = format::crc32(&[&v[..12]]);
    v[12..16].copy_from_slice(&crc.to_le_bytes());
    check(&v, "version 3 is not supported");
    let mut v = good.clone();
    v[9] ^= 1;
    check(&v, "byte offset 8");
    let mut v = good.clone();
    v[PREAMBLE_LEN + 40] ^= 1;
    check(&v, "damaged trace header at byte offset 16");
    check(
        &good[..PREAMBLE_LEN + 10],
        "damaged trace header at byte offset 16",
    );
    let missing = Trace::open(&dir.path("nope")).err().expect("missing");
    assert!(missing.to_string().contains("cannot open"), "{missing}");
}

#[test]
fn compressed_files_cut_off_read_up_to_the_last_zstd_frame() {
    let dir = TempDir::new("zcut");
    let path = dir.path("t.ctrace");
    let msgs = messages(4, 200);
    record(
        &path,
        &msgs,
        WriterOptions {
            compress: true,
            max_size: None,
        },
    );
    let full = std::fs::read(&path).expect("read");
    let (all, _) = read_all(&path).expect("read");
    let mut last = usize::MAX;
    for keep in (PREAMBLE_LEN + 64..full.len()).rev().step_by(97) {
        std::fs::write(dir.path("c.ctrace"), &full[..keep]).expect("write");
        let Ok((got, issues)) = read_all(&dir.path("c.ctrace")) else {
            continue; // the header's zstd frame itself was cut
        };
        assert!(got.len() <= last, "less file, fewer records");
        last = got.len();
        assert_eq!(got[..], all[..got.len()], "a prefix of the records");
        assert!(
            !issues.is_empty() && issues.iter().all(|i| !i.is_damage()),
            "{issues:?}"
        );
    }
    // Each snapshot ends a zstd frame, so a cut in the last zstd frame
    // (which holds the END record) keeps every snapshot.
    let snapshots = |f: &[super::Frame]| {
        f.iter()
            .filter(|f| matches!(f.record, Record::Snapshot(_)))
            .count()
    };
    std::fs::write(dir.path("c.ctrace"), &full[..full.len() - 20]).expect("write");
    let (got, issues) = read_all(&dir.path("c.ctrace")).expect("read");
    assert_eq!(snapshots(&got), snapshots(&all));
    assert!(
        issues.iter().any(|i| i.kind == IssueKind::Truncated),
        "{issues:?}"
    );
}

#[test]
fn damage_in_a_compressed_file_skips_to_the_next_zstd_frame() {
    let dir = TempDir::new("zflip");
    let path = dir.path("t.ctrace");
    let msgs = messages(4, 200);
    record(
        &path,
        &msgs,
        WriterOptions {
            compress: true,
            max_size: None,
        },
    );
    let full = std::fs::read(&path).expect("read");
    let (all, _) = read_all(&path).expect("read");
    let snapshots = |f: &[super::Frame]| {
        f.iter()
            .filter(|f| matches!(f.record, Record::Snapshot(_)))
            .count()
    };
    let mut bad = full.clone();
    let mid = full.len() / 2;
    for b in &mut bad[mid..mid + 16] {
        *b ^= 0xA5;
    }
    std::fs::write(&path, &bad).expect("write");
    let (got, issues) = read_all(&path).expect("read");
    assert!(issues.iter().any(Issue::is_damage), "{issues:?}");
    let z = issues
        .iter()
        .find(|i| i.compressed || i.zstd_frame.is_some())
        .expect("located in the zstd layer");
    assert!(z.to_string().contains("file offset"), "{z}");
    // Only what the damaged zstd frame held is gone.
    assert!(got.len() < all.len());
    assert!(
        snapshots(&got) >= snapshots(&all) - 2,
        "{} of {}",
        snapshots(&got),
        snapshots(&all)
    );
    assert!(matches!(
        got.last().map(|f| &f.record),
        Some(Record::End(_))
    ));
    let records: Vec<&Record> = all.iter().map(|f| &f.record).collect();
    for f in &got {
        assert!(
            records.contains(&&f.record),
            "every record read is one that was written"
        );
    }
    let lost: u32 = issues.iter().filter_map(|i| i.frames_lost).sum();
    assert_eq!(lost as usize, all.len() - got.len(), "{issues:?}");
}

#[test]
fn rotated_parts_are_followed_and_each_part_replays_alone() {
    let dir = TempDir::new("rotate");
    let path = dir.path("t.ctrace");
    let msgs = messages(6, 200);
    let totals = record(
        &path,
        &msgs,
        WriterOptions {
            compress: false,
            max_size: Some(64 << 10),
        },
    );
    assert!(totals.parts >= 3, "{totals:?}");
    for n in 1..totals.parts {
        let part = super::writer::part_path(&path, n);
        let size = std::fs::metadata(&part).expect("part").len();
        assert!(size <= 64 << 10, "part {n}: {size}");
        // A part alone starts with the previous part's last snapshot.
        let reader = TraceReader::open(&part).expect("part opens");
        assert_eq!(reader.header().part, n);
        assert_eq!(reader.header().run_id, header().run_id);
    }
    let (frames, issues) = read_all(&path).expect("read");
    assert_eq!(issues, vec![]);
    assert_eq!(
        replayed(&frames),
        msgs,
        "all parts in order, baselines skipped"
    );
    // A missing part is reported, not fatal.
    std::fs::remove_file(super::writer::part_path(&path, 1)).expect("rm");
    let (_, issues) = read_all(&path).expect("read");
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].kind, IssueKind::MissingPart);
    assert!(issues[0].detail.contains("t.ctrace.1"), "{}", issues[0]);
}

#[test]
fn the_recorder_filters_limits_and_writes_loss_records() {
    let dir = TempDir::new("recorder");
    let path = dir.path("t.ctrace");
    let writer = TraceWriter::create(&path, header(), WriterOptions::default()).expect("create");
    let filter = super::filter::EventFilter {
        causes: vec![crate::model::drops::Cause::TableFull],
        ..Default::default()
    };
    let progress = std::sync::Arc::new(Progress::default());
    let mut rec = Recorder::new(writer, filter, Some(3), progress.clone());
    let mut s0 = sample(0, 0);
    s0.counters.0[counter::LOST_EVENTS as usize] = 10;
    rec.apply(1, &Message::Sample(Box::new(s0))).expect("apply");
    // Drops of cause 0 (table_full) are every fifth event.
    let events: Vec<Event> = (0..40).map(|i| event(i, kind::DROP)).collect();
    rec.apply(2, &Message::Events(events)).expect("apply");
    assert!(rec.count_reached());
    let mut s1 = sample(1, 0);
    s1.counters.0[counter::LOST_EVENTS as usize] = 15;
    s1.counters.0[counter::UNRESOLVED as usize] = 2;
    rec.apply(3, &Message::Sample(Box::new(s1))).expect("apply");
    assert_eq!(progress.lost.load(std::sync::atomic::Ordering::Relaxed), 7);
    rec.finish("count").expect("finish");
    let (frames, _) = read_all(&path).expect("read");
    let events: Vec<&Event> = frames
        .iter()
        .filter_map(|f| match &f.record {
            Record::Events(e) => Some(e),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(events.len(), 3, "--count 3");
    assert!(events.iter().all(|e| e.kind == kind::DROP && e.cause == 0));
    let lost: Vec<&Lost> = frames
        .iter()
        .filter_map(|f| match &f.record {
            Record::Lost(l) => Some(l),
            _ => None,
        })
        .collect();
    assert_eq!(lost.len(), 1);
    assert_eq!((lost[0].ring_full, lost[0].pending_overflow), (5, 2));
}

#[test]
fn snapshots_keep_every_field_of_the_sample() {
    let mut s = sample(3, 42);
    s.kernel.push(crate::kernel::netns::NetnsReading {
        inum: 4_026_531_840,
        name: Some("blue".into()),
        owner: None,
        count: Some(9),
        max: Some(262_144),
        stats: Some(crate::kernel::stats::ConntrackStats {
            drop: 4,
            chaintoolong: 1,
            ..Default::default()
        }),
        source_used: Some(crate::kernel::netns::StatsSourceUsed::Ctnetlink),
        error: None,
        enter: crate::kernel::netns::Enter::Unknown,
        tcp_timeout_established: None,
    });
    let json = serde_json::to_vec(&Snapshot::from(&s)).expect("json");
    let back: Snapshot = serde_json::from_slice(&json).expect("decode");
    assert_eq!(Sample::from(back), s);
}

#[test]
fn export_rows_and_times() {
    use super::export::{EventRow, rfc3339};
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
    assert_eq!(
        rfc3339(1_795_651_200_123_456_789),
        "2026-11-26T00:00:00.123456789Z"
    );
    assert_eq!(
        rfc3339(951_782_400_000_000_000),
        "2000-02-29T00:00:00.000000000Z"
    );
    let h = header();
    let row = EventRow::new(&h, &event(5, kind::DROP));
    assert_eq!(row.kind, "drop");
    assert_eq!(row.cause, Some("table_full"));
    assert_eq!(
        (row.src.as_str(), row.dst.as_str()),
        ("127.0.0.1", "127.0.0.5")
    );
    assert_eq!(row.time, rfc3339(h.wall_ns(row.ts_ns)));
    let csv = row.to_csv();
    assert_eq!(
        csv.split(',').count(),
        EventRow::CSV_HEADER.split(',').count()
    );
    let alloc = EventRow::new(&h, &event(6, kind::ALLOC));
    assert_eq!((alloc.cause, alloc.len), (None, None));
    assert_eq!(alloc.alloc_ts_ns, Some(event(6, kind::ALLOC).alloc_ts_ns));
    let json: serde_json::Value = serde_json::to_value(&alloc).expect("json");
    assert_eq!(json["type"], "alloc");
    assert_eq!(json["proto"], "udp");
}

/// Issue 18 item 12: a pandas user's export. The events' flag names are
/// not `flags` (`DataFrame.flags` hides such a column), the snapshot
/// columns carry the documented names, and the snapshot counters count
/// from the trace's first snapshot, not from when ctscope started.
#[test]
fn export_columns_suit_a_data_frame() {
    use super::export::{Baseline, EventRow, snapshot_csv, snapshot_csv_header, snapshot_json};
    let h = header();
    let row = EventRow::new(&h, &event(5, kind::DROP));
    let json: serde_json::Value = serde_json::to_value(&row).expect("json");
    assert!(json.get("flags").is_none(), "{json}");
    assert!(json["event_flags"].is_string(), "{json}");
    let cols: Vec<&str> = EventRow::CSV_HEADER.split(',').collect();
    assert!(cols.contains(&"event_flags") && !cols.contains(&"flags"));

    let header_cols = snapshot_csv_header();
    let cols: Vec<&str> = header_cols.split(',').collect();
    assert!(cols.contains(&"unresolved"), "{header_cols}");
    for stale in ["pending_overflow", "resolved", "resolved_at_free"] {
        assert!(!cols.contains(&stale), "{stale}: {header_cols}");
    }

    // A recording that began when ctscope had counted 1,000 allocations.
    let mut base = Baseline::default();
    let first = base.rebase(&Snapshot::from(&sample(3, 1000)));
    let second = base.rebase(&Snapshot::from(&sample(4, 1050)));
    assert_eq!(first.counters.get(counter::ALLOC), 0);
    assert_eq!(second.counters.get(counter::ALLOC), 50);
    assert_eq!(second.counters.get(counter::LOST_EVENTS), 1);
    assert_eq!((second.netns[0].alloc, second.netns[0].drops), (50, [0; 5]));
    assert_eq!(second.netns[0].entries, Some(1049), "a level, not a count");
    let csv = snapshot_csv(&h, &second);
    let at = cols
        .iter()
        .position(|c| *c == "alloc")
        .expect("alloc column");
    assert_eq!(csv.split(',').nth(at), Some("50"), "{csv}");
    let v: serde_json::Value = serde_json::from_str(&snapshot_json(&h, &second)).expect("json");
    assert_eq!(v["counters"]["alloc"], 50, "{v}");
    assert_eq!(v["netns"][0]["alloc"], 50, "{v}");
}

#[test]
fn format_1_events_read_with_the_inode_as_identity() {
    let ev = event(7, kind::DROP);
    let mut buf = bytes::BytesMut::new();
    format::encode_event(&mut buf, &ev);
    assert_eq!(buf.len(), format::EVENT_LEN);
    // A format-1 event is the first 112 bytes of today's encoding.
    let mut two = buf[..format::EVENT_LEN_V1].to_vec();
    two.extend_from_slice(&buf[..format::EVENT_LEN_V1]);
    let old = format::decode_events(format::FORMAT_VERSION_1, &two).expect("v1");
    assert_eq!(old.len(), 2);
    assert_eq!(old[0].tuple, ev.tuple);
    assert_eq!(old[0].netns_id, u64::from(ev.netns));
    assert_eq!(old[0].location, 0);
    let new = format::decode_events(format::FORMAT_VERSION, &buf).expect("v2");
    assert_eq!(new, vec![ev]);
    assert!(format::decode_events(format::FORMAT_VERSION, &two).is_err());
}

/// A part by hand: preamble, HEADER (part `part`), one snapshot, and an
/// END that names `next` as the next part.
fn write_part(path: &Path, part: u32, next: &str) {
    let mut buf = bytes::BytesMut::new();
    buf.extend_from_slice(&format::encode_preamble(false));
    let h = Header {
        part,
        format_version: format::FORMAT_VERSION,
        ..header()
    };
    let json = serde_json::to_vec(&h).expect("header");
    format::encode_frame_header(&mut buf, format::rtype::HEADER, 0, 0, 1, &json);
    buf.extend_from_slice(&json);
    let snap = serde_json::to_vec(&Snapshot::from(&sample(1, 0))).expect("snapshot");
    format::encode_frame_header(&mut buf, format::rtype::SNAPSHOT, 0, 1, 2, &snap);
    buf.extend_from_slice(&snap);
    let end = super::End {
        reason: "rotated".into(),
        next_part: Some(next.into()),
        frames: 2,
        ..super::End::default()
    };
    let json = serde_json::to_vec(&end).expect("end");
    format::encode_frame_header(&mut buf, format::rtype::END, 0, 2, 3, &json);
    buf.extend_from_slice(&json);
    std::fs::write(path, &buf).expect("write part");
}

/// Reads like `read_all`, but gives up (failing the test) instead of
/// looping for ever.
fn read_bounded(path: &Path) -> (Vec<super::Frame>, Vec<Issue>) {
    let mut t = Trace::open(path).expect("open");
    let (mut frames, mut issues) = (Vec::new(), Vec::new());
    for _ in 0..1000 {
        match t.next_item().expect("read") {
            Some(Item::Record(f)) => frames.push(f),
            Some(Item::Issue(i)) => issues.push(i),
            None => return (frames, issues),
        }
    }
    panic!("reading {} did not end", path.display());
}

#[test]
fn parts_that_name_a_part_already_read_end_with_a_cycle_issue() {
    let dir = TempDir::new("cycle");
    // An END that names its own file.
    let me = dir.path("self.ctrace");
    write_part(&me, 0, "self.ctrace");
    let (frames, issues) = read_bounded(&me);
    assert_eq!(frames.len(), 2, "snapshot and END, read once");
    assert_eq!(issues.len(), 1, "{issues:?}");
    let issue = &issues[0];
    assert_eq!(issue.kind, IssueKind::PartCycle);
    assert!(issue.is_damage());
    let text = issue.to_string();
    assert!(
        text.starts_with("cycle of parts at byte offset")
            && text.contains("\"self.ctrace\"")
            && text.contains("already read (as part 0)"),
        "{text}"
    );
    assert_eq!(issue.offset, frames[1].offset, "the END record's offset");

    // Two parts that name each other.
    let a = dir.path("a.ctrace");
    write_part(&a, 0, "a.ctrace.1");
    write_part(&dir.path("a.ctrace.1"), 1, "a.ctrace");
    let (frames, issues) = read_bounded(&a);
    let headers = frames
        .iter()
        .filter(|f| matches!(f.record, Record::Header(_)))
        .count();
    assert_eq!(headers, 1, "part 1's header, once (the first is the open)");
    assert_eq!(frames.len(), 5, "each part read once");
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].kind, IssueKind::PartCycle);
    assert!(issues[0].to_string().starts_with("part 1: cycle of parts"));

    // A hard link to an earlier part under another name.
    let b = dir.path("b.ctrace");
    write_part(&b, 0, "b.ctrace.1");
    std::fs::hard_link(&b, dir.path("b.ctrace.1")).expect("link");
    let (_, issues) = read_bounded(&b);
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].kind, IssueKind::PartCycle);
}

#[test]
fn a_directory_is_not_a_trace() {
    let dir = TempDir::new("dir");
    let err = Trace::open(&dir.0).err().expect("refused");
    assert!(matches!(err, TraceError::Directory { .. }), "{err}");
    assert!(err.is_bad_input());
    assert!(err.to_string().contains("is a directory"), "{err}");
}
