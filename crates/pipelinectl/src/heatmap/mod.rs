//! `pipelinectl heatmap`: where events of one type happen on one level, from the
//! warehouse (either back end, values always bound), as a PNG or as CSV.

pub mod grid;
pub mod render;

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use warehouse::query::HeatmapQuery;
use warehouse::{Warehouse, WarehouseArgs};

use crate::generate::workload::{MAP_HEIGHT, MAP_WIDTH};
pub use crate::when::When;
use grid::Grid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Png,
    Csv,
}

/// The grid `heatmap` and the live page draw on unless told otherwise.
pub const DEFAULT_COLUMNS: u32 = 50;
pub const DEFAULT_ROWS: u32 = 35;
/// [`DEFAULT_COLUMNS`] × [`DEFAULT_ROWS`] as `--grid` takes it.
const DEFAULT_GRID: &str = "50x35";

fn parse_grid(text: &str) -> Result<(u32, u32), String> {
    let (c, r) = text
        .split_once('x')
        .ok_or_else(|| format!("{text:?} is not COLUMNSxROWS, like 50x35"))?;
    let parse = |v: &str| match v.parse::<u32>() {
        Ok(n) if (1..=1000).contains(&n) => Ok(n),
        _ => Err(format!("{v:?} must be a number of cells from 1 to 1000")),
    };
    Ok((parse(c)?, parse(r)?))
}

/// `heatmap`'s settings: what to draw and which warehouse to ask.
#[derive(Debug, Clone, Args)]
pub struct HeatmapArgs {
    #[command(flatten)]
    pub spec: HeatmapSpec,

    #[command(flatten)]
    pub warehouse: WarehouseArgs,
}

/// What a heat map shows and how it is written.
#[derive(Debug, Clone, Args)]
pub struct HeatmapSpec {
    /// The level (`level_id`) to draw.
    #[arg(long, env = "HEATMAP_LEVEL")]
    pub level: String,

    /// The event type whose positions are counted.
    #[arg(long, env = "HEATMAP_EVENT_TYPE", default_value = "player_death")]
    pub event_type: String,

    /// Start of the time range (inclusive): RFC 3339, `now`, or an age like 24h.
    #[arg(long, env = "HEATMAP_SINCE", default_value = "24h")]
    pub since: When,

    /// End of the time range (exclusive): RFC 3339, `now`, or an age like 1h.
    #[arg(long, env = "HEATMAP_UNTIL", default_value = "now")]
    pub until: When,

    /// Cells across and down, COLUMNSxROWS.
    #[arg(long, env = "HEATMAP_GRID", default_value = DEFAULT_GRID, value_parser = parse_grid)]
    pub grid: (u32, u32),

    /// Width of the level in game units (positions run from 0 to this).
    #[arg(long, env = "HEATMAP_MAP_WIDTH", default_value_t = MAP_WIDTH)]
    pub map_width: f64,

    /// Height of the level in game units; y grows downwards, as on screen.
    #[arg(long, env = "HEATMAP_MAP_HEIGHT", default_value_t = MAP_HEIGHT)]
    pub map_height: f64,

    /// A picture of the level to draw the heat over (PNG; stretched to the map).
    #[arg(long, env = "HEATMAP_BACKGROUND")]
    pub background: Option<PathBuf>,

    /// Width in pixels of the map area of the PNG.
    #[arg(long, env = "HEATMAP_IMAGE_WIDTH", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(50..=8000))]
    pub image_width: u32,

    /// `png` or `csv` (every cell with its rectangle and count).
    #[arg(long, env = "HEATMAP_FORMAT", value_enum, default_value = "png")]
    pub format: Output,

    /// Only events whose `event_data` has these values: `KEY=VALUE` (or a dotted path,
    /// `cause.weapon=axe`), up to 4, comma-separated in the env var; values are compared
    /// as text and always sent as bound parameters.
    #[arg(long = "where", env = "HEATMAP_WHERE", value_delimiter = ',')]
    pub filters: Vec<warehouse::query::DataFilter>,

    /// Where to write the heat map (`-` for standard output, CSV only).
    #[arg(long, env = "HEATMAP_OUTPUT", default_value = "heatmap.png")]
    pub output: PathBuf,
}

/// What was drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drawn {
    pub events: u64,
    pub busiest_cell: u64,
    pub outside: u64,
}

fn time_label(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

impl HeatmapSpec {
    pub fn query(&self) -> anyhow::Result<HeatmapQuery> {
        if self.since.0 >= self.until.0 {
            anyhow::bail!("HEATMAP_SINCE must be before HEATMAP_UNTIL");
        }
        if !(self.map_width > 0.0 && self.map_height > 0.0) {
            anyhow::bail!("HEATMAP_MAP_WIDTH and HEATMAP_MAP_HEIGHT must be positive");
        }
        if self.filters.len() > warehouse::query::MAX_DATA_FILTERS {
            anyhow::bail!(
                "HEATMAP_WHERE: at most {} conditions on event_data",
                warehouse::query::MAX_DATA_FILTERS
            );
        }
        Ok(HeatmapQuery {
            level_id: self.level.clone(),
            event_type: self.event_type.clone(),
            since_ms: self.since.0,
            until_ms: self.until.0,
            columns: self.grid.0,
            rows: self.grid.1,
            width: self.map_width,
            height: self.map_height,
            filters: self.filters.clone(),
        })
    }

    pub fn title(&self, events: u64) -> String {
        format!(
            "{} on {}, {} to {}: {events} events",
            self.event_type,
            self.level,
            time_label(self.since.0),
            time_label(self.until.0)
        )
    }
}

/// Counts the cells of `query` in the warehouse: the one query of `heatmap` and of the
/// live page's heat map, values bound.
pub async fn count(warehouse: &Warehouse, query: &HeatmapQuery) -> Result<Grid, warehouse::WarehouseError> {
    let mut grid = Grid::new(query.columns, query.rows);
    for cell in warehouse.heatmap(query).await? {
        grid.add(cell);
    }
    Ok(grid)
}

impl HeatmapSpec {
    /// The heat map as a picture: the grid over `background` (or a plain ground), with
    /// its title and scale.
    pub fn picture(&self, grid: &Grid, background: Option<&image::RgbImage>) -> image::RgbImage {
        let map_height = ((f64::from(self.image_width) * self.map_height / self.map_width).round() as u32).max(1);
        let title = self.title(grid.total());
        let layout = render::Layout {
            title: &title,
            map_width: self.image_width,
            map_height,
            background,
        };
        render::render(&layout, grid)
    }
}

/// Counts the cells in the warehouse and writes the PNG or CSV.
pub async fn run(warehouse: &Warehouse, args: &HeatmapSpec) -> anyhow::Result<Drawn> {
    let query = args.query()?;
    // Read the picture first: a wrong path should not cost a warehouse query.
    let background = match &args.background {
        Some(path) => Some(
            image::open(path)
                .map_err(|e| anyhow::anyhow!("HEATMAP_BACKGROUND {}: {e}", path.display()))?
                .to_rgb8(),
        ),
        None => None,
    };
    let grid = count(warehouse, &query).await?;
    match args.format {
        Output::Csv => {
            let csv = grid.to_csv(args.map_width, args.map_height);
            if args.output.as_os_str() == "-" {
                print!("{csv}");
            } else {
                std::fs::write(&args.output, csv)
                    .map_err(|e| anyhow::anyhow!("HEATMAP_OUTPUT {}: {e}", args.output.display()))?;
            }
        }
        Output::Png => {
            if args.output.as_os_str() == "-" {
                anyhow::bail!("HEATMAP_OUTPUT: a PNG needs a file name");
            }
            args.picture(&grid, background.as_ref())
                .save_with_format(&args.output, image::ImageFormat::Png)
                .map_err(|e| anyhow::anyhow!("HEATMAP_OUTPUT {}: {e}", args.output.display()))?;
        }
    }
    Ok(Drawn {
        events: grid.total(),
        busiest_cell: grid.max(),
        outside: grid.outside,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_are_columns_by_rows() {
        assert_eq!(parse_grid("50x35"), Ok((50, 35)));
        assert_eq!(parse_grid(DEFAULT_GRID), Ok((DEFAULT_COLUMNS, DEFAULT_ROWS)));
        assert!(parse_grid("0x3").is_err());
        assert!(parse_grid("50").is_err());
    }
}
