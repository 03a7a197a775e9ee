//! Cloudflare's proxy ranges as Cloudflare publishes them (`GET /ips`, no credential), so that
//! a range added after this build is never banned either.

use ipnet::IpNet;
use serde_json::Value;

/// The ranges `GET {api}/ips` lists. Refused unless plausible: an answer that would make
/// whole swathes of the internet unbannable (a /7, a ::/15, hundreds of ranges) is not
/// Cloudflare's.
pub fn fetch(api: &str) -> Result<Vec<IpNet>, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(20)))
        .build()
        .into();
    let url = format!("{}/ips", api.trim_end_matches('/'));
    let text = agent
        .get(&url)
        .call()
        .map_err(|e| format!("GET {url}: {e}"))?
        .into_body()
        .read_to_string()
        .map_err(|e| format!("GET {url}: {e}"))?;
    parse(&text)
}

/// The ranges of a `GET /ips` answer (`result.ipv4_cidrs` and `result.ipv6_cidrs`),
/// truncated to their networks. Refused unless plausible: none wider than a /8 (IPv4) or a
/// /16 (IPv6), and between 1 and 200 of them.
pub fn parse(text: &str) -> Result<Vec<IpNet>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let mut out = Vec::new();
    for key in ["ipv4_cidrs", "ipv6_cidrs"] {
        for r in v["result"][key].as_array().into_iter().flatten() {
            let n: IpNet = r
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("{r} is not a network"))?;
            let plausible = match n {
                IpNet::V4(n) => n.prefix_len() >= 8,
                IpNet::V6(n) => n.prefix_len() >= 16,
            };
            if !plausible {
                return Err(format!("{n} is too wide to be Cloudflare's"));
            }
            out.push(n.trunc());
        }
    }
    if out.is_empty() || out.len() > 200 {
        return Err(format!("{} ranges: not a plausible answer", out.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implausible_answers_are_refused() {
        let ok = r#"{"result":{"ipv4_cidrs":["173.245.48.0/20"],"ipv6_cidrs":["2400:cb00::/32"]},"success":true}"#;
        assert_eq!(parse(ok).unwrap().len(), 2);
        assert!(parse(r#"{"result":{"ipv4_cidrs":["0.0.0.0/0"]}}"#).is_err());
        assert!(parse(r#"{"result":{"ipv4_cidrs":[]}}"#).is_err());
        assert!(parse("<html>").is_err());
    }
}
