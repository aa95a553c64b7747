//! `pipelinectl serve`: the live page for a game's team. Read-only: players per level
//! now, the busiest moves of the last hour, a level's heat map, the pipeline's health.
//!
//! - [`assets`]: the page (HTML, script, style, compiled in) and the headers every
//!   answer carries;
//! - [`live`]: `/api/levels` and `/api/transitions`, from the live-state tables;
//! - [`health`]: `/api/health`, from the lake and the warehouse, as `summary` reads them;
//! - [`heatmap`]: `/heatmap.png`, `heatmap`'s query drawn in memory;
//! - [`store`]: a store's answer or why it is down, each call bounded in time, a recent
//!   answer shared by the requests that come soon after it;
//! - [`guard`]: only requests addressed to this server by a name it knows, and none
//!   another site's page makes (DNS rebinding, cross-site images).
//!
//! Every panel reads its own stores, so a store that is down shows as down on its
//! panels while the others keep updating.

pub mod assets;
pub mod guard;
pub mod health;
pub mod heatmap;
pub mod live;
pub mod store;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use clap::Args;
use tokio_util::sync::CancellationToken;
use warehouse::{Warehouse, WarehouseArgs};

use crate::generate::workload::{MAP_HEIGHT, MAP_WIDTH};
use crate::summary::{self, StoreArgs};

/// What `serve` reads and where it listens.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on. Loopback by default: the page has no login of its own. For
    /// wider access keep it on loopback (or a private subnet) and put an authenticating
    /// reverse proxy in front, such as an ALB with OIDC or Cognito, or nginx with auth.
    /// The page is read-only: it changes nothing in any store.
    #[arg(long, env = "SERVE_ADDRESS", default_value = "127.0.0.1:8080")]
    pub address: SocketAddr,

    /// Host names the page answers besides its own address, `localhost`, `127.0.0.1`
    /// and `[::1]` on its port: a reverse proxy's public name, `name` (any port) or
    /// `name:port`, comma-separated. A request for any other Host gets 421 and one a page
    /// of another site makes (Sec-Fetch-Site: cross-site) 403, so neither DNS rebinding
    /// nor another site's images reach the stores.
    #[arg(long, env = "SERVE_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,

    /// The lake (the health panel's objects and rejects) and the live-state tables.
    #[command(flatten)]
    pub stores: StoreArgs,

    /// How many transitions of the last hour the flow picture shows, busiest first.
    #[arg(long, env = "SERVE_TOP_TRANSITIONS", default_value_t = 12,
          value_parser = clap::value_parser!(u16).range(1..=100))]
    pub top_transitions: u16,

    /// Longest wait for one store's answer; past it the store shows as down. A warehouse
    /// query goes on until the warehouse ends it (one health query and two heat maps
    /// at most run at once, each until then).
    #[arg(long, env = "SERVE_STORE_TIMEOUT_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(100..=120_000))]
    pub store_timeout_ms: u64,

    /// Width of a level in game units (heat map positions run from 0 to this).
    #[arg(long, env = "SERVE_MAP_WIDTH", default_value_t = MAP_WIDTH)]
    pub map_width: f64,

    /// Height of a level in game units.
    #[arg(long, env = "SERVE_MAP_HEIGHT", default_value_t = MAP_HEIGHT)]
    pub map_height: f64,

    /// A folder of level pictures named `<level_id>.png` (as in sample-data/), drawn
    /// under that level's heat map.
    #[arg(long, env = "SERVE_LEVEL_PICTURES")]
    pub level_pictures: Option<PathBuf>,

    #[command(flatten)]
    pub warehouse: WarehouseArgs,
}

/// Why the page could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on SERVE_ADDRESS {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("SERVE_LEVEL_PICTURES {}: {source}", dir.display())]
    Pictures { dir: PathBuf, source: std::io::Error },
    #[error("SERVE_MAP_WIDTH and SERVE_MAP_HEIGHT must be positive")]
    MapSize,
    #[error(transparent)]
    AllowedHosts(#[from] guard::BadHost),
    #[error(transparent)]
    WarehouseConfig(#[from] warehouse::config::WarehouseConfigError),
    /// The warehouse refused the settings (a login, a database or a privilege denied):
    /// no retry changes that.
    #[error("the warehouse refuses serve's settings (WAREHOUSE_* / REDSHIFT_*): {0}")]
    WarehouseRefused(warehouse::WarehouseError),
    #[error("serving the live page: {0}")]
    Serve(std::io::Error),
}

/// What the handlers share: the stores, the settings, and the recent answers.
pub struct Page {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub s3: aws_sdk_s3::Client,
    /// The warehouse, or why it is not there (none configured): then it shows as down
    /// and the rest of the page works.
    pub warehouse: Result<Warehouse, String>,
    pub args: ServeArgs,
    /// Level id → its picture, from SERVE_LEVEL_PICTURES read once at start (a level
    /// id from a request is only ever looked up here, never made into a path).
    pub pictures: BTreeMap<String, PathBuf>,
    pub live: live::Live,
    pub health: health::HealthState,
    pub heatmaps: heatmap::Limit,
}

impl Page {
    pub fn new(
        aws: &pipeline_runtime::AwsClients,
        warehouse: Result<Warehouse, String>,
        args: ServeArgs,
    ) -> Result<Self, ServeError> {
        if !(args.map_width > 0.0 && args.map_height > 0.0) {
            return Err(ServeError::MapSize);
        }
        // Checked before binding; built again for the port bound.
        guard::AllowedHosts::new(args.address, &args.allowed_hosts)?;
        let pictures = match &args.level_pictures {
            Some(dir) => pictures_in(dir).map_err(|source| ServeError::Pictures {
                dir: dir.clone(),
                source,
            })?,
            None => BTreeMap::new(),
        };
        Ok(Self {
            dynamodb: aws.dynamodb(),
            s3: aws.s3(),
            warehouse,
            args,
            pictures,
            live: live::Live::default(),
            health: health::HealthState::default(),
            heatmaps: heatmap::Limit::default(),
        })
    }

    pub fn store_timeout(&self) -> Duration {
        Duration::from_millis(self.args.store_timeout_ms)
    }
}

/// The warehouse `serve` reads, or why there is none (no WAREHOUSE_URL with the
/// `postgres` back end): then its panels show as down. Settings that contradict each
/// other, or that the warehouse refuses, stop the start naming the variable; one
/// first query (bounded by `timeout`) tells them from a warehouse that is only
/// unreachable now, which shows as down until it answers.
/// `open` is [`WarehouseArgs::open`] with the AWS clients.
pub async fn open_warehouse(
    args: &WarehouseArgs,
    timeout: Duration,
    open: impl FnOnce(&WarehouseArgs) -> Result<Warehouse, warehouse::config::WarehouseConfigError>,
) -> Result<Result<Warehouse, String>, ServeError> {
    if args.warehouse_backend == warehouse::config::Backend::Postgres && args.warehouse_url.is_none() {
        return Ok(Err(
            "not configured: set WAREHOUSE_URL (or WAREHOUSE_BACKEND=redshift-data)".into(),
        ));
    }
    // The warehouse cancels what the page stops waiting for, so an abandoned query
    // never holds the connection (or a Redshift slot) for the next one.
    let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let args = WarehouseArgs {
        warehouse_statement_timeout_ms: Some(args.warehouse_statement_timeout_ms.map_or(ms, |set| set.min(ms))),
        ..args.clone()
    };
    let warehouse = open(&args)?;
    match tokio::time::timeout(timeout, summary::read_totals_of(&warehouse)).await {
        Ok(Err(error)) if refuses_settings(&error) => Err(ServeError::WarehouseRefused(error)),
        Ok(Err(error)) => {
            tracing::warn!(%error, "warehouse unreachable at start: shown as down until it answers");
            Ok(Ok(warehouse))
        }
        Err(_) => {
            tracing::warn!(
                timeout_ms = timeout.as_millis() as u64,
                "warehouse silent at start: shown as down until it answers"
            );
            Ok(Ok(warehouse))
        }
        Ok(Ok(_)) => Ok(Ok(warehouse)),
    }
}

/// Whether the warehouse refused serve's settings for good (a login, a database or a
/// privilege), rather than not being set up yet: a warehouse without its tables (a
/// rollout where the page starts before `pipelinectl setup`) shows as down until it has
/// them.
fn refuses_settings(error: &warehouse::WarehouseError) -> bool {
    const UNDEFINED_TABLE: &str = "42P01";
    let not_set_up =
        matches!(error, warehouse::WarehouseError::Statement { sqlstate: Some(code), .. } if code == UNDEFINED_TABLE);
    pipeline_runtime::Classified::kind(error) == pipeline_runtime::ErrorKind::Fatal && !not_set_up
}

/// The `*.png` files of `dir` by file stem.
fn pictures_in(dir: &std::path::Path) -> std::io::Result<BTreeMap<String, PathBuf>> {
    let mut pictures = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"))
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            pictures.insert(stem.to_string(), path.clone());
        }
    }
    Ok(pictures)
}

/// Every route of the page, for the Host names of `hosts`. Only GET (and HEAD) are
/// answered; other methods get 405.
pub fn router(page: Arc<Page>, hosts: guard::AllowedHosts) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/app.js", get(assets::script))
        .route("/style.css", get(assets::style))
        .route("/api/levels", get(live::levels))
        .route("/api/transitions", get(live::transitions))
        .route("/api/health", get(health::health))
        .route("/heatmap.png", get(heatmap::heatmap))
        .fallback(assets::not_found)
        .with_state(page)
        .layer(axum::middleware::from_fn_with_state(Arc::new(hosts), guard::check))
        .layer(axum::middleware::map_response(assets::headers))
}

/// Binds `args.address`, logs where the page is, and serves it until `shutdown`, then
/// lets requests in flight finish.
pub async fn run(page: Page, shutdown: CancellationToken) -> Result<(), ServeError> {
    let address = page.args.address;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Bind { address, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { address, source })?;
    let hosts = guard::AllowedHosts::new(local, &page.args.allowed_hosts)?;
    if let Err(reason) = &page.warehouse {
        tracing::warn!(error = %reason, "no warehouse: the heat map and its health show as down");
    }
    tracing::info!(address = %local, url = %format!("http://{local}/"), "live page serving");
    axum::serve(listener, router(Arc::new(page), hosts))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(ServeError::Serve)?;
    tracing::info!("live page stopped");
    Ok(())
}
