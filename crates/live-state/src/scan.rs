//! A whole-table Scan, page by page, and reading an item's attributes leniently (a
//! missing or malformed attribute reads as empty: these are counts to show).

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use pipeline_runtime::AwsError;

pub(crate) type Item = HashMap<String, AttributeValue>;

/// A Scan's filter: an expression over number placeholders (`:name`).
pub(crate) struct Filter<'a> {
    pub expression: String,
    pub numbers: &'a [(&'a str, i64)],
}

/// How a Scan reads: eventually consistent is half the read units and is enough to
/// show counts; strongly consistent is what a decision to write needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    Eventual,
    Strong,
}

/// Scans `table` (dynamodb:Scan, up to 1 MB a page) from the first page to the last,
/// handing each item that passes `filter` to `each`.
pub(crate) async fn scan_all(
    dynamodb: &Client,
    table: &str,
    filter: Option<Filter<'_>>,
    each: impl FnMut(&Item),
) -> Result<(), AwsError> {
    scan_all_read(dynamodb, table, filter, Consistency::Eventual, each).await
}

/// [`scan_all`], read as `consistency` says.
pub(crate) async fn scan_all_read(
    dynamodb: &Client,
    table: &str,
    filter: Option<Filter<'_>>,
    consistency: Consistency,
    mut each: impl FnMut(&Item),
) -> Result<(), AwsError> {
    let mut request = dynamodb
        .scan()
        .table_name(table)
        .consistent_read(consistency == Consistency::Strong);
    if let Some(filter) = filter {
        request = request.filter_expression(filter.expression);
        for (name, value) in filter.numbers {
            request = request.expression_attribute_values(*name, AttributeValue::N(value.to_string()));
        }
    }
    let mut start: Option<Item> = None;
    loop {
        let page = request
            .clone()
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("dynamodb:Scan", e))?;
        page.items().iter().for_each(&mut each);
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return Ok(()),
        }
    }
}

pub(crate) fn number(item: &Item, name: &str) -> i64 {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

pub(crate) fn text(item: &Item, name: &str) -> String {
    item.get(name).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default()
}

/// GetItem, strongly consistent, of the item at `key` in `table`.
pub(crate) async fn get_consistent(dynamodb: &Client, table: &str, key: Item) -> Result<Option<Item>, AwsError> {
    let answer = dynamodb
        .get_item()
        .table_name(table)
        .set_key(Some(key))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk("dynamodb:GetItem", e))?;
    Ok(answer.item)
}
