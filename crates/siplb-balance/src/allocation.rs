//! The load one call holds on one destination, released exactly once.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::inline::InlineVec;
use crate::ledger::{Booking, Ledger, Take, TakeKind};
use crate::names::NameTransport;
use crate::resources::ResourceId;
use crate::table::Destination;
use crate::uri::Host;

/// One call's hold on one destination: one unit of load on each resource it asked for.
///
/// The load is given back exactly once: when the allocation is dropped, or earlier through
/// [`Allocation::release`], which consumes it. It cannot be cloned, so the increment and the
/// decrement are paired by construction and a load can never go below zero.
///
/// The allocation keeps the destination it was taken on alive, including across a reload that
/// removes or changes that destination: it then decrements the counters it incremented, which
/// the new table either shares (same id, group and URI) or no longer sees.
pub struct Allocation {
    destination: Arc<Destination>,
    /// Indices into the destination's slots, in request order.
    slots: InlineVec<u8, 8>,
    /// In a cluster: the ledger that counts it in the shared store. Boxed: alone,
    /// every call's allocation pays one null pointer for it, not the booking's size.
    booking: Option<Box<Booking>>,
}

/// Who to tell about an allocation being made (a cluster's ledger) and how it is made.
pub(crate) struct Report<'a> {
    pub(crate) ledger: Option<&'a Arc<dyn Ledger>>,
    pub(crate) ticket: u64,
    pub(crate) kind: TakeKind,
}

impl Allocation {
    /// Takes one unit of every requested resource, or nothing if the destination lacks one.
    pub(crate) fn take(
        destination: &Arc<Destination>,
        request: &[ResourceId],
        report: Report<'_>,
    ) -> Option<Self> {
        let mut slots = InlineVec::new();
        for &resource in request {
            let index = destination.slot_index(resource)?;
            // Rows hold at most MAX_RESOURCES_PER_DESTINATION (255) slots.
            slots.push(u8::try_from(index).ok()?);
        }
        for &i in slots.as_slice() {
            destination.slots[usize::from(i)]
                .load
                .fetch_add(1, Ordering::Relaxed);
        }
        let booking = report.ledger.map(|ledger| {
            ledger.taken(Take {
                ticket: report.ticket,
                kind: report.kind,
                destination: destination.id,
                resources: slots
                    .as_slice()
                    .iter()
                    .map(|&i| {
                        let slot = &destination.slots[usize::from(i)];
                        (Arc::clone(&slot.name), slot.capacity())
                    })
                    .collect(),
            });
            Box::new(Booking {
                ledger: Arc::clone(ledger),
                ticket: report.ticket,
                kind: report.kind,
            })
        });
        Some(Self {
            destination: Arc::clone(destination),
            slots,
            booking,
        })
    }

    /// In a cluster, for a call chosen by load: the ticket the shared store's answer
    /// will name, which the call must wait for before it goes out.
    pub fn reservation(&self) -> Option<u64> {
        self.booking
            .as_ref()
            .filter(|b| b.kind == TakeKind::Reserve)
            .map(|b| b.ticket)
    }

    /// Gives the load back now instead of at drop.
    pub fn release(self) {
        drop(self);
    }

    /// The destination's `id`.
    pub fn destination_id(&self) -> u32 {
        self.destination.id
    }

    /// The destination's group.
    pub fn group(&self) -> u32 {
        self.destination.group
    }

    /// Where to send the call (the row's `dst_uri`).
    pub fn uri(&self) -> &str {
        &self.destination.uri
    }

    /// Host of the URI, for the transport layer to resolve.
    pub fn host(&self) -> &Host {
        &self.destination.host
    }

    /// For a URI naming a host: the addresses it resolved to, in the order to try them
    /// (none for an IP literal, which the URI itself says how to reach).
    pub fn addresses(&self) -> Option<Arc<[SocketAddr]>> {
        self.destination
            .name
            .as_ref()
            .map(|n| Arc::clone(&n.resolution().addresses))
    }

    /// How the URI asks to be reached (`sips:`, `transport=`), for a named destination.
    pub fn transport(&self) -> NameTransport {
        self.destination
            .name
            .as_ref()
            .map_or(NameTransport::Udp, |n| n.name().transport)
    }

    /// Port of the URI; 0 when the URI has none.
    pub fn port(&self) -> u16 {
        self.destination.port
    }

    /// The row's opaque `attrs`.
    pub fn attrs(&self) -> Option<&str> {
        self.destination.attrs.as_deref()
    }

    /// Names of the resources held, in request order.
    pub fn resources(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.slots
            .as_slice()
            .iter()
            .map(|&i| &*self.destination.slots[usize::from(i)].name)
    }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        for &i in self.slots.as_slice() {
            let previous = self.destination.slots[usize::from(i)]
                .load
                .fetch_sub(1, Ordering::Relaxed);
            debug_assert!(previous > 0, "load released more often than taken");
        }
        if let Some(booking) = &self.booking {
            booking.ledger.released(booking.ticket);
        }
    }
}

impl fmt::Debug for Allocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Allocation")
            .field("destination_id", &self.destination.id)
            .field("group", &self.destination.group)
            .field("uri", &self.destination.uri)
            .field("resources", &self.resources().collect::<Vec<_>>())
            .finish()
    }
}
