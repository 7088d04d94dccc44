//! `ctscope export`: a trace's records as JSON lines or CSV on stdout.

use std::io::{self, BufWriter, Write as _};

use conntrack_common::kind;

use super::BadInput;
use crate::{
    cli::{ExportArgs, ExportFormat, ExportKind},
    trace::{
        Item, Record, Trace,
        export::{
            Baseline, EventRow, LOST_CSV_HEADER, lost_csv, lost_json, snapshot_csv,
            snapshot_csv_header, snapshot_json,
        },
    },
};

/// Rows of different shapes; CSV holds one at a time.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Group {
    Events,
    Snapshots,
    Lost,
}

fn group(k: ExportKind) -> Group {
    match k {
        ExportKind::Drops | ExportKind::Alloc | ExportKind::Free => Group::Events,
        ExportKind::Snapshots => Group::Snapshots,
        ExportKind::Lost => Group::Lost,
    }
}

pub fn run(args: &ExportArgs) -> anyhow::Result<()> {
    let kinds = if args.kind.is_empty() {
        vec![ExportKind::Drops, ExportKind::Alloc, ExportKind::Free]
    } else {
        args.kind.clone()
    };
    let csv = args.format == ExportFormat::Csv;
    let first = group(kinds[0]);
    if csv && kinds.iter().any(|k| group(*k) != first) {
        return Err(BadInput(
            "CSV holds one shape of row: export events (drops, alloc, free), snapshots and lost \
             records separately, or use --format jsonl"
                .to_owned(),
        )
        .into());
    }
    let want_event = |k: u8| match k {
        kind::DROP => kinds.contains(&ExportKind::Drops),
        kind::ALLOC => kinds.contains(&ExportKind::Alloc),
        kind::FREE => kinds.contains(&ExportKind::Free),
        _ => false,
    };
    let snapshots = kinds.contains(&ExportKind::Snapshots);
    let lost = kinds.contains(&ExportKind::Lost);

    let mut trace = Trace::open(&args.file)?;
    let mut header = trace.header().clone();
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
    if csv {
        let line = match first {
            Group::Events => EventRow::CSV_HEADER.to_owned(),
            Group::Snapshots => snapshot_csv_header(),
            Group::Lost => LOST_CSV_HEADER.to_owned(),
        };
        writeln!(out, "{line}")?;
    }
    let mut damaged = 0;
    // Snapshot counters count from the trace's first snapshot.
    let mut baseline = Baseline::default();
    let result = (|| -> anyhow::Result<()> {
        while let Some(item) = trace.next_item()? {
            let frame = match item {
                Item::Record(f) => f,
                Item::Issue(issue) => {
                    // Warnings go out in order with the data.
                    out.flush()?;
                    damaged += u32::from(issue.is_damage());
                    eprintln!("ctscope: warning: {}: {issue}", args.file.display());
                    continue;
                }
            };
            match frame.record {
                Record::Header(h) => header = *h,
                Record::Events(events) => {
                    for ev in events.iter().filter(|e| want_event(e.kind)) {
                        let row = EventRow::new(&header, ev);
                        if csv {
                            writeln!(out, "{}", row.to_csv())?;
                        } else {
                            serde_json::to_writer(&mut out, &row)?;
                            out.write_all(b"\n")?;
                        }
                    }
                }
                Record::Snapshot(s) if snapshots => {
                    let s = baseline.rebase(&s);
                    if csv {
                        writeln!(out, "{}", snapshot_csv(&header, &s))?;
                    } else {
                        writeln!(out, "{}", snapshot_json(&header, &s))?;
                    }
                }
                Record::Lost(l) if lost => {
                    if csv {
                        writeln!(out, "{}", lost_csv(&header, &l))?;
                    } else {
                        writeln!(out, "{}", lost_json(&header, &l))?;
                    }
                }
                _ => {}
            }
        }
        out.flush()?;
        Ok(())
    })();
    match result {
        Err(e) if is_broken_pipe(&e) => return Ok(()),
        Err(e) => return Err(e),
        Ok(()) => {}
    }
    if damaged > 0 {
        anyhow::bail!(
            "{}: {damaged} damaged range(s) were skipped (see the warnings above); everything \
             intact was exported",
            args.file.display()
        );
    }
    Ok(())
}

/// `export ... | head` closes stdout early; that is not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind)
                == Some(io::ErrorKind::BrokenPipe)
    })
}
