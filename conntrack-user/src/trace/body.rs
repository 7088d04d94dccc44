//! The body of a trace file after its preamble: the frames as stored, or a
//! sequence of independent zstd frames that decode to them.
//!
//! The zstd layer skips a damaged zstd frame by looking for the next zstd
//! frame magic, which is safe because the writer ends a zstd frame only
//! between trace frames: the next zstd frame starts with a whole trace frame.

use std::io::{self, Read};

use bytes::BytesMut;
use zstd::zstd_safe::{self, DCtx, InBuffer, OutBuffer, ResetDirective};

use super::{Issue, IssueKind};

/// Bytes read from the file at a time (the buffer is zeroed before each
/// read, so bigger is not better).
const CHUNK: usize = 64 << 10;
/// Magic number of a zstd frame, as stored (0xFD2FB528 little-endian).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

pub trait Body {
    /// Appends bytes of the body to `out`; returns false at its end.
    fn fill(&mut self, out: &mut BytesMut) -> io::Result<bool>;
    /// Problems found below the frame layer, with the body offset at which
    /// they take effect.
    fn take_issues(&mut self) -> Vec<(u64, Issue)>;
    /// The file offset of the zstd frame that holds body offset `at`.
    fn locate(&self, at: u64) -> Option<u64>;
}

pub struct Plain<R> {
    r: R,
}

impl<R: Read> Plain<R> {
    pub fn new(r: R) -> Self {
        Self { r }
    }
}

fn read_some(r: &mut impl Read, out: &mut BytesMut, max: usize) -> io::Result<usize> {
    let len = out.len();
    out.resize(len + max, 0);
    let n = loop {
        match r.read(&mut out[len..]) {
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                out.truncate(len);
                return Err(e);
            }
        }
    };
    out.truncate(len + n);
    Ok(n)
}

impl<R: Read> Body for Plain<R> {
    fn fill(&mut self, out: &mut BytesMut) -> io::Result<bool> {
        Ok(read_some(&mut self.r, out, CHUNK)? > 0)
    }

    fn take_issues(&mut self) -> Vec<(u64, Issue)> {
        Vec::new()
    }

    fn locate(&self, _at: u64) -> Option<u64> {
        None
    }
}

pub struct Zstd<R> {
    r: R,
    dctx: Box<DCtx<'static>>,
    input: BytesMut,
    /// Consumed bytes of `input`.
    pos: usize,
    /// File offset of `input[0]`.
    in_off: u64,
    eof: bool,
    /// File offset where the current zstd frame starts.
    frame_start: u64,
    mid_frame: bool,
    /// Looking for the next frame after damage.
    resyncing: bool,
    /// Body bytes produced so far.
    produced: u64,
    /// (body offset, file offset) of each zstd frame started, for messages.
    frames: Vec<(u64, u64)>,
    issues: Vec<(u64, Issue)>,
    scratch: Vec<u8>,
}

impl<R: Read> Zstd<R> {
    /// `in_off` is the file offset of the first byte `r` returns.
    pub fn new(r: R, in_off: u64) -> Self {
        Self {
            r,
            dctx: Box::new(DCtx::create()),
            input: BytesMut::new(),
            pos: 0,
            in_off,
            eof: false,
            frame_start: in_off,
            mid_frame: false,
            resyncing: false,
            produced: 0,
            frames: Vec::new(),
            issues: Vec::new(),
            scratch: Vec::new(),
        }
    }

    fn issue(&mut self, kind: IssueKind, offset: u64, detail: String) {
        let issue = Issue {
            kind,
            offset,
            compressed: true,
            detail,
            ..Issue::default()
        };
        self.issues.push((self.produced, issue));
    }

    /// Reads more input, dropping what was consumed; false at end of file.
    fn refill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        let _ = self.input.split_to(self.pos);
        self.in_off += self.pos as u64;
        self.pos = 0;
        let n = read_some(&mut self.r, &mut self.input, CHUNK)?;
        self.eof = n == 0;
        Ok(n > 0)
    }

    /// Skips to the next zstd frame magic; false if there is none.
    fn resync(&mut self) -> io::Result<bool> {
        loop {
            let rest = &self.input[self.pos..];
            if let Some(i) = rest.windows(4).position(|w| w == ZSTD_MAGIC) {
                self.pos += i;
                self.resyncing = false;
                return Ok(true);
            }
            // Keep a possible partial magic at the end of the buffer.
            self.pos = self.input.len().saturating_sub(3).max(self.pos);
            if !self.refill()? {
                return Ok(false);
            }
        }
    }
}

impl<R: Read> Body for Zstd<R> {
    fn fill(&mut self, out: &mut BytesMut) -> io::Result<bool> {
        loop {
            if self.resyncing {
                let skipped_from = self.frame_start;
                if !self.resync()? {
                    let end = self.in_off + self.input.len() as u64;
                    self.issue(
                        IssueKind::Compression,
                        skipped_from,
                        format!(
                            "no intact zstd frame follows: {} bytes to the end of the file \
                             were skipped",
                            end.saturating_sub(skipped_from)
                        ),
                    );
                    return Ok(false);
                }
                let at = self.in_off + self.pos as u64;
                if let Some((_, last)) = self.issues.last_mut() {
                    last.resumed_at = Some(at);
                    last.len = Some(at.saturating_sub(skipped_from));
                }
            }
            if self.pos == self.input.len() && !self.refill()? {
                if self.mid_frame {
                    self.issue(
                        IssueKind::Truncated,
                        self.frame_start,
                        "the file ends inside this zstd frame (the recording was cut off); \
                         its complete blocks were read"
                            .to_owned(),
                    );
                    self.mid_frame = false;
                }
                return Ok(false);
            }
            if !self.mid_frame {
                self.frame_start = self.in_off + self.pos as u64;
                self.frames.push((self.produced, self.frame_start));
            }
            self.scratch.clear();
            self.scratch.reserve(DCtx::out_size());
            let (result, consumed) = {
                let mut input = InBuffer::around(&self.input[self.pos..]);
                let mut ob = OutBuffer::around(&mut self.scratch);
                let r = self.dctx.decompress_stream(&mut ob, &mut input);
                (r, input.pos())
            };
            out.extend_from_slice(&self.scratch);
            self.pos += consumed;
            let produced = self.scratch.len();
            self.produced += produced as u64;
            match result {
                Ok(0) => self.mid_frame = false,
                Ok(_) => self.mid_frame = true,
                Err(code) => {
                    let start = self.frame_start;
                    self.issue(
                        IssueKind::Compression,
                        start,
                        format!("zstd: {}", zstd_safe::get_error_name(code)),
                    );
                    // A reset context accepts a new frame; the search starts
                    // one byte into the damaged frame.
                    let _ = self.dctx.reset(ResetDirective::SessionOnly);
                    self.mid_frame = false;
                    self.resyncing = true;
                    self.pos = match (start + 1).checked_sub(self.in_off) {
                        Some(r) => usize::try_from(r)
                            .unwrap_or(usize::MAX)
                            .min(self.input.len()),
                        None => 0,
                    };
                }
            }
            if produced > 0 {
                return Ok(true);
            }
        }
    }

    fn take_issues(&mut self) -> Vec<(u64, Issue)> {
        std::mem::take(&mut self.issues)
    }

    fn locate(&self, at: u64) -> Option<u64> {
        let i = self.frames.partition_point(|(body, _)| *body <= at);
        i.checked_sub(1).map(|i| self.frames[i].1)
    }
}
