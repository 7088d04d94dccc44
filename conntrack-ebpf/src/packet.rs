//! Bounded parsing of a dropped packet's IP and transport headers.

use conntrack_common::{Event, flag};

use crate::kernel::{conf, read};

/// Value of an unset `skb->network_header` (`(u16)~0U`, include/linux/skbuff.h).
const UNSET: u16 = u16::MAX;
/// IPv6 extension headers followed before giving up on the transport header.
const MAX_EXT_HEADERS: usize = 4;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_DSTOPTS: u8 = 60;
const IPPROTO_SCTP: u8 = 132;
const IPPROTO_UDPLITE: u8 = 136;

/// Fills `ev.tuple`, `ev.tcp_flags` and `ev.len` from the packet; marks it
/// `TRUNCATED` or `NON_IP` when the headers cannot be read.
#[inline(always)]
pub fn parse(skb: u64, ev: &mut Event) {
    ev.len = read::<u32>(skb + conf!(skb_len) as u64).unwrap_or(0);
    let head = read::<u64>(skb + conf!(skb_head) as u64).unwrap_or(0);
    let nh = read::<u16>(skb + conf!(skb_network_header) as u64).unwrap_or(UNSET);
    if head == 0 || nh == UNSET {
        ev.flags |= flag::NON_IP;
        return;
    }
    let ip = head + nh as u64;
    let Ok(first) = read::<u8>(ip) else {
        ev.flags |= flag::TRUNCATED;
        return;
    };
    let l4 = match first >> 4 {
        4 => ipv4(ip, first, ev),
        6 => ipv6(ip, ev),
        _ => {
            ev.flags |= flag::NON_IP;
            None
        }
    };
    if let Some(l4) = l4
        && transport(l4, ev).is_err()
    {
        ev.flags |= flag::TRUNCATED;
    }
}

/// Returns the transport header's address, or `None` for a non-first fragment
/// or an unreadable header.
#[inline(always)]
fn ipv4(ip: u64, first: u8, ev: &mut Event) -> Option<u64> {
    let t = &mut ev.tuple;
    t.family = 2;
    let ihl = ((first & 0x0f) as u64) * 4;
    let (Ok(frag), Ok(proto), Ok(src), Ok(dst)) = (
        read::<[u8; 2]>(ip + 6),
        read::<u8>(ip + 9),
        read::<[u8; 4]>(ip + 12),
        read::<[u8; 4]>(ip + 16),
    ) else {
        ev.flags |= flag::TRUNCATED;
        return None;
    };
    t.proto = proto;
    t.src[..4].copy_from_slice(&src);
    t.dst[..4].copy_from_slice(&dst);
    if ihl < 20 {
        ev.flags |= flag::TRUNCATED;
        return None;
    }
    let offset = u16::from_be_bytes(frag) & 0x1fff;
    (offset == 0).then_some(ip + ihl)
}

#[inline(always)]
fn ipv6(ip: u64, ev: &mut Event) -> Option<u64> {
    let t = &mut ev.tuple;
    t.family = 10;
    let (Ok(next), Ok(src), Ok(dst)) = (
        read::<u8>(ip + 6),
        read::<[u8; 16]>(ip + 8),
        read::<[u8; 16]>(ip + 24),
    ) else {
        ev.flags |= flag::TRUNCATED;
        return None;
    };
    t.src = src;
    t.dst = dst;
    let mut next = next;
    let mut l4 = ip + 40;
    for _ in 0..MAX_EXT_HEADERS {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let Ok(ext) = read::<[u8; 2]>(l4) else {
                    ev.flags |= flag::TRUNCATED;
                    return None;
                };
                next = ext[0];
                l4 += (ext[1] as u64 + 1) * 8;
            }
            IPPROTO_FRAGMENT => {
                let Ok(ext) = read::<[u8; 4]>(l4) else {
                    ev.flags |= flag::TRUNCATED;
                    return None;
                };
                next = ext[0];
                l4 += 8;
                if u16::from_be_bytes([ext[2], ext[3]]) & 0xfff8 != 0 {
                    t.proto = next;
                    return None;
                }
            }
            _ => break,
        }
    }
    t.proto = next;
    Some(l4)
}

#[inline(always)]
fn transport(l4: u64, ev: &mut Event) -> Result<(), i32> {
    let t = &mut ev.tuple;
    match t.proto {
        IPPROTO_TCP => {
            let h = read::<[u8; 14]>(l4)?;
            t.sport = u16::from_be_bytes([h[0], h[1]]);
            t.dport = u16::from_be_bytes([h[2], h[3]]);
            ev.tcp_flags = h[13];
        }
        IPPROTO_UDP | IPPROTO_UDPLITE | IPPROTO_SCTP => {
            let h = read::<[u8; 4]>(l4)?;
            t.sport = u16::from_be_bytes([h[0], h[1]]);
            t.dport = u16::from_be_bytes([h[2], h[3]]);
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let h = read::<[u8; 6]>(l4)?;
            t.dport = u16::from_be_bytes([h[0], h[1]]);
            t.sport = u16::from_be_bytes([h[4], h[5]]);
        }
        _ => {}
    }
    Ok(())
}
