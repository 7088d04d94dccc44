//! Turns the live source's messages into trace records: filtered events,
//! snapshots, "N events lost" records from the kernel's loss counters, and
//! bucket walks.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use conntrack_common::{Event, counter};

use super::{
    TraceError,
    filter::EventFilter,
    format::Lost,
    writer::{TraceWriter, WriterTotals},
};
use crate::event::{Counters, Message};

/// Progress shared with whoever shows a status line.
#[derive(Debug, Default)]
pub struct Progress {
    pub events: AtomicU64,
    pub bytes: AtomicU64,
    pub lost: AtomicU64,
    pub snapshots: AtomicU64,
}

pub struct Recorder {
    writer: TraceWriter,
    filter: EventFilter,
    /// Stop keeping events after this many (`--count`).
    limit: Option<u64>,
    /// Counters of the previous snapshot, for the loss deltas.
    prev: Option<(u64, Counters)>,
    progress: Arc<Progress>,
    kept: Vec<Event>,
    count_reached: bool,
}

impl Recorder {
    pub fn new(
        writer: TraceWriter,
        filter: EventFilter,
        limit: Option<u64>,
        progress: Arc<Progress>,
    ) -> Self {
        Self {
            writer,
            filter,
            limit,
            prev: None,
            progress,
            kept: Vec::new(),
            count_reached: false,
        }
    }

    /// Whether `--count` events have been written.
    pub fn count_reached(&self) -> bool {
        self.count_reached
    }

    pub fn writer(&self) -> &TraceWriter {
        &self.writer
    }

    /// Writes what `msg` holds; `ts_ns` is when it arrived (CLOCK_MONOTONIC).
    pub fn apply(&mut self, ts_ns: u64, msg: &Message) -> Result<(), TraceError> {
        match msg {
            Message::Events(events) => self.events(ts_ns, events)?,
            Message::Sample(sample) => {
                if let Some((from, prev)) = self.prev {
                    let d = |i: u32| sample.counters.get(i).saturating_sub(prev.get(i));
                    let lost = Lost {
                        from_mono_ns: from,
                        to_mono_ns: sample.mono_ns,
                        ring_full: d(counter::LOST_EVENTS),
                        pending_overflow: d(counter::UNRESOLVED),
                        sampled_out: d(counter::SAMPLED_OUT),
                    };
                    if lost.total() > 0 {
                        self.writer.write_lost(ts_ns, &lost)?;
                    }
                }
                self.prev = Some((sample.mono_ns, sample.counters));
                self.writer.write_snapshot(ts_ns, sample)?;
                self.progress.snapshots.fetch_add(1, Ordering::Relaxed);
            }
            Message::Buckets(walk) => self.writer.write_buckets(ts_ns, walk)?,
            Message::Reset => {}
        }
        self.update_progress();
        Ok(())
    }

    fn events(&mut self, ts_ns: u64, events: &[Event]) -> Result<(), TraceError> {
        if self.count_reached {
            return Ok(());
        }
        self.kept.clear();
        self.kept
            .extend(events.iter().filter(|e| self.filter.matches(e)).copied());
        if let Some(limit) = self.limit {
            let room = limit.saturating_sub(self.writer.totals.events);
            if self.kept.len() as u64 >= room {
                self.kept
                    .truncate(usize::try_from(room).unwrap_or(usize::MAX));
                self.count_reached = true;
            }
        }
        if self.kept.is_empty() {
            return self.writer.flush_if_due();
        }
        self.writer.write_events(ts_ns, &self.kept)
    }

    /// Call at least every [`super::writer::FLUSH_EVERY`] when idle.
    pub fn tick(&mut self) -> Result<(), TraceError> {
        self.writer.flush_if_due()?;
        self.update_progress();
        Ok(())
    }

    fn update_progress(&self) {
        let t = &self.writer.totals;
        self.progress.events.store(t.events, Ordering::Relaxed);
        self.progress.bytes.store(t.bytes, Ordering::Relaxed);
        self.progress.lost.store(t.lost, Ordering::Relaxed);
    }

    /// Writes the END record and closes the file.
    pub fn finish(self, reason: &str) -> Result<WriterTotals, TraceError> {
        let totals = self.writer.finish(reason)?;
        self.progress.bytes.store(totals.bytes, Ordering::Relaxed);
        Ok(totals)
    }
}
