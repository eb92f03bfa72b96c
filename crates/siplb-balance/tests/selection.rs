//! Selection outcomes and flags (SPEC section 2), starting with the tutorial's worked example.

// Fixture helpers outside `#[test]` functions fail loudly, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::panic)]

use siplb_balance::{
    Allocation, Balancer, DestinationRow, Flags, Outcome, ResourceRequest, SplitMix64,
};

fn req(list: &str) -> ResourceRequest {
    ResourceRequest::parse(list).unwrap()
}

fn flags(s: &str) -> Flags {
    s.parse().unwrap()
}

fn balancer(rows: &[(u32, u32, &str)]) -> Balancer {
    let (b, errors) = Balancer::with_rows(rows.iter().map(|&(id, group, resources)| {
        DestinationRow::new(id, group, format!("sip:10.0.0.{id}:5060"), resources)
    }));
    assert!(errors.is_empty(), "{errors:?}");
    b
}

/// A tie-breaker that fails the test if consulted.
fn no_ties(n: usize) -> usize {
    panic!("tie-breaker consulted with {n} ties")
}

fn pick(b: &Balancer, group: u32, request: &str, f: &str) -> Outcome {
    b.select(group, &req(request), flags(f), &mut no_ties)
}

fn chosen(outcome: &Outcome) -> Option<u32> {
    match outcome {
        Outcome::Selected(a) => Some(a.destination_id()),
        _ => None,
    }
}

/// Holds `count` calls of `request` on destination `id`, whatever its capacity.
fn hold(b: &Balancer, id: u32, request: &str, count: usize) -> Vec<Allocation> {
    (0..count)
        .map(|_| b.restore(id, &req(request)).unwrap())
        .collect()
}

fn load(b: &Balancer, id: u32, resource: &str) -> u32 {
    let d = b.destination(id).unwrap();
    d.resources
        .iter()
        .find(|r| &*r.name == resource)
        .unwrap()
        .load
}

#[test]
fn tutorial_worked_example_picks_the_largest_bottleneck() {
    // The tutorial's cluster: boxes 2 and 3 lack pstn and are never candidates.
    let b = balancer(&[
        (1, 1, "transc=30; pstn=32"),
        (2, 1, "vm=100; transc=10"),
        (3, 1, "vm=50; conf=300"),
        (4, 1, "vm=10;conf=10;transc=10;pstn=32"),
    ]);
    let _busy = [
        hold(&b, 1, "transc", 10),
        hold(&b, 1, "pstn", 18),
        hold(&b, 4, "transc", 9),
        hold(&b, 4, "pstn", 16),
    ];
    // Free: box 1 min(20, 14) = 14, box 4 min(1, 16) = 1.
    let call = pick(&b, 1, "transc;pstn", "").selected().unwrap();
    assert_eq!(call.destination_id(), 1);
    assert_eq!(call.resources().collect::<Vec<_>>(), ["transc", "pstn"]);
    assert_eq!((load(&b, 1, "transc"), load(&b, 1, "pstn")), (11, 19));
    call.release();
    assert_eq!((load(&b, 1, "transc"), load(&b, 1, "pstn")), (10, 18));
}

#[test]
fn destinations_lacking_a_resource_are_never_candidates() {
    let b = balancer(&[
        (1, 1, "transc=1; pstn=1"),
        (2, 1, "vm=100; transc=10"),
        (4, 1, "transc=1;pstn=1"),
    ]);
    let first = pick(&b, 1, "transc;pstn", "");
    let second = pick(&b, 1, "transc;pstn", "");
    assert_eq!((chosen(&first), chosen(&second)), (Some(1), Some(4)));
    // Box 2 still has 10 transc free but no pstn: the group is full, not out of destinations.
    assert!(matches!(
        pick(&b, 1, "transc;pstn", ""),
        Outcome::NoCapacity
    ));
    assert_eq!(chosen(&pick(&b, 1, "transc", "")), Some(2));
}

#[test]
fn absolute_mode_prefers_most_free_slots() {
    let b = balancer(&[(1, 1, "vm=100"), (2, 1, "vm=10")]);
    let _busy = hold(&b, 1, "vm", 60);
    // 40 free against 10 free, although box 2 is far less utilized.
    assert_eq!(chosen(&pick(&b, 1, "vm", "")), Some(1));
    // Relative: 40% free against 100% free.
    assert_eq!(chosen(&pick(&b, 1, "vm", "r")), Some(2));
}

#[test]
fn relative_mode_compares_exactly_not_in_whole_percents() {
    // 98/99 free against 99/100 free. In whole percents (the reference) both are 99 and the
    // first row wins; exactly, 99/100 is larger.
    let b = balancer(&[(1, 1, "vm=99"), (2, 1, "vm=100")]);
    let _busy = [hold(&b, 1, "vm", 1), hold(&b, 2, "vm", 1)];
    assert_eq!(chosen(&pick(&b, 1, "vm", "r")), Some(2));
}

#[test]
fn relative_mode_ties_on_equal_fractions() {
    // 1/2 free on both: a genuine tie, first in table order wins.
    let b = balancer(&[(1, 1, "vm=4"), (2, 1, "vm=2")]);
    let _busy = [hold(&b, 1, "vm", 2), hold(&b, 2, "vm", 1)];
    assert_eq!(chosen(&pick(&b, 1, "vm", "r")), Some(1));
}

#[test]
fn ties_go_to_the_lowest_id_whatever_the_row_order() {
    let (b, _) = Balancer::with_rows([
        DestinationRow::new(9, 1, "sip:10.0.0.9", "vm=5"),
        DestinationRow::new(3, 1, "sip:10.0.0.3", "vm=5"),
    ]);
    assert_eq!(chosen(&pick(&b, 1, "vm", "")), Some(3));
    let ids: Vec<u32> = b.snapshot().iter().map(|d| d.id).collect();
    assert_eq!(ids, [3, 9]);
}

#[test]
fn random_ties_use_the_injected_tie_breaker() {
    let b = balancer(&[
        (1, 1, "vm=5"),
        (2, 1, "vm=9"),
        (3, 1, "vm=5"),
        (4, 1, "vm=5"),
    ]);
    let _busy = hold(&b, 2, "vm", 4);
    // 1, 2, 3 and 4 all have 5 free: four ties, numbered in table order.
    let mut asked = Vec::new();
    let mut last = |n: usize| {
        asked.push(n);
        n - 1
    };
    let a = b
        .select(1, &req("vm"), flags("s"), &mut last)
        .selected()
        .unwrap();
    assert_eq!(a.destination_id(), 4);
    assert_eq!(asked, [4]);
    // Out-of-range answers are reduced, never trusted.
    let c = b
        .select(1, &req("vm"), flags("s"), &mut |n: usize| n + 1)
        .selected()
        .unwrap();
    assert_eq!(
        c.destination_id(),
        2,
        "ties are now 1,2,3 and (n+1) % 3 = 1"
    );
    // A single best is not a tie: the tie-breaker is not consulted.
    // Free now: 1:5, 2:4, 3:5, 4:4. Leave box 2 alone on top.
    let _more = [
        hold(&b, 1, "vm", 3),
        hold(&b, 3, "vm", 3),
        hold(&b, 4, "vm", 2),
    ];
    assert_eq!(
        chosen(&b.select(1, &req("vm"), flags("s"), &mut no_ties)),
        Some(2)
    );
}

#[test]
fn random_ties_spread_over_all_tied_destinations() {
    let b = balancer(&[(1, 1, "vm=1000"), (2, 1, "vm=1000"), (3, 1, "vm=1000")]);
    let mut rng = SplitMix64::new(1);
    let mut counts = [0u32; 3];
    for _ in 0..300 {
        // Released at once, so all three stay tied.
        let a = b
            .select(1, &req("vm"), flags("s"), &mut rng)
            .selected()
            .unwrap();
        counts[a.destination_id() as usize - 1] += 1;
    }
    assert!(counts.iter().all(|&c| c > 60), "{counts:?}");
}

#[test]
fn without_flag_n_full_destinations_are_no_capacity() {
    let b = balancer(&[(1, 1, "vm=2"), (2, 1, "vm=2")]);
    let _busy = [hold(&b, 1, "vm", 3), hold(&b, 2, "vm", 2)];
    assert!(matches!(pick(&b, 1, "vm", ""), Outcome::NoCapacity));
    assert!(matches!(pick(&b, 1, "vm", "r"), Outcome::NoCapacity));
    // With n the least overloaded wins: 0 free beats -1 free.
    assert_eq!(chosen(&pick(&b, 1, "vm", "n")), Some(2));
}

#[test]
fn capacity_zero_is_no_capacity_unless_flag_n() {
    let b = balancer(&[(1, 1, "vm=0"), (2, 1, "vm=3")]);
    let _busy = hold(&b, 2, "vm", 4);
    // A zero capacity is a candidate with nothing free: no capacity, not no destination.
    assert!(matches!(pick(&b, 1, "vm", ""), Outcome::NoCapacity));
    assert!(matches!(pick(&b, 1, "vm", "r"), Outcome::NoCapacity));
    // Absolute with n: 0 free (capacity 0) beats -1 free.
    assert_eq!(chosen(&pick(&b, 1, "vm", "n")), Some(1));
    // Relative with n: capacity 0 counts as exactly 0, above -1/3.
    let _on_zero = hold(&b, 1, "vm", 5);
    assert_eq!(chosen(&pick(&b, 1, "vm", "rn")), Some(1));
    // Absolute with n: now -5 against -1.
    assert_eq!(chosen(&pick(&b, 1, "vm", "n")), Some(2));
}

#[test]
fn unknown_resource_is_checked_against_the_whole_table() {
    let b = balancer(&[(1, 1, "vm=5"), (2, 2, "fax=5")]);
    assert!(matches!(pick(&b, 1, "fax2", ""), Outcome::UnknownResource));
    assert!(matches!(
        pick(&b, 1, "vm;fax2", ""),
        Outcome::UnknownResource
    ));
    // Unknown wins over a missing group.
    assert!(matches!(pick(&b, 7, "fax2", ""), Outcome::UnknownResource));
    // Offered elsewhere (group 2) is known: group 1 simply has no such destination.
    assert!(matches!(pick(&b, 1, "fax", ""), Outcome::NoDestination));
    assert_eq!(chosen(&pick(&b, 2, "fax", "")), Some(2));
    // Offered only by a disabled destination is still known.
    b.set_status_by_operator(2, false).unwrap();
    assert!(matches!(pick(&b, 2, "fax", ""), Outcome::NoDestination));
    // An empty balancer knows no resource at all.
    assert!(matches!(
        Balancer::new().select(1, &req("vm"), Flags::NONE, &mut no_ties),
        Outcome::UnknownResource
    ));
}

#[test]
fn no_destination_for_missing_group_or_all_disabled() {
    let b = balancer(&[(1, 1, "vm=5"), (2, 1, "vm=5")]);
    assert!(matches!(pick(&b, 2, "vm", ""), Outcome::NoDestination));
    b.disable_by_failover(1, 0).unwrap();
    b.set_status_by_operator(2, false).unwrap();
    assert!(matches!(pick(&b, 1, "vm", ""), Outcome::NoDestination));
    assert!(matches!(pick(&b, 1, "vm", "n"), Outcome::NoDestination));
}

#[test]
fn multi_resource_bottleneck_decides() {
    let b = balancer(&[(1, 1, "a=10;b=3"), (2, 1, "a=5;b=5")]);
    // min(10,3)=3 against min(5,5)=5.
    assert_eq!(chosen(&pick(&b, 1, "a;b", "")), Some(2));
    // Relative: min(1, 1) for both; tie, first wins.
    assert_eq!(chosen(&pick(&b, 1, "b;a", "r")), Some(1));
}

#[test]
fn outcome_helpers() {
    let b = balancer(&[(1, 1, "vm=1")]);
    let o = pick(&b, 1, "vm", "");
    assert!(o.is_selected());
    let id = o.map(|a| a.destination_id()).selected();
    assert_eq!(id, Some(1));
    assert!(!pick(&b, 2, "vm", "").is_selected());
}
