//! Command-line interface. `--help` is where users learn the tool, so each
//! option says what it does, its default and its unit.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::kernel::netns::StatsSource;

const ABOUT: &str = "\
Live, lossless observer of the Linux connection-tracking table (nf_conntrack).

ctscope attaches eBPF probes to conntrack's allocation, free and drop paths and
shows how full the table is, how fast entries come and go, and which packets
conntrack drops and why: the table was full, the packet was invalid, the insert
failed, a hash chain was too long, or your ruleset dropped it.

Needs root (or CAP_BPF + CAP_PERFMON) and a kernel with BTF. Everything it
attaches is released when it exits.";

const EXAMPLES: &str = "\
Examples:
  ctscope stats                          table fill, rates and drops every second
  ctscope stats --json --interval 5 --count 12
                                         one JSON object per 5 s for a minute
  ctscope stats --json --duration 30s --ready-file /tmp/ready
                                         for load-test scripts: start the load
                                         once /tmp/ready exists
  ctscope buckets --top 5                hash chain lengths and the 5 longest
                                         chains with their entries
  ctscope stats --buckets                chain-length summary every interval";

#[derive(Debug, Parser)]
#[command(
    name = "ctscope",
    version = crate::version::SHORT,
    long_version = crate::version::LONG,
    about = "Live, lossless observer of the Linux conntrack table",
    long_about = ABOUT,
    after_help = EXAMPLES,
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub probe: ProbeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print table fill, allocation/free rates and drops per cause every
    /// interval, with the kernel's own counters beside them (headless).
    #[command(after_help = STATS_AFTER)]
    Stats(StatsArgs),
    /// Walk the conntrack hash table once: chain lengths per bucket
    /// (histogram, mean, p99, max), the longest chains with their entries,
    /// the walk's cost, and tuning advice.
    #[command(after_help = BUCKETS_AFTER)]
    Buckets(BucketsArgs),
}

const BUCKETS_AFTER: &str = "\
Every entry is linked into the table twice (original and reply direction), so
nodes = 2 x entries. Chain length is in nodes. The kernel refuses new entries
whose chain is longer than a random limit of 52 to 81 nodes (kernel >= 6.3) and
counts them as chaintoolong. The table's address is not exported: ctscope finds
it through /proc/net/nf_conntrack or a live entry, and reports nothing from an
address it has not validated. The JSON output is described by
docs/buckets.schema.json.";

#[derive(Debug, Args, Clone)]
pub struct BucketsArgs {
    /// One JSON object (schema: docs/buckets.schema.json). Default: a report.
    #[arg(long)]
    pub json: bool,

    /// List the entries of this many of the longest chains.
    #[arg(long, default_value_t = 5, value_name = "K")]
    pub top: usize,

    /// Create this file once the walker is loaded, before the walk.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
}

const STATS_AFTER: &str = "\
Counts come from in-kernel per-CPU counters and are exact. `kernel.*` are the
kernel's own conntrack counters (/proc/net/stat/nf_conntrack, or ctnetlink as
`conntrack -S` reads them), summed over every network namespace ctscope can
enter, as deltas since ctscope started. The JSON output is described by
docs/stats.schema.json.";

/// Options for loading the probes, shared by every command that attaches.
#[derive(Debug, Args, Clone)]
pub struct ProbeArgs {
    /// Size of the kernel-to-ctscope event ring buffer in MiB (a power of
    /// two). Events that do not fit are counted as lost, never dropped
    /// silently.
    #[arg(long, global = true, default_value_t = 16, value_name = "MIB",
          value_parser = parse_ring_mib)]
    pub ring_size: u32,

    /// Where to read the kernel's own conntrack counters.
    #[arg(long, global = true, value_enum, default_value_t = StatsSourceArg::Auto)]
    pub kernel_stats: StatsSourceArg,

    /// How to find the conntrack hash table, whose address the kernel does
    /// not export (bucket walks and the chain-too-long drop cause).
    #[arg(long, global = true, value_enum, default_value_t = Locate::Auto)]
    pub locate: Locate,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, Default)]
pub enum Locate {
    /// /proc/net/nf_conntrack where it exists, else a live entry.
    #[default]
    Auto,
    /// From the iterator of /proc/net/nf_conntrack only (works on an empty
    /// table; needs CONFIG_NF_CONNTRACK_PROCFS).
    Proc,
    /// From a live entry carried by a packet of a tracked flow only (needs
    /// traffic while ctscope starts).
    Entry,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum StatsSourceArg {
    /// /proc/net/stat/nf_conntrack where it exists, else ctnetlink.
    Auto,
    /// /proc/net/stat/nf_conntrack only.
    Procfs,
    /// ctnetlink (what `conntrack -S` uses) only.
    Ctnetlink,
}

impl From<StatsSourceArg> for StatsSource {
    fn from(arg: StatsSourceArg) -> Self {
        match arg {
            StatsSourceArg::Auto => StatsSource::Auto,
            StatsSourceArg::Procfs => StatsSource::Procfs,
            StatsSourceArg::Ctnetlink => StatsSource::Ctnetlink,
        }
    }
}

#[derive(Debug, Args, Clone)]
pub struct StatsArgs {
    /// One JSON object per interval, one per line (schema:
    /// docs/stats.schema.json). Default: a compact table.
    #[arg(long)]
    pub json: bool,

    /// Seconds between reports (e.g. 1, 0.5, 2s, 500ms).
    #[arg(short, long, default_value = "1", value_name = "DURATION", value_parser = parse_duration)]
    pub interval: Duration,

    /// Stop after this many reports.
    #[arg(short = 'n', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Stop after this long (e.g. 30, 30s, 5m); the last report covers the
    /// remainder.
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Create this file once the probes are attached, so scripts know when
    /// to start traffic.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,

    /// Walk the conntrack hash table every interval and report chain
    /// lengths (max, mean, p99) with each record. A walk costs about 0.1 µs
    /// of CPU per node (~0.2 s for a million entries). Without this flag the
    /// table is walked every 5 s only, to classify chain-too-long drops.
    #[arg(long)]
    pub buckets: bool,
}

/// Parses `10`, `2.5`, `10s`, `500ms`, `5m`, `1h`. Bare numbers are seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a duration; use e.g. 10, 2.5s, 500ms, 5m or 1h"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" | "sec" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` in `{text}`; use ms, s, m or h"
            ));
        }
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!("`{text}`: the duration must be greater than zero"));
    }
    if seconds > 366.0 * 86400.0 {
        return Err(format!(
            "`{text}`: durations longer than a year are not supported"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn parse_ring_mib(text: &str) -> Result<u32, String> {
    let mib: u32 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a whole number of MiB"))?;
    if mib == 0 || !mib.is_power_of_two() || mib > 1024 {
        return Err(format!(
            "`{text}`: the ring size must be a power of two from 1 to 1024 MiB"
        ));
    }
    Ok(mib)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration(" 3s "), Ok(Duration::from_secs(3)));
    }

    #[test]
    fn bad_durations_say_why() {
        for bad in ["", "abc", "0", "-1", "5x", "1e400", "9999h"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains(bad.trim()) || bad.is_empty(), "{bad}: {err}");
        }
    }

    #[test]
    fn ring_size_must_be_a_power_of_two() {
        assert_eq!(parse_ring_mib("16"), Ok(16));
        assert!(parse_ring_mib("3").is_err());
        assert!(parse_ring_mib("0").is_err());
        assert!(parse_ring_mib("2048").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }

    #[test]
    fn stats_flags_parse() {
        let cli = Cli::try_parse_from([
            "ctscope",
            "stats",
            "--json",
            "--interval",
            "0.5",
            "--count",
            "3",
        ])
        .expect("parse");
        let Some(Command::Stats(args)) = cli.command else {
            panic!("not stats");
        };
        assert!(args.json);
        assert_eq!(args.interval, Duration::from_millis(500));
        assert_eq!(args.count, Some(3));
        assert!(Cli::try_parse_from(["ctscope", "stats", "--count", "0"]).is_err());
        assert!(Cli::try_parse_from(["ctscope", "stats", "--bogus"]).is_err());
    }

    #[test]
    fn buckets_flags_parse() {
        let cli =
            Cli::try_parse_from(["ctscope", "buckets", "--json", "--top", "3"]).expect("parse");
        let Some(Command::Buckets(args)) = cli.command else {
            panic!("not buckets");
        };
        assert!(args.json);
        assert_eq!(args.top, 3);
        let cli = Cli::try_parse_from(["ctscope", "stats", "--buckets"]).expect("parse");
        assert!(matches!(cli.command, Some(Command::Stats(a)) if a.buckets));
    }
}
