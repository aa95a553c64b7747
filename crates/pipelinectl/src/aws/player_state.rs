//! DynamoDB calls on PlayerState that `forget` makes: a player's item deleted.

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use live_state::player_state::PLAYER_ID;
use pipeline_runtime::AwsError;

const DELETE: &str = "dynamodb:DeleteItem";

/// The IAM actions the functions of this module need.
pub const IAM_ACTIONS: &[&str] = &[DELETE];

/// DeleteItem of `player`'s item; whether there was one. Its stream record tells the
/// level stage the player left, as a prune does, so LevelState counts them out.
pub async fn delete(dynamodb: &aws_sdk_dynamodb::Client, table: &str, player: &str) -> Result<bool, AwsError> {
    let deleted = dynamodb
        .delete_item()
        .table_name(table)
        .key(PLAYER_ID, AttributeValue::S(player.to_string()))
        .return_values(ReturnValue::AllOld)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk(DELETE, e))?;
    Ok(deleted.attributes().is_some_and(|item| !item.is_empty()))
}
