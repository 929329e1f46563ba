//! Per-client token-bucket rate limiting. The client is the peer address, or the address a trusted reverse
//! proxy put in `X-Forwarded-For` (the original rate-limited its own proxy and lost half its events); with
//! `RATE_KEY_MODE=header`, the value of `RATE_KEY_HEADER` that a trusted proxy sent (a client talking to
//! us directly could otherwise pick a new key per request). The key lives only in this limiter's memory,
//! a header value only as a keyed hash: it is never logged, stored or published. IPv6 clients are keyed
//! by their /64, which is what one household gets.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::{HeaderMap, HeaderName};
use ipnet::IpNet;

/// What a request is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// The client address (an IPv6 client's /64).
    Addr(IpAddr),
    /// The hash of the key header's value, keyed per process.
    Header(u64),
}

/// How the key of a request is found: the trusted proxies, and the key header when RATE_KEY_MODE=header.
#[derive(Debug, Clone)]
pub struct KeyRule {
    pub trusted: Vec<IpNet>,
    pub header: Option<HeaderName>,
    /// Random per process, so a header value's hash means nothing outside it.
    hasher: RandomState,
}

impl KeyRule {
    pub fn new(trusted: Vec<IpNet>, header: Option<HeaderName>) -> KeyRule {
        KeyRule {
            trusted,
            header,
            hasher: RandomState::new(),
        }
    }

    /// The key of a request from `peer`: the key header's value when a trusted proxy sent one, else the
    /// client address.
    pub fn key(&self, peer: IpAddr, headers: &HeaderMap) -> ClientKey {
        if let Some(name) = &self.header {
            let peer_trusted = self
                .trusted
                .iter()
                .any(|net| net.contains(&canonical(peer)));
            let value = headers
                .get(name)
                .map(|v| v.as_bytes())
                .filter(|v| !v.is_empty());
            if let (true, Some(value)) = (peer_trusted, value) {
                return ClientKey::Header(self.hasher.hash_one(value));
            }
        }
        ClientKey::Addr(client_key(peer, headers, &self.trusted))
    }
}

/// The client address a request is counted against.
pub fn client_key(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = canonical(peer);
    if !is_trusted(&peer) {
        return bucket(peer);
    }
    // Walk the chain from the nearest hop outwards; the first address we don't trust is the client.
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
        .map(canonical)
        .collect();
    let client = hops
        .iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .or(hops.first())
        .copied()
        .unwrap_or(peer);
    bucket(client)
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// IPv6 addresses are counted per /64.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// A keyed token bucket; `None` inside when rate limiting is off.
pub struct Limiter {
    inner: Option<DefaultKeyedRateLimiter<ClientKey>>,
}

impl Limiter {
    /// `rpm` tokens per minute, `burst` at most; `rpm == 0` disables the limit.
    pub fn new(rpm: u32, burst: u32) -> Limiter {
        let inner = NonZeroU32::new(rpm).map(|rpm| {
            let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
            RateLimiter::keyed(Quota::per_minute(rpm).allow_burst(burst))
        });
        Limiter { inner }
    }

    /// `Err(wait)` when the client has to wait before its next request.
    pub fn check(&self, key: ClientKey) -> Result<(), Duration> {
        let Some(limiter) = &self.inner else {
            return Ok(());
        };
        limiter
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forgets clients whose bucket is full again, so memory follows the active clients only.
    pub fn forget_idle(&self) -> usize {
        match &self.inner {
            Some(limiter) => {
                limiter.retain_recent();
                limiter.shrink_to_fit();
                limiter.len()
            }
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn check(peer: &str, xff: Option<&str>, expected: &str) {
        let trusted: Vec<IpNet> = crate::config::DEFAULT_TRUSTED_PROXIES
            .split(',')
            .map(|s| s.parse().unwrap())
            .collect();
        let mut headers = HeaderMap::new();
        if let Some(xff) = xff {
            headers.insert("x-forwarded-for", HeaderValue::from_str(xff).unwrap());
        }
        let got = client_key(peer.parse().unwrap(), &headers, &trusted);
        assert_eq!(
            got,
            expected.parse::<IpAddr>().unwrap(),
            "peer {peer} xff {xff:?}"
        );
    }

    #[test]
    fn keys_follow_trusted_proxies_only() {
        // A public peer is the client, whatever it claims.
        check("203.0.113.7", Some("198.51.100.1"), "203.0.113.7");
        // A private proxy forwards the client.
        check("10.0.0.2", Some("198.51.100.1"), "198.51.100.1");
        // Chains: the rightmost untrusted hop is the client; spoofed left entries are ignored.
        check(
            "127.0.0.1",
            Some("1.1.1.1, 198.51.100.1, 10.0.0.9"),
            "198.51.100.1",
        );
        // Only trusted hops: the leftmost one.
        check("127.0.0.1", Some("192.168.1.5, 10.0.0.9"), "192.168.1.5");
        // No header behind a proxy: the proxy itself.
        check("127.0.0.1", None, "127.0.0.1");
        // Garbage in the header is skipped.
        check("10.0.0.2", Some("not-an-ip, 198.51.100.1"), "198.51.100.1");
        // IPv6 clients share a bucket per /64; mapped IPv4 is IPv4.
        check("2001:db8:1:2:3:4:5:6", None, "2001:db8:1:2::");
        check("::ffff:203.0.113.7", None, "203.0.113.7");
    }

    fn addr(text: &str) -> ClientKey {
        ClientKey::Addr(text.parse().unwrap())
    }

    #[test]
    fn the_bucket_allows_a_burst_then_refuses() {
        let limiter = Limiter::new(60, 3);
        let key = addr("198.51.100.1");
        for _ in 0..3 {
            assert!(limiter.check(key).is_ok());
        }
        let wait = limiter.check(key).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        // Another client is not affected.
        assert!(limiter.check(addr("198.51.100.2")).is_ok());
        assert_eq!(limiter.forget_idle(), 2);
    }

    #[test]
    fn zero_rpm_disables_the_limit() {
        let limiter = Limiter::new(0, 0);
        for _ in 0..1000 {
            assert!(limiter.check(addr("198.51.100.1")).is_ok());
        }
    }

    #[test]
    fn the_key_header_counts_when_a_trusted_proxy_sends_it() {
        let trusted: Vec<IpNet> = crate::config::DEFAULT_TRUSTED_PROXIES
            .split(',')
            .map(|s| s.parse().unwrap())
            .collect();
        let rule = KeyRule::new(
            trusted.clone(),
            Some(HeaderName::from_static("x-client-key")),
        );
        let headers = |key: Option<&str>| {
            let mut h = HeaderMap::new();
            h.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.1"));
            if let Some(key) = key {
                h.insert("x-client-key", HeaderValue::from_str(key).unwrap());
            }
            h
        };
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let a = rule.key(proxy, &headers(Some("user-a")));
        assert!(matches!(a, ClientKey::Header(_)), "{a:?}");
        assert_eq!(
            a,
            rule.key(proxy, &headers(Some("user-a"))),
            "the same value, the same bucket"
        );
        assert_ne!(a, rule.key(proxy, &headers(Some("user-b"))));
        // Without the header (or with an empty one): the forwarded client address, as in ip mode.
        assert_eq!(rule.key(proxy, &headers(None)), addr("198.51.100.1"));
        assert_eq!(rule.key(proxy, &headers(Some(""))), addr("198.51.100.1"));
        // From a client that is no trusted proxy the header means nothing.
        let direct: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(
            rule.key(direct, &headers(Some("user-a"))),
            addr("203.0.113.7")
        );
        // ip mode never looks at it.
        let ip_mode = KeyRule::new(trusted, None);
        assert_eq!(
            ip_mode.key(proxy, &headers(Some("user-a"))),
            addr("198.51.100.1")
        );
        // The key never holds the value itself.
        assert!(!format!("{a:?}").contains("user-a"));
    }
}
