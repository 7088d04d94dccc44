//! Arguments of the commands that watch the live kernel: stats, drops,
//! top, demo, buckets, load, serve, doctor.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use super::parse::{parse_duration, parse_interval, parse_proto};
use clap::Args;

use crate::model::drops::Cause;

pub(super) const BUCKETS_AFTER: &str = "\
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

pub(super) const HOLDERS_AFTER: &str = "\
A holder is a group of conntrack entries that together take room in the table:
entries to one destination address:port (--by dst, the default), from one
source address (src), in one protocol state (state), or in one network
namespace (netns). Each entry is counted once, in its namespace, with the seconds
left before it expires.

When the table is full, read the top rows:
- one destination or source holds a large share, often in one state (say 40
  ESTABLISHED entries to :9000 with days left, from a client that never closes
  its connections, or thousands in TIME_WAIT or SYN_SENT): fix that client or
  shorten that state's timeout in that namespace; raising the limit only
  postpones the next outage;
- the entries are spread over many destinations and sources in normal states:
  the load is real; raise nf_conntrack_max (and nf_conntrack_buckets with it,
  see `ctscope doctor`).

The kernel keeps no creation time per entry (without nf_conntrack_timestamp),
so age shows as the timeout left: an ESTABLISHED entry with close to the full
timeout (432000 s by default) left was active recently; one with much less has
been idle that long.

Counts are exact while a grouping has fewer than 16,384 distinct keys; beyond
that they are upper bounds (space-saving) and `approximate` is true, and any
key holding more than 1/16,384 of the entries is still listed. The walk that
finds the holders is the one `ctscope buckets` makes, reading the original
tuple, timeout, namespace and state of each entry as well.";

#[derive(Debug, Args, Clone)]
pub struct HoldersArgs {
    /// One JSON object with every grouping (by_dst, by_src, by_state,
    /// by_netns). Default: a table of the --by grouping.
    #[arg(long)]
    pub json: bool,

    /// Group entries by destination address:port, source address, state,
    /// or namespace.
    #[arg(long, default_value = "dst", value_name = "BY", value_parser = ["dst", "src", "state", "netns"])]
    pub by: String,

    /// Rows per grouping (at most 64).
    #[arg(long, default_value_t = 10, value_name = "K")]
    pub top: usize,

    /// Read the holders of the last table walk recorded in this trace
    /// (`ctscope record`, top's `r`), replayed through the same model as
    /// live capture, instead of walking the live table. Needs no privileges.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,

    /// Create this file once the walker is loaded, before the walk.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
}

pub(super) const TOP_AFTER: &str = "\
Keys: q quit, p pause, Tab/Shift-Tab or 1-7 focus a panel, z zoom it, arrows or
j/k scroll, s sort, / filter (netns, port, host), r record, ? help. Panel 7,
Holders, shows who holds the table (see `ctscope holders --help`); s there
groups by destination, source, state or namespace.

r starts recording a trace (every allocation, free and drop, and a snapshot each
interval) to ctscope-YYYYmmdd-HHMMSS.ctrace; r again, or quitting, closes it.
Read it with `ctscope replay`, `info` or `export`.

When stdout is not a terminal, ctscope says so and prints `ctscope stats` lines
instead. NO_COLOR=1 turns colours off. Needs at least 80x24.";

#[derive(Debug, Args, Clone)]
pub struct TopArgs {
    /// Seconds between samples: the rates' resolution and how often the
    /// screen updates its counts (e.g. 1, 0.5, 2s).
    #[arg(short, long, default_value = "1", value_name = "DURATION", value_parser = parse_interval)]
    pub interval: Duration,

    /// Create this file once the probes are attached (for scripts and tests).
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,

    /// Where `r` writes its recordings, named ctscope-YYYYmmdd-HHMMSS.ctrace
    /// (UTC). Default: the current directory.
    #[arg(long, value_name = "DIR")]
    pub record_dir: Option<PathBuf>,
}

pub(super) const SERVE_AFTER: &str = "\
node_nf_conntrack_entries, node_nf_conntrack_entries_limit and node_nf_conntrack_stat_*
keep node_exporter's names and meaning (ctscope's own namespace); ctscope_* adds drops
per cause, allocations and frees, entries and drops per namespace (label netns), the
chain-length histogram and walk cost, and lost events. deploy/ has a Kubernetes
DaemonSet, Prometheus alerts and a Grafana dashboard.";

pub(super) const LOAD_AFTER: &str = "\
Each flow has a new tuple, so each creates one conntrack entry in the load namespace.
The namespace is created for the run and disappears with its entries at exit, unless
--netns names an existing one. Without --count or --duration the run lasts 10 s.

Examples:
  ctscope load --rate 20000 --duration 60          20k new UDP flows a second
  ctscope load --kind syn --squeeze 5000           fill to 5000 entries, then drops
  ctscope load --json --count 200000               as fast as possible, report as JSON";

pub(super) const DROPS_AFTER: &str = "\
Causes: table_full (no room: nf_conntrack_max reached), invalid (conntrack found the
packet invalid), insert_failed and chain_too_long (the new entry could not be inserted),
ruleset, shown as \"policy\": your firewall dropped a packet conntrack accepted, and
other: kernel code that is neither (NAT, a helper, ...), named with the hook.
docs/drop-causes.md explains how each is recognised. Counts per cause are exact; under
a flood the kernel sends the details of one drop in N, and ctscope says so.

Examples:
  ctscope drops --syn                       dropped connection attempts
  ctscope drops --cause table_full --port 443
  ctscope drops --json --duration 60 | jq 'select(.type==\"drop\") | .dst'";

pub(super) const STATS_AFTER: &str = "\
Counts come from in-kernel per-CPU counters and are exact. `kernel.*` are the
kernel's own conntrack counters (/proc/net/stat/nf_conntrack, or ctnetlink as
`conntrack -S` reads them), summed over every network namespace ctscope can
enter, as deltas since ctscope started. The JSON output is described by
docs/stats.schema.json.";

#[derive(Debug, Args, Clone)]
pub struct StatsArgs {
    /// One JSON object per interval, one per line (schema:
    /// docs/stats.schema.json). Default: a compact table.
    #[arg(long)]
    pub json: bool,

    /// Seconds between reports (e.g. 1, 0.5, 2s, 500ms).
    #[arg(short, long, default_value = "1", value_name = "DURATION", value_parser = parse_interval)]
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

    #[command(flatten)]
    pub filter: FilterArgs,

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

pub(super) const DEMO_AFTER: &str = "\
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
    #[arg(short, long, default_value = "5", value_name = "DURATION", value_parser = parse_interval)]
    pub interval: Duration,

    /// Create this file once the probes are attached and the port is open.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,

    /// Most HTTP connections open at once. One more evicts the oldest
    /// connection that has no request in progress, or is closed at once if
    /// all are busy. Kept 256 below the open-file limit, which serve raises
    /// to its hard limit, so clients never starve collection of descriptors.
    #[arg(long, default_value = "64", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_connections: u32,

    /// Close a connection when a request's header has not fully arrived
    /// this long after it opened or after the previous response (keep-alive
    /// idle time). No connection lives longer than 2 minutes in all.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    pub idle_timeout: Duration,
}

/// Which events to keep: the same flags for `drops` and `record` (a
/// recording's snapshots are always complete).
#[derive(Debug, Args, Clone, Default)]
pub struct FilterArgs {
    /// Only drops of these causes (comma-separated or repeated): table_full,
    /// invalid, insert_failed, chain_too_long, ruleset (alias policy), other. A
    /// recording then holds no allocations or frees.
    #[arg(long, value_name = "CAUSE", value_delimiter = ',', value_parser = Cause::parse)]
    pub cause: Vec<Cause>,

    /// Only dropped TCP SYNs without ACK: dropped connection attempts.
    #[arg(long)]
    pub syn: bool,

    /// Only this network namespace (its inode number, as in "table full in
    /// netns N"; `ls -Li /proc/PID/ns/net` shows a process's).
    #[arg(long, value_name = "INUM")]
    pub netns: Option<u32>,

    /// Only this protocol: tcp, udp, icmp, icmpv6, sctp, or a number.
    #[arg(long, value_name = "PROTO", value_parser = parse_proto)]
    pub proto: Option<u8>,

    /// Only packets whose source or destination port is this.
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,

    /// Only packets whose source or destination address is this.
    #[arg(long, value_name = "ADDR")]
    pub host: Option<IpAddr>,
}

impl FilterArgs {
    /// The per-packet drop view's filter (`drops`, the TUI).
    pub fn drop_filter(&self) -> crate::model::drops::DropFilter {
        crate::model::drops::DropFilter {
            causes: self.cause.clone(),
            syn_only: self.syn,
            netns: self.netns,
            proto: self.proto,
            port: self.port,
            host: self.host,
        }
    }

    /// The recorder's filter over raw kernel events.
    pub fn event_filter(&self) -> crate::trace::filter::EventFilter {
        crate::trace::filter::EventFilter {
            causes: self.cause.clone(),
            syn_only: self.syn,
            netns: self.netns,
            proto: self.proto,
            port: self.port,
            host: self.host,
        }
    }
}

pub(super) const DOCTOR_AFTER: &str = "\
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
