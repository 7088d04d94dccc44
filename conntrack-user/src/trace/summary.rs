//! `ctscope info`: one pass over a recording, summarised.

use std::{fmt::Write as _, path::Path};

use conntrack_common::{cause, counter, kind};
use serde::Serialize;

use super::{
    Issue, Record, TraceError,
    export::rfc3339,
    format::{Header, Snapshot},
    reader::Item,
    recording::Trace,
};
use crate::{event::Counters, kernel::sysctl::Sysctls, model::drops::Cause};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DropsByCause {
    pub table_full: u64,
    pub invalid: u64,
    pub insert_failed: u64,
    pub chain_too_long: u64,
    pub ruleset: u64,
    pub other: u64,
}

impl DropsByCause {
    fn add(&mut self, raw: u8, n: u64) {
        match Cause::from_raw(raw) {
            Some(Cause::TableFull) => self.table_full += n,
            Some(Cause::Invalid) => self.invalid += n,
            Some(Cause::InsertFailed) => self.insert_failed += n,
            Some(Cause::ChainTooLong) => self.chain_too_long += n,
            Some(Cause::Ruleset) => self.ruleset += n,
            Some(Cause::Other) => self.other += n,
            None => {}
        }
    }
}

/// Events in the file, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EventCounts {
    pub alloc: u64,
    pub free: u64,
    pub drop: u64,
    pub drops_by_cause: DropsByCause,
    pub other: u64,
}

/// What the in-kernel counters say happened between the first and the
/// last snapshot (machine-wide, never filtered).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counted {
    pub alloc: u64,
    pub free: u64,
    pub drops_by_cause: DropsByCause,
    pub lost_events: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LostTotals {
    pub records: u64,
    pub ring_full: u64,
    pub pending_overflow: u64,
    pub sampled_out: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct IssueReport {
    #[serde(flatten)]
    pub issue: Issue,
    pub message: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub path: String,
    pub format_version: u16,
    pub ctscope_version: String,
    pub kernel: String,
    pub hostname: String,
    pub backend: String,
    pub compression: String,
    pub run_id: String,
    pub event_classes: Vec<String>,
    pub filter: Vec<String>,
    pub sample_interval_ms: u64,
    pub sysctls: Sysctls,
    /// Files read (the file given and the parts it rotated into).
    pub parts: u32,
    /// Wall-clock span of the records, RFC 3339, and its length.
    pub start: String,
    pub end: String,
    pub duration_s: f64,
    pub frames: u64,
    pub events: EventCounts,
    pub snapshots: u64,
    pub bucket_walks: u64,
    pub lost: LostTotals,
    pub counted: Option<Counted>,
    /// Why recording stopped, from the last END record; none if the file
    /// was not closed.
    pub end_reason: Option<String>,
    /// The tail was cut off (a crash or SIGKILL): what precedes it is intact.
    pub truncated: bool,
    /// Data in the middle was damaged and skipped.
    pub damaged: bool,
    pub issues: Vec<IssueReport>,
}

/// Reads the whole recording.
pub fn summarize(path: &Path) -> Result<Summary, TraceError> {
    let mut trace = Trace::open(path)?;
    let h = trace.header().clone();
    let mut s = Summary {
        path: path.display().to_string(),
        format_version: h.format_version,
        ctscope_version: h.ctscope_version.clone(),
        kernel: h.kernel.clone(),
        hostname: h.hostname.clone(),
        backend: h.backend.clone(),
        compression: h.compression.clone(),
        run_id: h.run_id.clone(),
        event_classes: h.event_classes.clone(),
        filter: h.filter.clone(),
        sample_interval_ms: h.sample_interval_ms,
        sysctls: h.sysctls,
        parts: 1,
        frames: 1,
        ..Summary::default()
    };
    let mut first_ts: Option<u64> = None;
    let mut last_ts = h.start_mono_ns;
    let mut first_snap: Option<Counters> = None;
    let mut last_snap: Option<Snapshot> = None;
    while let Some(item) = trace.next_item()? {
        let frame = match item {
            Item::Issue(issue) => {
                s.truncated |= !issue.is_damage();
                s.damaged |= issue.is_damage();
                s.issues.push(IssueReport {
                    message: issue.to_string(),
                    issue,
                });
                continue;
            }
            Item::Record(f) => f,
        };
        s.frames += 1;
        first_ts.get_or_insert(frame.ts_ns);
        last_ts = last_ts.max(frame.ts_ns);
        match frame.record {
            Record::Header(_) => s.parts += 1,
            Record::Events(events) => {
                for ev in &events {
                    match ev.kind {
                        kind::ALLOC => s.events.alloc += 1,
                        kind::FREE => s.events.free += 1,
                        kind::DROP => {
                            s.events.drop += 1;
                            s.events.drops_by_cause.add(ev.cause, 1);
                        }
                        _ => s.events.other += 1,
                    }
                }
            }
            Record::Snapshot(snap) => {
                s.snapshots += 1;
                first_snap.get_or_insert(snap.counters);
                last_snap = Some(*snap);
            }
            Record::Lost(l) => {
                s.lost.records += 1;
                s.lost.ring_full += l.ring_full;
                s.lost.pending_overflow += l.pending_overflow;
                s.lost.sampled_out += l.sampled_out;
            }
            Record::Buckets(_) => s.bucket_walks += 1,
            Record::End(end) => s.end_reason = Some(end.reason),
        }
    }
    if s.truncated {
        s.end_reason = None;
    }
    let start_ns = first_ts.unwrap_or(h.start_mono_ns).min(h.start_mono_ns);
    s.start = rfc3339(h.wall_ns(start_ns));
    s.end = rfc3339(h.wall_ns(last_ts));
    s.duration_s = last_ts.saturating_sub(start_ns) as f64 / 1e9;
    if let (Some(first), Some(last)) = (first_snap, last_snap) {
        s.counted = Some(counted(&first, &last.counters));
    }
    Ok(s)
}

fn counted(first: &Counters, last: &Counters) -> Counted {
    let d = |i: u32| last.get(i).saturating_sub(first.get(i));
    let mut drops = DropsByCause::default();
    for c in 0..cause::ALL as u8 {
        drops.add(c, d(counter::drop_index(c)));
    }
    Counted {
        alloc: d(counter::ALLOC),
        free: d(counter::FREE),
        drops_by_cause: drops,
        lost_events: d(counter::LOST_EVENTS),
    }
}

/// The summary for people.
pub fn render(s: &Summary) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "trace      {}", s.path);
    let _ = writeln!(
        o,
        "format     version {}, {} compression, written by ctscope {}",
        s.format_version, s.compression, s.ctscope_version
    );
    let _ = writeln!(
        o,
        "machine    {} (kernel {}, backend {})",
        s.hostname, s.kernel, s.backend
    );
    let _ = writeln!(
        o,
        "time       {} to {} ({:.1} s), {} part(s)",
        s.start, s.end, s.duration_s, s.parts
    );
    let what = if s.filter.is_empty() {
        "everything".to_owned()
    } else {
        s.filter.join(" ")
    };
    let _ = writeln!(
        o,
        "recorded   {} events of classes {}, filter: {what}, a snapshot every {} ms",
        s.events.alloc + s.events.free + s.events.drop,
        s.event_classes.join(", "),
        s.sample_interval_ms
    );
    let e = &s.events;
    let c = &e.drops_by_cause;
    let _ = writeln!(
        o,
        "events     alloc {}  free {}  drop {} (table_full {}, invalid {}, insert_failed {}, \
         chain_too_long {}, ruleset {})",
        e.alloc,
        e.free,
        e.drop,
        c.table_full,
        c.invalid,
        c.insert_failed,
        c.chain_too_long,
        c.ruleset
    );
    if let Some(k) = &s.counted {
        let c = &k.drops_by_cause;
        let _ = writeln!(
            o,
            "counted    alloc {}  free {}  drop table_full {}, invalid {}, insert_failed {}, \
             chain_too_long {}, ruleset {} (in-kernel counters, first to last snapshot)",
            k.alloc, k.free, c.table_full, c.invalid, c.insert_failed, c.chain_too_long, c.ruleset
        );
    }
    let _ = writeln!(
        o,
        "records    {} frames, {} snapshots, {} bucket walks",
        s.frames, s.snapshots, s.bucket_walks
    );
    let l = &s.lost;
    let _ = writeln!(
        o,
        "lost       {} (ring buffer full {}, allocations not queued {}, drops sampled out {})",
        l.ring_full + l.pending_overflow + l.sampled_out,
        l.ring_full,
        l.pending_overflow,
        l.sampled_out
    );
    let state = match (&s.end_reason, s.truncated, s.damaged) {
        (_, _, true) => "DAMAGED: data in the middle was skipped (see below)".to_owned(),
        (_, true, _) => {
            "TRUNCATED: the recording was cut off; everything before the cut is intact".to_owned()
        }
        (Some(r), _, _) => format!("complete (stopped: {r})"),
        (None, false, false) => "complete".to_owned(),
    };
    let _ = writeln!(o, "state      {state}");
    for i in &s.issues {
        let _ = writeln!(o, "  {}", i.message);
    }
    o
}

/// The header of the recording, for `replay`'s model.
pub fn run_info(h: &Header) -> crate::model::RunInfo {
    crate::model::RunInfo {
        backend: h.backend.clone(),
        kernel: h.kernel.clone(),
    }
}
