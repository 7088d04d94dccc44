//! Turning what `walk_bucket` copied into what people read: addresses,
//! protocol and TCP state names, and the kernel's HZ for timeouts.

use crate::btf::KernelBtf;

/// The nearest of the tick rates Kconfig offers.
pub fn nearest_hz(rate: f64) -> u32 {
    [100u32, 250, 300, 1000]
        .into_iter()
        .min_by(|a, b| {
            (f64::from(*a) - rate)
                .abs()
                .total_cmp(&(f64::from(*b) - rate).abs())
        })
        .unwrap_or(250)
}

/// `enum tcp_conntrack` names by value, from the kernel's BTF, without the
/// `TCP_CONNTRACK_` prefix.
pub(super) fn tcp_state_names() -> Vec<String> {
    let Ok(btf) = KernelBtf::load() else {
        return Vec::new();
    };
    (0..16)
        .map_while(|v| btf.enum_name("tcp_conntrack", v))
        .map(|n| n.trim_start_matches("TCP_CONNTRACK_").to_owned())
        .collect()
}

pub(super) fn addr(family: u8, bytes: &[u8; 16]) -> String {
    if family == 10 {
        std::net::Ipv6Addr::from(*bytes).to_string()
    } else {
        std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string()
    }
}

pub fn proto_name(proto: u8) -> String {
    match proto {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        136 => "udplite".into(),
        33 => "dccp".into(),
        47 => "gre".into(),
        p => p.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hz_snaps_to_kconfig_values() {
        assert_eq!(nearest_hz(249.0), 250);
        assert_eq!(nearest_hz(262.0), 250);
        assert_eq!(nearest_hz(990.0), 1000);
        assert_eq!(nearest_hz(104.0), 100);
        assert_eq!(nearest_hz(296.0), 300);
    }

    #[test]
    fn addresses_render_per_family() {
        let mut v4 = [0u8; 16];
        v4[..4].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(addr(2, &v4), "127.0.0.1");
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        assert_eq!(addr(10, &v6), "::1");
        assert_eq!(proto_name(17), "udp");
    }
}
