//! Choosing and reaching the warehouse, from env vars and flags.

use clap::{Args, ValueEnum};

use crate::Warehouse;
use crate::postgres::{PostgresWarehouse, Tls};
use crate::redshift_data::{RedshiftDataWarehouse, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// The PostgreSQL wire protocol: a Redshift endpoint on port 5439, or PostgreSQL.
    Postgres,
    /// The Redshift Data API (IAM or a Secrets Manager secret; no network path needed).
    RedshiftData,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsMode {
    Disable,
    Require,
}

/// Where the warehouse is.
#[derive(Debug, Clone, Args)]
pub struct WarehouseArgs {
    /// Warehouse back end: `postgres` (wire protocol) or `redshift-data` (the Redshift Data API).
    #[arg(long, env = "WAREHOUSE_BACKEND", value_enum, default_value = "postgres")]
    pub warehouse_backend: Backend,

    /// For `postgres`: the connection URL, `postgres://user:password@host:port/database`.
    #[arg(long, env = "WAREHOUSE_URL")]
    pub warehouse_url: Option<String>,

    /// For `postgres`: `require` TLS (a Redshift endpoint) or `disable` it (a local PostgreSQL).
    #[arg(long, env = "WAREHOUSE_TLS", value_enum, default_value = "require")]
    pub warehouse_tls: TlsMode,

    /// For `redshift-data`: the provisioned cluster (or set REDSHIFT_WORKGROUP).
    #[arg(long, env = "REDSHIFT_CLUSTER_ID")]
    pub redshift_cluster_id: Option<String>,

    /// For `redshift-data`: the Redshift Serverless workgroup (or set REDSHIFT_CLUSTER_ID).
    #[arg(long, env = "REDSHIFT_WORKGROUP")]
    pub redshift_workgroup: Option<String>,

    /// For `redshift-data`: the database.
    #[arg(long, env = "REDSHIFT_DATABASE", default_value = "dev")]
    pub redshift_database: String,

    /// For `redshift-data` on a cluster: the database user for IAM authentication.
    #[arg(long, env = "REDSHIFT_DB_USER")]
    pub redshift_db_user: Option<String>,

    /// For `redshift-data`: the Secrets Manager secret holding the database credentials.
    #[arg(long, env = "REDSHIFT_SECRET_ARN")]
    pub redshift_secret_arn: Option<String>,

    /// For `redshift-data`: the IAM role Redshift assumes to COPY from the bucket.
    #[arg(long, env = "REDSHIFT_COPY_ROLE_ARN")]
    pub redshift_copy_role_arn: Option<String>,

    /// Longest a statement may run before the warehouse cancels it, in milliseconds,
    /// loads included (a load cancelled is retried, so keep it above the longest
    /// load: leave it unset for the connectors). Unset: the server's own limit on
    /// `postgres`, 900 s on `redshift-data`. `pipelinectl serve` sets its own.
    #[arg(long, env = "WAREHOUSE_STATEMENT_TIMEOUT_MS",
          value_parser = clap::value_parser!(u64).range(100..=86_400_000))]
    pub warehouse_statement_timeout_ms: Option<u64>,
}

/// A setting the chosen back end needs is missing; the message names the variable.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct WarehouseConfigError(String);

impl WarehouseArgs {
    /// Checks the settings and builds the back end (no connection is made yet).
    pub fn open(
        &self,
        s3: aws_sdk_s3::Client,
        redshift_data: impl FnOnce() -> aws_sdk_redshiftdata::Client,
    ) -> Result<Warehouse, WarehouseConfigError> {
        let missing = |var: &str| {
            WarehouseConfigError(format!(
                "{var} is required with WAREHOUSE_BACKEND={}",
                self.backend_name()
            ))
        };
        match self.warehouse_backend {
            Backend::Postgres => {
                let url = self.warehouse_url.as_deref().ok_or_else(|| missing("WAREHOUSE_URL"))?;
                let tls = match self.warehouse_tls {
                    TlsMode::Disable => Tls::Disable,
                    TlsMode::Require => Tls::Require,
                };
                // A URL that cannot work fails here, naming the variable, not at the first load.
                url.parse::<tokio_postgres::Config>()
                    .map_err(|e| WarehouseConfigError(format!("WAREHOUSE_URL: {e}")))?;
                Ok(Warehouse::Postgres(
                    PostgresWarehouse::new(url, tls, s3).with_statement_timeout(self.statement_timeout()),
                ))
            }
            Backend::RedshiftData => {
                let target = match (&self.redshift_cluster_id, &self.redshift_workgroup) {
                    (Some(cluster_id), None) => {
                        if self.redshift_db_user.is_none() && self.redshift_secret_arn.is_none() {
                            return Err(WarehouseConfigError(
                                "REDSHIFT_DB_USER or REDSHIFT_SECRET_ARN is required with REDSHIFT_CLUSTER_ID".into(),
                            ));
                        }
                        Target::Cluster {
                            cluster_id: cluster_id.clone(),
                            database: self.redshift_database.clone(),
                            db_user: self.redshift_db_user.clone(),
                            secret_arn: self.redshift_secret_arn.clone(),
                        }
                    }
                    (None, Some(workgroup)) => Target::Workgroup {
                        workgroup: workgroup.clone(),
                        database: self.redshift_database.clone(),
                        secret_arn: self.redshift_secret_arn.clone(),
                    },
                    _ => {
                        return Err(WarehouseConfigError(
                            "exactly one of REDSHIFT_CLUSTER_ID and REDSHIFT_WORKGROUP is required with WAREHOUSE_BACKEND=redshift-data".into(),
                        ));
                    }
                };
                let role = self
                    .redshift_copy_role_arn
                    .as_deref()
                    .ok_or_else(|| missing("REDSHIFT_COPY_ROLE_ARN"))?;
                let warehouse = RedshiftDataWarehouse::new(redshift_data(), target, s3, role);
                Ok(Warehouse::RedshiftData(match self.statement_timeout() {
                    Some(timeout) => warehouse.with_statement_timeout(timeout),
                    None => warehouse,
                }))
            }
        }
    }

    fn statement_timeout(&self) -> Option<std::time::Duration> {
        self.warehouse_statement_timeout_ms
            .map(std::time::Duration::from_millis)
    }

    fn backend_name(&self) -> &'static str {
        match self.warehouse_backend {
            Backend::Postgres => "postgres",
            Backend::RedshiftData => "redshift-data",
        }
    }
}
