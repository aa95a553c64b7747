//! Who may ask: only requests addressed to this server by a name it knows, and none a
//! page of another site makes. Binding loopback does not stop a web page elsewhere from
//! reaching `127.0.0.1`: through DNS rebinding (its own name resolving to 127.0.0.1, so
//! the browser lets it read the answers) it arrives with a Host header of that name,
//! and through `<img src=http://127.0.0.1:8080/heatmap.png?…>` it arrives marked
//! `Sec-Fetch-Site: cross-site` (or `same-site` from another port of localhost).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// A SERVE_ALLOWED_HOSTS entry that is not a host name.
#[derive(Debug, thiserror::Error)]
#[error("SERVE_ALLOWED_HOSTS: {0:?} is not a host name or host:port (like live.example.com or live.example.com:8443)")]
pub struct BadHost(pub String);

/// The Host header values this server answers.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    /// Names answered on the port it listens on (`localhost`, the loopback and bound
    /// addresses), lower case, IPv6 in brackets.
    local: Vec<String>,
    port: u16,
    /// SERVE_ALLOWED_HOSTS: `name` (any port) or `name:port`, lower case.
    extra: Vec<(String, Option<u16>)>,
}

impl AllowedHosts {
    /// For a server listening on `bound`, with SERVE_ALLOWED_HOSTS' `extra` entries.
    pub fn new(bound: SocketAddr, extra: &[String]) -> Result<Self, BadHost> {
        let mut local = vec!["localhost".to_string(), "127.0.0.1".to_string(), "[::1]".to_string()];
        let ip = match bound {
            SocketAddr::V4(v4) => v4.ip().to_string(),
            SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
        };
        if !local.contains(&ip) {
            local.push(ip);
        }
        let extra = extra
            .iter()
            .map(|entry| entry.trim())
            .filter(|entry| !entry.is_empty())
            .map(|entry| split(&entry.to_ascii_lowercase()).ok_or_else(|| BadHost(entry.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            local,
            port: bound.port(),
            extra,
        })
    }

    /// Whether a request with this Host header is for this server.
    pub fn allows(&self, host: &str) -> bool {
        let Some((name, port)) = split(&host.to_ascii_lowercase()) else {
            return false;
        };
        // No port in the Host header is the scheme's default: 80 (TLS ends at a proxy).
        let port = port.unwrap_or(80);
        (port == self.port && self.local.contains(&name))
            || self
                .extra
                .iter()
                .any(|(allowed, allowed_port)| *allowed == name && allowed_port.is_none_or(|p| p == port))
    }
}

/// `name[:port]` (IPv6 in brackets) as its name and port; `None` if it is not one.
fn split(host: &str) -> Option<(String, Option<u16>)> {
    let (name, port) = match host.rfind(':') {
        Some(colon) if !host[colon..].contains(']') => (&host[..colon], Some(host[colon + 1..].parse().ok()?)),
        _ => (host, None),
    };
    let bracketed = name.starts_with('[') && name.ends_with(']') && name.len() > 2;
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    (bracketed || plain).then(|| (name.to_string(), port))
}

/// A request's refusal: 421 for a Host this server does not answer, 403 for a request
/// another site's page made. A link from another site to the page itself (a top-level
/// navigation to `/`) is let through: it can read nothing and start no query.
pub fn refusal(
    hosts: &AllowedHosts,
    host: Option<&str>,
    fetch_site: Option<&str>,
    fetch_mode: Option<&str>,
    path: &str,
) -> Option<(StatusCode, String)> {
    match host {
        Some(host) if hosts.allows(host) => {}
        Some(host) => {
            return Some((
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "this server does not answer for Host {host:?}: open it as http://localhost:{}/, or list the name in SERVE_ALLOWED_HOSTS (a reverse proxy's public name)\n",
                    hosts.port
                ),
            ));
        }
        None => return Some((StatusCode::BAD_REQUEST, "a request needs a Host header\n".into())),
    }
    let page_opened = fetch_mode == Some("navigate") && path == "/";
    // `same-site` too: a page on another port of localhost, or a sibling subdomain.
    let elsewhere = matches!(fetch_site, Some("cross-site" | "same-site"));
    if elsewhere && !page_opened {
        return Some((
            StatusCode::FORBIDDEN,
            format!(
                "refused: a page elsewhere asked (Sec-Fetch-Site: {}); open the live page itself\n",
                fetch_site.unwrap_or_default()
            ),
        ));
    }
    None
}

/// The middleware: [`refusal`]'s answer, or the route's.
pub async fn check(State(hosts): State<Arc<AllowedHosts>>, request: Request, next: Next) -> Response {
    let refused = {
        let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
        // HTTP/2 carries the host in the URI's authority, HTTP/1.1 in the Host header.
        let host = request
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| header(header::HOST.as_str()));
        refusal(
            &hosts,
            host,
            header("sec-fetch-site"),
            header("sec-fetch-mode"),
            request.uri().path(),
        )
    };
    match refused {
        Some((status, message)) => {
            (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response()
        }
        None => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(bound: &str, extra: &[&str]) -> AllowedHosts {
        let extra: Vec<String> = extra.iter().map(|e| e.to_string()).collect();
        AllowedHosts::new(bound.parse().expect("address"), &extra).expect("hosts")
    }

    #[test]
    fn only_the_names_of_this_server_on_its_port_are_answered() {
        let loopback = hosts("127.0.0.1:8080", &[]);
        for ok in ["127.0.0.1:8080", "localhost:8080", "LOCALHOST:8080", "[::1]:8080"] {
            assert!(loopback.allows(ok), "{ok}");
        }
        for refused in [
            "attacker.example:8080",
            "127.0.0.1.attacker.example:8080",
            "localhost:8081",
            "localhost",
            "127.0.0.1",
            "",
            "localhost:",
            "localhost:99999",
            "local host:8080",
            "localhost:8080/evil",
        ] {
            assert!(!loopback.allows(refused), "{refused}");
        }
        let bound = hosts("10.0.3.7:80", &[]);
        assert!(bound.allows("10.0.3.7:80") && bound.allows("10.0.3.7") && bound.allows("localhost"));
        assert!(!bound.allows("10.0.3.8"));
        let v6 = hosts("[::1]:9000", &[]);
        assert!(v6.allows("[::1]:9000") && !v6.allows("[::2]:9000"));
    }

    #[test]
    fn allowed_hosts_add_a_proxys_name_on_any_port_or_one() {
        let proxied = hosts("127.0.0.1:8080", &["Live.Example.com", " ops.example.com:8443 ", ""]);
        assert!(proxied.allows("live.example.com"));
        assert!(proxied.allows("live.example.com:443"));
        assert!(proxied.allows("ops.example.com:8443"));
        assert!(!proxied.allows("ops.example.com"), "another port than the one listed");
        assert!(!proxied.allows("evil.example.com"));
        assert!(proxied.allows("localhost:8080"), "the loopback names still work");
        for bad in [
            "http://live.example.com",
            "live.example.com/x",
            "live.example.com:port",
            "a b",
        ] {
            let error =
                AllowedHosts::new("127.0.0.1:8080".parse().expect("address"), &[bad.to_string()]).expect_err(bad);
            assert!(error.to_string().starts_with("SERVE_ALLOWED_HOSTS: "), "{error}");
        }
    }

    #[test]
    fn a_rebound_name_or_another_sites_request_is_refused_and_says_why() {
        let hosts = hosts("127.0.0.1:8080", &["live.example.com"]);
        let answer = |host: Option<&str>, site: Option<&str>, mode: Option<&str>, path: &str| {
            refusal(&hosts, host, site, mode, path)
        };
        assert_eq!(answer(Some("localhost:8080"), None, None, "/api/levels"), None);
        assert_eq!(answer(Some("live.example.com"), None, None, "/"), None);
        let (status, text) = answer(Some("rebound.attacker.example:8080"), None, None, "/api/levels").expect("refused");
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
        assert!(
            text.contains("\"rebound.attacker.example:8080\"") && text.contains("SERVE_ALLOWED_HOSTS"),
            "{text}"
        );
        assert_eq!(
            answer(None, None, None, "/").map(|r| r.0),
            Some(StatusCode::BAD_REQUEST)
        );
        // An <img> or fetch() of another site's page, aimed at the loopback address.
        let (status, text) = answer(
            Some("127.0.0.1:8080"),
            Some("cross-site"),
            Some("no-cors"),
            "/heatmap.png",
        )
        .expect("refused");
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(text.contains("Sec-Fetch-Site: cross-site"), "{text}");
        // A link from another site opens the page; it cannot open a query that way.
        assert_eq!(
            answer(Some("127.0.0.1:8080"), Some("cross-site"), Some("navigate"), "/"),
            None
        );
        assert_eq!(
            answer(
                Some("127.0.0.1:8080"),
                Some("cross-site"),
                Some("navigate"),
                "/heatmap.png"
            )
            .map(|r| r.0),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            answer(Some("127.0.0.1:8080"), Some("same-origin"), Some("cors"), "/api/health"),
            None
        );
        // Another port of localhost is the same site, not the same origin.
        let (status, text) = answer(
            Some("127.0.0.1:8080"),
            Some("same-site"),
            Some("no-cors"),
            "/heatmap.png",
        )
        .expect("refused");
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(text.contains("Sec-Fetch-Site: same-site"), "{text}");
        assert_eq!(
            answer(Some("127.0.0.1:8080"), Some("none"), Some("navigate"), "/"),
            None
        );
    }
}
