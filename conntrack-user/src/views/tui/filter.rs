//! The `/` filter: which drops and namespaces are shown. It narrows the
//! view only; the model keeps counting everything.
//!
//! Syntax: words separated by spaces, each `key value`, `key:value` or
//! `key=value`, or a bare value whose kind is plain from its form:
//! `netns 4026532000`, `port 443`, `host 10.0.0.2`, `proto udp`,
//! `cause table_full`, `syn`; `10.0.0.2`, `443`, `4026532000` (a number past
//! 65535 is a namespace), `udp`, `table_full`, or a namespace name.

use std::net::IpAddr;

use crate::model::{
    NetnsRow,
    drops::{Cause, DropFilter, DropRecord},
};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub drops: DropFilter,
    /// Part of an `ip netns` name.
    pub netns_name: Option<String>,
    /// The text it was parsed from, normalised.
    pub text: String,
}

const KEYS: [&str; 6] = ["netns", "port", "host", "proto", "cause", "syn"];

impl Filter {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut f = Filter::default();
        let mut words = text
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|w| !w.is_empty())
            .peekable();
        let mut parts = Vec::new();
        while let Some(word) = words.next() {
            let (key, value) = match word.split_once([':', '=']) {
                // An IPv6 address has colons but no known key before them.
                Some((k, v)) if KEYS.contains(&normal_key(k)) => (normal_key(k), v.to_owned()),
                _ if KEYS.contains(&normal_key(word)) && normal_key(word) != "syn" => {
                    let key = normal_key(word);
                    let value = words.next().ok_or_else(|| {
                        format!("filter: `{word}` needs a value, e.g. {word} 443")
                    })?;
                    (key, value.to_owned())
                }
                _ => ("", word.to_owned()),
            };
            f.add(key, &value)?;
            parts.push(if key.is_empty() || key == "syn" {
                value
            } else {
                format!("{key}:{value}")
            });
        }
        f.text = parts.join(" ");
        Ok(f)
    }

    fn add(&mut self, key: &str, value: &str) -> Result<(), String> {
        let d = &mut self.drops;
        match key {
            "netns" => match value.parse::<u32>() {
                Ok(n) => d.netns = Some(n),
                Err(_) => self.netns_name = Some(value.to_owned()),
            },
            "port" => {
                d.port = Some(
                    value
                        .parse()
                        .map_err(|_| format!("filter: `{value}` is not a port (0-65535)"))?,
                );
            }
            "host" => {
                d.host =
                    Some(value.parse().map_err(|_| {
                        format!("filter: `{value}` is not an IPv4 or IPv6 address")
                    })?);
            }
            "proto" => {
                d.proto = Some(
                    proto_number(value)
                        .ok_or_else(|| format!("filter: unknown protocol `{value}`"))?,
                );
            }
            "cause" => d
                .causes
                .push(Cause::parse(value).map_err(|e| format!("filter: {e}"))?),
            "syn" => d.syn_only = true,
            _ => {
                if let Ok(addr) = value.parse::<IpAddr>() {
                    d.host = Some(addr);
                } else if let Ok(n) = value.parse::<u64>() {
                    match u16::try_from(n) {
                        Ok(port) => d.port = Some(port),
                        Err(_) => {
                            d.netns = Some(u32::try_from(n).map_err(|_| {
                                format!("filter: `{value}` is neither a port nor a netns inode")
                            })?);
                        }
                    }
                } else if value.eq_ignore_ascii_case("syn") {
                    d.syn_only = true;
                } else if let Some(p) = proto_number(value) {
                    d.proto = Some(p);
                } else if let Ok(c) = Cause::parse(value) {
                    d.causes.push(c);
                } else if value.chars().any(|c| c.is_ascii_digit() || c == '.')
                    && value
                        .chars()
                        .all(|c| c.is_ascii_hexdigit() || c == '.' || c == ':')
                {
                    return Err(format!(
                        "filter: `{value}` is not an address; use e.g. host 10.0.0.2"
                    ));
                } else {
                    self.netns_name = Some(value.to_owned());
                }
            }
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.drops.is_empty() && self.netns_name.is_none()
    }

    /// A namespace row is shown when it is the filtered namespace (by inode
    /// or name). Port and host narrow drops only.
    pub fn matches_netns(&self, row: &NetnsRow) -> bool {
        self.drops.netns.is_none_or(|n| n == row.inum)
            && self.netns_name.as_ref().is_none_or(|want| {
                row.name
                    .as_ref()
                    .is_some_and(|name| name.contains(want.as_str()))
            })
    }

    /// `named` holds the inodes of the namespaces whose names match.
    pub fn matches_drop(&self, d: &DropRecord, named: &[u32]) -> bool {
        self.drops.matches(d) && (self.netns_name.is_none() || named.contains(&d.netns))
    }
}

fn normal_key(k: &str) -> &'static str {
    match k.to_ascii_lowercase().as_str() {
        "netns" | "ns" => "netns",
        "port" => "port",
        "host" | "ip" | "addr" => "host",
        "proto" => "proto",
        "cause" => "cause",
        "syn" => "syn",
        _ => "",
    }
}

fn proto_number(name: &str) -> Option<u8> {
    match name.to_ascii_lowercase().as_str() {
        "icmp" => Some(1),
        "tcp" => Some(6),
        "udp" => Some(17),
        "gre" => Some(47),
        "icmpv6" => Some(58),
        "sctp" => Some(132),
        "udplite" => Some(136),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_and_bare_forms_agree() {
        let keyed = Filter::parse("netns 4026532000 port=443 host:10.0.0.2").expect("parse");
        let bare = Filter::parse("4026532000, 443 10.0.0.2").expect("parse");
        assert_eq!(keyed.drops, bare.drops);
        assert_eq!(keyed.drops.netns, Some(4_026_532_000));
        assert_eq!(keyed.drops.port, Some(443));
        assert_eq!(keyed.drops.host, Some("10.0.0.2".parse().expect("ip")));
        assert_eq!(keyed.text, "netns:4026532000 port:443 host:10.0.0.2");
    }

    #[test]
    fn ipv6_protocols_causes_syn_and_names() {
        let f = Filter::parse("::1 udp table-full syn web").expect("parse");
        assert_eq!(f.drops.host, Some("::1".parse().expect("ip")));
        assert_eq!(f.drops.proto, Some(17));
        assert_eq!(f.drops.causes, [Cause::TableFull]);
        assert!(f.drops.syn_only);
        assert_eq!(f.netns_name.as_deref(), Some("web"));
        let f = Filter::parse("host [::1]")
            .map(|_| ())
            .expect_err("brackets");
        assert!(f.contains("[::1]"), "{f}");
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert!(
            Filter::parse("port 70000")
                .expect_err("port")
                .contains("70000")
        );
        assert!(
            Filter::parse("port")
                .expect_err("value")
                .contains("needs a value")
        );
        assert!(
            Filter::parse("10.0.0.300")
                .expect_err("ip")
                .contains("not an address")
        );
        assert!(Filter::parse("").expect("empty").is_empty());
    }

    #[test]
    fn namespaces_match_by_inode_or_name() {
        let row = NetnsRow {
            inum: 7,
            name: Some("ctscope-web".into()),
            ..NetnsRow::default()
        };
        assert!(Filter::parse("netns 7").expect("f").matches_netns(&row));
        assert!(Filter::parse("web").expect("f").matches_netns(&row));
        assert!(!Filter::parse("netns 8").expect("f").matches_netns(&row));
        assert!(
            Filter::parse("port 443").expect("f").matches_netns(&row),
            "ports narrow drops only"
        );
    }
}
