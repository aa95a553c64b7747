//! `pipelinectl levels`: the live player count of each level, once or continuously.

use std::io::Write;
use std::time::Duration;

use clap::Args;
use live_state::level_state::{self, LevelCount};
use pipeline_runtime::config::parse_resource_name;

/// What `levels` reads and how it shows it.
#[derive(Debug, Clone, Args)]
pub struct LevelsArgs {
    /// DynamoDB table with the player count of each level.
    #[arg(long, env = "LEVEL_STATE_TABLE", default_value = "LevelState", value_parser = parse_resource_name)]
    pub level_state_table: String,

    /// One JSON object per refresh instead of a table.
    #[arg(long, env = "LEVELS_JSON", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub json: bool,

    /// Refresh every this many seconds until Ctrl-C (0: print once).
    #[arg(long, env = "LEVELS_WATCH", default_value_t = 0, value_name = "SECS")]
    pub watch: u64,
}

/// The counts as a text table with a total.
pub fn render_table(levels: &[LevelCount]) -> String {
    let width = levels.iter().map(|l| l.level_id.len()).max().unwrap_or(0).max(5);
    let mut out = format!("{:<width$}  {:>8}\n", "level", "players");
    for level in levels {
        out.push_str(&format!("{:<width$}  {:>8}\n", level.level_id, level.player_count));
    }
    let total: i64 = levels.iter().map(|l| l.player_count).sum();
    out.push_str(&format!("{:<width$}  {:>8}\n", "total", total));
    out
}

/// Prints the counts once, or every `--watch` seconds.
pub async fn run(dynamodb: &aws_sdk_dynamodb::Client, args: &LevelsArgs) -> Result<(), pipeline_runtime::AwsError> {
    loop {
        let levels = level_state::read_counts(dynamodb, &args.level_state_table).await?;
        let mut stdout = std::io::stdout().lock();
        let text = if args.json {
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            format!("{}\n", serde_json::json!({"at": at, "levels": levels}))
        } else if args.watch > 0 {
            // Clear the screen and redraw in place.
            format!("\x1b[2J\x1b[H{}", render_table(&levels))
        } else {
            render_table(&levels)
        };
        // A closed pipe (`| head`) ends the command quietly.
        if stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).is_err() || args.watch == 0 {
            return Ok(());
        }
        drop(stdout);
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(args.watch)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_a_total() {
        let table = render_table(&[
            LevelCount {
                level_id: "forest".into(),
                player_count: 3,
            },
            LevelCount {
                level_id: "dungeons-of-kithgard".into(),
                player_count: 2,
            },
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[1].starts_with("forest") && lines[1].ends_with('3'));
        assert!(lines[3].starts_with("total") && lines[3].ends_with('5'));
    }
}
