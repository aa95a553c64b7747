//! A forwarding proxy on loopback that puts a real emulator behind a flaky network:
//! it passes requests through, and on a share of them answers as an overloaded AWS
//! service would. Services pointed at it see throttling and server errors in the
//! exact wire shapes the AWS SDK classifies as retryable, and some of the failures
//! come after the emulator has carried the request out (the write happened, the
//! client never learns it), which is what makes retries dangerous.
//!
//! It is not a fake: every request that is not failed before forwarding is answered
//! by the real emulator.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// What the proxy did to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Refused before forwarding, as a throttled call (HTTP 400/503 with a throttling code).
    Throttled,
    /// Refused before forwarding with HTTP 500.
    ServerErrorBefore,
    /// Forwarded and carried out by the emulator, then answered with HTTP 500.
    ServerErrorAfter,
}

/// Requests seen and faults injected so far, counted as they happen.
#[derive(Debug, Default)]
pub struct FaultCounts {
    requests: AtomicU64,
    throttled: AtomicU64,
    failed_before: AtomicU64,
    failed_after: AtomicU64,
}

/// What [`FaultCounts`] held at one moment; tallies of several proxies add up.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FaultTally {
    pub requests: u64,
    pub throttled: u64,
    pub failed_before: u64,
    pub failed_after: u64,
}

impl FaultTally {
    /// Every injected fault.
    pub fn faults(&self) -> u64 {
        self.throttled + self.failed_before + self.failed_after
    }
}

impl std::ops::Add for FaultTally {
    type Output = FaultTally;

    fn add(self, other: FaultTally) -> FaultTally {
        FaultTally {
            requests: self.requests + other.requests,
            throttled: self.throttled + other.throttled,
            failed_before: self.failed_before + other.failed_before,
            failed_after: self.failed_after + other.failed_after,
        }
    }
}

impl FaultCounts {
    pub fn tally(&self) -> FaultTally {
        FaultTally {
            requests: self.requests.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            failed_before: self.failed_before.load(Ordering::Relaxed),
            failed_after: self.failed_after.load(Ordering::Relaxed),
        }
    }
}

struct Proxy {
    upstream: String,
    fault_rate: f64,
    rng: Mutex<fastrand::Rng>,
    client: Client<HttpConnector, Full<bytes::Bytes>>,
    counts: Arc<FaultCounts>,
}

/// A running proxy; it stops when dropped.
pub struct FaultProxy {
    pub addr: SocketAddr,
    pub counts: Arc<FaultCounts>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`http://host:port`),
    /// failing `fault_rate` of the requests (0..1), chosen by a generator seeded with `seed`.
    pub async fn start(upstream: &str, fault_rate: f64, seed: u64) -> std::io::Result<Self> {
        let counts = Arc::new(FaultCounts::default());
        let proxy = Arc::new(Proxy {
            upstream: upstream.trim_end_matches('/').to_string(),
            fault_rate,
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            client: Client::builder(TokioExecutor::new()).build_http(),
            counts: counts.clone(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new().fallback(forward).with_state(proxy);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, counts, task })
    }

    /// The proxy's endpoint, for `AWS_ENDPOINT_URL*`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    fn draw(&self) -> Option<Fault> {
        let mut rng = self.rng.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if rng.f64() >= self.fault_rate {
            return None;
        }
        Some(match rng.u8(..10) {
            0..=3 => Fault::Throttled,
            4..=6 => Fault::ServerErrorBefore,
            _ => Fault::ServerErrorAfter,
        })
    }
}

/// The three wire protocols behind the emulators, told apart by their requests.
#[derive(Debug, Clone, Copy)]
enum Protocol {
    /// awsJson (Kinesis, DynamoDB, DynamoDB Streams): `X-Amz-Target` names the operation.
    Json,
    /// awsQuery (CloudWatch): a form body.
    Query,
    /// restXml (S3).
    RestXml,
}

impl Protocol {
    fn of(request: &Request) -> Self {
        if request.headers().contains_key("x-amz-target") {
            Protocol::Json
        } else if request
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/x-www-form-urlencoded"))
        {
            Protocol::Query
        } else {
            Protocol::RestXml
        }
    }

    fn error(self, fault: Fault) -> Response {
        let message = "injected by the chaos proxy";
        let (status, code) = match (self, fault) {
            (Protocol::Json, Fault::Throttled) => (StatusCode::BAD_REQUEST, "ProvisionedThroughputExceededException"),
            (Protocol::Query, Fault::Throttled) => (StatusCode::BAD_REQUEST, "Throttling"),
            (Protocol::RestXml, Fault::Throttled) => (StatusCode::SERVICE_UNAVAILABLE, "SlowDown"),
            (Protocol::Json, _) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure"),
            (_, _) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        };
        let (content_type, body) = match self {
            Protocol::Json => (
                "application/x-amz-json-1.1",
                serde_json::json!({ "__type": code, "message": message }).to_string(),
            ),
            Protocol::Query => (
                "text/xml",
                format!(
                    "<ErrorResponse><Error><Type>Receiver</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>chaos</RequestId></ErrorResponse>"
                ),
            ),
            Protocol::RestXml => (
                "application/xml",
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message><RequestId>chaos</RequestId></Error>"
                ),
            ),
        };
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    }
}

fn bad_gateway(error: impl std::fmt::Display) -> Response {
    let mut response = Response::new(Body::from(format!("chaos proxy: upstream failed: {error}")));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

async fn forward(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    proxy.counts.requests.fetch_add(1, Ordering::Relaxed);
    let protocol = Protocol::of(&request);
    let fault = proxy.draw();
    match fault {
        Some(Fault::Throttled) => {
            proxy.counts.throttled.fetch_add(1, Ordering::Relaxed);
            return protocol.error(Fault::Throttled);
        }
        Some(Fault::ServerErrorBefore) => {
            proxy.counts.failed_before.fetch_add(1, Ordering::Relaxed);
            return protocol.error(Fault::ServerErrorBefore);
        }
        _ => {}
    }
    let (mut parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => return bad_gateway(error),
    };
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    parts.uri = match format!("{}{path}", proxy.upstream).parse() {
        Ok(uri) => uri,
        Err(error) => return bad_gateway(error),
    };
    // The Host header stays the one the client signed.
    let response = match proxy
        .client
        .request(http::Request::from_parts(parts, Full::new(body)))
        .await
    {
        Ok(response) => response,
        Err(error) => return bad_gateway(error),
    };
    if fault == Some(Fault::ServerErrorAfter) {
        // The emulator has done the work; read its answer to the end and drop it.
        let _ = response.into_body().collect().await;
        proxy.counts.failed_after.fetch_add(1, Ordering::Relaxed);
        return protocol.error(Fault::ServerErrorAfter);
    }
    response.map(Body::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_of_draws_fail_in_every_way() {
        let proxy = Proxy {
            upstream: String::new(),
            fault_rate: 0.1,
            rng: Mutex::new(fastrand::Rng::with_seed(7)),
            client: Client::builder(TokioExecutor::new()).build_http(),
            counts: Arc::default(),
        };
        let draws: Vec<Option<Fault>> = (0..10_000).map(|_| proxy.draw()).collect();
        let failed = draws.iter().filter(|d| d.is_some()).count();
        assert!((800..1200).contains(&failed), "{failed} of 10000 failed");
        for fault in [Fault::Throttled, Fault::ServerErrorBefore, Fault::ServerErrorAfter] {
            assert!(draws.contains(&Some(fault)), "{fault:?} is drawn");
        }
    }
}
