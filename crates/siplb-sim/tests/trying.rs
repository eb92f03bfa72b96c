//! siplb's own 100 Trying goes to a caller only when nothing else has within 200 ms
//! (RFC 3261 17.2.1): a destination that rings at once saves the caller a datagram
//! and a wake-up per call, and a slow one still stops the caller's retransmissions.
//! The simulator's checks hold throughout, one of them that no 100 follows another
//! response to the same INVITE.

#![allow(clippy::panic)]

use siplb_sim::{Answer, Call, Ending, Knobs, Net, Report, Script, Target};

fn calls(count: u32, answer: Answer, trying_at_once: bool) -> Report {
    let calls = (0..count)
        .map(|i| Call {
            at_ms: 1000 + i * 100,
            caller: 0,
            tcp: i % 4 == 3,
            target: Target::Vm,
            rr_aware: true,
            preloaded_route: false,
            ending: Ending::Bye(10),
            answers: vec![answer],
        })
        .collect();
    let script = Script {
        seed: 5,
        net: Net {
            latency_ms: 2,
            ..Net::default()
        },
        config: Knobs {
            probing: false,
            trying_at_once,
            ..Knobs::default()
        },
        calls,
        ops: Vec::new(),
        outages: Vec::new(),
        hostile: Vec::new(),
    };
    match siplb_sim::run(&script) {
        Ok(report) => report,
        Err(f) => panic!("{f}"),
    }
}

#[test]
fn a_caller_hears_a_100_only_from_a_destination_slower_than_200ms() {
    let quick = Answer::Ok {
        ring: Some(10),
        answer: 20,
    };
    let report = calls(100, quick, false);
    assert_eq!(report.answered, 100, "{report:?}");
    assert_eq!(report.tryings, 0, "{report:?}");

    // Ringing at once, answered later: the 180 was enough.
    let ringing = Answer::Ok {
        ring: Some(10),
        answer: 300,
    };
    let report = calls(100, ringing, false);
    assert_eq!(report.answered, 100, "{report:?}");
    assert_eq!(report.tryings, 0, "{report:?}");

    // Ringing after 400 ms: the 100 went at 200 ms, one per call.
    let slow = Answer::Ok {
        ring: Some(400),
        answer: 450,
    };
    let report = calls(100, slow, false);
    assert_eq!(report.answered, 100, "{report:?}");
    assert_eq!(report.tryings, 100, "{report:?}");

    // Sent at once when so configured, however quick the destination.
    let report = calls(100, quick, true);
    assert_eq!(report.answered, 100, "{report:?}");
    assert_eq!(report.tryings, 100, "{report:?}");
}
