//! What happens in one simulated run: the calls and what each side does, the
//! network's faults, operator actions, destination outages and hostile messages.
//!
//! A script is plain data, so a failing one can be printed, shrunk, saved as JSON and
//! replayed, and a fuzzer can build one from its input. Every field is taken modulo
//! its range by the world, so any value of any field is a valid script.

use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// One run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Script {
    /// Seeds the network's choices (which copy is lost, each packet's latency) and
    /// the proxy's branches and tags.
    pub seed: u64,
    pub net: Net,
    pub config: Knobs,
    pub calls: Vec<Call>,
    pub ops: Vec<Op>,
    pub outages: Vec<Outage>,
    pub hostile: Vec<Hostile>,
}

/// Faults of the simulated network. UDP datagrams may be lost, duplicated and
/// reordered (by jitter); TCP delivers in order, without loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Net {
    /// Percent of UDP datagrams lost (taken modulo 31). The same message is never
    /// lost twice (its retransmission gets through): otherwise the network alone could
    /// outlast the INVITE timeout and make a healthy destination look dead, which no
    /// proxy can tell from a dead one.
    pub loss_pct: u8,
    /// Percent of UDP datagrams delivered twice (modulo 21).
    pub dup_pct: u8,
    /// Base one-way latency in ms (modulo 51).
    pub latency_ms: u8,
    /// Extra random latency in ms per packet (modulo 101): reorders UDP.
    pub jitter_ms: u8,
}

/// Settings that vary between runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Knobs {
    /// `[failover] failures_to_disable`, 1 to 3.
    pub failures_to_disable: u8,
    /// `[failover] min_enabled`, 0 to 2.
    pub min_enabled: u8,
    /// Probing on (every 5 s) or off.
    pub probing: bool,
    /// `max_cps` of destination 2 (modulo 6; 0: none).
    #[serde(default)]
    pub max_cps: u8,
    /// The reduction destination 1 asks for in every response (RFC 7339 `oc`,
    /// modulo 101; 0: none), valid 2 s.
    #[serde(default)]
    pub overload_pct: u8,
    /// The share of virtual time siplb's core reports busy (modulo 101; 0: none),
    /// which its own overload control turns into feedback and shedding.
    #[serde(default)]
    pub core_busy_pct: u8,
    /// Destination 3 named by host (modulo 3): 0 by its IP address; 1 by a name that
    /// resolves to that address; 2 by a name whose first address refuses TCP
    /// connections (a box without its SIP process), its second being the destination.
    #[serde(default)]
    pub dns: u8,
    /// A node of a cluster (modulo 4): 0 alone; 1 a store that grants reservations in
    /// 2 ms; 2 the same with another node holding all but one slot of destination 1,
    /// unknown to this node's view, so that the store refuses; 3 a store away, each
    /// reservation let through unconfirmed after 250 ms.
    #[serde(default)]
    pub cluster: u8,
    /// `[transaction] trying_after = "0s"`: the 100 Trying at once instead of only
    /// when nothing else went back to the caller within 200 ms.
    #[serde(default)]
    pub trying_at_once: bool,
}

/// One call, from the caller's INVITE to its end.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Call {
    /// When the caller sends its INVITE, ms from the start (modulo 120 000).
    pub at_ms: u32,
    /// Which caller sends it (modulo the number of callers).
    pub caller: u8,
    /// INVITE over TCP instead of UDP.
    pub tcp: bool,
    pub target: Target,
    /// The caller builds its route set from Record-Route (real phones and PBXs), or
    /// sends every in-dialog request to siplb without Route (SIPp's built-in
    /// scenarios).
    pub rr_aware: bool,
    /// The INVITE carries a Route naming siplb (outbound proxy configured).
    pub preloaded_route: bool,
    /// How the call ends, from the caller's side.
    pub ending: Ending,
    /// What each destination the call is tried on does, attempt by attempt; the last
    /// entry repeats. Empty: answer at once.
    pub answers: Vec<Answer>,
}

/// What the caller dials.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Target {
    /// `VM_...`: balanced on resource `vm`.
    #[default]
    Vm,
    /// A number: balanced on `pstn` with relative availability.
    Pstn,
    /// `R_...`: relayed to a fixed target without load.
    Relay,
    /// Matches no route: `404`.
    Unrouted,
    /// Sent from a gateway of the cluster (group 2, index modulo 2): counted on it and
    /// relayed.
    FromCluster(u8),
}

/// The caller's part in ending the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Ending {
    /// Hangs up this long after the answer (ms modulo 20 000).
    Bye(u16),
    /// Waits for the callee to hang up, this long after the answer.
    CalleeBye(u16),
    /// CANCELs this long after the INVITE (whatever has arrived by then: races with
    /// the answer included).
    Cancel(u16),
    /// Hangs up in the early dialog, this long after the first provisional with a tag
    /// (or after the answer, if none came).
    EarlyBye(u16),
    /// Sends a re-INVITE this long after the answer, then BYE as long again after it.
    Reinvite(u16),
    /// Never acknowledges the answer.
    NeverAck,
    /// The operator ends it with `lb_end_call` this long after the INVITE; the caller
    /// hangs up as long again after that.
    Operator(u16),
}

impl Default for Ending {
    fn default() -> Self {
        Ending::Bye(1000)
    }
}

/// What one destination does with one INVITE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Answer {
    /// 100 Trying, optionally 180 Ringing after `ring` ms, 200 OK after `answer` ms
    /// (both modulo 4 000).
    Ok { ring: Option<u16>, answer: u16 },
    /// 100 Trying, then this final after `after` ms; codes are folded into 4xx to 6xx.
    Reject { code: u16, after: u16 },
    /// Nothing at all: a dead or overloaded box.
    Silent,
    /// No provisional, and a 200 after `after` ms (modulo 8 000): past the INVITE
    /// timeout, the 200 of an attempt siplb has given up.
    Slow { after: u16 },
    /// Two 200 OKs with different To tags (a forking element behind the destination).
    Forked { answer: u16 },
    /// 180 Ringing and never a final (until CANCEL).
    RingForever,
    /// 200 OK after `answer` ms, resent until the ACK but, unlike RFC 3261 13.3.1.4
    /// asks, never hung up when no ACK comes (as SIPp's built-in `uas` does).
    OkNoAckGuard { answer: u16 },
}

impl Default for Answer {
    fn default() -> Self {
        Answer::Ok {
            ring: None,
            answer: 0,
        }
    }
}

/// An operator action at a moment of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Op {
    pub at_ms: u32,
    pub kind: OpKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum OpKind {
    /// `lb_status id 0|1` on a destination of group 1 (index modulo 4).
    Status { dest: u8, enable: bool },
    /// `lb_resize` of `vm` (or `pstn`) on a destination of group 1.
    Resize { dest: u8, pstn: bool, capacity: u8 },
    /// `lb_reload` with one of the table's variants (modulo 3).
    Reload { variant: u8 },
    /// `lb_end_call` on one of the script's calls.
    EndCall { call: u16 },
    /// `lb_drain` on a destination of group 1.
    Drain { dest: u8 },
}

/// A destination of group 1 (modulo 4) that answers nothing, probes included, for a
/// while.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Outage {
    pub dest: u8,
    pub at_ms: u32,
    /// ms modulo 15 000: a destination down longer than that outlasts the
    /// retransmissions of requests relayed to it, and their callers give up.
    pub length: u16,
    /// The box is up but nothing listens: a TCP connection to it is refused, a UDP
    /// datagram answered with ICMP port unreachable, and siplb's driver says so at once
    /// rather than waiting for a timeout.
    #[serde(default)]
    pub refused: bool,
}

/// A message a hostile or broken peer sends to siplb.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Hostile {
    pub at_ms: u32,
    pub tcp: bool,
    pub kind: HostileKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum HostileKind {
    /// An INVITE with this many extra header fields (modulo 300): near the parser's
    /// limit, siplb's own Via and Record-Route push it over.
    ManyHeaders(u16),
    /// An INVITE this many bytes short of the largest message siplb accepts (modulo
    /// 600).
    NearMaxSize(u16),
    /// An INVITE with bare LF line endings.
    BareLf,
    /// An INVITE with this many Via fields (modulo 200).
    ManyVias(u8),
    /// A valid INVITE with bytes changed at these offsets (modulo its length).
    Flipped(Vec<(u16, u8)>),
    /// A valid INVITE cut at this offset (modulo its length).
    Truncated(u16),
    /// Arbitrary bytes.
    Garbage(Vec<u8>),
    /// OPTIONS to a host that is not siplb, without a user part.
    ForeignOptions,
    /// An INVITE whose Request-URI is `sips:` or has another transport siplb does not
    /// speak.
    OddTransport,
    /// An INVITE with a CSeq that does not parse: answerable (`400`), and over TCP
    /// the end of the stream's framing.
    BadCSeq,
    /// A request that tries to use siplb as a relay to a host outside the world
    /// (the sink): its method (INVITE, OPTIONS, MESSAGE, REGISTER, BYE, ACK, modulo 6),
    /// with or without a To tag, siplb's Route, a Route to the sink (over TCP or UDP),
    /// a Request-URI at the sink.
    Relay {
        method: u8,
        to_tag: bool,
        own_route: bool,
        /// How siplb's Route spells its address: as listened on, port 0, no port,
        /// a zero-padded port.
        own_spelling: u8,
        sink_route: bool,
        sink_uri: bool,
        tcp_route: bool,
    },
}

impl Script {
    /// A random script of `calls` calls over about a minute, with everything the
    /// world can do mixed in.
    pub fn random(seed: u64, calls: usize) -> Script {
        let mut rng = Rng::new(seed);
        let span = 60_000u32;
        let net = Net {
            loss_pct: rng.pick(&[0, 0, 2, 5, 10, 20]),
            dup_pct: rng.pick(&[0, 0, 2, 10]),
            latency_ms: rng.below(30) as u8,
            jitter_ms: rng.pick(&[0, 0, 5, 40]),
        };
        let config = Knobs {
            failures_to_disable: 1 + rng.below(3) as u8,
            min_enabled: rng.below(3) as u8,
            probing: rng.chance(70),
            max_cps: if rng.chance(30) {
                1 + rng.below(5) as u8
            } else {
                0
            },
            overload_pct: if rng.chance(25) {
                rng.pick(&[10, 50, 90, 100])
            } else {
                0
            },
            core_busy_pct: if rng.chance(20) {
                rng.pick(&[95, 100])
            } else {
                0
            },
            dns: rng.pick(&[0, 0, 1, 2]),
            cluster: rng.pick(&[0, 0, 0, 1, 2, 3]),
            trying_at_once: rng.chance(20),
        };
        let calls = (0..calls).map(|_| random_call(&mut rng, span)).collect();
        let ops = (0..rng.below(12))
            .map(|_| Op {
                at_ms: rng.below(u64::from(span)) as u32,
                kind: match rng.below(12) {
                    0..=3 => OpKind::Status {
                        dest: rng.below(4) as u8,
                        enable: rng.chance(60),
                    },
                    4..=5 => OpKind::Resize {
                        dest: rng.below(4) as u8,
                        pstn: rng.chance(50),
                        capacity: rng.below(8) as u8,
                    },
                    6..=7 => OpKind::Reload {
                        variant: rng.below(3) as u8,
                    },
                    8..=9 => OpKind::Drain {
                        dest: rng.below(4) as u8,
                    },
                    _ => OpKind::EndCall {
                        call: rng.below(1 << 15) as u16,
                    },
                },
            })
            .collect();
        let outages = (0..rng.below(3))
            .map(|_| {
                let (dest, at_ms) = (rng.below(4) as u8, rng.below(u64::from(span)) as u32);
                let length = rng.below(15_000) as u16;
                // Taken from what was drawn rather than drawn again, so that every seed
                // keeps the rest of its script.
                let refused = length.is_multiple_of(3);
                Outage {
                    dest,
                    at_ms,
                    length,
                    refused,
                }
            })
            .collect();
        let hostile = (0..rng.below(6))
            .map(|_| Hostile {
                at_ms: rng.below(u64::from(span)) as u32,
                tcp: rng.chance(30),
                kind: random_hostile(&mut rng),
            })
            .collect();
        Script {
            seed,
            net,
            config,
            calls,
            ops,
            outages,
            hostile,
        }
    }
}

fn random_call(rng: &mut Rng, span: u32) -> Call {
    let target = match rng.below(20) {
        0..=9 => Target::Vm,
        10..=14 => Target::Pstn,
        15..=16 => Target::Relay,
        17 => Target::Unrouted,
        _ => Target::FromCluster(rng.below(2) as u8),
    };
    let hold = |rng: &mut Rng| 200 + rng.below(8000) as u16;
    let ending = match rng.below(20) {
        0..=6 => Ending::Bye(hold(rng)),
        7..=9 => Ending::CalleeBye(hold(rng)),
        10..=12 => Ending::Cancel(rng.below(3000) as u16),
        13..=14 => Ending::EarlyBye(rng.below(2000) as u16),
        15..=16 => Ending::Reinvite(hold(rng)),
        17 => Ending::NeverAck,
        _ => Ending::Operator(rng.below(6000) as u16),
    };
    let answers = (0..rng.below(3) + 1).map(|_| random_answer(rng)).collect();
    Call {
        at_ms: rng.below(u64::from(span)) as u32,
        caller: rng.below(8) as u8,
        tcp: rng.chance(25),
        target,
        rr_aware: rng.chance(60),
        preloaded_route: rng.chance(20),
        ending,
        answers,
    }
}

fn random_answer(rng: &mut Rng) -> Answer {
    match rng.below(30) {
        0..=14 => Answer::Ok {
            ring: rng.chance(60).then(|| rng.below(1500) as u16),
            answer: rng.below(3000) as u16,
        },
        15..=19 => Answer::Reject {
            code: rng.pick(&[486, 480, 404, 503, 500, 600, 603]),
            after: rng.below(1500) as u16,
        },
        20..=21 => Answer::Silent,
        22..=23 => Answer::Slow {
            after: 4000 + rng.below(4000) as u16,
        },
        24..=25 => Answer::Forked {
            answer: rng.below(2000) as u16,
        },
        26 => Answer::OkNoAckGuard {
            answer: rng.below(2000) as u16,
        },
        _ => Answer::RingForever,
    }
}

fn random_hostile(rng: &mut Rng) -> HostileKind {
    match rng.below(12) {
        0 => HostileKind::ManyHeaders(240 + rng.below(20) as u16),
        1 => HostileKind::NearMaxSize(rng.below(300) as u16),
        2 => HostileKind::BareLf,
        3 => HostileKind::ManyVias(rng.below(200) as u8),
        4 => HostileKind::Flipped(
            (0..1 + rng.below(4))
                .map(|_| (rng.below(600) as u16, rng.below(256) as u8))
                .collect(),
        ),
        5 => HostileKind::Truncated(rng.below(600) as u16),
        6 => HostileKind::Garbage((0..rng.below(200)).map(|_| rng.below(256) as u8).collect()),
        7 => HostileKind::ForeignOptions,
        8 => HostileKind::BadCSeq,
        9 | 10 => HostileKind::Relay {
            method: rng.below(6) as u8,
            to_tag: rng.chance(50),
            own_route: rng.chance(60),
            own_spelling: rng.below(4) as u8,
            sink_route: rng.chance(60),
            sink_uri: rng.chance(60),
            tcp_route: rng.chance(30),
        },
        _ => HostileKind::OddTransport,
    }
}
