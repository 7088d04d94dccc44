//! Tuning advice: the rules of the conntrack tuning guide (EMQX's
//! "performance tuning: connection tracking", with the kernel's
//! Documentation/networking/nf_conntrack-sysctl.rst) applied to what ctscope
//! measured, each with the exact commands to run.
//!
//! Pure: [`advise`] maps [`Facts`] to [`Finding`]s. The TUI builds the facts
//! from the model; `ctscope doctor` can build them from one reading.

use serde::Serialize;

use super::{Model, NetnsRow, buckets::BucketWalk};
use crate::kernel::netns::Enter;

/// The guide's warning and critical fill levels of a namespace's table.
pub const FILL_WARNING: f64 = 0.90;
pub const FILL_CRITICAL: f64 = 0.95;
/// The kernel's default `nf_conntrack_tcp_timeout_established` (5 days) and
/// the guide's suggestion (6 hours).
pub const TCP_ESTABLISHED_DEFAULT: u64 = 432_000;
pub const TCP_ESTABLISHED_SUGGESTED: u64 = 21_600;
/// The guide's ceiling on the average chain length (nodes per bucket).
pub const CHAIN_CEILING: f64 = 8.0;
/// Bytes per bucket head (`struct hlist_nulls_head`, one pointer).
pub const BUCKET_BYTES: u64 = 8;
/// Where the persistence commands write.
pub const SYSCTL_D_FILE: &str = "/etc/sysctl.d/90-conntrack.conf";
pub const UDEV_RULE_FILE: &str = "/etc/udev/rules.d/50-nf_conntrack.rules";
/// Re-applies the net.netfilter sysctls when the module loads (the guide's
/// fix for sysctl.d running before nf_conntrack exists).
pub const UDEV_RULE: &str = "ACTION==\"add\", SUBSYSTEM==\"module\", KERNEL==\"nf_conntrack\", \
                             RUN+=\"/usr/lib/systemd/systemd-sysctl --prefix=/net/netfilter\"";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One piece of advice.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// Stable name of the rule (`raise-max`, `buckets`, `chain-mean`,
    /// `chain-too-long`, `tcp-timeout`, `persist`).
    pub id: &'static str,
    pub severity: Severity,
    pub message: String,
    /// Shell commands, run as root, in order.
    pub commands: Vec<String>,
}

/// The namespace whose count is closest to `nf_conntrack_max`: the kernel
/// holds each namespace's count to the global limit separately
/// (`__nf_conntrack_alloc`, net/netfilter/nf_conntrack_core.c).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct NamespaceFill {
    pub inum: u32,
    pub name: Option<String>,
    pub entries: u64,
    /// How a printed command reaches it (per-namespace sysctls).
    #[serde(default)]
    pub enter: Enter,
    /// Its own `nf_conntrack_tcp_timeout_established`, when read.
    #[serde(default)]
    pub tcp_timeout_established: Option<u64>,
}

impl NamespaceFill {
    /// From a namespace's row, when its count is known.
    pub fn of_row(r: &NetnsRow) -> Option<Self> {
        Some(Self {
            inum: r.inum,
            name: r.name.clone(),
            entries: r.entries?,
            enter: r.enter.clone(),
            tcp_timeout_established: r.tcp_timeout_established,
        })
    }

    /// The fullest of `fills` (ties: the lowest inode number).
    pub fn fullest(fills: impl Iterator<Item = Self>) -> Option<Self> {
        fills.max_by(|a, b| a.entries.cmp(&b.entries).then(b.inum.cmp(&a.inum)))
    }
}

/// Mean chain length (nodes per bucket), measured or estimated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChainFacts {
    pub mean: f64,
    pub max: Option<u32>,
    /// True when a walk of the table measured it; false for the estimate
    /// 2 x entries / buckets (every entry is linked twice).
    pub measured: bool,
}

/// What the rules look at.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    pub max: Option<u64>,
    pub buckets: Option<u64>,
    pub tcp_timeout_established: Option<u64>,
    pub fullest: Option<NamespaceFill>,
    /// Entries in all namespaces.
    pub entries_total: Option<u64>,
    /// Table-full and chain-too-long drops since ctscope started.
    pub drops_table_full: u64,
    pub drops_chain_too_long: u64,
    /// Drops given a cause beyond the kernel's own counter for it, since
    /// start (model/reconcile.rs).
    pub cause_mismatch: super::reconcile::CauseMismatch,
    pub chain: Option<ChainFacts>,
    /// Bytes per entry in the conntrack slab, if known.
    pub objsize: Option<u64>,
    /// Whether nf_conntrack is a loadable module (the udev rule matters
    /// only then); `None` when unknown.
    pub conntrack_module: Option<bool>,
}

impl Facts {
    /// Facts from the model's latest interval and bucket walk. `objsize` and
    /// `conntrack_module` are facts about the machine, left for the caller.
    pub fn from_model(model: &Model) -> Self {
        let mut facts = Facts {
            max: model.sysctls.nf_conntrack_max,
            buckets: model.sysctls.nf_conntrack_buckets,
            tcp_timeout_established: model.sysctls.nf_conntrack_tcp_timeout_established,
            ..Facts::default()
        };
        if let Some(latest) = &model.latest {
            facts.max = latest.table.max.or(facts.max);
            facts.buckets = latest.table.buckets.or(facts.buckets);
            facts.entries_total = latest.table.entries;
            facts.drops_table_full = latest.totals.drop_table_full;
            facts.drops_chain_too_long = latest.totals.drop_chain_too_long;
            facts.cause_mismatch = latest.causes.total;
            facts.fullest =
                NamespaceFill::fullest(latest.netns.iter().filter_map(NamespaceFill::of_row));
        }
        facts.chain = match (&model.buckets, facts.entries_total, facts.buckets) {
            (Some(walk), ..) => Some(ChainFacts::from_walk(walk)),
            (None, Some(entries), Some(buckets)) if buckets > 0 => Some(ChainFacts {
                mean: 2.0 * entries as f64 / buckets as f64,
                max: None,
                measured: false,
            }),
            _ => None,
        };
        facts
    }

    /// Fill of the fullest namespace, 0.0-1.0 (more when over the limit).
    pub fn fill(&self) -> Option<f64> {
        match (&self.fullest, self.max) {
            (Some(f), Some(max)) if max > 0 => Some(f.entries as f64 / max as f64),
            _ => None,
        }
    }
}

impl ChainFacts {
    pub fn from_walk(walk: &BucketWalk) -> Self {
        Self {
            mean: walk.mean,
            max: Some(walk.max),
            measured: true,
        }
    }
}

/// Sysctl values the findings ask for; a later rule only raises them.
#[derive(Default)]
struct Plan {
    settings: Vec<(&'static str, u64)>,
}

impl Plan {
    fn get(&self, name: &str) -> Option<u64> {
        self.settings
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }

    /// Records `name = value`; returns the command, or None when an earlier
    /// finding already asks for at least this much.
    fn set(&mut self, name: &'static str, value: u64) -> Option<String> {
        match self.settings.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) if *v >= value => return None,
            Some((_, v)) => *v = value,
            None => self.settings.push((name, value)),
        }
        Some(format!("sysctl -w net.netfilter.{name}={value}"))
    }
}

/// Applies every rule; findings come most severe first.
pub fn advise(f: &Facts) -> Vec<Finding> {
    let mut plan = Plan::default();
    let mut out = Vec::new();
    out.extend(raise_max(f, &mut plan));
    if plan.get("nf_conntrack_max").is_none() {
        out.extend(buckets_against_max(f, &mut plan));
    }
    out.extend(chain_mean(f, &mut plan));
    out.extend(chain_too_long(f, &mut plan));
    out.extend(tcp_timeout(f, &mut plan));
    out.extend(persist(f, &plan));
    out.extend(cause_mismatch(f));
    // Stable: equal severities keep the order above.
    out.sort_by_key(|f| std::cmp::Reverse(f.severity));
    out
}

fn who(n: &NamespaceFill) -> String {
    match &n.name {
        Some(name) => format!("netns {} ({name})", n.inum),
        None => format!("netns {}", n.inum),
    }
}

/// Raise `nf_conntrack_max` past 90% fill, or once the table has dropped
/// packets for being full. The new limit doubles the old one (to a power of
/// two), and the buckets follow so a full table keeps the kernel's default
/// of two nodes per chain.
fn raise_max(f: &Facts, plan: &mut Plan) -> Option<Finding> {
    let max = f.max.filter(|m| *m > 0)?;
    let fill = f.fill().unwrap_or(0.0);
    let severity = if f.drops_table_full > 0 || fill >= FILL_CRITICAL {
        Severity::Critical
    } else if fill >= FILL_WARNING {
        Severity::Warning
    } else {
        return None;
    };
    let peak = f.fullest.as_ref().map_or(0, |n| n.entries).max(max);
    let new_max = peak.saturating_mul(2).next_power_of_two();
    let mut message = match &f.fullest {
        Some(n) => format!(
            "{} holds {:.0}% of nf_conntrack_max ({} of {max}).",
            who(n),
            fill * 100.0,
            n.entries
        ),
        None => String::new(),
    };
    if f.drops_table_full > 0 {
        message.push_str(&format!(
            " {} packets were dropped because the table was full.",
            f.drops_table_full
        ));
    } else {
        message.push_str(" New connections are dropped once it is full.");
    }
    message.push_str(&format!(" Raise the limit to {new_max}"));
    let mut commands: Vec<String> = plan.set("nf_conntrack_max", new_max).into_iter().collect();
    if f.buckets.is_some_and(|b| b < new_max) {
        message.push_str(" and the buckets with it (a full table then averages 2 nodes per chain)");
        commands.extend(plan.set("nf_conntrack_buckets", new_max));
    }
    let new_buckets = f.buckets.map_or(new_max, |b| b.max(new_max));
    message.push_str(&format!(
        "; {}.",
        memory_note(new_max, new_buckets, f.objsize)
    ));
    Some(Finding {
        id: "raise-max",
        severity,
        message: message.trim_start().to_owned(),
        commands,
    })
}

/// What a table of `max` entries and `buckets` buckets costs.
fn memory_note(max: u64, buckets: u64, objsize: Option<u64>) -> String {
    let (size, approx) = match objsize {
        Some(s) => (s, ""),
        None => (320, "up to "),
    };
    let bytes = max.saturating_mul(size) + buckets.saturating_mul(BUCKET_BYTES);
    format!(
        "{max} entries take {approx}{} ({size} B each + {BUCKET_BYTES} B per bucket)",
        mib(bytes)
    )
}

pub fn mib(bytes: u64) -> String {
    let m = bytes as f64 / (1024.0 * 1024.0);
    if m >= 1024.0 {
        format!("{:.1} GiB", m / 1024.0)
    } else if m >= 10.0 {
        format!("{m:.0} MiB")
    } else {
        format!("{m:.1} MiB")
    }
}

/// Each entry is linked twice, so a full table averages 2 x max / buckets
/// nodes per chain (nf_conntrack-sysctl.rst). The kernel's default since
/// 5.15 is buckets = max (2 per chain); the guide's ceiling is 8 (max = 4 x
/// buckets, the old default).
fn buckets_against_max(f: &Facts, plan: &mut Plan) -> Option<Finding> {
    let (max, buckets) = (f.max?, f.buckets.filter(|b| *b > 0)?);
    if max <= buckets {
        return None;
    }
    let at_full = 2.0 * max as f64 / buckets as f64;
    let severity = if at_full > CHAIN_CEILING {
        Severity::Warning
    } else {
        Severity::Info
    };
    Some(Finding {
        id: "buckets",
        severity,
        message: format!(
            "nf_conntrack_max ({max}) is {:.1}x nf_conntrack_buckets ({buckets}): a full table \
             averages {at_full:.1} nodes per chain (each entry is linked twice; the guide's \
             ceiling is {CHAIN_CEILING:.0}). Set the buckets to the limit, the kernel's default \
             since 5.15.",
            max as f64 / buckets as f64
        ),
        commands: plan.set("nf_conntrack_buckets", max).into_iter().collect(),
    })
}

/// Chains longer than one node make every lookup compare more tuples; the
/// guide aims at 1 and never more than 8.
fn chain_mean(f: &Facts, plan: &mut Plan) -> Option<Finding> {
    let chain = f.chain?;
    if chain.mean <= 1.0 {
        return None;
    }
    let buckets = f.buckets.filter(|b| *b > 0)?;
    let severity = if chain.mean > CHAIN_CEILING {
        Severity::Warning
    } else {
        Severity::Info
    };
    let how = if chain.measured {
        "measured by a walk of the table"
    } else {
        "estimated as 2 x entries / buckets"
    };
    let nodes = (chain.mean * buckets as f64).ceil() as u64;
    let want = nodes.max(1).next_power_of_two();
    let command = plan.set("nf_conntrack_buckets", want);
    let mut message = format!(
        "Hash chains average {:.2} nodes ({how}); the guide aims at 1 and at most \
         {CHAIN_CEILING:.0}.",
        chain.mean
    );
    if command.is_some() {
        message.push_str(&format!(" {want} buckets bring the mean to 1 or less."));
    } else {
        message.push_str(" The bucket change above covers it.");
    }
    Some(Finding {
        id: "chain-mean",
        severity,
        message,
        commands: command.into_iter().collect(),
    })
}

/// ctscope counted more drops of a cause than the kernel's own counter for
/// it allows: some drops got the wrong cause; say so rather than let the
/// counts mislead.
fn cause_mismatch(f: &Facts) -> Option<Finding> {
    let over: Vec<String> = f
        .cause_mismatch
        .causes()
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(c, n)| format!("{c} by {n}"))
        .collect();
    if over.is_empty() {
        return None;
    }
    Some(Finding {
        id: "cause-mismatch",
        severity: Severity::Warning,
        message: format!(
            "ctscope's drop causes exceed the kernel's own counters ({}): some drops \
             were given the wrong cause (docs/drop-causes.md, reconciliation).",
            over.join(", ")
        ),
        commands: Vec::new(),
    })
}

/// An insert fails when its chain passes a random limit of 50-79 nodes
/// (`__nf_conntrack_confirm`, since about 6.3): too few buckets or a bad
/// hash spread.
fn chain_too_long(f: &Facts, plan: &mut Plan) -> Option<Finding> {
    if f.drops_chain_too_long == 0 {
        return None;
    }
    let buckets = f.buckets.filter(|b| *b > 0)?;
    let want = buckets.saturating_mul(2).next_power_of_two();
    let command = plan.set("nf_conntrack_buckets", want);
    let mut message = format!(
        "{} packets were dropped because their hash chain passed the kernel's limit \
         (50-79 nodes).",
        f.drops_chain_too_long
    );
    if command.is_some() {
        message.push_str(" More buckets shorten every chain.");
    }
    Some(Finding {
        id: "chain-too-long",
        severity: Severity::Warning,
        message,
        commands: command.into_iter().collect(),
    })
}

/// The guide: established TCP entries live 5 days without traffic by
/// default; 6 hours is enough. The other TCP timeouts follow the protocol
/// and should be left alone.
fn tcp_timeout(f: &Facts, plan: &mut Plan) -> Option<Finding> {
    // The sysctl is per namespace: the one that matters is the fullest
    // namespace's own, set inside it. ctscope's own namespace is the
    // fallback when the fullest one's is unknown.
    let target = f
        .fullest
        .as_ref()
        .filter(|n| n.enter != Enter::Here)
        .and_then(|n| Some((n, n.tcp_timeout_established?)));
    let timeout = target.map_or(f.tcp_timeout_established, |(_, t)| Some(t))?;
    if timeout <= TCP_ESTABLISHED_SUGGESTED {
        return None;
    }
    let severity = if f.fill().is_some_and(|x| x >= FILL_WARNING) {
        Severity::Warning
    } else {
        Severity::Info
    };
    let name = "nf_conntrack_tcp_timeout_established";
    let (place, commands) = match target {
        // Another namespace: its own command, not part of the host's
        // sysctl.d (whoever creates the namespace sets it, e.g. a pod's
        // securityContext.sysctls).
        Some((n, _)) => {
            let set = format!("sysctl -w net.netfilter.{name}={TCP_ESTABLISHED_SUGGESTED}");
            match n.enter.wrap(&set) {
                Some(cmd) => (format!(" in {}", who(n)), vec![cmd]),
                None => (
                    format!(
                        " in {} (no process or name found to enter it by; run the command \
                         inside it: {set})",
                        who(n)
                    ),
                    Vec::new(),
                ),
            }
        }
        None => (
            String::new(),
            plan.set(name, TCP_ESTABLISHED_SUGGESTED)
                .into_iter()
                .collect(),
        ),
    };
    Some(Finding {
        id: "tcp-timeout",
        severity,
        message: format!(
            "Idle established TCP entries are kept {}{place} ({name} = {timeout}); the guide \
             suggests {} ({TCP_ESTABLISHED_SUGGESTED}) so idle connections free their entries \
             sooner. This sysctl is per network namespace: the command acts in that \
             namespace only. Leave the other TCP timeouts at their defaults.",
            human_secs(timeout),
            human_secs(TCP_ESTABLISHED_SUGGESTED)
        ),
        commands,
    })
}

fn human_secs(s: u64) -> String {
    match s {
        s if s % 86_400 == 0 => format!("{} days", s / 86_400),
        s if s % 3600 == 0 => format!("{} hours", s / 3600),
        s => format!("{s} s"),
    }
}

/// `sysctl -w` is lost at reboot. sysctl.d keeps it, but where nf_conntrack
/// is a module systemd-sysctl runs before the module exists, so the guide
/// adds a udev rule that re-applies net.netfilter when the module loads.
fn persist(f: &Facts, plan: &Plan) -> Option<Finding> {
    if plan.settings.is_empty() {
        return None;
    }
    let mut commands: Vec<String> = plan
        .settings
        .iter()
        .map(|(name, value)| format!("echo 'net.netfilter.{name} = {value}' >> {SYSCTL_D_FILE}"))
        .collect();
    let mut message =
        format!("sysctl -w lasts until reboot; {SYSCTL_D_FILE} makes the changes above permanent.");
    if f.conntrack_module == Some(false) {
        message.push_str(
            " nf_conntrack is built into this kernel, so sysctl.d applies at boot; where it is \
             a module, also add the udev rule that re-applies them when it loads.",
        );
    } else {
        message.push_str(
            " nf_conntrack loads after sysctl.d is applied, so a udev rule re-applies the \
             net.netfilter settings when the module loads.",
        );
        commands.push(format!("echo '{UDEV_RULE}' > {UDEV_RULE_FILE}"));
    }
    Some(Finding {
        id: "persist",
        severity: Severity::Info,
        message,
        commands,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(max: u64, buckets: u64, entries: u64) -> Facts {
        Facts {
            max: Some(max),
            buckets: Some(buckets),
            tcp_timeout_established: Some(TCP_ESTABLISHED_SUGGESTED),
            fullest: Some(NamespaceFill {
                inum: 4026531840,
                name: None,
                entries,
                ..NamespaceFill::default()
            }),
            entries_total: Some(entries),
            objsize: Some(256),
            conntrack_module: Some(false),
            ..Facts::default()
        }
    }

    fn ids(findings: &[Finding]) -> Vec<&'static str> {
        findings.iter().map(|f| f.id).collect()
    }

    #[test]
    fn a_healthy_table_needs_nothing() {
        assert!(advise(&facts(262_144, 262_144, 1000)).is_empty());
    }

    #[test]
    fn fill_past_90_percent_raises_max_and_buckets() {
        let out = advise(&facts(1000, 1024, 910));
        assert_eq!(ids(&out), ["raise-max", "persist"]);
        assert_eq!(out[0].severity, Severity::Warning);
        assert_eq!(
            out[0].commands,
            [
                "sysctl -w net.netfilter.nf_conntrack_max=2048",
                "sysctl -w net.netfilter.nf_conntrack_buckets=2048"
            ]
        );
        assert!(out[0].message.contains("91%"), "{}", out[0].message);
        // 2048 * 256 + 2048 * 8 bytes.
        assert!(out[0].message.contains("0.5 MiB"), "{}", out[0].message);
        assert_eq!(
            out[1].commands,
            [
                "echo 'net.netfilter.nf_conntrack_max = 2048' >> /etc/sysctl.d/90-conntrack.conf",
                "echo 'net.netfilter.nf_conntrack_buckets = 2048' >> /etc/sysctl.d/90-conntrack.conf"
            ]
        );
        assert!(advise(&facts(1000, 1024, 899)).is_empty(), "below 90%");
    }

    #[test]
    fn critical_at_95_percent_or_after_table_full_drops() {
        assert_eq!(
            advise(&facts(1000, 1024, 950))[0].severity,
            Severity::Critical
        );
        let mut f = facts(1000, 1024, 10);
        f.drops_table_full = 3;
        let out = advise(&f);
        assert_eq!(out[0].id, "raise-max");
        assert_eq!(out[0].severity, Severity::Critical);
        assert!(
            out[0].message.contains("3 packets were dropped"),
            "{}",
            out[0].message
        );
    }

    #[test]
    fn buckets_are_compared_with_max() {
        let out = advise(&facts(4096, 1024, 10));
        assert_eq!(ids(&out), ["buckets", "persist"]);
        assert_eq!(
            out[0].severity,
            Severity::Info,
            "2 x 4 = 8 nodes is the ceiling"
        );
        assert_eq!(
            out[0].commands,
            ["sysctl -w net.netfilter.nf_conntrack_buckets=4096"]
        );
        let out = advise(&facts(8192, 1024, 10));
        assert_eq!(out[0].severity, Severity::Warning, "16 nodes per chain");
    }

    #[test]
    fn long_mean_chains_ask_for_buckets_unless_already_raised() {
        let mut f = facts(262_144, 1024, 10);
        f.max = Some(1024);
        f.chain = Some(ChainFacts {
            mean: 1.5,
            max: Some(4),
            measured: true,
        });
        let out = advise(&f);
        assert_eq!(ids(&out), ["chain-mean", "persist"]);
        assert_eq!(
            out[0].commands,
            ["sysctl -w net.netfilter.nf_conntrack_buckets=2048"]
        );
        assert!(out[0].message.contains("measured"), "{}", out[0].message);

        // With the table nearly full, raising max to 2048 already brings
        // the buckets to 2048: no second, conflicting command.
        f.fullest = Some(NamespaceFill {
            inum: 1,
            name: Some("web".into()),
            entries: 1000,
            ..NamespaceFill::default()
        });
        let out = advise(&f);
        assert_eq!(ids(&out), ["raise-max", "chain-mean", "persist"]);
        assert!(out[1].commands.is_empty());
        assert!(
            out[0].message.contains("netns 1 (web)"),
            "{}",
            out[0].message
        );
    }

    #[test]
    fn the_estimate_is_labelled_and_walks_override_it() {
        let mut model = Model::default();
        model.sysctls.nf_conntrack_buckets = Some(1000);
        model.latest = Some(super::super::Interval {
            table: super::super::Table {
                entries: Some(750),
                max: Some(1000),
                buckets: Some(1000),
                ..Default::default()
            },
            ..Default::default()
        });
        let f = Facts::from_model(&model);
        let chain = f.chain.expect("estimate");
        assert!(!chain.measured);
        assert_eq!(chain.mean, 1.5);
        let out = advise(&f);
        assert!(out[0].message.contains("estimated"), "{:?}", out);
        model.buckets = Some(BucketWalk {
            mean: 0.9,
            max: 3,
            ..BucketWalk::default()
        });
        let f = Facts::from_model(&model);
        assert_eq!(f.chain.map(|c| (c.mean, c.measured)), Some((0.9, true)));
    }

    #[test]
    fn a_cause_mismatch_is_a_warning_naming_the_cause() {
        let mut f = Facts::default();
        assert!(advise(&f).iter().all(|x| x.id != "cause-mismatch"));
        f.cause_mismatch.insert_failed = 2;
        let found = advise(&f);
        let m = found
            .iter()
            .find(|x| x.id == "cause-mismatch")
            .expect("finding");
        assert_eq!(m.severity, Severity::Warning);
        assert!(m.message.contains("insert_failed by 2"), "{}", m.message);
    }

    #[test]
    fn chain_too_long_drops_are_a_warning() {
        let mut f = facts(1024, 1024, 10);
        f.drops_chain_too_long = 7;
        let out = advise(&f);
        assert_eq!(out[0].id, "chain-too-long");
        assert_eq!(
            out[0].commands,
            ["sysctl -w net.netfilter.nf_conntrack_buckets=2048"]
        );
    }

    #[test]
    fn tcp_timeout_follows_the_guide() {
        let mut f = facts(262_144, 262_144, 10);
        f.tcp_timeout_established = Some(TCP_ESTABLISHED_DEFAULT);
        let out = advise(&f);
        assert_eq!(ids(&out), ["tcp-timeout", "persist"]);
        assert_eq!(out[0].severity, Severity::Info);
        assert_eq!(
            out[0].commands,
            ["sysctl -w net.netfilter.nf_conntrack_tcp_timeout_established=21600"]
        );
        assert!(out[0].message.contains("5 days") && out[0].message.contains("6 hours"));
        // A filling table makes idle entries matter.
        f.fullest = Some(NamespaceFill {
            entries: 240_000,
            ..NamespaceFill::default()
        });
        let out = advise(&f);
        let tcp = out.iter().find(|x| x.id == "tcp-timeout").expect("tcp");
        assert_eq!(tcp.severity, Severity::Warning);
    }

    #[test]
    fn persistence_adds_the_udev_rule_where_conntrack_is_a_module() {
        let mut f = facts(4096, 1024, 10);
        f.conntrack_module = Some(true);
        let out = advise(&f);
        let persist = out.iter().find(|x| x.id == "persist").expect("persist");
        assert_eq!(
            persist.commands.last().map(String::as_str),
            Some(
                "echo 'ACTION==\"add\", SUBSYSTEM==\"module\", KERNEL==\"nf_conntrack\", \
                 RUN+=\"/usr/lib/systemd/systemd-sysctl --prefix=/net/netfilter\"' > \
                 /etc/udev/rules.d/50-nf_conntrack.rules"
            )
        );
        f.conntrack_module = None;
        let out = advise(&f);
        assert!(
            out.iter()
                .any(|x| x.commands.iter().any(|c| c.contains("udev")))
        );
        f.conntrack_module = Some(false);
        let out = advise(&f);
        let persist = out.iter().find(|x| x.id == "persist").expect("persist");
        assert!(persist.commands.iter().all(|c| !c.contains("udev")));
        assert!(persist.message.contains("built into this kernel"));
    }

    #[test]
    fn fill_is_per_namespace() {
        let mut f = facts(1000, 1024, 500);
        f.entries_total = Some(1800);
        assert_eq!(f.fill(), Some(0.5), "the limit applies to each namespace");
        assert!(advise(&f).is_empty());
    }

    fn idle_namespace(enter: Enter) -> Facts {
        Facts {
            max: Some(1000),
            buckets: Some(1024),
            tcp_timeout_established: Some(TCP_ESTABLISHED_SUGGESTED),
            fullest: Some(NamespaceFill {
                inum: 4026532999,
                name: None,
                entries: 800,
                enter,
                tcp_timeout_established: Some(432_000),
            }),
            ..Facts::default()
        }
    }

    fn timeout_finding(f: &Facts) -> Finding {
        advise(f)
            .into_iter()
            .find(|x| x.id == "tcp-timeout")
            .expect("a tcp-timeout finding")
    }

    #[test]
    fn the_timeout_advice_acts_in_the_namespace_it_is_about() {
        let named = timeout_finding(&idle_namespace(Enter::Named("web".into())));
        assert_eq!(
            named.commands,
            [
                "ip netns exec web sysctl -w net.netfilter.nf_conntrack_tcp_timeout_established=21600"
            ]
        );
        assert!(
            named.message.contains("in netns 4026532999"),
            "{}",
            named.message
        );
        assert!(named.message.contains("432000"), "{}", named.message);
        let pid = timeout_finding(&idle_namespace(Enter::Pid(4242)));
        assert_eq!(
            pid.commands,
            [
                "nsenter -n -t 4242 sysctl -w net.netfilter.nf_conntrack_tcp_timeout_established=21600"
            ]
        );
        // Another namespace's setting is not the host's sysctl.d business.
        let all = advise(&idle_namespace(Enter::Pid(4242)));
        assert!(
            all.iter()
                .flat_map(|f| &f.commands)
                .all(|c| !c.contains("sysctl.d") || !c.contains("tcp_timeout")),
            "{all:?}"
        );
        // No way in: the message says what to run inside it, no command.
        let unknown = timeout_finding(&idle_namespace(Enter::Unknown));
        assert!(unknown.commands.is_empty());
        assert!(
            unknown.message.contains("run the command inside it"),
            "{}",
            unknown.message
        );
    }

    #[test]
    fn the_host_namespace_gets_a_plain_command_and_its_persistence() {
        let mut f = idle_namespace(Enter::Here);
        f.tcp_timeout_established = Some(432_000);
        let out = advise(&f);
        let t = out.iter().find(|x| x.id == "tcp-timeout").expect("finding");
        assert_eq!(
            t.commands,
            ["sysctl -w net.netfilter.nf_conntrack_tcp_timeout_established=21600"]
        );
        let persist = out.iter().find(|x| x.id == "persist").expect("persist");
        assert!(
            persist
                .commands
                .iter()
                .any(|c| c.contains("tcp_timeout_established = 21600")),
            "{persist:?}"
        );
        // A namespace that is fine: nothing to say, whatever the host has.
        let mut fine = idle_namespace(Enter::Named("web".into()));
        if let Some(n) = fine.fullest.as_mut() {
            n.tcp_timeout_established = Some(TCP_ESTABLISHED_SUGGESTED);
        }
        fine.tcp_timeout_established = Some(432_000);
        assert!(advise(&fine).iter().all(|x| x.id != "tcp-timeout"));
    }
}
