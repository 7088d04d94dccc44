//! Command-line interface. `--help` is where users learn the tool, so each
//! option says what it does, its default and its unit.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::kernel::netns::StatsSource;

mod live;
mod parse;
#[cfg(test)]
mod tests;
mod trace;

pub use live::*;
pub use parse::*;
pub use trace::*;

const ABOUT: &str = "\
Live, lossless observer of the Linux connection-tracking table (nf_conntrack).

ctscope attaches eBPF probes to conntrack's allocation, free and drop paths and
shows how full the table is, how fast entries come and go, and which packets
conntrack drops and why: the table was full, the packet was invalid, the insert
failed, a hash chain was too long, or your ruleset dropped it.

Needs root (or CAP_BPF + CAP_PERFMON to load its programs, CAP_SYSLOG to read
kernel addresses, CAP_SYS_ADMIN to read other namespaces' counters) and a kernel
with BTF. Everything it attaches is released when it exits.";

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
  ctscope stats --buckets                chain-length summary every interval
  ctscope holders --by dst --top 5       which destinations hold the most
                                         entries (who fills the table)";

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
    /// Who holds the table: its entries grouped by destination, source,
    /// state or namespace, largest first, with the time they have left.
    /// Tells "raise the limit" from "fix the client that leaks connections".
    #[command(after_help = HOLDERS_AFTER)]
    Holders(HoldersArgs),

    /// Live view: table fill, rates, bucket chains, drops, namespaces and
    /// tuning advice on one screen. Plain `ctscope` in a terminal runs this.
    #[command(after_help = TOP_AFTER)]
    Top(TopArgs),
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

/// Options for loading the probes, shared by every command that attaches:
/// under their own heading, and only in `--help` (every command accepts
/// them, so `-h` of each would repeat them; issue 18).
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Probe options (every command; shown by --help, not -h)")]
pub struct ProbeArgs {
    /// Size of the kernel-to-ctscope event ring buffer in MiB (a power of
    /// two). Events that do not fit are counted as lost, never dropped
    /// silently. Default: 1 for stats and serve (they stream no per-entry
    /// events), 4 for drops and top, 16 for commands that stream every event.
    #[arg(long, global = true, hide_short_help = true, value_name = "MIB", value_parser = parse_ring_mib)]
    pub ring_size: Option<u32>,

    /// Which probes to use. kprobe: conntrack's own functions (distribution
    /// kernels; exact table-full and insert-failure attribution). tracepoint:
    /// the slab and kfree_skb tracepoints (kernels without kprobes). auto:
    /// kprobe when the kernel has kprobes and conntrack's functions are not
    /// inlined, else tracepoint. The choice and the reason are printed on
    /// stderr and reported as `backend` in stats.
    #[arg(long, global = true, hide_short_help = true, value_enum, env = "CTSCOPE_BACKEND",
          default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,

    /// Where to read the kernel's own conntrack counters.
    #[arg(long, global = true, hide_short_help = true, value_enum, default_value_t = StatsSourceArg::Auto)]
    pub kernel_stats: StatsSourceArg,

    /// How to find the conntrack hash table, whose address the kernel does
    /// not export (bucket walks and the chain-too-long drop cause).
    #[arg(long, global = true, hide_short_help = true, value_enum, default_value_t = Locate::Auto)]
    pub locate: Locate,

    /// Attach programs that return at once to the hooks this command would
    /// use, instead of ctscope's own: what the hooks' dispatch alone costs
    /// (`cargo xtask bench` measures this floor). Counts stay zero.
    #[arg(long, global = true, hide = true)]
    pub floor: bool,
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
