use conntrack_common::{cause, counter};

use super::*;
use crate::{
    event::{Counters, Message, Sample},
    kernel::{netns::NetnsReading, sysctl::Sysctls},
    model::RunInfo,
};

fn model() -> Model {
    model_with_kernel_drops(57)
}

/// Two samples: 50 table-full drops counted by ctscope in namespace 1000,
/// and the kernel's `drop` counter there going from 7 to `kernel_after`.
fn model_with_kernel_drops(kernel_after: u64) -> Model {
    let mut m = Model::new(RunInfo::default());
    let reading = |drop| NetnsReading {
        inum: 1000,
        name: None,
        owner: None,
        count: Some(42),
        max: Some(65536),
        stats: Some(ConntrackStats {
            drop,
            ..ConntrackStats::default()
        }),
        source_used: None,
        error: None,
        enter: crate::kernel::netns::Enter::Unknown,
        tcp_timeout_established: None,
    };
    let sample = |secs: u64, n: u64, drop: u64| {
        let mut counters = Counters::default();
        counters.0[counter::ALLOC as usize] = n;
        counters.0[(counter::DROP_FIRST + u32::from(cause::TABLE_FULL)) as usize] = n / 10;
        let mut ns = crate::event::NetnsSample {
            id: 1000,
            inum: 1000,
            alloc: n,
            alive: true,
            ..crate::event::NetnsSample::default()
        };
        ns.drops[cause::TABLE_FULL as usize] = n / 10;
        Message::Sample(Box::new(Sample {
            mono_ns: secs * 1_000_000_000,
            wall_ms: secs * 1000,
            counters,
            netns: vec![ns],
            kernel: vec![reading(drop)],
            sysctls: Sysctls {
                nf_conntrack_max: Some(65536),
                nf_conntrack_buckets: Some(16384),
                ..Sysctls::default()
            },
        }))
    };
    m.apply(sample(1, 0, 7));
    m.apply(sample(2, 500, kernel_after));
    m.buckets = Some(BucketWalk {
        buckets: 4,
        nodes: 6,
        histogram: [1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
        max: 4,
        mean: 1.5,
        ..BucketWalk::default()
    });
    m
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn node_exporter_names_keep_their_meaning() {
    let text = render(&model(), 1000, &[("version", "0.1.0")]);
    assert_eq!(
        value(&text, "node_nf_conntrack_entries"),
        Some(42.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "node_nf_conntrack_entries_limit"),
        Some(65536.0)
    );
    // node_exporter reports the kernel's absolute counters, as gauges.
    assert_eq!(value(&text, "node_nf_conntrack_stat_drop"), Some(57.0));
    assert!(
        text.contains("# TYPE node_nf_conntrack_stat_drop gauge"),
        "{text}"
    );
    // Another namespace is not ours: no node_exporter entry count.
    let other = render(&model(), 999, &[]);
    assert_eq!(value(&other, "node_nf_conntrack_entries"), None);
}

#[test]
fn ctscope_counters_are_counters() {
    let text = render(&model(), 1000, &[]);
    assert!(text.contains("# TYPE ctscope_drops counter"), "{text}");
    assert_eq!(
        value(&text, "ctscope_drops_total{cause=\"table_full\"}"),
        Some(50.0),
        "{text}"
    );
    assert_eq!(value(&text, "ctscope_alloc_total"), Some(500.0));
    assert_eq!(
        value(&text, "ctscope_kernel_drop_total"),
        Some(50.0),
        "delta since start"
    );
    assert_eq!(
        value(
            &text,
            "ctscope_netns_alloc_total{netns=\"1000\",netns_id=\"1000\"}"
        ),
        Some(500.0)
    );
    assert_eq!(
        value(
            &text,
            "ctscope_netns_drops_total{netns=\"1000\",netns_id=\"1000\",cause=\"table_full\"}"
        ),
        Some(50.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "ctscope_netns_entries{netns=\"1000\",netns_id=\"1000\"}"
        ),
        Some(42.0)
    );
    assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics terminator");
}

#[test]
fn chain_lengths_form_a_cumulative_histogram() {
    let text = render(&model(), 1000, &[]);
    assert!(
        text.contains("# TYPE ctscope_chain_length histogram"),
        "{text}"
    );
    assert_eq!(
        value(&text, "ctscope_chain_length_bucket{le=\"0.0\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "ctscope_chain_length_bucket{le=\"2.0\"}"),
        Some(3.0)
    );
    assert_eq!(
        value(&text, "ctscope_chain_length_bucket{le=\"+Inf\"}"),
        Some(4.0)
    );
    assert_eq!(value(&text, "ctscope_chain_length_sum"), Some(6.0));
    assert_eq!(value(&text, "ctscope_chain_length_count"), Some(4.0));
    assert_eq!(value(&text, "ctscope_chain_length_max"), Some(4.0));
}

#[test]
fn causes_beyond_the_kernels_counters_are_counted() {
    let ok = render(&model(), 1000, &[]);
    assert_eq!(
        value(&ok, "ctscope_cause_mismatch_total{cause=\"table_full\"}"),
        Some(0.0),
        "{ok}"
    );
    // The kernel counted 40 drops where ctscope saw 50 table-full ones.
    let text = render(&model_with_kernel_drops(47), 1000, &[]);
    assert_eq!(
        value(&text, "ctscope_cause_mismatch_total{cause=\"table_full\"}"),
        Some(10.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "ctscope_cause_mismatch_total{cause=\"insert_failed\"}"
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "ctscope_drops_total{cause=\"other\"}"),
        Some(0.0),
        "{text}"
    );
}

#[test]
fn holders_are_a_bounded_top_k() {
    use crate::model::holders::{HolderEntry, HoldersBuilder};
    let mut b = HoldersBuilder::default();
    // 500 destinations, one of them holding 40 entries.
    for p in 0..500u16 {
        let mut dst = [0u8; 16];
        dst[..4].copy_from_slice(&[10, 0, 0, 2]);
        let n = if p == 9000 % 500 { 40 } else { 1 };
        for _ in 0..n {
            b.add(&HolderEntry {
                netns: 7,
                family: 2,
                proto: 6,
                state: 3,
                dst,
                dport: if n == 40 { 9000 } else { p },
                ..HolderEntry::default()
            });
        }
    }
    let mut m = model();
    if let Some(w) = &mut m.buckets {
        w.holders = Some(b.finish(64, &[]));
    }
    let text = render(&m, 1000, &[]);
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("ctscope_holders{"))
        .collect();
    // dst and src, state, netns: at most 10 each.
    assert!(series.len() <= 4 * super::HOLDERS_TOP, "{}", series.len());
    assert_eq!(
        series.iter().filter(|l| l.contains("by=\"dst\"")).count(),
        super::HOLDERS_TOP
    );
    assert!(
        series.iter().any(|l| l.contains("by=\"dst\"")
            && l.contains("dport=\"9000\"")
            && l.contains("netns=\"7\"")
            && l.ends_with(" 40")),
        "{text}"
    );
    assert_eq!(value(&text, "ctscope_holders_entries"), Some(539.0));
}

/// Issue 18 item 10: per-namespace series carried only the inode number;
/// a namespace with an `ip netns` name has it in an info series.
#[test]
fn named_namespaces_have_an_info_series() {
    let mut m = model();
    let mut latest = m.latest.clone().expect("interval");
    latest.netns[0].name = Some("blue".to_owned());
    m.latest = Some(latest);
    let text = render(&m, 1, &[]);
    assert_eq!(
        value(
            &text,
            "ctscope_netns_info{netns=\"1000\",netns_id=\"1000\",name=\"blue\"}"
        ),
        Some(1.0),
        "{text}"
    );
    let unnamed = render(&model(), 1, &[]);
    assert!(!unnamed.contains("ctscope_netns_info{"), "{unnamed}");
    // The process holding it, named or not.
    let mut m = model();
    let mut latest = m.latest.clone().expect("interval");
    latest.netns[0].owner = Some("nginx (pid 42, container 3f1c2b9a8d7e)".to_owned());
    m.latest = Some(latest);
    let text = render(&m, 1, &[]);
    assert_eq!(
        value(
            &text,
            "ctscope_netns_info{netns=\"1000\",netns_id=\"1000\",owner=\"nginx (pid 42, container 3f1c2b9a8d7e)\"}"
        ),
        Some(1.0),
        "{text}"
    );
}
