//! Drawing: the embedded font, PNG rendering, line panels with clipping, the palette.

use crate::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::io::BufWriter;
use std::path::Path;

/// The one font family, registered from the embedded file (no system fonts are consulted).
pub const FONT: &str = "sans-serif";
static DEJAVU_SANS: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");

/// A drawing area of the PNG being drawn.
pub type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// A plotters failure, which is poc's (the figure's geometry is poc's choice).
pub fn draw_error(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("drawing the plot: {e}"))
}

fn register_font() -> Result<()> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, DEJAVU_SANS).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(Error::Internal("the embedded font does not load".into()))
    }
}

/// Draws into an RGB buffer with `draw` and writes it to `out` as PNG.
pub fn render(
    out: &Path,
    (w, h): (u32, u32),
    draw: impl FnOnce(&Area) -> Result<()>,
) -> Result<()> {
    register_font()?;
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let backend = BitMapBackend::with_buffer(&mut rgb, (w, h));
        let root = backend.into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        draw(&root)?;
        root.present().map_err(draw_error)?;
    }
    let cannot = |e: &dyn std::fmt::Display| {
        Error::User(format!("poc: cannot write `{}`: {e}\n", out.display()))
    };
    let file = std::fs::File::create(out).map_err(|e| cannot(&e))?;
    let mut encoder = png::Encoder::new(BufWriter::new(file), w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| cannot(&e))?;
    writer.write_image_data(&rgb).map_err(|e| cannot(&e))?;
    writer.finish().map_err(|e| cannot(&e))
}

/// The smallest and largest finite value, if any.
pub fn finite_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((a, b)) => Some((a.min(v), b.max(v))),
        })
}

/// One line of a panel.
pub struct Series<'a> {
    /// Legend text.
    pub label: String,
    /// Abscissae.
    pub xs: &'a [f64],
    /// Ordinates (non-finite ones break the line).
    pub ys: &'a [f64],
}

/// Distinguishable line colours (Tableau 10).
pub const COLORS: [RGBColor; 10] = [
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

/// A qualitative palette for many series: Tableau 20 without its two greys, the nine saturated
/// hues (Tableau 10's order) and then their light partners. Grey and black are left to
/// yardsticks (a reference, a baseline).
pub const PALETTE: [RGBColor; 18] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(174, 199, 232),
    RGBColor(255, 187, 120),
    RGBColor(152, 223, 138),
    RGBColor(255, 152, 150),
    RGBColor(197, 176, 213),
    RGBColor(196, 156, 148),
    RGBColor(247, 182, 210),
    RGBColor(219, 219, 141),
    RGBColor(158, 218, 229),
];

/// The colour of series `k` of many: [`PALETTE`] in order, then hues a golden angle apart at
/// a fixed saturation and lightness (never a grey), so no two series share a colour.
pub fn distinct_color(k: usize) -> RGBColor {
    match PALETTE.get(k) {
        Some(&c) => c,
        None => {
            let hue = ((k - PALETTE.len()) as f64 * 0.381_966_011_250_105_1).fract();
            let RGBAColor(r, g, b, _) = HSLColor(hue, 0.75, 0.4).to_rgba();
            RGBColor(r, g, b)
        }
    }
}

/// The width in pixels of `text` in the embedded font at `size`.
pub fn text_width(text: &str, size: u32) -> Result<u32> {
    register_font()?;
    let font = FontDesc::new(FontFamily::Name(FONT), f64::from(size), FontStyle::Normal);
    font.box_size(text)
        .map(|(w, _)| w)
        .map_err(|e| draw_error(format!("{e:?}")))
}

/// A [lo, hi] interval with 5% margins, never empty.
pub fn padded(range: Option<(f64, f64)>) -> (f64, f64) {
    match range {
        None => (-1.0, 1.0),
        Some((lo, hi)) if hi - lo <= f64::EPSILON * lo.abs().max(hi.abs()).max(1e-300) => {
            let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
            (lo - d, hi + d)
        }
        Some((lo, hi)) => {
            let d = (hi - lo) * 0.05;
            (lo - d, hi + d)
        }
    }
}

/// One chart: every series as a line, clipped to the vertical axis, broken at non-finite values.
#[allow(clippy::too_many_arguments)]
pub fn panel(
    area: &Area,
    caption: &str,
    x_desc: &str,
    y_desc: &str,
    x: (f64, f64),
    y_axis: Option<(f64, f64)>,
    series: &[Series],
    legend: bool,
) -> Result<()> {
    let y = y_axis.unwrap_or_else(|| {
        padded(finite_range(
            series.iter().flat_map(|s| s.ys.iter().copied()),
        ))
    });
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(x.0..x.1, y.0..y.1)
        .map_err(draw_error)?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(x_desc)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .light_line_style(RGBColor(235, 235, 235));
    if !y_desc.is_empty() {
        mesh.y_desc(y_desc);
    }
    mesh.draw().map_err(draw_error)?;
    if y.0 < 0.0 && y.1 > 0.0 {
        chart
            .draw_series(LineSeries::new(
                [(x.0, 0.0), (x.1, 0.0)],
                RGBColor(160, 160, 160),
            ))
            .map_err(draw_error)?;
    }
    for (k, s) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let style = color.stroke_width(2);
        let mut first = true;
        for line in clipped_lines(s.xs, s.ys, y) {
            let drawn = chart
                .draw_series(LineSeries::new(line, style))
                .map_err(draw_error)?;
            if first {
                drawn.label(s.label.clone()).legend(move |(px, py)| {
                    PathElement::new(vec![(px, py), (px + 24, py)], color.stroke_width(2))
                });
                first = false;
            }
        }
    }
    if legend {
        chart
            .configure_series_labels()
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(draw_error)?;
    }
    Ok(())
}

/// Splits a sampled curve into polylines inside `lo ≤ y ≤ hi`: broken where a value is not
/// finite, cut where the curve leaves the band (so nothing is drawn outside the axes).
fn clipped_lines(xs: &[f64], ys: &[f64], (lo, hi): (f64, f64)) -> Vec<Vec<(f64, f64)>> {
    let mut lines: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut current: Vec<(f64, f64)> = Vec::new();
    let points: Vec<(f64, f64)> = xs.iter().copied().zip(ys.iter().copied()).collect();
    for pair in points.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let segment = if a.1.is_finite() && b.1.is_finite() {
            clip_segment(a, b, lo, hi)
        } else {
            None
        };
        match segment {
            Some((p, q)) if current.last() == Some(&p) => current.push(q),
            Some((p, q)) => {
                if current.len() > 1 {
                    lines.push(std::mem::take(&mut current));
                }
                current = vec![p, q];
            }
            None => {
                if current.len() > 1 {
                    lines.push(std::mem::take(&mut current));
                }
                current.clear();
            }
        }
    }
    if current.len() > 1 {
        lines.push(current);
    }
    // A single finite sample inside the band still shows, as a dot-sized line.
    if lines.is_empty()
        && let [(x, y)] = points
            .iter()
            .filter(|p| p.1.is_finite() && p.1 >= lo && p.1 <= hi)
            .copied()
            .collect::<Vec<_>>()[..]
    {
        lines.push(vec![(x, y), (x, y)]);
    }
    lines
}

/// The part of segment a→b with lo ≤ y ≤ hi (Liang–Barsky in y; x is always inside).
fn clip_segment(
    a: (f64, f64),
    b: (f64, f64),
    lo: f64,
    hi: f64,
) -> Option<((f64, f64), (f64, f64))> {
    let dy = b.1 - a.1;
    let (t0, t1) = if dy == 0.0 {
        if a.1 < lo || a.1 > hi {
            return None;
        }
        (0.0, 1.0)
    } else {
        let (ta, tb) = ((lo - a.1) / dy, (hi - a.1) / dy);
        (ta.min(tb).max(0.0), ta.max(tb).min(1.0))
    };
    if t0 > t1 {
        return None;
    }
    let at = |t: f64| {
        if t == 0.0 {
            a
        } else if t == 1.0 {
            b
        } else {
            (a.0 + t * (b.0 - a.0), a.1 + t * dy)
        }
    };
    Some((at(t0), at(t1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_cuts_at_the_band_and_breaks_at_nan() {
        let xs = [0.0, 1.0, 2.0, 3.0, 4.0];
        let ys = [0.0, 2.0, f64::NAN, 0.5, 0.5];
        let lines = clipped_lines(&xs, &ys, (0.0, 1.0));
        assert_eq!(
            lines,
            vec![vec![(0.0, 0.0), (0.5, 1.0)], vec![(3.0, 0.5), (4.0, 0.5)]]
        );
    }
}
