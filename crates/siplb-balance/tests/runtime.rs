//! Sessions and failover, status changes, resize, address matching, counting and restoring
//! calls, loading rows and listing the table.

// Fixture helpers outside `#[test]` functions fail loudly, like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;

use siplb_balance::{
    AttachError, Balancer, DestinationNotFound, DestinationRow, DestinationStatus, FailoverDisable,
    Flags, Host, Name, NameTransport, Outcome, ResizeError, Resolution, ResourceListError,
    ResourceRequest, RowFault, Session, UriError,
};

fn req(list: &str) -> ResourceRequest {
    ResourceRequest::parse(list).unwrap()
}

fn never(_: usize) -> usize {
    unreachable!("no s flag")
}

fn study() -> Balancer {
    let (b, errors) = Balancer::with_rows([
        DestinationRow::new(1, 1, "sip:127.0.0.1:5071", "vm=50;pstn=32"),
        DestinationRow::new(2, 1, "sip:127.0.0.1:5072", "vm=100"),
        DestinationRow::new(3, 1, "sip:127.0.0.1:5073", "vm=50"),
        DestinationRow::new(4, 1, "sip:127.0.0.1:5074", "vm=10;pstn=64"),
    ]);
    assert!(errors.is_empty());
    b
}

fn vm_loads(b: &Balancer) -> Vec<u32> {
    b.snapshot().iter().map(|d| d.resources[0].load).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn failover_releases_previous_load_and_skips_tried_destinations() {
    // Observed run 7A: dst2 answers 503, is disabled from the script, and lb_next picks the
    // best untried among {1, 3, 4}; 1 and 3 tie, 1 wins.
    let b = study();
    let mut s = Session::new(1, req("vm"), Flags::NONE);
    assert_eq!(
        s.next(&b, &mut never).selected().unwrap().destination_id(),
        2
    );
    assert_eq!(vm_loads(&b), [0, 1, 0, 0]);
    assert_eq!(b.disable_by_failover(2, 1), Ok(FailoverDisable::Disabled));
    let again = s.next(&b, &mut never).selected().unwrap();
    assert_eq!(again.destination_id(), 1);
    assert_eq!(vm_loads(&b), [1, 0, 0, 0]);
    assert_eq!(s.tried(), [2, 1]);
    // Even once 2 is enabled again, this call does not go back to it.
    b.enable_by_probe(2).unwrap();
    assert_eq!(
        s.next(&b, &mut never).selected().unwrap().destination_id(),
        3
    );
    assert_eq!(
        s.next(&b, &mut never).selected().unwrap().destination_id(),
        4
    );
    assert!(matches!(s.next(&b, &mut never), Outcome::NoDestination));
    assert!(s.current().is_none());
    assert_eq!(vm_loads(&b), [0, 0, 0, 0]);
}

#[test]
fn failover_reports_no_capacity_when_untried_are_full() {
    let b = study();
    // 32 free on each: the tie goes to 1.
    let _half: Vec<_> = (0..32)
        .map(|_| b.restore(4, &req("pstn")).unwrap())
        .collect();
    let mut s = Session::new(1, req("pstn"), Flags::NONE);
    assert_eq!(
        s.next(&b, &mut never).selected().unwrap().destination_id(),
        1
    );
    // The only untried candidate, 4, fills up before the failover.
    let _fill: Vec<_> = (0..32)
        .map(|_| b.restore(4, &req("pstn")).unwrap())
        .collect();
    assert!(matches!(s.next(&b, &mut never), Outcome::NoCapacity));
    assert_eq!(b.destination(1).unwrap().resources[1].load, 0, "released");
}

#[test]
fn session_hands_over_or_releases_its_allocation() {
    let b = study();
    let mut s = Session::new(1, req("vm"), Flags::NONE);
    assert!(s.next(&b, &mut never).is_selected());
    assert_eq!(
        (s.group(), s.request().to_string(), s.flags()),
        (1, "vm".into(), Flags::NONE)
    );
    let held = s.into_allocation().unwrap();
    assert_eq!(vm_loads(&b), [0, 1, 0, 0]);
    drop(held);
    let mut s = Session::new(1, req("vm"), Flags::NONE);
    assert!(s.next(&b, &mut never).is_selected());
    s.release();
    let mut s = Session::new(1, req("vm"), Flags::NONE);
    assert!(s.next(&b, &mut never).is_selected());
    drop(s);
    assert_eq!(vm_loads(&b), [0, 0, 0, 0]);
    let mut unknown = Session::new(1, req("fax"), Flags::NONE);
    assert!(matches!(
        unknown.next(&b, &mut never),
        Outcome::UnknownResource
    ));
}

#[test]
fn disabled_destinations_keep_their_load_but_get_no_new_calls() {
    let b = study();
    let held: Vec<_> = (0..3)
        .map(|_| {
            b.select(1, &req("vm"), Flags::NONE, &mut never)
                .selected()
                .unwrap()
        })
        .collect();
    assert_eq!(vm_loads(&b), [0, 3, 0, 0]);
    assert_eq!(b.set_status_by_operator(2, false), Ok(true));
    let d = b.destination(2).unwrap();
    assert_eq!(
        (d.enabled, d.auto_reenable, d.resources[0].load),
        (false, false, 3)
    );
    let next = b
        .select(1, &req("vm"), Flags::NONE, &mut never)
        .selected()
        .unwrap();
    assert_eq!(next.destination_id(), 1);
    drop(held);
    assert_eq!(vm_loads(&b), [1, 0, 0, 0]);
}

#[test]
fn status_transitions_report_changes() {
    let b = study();
    let on = DestinationStatus {
        enabled: true,
        auto_reenable: true,
        draining: false,
    };
    assert_eq!(b.status(1), Ok(on));
    assert_eq!(b.disable_by_failover(1, 0), Ok(FailoverDisable::Disabled));
    assert_eq!(
        b.disable_by_failover(1, 0),
        Ok(FailoverDisable::AlreadyDisabled)
    );
    assert_eq!(
        b.status(1),
        Ok(DestinationStatus {
            enabled: false,
            auto_reenable: true,
            draining: false,
        })
    );
    assert_eq!(b.enable_by_probe(1), Ok(true));
    assert_eq!(b.enable_by_probe(1), Ok(false));
    assert_eq!(b.set_status_by_operator(1, false), Ok(true));
    assert_eq!(
        b.enable_by_probe(1),
        Ok(false),
        "operator disable blocks probes"
    );
    assert_eq!(b.disable_by_probe(1), Ok(false));
    assert_eq!(b.set_status_by_operator(1, true), Ok(true));
    assert_eq!(b.set_status_by_operator(1, true), Ok(false));
    assert_eq!(b.disable_by_probe(1), Ok(true));
    assert_eq!(b.status(99), Err(DestinationNotFound { id: 99 }));
    assert_eq!(
        b.set_status_by_operator(99, true),
        Err(DestinationNotFound { id: 99 })
    );
    assert_eq!(b.enable_by_probe(99), Err(DestinationNotFound { id: 99 }));
    assert_eq!(
        b.disable_by_failover(99, 1),
        Err(DestinationNotFound { id: 99 })
    );
    assert!(FailoverDisable::Disabled.changed());
    assert!(!FailoverDisable::KeptByFloor.changed());
}

#[test]
fn failover_disable_keeps_the_floor_of_enabled_destinations() {
    let b = study();
    assert_eq!(b.disable_by_failover(1, 2), Ok(FailoverDisable::Disabled));
    assert_eq!(b.disable_by_failover(2, 2), Ok(FailoverDisable::Disabled));
    assert_eq!(
        b.disable_by_failover(3, 2),
        Ok(FailoverDisable::KeptByFloor)
    );
    assert_eq!(b.disable_by_failover(3, 1), Ok(FailoverDisable::Disabled));
    assert_eq!(
        b.disable_by_failover(4, 1),
        Ok(FailoverDisable::KeptByFloor)
    );
    assert!(b.status(4).unwrap().enabled);
    assert_eq!(
        b.disable_by_failover(1, 1),
        Ok(FailoverDisable::AlreadyDisabled)
    );
    // The floor is per group: the operator may still switch the last one off.
    assert_eq!(b.set_status_by_operator(4, false), Ok(true));
}

#[test]
fn resize_applies_at_once_and_keeps_calls() {
    let b = study();
    let held: Vec<_> = (0..5).map(|_| b.restore(3, &req("vm")).unwrap()).collect();
    assert_eq!(b.resize(3, "vm", 2), Ok(()));
    let d = b.destination(3).unwrap();
    assert_eq!((d.resources[0].max, d.resources[0].load), (2, 5));
    // Over capacity: no new calls until it drains below.
    b.set_status_by_operator(1, false).unwrap();
    b.set_status_by_operator(2, false).unwrap();
    b.set_status_by_operator(4, false).unwrap();
    assert!(matches!(
        b.select(1, &req("vm"), Flags::NONE, &mut never),
        Outcome::NoCapacity
    ));
    drop(held);
    assert!(
        b.select(1, &req("vm"), Flags::NONE, &mut never)
            .is_selected()
    );
    assert_eq!(b.resize(3, "vm", 200), Ok(()));
    assert_eq!(b.destination(3).unwrap().resources[0].max, 200);
    assert_eq!(
        b.resize(99, "vm", 1),
        Err(ResizeError::DestinationNotFound(DestinationNotFound {
            id: 99
        }))
    );
    assert_eq!(
        b.resize(2, "pstn", 10),
        Err(ResizeError::NoSuchResource {
            id: 2,
            resource: "pstn".into()
        })
    );
}

#[test]
fn is_destination_matches_ip_port_group_and_status() {
    let (b, _) = Balancer::with_rows([
        DestinationRow::new(1, 1, "sip:10.0.0.1:5060", "pstn=1"),
        DestinationRow::new(2, 2, "sip:10.0.0.1:5070", "pstn=1"),
        DestinationRow::new(3, 2, "sip:10.0.0.2", "pstn=1"),
        DestinationRow::new(4, 1, "sips:[2001:db8::1]:5061", "pstn=1"),
        DestinationRow::new(5, 1, "sip:gw.example.net:5060", "pstn=1"),
    ]);
    let found = |ip_: &str, port, group, enabled| {
        b.is_destination(ip(ip_), port, group, enabled)
            .map(|d| d.id)
    };
    assert_eq!(found("10.0.0.1", 5060, None, false), Some(1));
    assert_eq!(found("10.0.0.1", 5070, None, false), Some(2));
    assert_eq!(found("10.0.0.1", 5080, None, false), None);
    assert_eq!(
        found("10.0.0.1", 0, None, false),
        Some(1),
        "port 0 matches any"
    );
    assert_eq!(found("10.0.0.1", 0, Some(2), false), Some(2));
    assert_eq!(
        found("10.0.0.2", 40000, None, false),
        Some(3),
        "URI without port"
    );
    assert_eq!(found("10.0.0.2", 40000, Some(1), false), None);
    assert_eq!(found("2001:db8::1", 5061, None, false), Some(4));
    assert_eq!(
        found("::ffff:10.0.0.2", 5060, None, false),
        Some(3),
        "v4-mapped"
    );
    assert_eq!(found("10.0.0.9", 0, None, false), None);
    b.set_status_by_operator(1, false).unwrap();
    assert_eq!(found("10.0.0.1", 0, None, true), Some(2));
    assert_eq!(found("10.0.0.1", 0, None, false), Some(1));
    // Host names match nothing without a resolver.
    let five = b.destination(5).unwrap();
    assert_eq!(
        (five.host, five.port),
        (Host::Name("gw.example.net".into()), 5060)
    );
    let info = b.is_destination(ip("10.0.0.2"), 0, None, false).unwrap();
    assert_eq!(
        (&*info.uri, info.group, info.attrs),
        ("sip:10.0.0.2", 2, None)
    );
}

#[test]
fn host_names_take_calls_and_match_once_resolved() {
    let (b, errors) = Balancer::with_rows([
        DestinationRow::new(5, 1, "sip:GW.example.net:5060", "pstn=1"),
        DestinationRow::new(6, 2, "sip:gw.example.net:5060", "pstn=1"),
        DestinationRow::new(7, 2, "sip:gw.example.net;transport=tcp", "pstn=1"),
    ]);
    assert!(errors.is_empty());
    let mut names = b.names();
    names.sort_by_key(|c| c.name().port);
    let asked: Vec<Name> = names.iter().map(|c| c.name().clone()).collect();
    // One cell per name, port and transport, whatever the case or the group.
    assert_eq!(
        asked,
        [
            Name {
                host: "gw.example.net".into(),
                port: 0,
                transport: NameTransport::Tcp
            },
            Name {
                host: "gw.example.net".into(),
                port: 5060,
                transport: NameTransport::Udp
            },
        ]
    );
    // Not resolved yet: no candidate, no match, and the listing says so.
    assert!(matches!(
        b.select(1, &req("pstn"), Flags::default(), &mut never),
        Outcome::NoDestination
    ));
    assert!(
        b.is_destination(ip("192.0.2.7"), 5060, None, false)
            .is_none()
    );
    let five = b.destination(5).unwrap();
    assert!(!five.resolution.as_ref().unwrap().done);

    names[1].publish(Resolution {
        addresses: vec![
            "192.0.2.7:5060".parse().unwrap(),
            "[::ffff:192.0.2.8]:5060".parse().unwrap(),
        ]
        .into(),
        error: None,
        done: true,
    });
    let Outcome::Selected(a) = b.select(1, &req("pstn"), Flags::default(), &mut never) else {
        panic!("a resolved name is a candidate");
    };
    assert_eq!(a.addresses().unwrap().len(), 2);
    assert_eq!(a.destination_id(), 5);
    drop(a);
    for source in ["192.0.2.7", "192.0.2.8"] {
        assert_eq!(
            b.is_destination(ip(source), 5060, None, true).unwrap().id,
            5
        );
    }
    assert!(
        b.is_destination(ip("192.0.2.7"), 5061, None, true)
            .is_none()
    );
    assert_eq!(
        b.is_destination(ip("192.0.2.7"), 5060, Some(2), true)
            .unwrap()
            .id,
        6,
        "the same name in another group shares what it resolved to"
    );

    // A reload keeps what was resolved; a name no row uses any more is forgotten.
    drop(names);
    b.reload([DestinationRow::new(
        5,
        1,
        "sip:gw.example.net:5060",
        "pstn=1",
    )]);
    assert_eq!(b.names().len(), 1);
    assert_eq!(
        b.is_destination(ip("192.0.2.7"), 5060, None, true)
            .unwrap()
            .id,
        5
    );

    // A name that stops resolving stops taking calls, and says why.
    b.names()[0].publish(Resolution {
        addresses: Vec::new().into(),
        error: Some("no such name".into()),
        done: true,
    });
    assert!(matches!(
        b.select(1, &req("pstn"), Flags::default(), &mut never),
        Outcome::NoDestination
    ));
    let listed = b.destination(5).unwrap().resolution.unwrap();
    assert_eq!(listed.error.as_deref(), Some("no such name"));
}

#[test]
fn count_call_ignores_status_and_capacity() {
    let (b, _) = Balancer::with_rows([
        DestinationRow::new(1, 1, "sip:10.0.0.1:5060", "pstn=1;vm=1"),
        DestinationRow::new(2, 2, "sip:10.0.0.1:5060", "fax=1"),
    ]);
    b.set_status_by_operator(1, false).unwrap();
    let calls: Vec<_> = (0..3)
        .map(|_| {
            b.count_call(ip("10.0.0.1"), 5060, None, &req("pstn"))
                .unwrap()
        })
        .collect();
    assert_eq!(
        b.destination(1).unwrap().resources[0].load,
        3,
        "above capacity 1"
    );
    assert_eq!(calls[0].destination_id(), 1);
    // First match wins even when it lacks the resource; the group narrows the match.
    assert_eq!(
        b.count_call(ip("10.0.0.1"), 0, None, &req("fax"))
            .unwrap_err(),
        AttachError::MissingResource {
            id: 1,
            resource: "fax".into()
        }
    );
    let fax = b
        .count_call(ip("10.0.0.1"), 0, Some(2), &req("fax"))
        .unwrap();
    assert_eq!(fax.destination_id(), 2);
    assert_eq!(
        b.count_call(ip("10.0.0.3"), 5060, None, &req("pstn"))
            .unwrap_err(),
        AttachError::NoMatchingDestination
    );
    drop((calls, fax));
    assert!(
        b.snapshot()
            .iter()
            .all(|d| d.resources.iter().all(|r| r.load == 0))
    );
}

#[test]
fn restore_attaches_by_id_whatever_the_capacity() {
    let b = study();
    let a = b.restore(4, &req("vm;pstn")).unwrap();
    assert_eq!(a.resources().collect::<Vec<_>>(), ["vm", "pstn"]);
    assert_eq!(
        (a.uri(), a.port(), a.group()),
        ("sip:127.0.0.1:5074", 5074, 1)
    );
    assert_eq!(a.host(), &Host::Ip(ip("127.0.0.1")));
    let extra: Vec<_> = (0..20).map(|_| b.restore(4, &req("vm")).unwrap()).collect();
    assert_eq!(b.destination(4).unwrap().resources[0].load, 21);
    assert_eq!(
        b.restore(9, &req("vm")).unwrap_err(),
        AttachError::DestinationNotFound(DestinationNotFound { id: 9 })
    );
    assert_eq!(
        b.restore(2, &req("vm;pstn")).unwrap_err(),
        AttachError::MissingResource {
            id: 2,
            resource: "pstn".into()
        }
    );
    assert_eq!(
        b.destination(2).unwrap().resources[0].load,
        0,
        "nothing taken on failure"
    );
    drop((a, extra));
    assert_eq!(b.destination(4).unwrap().resources[0].load, 0);
}

#[test]
fn bad_rows_are_skipped_with_their_id_and_fault() {
    let mut attrs_row = DestinationRow::new(7, 2, "sip:10.0.0.7", "vm=5");
    attrs_row.attrs = Some("foo=bar".into());
    attrs_row.probe_mode = 2;
    attrs_row.description = Some("box seven".into());
    let (b, errors) = Balancer::with_rows([
        DestinationRow::new(1, 1, "sip:10.0.0.1", "vm=50; pstn=32"),
        DestinationRow::new(2, 1, "sip:10.0.0.2", "vm=x"),
        DestinationRow::new(3, 1, "sip:10.0.0.3", "vm=1;vm=2"),
        DestinationRow::new(1, 1, "sip:10.0.0.4", "vm=1"),
        DestinationRow::new(5, 1, "http://10.0.0.5", "vm=1"),
        DestinationRow::new(6, 1, "sip:10.0.0.6:99999", "vm=1"),
        attrs_row,
    ]);
    // Errors come in id order, as the table is sorted by id.
    let ids: Vec<u32> = errors.iter().map(|e| e.id).collect();
    assert_eq!(ids, [1, 2, 3, 5, 6]);
    assert_eq!(errors[0].fault, RowFault::DuplicateId);
    assert!(matches!(
        &errors[1].fault,
        RowFault::Resources {
            reason: ResourceListError::InvalidCapacity { .. },
            ..
        }
    ));
    assert!(matches!(
        &errors[2].fault,
        RowFault::Resources {
            reason: ResourceListError::Duplicate { .. },
            ..
        }
    ));
    assert!(matches!(
        &errors[3].fault,
        RowFault::Uri {
            reason: UriError::Scheme,
            ..
        }
    ));
    assert!(matches!(
        &errors[4].fault,
        RowFault::Uri {
            reason: UriError::InvalidPort { .. },
            ..
        }
    ));
    assert_eq!(errors[0].to_string(), "destination 1 skipped: duplicate id");
    assert!(
        errors[2]
            .to_string()
            .starts_with("destination 3 skipped: bad resources")
    );

    let list = b.snapshot();
    assert_eq!(list.iter().map(|d| d.id).collect::<Vec<_>>(), [1, 7]);
    assert_eq!(
        &*list[0].uri, "sip:10.0.0.1",
        "the first row with id 1 is kept"
    );
    let names: Vec<(&str, u32, u32)> = list[0]
        .resources
        .iter()
        .map(|r| (&*r.name, r.max, r.load))
        .collect();
    assert_eq!(names, [("vm", 50, 0), ("pstn", 32, 0)]);
    let seven = &list[1];
    assert_eq!(
        (
            seven.group,
            seven.enabled,
            seven.auto_reenable,
            seven.probe_mode
        ),
        (2, true, true, 2)
    );
    assert_eq!(seven.attrs.as_deref(), Some("foo=bar"));
    assert_eq!(seven.description.as_deref(), Some("box seven"));
    assert!(b.destination(2).is_none());
}

#[test]
fn empty_table_loads() {
    let (b, errors) = Balancer::with_rows(Vec::new());
    assert!(errors.is_empty());
    assert!(b.snapshot().is_empty());
}

#[test]
fn handles_are_shareable_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Balancer>();
    send_sync::<siplb_balance::Allocation>();
    send_sync::<Session>();
    send_sync::<ResourceRequest>();
}
