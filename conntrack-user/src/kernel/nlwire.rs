//! Netlink wire format of the ctnetlink statistics requests: pure encode/decode, no I/O.
//!
//! Message types and attributes are from include/uapi/linux/netfilter/nfnetlink.h and
//! nfnetlink_conntrack.h (verified against the 6.x header: `enum ctattr_stats_cpu`
//! ends with CTA_STATS_CLASH_RESOLVE = 14 and CTA_STATS_CHAIN_TOOLONG = 15). The kernel
//! side is `ctnetlink_ct_stat_cpu_dump`, `ctnetlink_stat_ct` and
//! `ctnetlink_exp_stat_cpu_dump` in net/netfilter/nf_conntrack_netlink.c. Netlink
//! headers are in host byte order; the counter attributes are `nla_put_be32`.

use super::ctnetlink::CtnetlinkError;
use super::stats::ConntrackStats;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const NFNL_SUBSYS_CTNETLINK_EXP: u16 = 2;
const IPCTNL_MSG_CT_GET_STATS_CPU: u16 = 4;
const IPCTNL_MSG_CT_GET_STATS: u16 = 5;
const IPCTNL_MSG_EXP_GET_STATS_CPU: u16 = 3;

const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
const NLA_HDRLEN: usize = 4;
/// Clears NLA_F_NESTED and NLA_F_NET_BYTEORDER from an attribute type.
const NLA_TYPE_MASK: u16 = 0x3fff;
const NFNETLINK_V0: u8 = 0;
const AF_UNSPEC: u8 = 0;

/// Length of an encoded request: nlmsghdr + nfgenmsg, no attributes.
pub const REQUEST_LEN: usize = NLMSG_HDRLEN + NFGENMSG_LEN;

/// One of the three statistics requests `conntrack -S` and `conntrack -S exp` send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Query {
    /// IPCTNL_MSG_CT_GET_STATS_CPU: a dump, one message per possible CPU.
    CpuStats,
    /// IPCTNL_MSG_EXP_GET_STATS_CPU (expectation subsystem): a dump per CPU.
    ExpectCpuStats,
    /// IPCTNL_MSG_CT_GET_STATS: one message with the entry count and nf_conntrack_max.
    Global,
}

impl Query {
    /// `nlmsg_type`: subsystem in the high byte, message in the low byte.
    pub fn msg_type(self) -> u16 {
        match self {
            Query::CpuStats => NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET_STATS_CPU,
            Query::ExpectCpuStats => NFNL_SUBSYS_CTNETLINK_EXP << 8 | IPCTNL_MSG_EXP_GET_STATS_CPU,
            Query::Global => NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET_STATS,
        }
    }

    /// The per-CPU requests are dumps ended by NLMSG_DONE. The global one is a plain
    /// get; NLM_F_ACK makes the kernel follow the reply with an ack, which ends it.
    pub fn flags(self) -> u16 {
        match self {
            Query::CpuStats | Query::ExpectCpuStats => NLM_F_REQUEST | NLM_F_DUMP,
            Query::Global => NLM_F_REQUEST | NLM_F_ACK,
        }
    }
}

impl std::fmt::Display for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Query::CpuStats => "IPCTNL_MSG_CT_GET_STATS_CPU",
            Query::ExpectCpuStats => "IPCTNL_MSG_EXP_GET_STATS_CPU",
            Query::Global => "IPCTNL_MSG_CT_GET_STATS",
        })
    }
}

/// Encodes a request. `nfgen_family` is AF_UNSPEC and `res_id` 0: the kernel ignores
/// both here and puts the CPU number in `res_id` of each reply.
pub fn encode_request(query: Query, seq: u32) -> [u8; REQUEST_LEN] {
    let mut b = [0u8; REQUEST_LEN];
    b[0..4].copy_from_slice(&(REQUEST_LEN as u32).to_ne_bytes());
    b[4..6].copy_from_slice(&query.msg_type().to_ne_bytes());
    b[6..8].copy_from_slice(&query.flags().to_ne_bytes());
    b[8..12].copy_from_slice(&seq.to_ne_bytes());
    // nlmsg_pid 0: the kernel fills in our port id.
    b[16] = AF_UNSPEC;
    b[17] = NFNETLINK_V0;
    // res_id (be16) stays 0.
    b
}

/// What the replies of one socket have told us so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CtnetlinkReading {
    /// Counters summed over the CPUs that replied.
    pub stats: ConntrackStats,
    /// Number of per-CPU conntrack messages received (possible CPUs).
    pub cpus: u32,
    /// CTA_STATS_GLOBAL_ENTRIES: the namespace's entry count.
    pub entries: Option<u64>,
    /// CTA_STATS_GLOBAL_MAX_ENTRIES: nf_conntrack_max (global; absent before 4.19).
    pub max_entries: Option<u64>,
}

/// Whether a request's replies are complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    More,
    Finished,
}

fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// Decodes one datagram of replies to `query` sent with `seq`, adding what it carries
/// to `acc`. Messages with another sequence number (late replies to an earlier
/// request) are skipped. Returns `Finished` at NLMSG_DONE or the ack.
pub fn decode_datagram(
    buf: &[u8],
    query: Query,
    seq: u32,
    acc: &mut CtnetlinkReading,
) -> Result<Progress, CtnetlinkError> {
    let malformed = |detail: String| CtnetlinkError::Malformed { query, detail };
    let mut off = 0;
    while off < buf.len() {
        let rest = &buf[off..];
        if rest.len() < NLMSG_HDRLEN {
            return Err(malformed(format!("{} stray bytes at the end", rest.len())));
        }
        let len = read_u32(rest, 0) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(malformed(format!(
                "message length {len} with {} bytes left",
                rest.len()
            )));
        }
        let (msg_type, msg_seq) = (read_u16(rest, 4), read_u32(rest, 8));
        let msg = &rest[..len];
        off += align4(len).min(rest.len());
        if msg_seq != seq {
            continue;
        }
        match msg_type {
            NLMSG_NOOP => {}
            NLMSG_DONE => return Ok(Progress::Finished),
            NLMSG_OVERRUN => return Err(malformed("NLMSG_OVERRUN".to_owned())),
            NLMSG_ERROR => {
                if msg.len() < NLMSG_HDRLEN + 4 {
                    return Err(malformed("NLMSG_ERROR without an error code".to_owned()));
                }
                let code = read_u32(msg, NLMSG_HDRLEN) as i32;
                if code == 0 {
                    return Ok(Progress::Finished);
                }
                return Err(CtnetlinkError::Kernel {
                    query,
                    errno: code.saturating_neg(),
                });
            }
            _ => {
                if msg.len() < NLMSG_HDRLEN + NFGENMSG_LEN {
                    return Err(malformed(format!("{len}-byte message without nfgenmsg")));
                }
                if query == Query::CpuStats {
                    acc.cpus += 1;
                }
                let attrs = &msg[NLMSG_HDRLEN + NFGENMSG_LEN..];
                for_each_attr(attrs, |kind, value| apply(query, kind, value, acc))
                    .map_err(malformed)?;
            }
        }
    }
    Ok(Progress::More)
}

/// Walks a run of netlink attributes, as `nla_for_each_attr` does.
fn for_each_attr(
    mut data: &[u8],
    mut f: impl FnMut(u16, &[u8]) -> Result<(), String>,
) -> Result<(), String> {
    while data.len() >= NLA_HDRLEN {
        let len = read_u16(data, 0) as usize;
        if len < NLA_HDRLEN || len > data.len() {
            return Err(format!(
                "attribute length {len} with {} bytes left",
                data.len()
            ));
        }
        f(read_u16(data, 2) & NLA_TYPE_MASK, &data[NLA_HDRLEN..len])?;
        data = &data[align4(len).min(data.len())..];
    }
    Ok(())
}

/// A big-endian counter: `nla_put_be32` today, be64 tolerated.
fn be_value(kind: u16, value: &[u8]) -> Result<u64, String> {
    match *value {
        [a, b, c, d] => Ok(u32::from_be_bytes([a, b, c, d]).into()),
        [a, b, c, d, e, f, g, h] => Ok(u64::from_be_bytes([a, b, c, d, e, f, g, h])),
        _ => Err(format!(
            "attribute {kind} has {} bytes, want 4",
            value.len()
        )),
    }
}

fn apply(query: Query, kind: u16, value: &[u8], acc: &mut CtnetlinkReading) -> Result<(), String> {
    let s = &mut acc.stats;
    // enum ctattr_stats_cpu; 1, 3, 5, 6 and 7 are deprecated and no longer sent.
    let field = match (query, kind) {
        (Query::CpuStats, 2) => &mut s.found,
        (Query::CpuStats, 4) => &mut s.invalid,
        (Query::CpuStats, 8) => &mut s.insert,
        (Query::CpuStats, 9) => &mut s.insert_failed,
        (Query::CpuStats, 10) => &mut s.drop,
        (Query::CpuStats, 11) => &mut s.early_drop,
        (Query::CpuStats, 12) => &mut s.icmp_error,
        (Query::CpuStats, 13) => &mut s.search_restart,
        (Query::CpuStats, 14) => &mut s.clash_resolve,
        (Query::CpuStats, 15) => &mut s.chaintoolong,
        // enum ctattr_expect_stats
        (Query::ExpectCpuStats, 1) => &mut s.expect_new,
        (Query::ExpectCpuStats, 2) => &mut s.expect_create,
        (Query::ExpectCpuStats, 3) => &mut s.expect_delete,
        // enum ctattr_stats_global
        (Query::Global, 1) => {
            acc.entries = Some(be_value(kind, value)?);
            return Ok(());
        }
        (Query::Global, 2) => {
            acc.max_entries = Some(be_value(kind, value)?);
            return Ok(());
        }
        _ => return Ok(()),
    };
    *field = field.wrapping_add(be_value(kind, value)?);
    Ok(())
}

#[cfg(test)]
#[path = "nlwire_tests.rs"]
mod tests;
