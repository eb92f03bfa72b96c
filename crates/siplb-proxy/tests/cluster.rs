//! A cluster node's core: a new call waits for the shared store's reservation while
//! the core goes on; refused, it chooses again; cancelled meanwhile, it ends. Every
//! allocation is reported to the ledger once taken and once released.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod rig;

use std::sync::{Arc, Mutex};

use rig::*;
use siplb_balance::{Ledger, Take, TakeKind};

/// What the balancer reported, in order.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<Report>>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Report {
    Taken(u64, TakeKind, u32),
    Released(u64),
}

impl Ledger for Recorder {
    fn taken(&self, take: Take) {
        self.0
            .lock()
            .unwrap()
            .push(Report::Taken(take.ticket, take.kind, take.destination));
    }

    fn released(&self, ticket: u64) {
        self.0.lock().unwrap().push(Report::Released(ticket));
    }
}

fn clustered() -> (Rig, Arc<Recorder>) {
    let rig = Rig::new(
        &[
            (1, "sip:127.0.0.11:5060", "vm=5"),
            (2, "sip:127.0.0.12:5060", "vm=2"),
        ],
        "",
    );
    let recorder = Arc::new(Recorder::default());
    rig.balancer.set_ledger(recorder.clone()).unwrap();
    (rig, recorder)
}

fn last_reservation(recorder: &Recorder) -> (u64, u32) {
    recorder
        .0
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find_map(|r| match r {
            Report::Taken(t, TakeKind::Reserve, d) => Some((*t, *d)),
            _ => None,
        })
        .unwrap()
}

#[test]
fn the_invite_waits_for_its_reservation_and_goes_out_when_granted() {
    let (mut rig, recorder) = clustered();
    rig.feed(CALLER, &invite("VM_1", "r1"));
    // Nothing: the INVITE waits for the store, the 100 Trying for 200 ms.
    assert!(rig.sent().is_empty());
    let (ticket, destination) = last_reservation(&recorder);
    assert_eq!(destination, 1);
    assert_eq!(rig.load(1), 1, "the load is held while waiting");
    // Meanwhile the core handles other calls.
    rig.feed(CALLER, &invite("VM_1", "r2"));
    assert!(rig.sent().is_empty());
    // A store slower than 200 ms: the callers hear 100 Trying meanwhile.
    rig.advance(std::time::Duration::from_millis(200));
    let out = rig.sent();
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(
        out.iter()
            .all(|(to, m)| *to == addr(CALLER) && status(m) == 100)
    );
    rig.proxy.handle_reservation(rig.now, ticket, true);
    let out = rig.sent();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        (out[0].0, out[0].1.method().unwrap().as_str()),
        (addr(DST1), "INVITE")
    );
    // A second answer for the same ticket changes nothing.
    rig.proxy.handle_reservation(rig.now, ticket, true);
    assert!(rig.sent().is_empty());
}

#[test]
fn a_refused_reservation_chooses_again_without_blame_then_service_full() {
    let (mut rig, recorder) = clustered();
    rig.feed(CALLER, &invite("VM_1", "r3"));
    let _ = rig.sent();
    let (first, d1) = last_reservation(&recorder);
    assert_eq!(d1, 1);
    rig.proxy.handle_reservation(rig.now, first, false);
    assert!(
        rig.sent().is_empty(),
        "the next destination is reserved first"
    );
    let (second, d2) = last_reservation(&recorder);
    assert_eq!(d2, 2);
    assert_eq!((rig.load(1), rig.load(2)), (0, 1));
    assert!(rig.balancer.destination(1).unwrap().enabled, "no blame");
    rig.proxy.handle_reservation(rig.now, second, false);
    let out = rig.sent();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(status(&out[0].1), 500);
    assert_eq!(out[0].1.reason(), Some(&b"Service full"[..]));
    assert_eq!((rig.load(1), rig.load(2)), (0, 0));
    assert_eq!(rig.proxy.stats().reservations_refused, 2);
    assert_eq!(rig.proxy.stats().rejected_no_capacity, 1);
    assert_eq!(rig.proxy.calls(), 0);
    // Each allocation reported taken once and released once.
    let reports = recorder.0.lock().unwrap().clone();
    assert_eq!(
        reports,
        vec![
            Report::Taken(first, TakeKind::Reserve, 1),
            Report::Released(first),
            Report::Taken(second, TakeKind::Reserve, 2),
            Report::Released(second),
        ]
    );
}

#[test]
fn a_cancel_while_waiting_ends_the_call_and_a_late_answer_is_dropped() {
    let (mut rig, recorder) = clustered();
    rig.feed(CALLER, &invite("VM_1", "r4"));
    let _ = rig.sent();
    let (ticket, _) = last_reservation(&recorder);
    rig.feed(
        CALLER,
        &invite("VM_1", "r4")
            .replacen("INVITE sip:", "CANCEL sip:", 1)
            .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL"),
    );
    let codes: Vec<u16> = rig.sent().iter().map(|(_, m)| status(m)).collect();
    assert!(codes.contains(&200) && codes.contains(&487), "{codes:?}");
    assert_eq!(rig.load(1), 0);
    assert_eq!(rig.proxy.calls(), 0);
    rig.proxy.handle_reservation(rig.now, ticket, true);
    assert!(
        rig.sent().iter().all(|(to, _)| *to == addr(CALLER)),
        "nothing goes to the destination"
    );
}

/// A request of a call siplb does not know, whose Route names a dead node of the
/// cluster whose calls another node adopted, goes to that node (a caller whose
/// outbound proxy's floating address moved here); nothing else is handed over: not a
/// request that came from another node (two nodes would hand it back and forth), not
/// one whose Route names a live node or this node, nor one from a caller outside the
/// cluster naming no dead node.
#[test]
fn requests_of_a_dead_nodes_calls_go_to_the_adopter_and_nowhere_else() {
    let mut rig = Rig::new(
        &[(1, "sip:127.0.0.11:5060", "vm=5")],
        "[cluster]\nredis = \"redis://127.0.0.1/0\"\nnode = \"a\"\n\
         addresses = [\"sip:127.0.0.1:5060\", \"sip:127.0.0.2:5060\", \"sip:127.0.0.3:5060\"]\n",
    );
    let handovers = std::sync::Arc::new(siplb_proxy::Handovers::default());
    handovers.set(
        [(
            addr("127.0.0.2:5060"),
            siplb_proxy::Peer::udp(addr("127.0.0.3:5060")),
        )]
        .into_iter()
        .collect(),
    );
    rig.proxy.set_handovers(handovers);
    let bye = |branch: &str, route: &str| {
        format!(
            "BYE sip:bob@127.0.0.11:5060 SIP/2.0
Via: SIP/2.0/UDP {CALLER};branch=z9hG4bK-{branch}
Max-Forwards: 70
Route: <sip:{route};lr>
From: <sip:alice@127.0.0.100>;tag=a-dead
To: <sip:VM_1@127.0.0.1>;tag=b-dead
Call-ID: dead-node-call
CSeq: 2 BYE
Content-Length: 0

"
        )
    };
    // From the caller, naming the dead node: to the adopter, the Route left for it.
    rig.feed(CALLER, &bye("h1", "127.0.0.2:5060"));
    let out = rig.sent();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0, addr("127.0.0.3:5060"));
    assert_eq!(out[0].1.method().unwrap().as_str(), "BYE");
    assert_eq!(
        out[0].1.routes().count(),
        1,
        "the adopter consumes its Route"
    );
    // The same from another node: no ping-pong, 481.
    rig.feed("127.0.0.3:5060", &bye("h2", "127.0.0.2:5060"));
    let out = rig.sent();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0].0, status(&out[0].1)), (addr("127.0.0.3:5060"), 481));
    // Naming a live node, or this one: a call nobody here knows, 481, sent nowhere.
    for (branch, route) in [("h3", "127.0.0.3:5060"), ("h4", "127.0.0.1:5060")] {
        rig.feed(CALLER, &bye(branch, route));
        let out = rig.sent();
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!((out[0].0, status(&out[0].1)), (addr(CALLER), 481));
    }
}
