//! A recording: the file given and, when it was rotated, the parts after
//! it, read as one sequence of records.

use std::{collections::HashMap, path::Path};

use super::{
    Issue, IssueKind, TraceError,
    format::{Header, Record, fflag},
    reader::{Item, TraceReader},
};

/// The parts are FILE, then FILE.1, FILE.2, ... as each part's END record
/// names the next.
pub struct Trace {
    reader: TraceReader,
    first: Header,
    next_part: Option<String>,
    /// Byte offset of the END record that named `next_part`.
    end_offset: u64,
    /// A part after the first one opened was reached.
    followed: bool,
    /// Each file read so far, by (device, inode), with its part number: an
    /// END that names one of them again (itself, an earlier part, a hard
    /// link to one) would make reading go round for ever.
    visited: HashMap<(u64, u64), u32>,
}

impl Trace {
    pub fn open(path: &Path) -> Result<Self, TraceError> {
        let reader = TraceReader::open(path)?;
        let mut visited = HashMap::new();
        if let Some(id) = reader.identity() {
            visited.insert(id, reader.part());
        }
        Ok(Self {
            first: reader.header().clone(),
            reader,
            next_part: None,
            end_offset: 0,
            followed: false,
            visited,
        })
    }

    /// The header of the file opened.
    pub fn header(&self) -> &Header {
        &self.first
    }

    pub fn is_compressed(&self) -> bool {
        self.reader.is_compressed()
    }

    /// The part being read.
    pub fn current(&self) -> &TraceReader {
        &self.reader
    }

    /// The next record or issue of the recording; later parts start with
    /// their header record.
    pub fn next_item(&mut self) -> Result<Option<Item>, TraceError> {
        loop {
            match self.reader.next_item()? {
                Some(Item::Record(frame)) => {
                    if let Record::End(end) = &frame.record {
                        self.next_part = end.next_part.clone().filter(|_| end.reason == "rotated");
                        self.end_offset = frame.offset;
                    }
                    let baseline = frame.flags & fflag::BASELINE != 0
                        && matches!(frame.record, Record::Snapshot(_));
                    if baseline && self.followed {
                        continue;
                    }
                    return Ok(Some(Item::Record(frame)));
                }
                Some(issue) => return Ok(Some(issue)),
                None => {
                    let Some(name) = self.next_part.take() else {
                        return Ok(None);
                    };
                    match self.open_next(&name) {
                        Ok(reader) => {
                            if let Some(issue) = self.cycle(&reader, &name) {
                                return Ok(Some(Item::Issue(issue)));
                            }
                            self.reader = reader;
                            self.followed = true;
                            let frame = self.reader.header_frame().clone();
                            return Ok(Some(Item::Record(frame)));
                        }
                        Err(detail) => {
                            let issue = Issue {
                                kind: IssueKind::MissingPart,
                                part: self.reader.part() + 1,
                                detail,
                                ..Issue::default()
                            };
                            return Ok(Some(Item::Issue(issue)));
                        }
                    }
                }
            }
        }
    }

    /// The issue that ends reading when `next`, named `name` by the END
    /// record just read, is a file already read; else remembers it.
    fn cycle(&mut self, next: &TraceReader, name: &str) -> Option<Issue> {
        let id = next.identity()?;
        let Some(&seen) = self.visited.get(&id) else {
            self.visited.insert(id, next.part());
            return None;
        };
        let detail = format!(
            "the END record names {name:?} as the next part, but that file was already read \
             (as part {seen}): the parts form a cycle, so reading stops here; everything \
             before this record was read once"
        );
        Some(Issue {
            kind: IssueKind::PartCycle,
            offset: self.end_offset,
            zstd_frame: self.reader.zstd_frame_of(self.end_offset),
            part: self.reader.part(),
            detail,
            ..Issue::default()
        })
    }

    fn open_next(&self, name: &str) -> Result<TraceReader, String> {
        // The name comes from the file: only a plain name in the same
        // directory is followed.
        let plain = Path::new(name)
            .file_name()
            .is_some_and(|n| n == std::ffi::OsStr::new(name));
        if !plain || name == ".." || name == "." {
            return Err(format!(
                "the next part's name {name:?} is not a plain file name"
            ));
        }
        let dir = self.reader.path().parent().unwrap_or(Path::new("."));
        let path = dir.join(name);
        let reader = TraceReader::open(&path).map_err(|e| e.to_string())?;
        if reader.header().run_id != self.first.run_id {
            return Err(format!(
                "{} belongs to another recording (run id {}, expected {})",
                path.display(),
                reader.header().run_id,
                self.first.run_id
            ));
        }
        Ok(reader)
    }
}
