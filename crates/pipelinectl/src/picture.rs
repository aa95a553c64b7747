//! Drawing on an RGB image: filled rectangles, discs, blending and text in an 8×8
//! bitmap font (no font file to ship; ASCII and Latin-1). Shared by heat maps and level maps.

use image::{Rgb, RgbImage};

/// Scale of the bitmap font: 8 × `TEXT_SCALE` pixels per character.
pub const TEXT_SCALE: u32 = 2;
pub const CHAR_SIZE: u32 = 8 * TEXT_SCALE;

pub fn fill_rect(image: &mut RgbImage, x: u32, y: u32, width: u32, height: u32, colour: Rgb<u8>) {
    blend_rect(image, x, y, width, height, colour, 1.0);
}

/// Paints `colour` over a rectangle with opacity `alpha` (0..1), clipped to the image.
pub fn blend_rect(image: &mut RgbImage, x: u32, y: u32, width: u32, height: u32, colour: Rgb<u8>, alpha: f64) {
    let (x_end, y_end) = ((x + width).min(image.width()), (y + height).min(image.height()));
    for py in y.min(y_end)..y_end {
        for px in x.min(x_end)..x_end {
            let pixel = image.get_pixel_mut(px, py);
            *pixel = mix(*pixel, colour, alpha);
        }
    }
}

/// A disc of radius `r` around (`cx`, `cy`), clipped to the image.
pub fn fill_disc(image: &mut RgbImage, cx: f64, cy: f64, r: f64, colour: Rgb<u8>) {
    let (w, h) = (f64::from(image.width()), f64::from(image.height()));
    let (x0, x1) = ((cx - r).floor().max(0.0), (cx + r).ceil().min(w - 1.0));
    let (y0, y1) = ((cy - r).floor().max(0.0), (cy + r).ceil().min(h - 1.0));
    let mut y = y0;
    while y <= y1 {
        let mut x = x0;
        while x <= x1 {
            if (x - cx).powi(2) + (y - cy).powi(2) <= r * r {
                image.put_pixel(x as u32, y as u32, colour);
            }
            x += 1.0;
        }
        y += 1.0;
    }
}

pub fn mix(under: Rgb<u8>, over: Rgb<u8>, alpha: f64) -> Rgb<u8> {
    let a = alpha.clamp(0.0, 1.0);
    let channel = |u: u8, o: u8| (f64::from(u) * (1.0 - a) + f64::from(o) * a).round() as u8;
    Rgb([
        channel(under[0], over[0]),
        channel(under[1], over[1]),
        channel(under[2], over[2]),
    ])
}

/// Width in pixels of `text` drawn by [`draw_text`].
pub fn text_width(text: &str) -> u32 {
    text.chars().count() as u32 * CHAR_SIZE
}

/// Draws `text` with its top left corner at (`x`, `y`); characters the font lacks are
/// drawn as `?`, and whatever falls outside the image is clipped.
pub fn draw_text(image: &mut RgbImage, x: u32, y: u32, text: &str, colour: Rgb<u8>) {
    use font8x8::UnicodeFonts;
    for (index, c) in text.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS
            .get(c)
            .or_else(|| font8x8::LATIN_FONTS.get(c))
            .or_else(|| font8x8::BASIC_FONTS.get('?'))
            .unwrap_or([0; 8]);
        let left = x + index as u32 * CHAR_SIZE;
        for (row, bits) in glyph.iter().enumerate() {
            for column in 0..8u32 {
                if bits & (1 << column) != 0 {
                    let (px, py) = (left + column * TEXT_SCALE, y + row as u32 * TEXT_SCALE);
                    fill_rect(image, px, py, TEXT_SCALE, TEXT_SCALE, colour);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_drawn_inside_its_box_and_clipped_at_the_edge() {
        let mut image = RgbImage::new(40, 20);
        draw_text(&mut image, 0, 0, "H\u{2603}", Rgb([255, 255, 255]));
        let lit: Vec<(u32, u32)> = image
            .enumerate_pixels()
            .filter(|(_, _, p)| p[0] == 255)
            .map(|(x, y, _)| (x, y))
            .collect();
        assert!(!lit.is_empty());
        assert!(lit.iter().all(|(x, y)| *x < 2 * CHAR_SIZE && *y < CHAR_SIZE));
        assert_eq!(text_width("Hé"), 2 * CHAR_SIZE);
        draw_text(&mut image, 30, 15, "clipped", Rgb([1, 1, 1]));
    }

    #[test]
    fn blending_moves_between_the_colours() {
        let (black, white) = (Rgb([0, 0, 0]), Rgb([255, 255, 255]));
        assert_eq!(mix(black, white, 0.0), black);
        assert_eq!(mix(black, white, 1.0), white);
        assert_eq!(mix(black, white, 0.5), Rgb([128, 128, 128]));
    }
}
