//! The shared handle: the current table behind an `ArcSwap`, and every operation on it.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::allocation::{Allocation, Report};
use crate::errors::{AttachError, DestinationNotFound, ResizeError};
use crate::flags::Flags;
use crate::ledger::{Ledger, TakeKind};
use crate::matching;
use crate::names::{Name, NameCell, Names};
use crate::overload::OverloadFeedback;
use crate::rate::Clock;
use crate::resources::ResourceRequest;
use crate::row::{DestinationRow, RowError};
use crate::select::{self, Live, Outcome};
use crate::shared::SharedState;
use crate::snapshot::{DestinationInfo, DestinationSnapshot};
use crate::status::{DestinationStatus, FailoverDisable};
use crate::table::{Destination, Table};
use crate::tie::TieBreaker;

/// The load balancer: the destination table with its live loads and statuses.
///
/// Share it behind an `Arc`. Selections read the table without locking it and serialize only
/// with selections in the same group; reloads swap in a new table without stopping them.
#[derive(Debug)]
pub struct Balancer {
    table: ArcSwap<Table>,
    /// Two concurrent reloads would each carry state over from the same old table, and the
    /// second swap would drop what the first carried.
    reload: Mutex<()>,
    /// Set by `lb_drain` so that [`Balancer::newly_drained`] scans the table only while
    /// a drain may be waiting for its last call.
    drains: AtomicBool,
    /// Now, for the calls-per-second windows and overload feedback.
    clock: Clock,
    /// Calls passed over a destination that asked for fewer (RFC 7339).
    diverted: AtomicU64,
    /// The host names the table uses and what they resolved to, kept across reloads.
    names: Names,
    /// In a cluster: where allocations are reported to be counted cluster-wide.
    ledger: OnceLock<Arc<dyn Ledger>>,
    /// The ticket of the next allocation reported to the ledger.
    tickets: AtomicU64,
    /// Whether this node sends the probes (in a cluster, one node does).
    prober: AtomicBool,
}

impl Default for Balancer {
    fn default() -> Self {
        Self::new()
    }
}

impl Balancer {
    /// An empty balancer: every selection is *unknown resource* until a table is loaded.
    pub fn new() -> Self {
        Self {
            table: ArcSwap::from_pointee(Table::default()),
            reload: Mutex::new(()),
            drains: AtomicBool::new(false),
            clock: Clock::default(),
            diverted: AtomicU64::new(0),
            names: Names::default(),
            ledger: OnceLock::new(),
            tickets: AtomicU64::new(1),
            prober: AtomicBool::new(true),
        }
    }

    /// Makes this balancer a cluster node's: every allocation from now on is reported
    /// to `ledger`. Set once, before any call; a second ledger is refused (returned).
    pub fn set_ledger(&self, ledger: Arc<dyn Ledger>) -> Result<(), Arc<dyn Ledger>> {
        self.ledger.set(ledger)
    }

    /// Whether allocations are reported to a cluster's ledger.
    pub fn is_clustered(&self) -> bool {
        self.ledger.get().is_some()
    }

    fn report(&self, kind: TakeKind) -> Report<'_> {
        let ledger = self.ledger.get();
        Report {
            ledger,
            ticket: if ledger.is_some() {
                self.tickets.fetch_add(1, Ordering::Relaxed)
            } else {
                0
            },
            kind,
        }
    }

    /// Whether this node probes destinations. Always, alone; in a cluster, the node the
    /// cluster chose (the others learn the results through the shared status).
    pub fn probes_here(&self) -> bool {
        self.prober.load(Ordering::Relaxed)
    }

    /// Sets whether this node probes (see [`Balancer::probes_here`]).
    pub fn set_probes_here(&self, probes: bool) {
        self.prober.store(probes, Ordering::Relaxed);
    }

    /// A balancer loaded with `rows`; also returns the rows that were skipped.
    pub fn with_rows(rows: impl IntoIterator<Item = DestinationRow>) -> (Self, Vec<RowError>) {
        let balancer = Self::new();
        let errors = balancer.reload(rows);
        (balancer, errors)
    }

    /// Replaces the table with `rows` (`lb_reload`); returns the rows that were skipped.
    /// Destinations are kept in id order, which is the tie-break order.
    ///
    /// For a destination with the same id, group and URI (ASCII case ignored) as before, the
    /// loads of calls up (per resource name) and the enabled/auto-reenable state carry over.
    /// Capacities come from the new rows, so earlier resizes are lost, as in the reference.
    /// Calls up on a changed or removed destination keep counting where they were taken and
    /// release there; the new table does not see them.
    ///
    /// A destination whose URI names a host takes calls once its name has an address:
    /// the driver resolves [`Balancer::names`] and publishes into them.
    pub fn reload(&self, rows: impl IntoIterator<Item = DestinationRow>) -> Vec<RowError> {
        // Table order is id order, so that ties go to the lowest id (SPEC section 2)
        // whatever order the database returns rows in. The sort is stable: of two rows
        // with the same id, the first given still claims it.
        let mut rows: Vec<DestinationRow> = rows.into_iter().collect();
        rows.sort_by_key(|r| r.id);
        let _one_at_a_time = self.reload.lock();
        let previous = self.table.load_full();
        let (table, errors) = Table::build(rows, &previous, &self.names);
        self.table.store(Arc::new(table));
        errors
    }

    /// The host names the current table uses (one cell per name, port and transport),
    /// for the resolver to look up and publish into. A reload may add names; cells no
    /// table uses any more are dropped here.
    pub fn names(&self) -> Vec<Arc<NameCell>> {
        self.names.live()
    }

    /// The cell of `name`, looked up and refreshed like the table's own names for as
    /// long as the caller holds it (a relay target named by host).
    pub fn name_cell(&self, name: Name) -> Arc<NameCell> {
        self.names.cell(name)
    }

    /// Chooses a destination of `group` offering every resource of `request` and takes its
    /// load (`lb_start` without a session). `tie` is consulted only with flag `s`.
    pub fn select<T: TieBreaker + ?Sized>(
        &self,
        group: u32,
        request: &ResourceRequest,
        flags: Flags,
        tie: &mut T,
    ) -> Outcome {
        self.select_excluding(group, request, flags, &[], tie)
    }

    pub(crate) fn select_excluding<T: TieBreaker + ?Sized>(
        &self,
        group: u32,
        request: &ResourceRequest,
        flags: Flags,
        tried: &[u32],
        tie: &mut T,
    ) -> Outcome {
        select::select(
            &self.table.load(),
            group,
            request.ids(),
            flags,
            tried,
            tie,
            Live {
                now: self.clock.nanos(),
                diverted: &self.diverted,
                // Flag `n` takes calls past capacity: counted, not reserved.
                report: self.report(if flags.allow_full {
                    TakeKind::Count
                } else {
                    TakeKind::Reserve
                }),
            },
        )
    }

    /// Applies RFC 7339 feedback from the destination at `ip`/`port` (the address a
    /// response came from); returns its id when the feedback took effect.
    pub fn overload_feedback(
        &self,
        ip: IpAddr,
        port: u16,
        feedback: OverloadFeedback,
    ) -> Option<u32> {
        let table = self.table.load();
        let d = matching::find(&table, ip, port, None, false)?;
        d.overload
            .apply(feedback, self.clock.nanos())
            .then_some(d.id)
    }

    /// Calls passed over a destination that asked for fewer, since start.
    pub fn diverted(&self) -> u64 {
        self.diverted.load(Ordering::Relaxed)
    }

    /// Advances the balancer's clock, which the calls-per-second caps (`max_cps`) count
    /// in. The thread that selects calls it with the instant of each input, so that a
    /// virtual clock drives the caps in tests and simulations. It never goes back.
    pub fn tick(&self, now: Instant) {
        self.clock.set(now);
    }

    fn with_destination<R>(
        &self,
        id: u32,
        f: impl FnOnce(&Table, &Arc<Destination>) -> R,
    ) -> Result<R, DestinationNotFound> {
        let table = self.table.load();
        let destination = table.destination(id).ok_or(DestinationNotFound { id })?;
        Ok(f(&table, destination))
    }

    /// Sets a resource's capacity at once (`lb_resize`). Calls up stay; a load left above the
    /// new capacity only keeps new calls away until it drains. Lost on the next reload.
    pub fn resize(&self, id: u32, resource: &str, capacity: u32) -> Result<(), ResizeError> {
        self.with_destination(id, |_, d| {
            let slot = d
                .slot_named(resource)
                .ok_or_else(|| ResizeError::NoSuchResource {
                    id,
                    resource: resource.into(),
                })?;
            slot.capacity.store(capacity, Ordering::Relaxed);
            Ok(())
        })?
    }

    /// Disables a destination after a failed attempt (`lb_disable_dst`): probing may re-enable
    /// it. The destination stays enabled if that would leave its group with fewer than
    /// `min_enabled` enabled destinations (0 disables unconditionally).
    pub fn disable_by_failover(
        &self,
        id: u32,
        min_enabled: usize,
    ) -> Result<FailoverDisable, DestinationNotFound> {
        self.with_destination(id, |table, d| {
            if !d.status.is_enabled() {
                return FailoverDisable::AlreadyDisabled;
            }
            if min_enabled == 0 {
                return if d.status.disable() {
                    FailoverDisable::Disabled
                } else {
                    FailoverDisable::AlreadyDisabled
                };
            }
            let Some(group) = table.group(d.group) else {
                return FailoverDisable::KeptByFloor;
            };
            // Under the group lock so that two failovers at once cannot both see one enabled
            // destination to spare and switch the group off together. A draining
            // destination takes no new calls, so it is none to spare.
            let _serialized = group.lock.lock();
            let others = group
                .members
                .iter()
                .map(|&m| &table.destinations[m as usize])
                .filter(|m| m.id != id && m.status.takes_calls())
                .count();
            if others < min_enabled {
                FailoverDisable::KeptByFloor
            } else if d.status.disable() {
                FailoverDisable::Disabled
            } else {
                FailoverDisable::AlreadyDisabled
            }
        })
    }

    /// Disables a destination after a failed probe (probe mode 2). Returns whether it changed.
    pub fn disable_by_probe(&self, id: u32) -> Result<bool, DestinationNotFound> {
        self.with_destination(id, |_, d| d.status.disable())
    }

    /// Records a probe's outcome for `lb_list` and metrics; it follows the destination
    /// across reloads like its status.
    pub fn record_probe(
        &self,
        id: u32,
        status: u16,
        rtt: Option<std::time::Duration>,
    ) -> Result<(), DestinationNotFound> {
        self.with_destination(id, |_, d| d.status.probe().record(status, rtt))
    }

    /// Re-enables a destination after a successful probe, unless the operator disabled it.
    /// Returns whether it changed.
    pub fn enable_by_probe(&self, id: u32) -> Result<bool, DestinationNotFound> {
        self.with_destination(id, |_, d| d.status.enable_by_probe())
    }

    /// `lb_status id 0|1`: disabling also turns auto-reenable off; enabling turns both back
    /// on. Returns whether either changed.
    pub fn set_status_by_operator(
        &self,
        id: u32,
        enabled: bool,
    ) -> Result<bool, DestinationNotFound> {
        self.with_destination(id, |_, d| d.status.set_by_operator(enabled))
    }

    /// Starts draining a destination (`lb_drain`): no new calls, calls up go on and
    /// count. Returns whether it was not draining already. An operator's
    /// [`Balancer::set_status_by_operator`] ends the drain; a reload keeps it.
    pub fn drain(&self, id: u32) -> Result<bool, DestinationNotFound> {
        let started = self.with_destination(id, |_, d| d.status.start_drain())?;
        self.drains.store(true, Ordering::SeqCst);
        Ok(started)
    }

    /// The draining destinations whose load has reached zero since the last call, each
    /// reported once. Cheap while nothing drains (one atomic read).
    pub fn newly_drained(&self) -> Vec<u32> {
        // A plain read first: this runs after every input of the core, and a swap
        // would write the shared line each time.
        if !self.drains.load(Ordering::Relaxed) || !self.drains.swap(false, Ordering::SeqCst) {
            return Vec::new();
        }
        let table = self.table.load();
        let mut drained = Vec::new();
        let mut waiting = false;
        for d in table
            .destinations
            .iter()
            .filter(|d| d.status.drain_pending())
        {
            if is_idle(d) && d.status.report_drained() {
                drained.push(d.id);
            } else {
                waiting = true;
            }
        }
        if waiting {
            self.drains.store(true, Ordering::SeqCst);
        }
        drained
    }

    /// Every destination's status and capacities, for the other nodes of a cluster.
    pub fn shared_states(&self) -> Vec<(u32, SharedState)> {
        self.table
            .load()
            .destinations
            .iter()
            .map(|d| (d.id, SharedState::of(d)))
            .collect()
    }

    /// Gives destination `id` the status and capacities another node published;
    /// returns whether anything changed here.
    pub fn apply_shared(&self, id: u32, state: &SharedState) -> Result<bool, DestinationNotFound> {
        let changed = self.with_destination(id, |_, d| state.apply(d))?;
        if state.status.draining {
            self.drains.store(true, Ordering::SeqCst);
        }
        Ok(changed)
    }

    /// Sets, for every resource of every destination, how many calls the other nodes
    /// of the cluster hold on it (`remote(id, resource)`).
    pub fn set_remote_loads(&self, remote: impl Fn(u32, &str) -> u32) {
        for d in &self.table.load().destinations {
            for slot in &*d.slots {
                slot.remote
                    .store(remote(d.id, &slot.name), Ordering::Relaxed);
            }
        }
    }

    /// A destination's current state (`lb_status id`).
    pub fn status(&self, id: u32) -> Result<DestinationStatus, DestinationNotFound> {
        self.with_destination(id, |_, d| d.status.get())
    }

    /// Every destination in table order (`lb_list`).
    pub fn snapshot(&self) -> Vec<DestinationSnapshot> {
        self.table
            .load()
            .destinations
            .iter()
            .map(|d| DestinationSnapshot::of(d, self.clock.nanos()))
            .collect()
    }

    /// One destination, by id.
    pub fn destination(&self, id: u32) -> Option<DestinationSnapshot> {
        self.with_destination(id, |_, d| DestinationSnapshot::of(d, self.clock.nanos()))
            .ok()
    }

    /// The first destination in table order at `ip` and `port` (`lb_is_destination`),
    /// optionally only in `group` and only if enabled. Port 0 on either side matches any port.
    pub fn is_destination(
        &self,
        ip: IpAddr,
        port: u16,
        group: Option<u32>,
        only_enabled: bool,
    ) -> Option<DestinationInfo> {
        let table = self.table.load();
        matching::find(&table, ip, port, group, only_enabled).map(|d| DestinationInfo::of(d))
    }

    /// Counts a call coming from a destination as load on it (`lb_count_call`): the first
    /// destination at `ip`/`port` (optionally in `group`), whatever its status and capacity,
    /// so the load may go above capacity.
    pub fn count_call(
        &self,
        ip: IpAddr,
        port: u16,
        group: Option<u32>,
        request: &ResourceRequest,
    ) -> Result<Allocation, AttachError> {
        let table = self.table.load();
        let destination = matching::find(&table, ip, port, group, false)
            .ok_or(AttachError::NoMatchingDestination)?;
        attach(destination, request, self.report(TakeKind::Count))
    }

    /// Re-creates the load of a call that was up before a restart (a persisted dialog), on
    /// destination `id`, whatever its status and capacity.
    pub fn restore(&self, id: u32, request: &ResourceRequest) -> Result<Allocation, AttachError> {
        let table = self.table.load();
        let destination = table.destination(id).ok_or(DestinationNotFound { id })?;
        attach(destination, request, self.report(TakeKind::Counted))
    }
}

/// No call holds any of the destination's resources.
fn is_idle(d: &Destination) -> bool {
    d.slots.iter().all(|s| s.load() == 0)
}

fn attach(
    destination: &Arc<Destination>,
    request: &ResourceRequest,
    report: Report<'_>,
) -> Result<Allocation, AttachError> {
    Allocation::take(destination, request.ids(), report).ok_or_else(|| {
        let resource = request
            .names()
            .zip(request.ids())
            .find(|(_, id)| destination.slot(**id).is_none())
            .map(|(name, _)| name.to_owned())
            .unwrap_or_default();
        AttachError::MissingResource {
            id: destination.id,
            resource,
        }
    })
}
