//! Trace files: what `ctscope record` writes and `replay`, `export` and
//! `info` read. The layout is specified in docs/trace-format.md.
//!
//! - [`format`]: the preamble, frames and record payloads;
//! - [`writer`]: buffered, flushed every half second, optionally zstd,
//!   rotated by size;
//! - [`recorder`]: turns the live source's messages into records;
//! - [`reader`]: reads frame by frame, reports damage by byte offset and
//!   resumes at the next intact frame;
//! - [`recording`]: follows a rotated recording from part to part;
//! - [`session`]: the writer thread of a live recording;
//! - [`filter`], [`export`], [`summary`]: what the commands build on.

mod body;
pub mod export;
pub mod filter;
pub mod format;
pub mod reader;
pub mod recorder;
pub mod recording;
pub mod session;
pub mod summary;
pub mod writer;

#[cfg(test)]
mod mutation_tests;
#[cfg(test)]
pub(crate) mod tests;

use std::{fmt, io, path::PathBuf};

pub use format::{End, Header, Lost, Record, Snapshot};
pub use reader::{Frame, Item, TraceReader};
pub use recording::Trace;
pub use writer::{TraceWriter, WriterOptions};

/// Errors that stop reading or writing a trace.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} is a directory, not a trace file: give the file `ctscope record -o` wrote \
         (the first part of a rotated recording)"
    )]
    Directory { path: PathBuf },
    #[error(
        "{path} is not a ctscope trace: it does not start with the trace magic (byte offset 0); \
         record one with `ctscope record -o FILE`"
    )]
    NotATrace { path: PathBuf },
    #[error(
        "{path}: the file is {len} bytes long, too short for a trace preamble ({need} bytes): \
         the recording was cut off before it started"
    )]
    TooShort { path: PathBuf, len: u64, need: u64 },
    #[error(
        "{path}: trace format version {found} is not supported; this ctscope reads versions 1 \
         to {supported}. Use the ctscope version that recorded it, or a newer one"
    )]
    UnknownVersion {
        path: PathBuf,
        found: u16,
        supported: u16,
    },
    #[error("{path}: damaged trace header at byte offset {offset}: {detail}")]
    BadHeader {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot create {path}: {source}; check that its directory exists and is writable")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The output path is not something ctscope will replace (a link, a
    /// directory, a device).
    #[error("cannot write the trace: {0}")]
    Refused(String),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl TraceError {
    /// The file given is not a readable trace (a bad argument, exit 2), as
    /// opposed to an I/O failure.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            TraceError::NotATrace { .. }
                | TraceError::Directory { .. }
                | TraceError::TooShort { .. }
                | TraceError::UnknownVersion { .. }
                | TraceError::BadHeader { .. }
                | TraceError::Open { .. }
                | TraceError::Create { .. }
                | TraceError::Refused(_)
        )
    }
}

/// What kind of problem the reader met and went past.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueKind {
    /// Damaged bytes between intact frames: skipped.
    #[default]
    Corrupt,
    /// The file ends inside a frame: everything before it is intact.
    Truncated,
    /// The file ends after a whole frame but without the END record: the
    /// recorder was killed or crashed.
    Unfinished,
    /// A frame with a valid checksum whose content does not decode.
    BadRecord,
    /// A record type this version does not know; skipped.
    UnknownRecord,
    /// Damage in the zstd layer of a compressed file.
    Compression,
    /// The next part of a rotated recording is missing or unreadable.
    MissingPart,
    /// An END record names a part already read (itself, or an earlier
    /// part): following it would never end, so reading stops there.
    PartCycle,
}

/// A problem found while reading, with where it is. Reading goes on.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Issue {
    pub kind: IssueKind,
    /// Byte offset: in the file for uncompressed traces and for the zstd
    /// layer; in the decompressed body for frames of compressed traces.
    pub offset: u64,
    /// Whether `offset` is a file offset of the zstd layer.
    pub compressed: bool,
    /// For frames of compressed traces: the file offset of the zstd frame.
    pub zstd_frame: Option<u64>,
    /// Bytes skipped.
    pub len: Option<u64>,
    /// Where reading resumed.
    pub resumed_at: Option<u64>,
    /// Frames missing, from the sequence numbers around the damage.
    pub frames_lost: Option<u32>,
    /// Which part of a rotated recording (0 for the first file).
    pub part: u32,
    pub detail: String,
}

impl Issue {
    /// Data between intact frames was lost (as opposed to a cut-off tail,
    /// the expected result of a crash).
    pub fn is_damage(&self) -> bool {
        match self.kind {
            IssueKind::Corrupt
            | IssueKind::BadRecord
            | IssueKind::MissingPart
            | IssueKind::PartCycle => true,
            IssueKind::Compression => self.resumed_at.is_some(),
            IssueKind::Truncated | IssueKind::Unfinished | IssueKind::UnknownRecord => false,
        }
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            IssueKind::Corrupt => "damaged data",
            IssueKind::Truncated => "truncated",
            IssueKind::Unfinished => "unfinished recording",
            IssueKind::BadRecord => "undecodable record",
            IssueKind::UnknownRecord => "unknown record type",
            IssueKind::Compression => "damaged compressed data",
            IssueKind::MissingPart => "missing part",
            IssueKind::PartCycle => "cycle of parts",
        };
        if self.part > 0 {
            write!(f, "part {}: ", self.part)?;
        }
        match (self.compressed, self.zstd_frame) {
            (true, _) => write!(f, "{what} at file offset {}", self.offset)?,
            (false, Some(z)) => write!(
                f,
                "{what} at decompressed byte offset {} (zstd frame at file offset {z})",
                self.offset
            )?,
            (false, None) => write!(f, "{what} at byte offset {}", self.offset)?,
        }
        write!(f, ": {}", self.detail)?;
        if let Some(len) = self.len {
            write!(f, "; {len} bytes skipped")?;
        }
        if let Some(n) = self.frames_lost {
            write!(f, ", {n} frames lost")?;
        }
        if let Some(at) = self.resumed_at {
            write!(f, "; reading resumed at offset {at}")?;
        }
        Ok(())
    }
}
