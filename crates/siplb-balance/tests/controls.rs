//! Operator controls beyond the reference (SPEC section 8): drain.

// Fixture helpers outside `#[test]` functions fail loudly, like the tests themselves.
#![allow(clippy::unwrap_used)]

use siplb_balance::{Balancer, DestinationRow, FailoverDisable, Flags, Outcome, ResourceRequest};

fn req(list: &str) -> ResourceRequest {
    ResourceRequest::parse(list).unwrap()
}

fn never(_: usize) -> usize {
    unreachable!("no s flag")
}

fn rows() -> Vec<DestinationRow> {
    vec![
        DestinationRow::new(1, 1, "sip:127.0.0.1:5071", "vm=10"),
        DestinationRow::new(2, 1, "sip:127.0.0.1:5072", "vm=5"),
        DestinationRow::new(3, 1, "sip:127.0.0.1:5073", "vm=5"),
    ]
}

fn pick(b: &Balancer) -> Option<u32> {
    match b.select(1, &req("vm"), Flags::default(), &mut never) {
        Outcome::Selected(a) => {
            let id = a.destination_id();
            a.release();
            Some(id)
        }
        _ => None,
    }
}

#[test]
fn a_draining_destination_gets_no_new_calls_and_is_reported_once_when_its_last_call_ends() {
    let (b, _) = Balancer::with_rows(rows());
    assert_eq!(pick(&b), Some(1));
    let call = b.restore(1, &req("vm")).unwrap();

    assert!(b.drain(1).unwrap());
    assert!(!b.drain(1).unwrap(), "already draining");
    let status = b.status(1).unwrap();
    assert!(status.enabled && status.draining);
    assert!(b.destination(1).unwrap().draining);
    for _ in 0..20 {
        assert_eq!(pick(&b), Some(2), "the next best, never the draining one");
    }
    assert!(b.newly_drained().is_empty(), "a call is still up");
    assert!(!b.report_drained(1));

    // A reload keeps the drain and the call's load.
    b.reload(rows());
    assert!(b.status(1).unwrap().draining);
    assert_eq!(b.destination(1).unwrap().resources[0].load, 1);
    assert!(b.newly_drained().is_empty());

    call.release();
    assert_eq!(b.newly_drained(), [1]);
    assert!(b.newly_drained().is_empty(), "reported once");
    assert!(!b.report_drained(1), "reported once, whoever asks");
    assert_eq!(
        pick(&b),
        Some(2),
        "drained is still draining until lb_status"
    );

    assert!(
        b.set_status_by_operator(1, true).unwrap(),
        "lb_status 1 1 ends it"
    );
    assert!(!b.status(1).unwrap().draining);
    assert_eq!(pick(&b), Some(1));
}

#[test]
fn a_drain_of_an_idle_destination_is_reported_at_once() {
    let (b, _) = Balancer::with_rows(rows());
    assert!(b.drain(3).unwrap());
    assert!(b.report_drained(3));
    assert!(b.newly_drained().is_empty());
    assert!(b.drain(99).is_err());
    assert!(!b.report_drained(99));
}

#[test]
fn when_all_are_draining_there_is_no_destination() {
    let (b, _) = Balancer::with_rows(rows());
    for id in 1..=3 {
        b.drain(id).unwrap();
    }
    assert!(matches!(
        b.select(1, &req("vm"), Flags::default(), &mut never),
        Outcome::NoDestination
    ));
}

#[test]
fn the_failover_floor_does_not_count_draining_destinations() {
    let (b, _) = Balancer::with_rows(rows());
    b.drain(2).unwrap();
    b.drain(3).unwrap();
    // Destination 1 is the only one taking calls: with a floor of 1 it stays.
    assert_eq!(
        b.disable_by_failover(1, 1).unwrap(),
        FailoverDisable::KeptByFloor
    );
    b.set_status_by_operator(2, true).unwrap();
    assert_eq!(
        b.disable_by_failover(1, 1).unwrap(),
        FailoverDisable::Disabled
    );
}
