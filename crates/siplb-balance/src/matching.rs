//! Finding a destination by a call's source address (`lb_is_destination`, `lb_count_call`).
//!
//! Matching is by IP address and port only; the transport is not compared, as in the
//! reference. A destination whose URI names a host matches the addresses its name last
//! resolved to: this crate does no DNS, which belongs to the driver layer.

use std::net::IpAddr;
use std::sync::Arc;

use crate::table::{Destination, Table};

/// The first destination in table order whose address matches. Port 0 on either side matches
/// any port; IPv4-mapped IPv6 sources (dual-stack sockets) match their IPv4 destination.
pub(crate) fn find(
    table: &Table,
    ip: IpAddr,
    port: u16,
    group: Option<u32>,
    only_enabled: bool,
) -> Option<&Arc<Destination>> {
    let ip = ip.to_canonical();
    table.destinations.iter().find(|d| {
        group.is_none_or(|g| d.group == g)
            && (!only_enabled || d.status.is_enabled())
            && (port == 0 || d.port == 0 || port == d.port)
            && d.has_ip(ip)
    })
}
