//! Small hand-written SVG line charts: linear or log y, a time or percentile
//! x axis, a legend, and shaded bands (the measured window). Enough for the
//! three report plots without a plotting crate.

use std::fmt::Write as _;

const W: f64 = 960.0;
const H: f64 = 480.0;
const ML: f64 = 78.0;
const MR: f64 = 210.0;
const MT: f64 = 46.0;
const MB: f64 = 56.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XScale {
    Linear,
    /// x values are percentiles (0..=100) on a log(1 / (1 - p)) axis; 100 is
    /// drawn as "max" half a decade after the last finite percentile.
    Percentile,
}

#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub color: String,
    pub points: Vec<(f64, f64)>,
    pub dash: Option<&'static str>,
    pub width: f64,
    pub opacity: f64,
}

impl Series {
    pub fn new(name: &str, color: &str, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.to_string(),
            color: color.to_string(),
            points,
            dash: None,
            width: 2.0,
            opacity: 1.0,
        }
    }
    pub fn dashed(mut self) -> Series {
        self.dash = Some("7,4");
        self
    }
    pub fn thin(mut self) -> Series {
        self.width = 1.2;
        self
    }
    /// A second line in the same colour (compare plots): lighter, dotted dashes.
    pub fn alt(mut self) -> Series {
        self.opacity = 0.65;
        self.dash = Some(if self.dash.is_some() {
            "2,3"
        } else {
            "10,3,2,3"
        });
        self
    }
}

#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub y_log: bool,
    pub x_scale: XScale,
    pub series: Vec<Series>,
    pub bands: Vec<(f64, f64, String)>,
}

impl Chart {
    pub fn new(title: &str, x_label: &str, y_label: &str) -> Chart {
        Chart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            y_log: false,
            x_scale: XScale::Linear,
            series: Vec::new(),
            bands: Vec::new(),
        }
    }
}

/// Ticks at 1, 2 or 5 × 10^k covering [lo, hi] with about `n` intervals.
pub fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo || n == 0 {
        return vec![lo];
    }
    let raw = (hi - lo) / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 {
        out.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    out
}

/// Log-axis ticks (values, not logs) between 10^lo_exp and 10^hi_exp.
pub fn log_ticks(lo_exp: i32, hi_exp: i32) -> Vec<f64> {
    let mut out = Vec::new();
    let fine = hi_exp - lo_exp <= 2;
    for e in lo_exp..=hi_exp {
        let d = 10f64.powi(e);
        out.push(d);
        if fine && e < hi_exp {
            out.push(2.0 * d);
            out.push(5.0 * d);
        }
    }
    out
}

pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        let s = format!("{v:.1}");
        s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').to_string()
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn pct_x(p: f64) -> f64 {
    -(1.0 - p / 100.0).max(1e-9).log10()
}

pub fn render(c: &Chart) -> String {
    // Data space: x after the x transform, y after the y transform.
    let pct_max_finite = c
        .series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|(x, _)| *x < 100.0)
        .map(|(x, _)| pct_x(*x))
        .fold(0.0f64, f64::max);
    let tx = |x: f64| match c.x_scale {
        XScale::Linear => x,
        XScale::Percentile if x >= 100.0 => pct_max_finite + 0.5,
        XScale::Percentile => pct_x(x),
    };
    let ty = |y: f64| if c.y_log { y.max(1e-6).log10() } else { y };
    let usable = |y: f64| y.is_finite() && (!c.y_log || y > 0.0);

    let pts: Vec<(f64, f64)> = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(x, y)| x.is_finite() && usable(*y))
        .map(|(x, y)| (tx(x), ty(y)))
        .collect();

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(svg, "<rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>");
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"26\" font-size=\"16\" font-weight=\"bold\" text-anchor=\"middle\">{}</text>",
        ML + (W - ML - MR) / 2.0,
        esc(&c.title)
    );
    if pts.is_empty() {
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#666\">no data</text>\n</svg>",
            W / 2.0,
            H / 2.0
        );
        return svg;
    }

    let (mut x0, mut x1) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.0), a.1.max(p.0)));
    if c.x_scale == XScale::Percentile {
        x0 = 0.0;
    }
    for (b0, b1, _) in &c.bands {
        x0 = x0.min(tx(*b0));
        x1 = x1.max(tx(*b1));
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let (ymin, ymax) = pts
        .iter()
        .fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.1), a.1.max(p.1)));
    let (y0, y1, yticks): (f64, f64, Vec<f64>) = if c.y_log {
        let lo = ymin.floor() as i32;
        let mut hi = ymax.ceil() as i32;
        if hi <= lo {
            hi = lo + 1;
        }
        (lo as f64, hi as f64, log_ticks(lo, hi))
    } else {
        let hi = if ymax > 0.0 { ymax * 1.08 } else { 1.0 };
        let lo = ymin.min(0.0);
        let ticks = nice_ticks(lo, hi, 6);
        let top = ticks.last().copied().unwrap_or(hi).max(hi);
        (lo, top, ticks)
    };

    let pw = W - ML - MR;
    let ph = H - MT - MB;
    let sx = |x: f64| ML + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| MT + ph - (y - y0) / (y1 - y0) * ph;

    // Bands first, under everything.
    for (b0, b1, label) in &c.bands {
        let (a, b) = (sx(tx(*b0)), sx(tx(*b1)));
        let _ = writeln!(
            svg,
            "<rect x=\"{a:.1}\" y=\"{MT}\" width=\"{:.1}\" height=\"{ph}\" fill=\"#fff3c4\" opacity=\"0.7\"/>",
            (b - a).max(0.0)
        );
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" fill=\"#8a6d00\">{}</text>",
            (a + b) / 2.0,
            MT + 14.0,
            esc(label)
        );
    }

    // Y grid and labels.
    for v in &yticks {
        let t = ty(*v);
        if t < y0 - 1e-9 || t > y1 + 1e-9 {
            continue;
        }
        let y = sy(t);
        let _ = writeln!(
            svg,
            "<line x1=\"{ML}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#e3e3e3\"/>",
            ML + pw
        );
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            ML - 6.0,
            y + 4.0,
            fmt_num(*v)
        );
    }
    // X grid and labels.
    let xticks: Vec<(f64, String)> = match c.x_scale {
        XScale::Linear => nice_ticks(x0, x1, 8)
            .into_iter()
            .map(|v| (v, fmt_num(v)))
            .collect(),
        XScale::Percentile => {
            let names = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"];
            let mut t: Vec<(f64, String)> = names
                .iter()
                .enumerate()
                .filter(|(i, _)| (*i as f64) <= pct_max_finite + 1e-9)
                .map(|(i, n)| (i as f64, n.to_string()))
                .collect();
            let has_max = c
                .series
                .iter()
                .any(|s| s.points.iter().any(|(x, _)| *x >= 100.0));
            if has_max {
                t.push((pct_max_finite + 0.5, "max".into()));
            }
            t
        }
    };
    for (v, label) in &xticks {
        if *v < x0 - 1e-9 || *v > x1 + 1e-9 {
            continue;
        }
        let x = sx(*v);
        let _ = writeln!(
            svg,
            "<line x1=\"{x:.1}\" y1=\"{MT}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#eeeeee\"/>",
            MT + ph
        );
        let _ = writeln!(
            svg,
            "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            MT + ph + 18.0,
            esc(label)
        );
    }
    // Axes and their labels.
    let _ = writeln!(
        svg,
        "<rect x=\"{ML}\" y=\"{MT}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#333\"/>"
    );
    let _ = writeln!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
        ML + pw / 2.0,
        H - 14.0,
        esc(&c.x_label)
    );
    let _ = writeln!(
        svg,
        "<text transform=\"translate(18,{:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        MT + ph / 2.0,
        esc(&c.y_label)
    );

    // Lines, clipped to the plot area.
    let _ = writeln!(
        svg,
        "<clipPath id=\"plot\"><rect x=\"{ML}\" y=\"{MT}\" width=\"{pw}\" height=\"{ph}\"/></clipPath>"
    );
    for s in &c.series {
        let mut p = String::new();
        for (x, y) in s.points.iter().filter(|(x, y)| x.is_finite() && usable(*y)) {
            let _ = write!(p, "{:.1},{:.1} ", sx(tx(*x)), sy(ty(*y)));
        }
        let dash = s
            .dash
            .map(|d| format!(" stroke-dasharray=\"{d}\""))
            .unwrap_or_default();
        let _ = writeln!(
            svg,
            "<polyline clip-path=\"url(#plot)\" fill=\"none\" stroke=\"{}\" stroke-width=\"{}\" stroke-opacity=\"{}\"{dash} stroke-linejoin=\"round\" points=\"{}\"/>",
            s.color,
            s.width,
            s.opacity,
            p.trim_end()
        );
    }

    // Legend.
    let lx = ML + pw + 16.0;
    for (i, s) in c.series.iter().enumerate() {
        let y = MT + 10.0 + i as f64 * 20.0;
        let dash = s
            .dash
            .map(|d| format!(" stroke-dasharray=\"{d}\""))
            .unwrap_or_default();
        let _ = writeln!(
            svg,
            "<line x1=\"{lx:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{}\" stroke-width=\"{}\" stroke-opacity=\"{}\"{dash}/>",
            lx + 28.0,
            s.color,
            s.width.max(2.0),
            s.opacity
        );
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            lx + 34.0,
            y + 4.0,
            esc(&s.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ticks_are_round_and_cover_the_range() {
        assert_eq!(
            nice_ticks(0.0, 10.0, 5),
            vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
        );
        assert_eq!(nice_ticks(0.0, 97.0, 5), vec![0.0, 20.0, 40.0, 60.0, 80.0]);
        let t = nice_ticks(0.0, 0.37, 4);
        assert_eq!(t.len(), 4);
        assert!((t[1] - 0.1).abs() < 1e-12);
        assert_eq!(nice_ticks(5.0, 5.0, 4), vec![5.0]);
    }

    #[test]
    fn log_ticks_by_decade() {
        assert_eq!(log_ticks(0, 1), vec![1.0, 2.0, 5.0, 10.0]);
        assert_eq!(log_ticks(-1, 3).len(), 5);
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(fmt_num(0.0), "0");
        assert_eq!(fmt_num(0.1), "0.1");
        assert_eq!(fmt_num(0.02), "0.02");
        assert_eq!(fmt_num(2.0), "2");
        assert_eq!(fmt_num(2.5), "2.5");
        assert_eq!(fmt_num(1000.0), "1000");
    }

    #[test]
    fn renders_lines_legend_and_bands() {
        let mut c = Chart::new("t <&>", "x", "y");
        c.y_log = true;
        c.series.push(Series::new(
            "a",
            "#f00",
            vec![(1.0, 0.5), (2.0, 5.0), (3.0, 0.0)],
        ));
        c.series
            .push(Series::new("b", "#00f", vec![(1.0, 50.0)]).dashed());
        c.bands.push((1.5, 2.5, "measured".into()));
        let svg = render(&c);
        assert!(svg.contains("t &lt;&amp;&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("measured"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        assert!(svg.contains(">100<") || svg.contains(">10<"));
    }

    #[test]
    fn percentile_axis_and_empty_chart() {
        let mut c = Chart::new("d", "percentile", "ms");
        c.x_scale = XScale::Percentile;
        c.series.push(Series::new(
            "p",
            "#000",
            vec![(0.0, 1.0), (99.0, 2.0), (99.9, 3.0), (100.0, 4.0)],
        ));
        let svg = render(&c);
        assert!(svg.contains(">99.9%<") && svg.contains(">max<"));
        let empty = render(&Chart::new("e", "x", "y"));
        assert!(empty.contains("no data") && empty.trim_end().ends_with("</svg>"));
    }
}
