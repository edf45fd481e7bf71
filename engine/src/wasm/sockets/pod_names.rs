//! Name lookup in a pod's network namespace: the pod's hosts file, then the DNS servers its
//! resolv.conf names, asked from the sandbox over the pod's network (hickory-resolver), as
//! the libc of any other container in the pod would.

use crate::spec::PodResolver;
use hickory_resolver::config::{LookupIpStrategy, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::{Hosts, TokioResolver};
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use wasmtime_wasi::p2::bindings::sockets::network::ErrorCode;

/// Where libc asks when resolv.conf names no server (glibc and musl alike).
const DEFAULT_NAMESERVER: &str = "nameserver 127.0.0.1\n";

/// The pod's resolver, built at the guest's first lookup.
#[derive(Default)]
pub struct PodNames {
    files: PodResolver,
    resolver: OnceLock<TokioResolver>,
}

impl PodNames {
    pub fn new(files: PodResolver) -> PodNames {
        PodNames {
            files,
            resolver: OnceLock::new(),
        }
    }

    /// The addresses of `domain` (a valid name, not an address). Must be called inside the
    /// tokio runtime the guest runs on: the resolver's queries are tasks of it.
    pub fn lookup(
        &self,
        domain: &str,
    ) -> impl Future<Output = Result<Vec<IpAddr>, ErrorCode>> + Send + 'static {
        let resolver = self.resolver.get_or_init(|| build(&self.files)).clone();
        let domain = domain.to_string();
        async move {
            match resolver.lookup_ip(domain.as_str()).await {
                Ok(found) => Ok(found.iter().collect()),
                Err(e) => {
                    tracing::debug!("the guest's lookup of `{domain}` in the pod failed: {e}");
                    Err(error_code(&e))
                }
            }
        }
    }
}

/// A resolver over the pod's files: without a resolv.conf, the hosts file alone.
fn build(files: &PodResolver) -> TokioResolver {
    let (config, mut options) = match &files.resolv_conf {
        Some(text) => parse(text),
        None => {
            tracing::debug!(
                "the container was given no /etc/resolv.conf: names resolve by its /etc/hosts only"
            );
            (
                ResolverConfig::from_parts(None, vec![], vec![]),
                ResolverOpts::default(),
            )
        }
    };
    // Both families, IPv4 first, as getaddrinfo with AF_UNSPEC; the sandbox has no hosts
    // file of its own to read.
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    options.use_hosts_file = ResolveHosts::Never;
    let builder = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
    let mut resolver = builder
        .with_options(options)
        .build()
        .expect("a resolver without TLS or DNSSEC builds");
    resolver.set_hosts(Arc::new(hosts(files.hosts.as_deref().unwrap_or(""))));
    resolver
}

/// `text` as libc reads a resolv.conf: no `nameserver` line means the local one.
fn parse(text: &str) -> (ResolverConfig, ResolverOpts) {
    use hickory_resolver::system_conf::parse_resolv_conf;
    parse_resolv_conf(text)
        .or_else(|_| parse_resolv_conf(format!("{text}\n{DEFAULT_NAMESERVER}")))
        .unwrap_or_else(|e| {
            tracing::debug!(
                "the pod's resolv.conf cannot be used ({e}): its first nameserver is asked"
            );
            parse_resolv_conf(DEFAULT_NAMESERVER).expect("one nameserver parses")
        })
}

fn hosts(text: &str) -> Hosts {
    let mut hosts = Hosts::default();
    // Reading from memory fails only on invalid UTF-8: the lines before it count.
    if let Err(e) = hosts.read_hosts_conf(text.as_bytes()) {
        tracing::debug!("the pod's hosts file was read in part: {e}");
    }
    hosts
}

/// The WASI error for a failed lookup: no such name (or no server to ask) is
/// `name-unresolvable`, a server that did not answer is temporary.
fn error_code(e: &NetError) -> ErrorCode {
    if e.is_nx_domain() || e.is_no_records_found() || matches!(e, NetError::NoConnections) {
        return ErrorCode::NameUnresolvable;
    }
    match e {
        NetError::Timeout | NetError::Io(_) | NetError::Busy => ErrorCode::TemporaryResolverFailure,
        _ => ErrorCode::PermanentResolverFailure,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(resolv_conf: Option<&str>, hosts: &str) -> PodResolver {
        PodResolver {
            resolv_conf: resolv_conf.map(str::to_string),
            hosts: Some(hosts.to_string()),
        }
    }

    fn look_up(files: PodResolver, name: &str) -> Result<Vec<IpAddr>, ErrorCode> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async { PodNames::new(files).lookup(name).await })
    }

    #[test]
    fn the_pods_hosts_file_answers_first_and_in_both_families() {
        let hosts = "# CRI's\n127.0.0.1 localhost\n10.1.2.3 db db.pod.local\nfd00::7 db\n";
        let found = look_up(files(None, hosts), "db").unwrap();
        assert_eq!(
            found,
            [
                "10.1.2.3".parse::<IpAddr>().unwrap(),
                "fd00::7".parse().unwrap()
            ]
        );
        let found = look_up(files(None, hosts), "db.pod.local").unwrap();
        assert_eq!(found, ["10.1.2.3".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn without_a_resolv_conf_a_name_not_in_the_hosts_file_is_unresolvable() {
        assert_eq!(
            look_up(files(None, "10.1.2.3 db\n"), "web"),
            Err(ErrorCode::NameUnresolvable)
        );
    }

    #[test]
    fn a_resolv_conf_without_servers_asks_the_local_one_as_libc_does() {
        let (config, options) = parse("search svc.cluster.local\noptions ndots:5 timeout:1\n");
        let servers: Vec<_> = config.name_servers().iter().map(|s| s.ip).collect();
        assert_eq!(servers, ["127.0.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(config.search()[0].to_string(), "svc.cluster.local");
        assert_eq!((options.ndots, options.timeout.as_secs()), (5, 1));
    }
}
