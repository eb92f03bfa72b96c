//! Choosing a destination for a call (SPEC section 2) and taking its load in the same step.

use std::cmp::Ordering;
use std::sync::atomic::{self, AtomicU64};

use crate::allocation::{Allocation, Report};
use crate::flags::Flags;
use crate::inline::InlineVec;
use crate::resources::ResourceId;
use crate::table::{Destination, Group, Table};
use crate::tie::TieBreaker;

/// The result of a selection. The three failures are distinct so that the routing layer can
/// answer and log each cause differently.
///
/// A session returns `Outcome<&Allocation>`: it keeps the allocation itself so that failover
/// can release it.
#[derive(Debug)]
#[must_use]
pub enum Outcome<A = Allocation> {
    /// A destination was chosen and its load taken.
    Selected(A),
    /// Candidates exist, but none has availability above zero (and flag `n` was not given).
    NoCapacity,
    /// No enabled, untried destination of the group offers every requested resource.
    NoDestination,
    /// A requested resource is offered by no destination of the whole table.
    UnknownResource,
    /// Destinations with room exist, but each has taken its `max_cps` calls in the last
    /// second. Not a failure of any destination.
    RateLimited,
    /// Every destination with room asked for fewer calls (RFC 7339), and this call is
    /// one of those it asked to be spared.
    Throttled,
}

impl<A> Outcome<A> {
    /// The allocation, if one was made.
    pub fn selected(self) -> Option<A> {
        match self {
            Self::Selected(a) => Some(a),
            _ => None,
        }
    }

    /// Whether a destination was chosen.
    pub fn is_selected(&self) -> bool {
        matches!(self, Self::Selected(_))
    }

    /// Applies `f` to the allocation, keeping the failure causes.
    pub fn map<B>(self, f: impl FnOnce(A) -> B) -> Outcome<B> {
        match self {
            Self::Selected(a) => Outcome::Selected(f(a)),
            Self::NoCapacity => Outcome::NoCapacity,
            Self::NoDestination => Outcome::NoDestination,
            Self::UnknownResource => Outcome::UnknownResource,
            Self::RateLimited => Outcome::RateLimited,
            Self::Throttled => Outcome::Throttled,
        }
    }
}

/// How availability is measured; monomorphized so absolute mode compares plain integers.
trait Measure {
    type Availability: Ord + Copy;
    fn availability(capacity: u32, load: u32) -> Self::Availability;
    fn is_positive(availability: Self::Availability) -> bool;
}

/// Free slots: `capacity - load`, negative when over capacity.
struct Absolute;

impl Measure for Absolute {
    type Availability = i64;

    fn availability(capacity: u32, load: u32) -> i64 {
        i64::from(capacity) - i64::from(load)
    }

    fn is_positive(availability: i64) -> bool {
        availability > 0
    }
}

/// Free fraction: `(capacity - load) / capacity`, exactly.
struct Relative;

/// `free / capacity` with `capacity >= 1`; a zero capacity is stored as `0 / 1`.
#[derive(Clone, Copy, Debug)]
struct FreeFraction {
    free: i64,
    capacity: i64,
}

impl Ord for FreeFraction {
    /// Cross-multiplied in 128 bits: both factors fit in 33 bits, so the products are exact
    /// and no rounding (the reference truncates to whole percents) can create false ties.
    fn cmp(&self, other: &Self) -> Ordering {
        (i128::from(self.free) * i128::from(other.capacity))
            .cmp(&(i128::from(other.free) * i128::from(self.capacity)))
    }
}

impl PartialOrd for FreeFraction {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for FreeFraction {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for FreeFraction {}

impl Measure for Relative {
    type Availability = FreeFraction;

    fn availability(capacity: u32, load: u32) -> FreeFraction {
        if capacity == 0 {
            // The spec fixes a zero capacity at exactly 0, even with calls counted on it.
            return FreeFraction {
                free: 0,
                capacity: 1,
            };
        }
        FreeFraction {
            free: i64::from(capacity) - i64::from(load),
            capacity: i64::from(capacity),
        }
    }

    fn is_positive(availability: FreeFraction) -> bool {
        availability.free > 0
    }
}

/// The candidate's bottleneck, or `None` if it lacks a requested resource.
fn bottleneck<M: Measure>(
    destination: &Destination,
    request: &[ResourceId],
) -> Option<M::Availability> {
    let mut min = None;
    for &resource in request {
        let slot = destination.slot(resource)?;
        let availability = M::availability(slot.capacity(), slot.load());
        min = Some(match min {
            Some(m) if m <= availability => m,
            _ => availability,
        });
    }
    min
}

enum Scan {
    Winner(usize),
    NoCapacity,
    NoDestination,
    RateLimited,
}

/// One pass over the group in table order. Must run under the group lock: the loads read here
/// may only decrease (releases are lock-free) until the winner's loads are taken.
fn scan<M: Measure, T: TieBreaker + ?Sized>(
    table: &Table,
    group: &Group,
    request: &[ResourceId],
    flags: Flags,
    skip: [&[u32]; 2],
    tie: &mut T,
    now: u64,
) -> Scan {
    let mut candidates = 0usize;
    // A destination over its calls-per-second cap that would otherwise have been eligible.
    let mut capped = false;
    let mut best: Option<(M::Availability, usize)> = None;
    let mut ties: InlineVec<usize, 16> = InlineVec::new();
    for &member in &*group.members {
        let index = member as usize;
        let destination = &*table.destinations[index];
        if !destination.status.takes_calls()
            || skip.iter().any(|s| s.contains(&destination.id))
            || !destination.has_address()
        {
            continue;
        }
        let Some(availability) = bottleneck::<M>(destination, request) else {
            continue;
        };
        candidates += 1;
        if !flags.allow_full && !M::is_positive(availability) {
            continue;
        }
        if destination.rate.as_ref().is_some_and(|w| w.is_full(now)) {
            capped = true;
            continue;
        }
        match best.map(|(b, _)| availability.cmp(&b)) {
            Some(Ordering::Less) => {}
            Some(Ordering::Equal) => {
                if flags.random_ties {
                    ties.push(index);
                }
            }
            Some(Ordering::Greater) | None => {
                best = Some((availability, index));
                if flags.random_ties {
                    ties.clear();
                    ties.push(index);
                }
            }
        }
    }
    match best {
        Some((_, first)) => {
            let ties = ties.as_slice();
            if ties.len() > 1 {
                Scan::Winner(ties[tie.pick(ties.len()) % ties.len()])
            } else {
                Scan::Winner(first)
            }
        }
        None if capped => Scan::RateLimited,
        None if candidates > 0 => Scan::NoCapacity,
        None => Scan::NoDestination,
    }
}

/// What a selection reads and counts beside the table: the balancer's clock and its
/// count of calls diverted by overload feedback.
pub(crate) struct Live<'a> {
    pub(crate) now: u64,
    pub(crate) diverted: &'a AtomicU64,
    /// Who to tell about the allocation, if one is made.
    pub(crate) report: Report<'a>,
}

/// Selects among `group`, skipping destinations whose id is in `tried`, and takes the
/// winner's load for every requested resource before the group lock is released.
///
/// A winner that asked for a reduction of X % (RFC 7339) is passed over for this call
/// with probability X % (a draw of `tie`), and the next best is chosen; `diverted`
/// counts such calls.
pub(crate) fn select<T: TieBreaker + ?Sized>(
    table: &Table,
    group: u32,
    request: &[ResourceId],
    flags: Flags,
    tried: &[u32],
    tie: &mut T,
    live: Live<'_>,
) -> Outcome {
    let now = live.now;
    if !request.iter().all(|&r| table.offers(r)) {
        return Outcome::UnknownResource;
    }
    let Some(group) = table.group(group) else {
        return Outcome::NoDestination;
    };
    let _serialized = group.lock.lock();
    let mut spared: InlineVec<u32, 4> = InlineVec::new();
    loop {
        let skip = [tried, spared.as_slice()];
        let scanned = if flags.relative {
            scan::<Relative, T>(table, group, request, flags, skip, tie, now)
        } else {
            scan::<Absolute, T>(table, group, request, flags, skip, tie, now)
        };
        let index = match scanned {
            Scan::Winner(index) => index,
            _ if !spared.as_slice().is_empty() => return Outcome::Throttled,
            Scan::NoCapacity => return Outcome::NoCapacity,
            Scan::NoDestination => return Outcome::NoDestination,
            Scan::RateLimited => return Outcome::RateLimited,
        };
        let destination = &table.destinations[index];
        let reduction = destination.overload.reduction(now);
        if reduction > 0 && tie.pick(100) % 100 < usize::from(reduction) {
            live.diverted.fetch_add(1, atomic::Ordering::Relaxed);
            spared.push(destination.id);
            continue;
        }
        return match Allocation::take(destination, request, live.report) {
            Some(allocation) => {
                if let Some(window) = &destination.rate {
                    window.record(now);
                }
                Outcome::Selected(allocation)
            }
            // The scan only returns destinations that offer every requested resource.
            None => Outcome::NoDestination,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::{FreeFraction, Measure, Relative};

    #[test]
    fn relative_compares_exactly() {
        // 99/100 vs 98/99: the reference's whole percents make both 99 (a tie); exactly,
        // 99/100 = 0.99 > 98/99 = 0.9898...
        let a = Relative::availability(100, 1);
        let b = Relative::availability(99, 1);
        assert!(a > b);
        // 1/2 == 2/4 == 50/100.
        assert_eq!(Relative::availability(2, 1), Relative::availability(4, 2));
        assert_eq!(
            Relative::availability(100, 50),
            Relative::availability(4, 2)
        );
        // Capacity 0 is exactly 0 even with load; overload is negative and ranks below it.
        let zero = Relative::availability(0, 3);
        assert_eq!(
            zero,
            FreeFraction {
                free: 0,
                capacity: 1
            }
        );
        assert!(!Relative::is_positive(zero));
        assert!(Relative::availability(4, 5) < zero);
        // Extremes do not overflow.
        let max = Relative::availability(u32::MAX, 0);
        let almost = Relative::availability(u32::MAX, 1);
        assert!(max > almost);
        assert!(Relative::availability(1, u32::MAX) < Relative::availability(u32::MAX, u32::MAX));
    }
}
