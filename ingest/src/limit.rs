//! Per-client token-bucket rate limiting. The client is the peer address, or the address a trusted reverse
//! proxy put in `X-Forwarded-For` (the original rate-limited its own proxy and lost half its events); with
//! `RATE_KEY_MODE=header`, the value of `RATE_KEY_HEADER` that a trusted proxy sent (a client talking to
//! us directly could otherwise pick a new key per request). The key lives only in this limiter's memory,
//! a header value only as a keyed hash: it is never logged, stored or published. IPv6 clients are keyed
//! by their /64, which is what one household gets.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::{HeaderMap, HeaderName};
use ipnet::IpNet;

use fleet::client::canonical;
pub use fleet::client::client_key;

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

    /// `xff`: the values of each `X-Forwarded-For` header the request carries, in order.
    fn check(peer: &str, xff: &[&[u8]], expected: &str) {
        let trusted: Vec<IpNet> = crate::config::DEFAULT_TRUSTED_PROXIES
            .split(',')
            .map(|s| s.parse().unwrap())
            .collect();
        let mut headers = HeaderMap::new();
        for value in xff {
            headers.append("x-forwarded-for", HeaderValue::from_bytes(value).unwrap());
        }
        let got = client_key(peer.parse().unwrap(), &headers, &trusted);
        assert_eq!(
            got,
            expected.parse::<IpAddr>().unwrap(),
            "peer {peer} xff {:?}",
            xff.iter()
                .map(|v| String::from_utf8_lossy(v))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn keys_follow_trusted_proxies_only() {
        // A public peer is the client, whatever it claims.
        check("203.0.113.7", &[b"198.51.100.1"], "203.0.113.7");
        // A private proxy forwards the client.
        check("10.0.0.2", &[b"198.51.100.1"], "198.51.100.1");
        // No header behind a proxy: the proxy itself.
        check("127.0.0.1", &[], "127.0.0.1");
        // IPv6 clients share a bucket per /64; mapped IPv4 is IPv4.
        check("2001:db8:1:2:3:4:5:6", &[], "2001:db8:1:2::");
        check("::ffff:203.0.113.7", &[], "203.0.113.7");
    }

    #[test]
    fn the_forwarded_chain_is_walked_from_the_right() {
        // Spoofed leftmost entries: the rightmost untrusted hop is the client, whatever is left of it.
        check(
            "127.0.0.1",
            &[b"1.1.1.1, 198.51.100.1, 10.0.0.9"],
            "198.51.100.1",
        );
        check(
            "127.0.0.1",
            &[b"10.9.9.9, 203.0.113.5, 10.0.0.1"],
            "203.0.113.5",
        );
        // A fully trusted chain: its leftmost hop.
        check("127.0.0.1", &[b"192.168.1.5, 10.0.0.9"], "192.168.1.5");
        check("127.0.0.1", &[b"fd00::5, ::1"], "fd00::");
        // Garbage ends the walk: the nearest hop read before it is the client, nothing left of it counts.
        check(
            "10.0.0.2",
            &[b"198.51.100.1, not-an-ip, 10.0.0.9"],
            "10.0.0.9",
        );
        check("10.0.0.2", &[b"198.51.100.1, unknown"], "10.0.0.2");
        check("10.0.0.2", &[b"not-an-ip, 198.51.100.1"], "198.51.100.1");
        check("10.0.0.2", &[b"198.51.100.1,,10.0.0.9"], "10.0.0.9");
        check("10.0.0.2", &[b"198.51.100.1, \xff"], "10.0.0.2");
        check("10.0.0.2", &[b"198.51.100.1", b"\xff"], "10.0.0.2");
        check("10.0.0.2", &[b"[2001:db8::1, 10.0.0.9"], "10.0.0.9");
        check("10.0.0.2", &[b"198.51.100.1, [1.2.3.4]"], "10.0.0.2");
        check("10.0.0.2", &[b"198.51.100.1, 10.0.0.9:99999"], "10.0.0.2");
        // Empty: no hop, the peer.
        check("10.0.0.2", &[b""], "10.0.0.2");
        check("10.0.0.2", &[b"  "], "10.0.0.2");
        check("10.0.0.2", &[b"198.51.100.1, "], "10.0.0.2");
        // IPv6 with brackets and ports, IPv4 with ports.
        check("::1", &[b"[2001:db8:1:2::5]:4711"], "2001:db8:1:2::");
        check("::1", &[b"[2001:db8:1:2::5]"], "2001:db8:1:2::");
        check("::1", &[b"2001:db8:1:2::5"], "2001:db8:1:2::");
        check("::1", &[b"[::ffff:198.51.100.1]:80"], "198.51.100.1");
        check(
            "10.0.0.2",
            &[b"203.0.113.9:5000, [::1]:8080"],
            "203.0.113.9",
        );
        check("10.0.0.2", &[b"::ffff:10.0.0.3"], "10.0.0.3");
        // Whitespace around entries.
        check(
            "10.0.0.2",
            &[b"  198.51.100.1  ,\t10.0.0.9 "],
            "198.51.100.1",
        );
        // Several headers are one list, in order.
        check("10.0.0.2", &[b"198.51.100.1", b"10.0.0.9"], "198.51.100.1");
        check("10.0.0.2", &[b"garbage", b"10.0.0.9, 10.0.0.8"], "10.0.0.9");
        check(
            "10.0.0.2",
            &[b"203.0.113.1", b"198.51.100.1"],
            "198.51.100.1",
        );
    }

    #[test]
    fn long_chains_are_walked_to_the_first_untrusted_hop() {
        let trusted_hops = vec!["10.0.0.1"; 500].join(", ");
        let chain = format!("203.0.113.66, 198.51.100.1, {trusted_hops}");
        check("127.0.0.1", &[chain.as_bytes()], "198.51.100.1");
        let spoofed = format!("{}, 198.51.100.1, 10.0.0.1", vec!["1.1.1.1"; 500].join(","));
        check("127.0.0.1", &[spoofed.as_bytes()], "198.51.100.1");
        let all_trusted = format!("192.168.7.7, {trusted_hops}");
        check("127.0.0.1", &[all_trusted.as_bytes()], "192.168.7.7");
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
