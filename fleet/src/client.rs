//! Who a request comes from: the client address behind trusted reverse proxies, read from the right of
//! `X-Forwarded-For` (each proxy appends the address it saw; only our own proxies' entries are believed),
//! and counted per /64 for IPv6. One rule for every service that keys on the client: the edge's rate
//! limit and the web's admin-failure limit.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::LazyLock;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// Private and loopback ranges: a reverse proxy on the same host or network is trusted by default.
pub const DEFAULT_TRUSTED_PROXIES: &str =
    "127.0.0.0/8,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,::1/128,fc00::/7";

/// [`DEFAULT_TRUSTED_PROXIES`], parsed.
pub fn default_trusted_proxies() -> &'static [IpNet] {
    static PARSED: LazyLock<Vec<IpNet>> = LazyLock::new(|| {
        DEFAULT_TRUSTED_PROXIES
            .split(',')
            .map(|net| net.parse().expect("the default ranges parse"))
            .collect()
    });
    &PARSED
}

/// The client address a request is counted against.
///
/// A peer outside the trusted ranges is the client, whatever it forwards. Behind a trusted peer the
/// `X-Forwarded-For` chain (every instance of the header, in order, as one comma-separated list) is walked
/// from the right, the hop nearest to us, because each proxy appends the address it saw and only the
/// entries our own proxies wrote can be believed; everything left of them is whatever the client wrote.
///
/// - A hop inside the trusted ranges is one of our proxies: the walk goes on to its left.
/// - The first hop outside the trusted ranges is the client (a spoofed entry further left is never read).
/// - An entry that is no address (garbage, `unknown`, an empty entry, a non-UTF-8 value) ends the walk:
///   no proxy of ours writes one, so it came from the client side, and the client is the nearest hop we
///   could still read: the last trusted hop walked, or the peer when the garbage is the rightmost entry.
///   Nothing left of it is believed, not even a well-formed address.
/// - When the whole chain is trusted and well-formed, the client is its leftmost hop: each entry was
///   written by a proxy we trust about the one before it, so the leftmost is the origin they all vouch for
///   (a host on a private network talking through the proxies). Taking the peer or the rightmost hop
///   instead would count every such client as one (its proxy). The price: a client whose own address is
///   in the trusted ranges can put any address in front and pick its bucket, which is why
///   `TRUSTED_PROXIES_CIDR` must hold the proxies only, not networks clients live in.
///
/// An entry may be an IPv4 address with or without `:port`, an IPv6 address bare or in brackets with or
/// without `:port`, surrounded by whitespace. The walk reads the header from the right without collecting
/// it, so a long chain costs at most one pass over the (size-capped) header.
pub fn client_key(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = canonical(peer);
    if !is_trusted(&peer) {
        return bucket(peer);
    }
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .rev()
        // A value that is not text reads as one entry that is no address.
        .flat_map(|value| value.to_str().unwrap_or("?").rsplit(','));
    let mut client = peer;
    for hop in hops {
        let Some(ip) = parse_hop(hop).map(canonical) else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    bucket(client)
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:567`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:567`, with whitespace around.
fn parse_hop(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port_ok = after.is_empty()
            || after
                .strip_prefix(':')
                .is_some_and(|port| port.parse::<u16>().is_ok());
        return port_ok
            .then(|| inside.parse::<std::net::Ipv6Addr>().ok())
            .flatten()
            .map(IpAddr::V6);
    }
    entry
        .parse::<std::net::SocketAddrV4>()
        .ok()
        .map(|addr| IpAddr::V4(*addr.ip()))
}

pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// IPv6 addresses are counted per /64 (one household's network); IPv4 ones as they are.
pub fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}
