//! Reloading the table while calls are up (SPEC section 6, `lb_reload`).

// Fixture helpers outside `#[test]` functions fail loudly, like the tests themselves.
#![allow(clippy::unwrap_used)]

use siplb_balance::{
    Allocation, Balancer, DestinationRow, DestinationStatus, Flags, Outcome, ResourceRequest,
    Session,
};

fn req(list: &str) -> ResourceRequest {
    ResourceRequest::parse(list).unwrap()
}

fn never(_: usize) -> usize {
    unreachable!("no s flag")
}

fn row(id: u32, group: u32, uri: &str, resources: &str) -> DestinationRow {
    DestinationRow::new(id, group, uri, resources)
}

fn study_rows() -> Vec<DestinationRow> {
    vec![
        row(1, 1, "sip:127.0.0.1:5071", "vm=50;pstn=32"),
        row(2, 1, "sip:127.0.0.1:5072", "vm=100"),
        row(3, 1, "sip:127.0.0.1:5073", "vm=50"),
        row(4, 1, "sip:127.0.0.1:5074", "vm=10;pstn=64"),
    ]
}

/// `(max, load)` of `resource` on destination `id`, if both exist.
fn slot(b: &Balancer, id: u32, resource: &str) -> Option<(u32, u32)> {
    let d = b.destination(id)?;
    let r = d.resources.iter().find(|r| &*r.name == resource)?;
    Some((r.max, r.load))
}

fn hold(b: &Balancer, id: u32, request: &str, n: usize) -> Vec<Allocation> {
    (0..n)
        .map(|_| b.restore(id, &req(request)).unwrap())
        .collect()
}

fn all_zero(b: &Balancer) -> bool {
    b.snapshot()
        .iter()
        .all(|d| d.resources.iter().all(|r| r.load == 0))
}

#[test]
fn observed_reload_keeps_loads_and_states_and_drops_resizes() {
    // The reference's mi_reload transcript: resize 1 to 80, operator-disable 4, change 3's
    // row to vm=70, reload with calls up.
    let (b, _) = Balancer::with_rows(study_rows());
    let calls = [
        hold(&b, 1, "vm", 24),
        hold(&b, 2, "vm", 73),
        hold(&b, 3, "vm", 23),
    ];
    b.resize(1, "vm", 80).unwrap();
    b.set_status_by_operator(4, false).unwrap();
    let mut rows = study_rows();
    rows[2].resources = "vm=70".into();
    assert!(b.reload(rows).is_empty());

    assert_eq!(slot(&b, 1, "vm"), Some((50, 24)), "resize lost, load kept");
    assert_eq!(slot(&b, 2, "vm"), Some((100, 73)));
    assert_eq!(slot(&b, 3, "vm"), Some((70, 23)), "new capacity, load kept");
    assert_eq!(
        b.status(4),
        Ok(DestinationStatus {
            enabled: false,
            auto_reenable: false,
            draining: false,
        })
    );
    drop(calls);
    assert!(all_zero(&b));
}

#[test]
fn failover_disabled_state_carries_over_too() {
    let (b, _) = Balancer::with_rows(study_rows());
    b.disable_by_failover(2, 0).unwrap();
    b.reload(study_rows());
    assert_eq!(
        b.status(2),
        Ok(DestinationStatus {
            enabled: false,
            auto_reenable: true,
            draining: false,
        })
    );
    // Still the same status: a probe now re-enables the destination of the new table.
    assert_eq!(b.enable_by_probe(2), Ok(true));
    assert!(b.status(2).unwrap().enabled);
}

#[test]
fn uri_compared_without_case_carries_over() {
    let (b, _) = Balancer::with_rows([row(1, 1, "sip:GW.example.net:5060", "vm=5")]);
    let call = b.restore(1, &req("vm")).unwrap();
    b.set_status_by_operator(1, false).unwrap();
    b.reload([row(1, 1, "SIP:gw.example.NET:5060", "vm=5")]);
    assert_eq!(slot(&b, 1, "vm"), Some((5, 1)));
    assert!(!b.status(1).unwrap().enabled);
    drop(call);
    assert_eq!(slot(&b, 1, "vm"), Some((5, 0)));
}

#[test]
fn changed_uri_or_group_starts_fresh() {
    let (b, _) = Balancer::with_rows([
        row(1, 1, "sip:10.0.0.1", "vm=5"),
        row(2, 1, "sip:10.0.0.2", "vm=5"),
    ]);
    let old = [hold(&b, 1, "vm", 2), hold(&b, 2, "vm", 3)];
    b.set_status_by_operator(1, false).unwrap();
    b.set_status_by_operator(2, false).unwrap();
    b.reload([
        row(1, 1, "sip:10.0.0.9", "vm=5"),
        row(2, 2, "sip:10.0.0.2", "vm=5"),
    ]);
    assert_eq!(slot(&b, 1, "vm"), Some((5, 0)));
    assert_eq!(slot(&b, 2, "vm"), Some((5, 0)));
    assert!(b.status(1).unwrap().enabled && b.status(2).unwrap().auto_reenable);
    let new = hold(&b, 1, "vm", 1);
    // Old calls release their own counters, never the new table's.
    drop(old);
    assert_eq!(slot(&b, 1, "vm"), Some((5, 1)));
    assert_eq!(slot(&b, 2, "vm"), Some((5, 0)));
    drop(new);
    assert!(all_zero(&b));
}

#[test]
fn allocation_on_removed_destination_releases_cleanly() {
    let (b, _) = Balancer::with_rows(study_rows());
    let on_two = b
        .select(1, &req("vm"), Flags::NONE, &mut never)
        .selected()
        .unwrap();
    assert_eq!(on_two.destination_id(), 2);
    let mut rows = study_rows();
    rows.remove(1);
    b.reload(rows);
    assert!(b.destination(2).is_none());
    assert_eq!(
        on_two.uri(),
        "sip:127.0.0.1:5072",
        "still describes where it was taken"
    );
    on_two.release();
    assert!(all_zero(&b));
    // Re-adding id 2 later does not resurrect the old counter.
    b.reload(study_rows());
    assert_eq!(slot(&b, 2, "vm"), Some((100, 0)));
}

#[test]
fn resources_follow_their_names_across_reload() {
    let (b, _) = Balancer::with_rows([row(1, 1, "sip:10.0.0.1", "vm=5;pstn=5")]);
    let both = b.restore(1, &req("vm;pstn")).unwrap();
    // pstn disappears, fax appears, order changes.
    b.reload([row(1, 1, "sip:10.0.0.1", "fax=3; vm=6")]);
    assert_eq!(slot(&b, 1, "vm"), Some((6, 1)));
    assert_eq!(slot(&b, 1, "fax"), Some((3, 0)));
    assert_eq!(slot(&b, 1, "pstn"), None);
    let names: Vec<String> = b
        .destination(1)
        .unwrap()
        .resources
        .iter()
        .map(|r| r.name.to_string())
        .collect();
    assert_eq!(names, ["fax", "vm"]);
    // pstn comes back with a fresh counter while the old call still holds the old one.
    b.reload([row(1, 1, "sip:10.0.0.1", "vm=5;pstn=5")]);
    assert_eq!(slot(&b, 1, "pstn"), Some((5, 0)));
    assert_eq!(slot(&b, 1, "vm"), Some((5, 1)));
    drop(both);
    assert!(all_zero(&b));
}

#[test]
fn selections_after_reload_see_carried_loads() {
    let (b, _) = Balancer::with_rows([
        row(1, 1, "sip:10.0.0.1", "vm=10"),
        row(2, 1, "sip:10.0.0.2", "vm=10"),
    ]);
    let _busy = hold(&b, 1, "vm", 9);
    b.reload([
        row(1, 1, "sip:10.0.0.1", "vm=10"),
        row(2, 1, "sip:10.0.0.2", "vm=10"),
    ]);
    let next = b
        .select(1, &req("vm"), Flags::NONE, &mut never)
        .selected()
        .unwrap();
    assert_eq!(next.destination_id(), 2);
}

#[test]
fn session_survives_reload_and_remembers_tried_ids() {
    let (b, _) = Balancer::with_rows(study_rows());
    let mut s = Session::new(1, req("pstn"), Flags::NONE);
    assert_eq!(
        s.next(&b, &mut never).selected().unwrap().destination_id(),
        4
    );
    b.reload(study_rows());
    assert_eq!(slot(&b, 4, "pstn"), Some((64, 1)));
    assert_eq!(
        s.next(&b, &mut never).selected().unwrap().destination_id(),
        1
    );
    assert_eq!(slot(&b, 4, "pstn"), Some((64, 0)));
    assert!(matches!(s.next(&b, &mut never), Outcome::NoDestination));
    // A reload that removes the resource makes it unknown.
    let mut s = Session::new(1, req("pstn"), Flags::NONE);
    assert!(s.next(&b, &mut never).is_selected());
    b.reload([row(2, 1, "sip:127.0.0.1:5072", "vm=100")]);
    assert!(matches!(s.next(&b, &mut never), Outcome::UnknownResource));
    assert!(all_zero(&b));
}

#[test]
fn reload_reports_bad_rows_and_loads_the_rest() {
    let (b, _) = Balancer::with_rows(study_rows());
    let errors = b.reload([
        row(1, 1, "sip:127.0.0.1:5071", "vm=50;pstn=32"),
        row(2, 1, "sip:127.0.0.1:5072", "vm=-1"),
    ]);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].id, 2);
    assert_eq!(b.snapshot().len(), 1);
}
