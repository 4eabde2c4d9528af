//! The edge's health check after a policy change: every upstream the policy routes to must
//! accept a TCP connection within [`PROBE_TIMEOUT`]. The result goes to the control plane
//! (`policy_health`), which decides canary rollouts on it: a bundle that points the edge at
//! upstreams it cannot reach is rolled back before the rest of the fleet gets it.

use std::time::Duration;

use sase_model::channel::MAX_HEALTH_FAILURES;
use sase_model::{BundlePayload, SignedBundle};

/// The appliance's load and memory from `/proc` (Linux); `None` where they cannot be read.
pub fn system_load() -> Option<sase_model::channel::SystemLoad> {
    let loadavg = std::fs::read_to_string("/proc/loadavg").ok()?;
    let load1: f64 = loadavg.split_whitespace().next()?.parse().ok()?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(sase_model::channel::SystemLoad {
        load1_milli: (load1 * 1000.0).clamp(0.0, f64::from(u32::MAX)) as u32,
        cpus: std::thread::available_parallelism()
            .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
        mem_total_kib: field("MemTotal:")?,
        mem_available_kib: field("MemAvailable:")?,
    })
}

/// How long one upstream may take to accept a connection.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The distinct upstream URLs of a bundle's policy. Reads the payload without checking the
/// signature: call it only for a bundle that was just applied (and so verified).
pub fn upstreams_of(bundle: &SignedBundle) -> Vec<String> {
    use base64::Engine as _;
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(&bundle.payload) else {
        return Vec::new();
    };
    let Ok(payload) = serde_json::from_slice::<BundlePayload>(&bytes) else {
        return Vec::new();
    };
    let mut upstreams: Vec<String> = payload
        .policy
        .resources
        .iter()
        .map(|r| r.upstream.clone())
        .collect();
    upstreams.sort();
    upstreams.dedup();
    upstreams
}

/// Probes each upstream (concurrently); returns the failing ones as `"<url>: <why>"`, at most
/// [`MAX_HEALTH_FAILURES`].
pub async fn probe(upstreams: &[String]) -> Vec<String> {
    let mut set = tokio::task::JoinSet::new();
    for upstream in upstreams {
        let upstream = upstream.clone();
        set.spawn(async move {
            let target = url::Url::parse(&upstream).ok().and_then(|u| {
                Some((
                    u.host_str()?.trim_matches(['[', ']']).to_string(),
                    u.port_or_known_default()?,
                ))
            });
            let Some((host, port)) = target else {
                return Some(format!("{upstream}: not a URL with a host and port"));
            };
            match tokio::time::timeout(
                PROBE_TIMEOUT,
                tokio::net::TcpStream::connect((host.as_str(), port)),
            )
            .await
            {
                Ok(Ok(_)) => None,
                Ok(Err(err)) => Some(format!("{upstream}: {err}")),
                Err(_) => Some(format!(
                    "{upstream}: no connection within {} s",
                    PROBE_TIMEOUT.as_secs()
                )),
            }
        });
    }
    let mut failing = Vec::new();
    while let Some(result) = set.join_next().await {
        if let Ok(Some(why)) = result {
            failing.push(why);
        }
    }
    failing.sort();
    failing.truncate(MAX_HEALTH_FAILURES);
    failing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_load_is_read_from_proc() {
        let load = system_load().expect("Linux /proc");
        assert!(load.cpus >= 1);
        assert!(load.mem_total_kib > 0 && load.mem_available_kib <= load.mem_total_kib);
    }

    #[tokio::test]
    async fn reachable_upstreams_pass_and_closed_ports_fail() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let open = format!("http://{}", listener.local_addr().expect("addr"));
        // A port that was just free: nothing listens there.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            format!("http://{}", l.local_addr().expect("addr"))
        };
        assert!(probe(std::slice::from_ref(&open)).await.is_empty());
        let failing = probe(&[open.clone(), closed.clone(), "not a url".into()]).await;
        assert_eq!(failing.len(), 2, "{failing:?}");
        assert!(failing.iter().any(|f| f.starts_with(&closed)));
        assert!(failing.iter().any(|f| f.contains("not a URL")));
    }
}
