//! The SSRF guard for `http` actions: an optional allow-list of hosts. With one configured,
//! a request goes only to a listed host, and never to a private, loopback or link-local
//! address unless that address itself is listed, checked on the addresses DNS returned, so a
//! listed name cannot point the request inside the network.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct HostGuard {
    /// Host names (`api.example.com`, `*.example.com`) and IP addresses.
    allowed: Vec<String>,
}

impl HostGuard {
    /// `None` when the list is empty: no guard.
    pub fn new(allowed: &[String]) -> Option<Self> {
        (!allowed.is_empty()).then(|| HostGuard {
            allowed: allowed
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect(),
        })
    }

    fn host_listed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allowed
            .iter()
            .any(|entry| match entry.strip_prefix("*.") {
                Some(domain) => host.ends_with(&format!(".{domain}")),
                None => *entry == host,
            })
    }

    fn address_allowed(&self, ip: IpAddr) -> bool {
        !is_internal(ip)
            || self
                .allowed
                .iter()
                .any(|entry| entry.parse::<IpAddr>() == Ok(ip))
    }

    /// Checks a URL's host before anything is sent; an IP literal is checked here, since
    /// it never reaches the resolver.
    pub fn check_host(&self, host: &str) -> Result<(), String> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if self.host_listed(bare) {
            Ok(())
        } else {
            Err(format!("host {bare} is not in http.allow_hosts"))
        }
    }
}

/// Loopback, private, link-local, unspecified, multicast and other non-public ranges.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.octets()[0] == 100 && (64..128).contains(&v4.octets()[1]) // carrier-grade NAT
        }
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.is_unspecified() || v6.is_multicast()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // link-local
                || v6.to_ipv4_mapped().is_some_and(|v4| is_internal(IpAddr::V4(v4)))
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
                .filter(|a| guard.address_allowed(a.ip()))
                .collect();
            if allowed.is_empty() {
                let ips: Vec<String> = addresses.iter().map(|a| a.ip().to_string()).collect();
                return Err(Box::new(Refused(format!(
                    "{host} resolves only to internal addresses ({}), which http.allow_hosts does not list",
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

    #[test]
    fn the_list_admits_names_wildcards_and_listed_addresses_only() {
        let guard = HostGuard::new(&[
            "api.example.com".into(),
            "*.corp.example".into(),
            "10.1.2.3".into(),
        ])
        .unwrap();
        assert!(guard.check_host("api.example.com").is_ok());
        assert!(guard.check_host("deploy.corp.example").is_ok());
        assert!(guard.check_host("corp.example").is_err());
        assert!(guard.check_host("evil.example").is_err());
        assert!(guard.check_host("10.1.2.3").is_ok());
        assert!(guard.check_host("127.0.0.1").is_err());
        assert!(guard.address_allowed("10.1.2.3".parse().unwrap()));
        assert!(!guard.address_allowed("169.254.169.254".parse().unwrap()));
        assert!(!guard.address_allowed("::ffff:127.0.0.1".parse().unwrap()));
        assert!(guard.address_allowed("93.184.216.34".parse().unwrap()));
        assert!(HostGuard::new(&[]).is_none());
    }
}
