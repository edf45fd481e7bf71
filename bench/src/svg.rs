//! A horizontal bar chart of the start-up medians on a log scale, as plain SVG.

use crate::report::StartupReport;

const WIDTH: f64 = 900.0;
const LABEL_WIDTH: f64 = 420.0;
const BAR_HEIGHT: f64 = 22.0;
const GAP: f64 = 8.0;
const TOP: f64 = 40.0;

pub fn startup_chart(report: &StartupReport) -> String {
    let rows: Vec<(&str, &str, f64)> = report
        .rows
        .iter()
        .filter_map(|r| Some((r.key.as_str(), r.label.as_str(), r.median()?)))
        .collect();
    let max = rows.iter().map(|r| r.2).fold(1.0, f64::max);
    let min = rows.iter().map(|r| r.2).fold(max, f64::min).min(1.0);
    let (lo, hi) = ((min / 2.0).log10().floor(), max.log10().ceil() + 0.3);
    let plot = WIDTH - LABEL_WIDTH - 20.0;
    let x = |ms: f64| LABEL_WIDTH + (ms.log10() - lo) / (hi - lo) * plot;
    let height = TOP + rows.len() as f64 * (BAR_HEIGHT + GAP) + 30.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">Start-to-exit median, ms (log scale) — {}</text>\n",
        escape(&report.measured_at)
    );
    let mut decade = lo;
    while decade <= hi {
        let ms = 10f64.powf(decade);
        let gx = x(ms);
        svg.push_str(&format!(
            "<line x1=\"{gx:.1}\" y1=\"{TOP}\" x2=\"{gx:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\n\
             <text x=\"{gx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">{}</text>\n",
            height - 25.0,
            height - 10.0,
            trim(ms)
        ));
        decade += 1.0;
    }
    for (i, (key, label, median)) in rows.iter().enumerate() {
        let y = TOP + i as f64 * (BAR_HEIGHT + GAP);
        // wrun's rows: its own runs, the engine floor, and runs through containerd, Docker and
        // Podman with wrun as the runtime.
        let colour = if key.starts_with("wasm")
            || *key == "native"
            || *key == "engine"
            || key.contains("wrun")
        {
            "#2a7ab0"
        } else {
            "#999"
        };
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n\
             <rect x=\"{LABEL_WIDTH}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{BAR_HEIGHT}\" fill=\"{colour}\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\">{:.2}</text>\n",
            LABEL_WIDTH - 8.0,
            y + 15.0,
            escape(&label.replace(['`', '*'], "")),
            (x(*median) - LABEL_WIDTH).max(1.0),
            x(*median) + 4.0,
            y + 15.0,
            median
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

fn trim(ms: f64) -> String {
    if ms >= 1.0 {
        format!("{ms:.0}")
    } else {
        format!("{ms}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
