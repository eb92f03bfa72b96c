//! The balancer's metrics: load, capacity and status per destination, uptime,
//! version. Written with [`Exposition`]. No I/O.

use std::time::Duration;

use siplb_balance::DestinationSnapshot;

use crate::exposition::{Exposition, Kind};
use crate::state::MiState;

fn per_resource(
    e: &mut Exposition,
    snapshot: &[DestinationSnapshot],
    name: &str,
    help: &str,
    value: impl Fn(&siplb_balance::ResourceSnapshot) -> u32,
) {
    e.family(name, Kind::Gauge, help);
    for d in snapshot {
        let (id, group) = (d.id.to_string(), d.group.to_string());
        for r in &d.resources {
            e.sample(
                name,
                &[
                    ("id", &id),
                    ("group", &group),
                    ("uri", &d.uri),
                    ("resource", &r.name),
                ],
                value(r),
            );
        }
    }
}

fn per_destination(
    e: &mut Exposition,
    snapshot: &[DestinationSnapshot],
    name: &str,
    help: &str,
    value: impl Fn(&DestinationSnapshot) -> u8,
) {
    e.family(name, Kind::Gauge, help);
    for d in snapshot {
        e.sample(
            name,
            &[
                ("id", &d.id.to_string()),
                ("group", &d.group.to_string()),
                ("uri", &d.uri),
            ],
            value(d),
        );
    }
}

/// The balancer's part of `/metrics`, then `extra` as given.
pub(crate) fn render(
    snapshot: &[DestinationSnapshot],
    diverted: u64,
    version: &str,
    uptime: Duration,
    extra: Option<String>,
) -> String {
    let mut e = Exposition::new();
    per_resource(
        &mut e,
        snapshot,
        "siplb_load",
        "Calls currently holding the resource on the destination.",
        |r| r.load,
    );
    per_resource(
        &mut e,
        snapshot,
        "siplb_capacity",
        "Current capacity of the resource on the destination.",
        |r| r.max,
    );
    per_destination(
        &mut e,
        snapshot,
        "siplb_destination_enabled",
        "1 if the destination takes new calls, 0 if disabled.",
        |d| u8::from(d.enabled),
    );
    per_destination(
        &mut e,
        snapshot,
        "siplb_destination_draining",
        "1 while lb_drain keeps new calls away from the destination.",
        |d| u8::from(d.draining),
    );
    per_destination(
        &mut e,
        snapshot,
        "siplb_destination_overload_percent",
        "The reduction of new calls the destination asked for (RFC 7339), 0 when none.",
        |d| d.overload.unwrap_or(0),
    );
    per_destination(
        &mut e,
        snapshot,
        "siplb_destination_addresses",
        "Addresses siplb may send the destination's calls to: 1 for an IP address, what its host name resolved to otherwise (0: not a candidate).",
        |d| {
            d.resolution
                .as_ref()
                .map_or(1, |r| u8::try_from(r.addresses.len()).unwrap_or(u8::MAX))
        },
    );
    e.single(
        "siplb_overload_diverted_total",
        Kind::Counter,
        "Calls sent elsewhere than the destination that asked for fewer (RFC 7339).",
        diverted,
    );
    e.single(
        "siplb_uptime_seconds",
        Kind::Gauge,
        "Seconds since siplb started.",
        uptime.as_secs(),
    );
    e.family(
        "siplb_build_info",
        Kind::Gauge,
        "Always 1; the label carries the version.",
    )
    .sample("siplb_build_info", &[("version", version)], 1);
    if let Some(extra) = extra {
        e.raw(&extra);
    }
    e.finish()
}

impl MiState {
    /// The `GET /metrics` body: per destination and resource load and capacity, per
    /// destination status, uptime and version, then the [`crate::MetricsSource`]'s lines.
    pub async fn render_metrics(&self) -> String {
        let extra = match &self.metrics {
            Some(source) => Some(source.render().await),
            None => None,
        };
        render(
            &self.balancer.snapshot(),
            self.balancer.diverted(),
            &self.version,
            self.started.elapsed(),
            extra,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use siplb_balance::{Balancer, DestinationRow, ResourceRequest};

    use super::*;

    #[test]
    fn gauges_per_destination_and_resource() {
        let (balancer, _) = Balancer::with_rows([
            DestinationRow::new(1, 1, "sip:127.0.0.1:5071", "vm=50;pstn=32"),
            DestinationRow::new(2, 3, "sip:127.0.0.1:5072", "vm=100"),
        ]);
        let balancer = Arc::new(balancer);
        let held = balancer
            .restore(1, &ResourceRequest::parse("pstn").unwrap())
            .unwrap();
        balancer.set_status_by_operator(2, false).unwrap();
        let s = MiState::new(balancer)
            .with_version("siplb 1.2.3")
            .with_metrics(Arc::new(|| async {
                "# TYPE siplb_calls_routed_total counter\nsiplb_calls_routed_total 7".to_owned()
            }));
        let text = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(s.render_metrics());
        let expected_lines = [
            "# HELP siplb_load Calls currently holding the resource on the destination.",
            "# TYPE siplb_load gauge",
            r#"siplb_load{id="1",group="1",uri="sip:127.0.0.1:5071",resource="vm"} 0"#,
            r#"siplb_load{id="1",group="1",uri="sip:127.0.0.1:5071",resource="pstn"} 1"#,
            r#"siplb_load{id="2",group="3",uri="sip:127.0.0.1:5072",resource="vm"} 0"#,
            "# TYPE siplb_capacity gauge",
            r#"siplb_capacity{id="1",group="1",uri="sip:127.0.0.1:5071",resource="vm"} 50"#,
            r#"siplb_capacity{id="1",group="1",uri="sip:127.0.0.1:5071",resource="pstn"} 32"#,
            r#"siplb_capacity{id="2",group="3",uri="sip:127.0.0.1:5072",resource="vm"} 100"#,
            "# TYPE siplb_destination_enabled gauge",
            r#"siplb_destination_enabled{id="1",group="1",uri="sip:127.0.0.1:5071"} 1"#,
            r#"siplb_destination_enabled{id="2",group="3",uri="sip:127.0.0.1:5072"} 0"#,
            r#"siplb_destination_draining{id="1",group="1",uri="sip:127.0.0.1:5071"} 0"#,
            r#"siplb_destination_overload_percent{id="2",group="3",uri="sip:127.0.0.1:5072"} 0"#,
            "siplb_overload_diverted_total 0",
            "# TYPE siplb_uptime_seconds gauge",
            r#"siplb_build_info{version="siplb 1.2.3"} 1"#,
            "siplb_calls_routed_total 7",
        ];
        let lines: Vec<&str> = text.lines().collect();
        for line in expected_lines {
            assert!(lines.contains(&line), "missing {line:?} in\n{text}");
        }
        assert!(text.ends_with("siplb_calls_routed_total 7\n"));
        // Every sample line is `name{labels} value` or `name value`.
        for line in lines.iter().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
        drop(held);
    }

    #[test]
    fn empty_table_still_renders_headers() {
        let text = render(&[], 0, "v", Duration::from_secs(5), None);
        assert!(text.contains("# TYPE siplb_load gauge\n"));
        assert!(text.contains("siplb_uptime_seconds 5\n"));
    }
}
