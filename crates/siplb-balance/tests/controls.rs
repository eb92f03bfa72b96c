//! Operator controls beyond the reference (SPEC section 8): drain, calls-per-second caps.

// Fixture helpers outside `#[test]` functions fail loudly, like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use siplb_balance::{
    Balancer, DestinationRow, FailoverDisable, Flags, Outcome, ResourceRequest, RowFault, Session,
};

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

    // A reload keeps the drain and the call's load.
    b.reload(rows());
    assert!(b.status(1).unwrap().draining);
    assert_eq!(b.destination(1).unwrap().resources[0].load, 1);
    assert!(b.newly_drained().is_empty());

    call.release();
    assert_eq!(b.newly_drained(), [1]);
    assert!(b.newly_drained().is_empty(), "reported once");
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
    assert_eq!(b.newly_drained(), [3]);
    assert!(b.newly_drained().is_empty());
    assert!(b.drain(99).is_err());
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

fn capped_rows() -> Vec<DestinationRow> {
    let mut capped = DestinationRow::new(1, 1, "sip:127.0.0.1:5071", "vm=100");
    capped.attrs = Some("probe_interval=5;max_cps=3".into());
    vec![
        capped,
        DestinationRow::new(2, 1, "sip:127.0.0.1:5072", "vm=10"),
    ]
}

#[test]
fn a_capped_destination_takes_at_most_its_calls_per_second_and_the_rest_go_elsewhere() {
    let (b, errors) = Balancer::with_rows(capped_rows());
    assert!(errors.is_empty(), "{errors:?}");
    let t0 = Instant::now();
    b.tick(t0);
    // Three calls per second to 1 (more room), then 2 takes the rest of that second.
    let picks: Vec<_> = (0..5).map(|_| pick(&b)).collect();
    assert_eq!(picks, [Some(1), Some(1), Some(1), Some(2), Some(2)]);
    b.tick(t0 + Duration::from_millis(999));
    assert_eq!(pick(&b), Some(2), "the window is a whole second");
    b.tick(t0 + Duration::from_millis(1000));
    let picks: Vec<_> = (0..4).map(|_| pick(&b)).collect();
    assert_eq!(
        picks,
        [Some(1), Some(1), Some(1), Some(2)],
        "the first three calls are a second old"
    );
    // A reload keeps the window: no new second of calls.
    b.reload(capped_rows());
    assert_eq!(pick(&b), Some(2));
    b.tick(t0 + Duration::from_millis(2500));
    assert_eq!(pick(&b), Some(1));
}

#[test]
fn a_cap_that_leaves_no_candidate_is_its_own_outcome_and_failover_counts_against_it() {
    let (b, _) = Balancer::with_rows(capped_rows());
    b.tick(Instant::now());
    b.set_status_by_operator(2, false).unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = Session::new(1, req("vm"), Flags::default());
        assert!(s.next(&b, &mut never).is_selected());
        held.push(s);
    }
    let mut s = Session::new(1, req("vm"), Flags::default());
    assert!(matches!(s.next(&b, &mut never), Outcome::RateLimited));
    // Full is full, whatever the cap.
    let (full, _) = Balancer::with_rows(vec![{
        let mut r = DestinationRow::new(1, 1, "sip:127.0.0.1:5071", "vm=1");
        r.attrs = Some("max_cps=1".into());
        r
    }]);
    let _one = full.restore(1, &req("vm")).unwrap();
    assert!(matches!(
        full.select(1, &req("vm"), Flags::default(), &mut never),
        Outcome::NoCapacity
    ));
}

#[test]
fn a_bad_max_cps_skips_the_row_saying_why() {
    let mut row = DestinationRow::new(1, 1, "sip:127.0.0.1:5071", "vm=1");
    row.attrs = Some("max_cps=0".into());
    let (b, errors) = Balancer::with_rows(vec![row]);
    assert!(b.destination(1).is_none());
    assert!(
        matches!(&errors[0].fault, RowFault::Attrs { reason, .. } if reason.contains("max_cps=0"))
    );
}

fn feedback(percent: u8, validity_ms: u64, seq: Option<f64>) -> siplb_balance::OverloadFeedback {
    siplb_balance::OverloadFeedback {
        percent,
        validity_ms,
        seq,
    }
}

#[test]
fn a_destination_asking_for_fewer_calls_is_passed_over_by_the_draw_for_its_validity() {
    let (b, _) = Balancer::with_rows(capped_rows().into_iter().map(|mut r| {
        r.attrs = None;
        r
    }));
    let t0 = Instant::now();
    b.tick(t0);
    let ip = "127.0.0.1".parse().unwrap();
    assert_eq!(
        b.overload_feedback(ip, 5071, feedback(50, 1000, Some(7.0))),
        Some(1)
    );
    assert_eq!(b.destination(1).unwrap().overload, Some(50));
    // Draws below 50 spare destination 1; the others do not.
    let mut draws = [10usize, 80, 49, 50].into_iter();
    let mut tie = |n: usize| {
        assert_eq!(n, 100);
        draws.next().unwrap()
    };
    let mut picks = Vec::new();
    for _ in 0..4 {
        let a = b
            .select(1, &req("vm"), Flags::default(), &mut tie)
            .selected()
            .unwrap();
        picks.push(a.destination_id());
    }
    assert_eq!(picks, [2, 1, 2, 1]);
    assert_eq!(b.diverted(), 2);
    // Older feedback is left aside; a source that is no destination is ignored.
    assert_eq!(
        b.overload_feedback(ip, 5071, feedback(100, 1000, Some(6.0))),
        None
    );
    assert_eq!(
        b.overload_feedback(ip, 5999, feedback(100, 1000, None)),
        None
    );
    // When the validity runs out, destination 1 wins again without a draw.
    b.tick(t0 + Duration::from_millis(1000));
    assert_eq!(b.destination(1).unwrap().overload, None);
    assert_eq!(pick(&b), Some(1));
}

#[test]
fn when_every_destination_with_room_asks_for_fewer_the_spared_call_is_throttled() {
    let (b, _) = Balancer::with_rows(rows());
    b.tick(Instant::now());
    let ip = "127.0.0.1".parse().unwrap();
    for port in [5071, 5072, 5073] {
        b.overload_feedback(ip, port, feedback(100, 5000, None))
            .unwrap();
    }
    assert!(matches!(
        b.select(1, &req("vm"), Flags::default(), &mut |_| 0),
        Outcome::Throttled
    ));
    assert_eq!(b.diverted(), 3);
    // oc-validity=0 ends it at once.
    b.overload_feedback(ip, 5072, feedback(100, 0, None))
        .unwrap();
    assert_eq!(
        b.select(1, &req("vm"), Flags::default(), &mut |_| 0)
            .selected()
            .map(|a| a.destination_id()),
        Some(2)
    );
}
