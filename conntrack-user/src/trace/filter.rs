//! Which events `ctscope record` keeps. The same flags as `ctscope drops`;
//! they select allocations and frees by their tuple too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use conntrack_common::{Event, Tuple, kind, setting};

use crate::model::drops::{Cause, proto_name};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only drops of these causes (and no allocations or frees).
    pub causes: Vec<Cause>,
    /// Only dropped TCP SYNs without ACK (and no allocations or frees).
    pub syn_only: bool,
    pub netns: Option<u32>,
    pub proto: Option<u8>,
    /// Source or destination port.
    pub port: Option<u16>,
    /// Source or destination address.
    pub host: Option<IpAddr>,
}

impl EventFilter {
    /// Whether only drops can match, so the kernel need not send
    /// allocation and free events at all.
    pub fn drops_only(&self) -> bool {
        !self.causes.is_empty() || self.syn_only
    }

    /// The `setting::EVENTS` mask to ask the kernel for.
    pub fn event_classes(&self) -> u32 {
        if self.drops_only() {
            setting::EVENTS_DROP
        } else {
            setting::EVENTS_CT | setting::EVENTS_DROP
        }
    }

    pub fn matches(&self, ev: &Event) -> bool {
        let t = &ev.tuple;
        if self.drops_only() {
            if ev.kind != kind::DROP {
                return false;
            }
            let cause_ok = self.causes.is_empty()
                || Cause::from_raw(ev.cause).is_some_and(|c| self.causes.contains(&c));
            let syn = t.proto == 6 && ev.tcp_flags & 0x02 != 0 && ev.tcp_flags & 0x10 == 0;
            if !cause_ok || (self.syn_only && !syn) {
                return false;
            }
        }
        let (src, dst) = addrs(t);
        self.netns.is_none_or(|n| n == ev.netns)
            && self.proto.is_none_or(|p| p == t.proto)
            && self
                .port
                .is_none_or(|p| has_ports(t.proto) && (t.sport == p || t.dport == p))
            && self.host.is_none_or(|h| h == src || h == dst)
    }

    /// The filter as `name=value` terms, for the trace header.
    pub fn describe(&self) -> Vec<String> {
        let mut terms = Vec::new();
        for c in &self.causes {
            terms.push(format!("cause={c}"));
        }
        if self.syn_only {
            terms.push("syn".to_owned());
        }
        if let Some(n) = self.netns {
            terms.push(format!("netns={n}"));
        }
        if let Some(p) = self.proto {
            terms.push(format!("proto={}", proto_name(p)));
        }
        if let Some(p) = self.port {
            terms.push(format!("port={p}"));
        }
        if let Some(h) = self.host {
            terms.push(format!("host={h}"));
        }
        terms
    }
}

/// Protocols whose tuple holds ports.
pub fn has_ports(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 132 | 136)
}

/// Source and destination address of a tuple (unspecified for non-IP).
pub fn addrs(t: &Tuple) -> (IpAddr, IpAddr) {
    match t.family {
        2 => {
            let a = |b: &[u8; 16]| IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
            (a(&t.src), a(&t.dst))
        }
        10 => (
            IpAddr::V6(Ipv6Addr::from(t.src)),
            IpAddr::V6(Ipv6Addr::from(t.dst)),
        ),
        _ => (Ipv4Addr::UNSPECIFIED.into(), Ipv4Addr::UNSPECIFIED.into()),
    }
}
