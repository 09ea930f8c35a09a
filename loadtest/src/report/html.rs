//! `report`: one or more results as one self-contained HTML page (inline SVG, no scripts,
//! no external resources): when, where and against what each run ran, a comparison table,
//! a table per stream (telemetry apart from commands), throughput and latency over time,
//! and the latency distribution of each run. Charts take the page's width, with their
//! legends beside the plot, never over it.

use std::fmt::Write;

use crate::report::result::RunResult;
use crate::units::{fmt_bytes, fmt_count, fmt_micros};

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];
const WIDTH: f64 = 1320.0;
const HEIGHT: f64 = 320.0;
const LEFT: f64 = 70.0;
/// The right margin holds the legend.
const RIGHT: f64 = 260.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 45.0;

/// One line of a chart.
struct Series {
    name: String,
    color: &'static str,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

/// How an axis maps values.
#[derive(Clone, Copy, PartialEq)]
enum Scale {
    Linear,
    Log10,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// "Nice" tick values covering `lo..=hi`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-9);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(mag * 10.0);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 && out.len() < 20 {
        out.push(t);
        t += step;
    }
    out
}

fn fmt_tick(v: f64) -> String {
    if v.abs() >= 1e4 {
        fmt_count(v)
    } else if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// An SVG line chart.
fn chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    y_scale: Scale,
    x_ticks: Option<&[(f64, &str)]>,
) -> String {
    let mut svg = String::new();
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(_, y)| y_scale == Scale::Linear || *y > 0.0)
        .collect();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        svg,
        r#"<text x="{}" y="18" font-size="13" font-weight="bold">{}</text>"#,
        LEFT,
        esc(title)
    );
    if all.is_empty() {
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}">no data</text></svg>"#,
            WIDTH / 2.0 - 20.0,
            HEIGHT / 2.0
        );
        return svg;
    }
    let fy = |y: f64| match y_scale {
        Scale::Linear => y,
        Scale::Log10 => y.max(1e-9).log10(),
    };
    let (mut x0, mut x1) = (f64::MAX, f64::MIN);
    let (mut y0, mut y1) = (f64::MAX, f64::MIN);
    for &(x, y) in &all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(fy(y));
        y1 = y1.max(fy(y));
    }
    if y_scale == Scale::Linear {
        y0 = y0.min(0.0);
    } else {
        y0 = y0.floor();
        y1 = y1.ceil().max(y0 + 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    let pw = WIDTH - LEFT - RIGHT;
    let ph = HEIGHT - TOP - BOTTOM;
    let px = |x: f64| LEFT + (x - x0) / (x1 - x0) * pw;
    let py = |y: f64| TOP + ph - (fy(y) - y0) / (y1 - y0) * ph;
    let _ = write!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##
    );
    // Y grid and labels.
    let y_values: Vec<f64> = match y_scale {
        Scale::Linear => ticks(y0, y1),
        Scale::Log10 => (y0 as i32..=y1 as i32).map(|e| 10f64.powi(e)).collect(),
    };
    for v in y_values {
        let y = py(v);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 5.0,
            y + 4.0,
            fmt_tick(v)
        );
    }
    // X labels.
    let x_values: Vec<(f64, String)> = match x_ticks {
        Some(t) => t.iter().map(|(v, l)| (*v, (*l).to_owned())).collect(),
        None => ticks(x0, x1)
            .into_iter()
            .map(|v| (v, fmt_tick(v)))
            .collect(),
    };
    for (v, label) in x_values {
        if v < x0 - 1e-9 || v > x1 + 1e-9 {
            continue;
        }
        let x = px(v);
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{}" stroke="#eee"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph + 15.0,
            esc(&label)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        HEIGHT - 8.0,
        esc(x_label)
    );
    let _ = write!(
        svg,
        r#"<text transform="translate(14 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
        TOP + ph / 2.0,
        esc(y_label)
    );
    for (i, s) in series.iter().enumerate() {
        let points: Vec<String> = s
            .points
            .iter()
            .filter(|(_, y)| y_scale == Scale::Linear || *y > 0.0)
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        if points.is_empty() {
            continue;
        }
        let dash = if s.dashed {
            r#" stroke-dasharray="5,3""#
        } else {
            ""
        };
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.6"{dash} points="{}"/>"#,
            s.color,
            points.join(" ")
        );
        // The legend, in the right margin beside the plot.
        let ly = TOP + 8.0 + 15.0 * i as f64;
        let lx = WIDTH - RIGHT + 20.0;
        let _ = write!(
            svg,
            r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            lx,
            lx + 20.0,
            s.color,
            lx + 25.0,
            ly + 4.0,
            esc(&s.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The latency distribution as (-log10(1 - quantile), milliseconds) points.
fn percentile_points(histogram: &[(u64, u64)]) -> Vec<(f64, f64)> {
    let total: u64 = histogram.iter().map(|&(_, c)| c).sum();
    if total == 0 {
        return Vec::new();
    }
    let mut points = Vec::with_capacity(histogram.len() + 1);
    let mut seen = 0u64;
    for &(value, count) in histogram {
        let before = seen as f64 / total as f64;
        seen += count;
        let after = seen as f64 / total as f64;
        let ms = value as f64 / 1000.0;
        points.push((-(1.0 - before).max(1e-5).log10(), ms));
        points.push((-(1.0 - after).max(1e-5).log10(), ms));
    }
    points
}

fn table(results: &[RunResult]) -> String {
    let mut t = String::from(
        "<table><tr><th>run</th><th>scenario</th><th>clients</th><th>sent/s</th><th>received/s</th>\
         <th>p50</th><th>p99</th><th>p99.9</th><th>max</th><th>lost</th><th>dups</th>\
         <th>errors</th><th>connect/s</th><th>broker CPU µs/msg</th><th>broker RSS</th>\
         <th>tool CPU</th><th>result</th></tr>",
    );
    for (i, r) in results.iter().enumerate() {
        let l = &r.total.latency;
        let errors: u64 = r.errors.values().sum();
        let _ = write!(
            t,
            "<tr><td><span class=\"sw\" style=\"background:{}\"></span>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ({:.3}%)</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}%</td><td>{}</td></tr>",
            COLORS[i % COLORS.len()],
            esc(&r.label),
            esc(&r.scenario),
            r.connections.target,
            fmt_count(r.total.sent_per_s),
            fmt_count(r.total.received_per_s),
            fmt_micros(l.p50_us),
            fmt_micros(l.p99_us),
            fmt_micros(l.p999_us),
            fmt_micros(l.max_us),
            r.total.lost,
            r.total.loss_percent,
            r.total.duplicates,
            errors,
            fmt_count(r.connections.rate_per_s),
            r.broker_usage
                .as_ref()
                .and_then(|b| b.cpu_us_per_msg)
                .map_or("–".to_owned(), |v| format!("{v:.2}")),
            r.broker_usage
                .as_ref()
                .map_or("–".to_owned(), |b| fmt_bytes(b.meter.rss_peak_bytes)),
            r.tool_usage.meter.cpu_percent,
            if r.passed { "ok" } else { "<b>failed</b>" },
        );
    }
    t.push_str("</table>");
    t
}

/// Each run's streams apart (telemetry, commands, ...): rates, loss, latency.
fn streams(results: &[RunResult]) -> String {
    let mut t = String::from(
        "<table><tr><th>run</th><th>stream</th><th>sent</th><th>received</th><th>sent/s</th>\
         <th>received/s</th><th>lost</th><th>dups</th><th>reordered</th><th>p50</th><th>p99</th>\
         <th>p99.9</th><th>max</th></tr>",
    );
    for (i, r) in results.iter().enumerate() {
        for stream in &r.streams {
            let l = &stream.latency;
            let _ = write!(
                t,
                "<tr><td><span class=\"sw\" style=\"background:{}\"></span>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ({:.3}%)</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                COLORS[i % COLORS.len()],
                esc(&r.label),
                esc(&stream.name),
                fmt_count(stream.sent as f64),
                fmt_count(stream.received as f64),
                fmt_count(stream.sent_per_s),
                fmt_count(stream.received_per_s),
                stream.lost,
                stream.loss_percent,
                stream.duplicates,
                stream.reordered,
                fmt_micros(l.p50_us),
                fmt_micros(l.p99_us),
                fmt_micros(l.p999_us),
                fmt_micros(l.max_us),
            );
        }
    }
    t.push_str("</table>");
    t
}

/// `YYYY-MM-DD HH:MM:SS UTC` of Unix milliseconds (Howard Hinnant's civil-from-days).
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// When, where and against what each run ran.
fn provenance(results: &[RunResult]) -> String {
    let mut p = String::from(
        "<table><tr><th>run</th><th>started</th><th>host</th><th>broker</th><th>MQTT</th>\
         <th>workers</th><th>tool</th></tr>",
    );
    for (i, r) in results.iter().enumerate() {
        let brokers = if r.brokers.len() > 1 {
            format!("{} (placement {})", r.brokers.join(", "), r.placement)
        } else {
            r.broker_urls().join(", ")
        };
        let _ = write!(
            p,
            "<tr><td><span class=\"sw\" style=\"background:{}\"></span>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} {}</td></tr>",
            COLORS[i % COLORS.len()],
            esc(&r.label),
            utc(r.started_unix_ms),
            esc(if r.host.is_empty() { "–" } else { &r.host }),
            esc(&brokers),
            match r.mqtt_version {
                3 => "3.1",
                4 => "3.1.1",
                5 => "5.0",
                _ => "?",
            },
            r.workers,
            esc(&r.tool),
            esc(&r.version),
        );
    }
    p.push_str("</table>");
    p
}

fn details(r: &RunResult) -> String {
    let mut d = format!(
        "<details open><summary>{}</summary><pre>{}</pre></details>",
        esc(&r.label),
        esc(&crate::report::summary::render(r))
    );
    let _ = write!(d, "<p class=\"cmd\"><code>{}</code></p>", esc(&r.command));
    d
}

/// The page.
pub fn render(results: &[RunResult], title: &str) -> String {
    let color = |i: usize| COLORS[i % COLORS.len()];
    let mut throughput = Vec::new();
    let mut latency = Vec::new();
    let mut distribution = Vec::new();
    for (i, r) in results.iter().enumerate() {
        let samples = r.samples.iter().filter(|s| s.phase != "stopping");
        throughput.push(Series {
            name: format!("{} received", r.label),
            color: color(i),
            dashed: false,
            points: samples.clone().map(|s| (s.t, s.received as f64)).collect(),
        });
        throughput.push(Series {
            name: format!("{} sent", r.label),
            color: color(i),
            dashed: true,
            points: samples.clone().map(|s| (s.t, s.sent as f64)).collect(),
        });
        let with_data = samples.filter(|s| s.received > 0);
        latency.push(Series {
            name: format!("{} p99", r.label),
            color: color(i),
            dashed: false,
            points: with_data
                .clone()
                .map(|s| (s.t, s.p99_us as f64 / 1000.0))
                .collect(),
        });
        latency.push(Series {
            name: format!("{} p50", r.label),
            color: color(i),
            dashed: true,
            points: with_data.map(|s| (s.t, s.p50_us as f64 / 1000.0)).collect(),
        });
        distribution.push(Series {
            name: r.label.clone(),
            color: color(i),
            dashed: false,
            points: percentile_points(&r.total.latency_histogram),
        });
    }
    let percentile_ticks = [
        (0.0, "0%"),
        (1.0, "90%"),
        (2.0, "99%"),
        (3.0, "99.9%"),
        (4.0, "99.99%"),
        (5.0, "99.999%"),
    ];
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>\
         body{{font-family:sans-serif;margin:24px;color:#222}}\
         table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 7px;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}}th{{background:#f3f3f3}}\
         .sw{{display:inline-block;width:10px;height:10px;margin-right:6px}}\
         pre{{background:#f7f7f7;padding:8px;font-size:12px}}.cmd{{font-size:12px;color:#555}}\
         svg{{max-width:100%;height:auto}}\
         </style></head><body><h1>{t}</h1>",
        t = esc(title)
    );
    page.push_str(&provenance(results));
    page.push_str("<h2>Results</h2>");
    page.push_str(&table(results));
    page.push_str("<h2>Streams</h2>");
    page.push_str(&streams(results));
    page.push_str("<h2>Throughput</h2>");
    page.push_str(&chart(
        "messages per second (solid: received, dashed: sent)",
        "seconds",
        "msgs/s",
        &throughput,
        Scale::Linear,
        None,
    ));
    page.push_str("<h2>Latency over time</h2>");
    page.push_str(&chart(
        "end-to-end latency per second (solid: p99, dashed: p50)",
        "seconds",
        "ms",
        &latency,
        Scale::Log10,
        None,
    ));
    page.push_str("<h2>Latency distribution</h2>");
    page.push_str(&chart(
        "end-to-end latency by percentile, whole run",
        "percentile",
        "ms",
        &distribution,
        Scale::Log10,
        Some(&percentile_ticks),
    ));
    page.push_str("<h2>Runs</h2>");
    for r in results {
        page.push_str(&details(r));
    }
    page.push_str("</body></html>\n");
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::result::Sample;

    #[test]
    fn renders_a_self_contained_page_with_three_charts() {
        let mut r = RunResult {
            label: "a <b>".to_owned(),
            ..RunResult::default()
        };
        r.samples = (1..=3)
            .map(|t| Sample {
                t: f64::from(t),
                phase: "running".to_owned(),
                sent: 100,
                received: 100,
                p50_us: 200,
                p99_us: 900,
                ..Sample::default()
            })
            .collect();
        r.total.latency_histogram = vec![(200, 90), (900, 9), (5000, 1)];
        let page = render(&[r.clone(), r], "t");
        assert_eq!(page.matches("<svg").count(), 3);
        assert_eq!(page.matches("<polyline").count(), 10);
        assert!(page.contains("a &lt;b&gt;"));
        assert!(!page.contains("<script"));
        assert!(page.contains("<details open>"), "the summary is shown");
    }

    #[test]
    fn the_page_says_when_where_and_splits_the_streams() {
        let mut r = RunResult {
            label: "fleet".to_owned(),
            started_unix_ms: 1_764_806_400_000,
            host: "bench-1".to_owned(),
            broker: "mqtt://127.0.0.1:1883".to_owned(),
            ..RunResult::default()
        };
        for name in ["telemetry", "commands"] {
            r.streams.push(crate::report::result::StreamResult {
                name: name.to_owned(),
                sent: 10,
                received: 10,
                ..Default::default()
            });
        }
        let page = render(&[r], "t");
        assert!(page.contains("2025-12-04 00:00:00 UTC"), "{page}");
        assert!(page.contains("bench-1"));
        assert!(page.contains("mqtt://127.0.0.1:1883"));
        assert!(page.contains("<td>telemetry</td>") && page.contains("<td>commands</td>"));
    }

    #[test]
    fn the_page_names_the_placement_over_several_brokers() {
        let r = RunResult {
            broker: "mqtt://127.0.0.1:1883".to_owned(),
            brokers: vec![
                "mqtt://127.0.0.1:1883".to_owned(),
                "mqtt://127.0.0.1:1884".to_owned(),
            ],
            placement: crate::scenario::Placement::Cross,
            ..RunResult::default()
        };
        let page = render(&[r], "t");
        assert!(
            page.contains("mqtt://127.0.0.1:1883, mqtt://127.0.0.1:1884 (placement cross)"),
            "{page}"
        );
    }

    #[test]
    fn legends_sit_beside_the_plot_not_over_it() {
        let series: Vec<Series> = (0..6)
            .map(|i| Series {
                name: format!("s{i}"),
                color: COLORS[i],
                dashed: false,
                points: vec![(0.0, 1.0), (10.0, 2.0)],
            })
            .collect();
        let svg = chart("t", "x", "y", &series, Scale::Linear, None);
        let plot_right = WIDTH - RIGHT;
        for part in svg.split("<line x1=\"").skip(1) {
            let x: f64 = part
                .split('"')
                .next()
                .and_then(|x| x.parse().ok())
                .expect("x1");
            if part.contains("stroke-width=\"2\"") {
                assert!(x > plot_right, "legend at {x}, plot ends at {plot_right}");
            }
        }
        assert!(svg.contains("width=\"100%\""));
    }

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(ticks(0.0, 10.0), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = ticks(0.0, 230_000.0);
        assert_eq!(t[1], 50_000.0);
    }
}
