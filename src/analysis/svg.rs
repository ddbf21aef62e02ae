//! Minimal SVG charts for the analyses: line charts and heatmaps, written as text so that the
//! plots need no font files or drawing libraries.

use std::fmt::Write;

/// A named series of `(x, y)` points for [`line_chart_svg`].
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Points in drawing order.
    pub points: Vec<(f64, f64)>,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 400.0;
const MARGIN: f64 = 60.0;
const COLORS: [&str; 6] = ["#1f6fd1", "#d1561f", "#1f9d55", "#8e44ad", "#c0392b", "#7f8c8d"];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A line chart of `series` with axis titles and a legend.
pub fn line_chart_svg(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let points = series.iter().flat_map(|s| s.points.iter());
    let (mut x_min, mut x_max, mut y_min, mut y_max) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        x_min = x_min.min(x);
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if x_min >= x_max {
        x_max = x_min + 1.0;
    }
    if y_min >= y_max {
        y_max = y_min + 1.0;
    }
    let pad = (y_max - y_min) * 0.05;
    let (y_min, y_max) = (y_min - pad, y_max + pad);
    let x_of = |x: f64| MARGIN + (x - x_min) / (x_max - x_min) * (WIDTH - 2.0 * MARGIN);
    let y_of = |y: f64| HEIGHT - MARGIN - (y - y_min) / (y_max - y_min) * (HEIGHT - 2.0 * MARGIN);

    let mut svg = header(title);
    // Axes and ticks.
    let _ = write!(
        svg,
        r##"<line x1="{m}" y1="{b}" x2="{r}" y2="{b}" stroke="#333"/><line x1="{m}" y1="{t}" x2="{m}" y2="{b}" stroke="#333"/>"##,
        m = MARGIN,
        b = HEIGHT - MARGIN,
        r = WIDTH - MARGIN,
        t = MARGIN
    );
    for k in 0..=4 {
        let y = y_min + (y_max - y_min) * k as f64 / 4.0;
        let x = x_min + (x_max - x_min) * k as f64 / 4.0;
        let _ = write!(
            svg,
            r##"<text x="{}" y="{}" font-size="11" text-anchor="end">{y:.3}</text><text x="{}" y="{}" font-size="11" text-anchor="middle">{x:.2}</text>"##,
            MARGIN - 6.0,
            y_of(y) + 4.0,
            x_of(x),
            HEIGHT - MARGIN + 16.0
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{}" y="{}" font-size="13" text-anchor="middle">{}</text><text x="16" y="{}" font-size="13" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>"##,
        WIDTH / 2.0,
        HEIGHT - 14.0,
        escape(x_label),
        HEIGHT / 2.0,
        HEIGHT / 2.0,
        escape(y_label)
    );
    for (k, s) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let path: Vec<String> = s.points.iter().map(|&(x, y)| format!("{:.1},{:.1}", x_of(x), y_of(y))).collect();
        let _ = write!(svg, r##"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"##, path.join(" "));
        for &(x, y) in &s.points {
            let _ = write!(svg, r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"##, x_of(x), y_of(y));
        }
        let _ = write!(
            svg,
            r##"<rect x="{}" y="{}" width="12" height="12" fill="{color}"/><text x="{}" y="{}" font-size="12">{}</text>"##,
            WIDTH - MARGIN - 150.0,
            MARGIN + 18.0 * k as f64,
            WIDTH - MARGIN - 132.0,
            MARGIN + 18.0 * k as f64 + 11.0,
            escape(&s.label)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// A heatmap of `values[row][col]` with row and column labels, each cell showing its value.
/// Colours run from white (the smallest value) to blue (the largest).
pub fn heatmap_svg(title: &str, rows: &[String], cols: &[String], values: &[Vec<f64>]) -> String {
    let cell_w = ((WIDTH - 2.0 * MARGIN - 80.0) / cols.len().max(1) as f64).min(120.0);
    let cell_h = ((HEIGHT - 2.0 * MARGIN) / rows.len().max(1) as f64).min(48.0);
    let all = values.iter().flatten().copied();
    let (low, high) = all.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let span = if high > low { high - low } else { 1.0 };
    let mut svg = header(title);
    let left = MARGIN + 80.0;
    for (c, label) in cols.iter().enumerate() {
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{}" font-size="11" text-anchor="middle">{}</text>"##,
            left + cell_w * (c as f64 + 0.5),
            MARGIN - 8.0,
            escape(label)
        );
    }
    for (r, label) in rows.iter().enumerate() {
        let y = MARGIN + cell_h * r as f64;
        let _ = write!(
            svg,
            r##"<text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            left - 6.0,
            y + cell_h / 2.0 + 4.0,
            escape(label)
        );
        for (c, &value) in values[r].iter().enumerate() {
            let t = (value - low) / span;
            let shade = |full: f64| (255.0 - t * (255.0 - full)).round() as u8;
            let _ = write!(
                svg,
                r##"<rect x="{:.1}" y="{:.1}" width="{cell_w:.1}" height="{cell_h:.1}" fill="rgb({},{},{})" stroke="#fff"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{value:.3}</text>"##,
                left + cell_w * c as f64,
                y,
                shade(31.0),
                shade(111.0),
                shade(209.0),
                left + cell_w * (c as f64 + 0.5),
                y + cell_h / 2.0 + 4.0
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn header(title: &str) -> String {
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif"><rect width="100%" height="100%" fill="#fff"/><text x="{}" y="24" font-size="15" text-anchor="middle">{}</text>"##,
        WIDTH / 2.0,
        escape(title)
    )
}
