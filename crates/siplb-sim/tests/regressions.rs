//! One script per fault the simulator was built to catch (issue "Real-world traffic"),
//! each reduced to the calls that show it. Every one of them broke an invariant on
//! the core before its redesign; see docs/SIMULATOR.md for what each broke.

#![allow(clippy::panic)]

use siplb_sim::{Answer, Call, Ending, Hostile, HostileKind, Knobs, Net, Outage, Script, Target};

fn script(calls: Vec<Call>, hostile: Vec<Hostile>) -> Script {
    Script {
        seed: 7,
        net: Net::default(),
        config: Knobs {
            failures_to_disable: 0,
            min_enabled: 1,
            probing: false,
            ..Knobs::default()
        },
        calls,
        ops: Vec::new(),
        outages: Vec::new(),
        hostile,
    }
}

fn call(target: Target, ending: Ending, answers: Vec<Answer>) -> Call {
    Call {
        at_ms: 1000,
        caller: 0,
        tcp: false,
        target,
        rr_aware: true,
        preloaded_route: false,
        ending,
        answers,
    }
}

fn answer_at_once() -> Answer {
    Answer::Ok {
        ring: Some(100),
        answer: 300,
    }
}

fn clean(s: &Script) {
    if let Err(f) = siplb_sim::run(s) {
        panic!(
            "{f}\nscript: {}",
            serde_json::to_string(s).unwrap_or_default()
        );
    }
}

/// An INVITE that siplb's own fields push over the parser's limits is the caller's
/// fault: 513 to it, and no destination blamed, disabled or failed over.
#[test]
fn an_invite_at_the_limits_disables_nothing() {
    for kind in [
        HostileKind::ManyHeaders(250),
        HostileKind::ManyHeaders(253),
        HostileKind::NearMaxSize(50),
        HostileKind::BareLf,
    ] {
        let h = Hostile {
            at_ms: 1000,
            tcp: false,
            kind,
        };
        // A call afterwards must still find every destination enabled.
        let mut c = call(Target::Vm, Ending::Bye(500), vec![answer_at_once()]);
        c.at_ms = 2000;
        clean(&script(vec![c], vec![h]));
    }
}

/// A record-route-aware caller on TCP to a destination on UDP: each side's route
/// set starts with the Record-Route facing it, and its ACK and BYE come through.
#[test]
fn record_route_aware_tcp_caller_to_udp_destination() {
    let mut c = call(Target::Vm, Ending::Bye(1000), vec![answer_at_once()]);
    c.tcp = true;
    clean(&script(vec![c], vec![]));
    // And a UDP caller to the TCP destination (3), both sides hanging up.
    let mut calls = Vec::new();
    for (i, ending) in [Ending::Bye(800), Ending::CalleeBye(800)]
        .into_iter()
        .enumerate()
    {
        let mut c = call(Target::Pstn, ending, vec![answer_at_once()]);
        c.at_ms = 1000 + 200 * i as u32;
        calls.push(c);
    }
    clean(&script(calls, vec![]));
}

/// An initial INVITE with a Route naming siplb is a new call: balanced, counted and
/// record-routed, never relayed to its Request-URI (siplb itself).
#[test]
fn a_preloaded_route_is_consumed() {
    for tcp in [false, true] {
        let mut c = call(Target::Vm, Ending::Bye(1000), vec![answer_at_once()]);
        c.preloaded_route = true;
        c.tcp = tcp;
        clean(&script(vec![c], vec![]));
    }
}

/// A BYE in an early dialog, and `lb_end_call` on a call still ringing: the INVITE
/// still gets exactly one final, and the load goes back.
#[test]
fn early_endings_still_answer_the_invite() {
    let ring = || vec![Answer::RingForever];
    clean(&script(
        vec![call(Target::Vm, Ending::EarlyBye(500), ring())],
        vec![],
    ));
    clean(&script(
        vec![call(Target::Vm, Ending::Operator(800), ring())],
        vec![],
    ));
    clean(&script(
        vec![call(Target::Relay, Ending::EarlyBye(200), ring())],
        vec![],
    ));
}

/// A 2xx from an attempt siplb gave up on is acknowledged and ended towards its
/// sender, never relayed: the caller's ACK and BYE go only where the call was
/// answered.
#[test]
fn a_late_answer_is_ended_not_relayed() {
    let answers = vec![Answer::Slow { after: 6500 }, answer_at_once()];
    clean(&script(
        vec![call(Target::Vm, Ending::Bye(3000), answers)],
        vec![],
    ));
}

/// A 2xx never acknowledged ends its call after 64*T1 (BYE both ways), and an ended
/// call leaves no timer behind.
#[test]
fn an_unacknowledged_answer_ends_and_nothing_is_left() {
    // With a destination that hangs up itself (RFC 3261 13.3.1.4), and with one that
    // does not (SIPp's uas): siplb ends the call either way.
    for answer in [answer_at_once(), Answer::OkNoAckGuard { answer: 200 }] {
        clean(&script(
            vec![call(Target::Vm, Ending::NeverAck, vec![answer])],
            vec![],
        ));
    }
}

/// OPTIONS to another host is not siplb's keep-alive; and a message that breaks a
/// TCP stream's framing is counted and answered with a Warning.
#[test]
fn foreign_options_and_broken_tcp_framing() {
    clean(&script(
        vec![],
        vec![
            Hostile {
                at_ms: 500,
                tcp: false,
                kind: HostileKind::ForeignOptions,
            },
            Hostile {
                at_ms: 600,
                tcp: true,
                kind: HostileKind::BadCSeq,
            },
            Hostile {
                at_ms: 700,
                tcp: false,
                kind: HostileKind::BadCSeq,
            },
        ],
    ));
}

/// Forked answers: both 2xx reach the caller, each dialog ends on its own BYE, and
/// a 2xx the callee resends after its dialog's BYE does not bring it back.
#[test]
fn forked_answers_end_dialog_by_dialog() {
    let mut c = call(
        Target::Relay,
        Ending::Bye(1500),
        vec![Answer::Forked { answer: 300 }],
    );
    c.rr_aware = false;
    let mut s = script(vec![c], vec![]);
    s.net.loss_pct = 10;
    clean(&s);
}

/// A CANCEL that comes after the answer: the caller hangs up instead, and the call
/// ends.
#[test]
fn a_cancel_after_the_answer_hangs_up() {
    clean(&script(
        vec![call(
            Target::Vm,
            Ending::Cancel(900),
            vec![Answer::Ok {
                ring: Some(100),
                answer: 200,
            }],
        )],
        vec![],
    ));
}

/// No open relay: every way of asking siplb to relay to a host outside the world
/// (methods, To tag or not, siplb's Route or not, a Route and a Request-URI at the
/// sink, over UDP and TCP), amid calls; nothing reaches the sink.
#[test]
fn nothing_is_relayed_outside_the_world() {
    let mut hostile = Vec::new();
    for method in 0..6u8 {
        for flags in 0..32u8 {
            for tcp in [false, true] {
                hostile.push(Hostile {
                    at_ms: 500 + hostile.len() as u32 * 7,
                    tcp,
                    kind: HostileKind::Relay {
                        method,
                        to_tag: flags & 1 != 0,
                        own_route: flags & 2 != 0,
                        own_spelling: method.wrapping_add(flags),
                        sink_route: flags & 4 != 0,
                        sink_uri: flags & 8 != 0,
                        tcp_route: flags & 16 != 0,
                    },
                });
            }
        }
    }
    let calls = (0..20)
        .map(|i| {
            let mut c = call(Target::Vm, Ending::Bye(800), vec![answer_at_once()]);
            c.at_ms = 400 + i * 150;
            c
        })
        .collect();
    clean(&script(calls, hostile));
}

/// `calls` calls 100 ms apart, each held 5 s.
fn held_calls(calls: u32) -> Vec<Call> {
    (0..calls)
        .map(|i| {
            let mut c = call(Target::Vm, Ending::Bye(5000), vec![answer_at_once()]);
            c.at_ms = 1000 + 100 * i;
            c
        })
        .collect()
}

/// Runs `calls` held calls while destination `dest` (index) is down for 14 s, once with
/// nothing listening there (`refused`: the driver reports it at once) and once hanging:
/// every call is answered elsewhere and the destination is blamed either way, but only
/// the hung one makes callers wait for the INVITE timeout (5 s).
fn refused_fails_over_at_once(dest: u8, calls: u32) {
    let calls = held_calls(calls);
    let run = |refused: bool| {
        let mut s = script(calls.clone(), Vec::new());
        s.outages.push(Outage {
            dest,
            at_ms: 0,
            length: 14_000,
            refused,
        });
        let report = siplb_sim::run(&s).unwrap_or_else(|f| panic!("{f}"));
        assert_eq!(report.answered, calls.len(), "{report:?}");
        assert!(report.disabled >= 1, "{report:?}");
        report
    };
    let (refused, hung) = (run(true), run(false));
    assert!(refused.refused >= 1, "{refused:?}");
    assert!(
        refused.slowest_final < std::time::Duration::from_secs(2)
            && hung.slowest_final >= std::time::Duration::from_secs(5),
        "slowest final: refused {:?}, hung {:?}",
        refused.slowest_final,
        hung.slowest_final
    );
}

/// A destination over TCP that refuses connections (up, nothing listening) fails each
/// attempt sent to it at once, as the driver reports the refused connection: the calls
/// fail over and are all answered, and the destination is blamed for it, fairly.
#[test]
fn a_destination_refusing_tcp_connections_is_failed_over() {
    // Destination 3, the one reached over TCP.
    refused_fails_over_at_once(2, 10);
}

/// Destination 3 named by host, its name resolving first to an address that refuses
/// TCP connections, then to the destination itself: each attempt goes on to the next
/// address of the same destination, the calls are answered there, and the destination
/// is neither blamed nor disabled (the world would see a disabled destination that
/// never failed). The same calls by IP address take the same destinations.
#[test]
fn a_named_destination_tries_its_next_address() {
    let calls = held_calls(10);
    let run = |dns: u8| {
        let mut s = script(calls.clone(), Vec::new());
        s.config.dns = dns;
        siplb_sim::run(&s).unwrap_or_else(|f| {
            panic!(
                "{f}\nscript: {}",
                serde_json::to_string(&s).unwrap_or_default()
            )
        })
    };
    let (by_ip, named, refusing_first) = (run(0), run(1), run(2));
    for report in [&by_ip, &named, &refusing_first] {
        assert_eq!(report.answered, 10, "{report:?}");
        assert_eq!(report.disabled, 0, "{report:?}");
    }
    assert_eq!((by_ip.refused, named.refused), (0, 0));
    // Destination 3 took calls, each first tried on the refusing address.
    assert!(refusing_first.refused >= 1, "{refusing_first:?}");
}

/// The same over UDP: a destination whose port is closed answers ICMP port
/// unreachable, which the driver reads off the socket's error queue; its attempts fail
/// at once instead of at the INVITE timeout.
#[test]
fn a_closed_udp_port_is_failed_over_at_once() {
    // Destination 2, the largest, reached over UDP; the others hold 9 calls.
    refused_fails_over_at_once(1, 8);
}

/// A node of a cluster: each new call waits for the shared store's reservation. A
/// store that answers at once changes nothing; one that refuses what this node's stale
/// view would grant (another node holds all but one slot of destination 1) sends the
/// call to the next destination, blaming none; one that is away lets every call
/// through after the reserve timeout. Every call is answered, every ticket answered
/// and released (the world checks), no destination disabled.
#[test]
fn a_cluster_store_that_refuses_sends_the_call_elsewhere() {
    // 12 held calls; this node's view has 15 vm slots, the store 12.
    let calls = held_calls(12);
    for cluster in [1, 2, 3] {
        let mut s = script(calls.clone(), Vec::new());
        s.config.cluster = cluster;
        let report = siplb_sim::run(&s).unwrap_or_else(|f| {
            panic!(
                "cluster {cluster}: {f}\nscript: {}",
                serde_json::to_string(&s).unwrap_or_default()
            )
        });
        assert_eq!(report.answered, 12, "cluster {cluster}: {report:?}");
        assert_eq!(report.disabled, 0, "cluster {cluster}: {report:?}");
        assert_eq!(
            report.reservations_refused > 0,
            cluster == 2,
            "cluster {cluster}: {report:?}"
        );
    }
}
