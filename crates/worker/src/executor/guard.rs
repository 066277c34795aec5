//! The SSRF guard for `http` actions (and webhook deliveries), always on: a request never
//! reaches a loopback, private, link-local, carrier-grade NAT, metadata or otherwise
//! non-public address unless its host is listed in `http.allow_internal`. Addresses are
//! checked after DNS (so a public name cannot point inside the network), IP literals in every
//! notation are checked as the URL parser reads them (`2130706433`, `0x7f.1`, `[::ffff:7f00:1]`
//! are all 127.0.0.1), and every redirect hop is checked again. Environment proxies are not
//! used: a proxy would resolve the name itself, out of the guard's sight.
//!
//! `http.allow_hosts`, when set, further limits requests to the listed hosts.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct HostGuard {
    /// When not empty, the only hosts (`api.example.com`, `*.example.com`, IP addresses)
    /// requests may go to.
    allowed: Vec<String>,
    /// Hosts (names, wildcards, IP addresses) that may be internal: the opt-out.
    internal: Vec<String>,
}

fn listed(list: &[String], host: &str) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let as_ip = host.parse::<IpAddr>().ok();
    list.iter().any(|entry| match entry.strip_prefix("*.") {
        Some(domain) => host.ends_with(&format!(".{domain}")),
        None => *entry == host || (as_ip.is_some() && entry.parse::<IpAddr>().ok() == as_ip),
    })
}

fn normalized(hosts: &[String]) -> Vec<String> {
    hosts
        .iter()
        .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
        .collect()
}

impl HostGuard {
    pub fn new(allowed: &[String], internal: &[String]) -> Self {
        HostGuard {
            allowed: normalized(allowed),
            internal: normalized(internal),
        }
    }

    /// Whether `ip`, reached through `host`, may be called.
    fn address_allowed(&self, host: &str, ip: IpAddr) -> bool {
        !is_internal(ip) || listed(&self.internal, host) || listed(&self.internal, &ip.to_string())
    }

    /// Checks a URL before anything is sent to it (and each redirect's target): the host
    /// list, and an IP literal's address, since a literal never reaches the resolver.
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), String> {
        let (host, literal) = match url.host() {
            Some(url::Host::Domain(name)) => (name.to_owned(), None),
            Some(url::Host::Ipv4(ip)) => (ip.to_string(), Some(IpAddr::V4(ip))),
            Some(url::Host::Ipv6(ip)) => (ip.to_string(), Some(IpAddr::V6(ip))),
            None => return Err(format!("{url} has no host")),
        };
        if !self.allowed.is_empty() && !listed(&self.allowed, &host) {
            return Err(format!("host {host} is not in http.allow_hosts"));
        }
        match literal {
            Some(ip) if !self.address_allowed(&host, ip) => Err(format!(
                "{ip} is an internal address; list it in http.allow_internal to call it"
            )),
            _ => Ok(()),
        }
    }
}

/// Loopback, private, link-local (cloud metadata), carrier-grade NAT, unspecified, "this
/// network", multicast, reserved and other non-public ranges, also when embedded in IPv6.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0 // "this network": 0.x.y.z reaches the local host on Linux
                || a == 100 && (64..128).contains(&b) // carrier-grade NAT (and Alibaba's metadata)
                || a == 192 && b == 0 && c == 0 // IETF protocol assignments
                || a == 198 && (18..20).contains(&b) // benchmarking
                || a >= 240 // reserved
        }
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            let embedded = |high: u32| Ipv4Addr::from(high);
            let low32 = (u32::from(segments[6]) << 16) | u32::from(segments[7]);
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (segments[0] & 0xfe00) == 0xfc00 // unique local (AWS metadata fd00:ec2::254)
                || (segments[0] & 0xffc0) == 0xfe80 // link-local
                || (segments[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || v6.to_ipv4_mapped().is_some_and(|v4| is_internal(IpAddr::V4(v4)))
                // IPv4-compatible ::a.b.c.d and NAT64 64:ff9b::a.b.c.d carry an IPv4 address.
                || (segments[..6] == [0; 6] && is_internal(IpAddr::V4(embedded(low32))))
                || (segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] && is_internal(IpAddr::V4(embedded(low32))))
                // 6to4 2002:a.b.c.d::/48.
                || (segments[0] == 0x2002
                    && is_internal(IpAddr::V4(embedded((u32::from(segments[1]) << 16) | u32::from(segments[2])))))
        }
    }
}

/// A request the guard refused: permanent, unlike a failed lookup.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Whether the guard refused somewhere in this error's chain.
pub fn refused_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Some(refused);
        }
        current = e.source();
    }
    None
}

/// Resolves names with the system resolver, then drops internal addresses the guard does
/// not allow; a name left with none fails to resolve.
#[derive(Debug, Clone)]
pub struct GuardedResolver(pub Arc<HostGuard>);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addresses
                .iter()
                .copied()
                .filter(|a| guard.address_allowed(&host, a.ip()))
                .collect();
            if allowed.is_empty() {
                let ips: Vec<String> = addresses.iter().map(|a| a.ip().to_string()).collect();
                return Err(Box::new(Refused(format!(
                    "{host} resolves only to internal addresses ({}); list it in http.allow_internal to call it",
                    ips.join(", ")
                )))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(guard: &HostGuard, url: &str) -> Result<(), String> {
        guard.check_url(&reqwest::Url::parse(url).unwrap())
    }

    #[test]
    fn internal_literals_are_refused_in_every_notation() {
        let guard = HostGuard::default();
        for url in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://0x7f.1/",
            "http://127.1/",
            "http://0.0.0.0/",
            "http://0/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[2002:a9fe:a9fe::1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00:ec2::254]/",
            "http://100.100.100.200/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://[fe80::1]/",
        ] {
            assert!(check(&guard, url).is_err(), "{url} was let through");
        }
        assert!(check(&guard, "http://93.184.216.34/").is_ok());
        assert!(check(&guard, "https://api.example.com/").is_ok());
    }

    #[test]
    fn listed_hosts_opt_out_and_the_allow_list_limits_destinations() {
        let guard = HostGuard::new(
            &[
                "api.example.com".into(),
                "*.corp.example".into(),
                "127.0.0.1".into(),
            ],
            &["127.0.0.1".into(), "*.corp.example".into()],
        );
        assert!(check(&guard, "http://127.0.0.1:8080/").is_ok());
        assert!(
            check(&guard, "http://2130706433/").is_ok(),
            "the same address, another notation"
        );
        assert!(check(&guard, "http://10.0.0.1/").is_err());
        assert!(check(&guard, "https://evil.example/").is_err());
        assert!(check(&guard, "https://api.example.com/").is_ok());
        assert!(guard.address_allowed("ci.corp.example", "10.0.0.7".parse().unwrap()));
        assert!(!guard.address_allowed("api.example.com", "10.0.0.7".parse().unwrap()));
        assert!(guard.address_allowed("api.example.com", "93.184.216.34".parse().unwrap()));
    }
}
