//! Writing trace files: buffered, flushed at least every [`FLUSH_EVERY`] and
//! on every snapshot, optionally zstd-compressed, optionally rotated.

use std::{
    fs::File,
    io::{self, BufWriter, Write as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use conntrack_common::Event;
use zstd::zstd_safe::{self, CCtx, CParameter, InBuffer, OutBuffer, zstd_sys::ZSTD_EndDirective};

use super::{
    TraceError,
    format::{
        self, EVENT_LEN, End, FRAME_HEADER_LEN, Header, Lost, Snapshot, encode_event,
        encode_frame_header, encode_preamble, fflag, rtype,
    },
};
use crate::{event::Sample, fsutil, model::buckets::BucketWalk, source::live::monotonic_ns};

/// Buffered data reaches the file at least this often, so a crash or a
/// SIGKILL loses less than a second.
pub const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// Events per EVENTS frame at most.
const EVENTS_PER_FRAME: usize = 4096;
/// Write buffer size.
const BUFFER: usize = 1 << 20;
/// zstd level: fast enough for the full event rate on one core.
const ZSTD_LEVEL: i32 = 3;
/// Smallest `--max-size`: a part must hold its header and a snapshot.
pub const MIN_PART_SIZE: u64 = 64 << 10;

#[derive(Clone, Debug, Default)]
pub struct WriterOptions {
    pub compress: bool,
    /// Start a new part (FILE.1, FILE.2, ...) before a part passes this size.
    pub max_size: Option<u64>,
}

/// Totals over all parts written so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterTotals {
    /// Bytes of all parts, including what is still buffered.
    pub bytes: u64,
    pub events: u64,
    pub snapshots: u64,
    pub frames: u64,
    /// Parts started (1 without rotation).
    pub parts: u32,
    /// Events reported lost by the kernel (sum of LOST records).
    pub lost: u64,
}

pub struct TraceWriter {
    base: PathBuf,
    path: PathBuf,
    opts: WriterOptions,
    header: Header,
    sink: Sink,
    /// Sequence number of the next frame in this part.
    seq: u32,
    part_events: u64,
    /// Whether this part holds anything beyond its header and baseline.
    part_content: bool,
    /// The latest snapshot (timestamp, JSON), the baseline of the next part.
    last_snapshot: Option<(u64, Bytes)>,
    last_flush: Instant,
    frame: BytesMut,
    payload: BytesMut,
    done_bytes: u64,
    pub totals: WriterTotals,
}

impl TraceWriter {
    /// Creates `path` (mode 0600: traces hold addresses) and writes the
    /// preamble and `header`.
    pub fn create(
        path: &Path,
        mut header: Header,
        opts: WriterOptions,
    ) -> Result<Self, TraceError> {
        header.format_version = format::FORMAT_VERSION;
        header.compression = if opts.compress { "zstd" } else { "none" }.to_owned();
        header.part = 0;
        let sink = Sink::create(path, opts.compress)?;
        let mut w = Self {
            base: path.to_owned(),
            path: path.to_owned(),
            opts,
            header,
            sink,
            seq: 0,
            part_events: 0,
            part_content: false,
            last_snapshot: None,
            last_flush: Instant::now(),
            frame: BytesMut::with_capacity(BUFFER),
            payload: BytesMut::with_capacity(EVENTS_PER_FRAME * EVENT_LEN),
            done_bytes: 0,
            totals: WriterTotals::default(),
        };
        w.start_part()?;
        Ok(w)
    }

    /// The file being written now.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    fn start_part(&mut self) -> Result<(), TraceError> {
        self.totals.parts += 1;
        self.seq = 0;
        self.part_events = 0;
        self.part_content = false;
        let header = serde_json::to_vec(&self.header).map_err(|e| self.io_err(e.into()))?;
        self.frame(rtype::HEADER, 0, self.header.start_mono_ns, &header)?;
        if let Some((ts, snap)) = self.last_snapshot.clone() {
            self.frame(rtype::SNAPSHOT, fflag::BASELINE, ts, &snap)?;
        }
        self.flush()
    }

    /// Writes kernel events, in the order given.
    pub fn write_events(&mut self, ts_ns: u64, events: &[Event]) -> Result<(), TraceError> {
        for chunk in events.chunks(EVENTS_PER_FRAME) {
            let mut payload = std::mem::take(&mut self.payload);
            payload.clear();
            for ev in chunk {
                encode_event(&mut payload, ev);
            }
            let r = self.content_frame(rtype::EVENTS, ts_ns, &payload);
            self.payload = payload;
            r?;
            self.part_events += chunk.len() as u64;
            self.totals.events += chunk.len() as u64;
        }
        self.flush_if_due()
    }

    /// Writes a snapshot and flushes, so every snapshot is on disk.
    pub fn write_snapshot(&mut self, ts_ns: u64, sample: &Sample) -> Result<(), TraceError> {
        let json =
            serde_json::to_vec(&Snapshot::from(sample)).map_err(|e| self.io_err(e.into()))?;
        let json = Bytes::from(json);
        self.content_frame(rtype::SNAPSHOT, ts_ns, &json)?;
        self.last_snapshot = Some((ts_ns, json));
        self.totals.snapshots += 1;
        self.flush()
    }

    pub fn write_lost(&mut self, ts_ns: u64, lost: &Lost) -> Result<(), TraceError> {
        self.content_frame(rtype::LOST, ts_ns, &lost.encode())?;
        self.totals.lost += lost.total();
        Ok(())
    }

    pub fn write_buckets(&mut self, ts_ns: u64, walk: &BucketWalk) -> Result<(), TraceError> {
        let json = serde_json::to_vec(walk).map_err(|e| self.io_err(e.into()))?;
        self.content_frame(rtype::BUCKETS, ts_ns, &json)?;
        self.flush_if_due()
    }

    /// Flushes if the last flush is [`FLUSH_EVERY`] ago; call it at least
    /// that often when idle.
    pub fn flush_if_due(&mut self) -> Result<(), TraceError> {
        if self.last_flush.elapsed() >= FLUSH_EVERY {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands everything buffered to the kernel. With compression this ends
    /// the current zstd frame, so the file decodes up to here.
    pub fn flush(&mut self) -> Result<(), TraceError> {
        self.last_flush = Instant::now();
        let r = self.sink.flush();
        self.totals.bytes = self.done_bytes + self.sink.size();
        r.map_err(|e| self.io_err(e))
    }

    /// Writes the END record and closes the file, synced to disk.
    pub fn finish(mut self, reason: &str) -> Result<WriterTotals, TraceError> {
        self.end_part(reason, None)?;
        Ok(self.totals)
    }

    fn end_part(&mut self, reason: &str, next_part: Option<String>) -> Result<(), TraceError> {
        let end = End {
            reason: reason.to_owned(),
            wall_ms: wall_ns() / 1_000_000,
            mono_ns: monotonic_ns(),
            frames: self.seq,
            events: self.part_events,
            next_part,
        };
        let json = serde_json::to_vec(&end).map_err(|e| self.io_err(e.into()))?;
        self.frame(rtype::END, 0, end.mono_ns, &json)?;
        self.flush()?;
        let r = self.sink.close();
        r.map_err(|e| self.io_err(e))
    }

    /// Ends this part and starts the next, FILE.N.
    fn rotate(&mut self) -> Result<(), TraceError> {
        let part = self.header.part + 1;
        let path = part_path(&self.base, part);
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        self.end_part("rotated", name)?;
        self.done_bytes += self.sink.size();
        self.sink = Sink::create(&path, self.opts.compress)?;
        self.path = path;
        self.header.part = part;
        self.header.start_wall_ns = wall_ns();
        self.header.start_mono_ns = monotonic_ns();
        self.start_part()
    }

    /// A frame that counts as content for rotation: rotates first if it
    /// would take the part past `--max-size`.
    fn content_frame(&mut self, rtype: u8, ts_ns: u64, payload: &[u8]) -> Result<(), TraceError> {
        if let Some(max) = self.opts.max_size {
            // Plain files know their size exactly; zstd output lags its input
            // by at most a block, so the check after the fact is close.
            let next = if self.opts.compress {
                0
            } else {
                (FRAME_HEADER_LEN + payload.len()) as u64
            };
            if self.part_content && self.sink.size() + next > max {
                self.rotate()?;
            }
        }
        self.part_content = true;
        self.frame(rtype, 0, ts_ns, payload)
    }

    fn frame(
        &mut self,
        rtype: u8,
        flags: u8,
        ts_ns: u64,
        payload: &[u8],
    ) -> Result<(), TraceError> {
        self.frame.clear();
        encode_frame_header(&mut self.frame, rtype, flags, self.seq, ts_ns, payload);
        self.seq = self.seq.wrapping_add(1);
        self.totals.frames += 1;
        let r = self
            .sink
            .write(&self.frame)
            .and_then(|()| self.sink.write(payload));
        self.totals.bytes = self.done_bytes + self.sink.size();
        r.map_err(|e| self.io_err(e))
    }

    fn io_err(&self, source: io::Error) -> TraceError {
        TraceError::Write {
            path: self.path.clone(),
            source,
        }
    }
}

/// Path of part `n`: FILE for 0, FILE.n after.
pub fn part_path(base: &Path, n: u32) -> PathBuf {
    if n == 0 {
        return base.to_owned();
    }
    let mut name = base.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Wall clock in ns since the Unix epoch.
pub fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Opens a new trace file, mode 0600 (traces hold addresses): a new file
/// renamed over `path`, never a write through a link or into someone
/// else's file (`fsutil`).
fn open_file(path: &Path) -> Result<File, TraceError> {
    fsutil::create_replacing(path, 0o600).map_err(|source| {
        if source.kind() == io::ErrorKind::InvalidInput {
            TraceError::Refused(source.to_string())
        } else {
            TraceError::Create {
                path: path.to_owned(),
                source,
            }
        }
    })
}

enum Sink {
    Plain {
        out: BufWriter<File>,
        size: u64,
    },
    Zstd {
        file: File,
        cctx: Box<CCtx<'static>>,
        out: Vec<u8>,
        /// Bytes already handed to the file.
        written: u64,
        /// Data went in since the last zstd frame was ended.
        open: bool,
    },
}

fn zstd_err(code: usize) -> io::Error {
    io::Error::other(format!("zstd: {}", zstd_safe::get_error_name(code)))
}

impl Sink {
    fn create(path: &Path, compress: bool) -> Result<Self, TraceError> {
        let err = |source| TraceError::Write {
            path: path.to_owned(),
            source,
        };
        let mut file = open_file(path)?;
        let preamble = encode_preamble(compress);
        file.write_all(&preamble).map_err(err)?;
        if !compress {
            return Ok(Sink::Plain {
                out: BufWriter::with_capacity(BUFFER, file),
                size: preamble.len() as u64,
            });
        }
        let mut cctx = Box::new(CCtx::create());
        cctx.set_parameter(CParameter::CompressionLevel(ZSTD_LEVEL))
            .map_err(|c| err(zstd_err(c)))?;
        Ok(Sink::Zstd {
            file,
            cctx,
            out: Vec::with_capacity(BUFFER),
            written: preamble.len() as u64,
            open: false,
        })
    }

    /// Bytes of the file, counting what is buffered here.
    fn size(&self) -> u64 {
        match self {
            Sink::Plain { size, .. } => *size,
            Sink::Zstd { out, written, .. } => *written + out.len() as u64,
        }
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Sink::Plain { out, size } => {
                out.write_all(data)?;
                *size += data.len() as u64;
                Ok(())
            }
            Sink::Zstd {
                file,
                cctx,
                out,
                written,
                open,
            } => {
                *open = true;
                let mut input = InBuffer::around(data);
                while input.pos() < data.len() {
                    run(cctx, out, &mut input, ZSTD_EndDirective::ZSTD_e_continue)?;
                }
                if out.len() >= BUFFER {
                    file.write_all(out)?;
                    *written += out.len() as u64;
                    out.clear();
                }
                Ok(())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain { out, .. } => out.flush(),
            Sink::Zstd {
                file,
                cctx,
                out,
                written,
                open,
            } => {
                if !std::mem::take(open) {
                    return Ok(());
                }
                // Ending the frame (not just flushing a block) makes each
                // zstd frame independent: damage in one leaves the others
                // readable.
                let mut empty = InBuffer::around(&[]);
                while run(cctx, out, &mut empty, ZSTD_EndDirective::ZSTD_e_end)? != 0 {}
                file.write_all(out)?;
                *written += out.len() as u64;
                out.clear();
                Ok(())
            }
        }
    }

    fn close(&mut self) -> io::Result<()> {
        self.flush()?;
        match self {
            Sink::Plain { out, .. } => out.get_ref().sync_all(),
            Sink::Zstd { file, .. } => file.sync_all(),
        }
    }
}

/// One call of the streaming compressor, appending to `out`; returns what
/// zstd says remains to be flushed.
fn run(
    cctx: &mut CCtx<'static>,
    out: &mut Vec<u8>,
    input: &mut InBuffer<'_>,
    op: ZSTD_EndDirective,
) -> io::Result<usize> {
    out.reserve(zstd_safe::CCtx::out_size());
    let len = out.len();
    let mut ob = OutBuffer::around_pos(out, len);
    cctx.compress_stream2(&mut ob, input, op).map_err(zstd_err)
}
