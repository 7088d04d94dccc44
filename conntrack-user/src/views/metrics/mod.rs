//! Prometheus / OpenMetrics exposition of the model (`ctscope serve`).
//!
//! Names follow node_exporter where it has them, so existing dashboards and
//! alerts keep working: `node_nf_conntrack_entries`,
//! `node_nf_conntrack_entries_limit` and `node_nf_conntrack_stat_*`, with
//! node_exporter's semantics (ctscope's own namespace, absolute values, gauge
//! type). Everything else is under `ctscope_`: counters are counters (with
//! `_total`), gauges are gauges.

use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet, text::encode},
    metrics::{
        MetricType, TypedMetric,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
    },
    registry::{Registry, Unit},
};

use crate::{
    kernel::stats::ConntrackStats,
    model::{
        Model,
        buckets::{BucketWalk, HISTOGRAM_LABELS},
        holders::{By, Holders},
    },
};

/// Content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;

fn gauge(v: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX))
}

fn gauge_f(v: f64) -> ConstGauge<f64> {
    ConstGauge::new(v)
}

/// Renders every metric from the model. `own_netns` is the namespace ctscope
/// runs in: node_exporter's conntrack metrics describe that one.
pub fn render(model: &Model, own_netns: u32, build: &[(&str, &str)]) -> String {
    let mut reg = Registry::default();
    node_exporter_compat(&mut reg, model, own_netns);
    let info = Family::<Labels, Gauge>::default();
    info.get_or_create(
        &build
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
    .set(1);
    reg.register(
        "ctscope_build_info",
        "ctscope version, eBPF object and probe backend",
        info,
    );

    if let Some(i) = &model.latest {
        let t = &i.totals;
        reg.register(
            "ctscope_table_entries",
            "Entries in all namespaces ctscope can read",
            gauge(i.table.entries.unwrap_or(0)),
        );
        reg.register(
            "ctscope_table_buckets",
            "nf_conntrack_buckets: hash table size",
            gauge(i.table.buckets.unwrap_or(0)),
        );
        reg.register(
            "ctscope_alloc",
            "Conntrack entries allocated since ctscope started",
            ConstCounter::new(t.alloc),
        );
        reg.register(
            "ctscope_free",
            "Conntrack entries freed since ctscope started",
            ConstCounter::new(t.free),
        );
        reg.register(
            "ctscope_lost_events",
            "Events that did not fit in the kernel ring buffer",
            ConstCounter::new(t.lost_events),
        );
        reg.register(
            "ctscope_probe_misses",
            "Probe runs the kernel skipped because the probe was already running on that CPU (upper bound on missed counts)",
            ConstCounter::new(t.probe_misses),
        );
        let drops = Family::<Labels, Counter>::default();
        for (cause, n) in t.by_cause() {
            drops
                .get_or_create(&vec![("cause".to_owned(), cause.as_str().to_owned())])
                .inc_by(n);
        }
        reg.register(
            "ctscope_drops",
            "Packets netfilter dropped, by cause (docs/drop-causes.md)",
            drops,
        );
        let mismatch = Family::<Labels, Counter>::default();
        for (cause, n) in i.causes.total.causes() {
            mismatch
                .get_or_create(&vec![("cause".to_owned(), cause.to_owned())])
                .inc_by(n);
        }
        reg.register(
            "ctscope_cause_mismatch",
            "Drops ctscope gave a cause beyond what the kernel's own counter for it allows: a misclassification (docs/drop-causes.md, reconciliation)",
            mismatch,
        );
        kernel_counters(&mut reg, &i.kernel);
        netns(&mut reg, i);
    }
    if let Some(walk) = &model.buckets {
        buckets(&mut reg, walk);
        if let Some(h) = &walk.holders {
            holders(&mut reg, h);
        }
    }
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}

fn node_exporter_compat(reg: &mut Registry, model: &Model, own_netns: u32) {
    if let Some(max) = model.sysctls.nf_conntrack_max {
        reg.register(
            "node_nf_conntrack_entries_limit",
            "Maximum size of connection tracking table",
            gauge(max),
        );
    }
    let Some(own) = model.kernel_now.iter().find(|r| r.inum == own_netns) else {
        return;
    };
    if let Some(count) = own.count {
        reg.register(
            "node_nf_conntrack_entries",
            "Number of currently allocated flow entries for connection tracking",
            gauge(count),
        );
    }
    if let Some(s) = &own.stats {
        for (name, help, v) in [
            (
                "found",
                "Number of searched entries which were successful",
                s.found,
            ),
            (
                "invalid",
                "Number of packets seen which can not be tracked",
                s.invalid,
            ),
            (
                "ignore",
                "Number of packets seen which are already connected to a conntrack entry",
                0,
            ),
            (
                "insert",
                "Number of entries inserted into the list",
                s.insert,
            ),
            (
                "insert_failed",
                "Number of entries for which list insertion was attempted but failed",
                s.insert_failed,
            ),
            (
                "drop",
                "Number of packets dropped due to conntrack failure",
                s.drop,
            ),
            (
                "early_drop",
                "Number of dropped conntrack entries to make room for new ones, if maximum table size was reached",
                s.early_drop,
            ),
            (
                "search_restart",
                "Number of conntrack table lookups which had to be restarted due to hashtable resizes",
                s.search_restart,
            ),
        ] {
            reg.register(format!("node_nf_conntrack_stat_{name}"), help, gauge(v));
        }
    }
}

fn kernel_counters(reg: &mut Registry, k: &ConntrackStats) {
    for (name, v) in [
        ("drop", k.drop),
        ("insert_failed", k.insert_failed),
        ("early_drop", k.early_drop),
        ("chaintoolong", k.chaintoolong),
        ("clash_resolve", k.clash_resolve),
        ("invalid", k.invalid),
        ("search_restart", k.search_restart),
    ] {
        reg.register(
            format!("ctscope_kernel_{name}"),
            format!(
                "The kernel's own {name} counter, summed over namespaces, since ctscope started"
            ),
            ConstCounter::new(v),
        );
    }
}

fn netns(reg: &mut Registry, i: &crate::model::Interval) {
    let entries = Family::<Labels, Gauge>::default();
    let alloc = Family::<Labels, Counter>::default();
    let drops = Family::<Labels, Counter>::default();
    let info = Family::<Labels, Gauge>::default();
    for row in &i.netns {
        // The inode number is what people and kernel messages know; the id
        // (net_cookie) tells apart namespaces that reused it. A namespace's
        // series leave once it is retired, ~10 s after it went away; its
        // counts then live on in ctscope_departed_*.
        let ns = ("netns".to_owned(), row.inum.to_string());
        let id = ("netns_id".to_owned(), row.id.to_string());
        // The name as an info series (join on netns_id), so the counters'
        // series do not change identity when a name appears or goes.
        if row.name.is_some() || row.owner.is_some() {
            let mut labels = vec![ns.clone(), id.clone()];
            for (label, value) in [("name", &row.name), ("owner", &row.owner)] {
                if let Some(v) = value {
                    labels.push((label.to_owned(), v.clone()));
                }
            }
            info.get_or_create(&labels).set(1);
        }
        if let Some(e) = row.entries {
            entries
                .get_or_create(&vec![ns.clone(), id.clone()])
                .set(i64::try_from(e).unwrap_or(i64::MAX));
        }
        alloc
            .get_or_create(&vec![ns.clone(), id.clone()])
            .inc_by(row.alloc);
        for (cause, n) in row.drops_by_cause.by_cause() {
            drops
                .get_or_create(&vec![
                    ns.clone(),
                    id.clone(),
                    ("cause".to_owned(), cause.as_str().to_owned()),
                ])
                .inc_by(n);
        }
    }
    departed(reg, &i.departed);
    reg.register(
        "ctscope_netns_entries",
        "Entries per network namespace (nf_conntrack_count)",
        entries,
    );
    reg.register(
        "ctscope_netns_alloc",
        "Entries allocated per network namespace since ctscope started",
        alloc,
    );
    reg.register(
        "ctscope_netns_drops",
        "Drops per network namespace and cause since ctscope started",
        drops,
    );
    reg.register(
        "ctscope_netns_info",
        "Who a network namespace is: its `ip netns` name and the process holding it, with its container id and pod UID (value 1; join on netns_id)",
        info,
    );
}

/// Namespaces that went away, their final counts summed: with the
/// per-namespace series, they add up to the machine's totals.
fn departed(reg: &mut Registry, d: &crate::model::Departed) {
    let counter = |v: u64| {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        c
    };
    reg.register(
        "ctscope_departed_netns",
        "Network namespaces that went away since ctscope started",
        counter(d.namespaces),
    );
    reg.register(
        "ctscope_departed_alloc",
        "Entries allocated in namespaces that went away since ctscope started",
        counter(d.alloc),
    );
    let drops = Family::<Labels, Counter>::default();
    for (cause, n) in d.drops_by_cause.by_cause() {
        drops
            .get_or_create(&vec![("cause".to_owned(), cause.as_str().to_owned())])
            .inc_by(n);
    }
    reg.register(
        "ctscope_departed_drops",
        "Drops in namespaces that went away since ctscope started, by cause",
        drops,
    );
}

/// The chain-length distribution of the latest table walk as a Prometheus
/// histogram: one observation per bucket, `le` in chain lengths.
#[derive(Debug)]
struct ChainHistogram {
    buckets: Vec<(f64, u64)>,
    count: u64,
    sum: f64,
}

impl TypedMetric for ChainHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ChainHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Upper bounds of the histogram classes (`HISTOGRAM_LABELS`).
const CLASS_BOUNDS: [f64; 13] = [
    0.0,
    1.0,
    2.0,
    3.0,
    4.0,
    5.0,
    6.0,
    7.0,
    8.0,
    16.0,
    32.0,
    64.0,
    f64::INFINITY,
];
const _: () = assert!(CLASS_BOUNDS.len() == HISTOGRAM_LABELS.len());

fn buckets(reg: &mut Registry, walk: &BucketWalk) {
    // prometheus-client takes per-bucket counts and accumulates them itself.
    let h = ChainHistogram {
        buckets: CLASS_BOUNDS.iter().copied().zip(walk.histogram).collect(),
        count: walk.histogram.iter().sum(),
        sum: walk.nodes as f64,
    };
    reg.register(
        "ctscope_chain_length",
        "Hash chain length per bucket, from the latest table walk",
        h,
    );
    reg.register(
        "ctscope_chain_length_max",
        "Longest hash chain in the latest table walk",
        gauge(u64::from(walk.max)),
    );
    reg.register(
        "ctscope_chain_length_mean",
        "Mean chain length over all buckets in the latest walk",
        gauge_f(walk.mean),
    );
    reg.register_with_unit(
        "ctscope_bucket_walk_duration",
        "Wall time of the latest table walk",
        Unit::Seconds,
        gauge_f(walk.duration_ns as f64 / 1e9),
    );
}

/// Series of `ctscope_holders` per grouping: the top holders only, so the
/// series count is bounded (4 groupings x 10 = 40 at most) however many
/// destinations and sources the table holds.
pub const HOLDERS_TOP: usize = 10;

/// Who holds the table, from the latest walk: the [`HOLDERS_TOP`] largest
/// groups of each grouping (`by` = dst, src, state, netns), and the entries
/// the walk saw, so the rest (`entries` minus the listed) is known.
fn holders(reg: &mut Registry, h: &Holders) {
    let family = Family::<Labels, Gauge>::default();
    for by in By::ALL {
        for r in h.rows(by).iter().take(HOLDERS_TOP) {
            let mut labels: Labels = vec![
                ("by".to_owned(), by.as_str().to_owned()),
                ("netns".to_owned(), r.netns.to_string()),
            ];
            let optional = [
                ("proto", r.proto.clone()),
                ("dst", r.dst.clone()),
                ("dport", r.dport.map(|p| p.to_string())),
                ("src", r.src.clone()),
                ("state", r.state.clone()),
            ];
            for (name, value) in optional {
                if let Some(v) = value {
                    labels.push((name.to_owned(), v));
                }
            }
            family
                .get_or_create(&labels)
                .set(i64::try_from(r.count).unwrap_or(i64::MAX));
        }
    }
    reg.register(
        "ctscope_holders",
        "Entries held by the largest groups of the latest table walk, by destination, source, state and namespace (top 10 of each)",
        family,
    );
    reg.register(
        "ctscope_holders_entries",
        "Entries the latest table walk grouped into ctscope_holders",
        gauge(h.entries),
    );
}

#[cfg(test)]
mod tests;
