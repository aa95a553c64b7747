//! A heat map as a picture: the grid's cells coloured by count over the level picture
//! (or a plain ground), a title above, and a colour scale with its numbers beside.

use image::{Rgb, RgbImage};

use super::grid::Grid;
use crate::picture::{CHAR_SIZE, blend_rect, draw_text, fill_rect, text_width};

const MARGIN: u32 = 12;
const TITLE_HEIGHT: u32 = CHAR_SIZE + 2 * MARGIN;
const SCALE_BAR_WIDTH: u32 = 24;
const GROUND: Rgb<u8> = Rgb([40, 44, 52]);
const PAPER: Rgb<u8> = Rgb([250, 250, 250]);
const INK: Rgb<u8> = Rgb([20, 20, 20]);

/// The colour scale, dark to bright (close to matplotlib's "inferno", which stays
/// readable in grey and for the common colour blindnesses).
const STOPS: [[f64; 3]; 5] = [
    [0.0, 0.0, 4.0],
    [87.0, 16.0, 110.0],
    [188.0, 55.0, 84.0],
    [249.0, 142.0, 9.0],
    [252.0, 255.0, 164.0],
];

/// The scale's colour at `t` in 0..1.
pub fn colour(t: f64) -> Rgb<u8> {
    let t = t.clamp(0.0, 1.0) * (STOPS.len() - 1) as f64;
    let i = (t.floor() as usize).min(STOPS.len() - 2);
    let f = t - i as f64;
    let channel = |c: usize| (STOPS[i][c] + (STOPS[i + 1][c] - STOPS[i][c]) * f).round() as u8;
    Rgb([channel(0), channel(1), channel(2)])
}

/// What to draw.
pub struct Layout<'a> {
    pub title: &'a str,
    /// Width of the map area in pixels; its height follows the map's proportions.
    pub map_width: u32,
    pub map_height: u32,
    pub background: Option<&'a RgbImage>,
}

fn scale_width(max: u64) -> u32 {
    SCALE_BAR_WIDTH + MARGIN + text_width(&max.to_string()).max(text_width("0"))
}

/// The size of the picture [`render`] makes for this layout and grid.
pub fn picture_size(layout: &Layout<'_>, grid: &Grid) -> (u32, u32) {
    let width = MARGIN + layout.map_width + MARGIN + scale_width(grid.max()) + MARGIN;
    let minimum = text_width(layout.title) + 2 * MARGIN;
    (
        width.max(minimum),
        TITLE_HEIGHT + layout.map_height + 2 * MARGIN + CHAR_SIZE,
    )
}

pub fn render(layout: &Layout<'_>, grid: &Grid) -> RgbImage {
    let (width, height) = picture_size(layout, grid);
    let mut image = RgbImage::from_pixel(width, height, PAPER);
    draw_text(&mut image, MARGIN, MARGIN, layout.title, INK);

    let (left, top) = (MARGIN, TITLE_HEIGHT);
    match layout.background {
        Some(picture) => {
            let fitted = image::imageops::resize(
                picture,
                layout.map_width,
                layout.map_height,
                image::imageops::FilterType::Triangle,
            );
            image::imageops::replace(&mut image, &fitted, i64::from(left), i64::from(top));
        }
        None => fill_rect(&mut image, left, top, layout.map_width, layout.map_height, GROUND),
    }

    // Cell edges are rounded so neighbouring cells meet without gaps.
    let max = grid.max();
    let edge = |i: u32, cells: u32, span: u32| (u64::from(i) * u64::from(span) / u64::from(cells)) as u32;
    for row in 0..grid.rows {
        for column in 0..grid.columns {
            let count = grid.get(column, row);
            if count == 0 || max == 0 {
                continue;
            }
            let t = count as f64 / max as f64;
            let (x0, x1) = (
                edge(column, grid.columns, layout.map_width),
                edge(column + 1, grid.columns, layout.map_width),
            );
            let (y0, y1) = (
                edge(row, grid.rows, layout.map_height),
                edge(row + 1, grid.rows, layout.map_height),
            );
            // Sparse cells let the map show through; hot ones cover it.
            blend_rect(
                &mut image,
                left + x0,
                top + y0,
                x1 - x0,
                y1 - y0,
                colour(t),
                0.45 + 0.5 * t,
            );
        }
    }

    // The colour scale: brightest (the busiest cell's count) at the top, 0 at the bottom.
    let bar_left = left + layout.map_width + MARGIN;
    for y in 0..layout.map_height {
        let t = 1.0 - f64::from(y) / f64::from(layout.map_height.max(2) - 1);
        fill_rect(&mut image, bar_left, top + y, SCALE_BAR_WIDTH, 1, colour(t));
    }
    let label_left = bar_left + SCALE_BAR_WIDTH + MARGIN / 2;
    draw_text(&mut image, label_left, top, &max.to_string(), INK);
    if max >= 2 {
        let middle = top + layout.map_height / 2 - CHAR_SIZE / 2;
        draw_text(&mut image, label_left, middle, &(max / 2).to_string(), INK);
    }
    draw_text(&mut image, label_left, top + layout.map_height - CHAR_SIZE, "0", INK);
    let caption = format!("events per cell ({} x {} cells)", grid.columns, grid.rows);
    draw_text(&mut image, MARGIN, top + layout.map_height + MARGIN, &caption, INK);
    image
}

#[cfg(test)]
mod tests {
    use super::*;
    use warehouse::query::CellCount;

    #[test]
    fn the_scale_runs_from_dark_to_bright() {
        let brightness = |c: Rgb<u8>| u32::from(c[0]) + u32::from(c[1]) + u32::from(c[2]);
        let mut last = 0;
        for step in 0..=20 {
            let now = brightness(colour(f64::from(step) / 20.0));
            assert!(now >= last, "step {step}");
            last = now;
        }
        assert_eq!(colour(-1.0), colour(0.0));
        assert_eq!(colour(2.0), Rgb([252, 255, 164]));
    }

    #[test]
    fn the_busiest_cell_gets_the_brightest_colour_where_it_lies() {
        let mut grid = Grid::new(10, 5);
        grid.add(CellCount {
            column: 9,
            row: 0,
            events: 100,
        });
        grid.add(CellCount {
            column: 0,
            row: 4,
            events: 1,
        });
        let layout = Layout {
            title: "player_death on level-01",
            map_width: 200,
            map_height: 100,
            background: None,
        };
        let image = render(&layout, &grid);
        assert_eq!((image.width(), image.height()), picture_size(&layout, &grid));
        // The middle of cell (9, 0) and of an empty cell.
        let hot = *image.get_pixel(MARGIN + 190, TITLE_HEIGHT + 10);
        let empty = *image.get_pixel(MARGIN + 100, TITLE_HEIGHT + 50);
        assert_eq!(empty, GROUND);
        assert_eq!(hot, crate::picture::mix(GROUND, colour(1.0), 0.95));
    }
}
