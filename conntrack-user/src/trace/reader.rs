//! Reading trace files frame by frame.
//!
//! Problems that leave the rest of the file usable (damage in the middle, a
//! cut-off tail, an unknown record) come back as [`Item::Issue`] in file
//! order and reading goes on; problems that make the file unusable (not a
//! trace, an unknown version, a damaged header) are [`TraceError`]s.
//! Skipping damage is safe because every frame is self-contained: events
//! carry absolute timestamps and snapshots carry cumulative counters.

use std::{
    collections::VecDeque,
    fs::File,
    io::{self, Read},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use bytes::{Bytes, BytesMut};

use super::{
    Issue, IssueKind, TraceError,
    body::{self, Body},
    format::{
        self, FLAG_ZSTD, FORMAT_VERSION, FORMAT_VERSION_1, FRAME_HEADER_LEN, FRAME_MARKER,
        FrameHeader, Header, MAGIC, PREAMBLE_LEN, Record, decode_record, rtype, rtype_name,
    },
};

/// One intact record and where it was.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// Part of a rotated recording (0 for the first file).
    pub part: u32,
    /// Byte offset of the frame (see [`Issue::offset`] for compressed files).
    pub offset: u64,
    pub seq: u32,
    /// CLOCK_MONOTONIC when the recorder received the data.
    pub ts_ns: u64,
    pub flags: u8,
    /// Payload bytes.
    pub len: u32,
    pub record: Record,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Record(Frame),
    Issue(Issue),
}

/// What the next bytes hold.
enum Step {
    Frame(FrameHeader, Bytes, u64),
    /// Clean end of the body.
    End,
    /// Not a valid frame here.
    Bad(String),
    /// A frame that runs past the end of the body.
    Tail(String),
}

/// One trace file.
pub struct TraceReader {
    path: PathBuf,
    part: u32,
    /// Format version from the preamble (events are 112 bytes in format 1).
    version: u16,
    body: Box<dyn Body + Send>,
    compressed: bool,
    /// Unread body bytes; `buf[0]` is at offset `base`.
    buf: BytesMut,
    base: u64,
    eof: bool,
    header: Header,
    header_frame: Frame,
    next_seq: u32,
    saw_end: bool,
    /// The tail was already reported as cut off or damaged.
    cut: bool,
    done: bool,
    pending: VecDeque<Issue>,
    body_issues: VecDeque<(u64, Issue)>,
    /// Damage found by the zstd layer, completed with the number of frames
    /// lost once the next intact frame shows its sequence number.
    awaiting_gap: Option<Issue>,
    /// (device, inode) of the file, when read from one.
    identity: Option<(u64, u64)>,
}

impl TraceReader {
    pub fn open(path: &Path) -> Result<Self, TraceError> {
        let open_err = |source| TraceError::Open {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        if meta.is_dir() {
            return Err(TraceError::Directory {
                path: path.to_owned(),
            });
        }
        let mut reader = Self::from_reader(path, Box::new(file))?;
        reader.identity = Some((meta.dev(), meta.ino()));
        Ok(reader)
    }

    /// Reads a trace from any byte stream; `path` names it in messages.
    pub fn from_reader(path: &Path, mut r: Box<dyn Read + Send>) -> Result<Self, TraceError> {
        let path = path.to_owned();
        let mut pre = [0u8; PREAMBLE_LEN];
        let n = read_full(&mut r, &mut pre).map_err(|source| TraceError::Read {
            path: path.clone(),
            source,
        })?;
        let magic_len = n.min(MAGIC.len());
        if n == 0 || pre[..magic_len] != MAGIC[..magic_len] {
            return Err(TraceError::NotATrace { path });
        }
        if n < PREAMBLE_LEN {
            return Err(TraceError::TooShort {
                path,
                len: n as u64,
                need: PREAMBLE_LEN as u64,
            });
        }
        let crc = u32::from_le_bytes([pre[12], pre[13], pre[14], pre[15]]);
        if format::crc32(&[&pre[..12]]) != crc {
            return Err(TraceError::BadHeader {
                path,
                offset: 8,
                detail: "the preamble's checksum does not match (bytes 8-15 are damaged)".into(),
            });
        }
        let version = u16::from_le_bytes([pre[8], pre[9]]);
        if version != FORMAT_VERSION && version != FORMAT_VERSION_1 {
            return Err(TraceError::UnknownVersion {
                path,
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let flags = u16::from_le_bytes([pre[10], pre[11]]);
        if flags & !FLAG_ZSTD != 0 {
            return Err(TraceError::BadHeader {
                path,
                offset: 10,
                detail: format!("unknown flags {flags:#06x} (written by a newer ctscope?)"),
            });
        }
        let compressed = flags & FLAG_ZSTD != 0;
        let (body, base): (Box<dyn Body + Send>, u64) = if compressed {
            (Box::new(body::Zstd::new(r, PREAMBLE_LEN as u64)), 0)
        } else {
            (Box::new(body::Plain::new(r)), PREAMBLE_LEN as u64)
        };
        let mut reader = Self {
            path,
            part: 0,
            version,
            body,
            compressed,
            buf: BytesMut::new(),
            base,
            eof: false,
            header: Header::default(),
            header_frame: Frame {
                part: 0,
                offset: base,
                seq: 0,
                ts_ns: 0,
                flags: 0,
                len: 0,
                record: Record::Header(Box::default()),
            },
            next_seq: 0,
            saw_end: false,
            cut: false,
            done: false,
            pending: VecDeque::new(),
            body_issues: VecDeque::new(),
            awaiting_gap: None,
            identity: None,
        };
        reader.read_header()?;
        Ok(reader)
    }

    fn read_header(&mut self) -> Result<(), TraceError> {
        let offset = self.base;
        let bad = |me: &Self, detail: String| TraceError::BadHeader {
            path: me.path.clone(),
            offset,
            detail,
        };
        let (h, payload) = match self.next_raw()? {
            Step::Frame(h, payload, _) => (h, payload),
            Step::End => return Err(bad(self, "the file ends before the header record".into())),
            Step::Tail(d) | Step::Bad(d) => return Err(bad(self, d)),
        };
        if h.rtype != rtype::HEADER {
            let detail = format!(
                "the first record is a {} record, not the header",
                rtype_name(h.rtype)
            );
            return Err(bad(self, detail));
        }
        let header: Header = serde_json::from_slice(&payload)
            .map_err(|e| bad(self, format!("the header record does not decode: {e}")))?;
        // The header repeats the preamble's version; a disagreement means the
        // file was spliced or written by something else.
        if header.format_version != self.version {
            let detail = format!(
                "the header record says format version {} but the preamble says {}",
                header.format_version, self.version
            );
            return Err(bad(self, detail));
        }
        self.part = header.part;
        self.next_seq = h.seq.wrapping_add(1);
        self.header_frame = Frame {
            part: header.part,
            offset,
            seq: h.seq,
            ts_ns: h.ts_ns,
            flags: h.flags,
            len: h.len,
            record: Record::Header(Box::new(header.clone())),
        };
        self.header = header;
        Ok(())
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The header as a frame, for readers of several parts.
    pub fn header_frame(&self) -> &Frame {
        &self.header_frame
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// (device, inode) of the file read, which tells a file met twice
    /// under different names; `None` for a stream.
    pub fn identity(&self) -> Option<(u64, u64)> {
        self.identity
    }

    /// Which part of a rotated recording this file is.
    pub fn part(&self) -> u32 {
        self.part
    }

    pub fn is_compressed(&self) -> bool {
        self.compressed
    }

    /// Body bytes read so far (file bytes for uncompressed traces).
    pub fn position(&self) -> u64 {
        self.base
    }

    /// The next record or issue; `None` at the end. Errors are I/O errors.
    pub fn next_item(&mut self) -> Result<Option<Item>, TraceError> {
        loop {
            while let Some((at, _)) = self.body_issues.front() {
                if *at > self.base && !self.done {
                    break;
                }
                if let Some((_, mut issue)) = self.body_issues.pop_front() {
                    issue.part = self.part;
                    if issue.kind == IssueKind::Truncated {
                        self.cut = true;
                    }
                    if issue.resumed_at.is_some() && !self.done {
                        if let Some(earlier) = self.awaiting_gap.replace(issue) {
                            self.pending.push_back(earlier);
                        }
                    } else {
                        self.pending.push_back(issue);
                    }
                }
            }
            if let Some(issue) = self.pending.pop_front() {
                return Ok(Some(Item::Issue(issue)));
            }
            if self.done {
                if let Some(issue) = self.awaiting_gap.take() {
                    return Ok(Some(Item::Issue(issue)));
                }
                return Ok(None);
            }
            match self.next_raw()? {
                Step::End => {
                    self.done = true;
                    self.collect_body_issues();
                    let cut = self.cut || self.body_issues.iter().any(|(_, i)| !i.is_damage());
                    if !self.saw_end && !cut {
                        let detail = "the file ends after an intact frame but without the end \
                                      record: ctscope was killed or crashed while recording; \
                                      everything before this offset is intact"
                            .to_owned();
                        self.issue(IssueKind::Unfinished, self.base, detail);
                    }
                }
                Step::Tail(detail) => self.resync(detail, true)?,
                Step::Bad(detail) => self.resync(detail, false)?,
                Step::Frame(h, payload, offset) => {
                    self.sequence_gap(h.seq, offset);
                    self.next_seq = h.seq.wrapping_add(1);
                    match decode_record(self.version, h.rtype, &payload) {
                        Ok(Some(record)) => {
                            if matches!(record, Record::End(_)) {
                                self.saw_end = true;
                            }
                            return Ok(Some(Item::Record(Frame {
                                part: self.part,
                                offset,
                                seq: h.seq,
                                ts_ns: h.ts_ns,
                                flags: h.flags,
                                len: h.len,
                                record,
                            })));
                        }
                        Ok(None) => {
                            let detail = format!("type {} ({} bytes) skipped", h.rtype, h.len);
                            self.issue(IssueKind::UnknownRecord, offset, detail);
                        }
                        Err(e) => {
                            let detail = format!("{} record: {e}", rtype_name(h.rtype));
                            self.issue(IssueKind::BadRecord, offset, detail);
                        }
                    }
                }
            }
        }
    }

    /// Frames missing before the frame at `offset`, by sequence number:
    /// credited to the zstd damage that preceded it, or reported.
    fn sequence_gap(&mut self, seq: u32, offset: u64) {
        let Some(lost) = frames_skipped(self.next_seq, seq) else {
            // A sequence number seen before (a frame written twice, parts
            // spliced together): nothing is missing, but the data repeats.
            let detail = format!(
                "this frame's sequence number {seq} goes back (expected {}): frames repeat",
                self.next_seq
            );
            if let Some(issue) = self.awaiting_gap.take() {
                self.pending.push_back(issue);
            }
            self.issue(IssueKind::Corrupt, offset, detail);
            return;
        };
        if let Some(mut issue) = self.awaiting_gap.take() {
            issue.frames_lost = Some(lost);
            self.pending.push_back(issue);
        } else if lost != 0 {
            let detail = format!(
                "{lost} frames are missing before this one (sequence number {seq}, expected {})",
                self.next_seq
            );
            let mut issue = self.make_issue(IssueKind::Corrupt, offset, detail);
            issue.frames_lost = Some(lost);
            self.pending.push_back(issue);
        }
    }

    fn issue(&mut self, kind: IssueKind, offset: u64, detail: String) {
        self.pending
            .push_back(self.make_issue(kind, offset, detail));
    }

    /// For compressed traces, the file offset of the zstd frame that holds
    /// body offset `offset`.
    pub fn zstd_frame_of(&self, offset: u64) -> Option<u64> {
        if self.compressed {
            self.body.locate(offset)
        } else {
            None
        }
    }

    fn make_issue(&self, kind: IssueKind, offset: u64, detail: String) -> Issue {
        Issue {
            kind,
            offset,
            zstd_frame: self.zstd_frame_of(offset),
            part: self.part,
            detail,
            ..Issue::default()
        }
    }

    fn collect_body_issues(&mut self) {
        self.body_issues.extend(self.body.take_issues());
    }

    /// Makes `buf` hold at least `n` bytes; false if the body ends first.
    fn ensure(&mut self, n: usize) -> Result<bool, TraceError> {
        while self.buf.len() < n {
            if self.eof {
                return Ok(false);
            }
            let more = self
                .body
                .fill(&mut self.buf)
                .map_err(|source| TraceError::Read {
                    path: self.path.clone(),
                    source,
                })?;
            self.eof = !more;
            self.collect_body_issues();
        }
        Ok(true)
    }

    fn advance(&mut self, n: usize) {
        let n = n.min(self.buf.len());
        let _ = self.buf.split_to(n);
        self.base += n as u64;
    }

    /// Reads the frame at `base` if it is intact.
    fn next_raw(&mut self) -> Result<Step, TraceError> {
        if !self.ensure(FRAME_HEADER_LEN)? {
            if self.buf.is_empty() {
                return Ok(Step::End);
            }
            return Ok(Step::Tail(format!(
                "the last {} bytes are shorter than a frame header ({FRAME_HEADER_LEN} bytes)",
                self.buf.len()
            )));
        }
        let Some(h) = FrameHeader::parse(&self.buf) else {
            return Ok(Step::Bad(
                "no frame marker where a frame should start".into(),
            ));
        };
        if !h.plausible() {
            return Ok(Step::Bad(format!(
                "impossible frame header (payload length {}, reserved field {:#x})",
                h.len, h.reserved
            )));
        }
        let total = FRAME_HEADER_LEN + h.len as usize;
        if !self.ensure(total)? {
            return Ok(Step::Tail(format!(
                "the file ends inside a {} frame: {} of its {total} bytes are present",
                rtype_name(h.rtype),
                self.buf.len()
            )));
        }
        if !h.checks(
            &self.buf[..FRAME_HEADER_LEN],
            &self.buf[FRAME_HEADER_LEN..total],
        ) {
            return Ok(Step::Bad(format!(
                "checksum mismatch in a frame of type {} ({} payload bytes)",
                rtype_name(h.rtype),
                h.len
            )));
        }
        let offset = self.base;
        let frame = self.buf.split_to(total).freeze();
        self.base += total as u64;
        Ok(Step::Frame(h, frame.slice(FRAME_HEADER_LEN..), offset))
    }

    /// Skips from `base` to the next intact frame. `tail`: the frame at
    /// `base` runs past the end; with no intact frame after it, the file
    /// was cut off rather than damaged.
    fn resync(&mut self, detail: String, tail: bool) -> Result<(), TraceError> {
        let start = self.base;
        let expected = self.next_seq;
        // A candidate frame cut off by the end of the file.
        let mut incomplete: Option<u64> = None;
        self.advance(1);
        loop {
            let Some(i) = find(&self.buf, &FRAME_MARKER) else {
                self.advance(self.buf.len().saturating_sub(FRAME_MARKER.len() - 1));
                if !self.ensure(self.buf.len() + 1)? {
                    break;
                }
                continue;
            };
            self.advance(i);
            if !self.ensure(FRAME_HEADER_LEN)? {
                incomplete.get_or_insert(self.base);
                break;
            }
            if let Some(h) = FrameHeader::parse(&self.buf).filter(FrameHeader::plausible) {
                let total = FRAME_HEADER_LEN + h.len as usize;
                if !self.ensure(total)? {
                    incomplete.get_or_insert(self.base);
                } else if h.checks(
                    &self.buf[..FRAME_HEADER_LEN],
                    &self.buf[FRAME_HEADER_LEN..total],
                ) {
                    let mut issue = self.make_issue(IssueKind::Corrupt, start, detail);
                    issue.len = Some(self.base - start);
                    issue.resumed_at = Some(self.base);
                    issue.frames_lost = frames_skipped(expected, h.seq);
                    if let Some(mut earlier) = self.awaiting_gap.take() {
                        // The zstd damage is what this skip is about: the
                        // frames lost are counted there, once.
                        earlier.frames_lost = issue.frames_lost.take();
                        self.pending.push_back(earlier);
                    }
                    self.pending.push_back(issue);
                    // The gap is accounted for here.
                    self.next_seq = h.seq;
                    return Ok(());
                }
            }
            self.advance(1);
        }
        // The end of the body came first.
        let end = self.base + self.buf.len() as u64;
        self.buf.clear();
        self.base = end;
        self.cut = true;
        if tail {
            let detail = format!("{detail}; everything before this offset is intact");
            self.issue(IssueKind::Truncated, start, detail);
            return Ok(());
        }
        let stop = incomplete.unwrap_or(end);
        let mut issue = self.make_issue(IssueKind::Corrupt, start, detail);
        issue.len = Some(stop - start);
        self.pending.push_back(issue);
        if let Some(at) = incomplete {
            let detail = "the file ends inside the frame that follows the damage".to_owned();
            self.issue(IssueKind::Truncated, at, detail);
        }
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Frames between the one expected and the one found, by sequence number
/// (which wraps at 2^32); `None` when the found one is behind: a repeat,
/// not a loss.
fn frames_skipped(expected: u32, found: u32) -> Option<u32> {
    let ahead = found.wrapping_sub(expected);
    (ahead < 1 << 31).then_some(ahead)
}

#[cfg(test)]
mod sequence_tests {
    use super::frames_skipped;

    #[test]
    fn a_repeated_or_earlier_frame_is_not_four_billion_lost() {
        assert_eq!(frames_skipped(5, 5), Some(0));
        assert_eq!(frames_skipped(5, 9), Some(4));
        assert_eq!(frames_skipped(u32::MAX, 1), Some(2));
        assert_eq!(frames_skipped(5, 4), None);
        assert_eq!(frames_skipped(5, 0), None);
    }
}
