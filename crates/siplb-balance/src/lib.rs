//! Load-balancing core of siplb: the destination table, per-resource load accounting, and the
//! choice of a destination for each call. Pure logic: no I/O, no async runtime, no DNS.
//!
//! # Model
//!
//! A [`Balancer`] holds a table of destinations loaded from [`DestinationRow`]s. Each
//! destination belongs to a group and offers resources with a capacity (`vm=50; pstn=32`).
//! The *load* of a (destination, resource) is the number of calls holding it. A call asks a
//! group for a [`ResourceRequest`] (`transc;pstn`, parsed once at configuration time) with
//! [`Flags`], and gets an [`Outcome`]:
//!
//! 1. candidates are the enabled destinations of the group, not yet tried by the call, that
//!    offer every requested resource;
//! 2. a candidate's availability is its bottleneck: the minimum over the requested resources
//!    of `capacity - load` (flag `r`: `(capacity - load) / capacity`, compared exactly, with
//!    capacity 0 counting as 0);
//! 3. the largest availability wins, if above zero (flag `n`: whatever it is); ties go to the
//!    first destination in table order (flag `s`: to a [`TieBreaker`]'s pick);
//! 4. the winner's load is taken for every requested resource under the group's lock, so two
//!    calls can never both take the last slot.
//!
//! Table order is id order, whatever order the rows come in: ties go to the lowest id, as
//! the contract says. (The reference breaks ties by database result order, which is id
//! order for a table filled by auto-increment.)
//!
//! # Load is released exactly once
//!
//! A successful selection returns an [`Allocation`]: the call's hold on one unit of each
//! requested resource. It cannot be cloned, and its load is given back when it is dropped or
//! explicitly [released](Allocation::release), which consumes it. So every increment is
//! paired with exactly one decrement, loads never go negative, and when no allocation is
//! alive every load reads zero. A [`Session`] wraps the allocation of one call for failover:
//! each [`Session::next`] releases the previous attempt's load before choosing again among the
//! destinations not tried yet.
//!
//! # Runtime changes
//!
//! Status changes ([`Balancer::disable_by_failover`], [`Balancer::set_status_by_operator`],
//! [`Balancer::enable_by_probe`]) keep calls up; disabled destinations only stop getting new
//! ones. [`Balancer::resize`] changes a capacity at once. [`Balancer::reload`] swaps in a new
//! table without blocking selections: destinations with the same id, group and URI keep their
//! loads and statuses; an allocation taken on a destination that changed or disappeared still
//! releases the counters it took.
//!
//! # Matching by address
//!
//! [`Balancer::is_destination`] and [`Balancer::count_call`] match a call's source IP and port
//! against destinations whose URI holds an IP literal, or a host name through the addresses
//! it last resolved to. Resolving is the driver's job: it looks up [`Balancer::names`] in the
//! background and publishes each [`Resolution`] into its [`NameCell`]; a named destination
//! is not a candidate for selection until its name has an address.
//!
//! # Example
//!
//! ```
//! use siplb_balance::{Balancer, DestinationRow, Flags, Outcome, ResourceRequest, SplitMix64};
//!
//! let (balancer, skipped) = Balancer::with_rows([
//!     DestinationRow::new(1, 1, "sip:10.0.0.1:5060", "vm=50; pstn=32"),
//!     DestinationRow::new(2, 1, "sip:10.0.0.2:5060", "vm=100"),
//! ]);
//! assert!(skipped.is_empty());
//! let vm = ResourceRequest::parse("vm").unwrap();
//! let mut rng = SplitMix64::from_entropy();
//! match balancer.select(1, &vm, Flags::NONE, &mut rng) {
//!     Outcome::Selected(call) => {
//!         assert_eq!(call.uri(), "sip:10.0.0.2:5060");
//!         call.release(); // or drop it when the call ends
//!     }
//!     other => panic!("{other:?}"),
//! }
//! assert!(balancer.snapshot().iter().all(|d| d.resources.iter().all(|r| r.load == 0)));
//! ```

mod allocation;
mod balancer;
mod errors;
mod flags;
mod inline;
mod ledger;
mod matching;
mod names;
mod overload;
mod rate;
mod resources;
mod row;
mod select;
mod session;
mod shared;
mod snapshot;
mod status;
mod table;
mod tie;
mod uri;

pub use allocation::Allocation;
pub use balancer::Balancer;
pub use errors::{AttachError, DestinationNotFound, ResizeError};
pub use flags::{Flags, FlagsError};
pub use ledger::{Ledger, Take, TakeKind};
pub use names::{Name, NameCell, NameTransport, Resolution};
pub use overload::OverloadFeedback;
pub use rate::MAX_CPS;
pub use resources::{ResourceListError, ResourceRequest};
pub use row::{DestinationRow, ProbeMode, RowError, RowFault};
pub use select::Outcome;
pub use session::Session;
pub use shared::SharedState;
pub use snapshot::{DestinationInfo, DestinationSnapshot, ResourceSnapshot};
pub use status::{DestinationStatus, FailoverDisable};
pub use tie::{SplitMix64, TieBreaker};
pub use uri::{Host, UriError};
