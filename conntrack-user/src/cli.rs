//! Command-line interface. `--help` is where users learn the tool, so each
//! option says what it does, its default and its unit.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{kernel::netns::StatsSource, model::drops::Cause, trace::writer::MIN_PART_SIZE};

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
  ctscope                                the live view (ctscope top) in a terminal
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

    /// Show every packet netfilter drops, as it happens, with its cause,
    /// namespace, 5-tuple and TCP flags; a summary at exit.
    #[command(after_help = DROPS_AFTER)]
    Drops(DropsArgs),

    /// Generate new conntrack flows over loopback in a private network
    /// namespace (nothing leaves the machine), to watch the table fill.
    #[command(after_help = LOAD_AFTER)]
    Load(LoadArgs),

    /// The live view while a load generator fills a private namespace: see
    /// the table fill (and, with --squeeze, drop) within seconds.
    #[command(after_help = DEMO_AFTER)]
    Demo(DemoArgs),

    /// Serve Prometheus / OpenMetrics metrics on /metrics (and /healthz),
    /// compatible with node_exporter's conntrack metrics.
    #[command(after_help = SERVE_AFTER)]
    Serve(ServeArgs),

    /// Check this machine: kernel features, privileges, where the counters
    /// come from, and the conntrack settings against the tuning guide, with
    /// the exact commands to fix what needs fixing.
    #[command(after_help = DOCTOR_AFTER)]
    Doctor(DoctorArgs),

    /// Print a shell completion script: `ctscope completions bash >
    /// /etc/bash_completion.d/ctscope`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },

    /// Print the man page (roff): `ctscope man > ctscope.1`, or a
    /// subcommand's: `ctscope man stats > ctscope-stats.1`.
    Man {
        /// A subcommand, for its own page.
        subcommand: Option<String>,
    },

    /// Record allocations, frees, drops and periodic snapshots to a trace
    /// file (headless), to replay, export or share later.
    #[command(after_help = RECORD_AFTER)]
    Record(RecordArgs),
    /// Replay a recorded trace through the same model as live capture.
    #[command(after_help = REPLAY_AFTER)]
    Replay(ReplayArgs),
    /// Export a trace's events, snapshots or loss records as JSON lines or CSV.
    #[command(after_help = EXPORT_AFTER)]
    Export(ExportArgs),
    /// Summarise a trace: time span, counts per kind, lost events, kernel,
    /// and any truncation or damage found.
    Info(InfoArgs),
    /// Walk the conntrack hash table once: chain lengths per bucket
    /// (histogram, mean, p99, max), the longest chains with their entries,
    /// the walk's cost, and tuning advice.
    #[command(after_help = BUCKETS_AFTER)]
    Buckets(BucketsArgs),

    /// Live view: table fill, rates, bucket chains, drops, namespaces and
    /// tuning advice on one screen. Plain `ctscope` in a terminal runs this.
    #[command(after_help = TOP_AFTER)]
    Top(TopArgs),
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

const TOP_AFTER: &str = "\
Keys: q quit, p pause, Tab/Shift-Tab or 1-6 focus a panel, z zoom it, arrows or
j/k scroll, s sort, / filter (netns, port, host), r record, ? help.

r starts recording a trace (every allocation, free and drop, and a snapshot each
interval) to ctscope-YYYYmmdd-HHMMSS.ctrace; r again, or quitting, closes it.
Read it with `ctscope replay`, `info` or `export`.

When stdout is not a terminal, ctscope says so and prints `ctscope stats` lines
instead. NO_COLOR=1 turns colours off. Needs at least 80x24.";

#[derive(Debug, Args, Clone)]
pub struct TopArgs {
    /// Seconds between samples: the rates' resolution and how often the
    /// screen updates its counts (e.g. 1, 0.5, 2s).
    #[arg(short, long, default_value = "1", value_name = "DURATION", value_parser = parse_duration)]
    pub interval: Duration,

    /// Create this file once the probes are attached (for scripts and tests).
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,

    /// Where `r` writes its recordings, named ctscope-YYYYmmdd-HHMMSS.ctrace
    /// (UTC). Default: the current directory.
    #[arg(long, value_name = "DIR")]
    pub record_dir: Option<PathBuf>,
}

impl Default for TopArgs {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            ready_file: None,
            record_dir: None,
        }
    }
}

const SERVE_AFTER: &str = "\
node_nf_conntrack_entries, node_nf_conntrack_entries_limit and node_nf_conntrack_stat_*
keep node_exporter's names and meaning (ctscope's own namespace); ctscope_* adds drops
per cause, allocations and frees, entries and drops per namespace (label netns), the
chain-length histogram and walk cost, and lost events. deploy/ has a Kubernetes
DaemonSet, Prometheus alerts and a Grafana dashboard.";

const LOAD_AFTER: &str = "\
Each flow has a new tuple, so each creates one conntrack entry in the load namespace.
The namespace is created for the run and disappears with its entries at exit, unless
--netns names an existing one. Without --count or --duration the run lasts 10 s.

Examples:
  ctscope load --rate 20000 --duration 60          20k new UDP flows a second
  ctscope load --kind syn --squeeze 5000           fill to 5000 entries, then drops
  ctscope load --json --count 200000               as fast as possible, report as JSON";

const DROPS_AFTER: &str = "\
Causes: table_full (no room: nf_conntrack_max reached), invalid (conntrack found the
packet invalid), insert_failed and chain_too_long (the new entry could not be inserted),
and ruleset, shown as \"policy\": your firewall dropped a packet conntrack accepted.
docs/drop-causes.md explains how each is recognised. Counts per cause are exact; under
a flood the kernel sends the details of one drop in N, and ctscope says so.

Examples:
  ctscope drops --syn                       dropped connection attempts
  ctscope drops --cause table_full --port 443
  ctscope drops --json --duration 60 | jq 'select(.type==\"drop\") | .dst'";

const STATS_AFTER: &str = "\
Counts come from in-kernel per-CPU counters and are exact. `kernel.*` are the
kernel's own conntrack counters (/proc/net/stat/nf_conntrack, or ctnetlink as
`conntrack -S` reads them), summed over every network namespace ctscope can
enter, as deltas since ctscope started. The JSON output is described by
docs/stats.schema.json.";

const RECORD_AFTER: &str = "\
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

const REPLAY_AFTER: &str = "\
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

const EXPORT_AFTER: &str = "\
Event rows (alloc, free, drops) share one set of columns; snapshots and lost
records have their own, so CSV takes kinds from one group at a time. Times are
CLOCK_MONOTONIC ns (`ts_ns`) and RFC 3339 UTC (`time`). Field list:
docs/trace-format.md. Damaged parts of the file are skipped with a warning and
exit status 1; a cut-off tail (a crash) is reported and exits 0.

Examples:
  ctscope export load.ctrace --format jsonl --kind drops | jq .
  ctscope export load.ctrace --format csv --kind snapshots > snapshots.csv";

/// Options for loading the probes, shared by every command that attaches.
#[derive(Debug, Args, Clone)]
pub struct ProbeArgs {
    /// Size of the kernel-to-ctscope event ring buffer in MiB (a power of
    /// two). Events that do not fit are counted as lost, never dropped
    /// silently. Default: 1 for stats and serve (they stream no per-entry
    /// events), 4 for drops and top, 16 for commands that stream every event.
    #[arg(long, global = true, value_name = "MIB", value_parser = parse_ring_mib)]
    pub ring_size: Option<u32>,

    /// Which probes to use. kprobe: conntrack's own functions (distribution
    /// kernels; exact table-full and insert-failure attribution). tracepoint:
    /// the slab and kfree_skb tracepoints (kernels without kprobes). auto:
    /// kprobe when the kernel has kprobes and conntrack's functions are not
    /// inlined, else tracepoint. The choice and the reason are printed on
    /// stderr and reported as `backend` in stats.
    #[arg(long, global = true, value_enum, env = "CTSCOPE_BACKEND",
          default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,

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
pub enum BackendArg {
    Auto,
    Kprobe,
    Tracepoint,
}

impl From<BackendArg> for crate::probe::backend::BackendRequest {
    fn from(arg: BackendArg) -> Self {
        match arg {
            BackendArg::Auto => Self::Auto,
            BackendArg::Kprobe => Self::Kprobe,
            BackendArg::Tracepoint => Self::Tracepoint,
        }
    }
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

#[derive(Debug, Args, Clone)]
pub struct DropsArgs {
    /// One JSON object per drop (`"type":"drop"`), then one summary object
    /// (`"type":"summary"`); schema: docs/drops.schema.json.
    #[arg(long)]
    pub json: bool,

    /// Only drops of this cause (repeat for several): table_full, invalid,
    /// insert_failed, chain_too_long, ruleset (or policy).
    #[arg(long, value_name = "CAUSE", value_parser = parse_cause)]
    pub cause: Vec<crate::model::drops::Cause>,

    /// Only TCP SYNs without ACK: dropped connection attempts.
    #[arg(long)]
    pub syn: bool,

    /// Only this network namespace (its inode number, as in "table full in
    /// netns N"; `ls -Li /proc/PID/ns/net` shows a process's).
    #[arg(long, value_name = "INUM")]
    pub netns: Option<u32>,

    /// Only this protocol: tcp, udp, icmp, icmpv6, sctp, or a number.
    #[arg(long, value_name = "PROTO", value_parser = parse_proto)]
    pub proto: Option<u8>,

    /// Only packets from or to this port.
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,

    /// Only packets from or to this address.
    #[arg(long, value_name = "ADDR")]
    pub host: Option<std::net::IpAddr>,

    /// Stop after this many drops are shown.
    #[arg(short = 'n', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Stop after this long (e.g. 30, 30s, 5m).
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Entries in each top-N list of the summary.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub top: usize,

    /// Create this file once the probes are attached.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
}

impl DropsArgs {
    pub fn filter(&self) -> crate::model::drops::DropFilter {
        crate::model::drops::DropFilter {
            causes: self.cause.clone(),
            syn_only: self.syn,
            netns: self.netns,
            proto: self.proto,
            port: self.port,
            host: self.host,
        }
    }
}

fn parse_cause(text: &str) -> Result<crate::model::drops::Cause, String> {
    crate::model::drops::Cause::parse(text)
}

/// Parses a protocol name or number.
pub fn parse_proto(text: &str) -> Result<u8, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "tcp" => Ok(6),
        "udp" => Ok(17),
        "icmp" => Ok(1),
        "icmpv6" | "ipv6-icmp" => Ok(58),
        "sctp" => Ok(132),
        "udplite" => Ok(136),
        "gre" => Ok(47),
        other => other.parse().map_err(|_| {
            format!("unknown protocol `{text}`; use tcp, udp, icmp, icmpv6, sctp or a number")
        }),
    }
}

#[derive(Debug, Args, Clone)]
pub struct LoadArgs {
    /// What each flow is.
    #[arg(long, value_enum, default_value_t = crate::loadgen::FlowKind::Udp)]
    pub kind: crate::loadgen::FlowKind,

    /// New flows per second (all threads together); 0 or absent: as fast as
    /// possible.
    #[arg(long, value_name = "PER_SEC")]
    pub rate: Option<u64>,

    /// Stop after this many flows.
    #[arg(short = 'n', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Stop after this long (default 10 s when --count is not given).
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Sending threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub threads: u64,

    /// Use this existing namespace (`ip netns` name or a path like
    /// /proc/PID/ns/net) instead of a private one; it must have a ruleset
    /// that uses conntrack.
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,

    /// Lower nf_conntrack_max to this many entries for the run so that the
    /// table fills and drops; restored at exit. It is a global limit: every
    /// namespace on the machine is held to it while the run lasts.
    #[arg(long, value_name = "ENTRIES", value_parser = clap::value_parser!(u64).range(1..))]
    pub squeeze: Option<u64>,

    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,

    /// Create this file once the namespace is ready and load is about to start.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
}

const DEMO_AFTER: &str = "\
The namespace is created for the demo and removed at exit with its entries; the
view starts filtered to it (/ changes the filter). Flows ramp up to --rate over the
first 5 s. Unreplied UDP entries live 30 s, so without --squeeze the table settles at
about 30 x rate entries. q, Ctrl-C or SIGTERM stop the load, restore
nf_conntrack_max and detach the probes. When stdout is not a terminal, it prints
`ctscope stats` lines instead.

Examples:
  ctscope demo --squeeze 5000        fills to 5000 entries in seconds, then drops
  ctscope demo --kind syn --rate 500 --duration 60";

#[derive(Debug, Args, Clone)]
pub struct DemoArgs {
    /// New flows per second at the end of the ramp; 0: as fast as possible.
    #[arg(long, default_value_t = 2000, value_name = "PER_SEC")]
    pub rate: u64,

    /// End the demo after this long (e.g. 30, 30s, 5m). Default: until q.
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Lower nf_conntrack_max to this many entries while the demo runs, so
    /// the namespace fills and drops; restored at exit. It is a global
    /// limit: every namespace on the machine is held to it meanwhile.
    #[arg(long, value_name = "ENTRIES", value_parser = clap::value_parser!(u64).range(1..))]
    pub squeeze: Option<u64>,

    /// What each flow is.
    #[arg(long, value_enum, default_value_t = crate::loadgen::FlowKind::Udp)]
    pub kind: crate::loadgen::FlowKind,

    #[command(flatten)]
    pub top: TopArgs,
}

#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// Address and port to listen on. The default is loopback only; use
    /// 0.0.0.0:9464 (or [::]:9464) to let a remote Prometheus scrape.
    #[arg(long, default_value = crate::commands::serve::DEFAULT_LISTEN,
          value_parser = crate::commands::serve::parse_listen, value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddr,

    /// How often the counters are read, the hash table walked and the page
    /// refreshed (a walk of a million entries costs about 0.15 s of CPU).
    #[arg(short, long, default_value = "5", value_name = "DURATION", value_parser = parse_duration)]
    pub interval: Duration,

    /// Create this file once the probes are attached and the port is open.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
}

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
    #[arg(short, long, default_value = "1", value_name = "DURATION", value_parser = parse_duration)]
    pub interval: Duration,

    #[command(flatten)]
    pub filter: TraceFilterArgs,

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

/// Which events `record` keeps (snapshots are always complete).
#[derive(Debug, Args, Clone, Default)]
pub struct TraceFilterArgs {
    /// Only drops of these causes (comma-separated or repeated): table_full,
    /// invalid, insert_failed, chain_too_long, ruleset (alias policy).
    /// Allocations and frees are then not recorded.
    #[arg(long, value_name = "CAUSE", value_delimiter = ',', value_parser = Cause::parse)]
    pub cause: Vec<Cause>,

    /// Only dropped TCP SYNs without ACK (no allocations or frees).
    #[arg(long)]
    pub syn: bool,

    /// Only events of this network namespace (its inode number, as in
    /// "table full in netns N").
    #[arg(long, value_name = "INUM")]
    pub netns: Option<u32>,

    /// Only this protocol (tcp, udp, icmp, icmpv6, sctp or a number).
    #[arg(long, value_name = "PROTO", value_parser = parse_proto)]
    pub proto: Option<u8>,

    /// Only events whose source or destination port is this.
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,

    /// Only events whose source or destination address is this.
    #[arg(long, value_name = "ADDR")]
    pub host: Option<IpAddr>,
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

fn parse_speed(text: &str) -> Result<Speed, String> {
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

const DOCTOR_AFTER: &str = "\
Exit status: 0 when nothing needs doing (or only information), 1 for warnings,
2 when ctscope cannot run here or the table is in trouble (over 95% full,
dropping). The checks load the probes for a moment (--no-load skips that).";

#[derive(Debug, Args, Clone)]
pub struct DoctorArgs {
    /// One JSON object: every check, and the facts gathered.
    #[arg(long)]
    pub json: bool,

    /// Do not load the probes to prove they work.
    #[arg(long)]
    pub no_load: bool,
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
    fn sizes_and_speeds_parse() {
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("500M"), Ok(500 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        for bad in ["", "1K", "5X", "big", "-1G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_speed("max"), Ok(Speed::Max));
        assert_eq!(parse_speed("10x"), Ok(Speed::Times(10.0)));
        assert!(parse_speed("0").is_err() && parse_speed("fast").is_err());
    }

    #[test]
    fn trace_commands_parse() {
        let cli = Cli::try_parse_from([
            "ctscope",
            "record",
            "-o",
            "t.ctrace",
            "--cause",
            "table_full,policy",
            "--port",
            "443",
            "--max-size",
            "1G",
            "--compress",
        ])
        .expect("parse");
        let Some(Command::Record(args)) = cli.command else {
            panic!("not record");
        };
        assert_eq!(args.filter.cause, [Cause::TableFull, Cause::Ruleset]);
        assert_eq!(
            (args.filter.port, args.max_size),
            (Some(443), Some(1 << 30))
        );
        assert!(args.compress);
        assert!(
            Cli::try_parse_from(["ctscope", "record"]).is_err(),
            "-o is required"
        );
        assert!(Cli::try_parse_from(["ctscope", "record", "-o", "f", "--cause", "x"]).is_err());
        let cli = Cli::try_parse_from([
            "ctscope",
            "export",
            "t.ctrace",
            "--format",
            "csv",
            "--kind",
            "drops,alloc",
        ])
        .expect("parse");
        let Some(Command::Export(args)) = cli.command else {
            panic!("not export");
        };
        assert_eq!(args.kind, [ExportKind::Drops, ExportKind::Alloc]);
        assert_eq!(args.format, ExportFormat::Csv);
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }

    #[test]
    fn drops_flags_build_a_filter() {
        let cli = Cli::try_parse_from([
            "ctscope",
            "drops",
            "--syn",
            "--cause",
            "policy",
            "--cause",
            "table-full",
            "--proto",
            "tcp",
            "--port",
            "443",
            "--host",
            "::1",
        ])
        .expect("parse");
        let Some(Command::Drops(args)) = cli.command else {
            panic!("not drops");
        };
        let f = args.filter();
        assert!(f.syn_only);
        assert_eq!(f.proto, Some(6));
        assert_eq!(f.port, Some(443));
        assert_eq!(f.causes.len(), 2);
        assert_eq!(f.host, Some("::1".parse().expect("addr")));
        assert!(Cli::try_parse_from(["ctscope", "drops", "--proto", "bogus"]).is_err());
        assert!(Cli::try_parse_from(["ctscope", "drops", "--cause", "bogus"]).is_err());
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

    #[test]
    fn top_flags_parse() {
        let cli = Cli::try_parse_from(["ctscope", "top", "-i", "500ms"]).expect("parse");
        let Some(Command::Top(args)) = cli.command else {
            panic!("not top");
        };
        assert_eq!(args.interval, Duration::from_millis(500));
        assert!(
            Cli::try_parse_from(["ctscope"])
                .expect("bare")
                .command
                .is_none()
        );
    }
}
