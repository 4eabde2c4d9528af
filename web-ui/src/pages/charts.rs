//! The Charts page: the selected tenant's allowed and blocked HTTP requests, and its ZTNA tunnel
//! connections (connects and refused attempts), over the last hour, 6 hours, day or week, from
//! the audit trail (`GET /api/audit`, up to 10,000 events of the range), with the fleet's health
//! counts (`GET …/fleet/health`). Drawn as inline SVG by [`BarChart`] (no chart library), each
//! chart with its figures as a table for screen readers and keyboard users.

use sase_model::audit::{Decision, EventKind};
use yew::prelude::*;

use crate::api;
use crate::components::{badge, fmt_time, load_view, no_tenant, now_ms, PageHeader, Tone};
use crate::shell::{use_interval, use_load, use_shell};
use crate::views::{AuditPage, DeviceHealth};

/// Most events one chart reads.
const MAX_EVENTS: usize = 10_000;
/// Bars per chart.
const BUCKETS: usize = 24;

/// Counts `(time, second_series)` points into `n` equal buckets of `[from, to)`: per bucket,
/// how many fell in the first series and how many in the second. Points outside are ignored.
pub fn bucketize(points: &[(i64, bool)], from: i64, to: i64, n: usize) -> Vec<(u64, u64)> {
    let mut out = vec![(0u64, 0u64); n];
    let span = to - from;
    if n == 0 || span <= 0 {
        return out;
    }
    for &(t, second) in points {
        if t < from || t >= to {
            continue;
        }
        let i = usize::try_from((t - from) * n as i64 / span)
            .unwrap_or(0)
            .min(n - 1);
        if second {
            out[i].1 += 1;
        } else {
            out[i].0 += 1;
        }
    }
    out
}

/// The largest figure on the axis: the biggest stacked bar rounded up to 1, 2 or 5 × 10^k.
pub fn axis_max(buckets: &[(u64, u64)]) -> u64 {
    let top = buckets.iter().map(|(a, b)| a + b).max().unwrap_or(0).max(1);
    let mut step = 1u64;
    loop {
        for m in [1, 2, 5] {
            if step * m >= top {
                return step * m;
            }
        }
        step *= 10;
    }
}

/// Properties of a bar chart.
#[derive(Properties, PartialEq)]
pub struct BarChartProps {
    /// Id (the table and title hang off it).
    pub id: AttrValue,
    /// Title.
    pub title: AttrValue,
    /// Per bucket: first and second series.
    pub buckets: Vec<(u64, u64)>,
    /// Start of the range (Unix ms).
    pub from: i64,
    /// End of the range.
    pub to: i64,
    /// Names of the two series (`Allowed`, `Blocked`).
    pub series: (AttrValue, AttrValue),
}

/// Stacked bars (first series below, second on top) with a y axis, as inline SVG.
#[function_component]
pub fn BarChart(props: &BarChartProps) -> Html {
    let (w, h, left, bottom) = (720.0_f64, 220.0_f64, 48.0_f64, 24.0_f64);
    let n = props.buckets.len().max(1);
    let max = axis_max(&props.buckets);
    let plot_h = h - bottom - 8.0;
    let bw = (w - left) / n as f64;
    let y = |v: u64| 8.0 + plot_h - (v as f64 / max as f64) * plot_h;
    let span = (props.to - props.from).max(1);
    let at = |i: usize| props.from + span * i as i64 / n as i64;
    let (a_total, b_total) = props
        .buckets
        .iter()
        .fold((0, 0), |(x, y), (a, b)| (x + a, y + b));
    let title_id = format!("{}-title", props.id);
    html! {
        <figure class="card chart" id={props.id.clone()} aria-labelledby={title_id.clone()}>
            <figcaption id={title_id}>
                <h2>{ &props.title }</h2>
                <span class="legend"><span class="swatch first" aria-hidden="true"></span>{ format!("{} {}", props.series.0, a_total) }</span>
                <span class="legend"><span class="swatch second" aria-hidden="true"></span>{ format!("{} {}", props.series.1, b_total) }</span>
            </figcaption>
            <svg viewBox={format!("0 0 {w} {h}")} role="img" aria-label={format!("{}: {} {}, {} {}", props.title, props.series.0, a_total, props.series.1, b_total)}>
                { for [0, max / 2, max].iter().map(|v| html! {
                    <g class="grid">
                        <line x1={left.to_string()} x2={w.to_string()} y1={y(*v).to_string()} y2={y(*v).to_string()} />
                        <text x={(left - 6.0).to_string()} y={(y(*v) + 4.0).to_string()} text-anchor="end">{ v }</text>
                    </g>
                }) }
                { for props.buckets.iter().enumerate().map(|(i, (a, b))| {
                    let x = left + bw * i as f64 + 1.0;
                    let width = (bw - 2.0).max(1.0);
                    html! {
                        <g>
                            <title>{ format!("{}: {} {a}, {} {b}", fmt_time(at(i)), props.series.0, props.series.1) }</title>
                            <rect class="first" x={x.to_string()} width={width.to_string()} y={y(*a).to_string()} height={(y(0) - y(*a)).to_string()} />
                            <rect class="second" x={x.to_string()} width={width.to_string()} y={y(a + b).to_string()} height={(y(*a) - y(a + b)).to_string()} />
                        </g>
                    }
                }) }
                <text class="axis" x={left.to_string()} y={(h - 6.0).to_string()}>{ fmt_time(props.from) }</text>
                <text class="axis" x={w.to_string()} y={(h - 6.0).to_string()} text-anchor="end">{ fmt_time(props.to) }</text>
            </svg>
            <details>
                <summary>{ "Figures" }</summary>
                <div class="table-wrap"><table>
                    <thead><tr><th>{ "From" }</th><th class="num">{ &props.series.0 }</th><th class="num">{ &props.series.1 }</th></tr></thead>
                    <tbody>{ for props.buckets.iter().enumerate().map(|(i, (a, b))| html! {
                        <tr><td>{ fmt_time(at(i)) }</td><td class="num">{ a }</td><td class="num">{ b }</td></tr>
                    }) }</tbody>
                </table></div>
            </details>
        </figure>
    }
}

/// The ranges offered: label and length (ms).
const RANGES: [(&str, i64); 4] = [
    ("Last hour", 3_600_000),
    ("Last 6 hours", 6 * 3_600_000),
    ("Last 24 hours", 24 * 3_600_000),
    ("Last 7 days", 7 * 24 * 3_600_000),
];

/// The Charts page.
#[function_component]
pub fn ChartsPage() -> Html {
    let shell = use_shell();
    let Some(tenant_id) = shell.tenant_id.clone() else {
        return html! { <><PageHeader title="Charts" />{ no_tenant() }</> };
    };
    html! { <Charts key={tenant_id.clone()} tenant_id={tenant_id.clone()} /> }
}

#[derive(Properties, PartialEq)]
struct Props {
    tenant_id: String,
}

#[function_component]
fn Charts(props: &Props) -> Html {
    let range = use_state(|| 0usize);
    // The range end moves on with each refresh (every 30 s), to a whole minute.
    let to = use_state(|| (now_ms() / 60_000 + 1) * 60_000);
    use_interval(30_000, true, {
        let to = to.clone();
        Callback::from(move |()| to.set((now_ms() / 60_000 + 1) * 60_000))
    });
    let (label, length) = RANGES[(*range).min(RANGES.len() - 1)];
    let from = *to - length;
    let t = api::enc(&props.tenant_id);
    let events = use_load::<AuditPage>(Some(format!(
        "/api/audit?tenant={t}&from_ms={from}&to_ms={}&limit={MAX_EVENTS}",
        *to
    )));
    let health = use_load::<Vec<DeviceHealth>>(Some(format!("/api/tenants/{t}/fleet/health")));
    let to_v = *to;
    html! {
        <>
            <PageHeader title="Charts" subtitle="Allowed and blocked requests and tunnel connections over time, from the audit trail.">
                <label for="chart-range">{ "Range " }</label>
                <select id="chart-range" onchange={{ let r = range.clone(); move |e: Event| r.set(crate::components::input_value(&e).parse().unwrap_or(0)) }}>
                    { for RANGES.iter().enumerate().map(|(i, (l, _))| html! { <option value={i.to_string()} selected={i == *range}>{ *l }</option> }) }
                </select>
            </PageHeader>
            { load_view(&health.state, "fleet health", &health.reload, |list: &Vec<DeviceHealth>| {
                let count = |s: &str| list.iter().filter(|d| d.state == s).count();
                html! { <p class="fleet-summary">
                    { badge(Tone::Good, format!("{} online", count("ok"))) }{ " " }
                    { badge(Tone::Warn, format!("{} lagging", count("lagging"))) }{ " " }
                    { badge(Tone::Bad, format!("{} offline", count("silent"))) }{ " " }
                    { badge(Tone::Plain, format!("{} never connected", count("pending"))) }
                </p> }
            }) }
            { load_view(&events.state, "audit events", &events.reload, |page: &AuditPage| {
                let requests: Vec<(i64, bool)> = page.events.iter()
                    .filter(|e| e.kind == EventKind::HttpRequest)
                    .map(|e| (e.ts_ms, e.decision == Decision::Deny)).collect();
                let tunnels: Vec<(i64, bool)> = page.events.iter()
                    .filter(|e| matches!(e.kind, EventKind::TunnelConnect | EventKind::TunnelDenied))
                    .map(|e| (e.ts_ms, e.kind == EventKind::TunnelDenied || e.decision == Decision::Deny)).collect();
                html! {
                    <>
                        if page.events.len() >= MAX_EVENTS {
                            <p class="muted">{ format!("{label}: showing the latest {MAX_EVENTS} events only.") }</p>
                        }
                        <BarChart id="chart-requests" title={format!("HTTP requests, {}", label.to_lowercase())}
                            buckets={bucketize(&requests, from, to_v, BUCKETS)} from={from} to={to_v}
                            series={(AttrValue::Static("Allowed"), AttrValue::Static("Blocked"))} />
                        <BarChart id="chart-tunnels" title={format!("Tunnel sessions started, {}", label.to_lowercase())}
                            buckets={bucketize(&tunnels, from, to_v, BUCKETS)} from={from} to={to_v}
                            series={(AttrValue::Static("Connected"), AttrValue::Static("Refused"))} />
                    </>
                }
            }) }
        </>
    }
}
