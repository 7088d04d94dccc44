//! Everything the screen shows that is computed rather than read: fill and
//! its projection, chart series, sorted and filtered lists, advice. Built
//! in the update step from the model and the UI state, so rendering only
//! lays it out.

use crate::model::{
    Interval, Model, NetnsRow,
    advice::{self, ChainFacts, Facts, Finding, NamespaceFill},
    drops::{Cause, DropRecord, Tally, proto_name},
    holders::HolderRow,
};

use super::state::{DropSort, NsSort, Panel, UiState};

/// Chart history kept for the sparklines: ten minutes at one sample a
/// second, more than any terminal is wide.
pub const SERIES_POINTS: usize = 600;
/// Intervals the growth rate is averaged over.
const GROWTH_WINDOW: usize = 10;
/// Drops listed at most.
const DROP_LINES: usize = 500;
/// Destinations listed at most.
const TOP_DESTINATIONS: usize = 50;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Level {
    #[default]
    Ok,
    Warning,
    Critical,
}

impl Level {
    pub fn of_fill(ratio: f64) -> Self {
        if ratio >= advice::FILL_CRITICAL {
            Level::Critical
        } else if ratio >= advice::FILL_WARNING {
            Level::Warning
        } else {
            Level::Ok
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub enum TimeToFull {
    #[default]
    Unknown,
    /// At or past the limit now.
    Full,
    NotGrowing,
    Seconds(f64),
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct FillView {
    /// The filter picks the namespaces the gauge looks at.
    pub narrowed: bool,
    pub entries_total: Option<u64>,
    pub max: Option<u64>,
    pub buckets: Option<u64>,
    /// The namespace closest to the limit (each is held to it separately).
    pub fullest: Option<NamespaceFill>,
    /// Namespaces holding entries.
    pub namespaces: usize,
    pub ratio: Option<f64>,
    pub level: Level,
    /// Bytes per entry used for the estimates, and whether it was read
    /// from the kernel (else the guide's 320 B upper figure).
    pub objsize: u64,
    pub objsize_known: bool,
    pub memory_now: Option<u64>,
    pub memory_at_max: Option<u64>,
    /// Net growth of the fullest namespace, entries per second.
    pub growth: Option<f64>,
    pub time_to_full: TimeToFull,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    pub label: &'static str,
    pub now: f64,
    pub peak: f64,
    /// Oldest first, per second, rounded up so any activity shows.
    pub points: Vec<u64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct RatesView {
    /// alloc, free, all drops, then each drop cause and early drops.
    pub series: Vec<Series>,
    /// Seconds the kept points cover.
    pub span_secs: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NsLine {
    pub inum: u32,
    pub name: Option<String>,
    pub entries: Option<u64>,
    /// Percent of nf_conntrack_max.
    pub fill_pct: Option<u64>,
    pub alloc: u64,
    pub free: u64,
    pub drops: u64,
    /// False once the namespace is gone (its counts stay until retired).
    pub alive: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropLine {
    /// HH:MM:SS UTC (as `stats` prints), `--:--:--` before the first sample.
    pub time: String,
    pub cause: Cause,
    pub proto: String,
    pub src: String,
    pub dst: String,
    pub flags: String,
    pub ifname: String,
    pub netns: u32,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct DropsView {
    pub lines: Vec<DropLine>,
    /// Exact counts, or upper bounds once more destinations were dropped
    /// than are kept (`Tally`).
    pub top_dst: Vec<(String, Tally)>,
    /// What `top_dst` counts over.
    pub top_scope: String,
    /// Exact drops per cause since start (the in-kernel counters at the
    /// latest sample), of the namespaces the filter selects.
    pub by_cause: Vec<(Cause, u64)>,
    pub early_drop: u64,
    /// Per-packet detail received (the kernel may sample under a flood).
    pub received: u64,
    pub filtered: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Derived {
    /// False until the first interval has completed.
    pub ready: bool,
    pub lost_events: u64,
    /// Probe runs skipped because the probe was already running on the CPU.
    pub probe_misses: u64,
    pub fill: FillView,
    pub rates: RatesView,
    pub namespaces: Vec<NsLine>,
    /// Rows before the filter.
    pub namespaces_total: usize,
    pub drops: DropsView,
    pub chain: Option<ChainFacts>,
    pub advice: Vec<Finding>,
    /// Scrollable rows of the buckets panel: histogram classes up to the
    /// longest, hottest chains, and the walk's cost.
    pub bucket_rows: usize,
    pub holders: HoldersView,
}

/// The holders panel: the latest walk's groups of the grouping chosen with
/// `s`, narrowed by the filter, namespaces named.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HoldersView {
    /// Whether the latest walk found holders at all.
    pub walked: bool,
    /// Entries that walk grouped.
    pub entries: u64,
    /// Counts are upper bounds (more distinct keys than kept).
    pub approximate: bool,
    pub rows: Vec<HolderRow>,
    /// Rows before the filter.
    pub total: usize,
}

impl Derived {
    /// Lines a panel can scroll through.
    pub fn lines(&self, panel: Panel) -> usize {
        match panel {
            Panel::Namespaces => self.namespaces.len(),
            Panel::Drops => self.drops.lines.len().max(self.drops.top_dst.len()),
            // Advice scrolls by finding.
            Panel::Advice => self.advice.len(),
            Panel::Buckets => self.bucket_rows,
            Panel::Holders => self.holders.rows.len(),
            _ => 0,
        }
    }
}

pub fn derive(model: &Model, ui: &UiState) -> Derived {
    let mut facts = Facts::from_model(model);
    facts.objsize = ui.env.objsize;
    facts.conntrack_module = ui.env.conntrack_module;
    let Some(latest) = &model.latest else {
        return Derived {
            fill: fill(model, &facts, ui),
            advice: advice::advise(&facts),
            chain: facts.chain,
            ..Derived::default()
        };
    };
    let named: Vec<u32> = latest
        .netns
        .iter()
        .filter(|r| ui.filter.netns_name.is_some() && ui.filter.matches_netns(r))
        .map(|r| r.inum)
        .collect();
    Derived {
        ready: true,
        lost_events: latest.totals.lost_events,
        probe_misses: latest.totals.probe_misses,
        fill: fill(model, &facts, ui),
        rates: rates(model),
        namespaces: namespaces(latest, ui),
        namespaces_total: latest.netns.len(),
        drops: drops(model, latest, ui, &named),
        chain: facts.chain,
        advice: advice::advise(&facts),
        bucket_rows: model.buckets.as_ref().map_or(0, |w| {
            w.histogram.iter().rposition(|n| *n > 0).unwrap_or(0) + 1 + w.hottest.len() + 1
        }),
        holders: holders(model, latest, ui),
    }
}

fn holders(model: &Model, latest: &Interval, ui: &UiState) -> HoldersView {
    let Some(h) = model.buckets.as_ref().and_then(|w| w.holders.as_ref()) else {
        return HoldersView::default();
    };
    let all = h.rows(ui.holders_by);
    let name_of = |inum: u32| {
        latest
            .netns
            .iter()
            .find(|r| r.inum == inum)
            .and_then(|r| r.name.clone())
    };
    let f = &ui.filter;
    let rows = all
        .iter()
        .map(|r| HolderRow {
            netns_name: r.netns_name.clone().or_else(|| name_of(r.netns)),
            ..r.clone()
        })
        .filter(|r| {
            let host = f.drops.host.map(|a| a.to_string());
            f.drops.netns.is_none_or(|n| n == r.netns)
                && f.netns_name.as_ref().is_none_or(|want| {
                    r.netns_name
                        .as_ref()
                        .is_some_and(|name| name.contains(want.as_str()))
                })
                && f.drops.port.is_none_or(|p| r.dport.is_none_or(|d| d == p))
                && host.is_none_or(|a| {
                    (r.dst.is_none() && r.src.is_none())
                        || r.dst.as_deref() == Some(a.as_str())
                        || r.src.as_deref() == Some(a.as_str())
                })
                && f.drops
                    .proto
                    .is_none_or(|p| r.proto.as_ref().is_none_or(|name| *name == proto_name(p)))
        })
        .collect();
    HoldersView {
        walked: true,
        entries: h.entries,
        approximate: h.approximate,
        rows,
        total: all.len(),
    }
}

/// The fill of the fullest namespace, or of the fullest one the filter
/// selects (advice stays machine-wide).
fn fill(model: &Model, facts: &Facts, ui: &UiState) -> FillView {
    let filter = &ui.filter;
    let narrowed = filter.drops.netns.is_some() || filter.netns_name.is_some();
    let mut shown;
    let facts = if narrowed {
        shown = facts.clone();
        shown.fullest = model.latest.as_ref().and_then(|l| {
            NamespaceFill::fullest(
                l.netns
                    .iter()
                    .filter(|r| filter.matches_netns(r))
                    .filter_map(NamespaceFill::of_row),
            )
        });
        &shown
    } else {
        facts
    };
    let objsize_known = facts.objsize.is_some();
    let objsize = facts.objsize.unwrap_or(320);
    // With no namespace holding entries, the machine-wide count (0) still
    // gives the gauge a value.
    let ratio = facts.fill().or(match (facts.entries_total, facts.max) {
        (Some(e), Some(m)) if m > 0 => Some(e as f64 / m as f64),
        _ => None,
    });
    let buckets_bytes = facts.buckets.unwrap_or(0) * advice::BUCKET_BYTES;
    let growth = growth(model, facts.fullest.as_ref());
    let time_to_full = match (&facts.fullest, facts.max, growth) {
        (Some(n), Some(max), _) if n.entries >= max => TimeToFull::Full,
        (Some(n), Some(max), Some(g)) if g > 0.0 => {
            TimeToFull::Seconds((max - n.entries) as f64 / g)
        }
        (Some(_), Some(_), Some(_)) => TimeToFull::NotGrowing,
        _ => TimeToFull::Unknown,
    };
    FillView {
        narrowed,
        entries_total: facts.entries_total,
        max: facts.max,
        buckets: facts.buckets,
        fullest: facts.fullest.clone(),
        namespaces: model.latest.as_ref().map_or(0, |l| {
            l.netns
                .iter()
                .filter(|r| r.entries.is_some_and(|e| e > 0))
                .count()
        }),
        ratio,
        level: ratio.map_or(Level::Ok, Level::of_fill),
        objsize,
        objsize_known,
        memory_now: facts.entries_total.map(|e| e * objsize + buckets_bytes),
        memory_at_max: facts.max.map(|m| m * objsize + buckets_bytes),
        growth,
        time_to_full,
    }
}

/// Entries per second gained by the fullest namespace over the last few
/// intervals, from the kernel's own counts (so early drops and timeouts are
/// in it, which the probes' alloc - free would also show, but later).
fn growth(model: &Model, fullest: Option<&NamespaceFill>) -> Option<f64> {
    let entries_of = |i: &Interval| match fullest {
        Some(n) => i
            .netns
            .iter()
            .find(|r| r.inum == n.inum)
            .and_then(|r| r.entries),
        None => i.table.entries,
    };
    let now = model.history.back()?;
    let oldest = model.history.len().saturating_sub(GROWTH_WINDOW + 1);
    let then = model
        .history
        .iter()
        .skip(oldest)
        .find(|i| entries_of(i).is_some())?;
    let secs = now.ts_ms.saturating_sub(then.ts_ms) as f64 / 1000.0;
    if secs <= 0.0 {
        return None;
    }
    let (a, b) = (entries_of(then)?, entries_of(now)?);
    Some((b as f64 - a as f64) / secs)
}

fn rates(model: &Model) -> RatesView {
    type Pick = fn(&Interval) -> f64;
    let picks: [(&'static str, Pick); 9] = [
        ("alloc/s", |i| i.rates.alloc),
        ("free/s", |i| i.rates.free),
        ("drops/s", |i| {
            let r = &i.rates;
            r.drop_table_full
                + r.drop_invalid
                + r.drop_insert_failed
                + r.drop_chain_too_long
                + r.drop_ruleset
        }),
        ("table_full", |i| i.rates.drop_table_full),
        ("invalid", |i| i.rates.drop_invalid),
        ("insert_failed", |i| i.rates.drop_insert_failed),
        ("chain_too_long", |i| i.rates.drop_chain_too_long),
        ("ruleset", |i| i.rates.drop_ruleset),
        ("early_drop", |i| i.rates.early_drop),
    ];
    let skip = model.history.len().saturating_sub(SERIES_POINTS);
    let window: Vec<&Interval> = model.history.iter().skip(skip).collect();
    let span_ms: u64 = window.iter().map(|i| i.interval_ms).sum();
    RatesView {
        series: picks
            .iter()
            .map(|(label, pick)| {
                let values: Vec<f64> = window.iter().map(|i| pick(i)).collect();
                Series {
                    label,
                    now: values.last().copied().unwrap_or(0.0),
                    peak: values.iter().copied().fold(0.0, f64::max),
                    points: values.iter().map(|v| v.max(0.0).ceil() as u64).collect(),
                }
            })
            .collect(),
        span_secs: span_ms / 1000,
    }
}

fn namespaces(latest: &Interval, ui: &UiState) -> Vec<NsLine> {
    let max = latest.table.max.filter(|m| *m > 0);
    let mut rows: Vec<&NetnsRow> = latest
        .netns
        .iter()
        .filter(|r| ui.filter.matches_netns(r))
        .collect();
    match ui.ns_sort {
        NsSort::Entries => rows.sort_by(|a, b| b.entries.cmp(&a.entries).then(a.inum.cmp(&b.inum))),
        NsSort::Drops => rows.sort_by(|a, b| b.drops.cmp(&a.drops).then(a.inum.cmp(&b.inum))),
        NsSort::Alloc => rows.sort_by(|a, b| b.alloc.cmp(&a.alloc).then(a.inum.cmp(&b.inum))),
        NsSort::Netns => rows.sort_by_key(|r| r.inum),
    }
    rows.into_iter()
        .map(|r| NsLine {
            inum: r.inum,
            name: shown_name(r.name.as_deref(), r.owner.as_deref()),
            entries: r.entries,
            fill_pct: r.entries.zip(max).map(|(e, m)| (e * 100 + m / 2) / m),
            alloc: r.alloc,
            free: r.free,
            drops: r.drops,
            alive: r.alive,
        })
        .collect()
}

/// Every figure of the drops panel is of one moment, the latest sample:
/// the kernel's counts per cause were read then, so the drops listed and
/// counted from events are those up to it (events stream in between
/// samples; counted up to now, `857 matching` stood over `full 183`), and
/// with a namespace filter the counts per cause are that namespace's, as
/// the list is.
fn drops(model: &Model, latest: &Interval, ui: &UiState, named: &[u32]) -> DropsView {
    let filter = &ui.filter;
    let filtered = !filter.is_empty();
    let cutoff = model.sampled_mono_ns().unwrap_or(u64::MAX);
    let matching: Vec<&DropRecord> = model
        .drops
        .recent
        .iter()
        .rev()
        .filter(|d| d.ts_ns <= cutoff && filter.matches_drop(d, named))
        .collect();
    // Whether `recent` still holds every drop the model kept.
    let complete = model.drops.matched <= model.drops.recent.len() as u64;
    let (top_dst, top_scope) = if filtered {
        let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
        for d in &matching {
            *counts.entry(d.dst_endpoint().to_string()).or_default() += 1;
        }
        let mut v: Vec<(String, Tally)> = counts
            .into_iter()
            .map(|(k, n)| (k, Tally::exact(n)))
            .collect();
        v.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(&b.0)));
        v.truncate(TOP_DESTINATIONS);
        let scope = if complete {
            format!("{} matching since start", matching.len())
        } else {
            format!("last {} matching", matching.len())
        };
        (v, scope)
    } else {
        let v: Vec<(String, Tally)> = model
            .drops
            .top_dst
            .top_tallies(TOP_DESTINATIONS)
            .into_iter()
            .map(|(e, t)| (e.to_string(), t))
            .collect();
        let scope = if v.iter().all(|(_, t)| t.is_exact()) {
            "since start"
        } else {
            "since start; ≤ at most"
        };
        (v, scope.to_owned())
    };
    let mut lines: Vec<&DropRecord> = matching.into_iter().take(DROP_LINES).collect();
    match ui.drop_sort {
        DropSort::Newest => {}
        DropSort::Cause => lines.sort_by_key(|d| d.cause),
        DropSort::Destination => lines.sort_by_key(|d| d.dst_endpoint()),
    }
    let narrowed = filter.drops.netns.is_some() || filter.netns_name.is_some();
    let counts = if narrowed {
        CauseCounts::of_rows(latest.netns.iter().filter(|r| filter.matches_netns(r)))
    } else {
        CauseCounts::of_totals(&latest.totals)
    };
    DropsView {
        lines: lines
            .into_iter()
            .map(|d| drop_line(d, model.wall_ms_of(d.ts_ns)))
            .collect(),
        top_dst,
        top_scope,
        by_cause: counts
            .by_cause
            .into_iter()
            // Kernel code other than conntrack and the ruleset is rare:
            // shown once it happened.
            .filter(|(c, n)| *c != Cause::Other || *n > 0)
            .collect(),
        early_drop: counts.early_drop,
        received: model.drops.received,
        filtered,
    }
}

/// The exact counts per cause since start, of the whole machine or of the
/// namespaces a filter selects.
struct CauseCounts {
    by_cause: [(Cause, u64); 6],
    early_drop: u64,
}

impl CauseCounts {
    fn of_totals(t: &crate::model::Totals) -> Self {
        Self {
            by_cause: t.by_cause(),
            early_drop: t.early_drop,
        }
    }

    /// Drops of cause `other` are counted machine-wide only, so a
    /// namespace's are not known (0, and not shown).
    fn of_rows<'a>(rows: impl Iterator<Item = &'a NetnsRow>) -> Self {
        let mut c = Self::of_totals(&crate::model::Totals::default());
        for r in rows {
            // The same causes in the same order, `other` last.
            for (i, (_, n)) in r.drops_by_cause.by_cause().into_iter().enumerate() {
                c.by_cause[i].1 += n;
            }
            c.early_drop += r.kernel.map_or(0, |k| k.early_drop);
        }
        c
    }
}

fn drop_line(d: &DropRecord, wall_ms: Option<u64>) -> DropLine {
    let time = wall_ms.map_or_else(|| "--:--:--".to_owned(), crate::views::stats::clock);
    DropLine {
        time,
        cause: d.cause,
        proto: d.proto_name(),
        src: d.src_endpoint().to_string(),
        dst: d.dst_endpoint().to_string(),
        flags: d.flags_text(),
        ifname: d.ifname.clone(),
        netns: d.netns,
    }
}

/// The name a namespace is shown by: its `ip netns` name, unless a container
/// runtime made that up (podman's `netns-UUID`, CNI's `cni-UUID`), where the
/// process holding it (with its container and pod) says more.
pub fn shown_name(name: Option<&str>, owner: Option<&str>) -> Option<String> {
    let made_up = |n: &str| {
        let uuid = n
            .strip_prefix("netns-")
            .or_else(|| n.strip_prefix("cni-"))
            .unwrap_or("");
        uuid.len() == 36 && uuid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
    };
    match (name, owner) {
        (Some(n), Some(o)) if made_up(n) => Some(o.to_owned()),
        (Some(n), _) => Some(n.to_owned()),
        (None, o) => o.map(str::to_owned),
    }
}
