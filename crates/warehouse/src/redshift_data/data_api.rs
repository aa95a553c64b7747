//! Every call this back end makes to the Redshift Data API, one function each, and
//! what their answers mean. The Data API is asynchronous: a statement is submitted,
//! its status is described until it ends, and its rows are read page by page.
//!
//! Limits: a statement's text is at most [`crate::sql::MAX_STATEMENT_CHARS`]
//! characters and a batch at most [`super::MAX_BATCH_STATEMENTS`] statements (the
//! callers size their statements). A result (at most 100 MB, kept for 24 hours) is
//! read page by page, following `NextToken` to the end.

use aws_sdk_redshiftdata::operation::batch_execute_statement::builders::BatchExecuteStatementFluentBuilder;
use aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementOutput;
use aws_sdk_redshiftdata::operation::execute_statement::builders::ExecuteStatementFluentBuilder;
use aws_sdk_redshiftdata::types::{Field, SqlParameter, StatementStatusString, StatusString};
use pipeline_runtime::error::{AwsError, ErrorKind};

use crate::WarehouseError;
use crate::query::Query;

/// The IAM actions of the calls below.
pub const IAM_ACTIONS: &[&str] = &[
    "redshift-data:BatchExecuteStatement",
    "redshift-data:ExecuteStatement",
    "redshift-data:DescribeStatement",
    "redshift-data:GetStatementResult",
    "redshift-data:CancelStatement",
];

/// Where statements run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A provisioned cluster, with a database user (IAM auth) or a secret.
    Cluster {
        cluster_id: String,
        database: String,
        db_user: Option<String>,
        secret_arn: Option<String>,
    },
    /// A Redshift Serverless workgroup (IAM auth, or a secret).
    Workgroup {
        workgroup: String,
        database: String,
        secret_arn: Option<String>,
    },
}

/// Points a Data API request at the target. (A macro: the request builders of
/// BatchExecuteStatement and ExecuteStatement share these setters but no trait.)
macro_rules! on_target {
    ($request:expr, $target:expr) => {
        match $target {
            Target::Cluster {
                cluster_id,
                database,
                db_user,
                secret_arn,
            } => $request
                .cluster_identifier(cluster_id)
                .database(database)
                .set_db_user(db_user.clone())
                .set_secret_arn(secret_arn.clone()),
            Target::Workgroup {
                workgroup,
                database,
                secret_arn,
            } => $request
                .workgroup_name(workgroup)
                .database(database)
                .set_secret_arn(secret_arn.clone()),
        }
    };
}

/// How a statement ended.
pub(super) enum Ended {
    Finished,
    /// FAILED or ABORTED.
    Failed {
        statement: String,
        message: String,
        /// The failing sub-statement of a batch: its index and its Redshift query id.
        sub_statement: Option<(usize, i64)>,
    },
}

impl Ended {
    /// A failed statement as an error. The Data API reports the failure as the
    /// server's text only, with no code to classify by: taken as passing, so that
    /// the caller's retries decide; the text is in the message for an operator.
    pub(super) fn into_result(self) -> Result<(), WarehouseError> {
        match self {
            Ended::Finished => Ok(()),
            Ended::Failed { statement, message, .. } => {
                Err(WarehouseError::statement(&statement, ErrorKind::Transient, message))
            }
        }
    }
}

/// What DescribeStatement says about a statement.
pub(super) struct Described {
    /// `None` while it is submitted, picked or started.
    pub ended: Option<Ended>,
    /// Rows each sub-statement of a batch affected, in order.
    pub sub_statement_rows: Vec<i64>,
}

/// The Data API client, aimed at one cluster or workgroup.
pub(super) struct DataApi {
    client: aws_sdk_redshiftdata::Client,
    target: Target,
}

impl DataApi {
    pub(super) fn new(client: aws_sdk_redshiftdata::Client, target: Target) -> Self {
        Self { client, target }
    }

    /// The BatchExecuteStatement request for `sqls` against the target: one transaction.
    pub(super) fn batch_request(&self, sqls: Vec<String>) -> BatchExecuteStatementFluentBuilder {
        let request = self
            .client
            .batch_execute_statement()
            .set_sqls(Some(sqls))
            .with_event(false);
        on_target!(request, &self.target)
    }

    /// The ExecuteStatement request for one statement on its own, outside any
    /// transaction (which VACUUM requires).
    pub(super) fn execute_request(&self, statement: &str) -> ExecuteStatementFluentBuilder {
        let request = self.client.execute_statement().sql(statement).with_event(false);
        on_target!(request, &self.target)
    }

    /// The ExecuteStatement request for one query with bound parameters (sent as
    /// named parameters, never spliced into the text).
    pub(super) fn query_request(&self, query: &Query) -> ExecuteStatementFluentBuilder {
        let parameters: Vec<SqlParameter> = query
            .parameters
            .iter()
            .filter_map(|(name, value)| SqlParameter::builder().name(*name).value(value.as_text()).build().ok())
            .collect();
        let request = self
            .client
            .execute_statement()
            .sql(&query.sql)
            .set_parameters((!parameters.is_empty()).then_some(parameters))
            .with_event(false);
        on_target!(request, &self.target)
    }

    /// ExecuteStatement: sends `request` (about `statement`, for errors); returns the
    /// statement id.
    pub(super) async fn submit(
        &self,
        request: ExecuteStatementFluentBuilder,
        statement: &str,
    ) -> Result<String, WarehouseError> {
        let output = request.send().await.map_err(|e| {
            WarehouseError::data_api(statement, AwsError::from_sdk("redshift-data:ExecuteStatement", e))
        })?;
        statement_id(output.id(), statement)
    }

    /// BatchExecuteStatement: runs `sqls` as one transaction; returns the statement id.
    pub(super) async fn submit_batch(&self, sqls: Vec<String>) -> Result<String, WarehouseError> {
        let first = sqls.first().cloned().unwrap_or_default();
        let output = self.batch_request(sqls).send().await.map_err(|e| {
            WarehouseError::data_api(&first, AwsError::from_sdk("redshift-data:BatchExecuteStatement", e))
        })?;
        statement_id(output.id(), &first)
    }

    /// DescribeStatement: whether statement `id` (about `statement`) ended, and how.
    pub(super) async fn describe(&self, id: &str, statement: &str) -> Result<Described, AwsError> {
        let status = self
            .client
            .describe_statement()
            .id(id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("redshift-data:DescribeStatement", e))?;
        Ok(Described {
            ended: ended(&status, statement),
            sub_statement_rows: status.sub_statements().iter().map(|s| s.result_rows()).collect(),
        })
    }

    /// GetStatementResult: every row of the result of statement `id` (`<batch id>:<n>`
    /// for the n-th, from 1, of a batch), page by page.
    pub(super) async fn results(&self, id: &str, statement: &str) -> Result<Vec<Vec<Field>>, WarehouseError> {
        let mut rows = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .get_statement_result()
                .id(id)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| {
                    WarehouseError::data_api(statement, AwsError::from_sdk("redshift-data:GetStatementResult", e))
                })?;
            rows.extend(page.records().iter().cloned());
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(rows);
            }
        }
    }

    /// CancelStatement, best effort: the caller has already given up on `id`.
    pub(super) async fn cancel(&self, id: &str) {
        if let Err(e) = self.client.cancel_statement().id(id).send().await {
            let error = AwsError::from_sdk("redshift-data:CancelStatement", e);
            tracing::warn!(%error, statement_id = id, "cannot cancel the statement");
        }
    }
}

/// How a described statement ended, if it did: the failing sub-statement of a batch
/// names itself; otherwise the batch does.
fn ended(status: &DescribeStatementOutput, statement: &str) -> Option<Ended> {
    match status.status() {
        Some(StatusString::Finished) => Some(Ended::Finished),
        Some(StatusString::Failed | StatusString::Aborted) => {
            let failed = status
                .sub_statements()
                .iter()
                .enumerate()
                .find(|(_, s)| s.error().is_some() || s.status() == Some(&StatementStatusString::Failed));
            Some(match failed {
                Some((index, sub)) => Ended::Failed {
                    statement: sub.query_string().unwrap_or(statement).to_string(),
                    message: sub.error().unwrap_or("failed").to_string(),
                    sub_statement: Some((index, sub.redshift_query_id())),
                },
                None => Ended::Failed {
                    statement: status.query_string().unwrap_or(statement).to_string(),
                    message: status.error().unwrap_or("aborted").to_string(),
                    sub_statement: None,
                },
            })
        }
        _ => None,
    }
}

/// The id of a submitted statement; the Data API always sends one.
fn statement_id(id: Option<&str>, statement: &str) -> Result<String, WarehouseError> {
    id.map(str::to_string)
        .ok_or_else(|| WarehouseError::statement(statement, ErrorKind::Transient, "the Data API sent no statement id"))
}
