//! Small SVG charts for the evaluation: grouped bars and overlaid histograms, written as text so
//! any browser opens them and no plotting library is needed.

use std::fmt::Write;

/// One series of a chart.
pub struct Series<'a> {
    pub name: &'a str,
    pub colour: &'a str,
    pub values: Vec<f64>,
}

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 110.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The frame: title, y axis from 0 to `y_max` with five grid lines, the legend.
fn frame(out: &mut String, title: &str, y_label: &str, y_max: f64, series: &[Series<'_>]) {
    let plot_h = HEIGHT - TOP - BOTTOM;
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="20" font-size="14" text-anchor="middle">{}</text>
<text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">{}</text>
"#,
        WIDTH / 2.0,
        escape(title),
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        escape(y_label)
    );
    for i in 0..=5 {
        let v = y_max * f64::from(i) / 5.0;
        let y = TOP + plot_h * (1.0 - f64::from(i) / 5.0);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 4.0,
            y + 4.0,
            tick(v)
        );
    }
    for (i, s) in series.iter().enumerate() {
        let x = LEFT + 10.0 + 170.0 * i as f64;
        let _ = writeln!(
            out,
            r#"<rect x="{x:.1}" y="{:.1}" width="12" height="12" fill="{}" fill-opacity="0.8"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            TOP - 16.0,
            s.colour,
            x + 16.0,
            TOP - 6.0,
            escape(s.name)
        );
    }
}

fn tick(v: f64) -> String {
    if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Grouped bars: one group per category, one bar per series, values from 0 to `y_max`.
pub fn bars(
    title: &str,
    y_label: &str,
    categories: &[String],
    series: &[Series<'_>],
    y_max: f64,
) -> String {
    let mut out = String::new();
    frame(&mut out, title, y_label, y_max, series);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let group = plot_w / categories.len().max(1) as f64;
    let bar = group * 0.8 / series.len().max(1) as f64;
    for (c, name) in categories.iter().enumerate() {
        let x0 = LEFT + group * c as f64 + group * 0.1;
        for (i, s) in series.iter().enumerate() {
            let v = s.values.get(c).copied().unwrap_or(0.0).clamp(0.0, y_max);
            let h = plot_h * v / y_max;
            let _ = writeln!(
                out,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}" fill-opacity="0.8"><title>{} {}: {v:.3}</title></rect>"#,
                x0 + bar * i as f64,
                TOP + plot_h - h,
                bar,
                s.colour,
                escape(name),
                escape(s.name)
            );
        }
        let lx = x0 + group * 0.4;
        let ly = TOP + plot_h + 8.0;
        let _ = writeln!(
            out,
            r#"<text x="{lx:.1}" y="{ly:.1}" transform="rotate(50 {lx:.1} {ly:.1})">{}</text>"#,
            escape(name)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Overlaid histograms of each series' values in `bins` equal bins from 0 to `x_max` (larger
/// values fall in the last bin), as the share of each series' samples.
pub fn histogram(
    title: &str,
    x_label: &str,
    series: &[Series<'_>],
    x_max: f64,
    bins: usize,
) -> String {
    let counts: Vec<Vec<f64>> = series
        .iter()
        .map(|s| {
            let mut c = vec![0.0; bins];
            for v in &s.values {
                let b = ((v / x_max * bins as f64) as usize).min(bins - 1);
                c[b] += 1.0;
            }
            let n = s.values.len().max(1) as f64;
            c.into_iter().map(|x| x / n).collect()
        })
        .collect();
    let y_max = counts
        .iter()
        .flatten()
        .copied()
        .fold(0.0f64, f64::max)
        .max(0.01);
    let mut out = String::new();
    frame(&mut out, title, "share of queries", y_max, series);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let bw = plot_w / bins as f64;
    for (s, c) in series.iter().zip(&counts) {
        for (b, v) in c.iter().enumerate() {
            let h = plot_h * v / y_max;
            let _ = writeln!(
                out,
                r#"<rect x="{:.1}" y="{:.1}" width="{bw:.1}" height="{h:.1}" fill="{}" fill-opacity="0.45"/>"#,
                LEFT + bw * b as f64,
                TOP + plot_h - h,
                s.colour
            );
        }
    }
    for i in 0..=10 {
        let x = LEFT + plot_w * f64::from(i) / 10.0;
        let _ = writeln!(
            out,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            TOP + plot_h + 16.0,
            tick(x_max * f64::from(i) / 10.0)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + plot_w / 2.0,
        TOP + plot_h + 40.0,
        escape(x_label)
    );
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_draw_one_rectangle_per_value_scaled_to_the_axis() {
        let svg = bars(
            "t <1>",
            "recall",
            &["a".into(), "b".into()],
            &[
                Series {
                    name: "x",
                    colour: "#123",
                    values: vec![1.0, 0.5],
                },
                Series {
                    name: "y",
                    colour: "#456",
                    values: vec![0.25, 0.0],
                },
            ],
            1.0,
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("t &lt;1&gt;"));
        assert_eq!(svg.matches("<title>").count(), 4);
        let plot_h = HEIGHT - TOP - BOTTOM;
        assert!(svg.contains(&format!("height=\"{plot_h:.1}\"")));
        assert!(svg.contains(&format!("height=\"{:.1}\"", plot_h / 2.0)));
    }

    #[test]
    fn histogram_shares_sum_to_one_and_overflow_goes_to_the_last_bin() {
        let svg = histogram(
            "lat",
            "ms",
            &[Series {
                name: "total",
                colour: "#000",
                values: vec![1.0, 1.2, 3.0, 100.0],
            }],
            10.0,
            10,
        );
        // Tallest bin holds half the samples and fills the plot height.
        let plot_h = HEIGHT - TOP - BOTTOM;
        assert_eq!(
            svg.matches(&format!("height=\"{plot_h:.1}\" fill=\"#000\""))
                .count(),
            1
        );
        assert_eq!(
            svg.matches(&format!("height=\"{:.1}\" fill=\"#000\"", plot_h / 2.0))
                .count(),
            2
        );
    }
}
