//! The drawing kit shared by every leukoscope plot (the evaluation report's and the device's
//! session report): an embedded font, colours, text styles, a page header, PNG encoding.
//!
//! Plots are drawn with `plotters` into memory and encoded with `image`. Their text uses DejaVu
//! Sans, embedded in the library (`assets/DejaVuSans.ttf`, license in
//! `assets/DejaVu-LICENSE.txt`), so reports render the same on a workstation and on a Raspberry
//! Pi without any system font.

use std::error::Error as StdError;
use std::path::Path;
use std::sync::OnceLock;

use image::{ExtendedColorType, ImageEncoder, codecs::png::PngEncoder};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{ReportError, write_file};

/// A plotters drawing area over an in-memory RGB bitmap.
pub type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
/// What a drawing function returns (plotters' errors are boxed).
pub type PlotResult = Result<(), Box<dyn StdError>>;

static FONT_BYTES: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
/// The family name the embedded DejaVu Sans is registered under.
pub const FONT: &str = "sans-serif";

/// Registers the embedded font as plotters' "sans-serif", once per process.
pub fn register_font() -> Result<(), ReportError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok()
    });
    if ok { Ok(()) } else { Err(ReportError::Font) }
}

/// Draws into an RGB buffer and writes it to `path` as PNG.
pub fn render_png(
    path: &Path,
    (w, h): (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> PlotResult,
) -> Result<(), ReportError> {
    let plot_error = |message: String| ReportError::Plot {
        path: path.to_path_buf(),
        message,
    };
    let mut buf = vec![255u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        draw(&root).map_err(|e| plot_error(e.to_string()))?;
        root.present().map_err(|e| plot_error(e.to_string()))?;
    }
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(&buf, w, h, ExtendedColorType::Rgb8)
        .map_err(|e| plot_error(format!("PNG encoding failed: {e}")))?;
    write_file(path, &png)
}

/// Body text colour.
pub const TEXT: RGBColor = RGBColor(30, 30, 30);
/// Secondary text colour.
pub const MUTED: RGBColor = RGBColor(90, 90, 90);
/// Grid and frame lines.
pub const GRID_LINE: RGBColor = RGBColor(200, 200, 200);

/// Series colours (matplotlib's tab10).
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// A text style of the embedded font: size, colour and anchor.
pub fn style<'a>(size: f64, color: &'a RGBColor, h: HPos, v: VPos) -> TextStyle<'a> {
    TextStyle::from((FONT, size).into_font())
        .color(color)
        .pos(Pos::new(h, v))
}

/// Shrinks `text` (down to `min_size`, then by cutting characters and adding "…") until it is at
/// most `max_width` pixels wide. Returns the text and its font size.
pub fn fit_text(
    area: &Area<'_>,
    text: &str,
    max_width: u32,
    size: f64,
    min_size: f64,
) -> Result<(String, f64), Box<dyn StdError>> {
    let width = |t: &str, sz: f64| -> Result<u32, Box<dyn StdError>> {
        Ok(area
            .estimate_text_size(t, &style(sz, &TEXT, HPos::Left, VPos::Top))?
            .0)
    };
    let mut sz = size;
    while sz > min_size && width(text, sz)? > max_width {
        sz -= 1.0;
    }
    let mut t = text.to_string();
    let mut chars: Vec<char> = text.chars().collect();
    while width(&t, sz)? > max_width && !chars.is_empty() {
        chars.pop();
        t = chars.iter().collect::<String>() + "…";
    }
    Ok((t, sz))
}

/// Title and subtitle centred in the top 80 pixels.
pub fn header(root: &Area<'_>, title: &str, subtitle: &str) -> PlotResult {
    let (w, _) = root.dim_in_pixel();
    let cx = w as i32 / 2;
    root.draw(&Text::new(
        title.to_string(),
        (cx, 14),
        style(28.0, &TEXT, HPos::Center, VPos::Top),
    ))?;
    if !subtitle.is_empty() {
        let (t, sz) = fit_text(root, subtitle, w.saturating_sub(40), 18.0, 12.0)?;
        root.draw(&Text::new(
            t,
            (cx, 52),
            style(sz, &MUTED, HPos::Center, VPos::Top),
        ))?;
    }
    Ok(())
}

/// White → dark blue (matplotlib's "Blues"), for a share in 0..=1.
pub fn blues(share: f64) -> RGBColor {
    const STOPS: [(f64, [f64; 3]); 3] = [
        (0.0, [247.0, 251.0, 255.0]),
        (0.5, [107.0, 174.0, 214.0]),
        (1.0, [8.0, 48.0, 107.0]),
    ];
    let s = share.clamp(0.0, 1.0);
    let (lo, hi) = if s <= 0.5 {
        (STOPS[0], STOPS[1])
    } else {
        (STOPS[1], STOPS[2])
    };
    let t = (s - lo.0) / (hi.0 - lo.0);
    let c = |i: usize| (lo.1[i] + t * (hi.1[i] - lo.1[i])).round() as u8;
    RGBColor(c(0), c(1), c(2))
}
