//! What containers and Swarm services publish (from the Docker API), and what the policy
//! makes of each: "`web` publishes 0.0.0.0:8080→80/tcp: blocked by policy".

use std::net::IpAddr;

use bollard::query_parameters::{ListContainersOptions, ListServicesOptions};
use bollard::Docker;
use serde::Serialize;

use super::policy::{PortPolicy, Reach};

/// One published port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Publication {
    /// The container's or service's name.
    pub name: String,
    /// "container", or "service" (Swarm: ingress or host mode).
    pub kind: String,
    /// The host address it is bound to ("" or 0.0.0.0 / :: for all).
    pub ip: String,
    /// The port on the host, the one the policy judges.
    pub published: u16,
    /// The container's port the published one is forwarded to.
    pub target: u16,
    /// The protocol as Docker names it: `tcp`, `udp` or `sctp`.
    pub proto: String,
}

/// A publication and the policy's verdict on it.
#[derive(Clone, Debug, Serialize)]
pub struct Judged {
    /// The publication judged.
    #[serde(flatten)]
    pub publication: Publication,
    /// "open", "open to `<sources>`", "blocked by policy", "loopback only", "no policy".
    pub verdict: String,
    /// Whether the policy drops new connections to it from outside.
    pub blocked: bool,
}

impl std::fmt::Display for Judged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &self.publication;
        let ip = if p.ip.is_empty() { "0.0.0.0" } else { &p.ip };
        let ip = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_string()
        };
        write!(
            f,
            "`{}` ({}) publishes {ip}:{}→{}/{}: {}",
            p.name, p.kind, p.published, p.target, p.proto, self.verdict
        )
    }
}

/// The policy's verdict on `p` (`None`: no policy in force).
pub fn judge(policy: Option<&PortPolicy>, p: Publication) -> Judged {
    let loopback = p.ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    let (verdict, blocked) = if loopback {
        (
            "loopback only: not reachable from outside".to_string(),
            false,
        )
    } else {
        match policy {
            None => ("open (no port policy in force)".to_string(), false),
            Some(policy) => match policy.reach(p.published, &p.proto) {
                Reach::Open => ("open".to_string(), false),
                Reach::From(nets) => (
                    format!(
                        "open to {}",
                        nets.iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    false,
                ),
                Reach::Blocked => ("blocked by policy".to_string(), true),
            },
        }
    };
    Judged {
        publication: p,
        verdict,
        blocked,
    }
}

/// Every port the running containers and the Swarm services publish. Containers of a Swarm
/// service published through the ingress mesh publish nothing themselves; the service does.
pub async fn publications(docker: &Docker) -> Result<Vec<Publication>, String> {
    let containers = docker
        .list_containers(Some(ListContainersOptions::default()))
        .await
        .map_err(|e| format!("cannot list containers: {e}"))?;
    let mut out = Vec::new();
    for c in containers {
        let name = c
            .names
            .as_ref()
            .and_then(|n| n.first())
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_else(|| c.id.clone().unwrap_or_default());
        for port in c.ports.iter().flatten() {
            let Some(published) = port.public_port else {
                continue;
            };
            out.push(Publication {
                name: name.clone(),
                kind: "container".into(),
                ip: port.ip.clone().unwrap_or_default(),
                published,
                target: port.private_port,
                proto: port
                    .typ
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "tcp".into()),
            });
        }
    }
    // Not a Swarm manager (or no Swarm): no services to list.
    if let Ok(services) = docker
        .list_services(Some(ListServicesOptions::default()))
        .await
    {
        for s in services {
            let name = s
                .spec
                .as_ref()
                .and_then(|s| s.name.clone())
                .unwrap_or_default();
            for port in s.endpoint.iter().flat_map(|e| e.ports.iter().flatten()) {
                let (Some(published), Some(target)) = (port.published_port, port.target_port)
                else {
                    continue;
                };
                let mode = port
                    .publish_mode
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| "ingress".into());
                out.push(Publication {
                    name: name.clone(),
                    kind: format!("service, {mode}"),
                    ip: String::new(),
                    published: published as u16,
                    target: target as u16,
                    proto: port
                        .protocol
                        .map(|p| p.to_string())
                        .unwrap_or_else(|| "tcp".into()),
                });
            }
        }
    }
    out.sort_by(|a, b| (&a.name, a.published, &a.proto).cmp(&(&b.name, b.published, &b.proto)));
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::policy::PortsTable;

    fn publication(ip: &str, published: u16, target: u16, proto: &str) -> Publication {
        Publication {
            name: "web".into(),
            kind: "container".into(),
            ip: ip.into(),
            published,
            target,
            proto: proto.into(),
        }
    }

    #[test]
    fn verdicts_go_by_the_published_port() {
        let p: PortsTable = toml::from_str(
            "interfaces = [\"eth0\"]\nopen = [\"443/tcp\"]\n\
             allow = [{ ports = [\"9443/tcp\"], from = [\"203.0.113.0/24\"] }]",
        )
        .unwrap();
        let p = p.resolve().unwrap();
        let j = judge(Some(&p), publication("0.0.0.0", 8080, 80, "tcp"));
        assert!(j.blocked);
        assert_eq!(
            j.to_string(),
            "`web` (container) publishes 0.0.0.0:8080→80/tcp: blocked by policy"
        );
        let j = judge(Some(&p), publication("::", 443, 8443, "tcp"));
        assert!(!j.blocked);
        assert_eq!(j.verdict, "open");
        assert!(j.to_string().contains("[::]:443→8443/tcp"));
        assert!(judge(Some(&p), publication("0.0.0.0", 443, 443, "udp")).blocked);
        assert_eq!(
            judge(Some(&p), publication("", 9443, 9443, "tcp")).verdict,
            "open to 203.0.113.0/24"
        );
        let j = judge(Some(&p), publication("127.0.0.1", 8080, 80, "tcp"));
        assert!(!j.blocked && j.verdict.starts_with("loopback only"));
        assert!(!judge(None, publication("0.0.0.0", 8080, 80, "tcp")).blocked);
    }
}
