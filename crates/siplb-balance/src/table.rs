//! The loaded destination table: destinations in table order, per-group member lists, and the
//! carrying over of live state (loads, statuses, group locks) from the previous table.
//!
//! A table is immutable once built except for its atomics (capacities, loads, statuses); a
//! reload builds a new one and swaps it in. Load counters and statuses are behind `Arc`s so
//! that a destination that survives the reload shares them with its previous incarnation, and
//! so that an allocation taken on the old table still decrements the very counters it
//! incremented.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use parking_lot::Mutex;

use crate::names::{Name, NameCell, Names};
use crate::overload::OverloadCell;
use crate::rate::{Window, max_cps};
use crate::resources::{ResourceId, parse_capacities, registry};
use crate::row::{DestinationRow, RowError, RowFault};
use crate::status::StatusCell;
use crate::uri::{Host, parse_dst_uri};

#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) resource: ResourceId,
    pub(crate) name: Arc<str>,
    pub(crate) capacity: AtomicU32,
    /// This node's calls on it.
    pub(crate) load: Arc<AtomicU32>,
    /// In a cluster, the other nodes' calls on it, as last read from the shared store.
    pub(crate) remote: Arc<AtomicU32>,
}

impl Slot {
    pub(crate) fn capacity(&self) -> u32 {
        self.capacity.load(Ordering::Relaxed)
    }

    /// Every node's calls on it: what selection and listings go by.
    pub(crate) fn load(&self) -> u32 {
        self.local()
            .saturating_add(self.remote.load(Ordering::Relaxed))
    }

    /// This node's calls on it.
    pub(crate) fn local(&self) -> u32 {
        self.load.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
pub(crate) struct Destination {
    pub(crate) id: u32,
    pub(crate) group: u32,
    pub(crate) uri: Arc<str>,
    pub(crate) host: Host,
    pub(crate) port: u16,
    /// For a URI naming a host: what the resolver last found for it.
    pub(crate) name: Option<Arc<NameCell>>,
    pub(crate) probe_mode: i32,
    pub(crate) attrs: Option<Arc<str>>,
    pub(crate) description: Option<Arc<str>>,
    pub(crate) status: Arc<StatusCell>,
    /// `max_cps` from `attrs`: the destination's last selections.
    pub(crate) rate: Option<Arc<Window>>,
    /// RFC 7339 feedback in force.
    pub(crate) overload: Arc<OverloadCell>,
    /// In the row's written order, which is also the listing order.
    pub(crate) slots: Box<[Slot]>,
}

impl Destination {
    /// Linear on purpose: a destination offers a handful of resources, and a scan of a
    /// contiguous slice beats a map lookup at that size.
    pub(crate) fn slot_index(&self, resource: ResourceId) -> Option<usize> {
        self.slots.iter().position(|s| s.resource == resource)
    }

    pub(crate) fn slot(&self, resource: ResourceId) -> Option<&Slot> {
        self.slots.iter().find(|s| s.resource == resource)
    }

    pub(crate) fn slot_named(&self, name: &str) -> Option<&Slot> {
        self.slots.iter().find(|s| &*s.name == name)
    }

    /// Whether siplb knows where to send it: always for an IP literal, once resolved for
    /// a name.
    pub(crate) fn has_address(&self) -> bool {
        self.name.as_ref().is_none_or(|n| n.has_address())
    }

    /// Whether a message from `ip` (canonical) may come from it: its IP literal, or one of
    /// the addresses its name resolved to.
    pub(crate) fn has_ip(&self, ip: IpAddr) -> bool {
        match (&self.host, &self.name) {
            (Host::Ip(own), _) => own.to_canonical() == ip,
            (Host::Name(_), Some(cell)) => cell.contains_ip(ip),
            (Host::Name(_), None) => false,
        }
    }

    fn same_identity(&self, row: &DestinationRow) -> bool {
        self.group == row.group_id && self.uri.eq_ignore_ascii_case(row.dst_uri.trim())
    }
}

#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) id: u32,
    /// Indices into `Table::destinations`, in table order.
    pub(crate) members: Box<[u32]>,
    /// Serializes check-and-take within the group. Shared with the same group of the previous
    /// table so that a selection still running on the old table and one on the new table
    /// cannot both take the last slot of a carried-over counter.
    pub(crate) lock: Arc<Mutex<()>>,
}

#[derive(Debug, Default)]
pub(crate) struct Table {
    pub(crate) destinations: Vec<Arc<Destination>>,
    by_id: HashMap<u32, usize>,
    /// Sorted by id.
    groups: Vec<Group>,
    /// Indexed by resource id: whether any destination of the table offers it.
    offered: Vec<bool>,
}

impl Table {
    pub(crate) fn destination(&self, id: u32) -> Option<&Arc<Destination>> {
        self.by_id.get(&id).map(|&i| &self.destinations[i])
    }

    pub(crate) fn group(&self, id: u32) -> Option<&Group> {
        self.groups
            .binary_search_by_key(&id, |g| g.id)
            .ok()
            .map(|i| &self.groups[i])
    }

    pub(crate) fn offers(&self, resource: ResourceId) -> bool {
        self.offered.get(resource.index()).copied().unwrap_or(false)
    }

    /// Builds a table from `rows`, skipping bad rows, and carries over live state from
    /// `previous` for destinations with the same id, group and URI (URI compared without
    /// regard to ASCII case, like the reference).
    pub(crate) fn build(
        rows: impl IntoIterator<Item = DestinationRow>,
        previous: &Table,
        names: &Names,
    ) -> (Table, Vec<RowError>) {
        let mut errors = Vec::new();
        let mut table = Table::default();
        let mut seen = HashSet::new();
        let mut members: BTreeMap<u32, Vec<u32>> = BTreeMap::new();

        for row in rows {
            let skip = |fault| RowError { id: row.id, fault };
            if !seen.insert(row.id) {
                errors.push(skip(RowFault::DuplicateId));
                continue;
            }
            let uri = row.dst_uri.trim();
            let hostport = match parse_dst_uri(uri) {
                Ok(hp) => hp,
                Err(reason) => {
                    errors.push(skip(RowFault::Uri {
                        value: row.dst_uri.clone(),
                        reason,
                    }));
                    continue;
                }
            };
            let capacities = match parse_capacities(&row.resources) {
                Ok(c) => c,
                Err(reason) => {
                    errors.push(skip(RowFault::Resources {
                        value: row.resources.clone(),
                        reason,
                    }));
                    continue;
                }
            };

            let max_cps = match max_cps(row.attrs.as_deref()) {
                Ok(m) => m,
                Err(reason) => {
                    errors.push(skip(RowFault::Attrs {
                        value: row.attrs.clone().unwrap_or_default(),
                        reason,
                    }));
                    continue;
                }
            };

            let old = previous
                .destination(row.id)
                .filter(|old| old.same_identity(&row));
            // The window carries over while the cap stays, so a reload cannot reopen a
            // second's worth of calls.
            let rate = max_cps.map(|cap| {
                old.and_then(|o| o.rate.as_ref())
                    .filter(|w| w.cap() == cap)
                    .map_or_else(|| Arc::new(Window::new(cap)), Arc::clone)
            });
            let mut registry = registry();
            let slots = capacities
                .into_iter()
                .map(|(name, capacity)| {
                    let (resource, name) = registry.intern(name);
                    // Counters follow the resource name, so calls up keep counting on a
                    // resource that survives; a new resource starts at zero.
                    let old_slot = old.and_then(|o| o.slot(resource));
                    let load = old_slot.map_or_else(Arc::default, |s| Arc::clone(&s.load));
                    let remote = old_slot.map_or_else(Arc::default, |s| Arc::clone(&s.remote));
                    if table.offered.len() <= resource.index() {
                        table.offered.resize(resource.index() + 1, false);
                    }
                    table.offered[resource.index()] = true;
                    Slot {
                        resource,
                        name,
                        capacity: AtomicU32::new(capacity),
                        load,
                        remote,
                    }
                })
                .collect();
            drop(registry);
            let name = match &hostport.host {
                Host::Ip(_) => None,
                Host::Name(host) => Some(names.cell(Name {
                    host: Arc::clone(host),
                    port: hostport.port,
                    transport: hostport.transport,
                })),
            };

            let index = table.destinations.len();
            let position = u32::try_from(index).unwrap_or(u32::MAX);
            members.entry(row.group_id).or_default().push(position);
            table.by_id.insert(row.id, index);
            table.destinations.push(Arc::new(Destination {
                id: row.id,
                group: row.group_id,
                uri: Arc::from(uri),
                host: hostport.host,
                port: hostport.port,
                name,
                probe_mode: row.probe_mode,
                attrs: row.attrs.map(Arc::from),
                description: row.description.map(Arc::from),
                status: old.map_or_else(Arc::default, |o| Arc::clone(&o.status)),
                rate,
                overload: old.map_or_else(Arc::default, |o| Arc::clone(&o.overload)),
                slots,
            }));
        }

        table.groups = members
            .into_iter()
            .map(|(id, members)| Group {
                id,
                members: members.into(),
                lock: previous
                    .group(id)
                    .map_or_else(Arc::default, |g| Arc::clone(&g.lock)),
            })
            .collect();
        (table, errors)
    }
}
