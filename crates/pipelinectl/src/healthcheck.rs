//! `pipelinectl healthcheck`: exits 0 when a service's health endpoint answers 200.
//! The container's HEALTHCHECK, so the image needs no curl and no shell.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use clap::Args;

/// What the container health checks of the image, the ECS tasks and Beanstalk ask.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080/healthz";

/// Which endpoint to ask.
#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// The endpoint, `http://host:port/path`. `/healthz` (the process answers), not
    /// `/readyz`: a service waiting at start for a cold Redshift Serverless is not
    /// ready for minutes, and a container that fails its check is replaced.
    #[arg(long, env = "HEALTHCHECK_URL", default_value = DEFAULT_URL)]
    pub url: String,

    /// How long to wait for the answer.
    #[arg(long, env = "HEALTHCHECK_TIMEOUT_MS", default_value_t = 3000)]
    pub timeout_ms: u64,
}

/// `http://host:port/path` → (`host:port`, `/path`).
fn split_url(url: &str) -> Result<(&str, &str), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("HEALTHCHECK_URL {url:?} is not http://host:port/path"))?;
    Ok(match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    })
}

/// The status code of a GET of `url`.
pub fn status(args: &HealthcheckArgs) -> Result<u16, String> {
    let (authority, path) = split_url(&args.url)?;
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let address = authority
        .to_socket_addrs()
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    let mut stream = TcpStream::connect_timeout(&address, timeout).map_err(|e| format!("{authority}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut head = [0u8; 32];
    let read = stream.read(&mut head).map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&head[..read]);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {line:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_authority_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:8080/readyz"),
            Ok(("127.0.0.1:8080", "/readyz"))
        );
        assert_eq!(split_url("http://localhost:80"), Ok(("localhost:80", "/")));
        assert!(split_url("https://x/").is_err());
    }

    #[test]
    fn a_closed_port_is_an_error_not_a_hang() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = free.local_addr().expect("addr");
        drop(free);
        let args = HealthcheckArgs {
            url: format!("http://{address}/readyz"),
            timeout_ms: 500,
        };
        assert!(status(&args).is_err());
    }
}
