//! `pipelinectl level-map`: a picture of a generated level, for heat map backgrounds.
//! Drawn from the same numbers as the generator's game, so the hazards sit where its
//! players die.

use std::path::PathBuf;

use clap::Args;
use image::{Rgb, RgbImage};

use crate::generate::workload::{MAP_HEIGHT, MAP_WIDTH, hotspots, level_name};
use crate::picture::{blend_rect, draw_text, fill_disc, fill_rect};

/// Which level to draw and where.
#[derive(Debug, Clone, Args)]
pub struct LevelMapArgs {
    /// The level, as the generator names it (`level-01`, `level-02`, …).
    #[arg(long, env = "LEVEL_MAP_LEVEL", value_parser = parse_level)]
    pub level: usize,

    /// Where to write the PNG.
    #[arg(long, env = "LEVEL_MAP_OUTPUT", default_value = "level-map.png")]
    pub output: PathBuf,

    /// Width in pixels (the height keeps the map's proportions).
    #[arg(long, env = "LEVEL_MAP_WIDTH", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(50..=8000))]
    pub width: u32,
}

/// `level-07` → 6 (the generator's index).
pub fn parse_level(text: &str) -> Result<usize, String> {
    text.strip_prefix("level-")
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n >= 1)
        .map(|n| n - 1)
        .ok_or_else(|| format!("{text:?} is not a generated level name like level-01"))
}

const FLOOR: Rgb<u8> = Rgb([196, 186, 160]);
const GRID_LINE: Rgb<u8> = Rgb([176, 166, 140]);
const WALL: Rgb<u8> = Rgb([72, 66, 60]);
const HAZARD_RIM: Rgb<u8> = Rgb([90, 20, 10]);
const HAZARD: Rgb<u8> = Rgb([214, 88, 34]);
const SPAWN: Rgb<u8> = Rgb([46, 140, 70]);
const EXIT: Rgb<u8> = Rgb([40, 90, 170]);
const LABEL: Rgb<u8> = Rgb([30, 30, 30]);

/// The level's picture, `width` pixels wide.
pub fn draw(level: usize, width: u32) -> RgbImage {
    let scale = f64::from(width) / MAP_WIDTH;
    let height = ((MAP_HEIGHT * scale).round() as u32).max(1);
    let px = |units: f64| (units * scale).round().max(0.0) as u32;
    let mut image = RgbImage::from_pixel(width, height, FLOOR);

    // Floor tiles every 50 units.
    let mut x = 50.0;
    while x < MAP_WIDTH {
        fill_rect(&mut image, px(x), 0, 1, height, GRID_LINE);
        x += 50.0;
    }
    let mut y = 50.0;
    while y < MAP_HEIGHT {
        fill_rect(&mut image, 0, px(y), width, 1, GRID_LINE);
        y += 50.0;
    }

    // Outer walls, then interior wall segments placed by the level number, kept
    // clear of the hazards so the paths to them stay open.
    let wall = px(12.0).max(2);
    fill_rect(&mut image, 0, 0, width, wall, WALL);
    fill_rect(&mut image, 0, height - wall, width, wall, WALL);
    fill_rect(&mut image, 0, 0, wall, height, WALL);
    fill_rect(&mut image, width - wall, 0, wall, height, WALL);
    // Spawn on the left, exit on the right (drawn last, kept clear of walls too).
    let spawn = (60.0, MAP_HEIGHT / 2.0);
    let exit = (MAP_WIDTH - 58.0, MAP_HEIGHT / 2.0);
    let spots = hotspots(level);
    let keep_clear: Vec<(f64, f64)> = spots.iter().copied().chain([spawn, exit]).collect();
    let mut rng = fastrand::Rng::with_seed(level as u64 * 104_729 + 3);
    let mut placed = 0;
    while placed < 7 {
        let horizontal = rng.bool();
        let (w, h) = if horizontal {
            (rng.f64() * 250.0 + 100.0, 14.0)
        } else {
            (14.0, rng.f64() * 200.0 + 80.0)
        };
        let (x, y) = (rng.f64() * (MAP_WIDTH - w), rng.f64() * (MAP_HEIGHT - h));
        let clear = keep_clear.iter().all(|(sx, sy)| {
            let (nx, ny) = (sx.clamp(x, x + w), sy.clamp(y, y + h));
            (sx - nx).powi(2) + (sy - ny).powi(2) > 90.0_f64.powi(2)
        });
        if clear {
            fill_rect(&mut image, px(x), px(y), px(w).max(1), px(h).max(1), WALL);
            placed += 1;
        }
    }

    // Hazards where the generator's players die.
    for (sx, sy) in spots {
        fill_disc(&mut image, sx * scale, sy * scale, 42.0 * scale, HAZARD_RIM);
        fill_disc(&mut image, sx * scale, sy * scale, 34.0 * scale, HAZARD);
    }
    blend_rect(&mut image, 0, 0, width, height, FLOOR, 0.1);

    fill_disc(&mut image, spawn.0 * scale, spawn.1 * scale, 22.0 * scale, SPAWN);
    fill_rect(
        &mut image,
        px(exit.0 - 22.0),
        px(exit.1 - 22.0),
        px(44.0).max(1),
        px(44.0).max(1),
        EXIT,
    );
    draw_text(&mut image, wall + 8, wall + 8, &level_name(level), LABEL);
    image
}

pub fn run(args: &LevelMapArgs) -> anyhow::Result<()> {
    draw(args.level, args.width)
        .save_with_format(&args.output, image::ImageFormat::Png)
        .map_err(|e| anyhow::anyhow!("LEVEL_MAP_OUTPUT {}: {e}", args.output.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_named_as_the_generator_names_them() {
        assert_eq!(parse_level("level-01"), Ok(0));
        assert_eq!(parse_level(&level_name(6)), Ok(6));
        assert!(parse_level("level-00").is_err());
        assert!(parse_level("castle").is_err());
    }

    #[test]
    fn hazards_are_drawn_where_the_generator_puts_deaths() {
        let image = draw(2, 500);
        assert_eq!((image.width(), image.height()), (500, 350));
        let scale = 500.0 / MAP_WIDTH;
        for (x, y) in hotspots(2) {
            let pixel = *image.get_pixel((x * scale) as u32, (y * scale) as u32);
            assert_eq!(pixel, crate::picture::mix(HAZARD, FLOOR, 0.1), "hazard at ({x}, {y})");
        }
        assert_eq!(draw(2, 500), image, "the same level draws the same picture");
        assert_ne!(draw(3, 500), image);
    }
}
