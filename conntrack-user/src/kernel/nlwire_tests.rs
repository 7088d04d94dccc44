//! Hand-built netlink buffers for the pure decoder in `nlwire.rs`.

use super::*;

const NLM_F_MULTI: u16 = 0x2;

/// One attribute carrying a be32 value (`nla_put_be32`), padded to 4 bytes.
fn attr32(kind: u16, value: u32) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&8u16.to_ne_bytes());
    v.extend_from_slice(&kind.to_ne_bytes());
    v.extend_from_slice(&value.to_be_bytes());
    v
}

/// A netlink message: nlmsghdr (host order) + nfgenmsg with `res_id` = cpu + attrs.
fn message(msg_type: u16, flags: u16, seq: u32, cpu: u16, attrs: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = attrs.concat();
    let len = (NLMSG_HDRLEN + NFGENMSG_LEN + body.len()) as u32;
    let mut v = Vec::new();
    v.extend_from_slice(&len.to_ne_bytes());
    v.extend_from_slice(&msg_type.to_ne_bytes());
    v.extend_from_slice(&flags.to_ne_bytes());
    v.extend_from_slice(&seq.to_ne_bytes());
    v.extend_from_slice(&4242u32.to_ne_bytes());
    v.extend_from_slice(&[AF_UNSPEC, NFNETLINK_V0]);
    v.extend_from_slice(&cpu.to_be_bytes());
    v.extend_from_slice(&body);
    v
}

/// NLMSG_DONE (payload: an int 0) or NLMSG_ERROR (payload: -errno + echoed header).
fn control(msg_type: u16, seq: u32, code: i32) -> Vec<u8> {
    let mut payload = code.to_ne_bytes().to_vec();
    if msg_type == NLMSG_ERROR {
        payload.extend_from_slice(&[0u8; NLMSG_HDRLEN]);
    }
    let mut v = Vec::new();
    v.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
    v.extend_from_slice(&msg_type.to_ne_bytes());
    v.extend_from_slice(&NLM_F_MULTI.to_ne_bytes());
    v.extend_from_slice(&seq.to_ne_bytes());
    v.extend_from_slice(&0u32.to_ne_bytes());
    v.extend_from_slice(&payload);
    v
}

fn cpu_message(seq: u32, cpu: u16, base: u32) -> Vec<u8> {
    let attrs: Vec<Vec<u8>> = (2u16..=15)
        .filter(|k| ![3, 5, 6, 7].contains(k))
        .map(|k| attr32(k, base + u32::from(k)))
        .collect();
    message(0x0104, NLM_F_MULTI, seq, cpu, &attrs)
}

#[test]
fn encodes_requests_like_conntrack_tools() {
    let b = encode_request(Query::CpuStats, 7);
    assert_eq!(&b[0..4], &20u32.to_ne_bytes());
    assert_eq!(&b[4..6], &0x0104u16.to_ne_bytes());
    assert_eq!(&b[6..8], &0x0301u16.to_ne_bytes());
    assert_eq!(&b[8..12], &7u32.to_ne_bytes());
    assert_eq!(&b[12..20], &[0u8; 8]);
    assert_eq!(Query::Global.msg_type(), 0x0105);
    assert_eq!(Query::Global.flags(), NLM_F_REQUEST | NLM_F_ACK);
    assert_eq!(Query::ExpectCpuStats.msg_type(), 0x0203);
}

#[test]
fn sums_two_cpus_and_stops_at_done() {
    let mut buf = cpu_message(9, 0, 0);
    buf.extend(cpu_message(9, 1, 100));
    buf.extend(control(NLMSG_DONE, 9, 0));
    let mut acc = CtnetlinkReading::default();
    let p = decode_datagram(&buf, Query::CpuStats, 9, &mut acc).expect("decodes");
    assert_eq!(p, Progress::Finished);
    assert_eq!(acc.cpus, 2);
    let s = acc.stats;
    assert_eq!((s.found, s.invalid, s.insert), (104, 108, 116));
    assert_eq!((s.insert_failed, s.drop, s.early_drop), (118, 120, 122));
    assert_eq!((s.icmp_error, s.search_restart), (124, 126));
    assert_eq!((s.clash_resolve, s.chaintoolong), (128, 130));
    assert_eq!(s.expect_new, 0);
}

#[test]
fn multipart_across_datagrams_and_stale_replies() {
    let mut acc = CtnetlinkReading::default();
    let first = cpu_message(5, 0, 0);
    let mut stale = cpu_message(4, 0, 1000);
    stale.extend(cpu_message(5, 1, 0));
    let done = control(NLMSG_DONE, 5, 0);
    assert_eq!(
        decode_datagram(&first, Query::CpuStats, 5, &mut acc).expect("first"),
        Progress::More
    );
    assert_eq!(
        decode_datagram(&stale, Query::CpuStats, 5, &mut acc).expect("second"),
        Progress::More
    );
    assert_eq!(
        decode_datagram(&done, Query::CpuStats, 5, &mut acc).expect("done"),
        Progress::Finished
    );
    assert_eq!((acc.cpus, acc.stats.found), (2, 4));
}

#[test]
fn expectation_and_global_replies() {
    let mut acc = CtnetlinkReading::default();
    let mut buf = message(0x0103, NLM_F_MULTI, 1, 0, &[attr32(1, 3), attr32(2, 2)]);
    buf.extend(message(0x0103, NLM_F_MULTI, 1, 1, &[attr32(3, 1)]));
    decode_datagram(&buf, Query::ExpectCpuStats, 1, &mut acc).expect("exp");
    let s = acc.stats;
    assert_eq!((s.expect_new, s.expect_create, s.expect_delete), (3, 2, 1));
    assert_eq!(acc.cpus, 0);

    // A be32 entry count with NLA_F_NET_BYTEORDER set, max, then the ack.
    let mut buf = message(0x0105, 0, 2, 0, &[attr32(0x4001, 50), attr32(2, 262_144)]);
    buf.extend(control(NLMSG_ERROR, 2, 0));
    let p = decode_datagram(&buf, Query::Global, 2, &mut acc).expect("global");
    assert_eq!(p, Progress::Finished);
    assert_eq!((acc.entries, acc.max_entries), (Some(50), Some(262_144)));
}

#[test]
fn kernel_errors_are_reported_with_errno() {
    let buf = control(NLMSG_ERROR, 3, -libc::EPERM);
    let err = decode_datagram(&buf, Query::CpuStats, 3, &mut CtnetlinkReading::default())
        .expect_err("EPERM");
    assert!(matches!(err, CtnetlinkError::Kernel { errno, .. } if errno == libc::EPERM));
    assert!(err.to_string().contains("CAP_NET_ADMIN"), "{err}");
}

#[test]
fn malformed_buffers_are_errors_not_panics() {
    let mut acc = CtnetlinkReading::default();
    let good = cpu_message(1, 0, 0);
    // Header claims more than the datagram holds.
    let mut long = good.clone();
    long[0..4].copy_from_slice(&1000u32.to_ne_bytes());
    // Attribute claims more than the message holds.
    let mut bad_attr = message(0x0104, 0, 1, 0, &[attr32(2, 1)]);
    bad_attr[20..22].copy_from_slice(&64u16.to_ne_bytes());
    // Value of the wrong width.
    let mut odd = message(0x0104, 0, 1, 0, &[]);
    odd.extend_from_slice(&6u16.to_ne_bytes());
    odd.extend_from_slice(&2u16.to_ne_bytes());
    odd.extend_from_slice(&[0, 1, 0, 0]);
    let odd_len = odd.len() as u32;
    odd[0..4].copy_from_slice(&odd_len.to_ne_bytes());
    // NLMSG_ERROR too short to hold the error code.
    let mut short_err = control(NLMSG_ERROR, 1, 0);
    short_err.truncate(NLMSG_HDRLEN);
    short_err[0..4].copy_from_slice(&(NLMSG_HDRLEN as u32).to_ne_bytes());
    let cases: [&[u8]; 7] = [
        &good[..10],
        &long,
        &bad_attr,
        &odd,
        &control(NLMSG_OVERRUN, 1, 0),
        &control(NLMSG_ERROR, 1, 0)[..18],
        &short_err,
    ];
    for (i, case) in cases.iter().enumerate() {
        let r = decode_datagram(case, Query::CpuStats, 1, &mut acc);
        assert!(
            matches!(r, Err(CtnetlinkError::Malformed { .. })),
            "case {i}: {r:?}"
        );
    }
    // Every prefix of a valid datagram decodes or fails cleanly.
    let mut full = good.clone();
    full.extend(control(NLMSG_DONE, 1, 0));
    for cut in 0..full.len() {
        let _ = decode_datagram(&full[..cut], Query::CpuStats, 1, &mut acc);
    }
}
