//! Arguments of the trace commands: record, replay, export, info.

use std::{path::PathBuf, time::Duration};

use super::{
    live::FilterArgs,
    parse::{parse_duration, parse_interval},
};
use clap::{Args, ValueEnum};

use crate::trace::writer::MIN_PART_SIZE;

pub(super) const RECORD_AFTER: &str = "\
The file (mode 0600: it holds addresses) starts with a header (kernel, hostname,
sysctls, start time) and holds framed, checksummed records: snapshots of every
counter each --interval, batches of events, and \"N events lost\" records when the
kernel could not deliver some. It is flushed at least every half second and on
every snapshot, so a crash or SIGKILL loses less than a second; the rest stays
readable. SIGINT and SIGTERM take a last snapshot and close the file properly.
Layout: docs/trace-format.md.

Examples:
  ctscope record -o load.ctrace --duration 5m
  ctscope record -o drops.ctrace --cause table_full --port 443 --compress
  ctscope record -o big.ctrace --max-size 1G     rotates to big.ctrace.1, .2, ...";

pub(super) const REPLAY_AFTER: &str = "\
Replays snapshots, events and bucket walks with the recorded timing. In a terminal
it shows the live view (as `ctscope top`) over the recording, which holds at the
end until you quit. Keys: p pause, n play to the next snapshot, left/right seek
10 s, +/- speed, q quit; the view's other keys (focus, filter, sort) work too.

With --stats,
or when stdout is not a terminal, it prints one JSON object per interval, exactly
as `ctscope stats --json` printed them during the recording, as fast as possible
unless --speed is given. A damaged or cut-off file is replayed up to and around
the damage, with a warning on stderr. Rotated recordings continue into FILE.1,
FILE.2, ... automatically.";

pub(super) const EXPORT_AFTER: &str = "\
Event rows (alloc, free, drops) share one set of columns; snapshots and lost
records have their own, so CSV takes kinds from one group at a time. Times are
CLOCK_MONOTONIC ns (`ts_ns`) and RFC 3339 UTC (`time`). Field list:
docs/trace-format.md. Damaged parts of the file are skipped with a warning and
exit status 1; a cut-off tail (a crash) is reported and exits 0.

Examples:
  ctscope export load.ctrace --format jsonl --kind drops | jq .
  ctscope export load.ctrace --format csv --kind snapshots > snapshots.csv";

#[derive(Debug, Args, Clone)]
pub struct RecordArgs {
    /// Trace file to write (replaced if it exists).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,

    /// Stop after this long (e.g. 30, 30s, 5m).
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Stop after this many events (those that pass the filters).
    #[arg(short = 'n', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Time between snapshots of the counters (e.g. 1, 0.5, 2s).
    #[arg(short, long, default_value = "1", value_name = "DURATION", value_parser = parse_interval)]
    pub interval: Duration,

    #[command(flatten)]
    pub filter: FilterArgs,

    /// Compress with zstd (a new zstd frame at least every half second, so
    /// a cut-off file stays readable up to the last one).
    #[arg(long)]
    pub compress: bool,

    /// Start a new file (FILE.1, FILE.2, ...) before one grows past this size
    /// (e.g. 500M, 2G; at least 64K). With --compress the size is checked
    /// as compressed data comes out, so a part may pass it by a few hundred KiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_size: Option<u64>,

    /// Create this file once the probes are attached and the trace file is
    /// open, so scripts know when to start traffic.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct ReplayArgs {
    /// Trace file written by `ctscope record`.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Playback speed: 1 is the recorded pace, 10 ten times faster, `max` as
    /// fast as possible. Default: 1 in a terminal, max for --stats.
    #[arg(long, value_name = "X", value_parser = parse_speed)]
    pub speed: Option<Speed>,

    /// Print the stats records (JSON lines, as `ctscope stats --json`)
    /// instead of the live view; the default when stdout is not a terminal.
    #[arg(long)]
    pub stats: bool,
}

/// A replay speed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    Times(f64),
    Max,
}

#[derive(Debug, Args, Clone)]
pub struct ExportArgs {
    /// Trace file written by `ctscope record`.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
    pub format: ExportFormat,

    /// What to export (comma-separated or repeated). Default: drops, alloc
    /// and free events.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "KIND")]
    pub kind: Vec<ExportKind>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header row.
    Csv,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ExportKind {
    /// Dropped packets.
    Drops,
    /// Entry allocations.
    Alloc,
    /// Entry frees.
    Free,
    /// Periodic snapshots of the counters.
    Snapshots,
    /// Events the kernel could not deliver, per snapshot interval.
    Lost,
}

#[derive(Debug, Args, Clone)]
pub struct InfoArgs {
    /// Trace file written by `ctscope record`.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Parses `1048576`, `512K`, `100M`, `2G` (powers of 1024; `KiB`, `MB` and
/// the like are accepted too).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a size; use e.g. 500M or 2G"))?;
    let shift = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("unknown unit in `{text}`; use K, M, G or T")),
    };
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < MIN_PART_SIZE as f64 || bytes > 1e18 {
        return Err(format!("`{text}`: the size must be at least 64K"));
    }
    Ok(bytes as u64)
}

pub(super) fn parse_speed(text: &str) -> Result<Speed, String> {
    if text.trim().eq_ignore_ascii_case("max") {
        return Ok(Speed::Max);
    }
    let t = text.trim().trim_end_matches(['x', 'X']);
    match t.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 && x <= 1e6 => Ok(Speed::Times(x)),
        _ => Err(format!(
            "`{text}` is not a speed; use a factor such as 1, 0.5 or 10, or `max`"
        )),
    }
}
