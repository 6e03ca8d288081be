//! `{"cidr": "10.0.0.0/24"}`: IPv4 and IPv6 networks, and IP-aware equality.

use super::error::PatternError;
use std::net::{IpAddr, Ipv4Addr};

/// A network: its address with the host bits cleared, and the prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cidr {
    V4 { network: u32, bits: u8 },
    V6 { network: u128, bits: u8 },
}

impl Cidr {
    /// Parses `address/bits`. As in EventBridge the prefix must be shorter
    /// than the address (at most /31 for IPv4, /127 for IPv6): a single
    /// address is matched with its exact string value instead. Host bits
    /// below the prefix are ignored (`10.0.0.7/24` is `10.0.0.0/24`).
    pub fn parse(text: &str, path: &str) -> Result<Self, PatternError> {
        let err = |reason: String| PatternError::operand(path, "cidr", reason);
        let Some((address, bits)) = text.split_once('/').filter(|(_, b)| !b.contains('/')) else {
            return Err(err(format!(
                "\"{text}\" is not a CIDR block: exactly one '/' is required, as in \"10.0.0.0/24\""
            )));
        };
        if bits.is_empty() || !bits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err(format!(
                "\"{text}\": the prefix length \"{bits}\" must be a whole number"
            )));
        }
        let bits: u32 = bits
            .parse()
            .map_err(|_| err(format!("\"{text}\": the prefix length is too large")))?;
        let address: IpAddr = address
            .parse()
            .map_err(|_| err(format!("\"{text}\": \"{address}\" is not a valid IPv4 or IPv6 address")))?;
        match address {
            IpAddr::V4(a) => {
                if bits > 31 {
                    return Err(err(format!(
                        "\"{text}\": IPv4 prefix length must be less than 32 (to match one \
                         address, use the address itself as a value)"
                    )));
                }
                let bits = bits as u8;
                Ok(Cidr::V4 {
                    network: u32::from(a) & mask32(bits),
                    bits,
                })
            }
            IpAddr::V6(a) => {
                if bits > 127 {
                    return Err(err(format!(
                        "\"{text}\": IPv6 prefix length must be less than 128 (to match one \
                         address, use the address itself as a value)"
                    )));
                }
                let bits = bits as u8;
                Ok(Cidr::V6 {
                    network: u128::from(a) & mask128(bits),
                    bits,
                })
            }
        }
    }

    /// Whether the event string is an IP address inside this network.
    pub fn contains(&self, text: &str) -> bool {
        match (self, parse_ip(text)) {
            (Cidr::V4 { network, bits }, Some(IpAddr::V4(a))) => u32::from(a) & mask32(*bits) == *network,
            (Cidr::V6 { network, bits }, Some(IpAddr::V6(a))) => u128::from(a) & mask128(*bits) == *network,
            _ => false,
        }
    }
}

fn mask32(bits: u8) -> u32 {
    if bits == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(bits))
    }
}

fn mask128(bits: u8) -> u128 {
    if bits == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(bits))
    }
}

/// Parses an IP address; an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`)
/// is read as the IPv4 address it carries.
pub(crate) fn parse_ip(text: &str) -> Option<IpAddr> {
    match text.parse::<IpAddr>().ok()? {
        IpAddr::V6(v6) => Some(
            v6.to_ipv4_mapped()
                .map_or(IpAddr::V6(v6), |v4: Ipv4Addr| IpAddr::V4(v4)),
        ),
        v4 => Some(v4),
    }
}

/// For exact string values that are IP addresses: EventBridge compares
/// them as addresses, so `2001:db8::1` matches `2001:0db8:0:0:0:0:0:1`.
pub(crate) fn same_ip(pattern: &IpAddr, text: &str) -> bool {
    parse_ip(text).is_some_and(|ip| &ip == pattern)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        match Cidr::parse(text, "$.ip[0].cidr") {
            Ok(c) => c,
            Err(e) => panic!("{text}: {e}"),
        }
    }

    #[test]
    fn ipv4_networks() {
        let c = cidr("10.0.0.0/24");
        assert!(c.contains("10.0.0.0"));
        assert!(c.contains("10.0.0.255"));
        assert!(!c.contains("10.0.1.0"));
        assert!(!c.contains("10.0.0.256"));
        assert!(!c.contains("not an ip"));
        assert!(!c.contains("2001:db8::1"));
        assert!(c.contains("::ffff:10.0.0.9"), "IPv4-mapped IPv6 counts as IPv4");
        assert!(cidr("0.0.0.0/0").contains("192.168.1.1"));
        assert!(cidr("10.0.0.7/24").contains("10.0.0.1"), "host bits are ignored");
    }

    #[test]
    fn ipv6_networks() {
        let c = cidr("2001:db8:1234:1a00::/64");
        assert!(c.contains("2001:0db8:1234:1a00:0000:0000:0000:0000"));
        assert!(c.contains("2001:db8:1234:1a00:ffff:ffff:ffff:ffff"));
        assert!(!c.contains("2001:0db8:123f:1a01:0000:0000:0000:0000"));
        assert!(!c.contains("2001:db8:1234:1a01::"));
        assert!(!c.contains("10.0.0.1"));
        let c = cidr("2001:db8::/127");
        assert!(c.contains("2001:db8::1"));
        assert!(!c.contains("2001:db8::2"));
        assert!(cidr("::/0").contains("fe80::1"));
    }

    #[test]
    fn malformed_blocks_are_rejected() {
        for bad in [
            "bad-filter",
            "xx.11.xx/8",
            "bad-/64filter",
            "10.0.0.0",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/24/1",
            "10.0.0.0/32",
            "10.0.0.0/33",
            "2001:db8::/128",
            "10.0.0.0/99999999999",
        ] {
            let e = Cidr::parse(bad, "$.ip[0].cidr");
            assert!(e.is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn ip_equality_ignores_notation() {
        let p = parse_ip("2001:db8::1").unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert!(same_ip(&p, "2001:0db8:0000:0000:0000:0000:0000:0001"));
        assert!(!same_ip(&p, "2001:db8::2"));
    }
}
