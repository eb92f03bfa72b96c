//! siplb against an attacker on the caller's side, with real sockets: raw UDP and TCP
//! senders, a sink listening where no request may ever go, a destination that reads
//! siplb's branches and an impostor that forges its answers.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    dead_code
)]

mod harness;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use harness::{Lb, wait_until};
use siplb_balance::DestinationRow;
use siplb_sip::{Frame, HeaderName, Limits, Message, Method, StreamDecoder, build_response};

/// Listens on UDP and TCP at `addr` and counts whatever arrives.
struct Sink {
    addr: SocketAddr,
    received: Arc<AtomicUsize>,
}

impl Sink {
    fn start(addr: SocketAddr) -> Sink {
        let received = Arc::new(AtomicUsize::new(0));
        let udp = UdpSocket::bind(addr).unwrap();
        let tcp = TcpListener::bind(addr).unwrap();
        let r = Arc::clone(&received);
        std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while let Ok(n) = udp.recv(&mut buf) {
                if n > 0 {
                    r.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        let r = Arc::clone(&received);
        std::thread::spawn(move || {
            for conn in tcp.incoming().flatten() {
                // A connection is already a relay: count it, and what it carries.
                r.fetch_add(1, Ordering::SeqCst);
                let r = Arc::clone(&r);
                std::thread::spawn(move || {
                    let mut conn = conn;
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        r.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        Sink { addr, received }
    }

    fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }
}

/// Every reply to `from` within `wait`.
fn replies(socket: &UdpSocket, wait: Duration) -> Vec<Vec<u8>> {
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let end = Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while Instant::now() < end {
        if let Ok(n) = socket.recv(&mut buf) {
            out.push(buf[..n].to_vec());
        }
    }
    out
}

fn call_id(reply: &[u8]) -> String {
    String::from_utf8_lossy(reply)
        .lines()
        .find_map(|l| l.strip_prefix("Call-ID: ").map(str::to_owned))
        .unwrap_or_default()
}

fn status(reply: &[u8]) -> u16 {
    std::str::from_utf8(&reply[8..11]).unwrap().parse().unwrap()
}

#[allow(clippy::too_many_arguments)]
fn request(
    method: &str,
    uri: &str,
    from: SocketAddr,
    transport: &str,
    routes: &[String],
    to_tag: Option<&str>,
    n: usize,
    extra: &str,
) -> String {
    let routes: String = routes.iter().map(|r| format!("Route: {r}\r\n")).collect();
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let body = "FLUSHALL\r\n";
    format!(
        "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/{transport} {from};branch=z9hG4bKatk{n};rport\r\n{extra}Max-Forwards: 70\r\n{routes}From: <sip:x@{from}>;tag=a{n}\r\nTo: <{uri}>{to_tag}\r\nCall-ID: attack-{n}@{from}\r\nCSeq: 1 {method}\r\nContact: <sip:x@{from}>\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// From outside the cluster, no request reaches a host siplb has no business with:
/// not with a foreign Request-URI, not with siplb's Route followed by the sink's (UDP
/// or `;transport=tcp`), not inside a dialog nobody knows. Each gets one answer.
#[test]
fn siplb_is_not_an_open_relay() {
    // A short T1: the calls the attacker never acknowledges end after 64*T1.
    let lb = Lb::start(
        30,
        &[(1, "vm=10", "uas")],
        "",
        "[transaction]\nt1 = \"100ms\"\n",
    );
    let _uas = lb.start_destinations();
    let sink = Sink::start(SocketAddr::new(lb.ip(66), 5060));
    let attacker = UdpSocket::bind(SocketAddr::new(lb.ip(200), 0)).unwrap();
    let me = attacker.local_addr().unwrap();
    let own = format!("<sip:{};lr>", lb.addr);
    let sink_udp = format!("<sip:{};lr>", sink.addr);
    let sink_tcp = format!("<sip:{};transport=tcp;lr>", sink.addr);
    let sink_uri = format!("sip:victim@{}", sink.addr);
    let sink_vm = format!("sip:VM_1@{}", sink.addr);
    let mut n = 0;
    let mut expected = 0;
    for method in ["INVITE", "OPTIONS", "MESSAGE", "REGISTER", "BYE", "ACK"] {
        for uri in [&sink_uri, &sink_vm] {
            for routes in [
                vec![],
                vec![own.clone()],
                vec![own.clone(), sink_udp.clone()],
                vec![own.clone(), sink_tcp.clone()],
                vec![sink_tcp.clone()],
            ] {
                for to_tag in [None, Some("stolen")] {
                    n += 1;
                    let r = request(method, uri, me, "UDP", &routes, to_tag, n, "");
                    attacker.send_to(r.as_bytes(), lb.addr).unwrap();
                    if method != "ACK" {
                        expected += 1;
                    }
                }
            }
        }
    }
    let got = replies(&attacker, Duration::from_secs(3));
    // INVITEs to VM_ without a Route elsewhere are new calls, balanced to the
    // table's destination (not to the Request-URI's host): its 200 comes again and
    // again, as nobody acknowledges it. One final per request, counted by Call-ID.
    let mut finals: Vec<(String, u16)> = got
        .iter()
        .filter(|r| status(r) >= 200)
        .map(|r| (call_id(r), status(r)))
        .collect();
    finals.sort();
    finals.dedup();
    assert_eq!(finals.len(), expected, "one final per request: {finals:?}");
    assert!(
        finals
            .iter()
            .all(|(_, s)| [200, 403, 404, 405, 481].contains(s)),
        "{finals:?}"
    );
    assert_eq!(sink.received(), 0, "nothing reached the sink");

    // Over TCP too, with the attacker's payload after the head.
    let mut stream = TcpStream::connect(lb.addr).unwrap();
    for (i, routes) in [vec![own.clone(), sink_tcp.clone()], vec![sink_tcp.clone()]]
        .into_iter()
        .enumerate()
    {
        let r = request("MESSAGE", &sink_uri, me, "TCP", &routes, None, 1000 + i, "");
        stream.write_all(r.as_bytes()).unwrap();
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(sink.received(), 0, "nothing reached the sink over TCP");
    wait_until(Duration::from_secs(10), || lb.total_load("vm") == 0);
}

/// A rejected request is answered once, whatever its size and however many Via hops
/// it carries: a spoofed source gets no more bytes than were sent in its name.
#[test]
fn rejections_do_not_amplify() {
    let lb = Lb::start(31, &[(1, "pstn=0", "uas")], "", "");
    let attacker = UdpSocket::bind(SocketAddr::new(lb.ip(200), 0)).unwrap();
    let me = attacker.local_addr().unwrap();
    let vias: String = (0..60)
        .map(|i| {
            format!(
                "Via: SIP/2.0/UDP 192.0.2.{}:5060;branch=z9hG4bKv{i}\r\n",
                i + 1
            )
        })
        .collect();
    let uri = format!("sip:nobody@{}", lb.addr);
    let full = format!("sip:12345@{}", lb.addr);
    let mut sent = 0;
    for (i, uri) in [&uri, &full, &uri].into_iter().enumerate() {
        // 404 (no route), Service full (no capacity), 400 (too many hops).
        let extra = if i == 2 {
            format!("{vias}{vias}")
        } else {
            vias.clone()
        };
        let r = request("INVITE", uri, me, "UDP", &[], None, i, &extra);
        sent += r.len();
        attacker.send_to(r.as_bytes(), lb.addr).unwrap();
    }
    // Nobody acknowledges: a transaction would resend its reply for 32 s.
    let got = replies(&attacker, Duration::from_secs(5));
    let codes: Vec<u16> = got.iter().map(|r| status(r)).collect();
    assert_eq!(codes, [404, 500, 400], "one reply per request");
    let back: usize = got.iter().map(Vec::len).sum();
    assert!(back <= sent, "{back} bytes back for {sent} sent");
}

/// A response counts only from where its request went, and branches cannot be
/// guessed: an impostor that learned a branch cannot fail the call or get the
/// destination disabled.
#[test]
fn forged_responses_are_dropped() {
    let lb = Lb::start(32, &[(1, "vm=10", "uas"), (2, "vm=5", "uas")], "", "");
    // Destination 1 is this test: it reads the INVITE (and its branch) itself.
    let destination = UdpSocket::bind(SocketAddr::new(lb.ip(11), 5060)).unwrap();
    destination
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let _others = lb.start_destinations_of(|id| id == 2);
    let caller = UdpSocket::bind(SocketAddr::new(lb.ip(100), 0)).unwrap();
    let me = caller.local_addr().unwrap();
    let invite = request(
        "INVITE",
        &format!("sip:VM_1@{}", lb.addr),
        me,
        "UDP",
        &[],
        None,
        1,
        "",
    );
    caller.send_to(invite.as_bytes(), lb.addr).unwrap();
    let mut buf = [0u8; 65536];
    let (n, from) = destination.recv_from(&mut buf).unwrap();
    let forwarded = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(forwarded.starts_with("INVITE"), "{forwarded}");
    let branch = forwarded
        .split("branch=")
        .nth(1)
        .unwrap()
        .split([';', '\r'])
        .next()
        .unwrap()
        .to_owned();
    assert!(
        branch.len() >= 7 + 32,
        "a branch of 128 random bits: {branch}"
    );
    // The impostor answers 503 with that branch, from another address.
    let impostor = UdpSocket::bind(SocketAddr::new(lb.ip(12), 0)).unwrap();
    let head_end = forwarded.find("\r\n\r\n").unwrap();
    let copied: String = forwarded[..head_end]
        .lines()
        .filter(|l| {
            ["Via:", "From:", "To:", "Call-ID:", "CSeq:"]
                .iter()
                .any(|h| l.starts_with(h))
        })
        .map(|l| format!("{l}\r\n"))
        .collect();
    let forged = format!("SIP/2.0 503 Service Unavailable\r\n{copied}Content-Length: 0\r\n\r\n");
    impostor.send_to(forged.as_bytes(), from).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(lb.destination(1).enabled, "a forged 503 disables nothing");
    assert_eq!(lb.load(1, "vm"), 1, "the call stays where it was");
    // The real destination answers: the caller gets it.
    let ringing = format!("SIP/2.0 486 Busy Here\r\n{copied}Content-Length: 0\r\n\r\n");
    destination.send_to(ringing.as_bytes(), from).unwrap();
    let got = replies(&caller, Duration::from_secs(2));
    let codes: Vec<u16> = got.iter().map(|r| status(r)).collect();
    assert!(codes.contains(&486), "{codes:?}");
    assert!(!codes.contains(&503), "{codes:?}");
    wait_until(Duration::from_secs(3), || lb.total_load("vm") == 0);
}

/// Requests flooding in without a pause keep siplb's UDP socket readable at every
/// turn of its core: the core still answers the management interface promptly, as it
/// polls its other inputs after a few turns of datagrams at most.
#[test]
fn a_flood_of_datagrams_does_not_starve_the_management_interface() {
    let (control, control_rx) = siplb_net::control();
    let links = siplb::run::CoreLinks {
        control: Some(control_rx),
        ..Default::default()
    };
    // No destinations: every request is answered 404 by the last route.
    let lb = Lb::start_with_links(34, &[], "", "", links);
    let addr = lb.addr;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = || {
        runtime
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(20), control.report()).await
            })
            .expect("the core answers")
            .expect("a report")
    };

    // Two senders, for 2 s and at most 1,000,000 requests each; 2,000 transactions each,
    // then their retransmissions, which the core answers again.
    let flooding = Arc::new(AtomicUsize::new(2));
    let senders: Vec<_> = (0..2u8)
        .map(|s| {
            let flooding = Arc::clone(&flooding);
            let from = SocketAddr::new(lb.ip(200 + s), 0);
            std::thread::spawn(move || {
                let socket = UdpSocket::bind(from).unwrap();
                let me = socket.local_addr().unwrap();
                let uri = format!("sip:nobody@{addr}");
                let requests: Vec<String> = (0..2000)
                    .map(|n| request("OPTIONS", &uri, me, "UDP", &[], None, n, ""))
                    .collect();
                let start = Instant::now();
                for n in 0..1_000_000 {
                    if start.elapsed() > Duration::from_secs(2) {
                        break;
                    }
                    let _ = socket.send_to(requests[n % requests.len()].as_bytes(), addr);
                }
                flooding.fetch_sub(1, Ordering::SeqCst);
            })
        })
        .collect();
    let mut worst = Duration::ZERO;
    let mut answers = 0;
    let mut busiest: f64 = 0.0;
    while flooding.load(Ordering::SeqCst) > 0 {
        let asked = Instant::now();
        busiest = busiest.max(report().core.busy);
        worst = worst.max(asked.elapsed());
        answers += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    for sender in senders {
        sender.join().unwrap();
    }
    eprintln!(
        "{answers} reports during the flood, the slowest in {worst:?}; the core {busiest:.2} busy"
    );
    // The flood did what it is for: input waiting at every turn.
    assert!(busiest > 0.9, "the core was at most {busiest:.2} busy");
    assert!(answers >= 10, "{answers} reports during the flood");
    assert!(
        worst < Duration::from_secs(1),
        "a report took {worst:?} during the flood"
    );
}

/// A peer's end of a SIP connection over TCP, framed as siplb frames it, with room for
/// the large messages of the test below.
struct TcpPeer {
    stream: TcpStream,
    decoder: StreamDecoder,
}

impl TcpPeer {
    fn new(stream: TcpStream) -> TcpPeer {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        TcpPeer {
            stream,
            decoder: StreamDecoder::new(Limits {
                max_message_size: 200_000,
                ..Limits::default()
            }),
        }
    }

    /// The next message, `None` once the stream ends or stays silent past its timeout.
    fn next(&mut self) -> Option<Message> {
        let mut chunk = [0u8; 16384];
        loop {
            match self.decoder.decode() {
                Ok(Some(Frame::Message(m))) => return Some(m),
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(_) => return None,
            }
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.decoder.extend(&chunk[..n]),
            }
        }
    }

    /// The next final response, past any provisional one.
    fn next_final(&mut self) -> Message {
        loop {
            let m = self.next().expect("an answer from siplb");
            if m.status().is_some_and(|s| s >= 200) {
                return m;
            }
        }
    }

    fn send(&mut self, data: &[u8]) {
        self.stream.write_all(data).unwrap();
    }
}

fn branch(message: &Message) -> String {
    message.top_via().unwrap().branch().unwrap().to_owned()
}

/// `request` is the `method` (ACK or CANCEL) of `invite`'s client transaction: its
/// Request-URI, its top Via branch and its CSeq number (RFC 3261 9.1, 17.1.1.3).
fn assert_of_invite(request: &Message, method: Method<'_>, invite: &Message) {
    assert_eq!(request.method(), Some(method), "{request:?}");
    let cseq = request.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (1, method));
    assert_eq!(branch(request), branch(invite), "the INVITE's own branch");
    assert_eq!(
        request.request_uri_text(),
        invite.request_uri_text(),
        "the INVITE's Request-URI"
    );
}

/// A TCP destination: every message it reads, with a handle to answer on its connection.
fn tcp_destination(addr: SocketAddr) -> std::sync::mpsc::Receiver<(Message, TcpStream)> {
    let listener = TcpListener::bind(addr).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let answers = conn.try_clone().unwrap();
                let mut peer = TcpPeer::new(conn);
                while let Some(message) = peer.next() {
                    if tx.send((message, answers.try_clone().unwrap())).is_err() {
                        return;
                    }
                }
            });
        }
    });
    rx
}

/// An INVITE larger than a datagram can be (a multipart body with a picture, a long
/// list of ICE candidates), over TCP, with `sip.max_message_size` raised for it. siplb
/// keeps what it relays as bytes and reads them back only to CANCEL the INVITE or to
/// acknowledge a failure: both must work whatever the size the operator allows. To a
/// destination reached over UDP it cannot go at all, which the caller is told (513).
#[test]
fn an_invite_over_64_kb_over_tcp_is_relayed_cancelled_acknowledged_or_refused_for_udp() {
    let lb = Lb::start(120, &[], "", "max_message_size = 200000\n");
    let dest = SocketAddr::new(lb.ip(11), 5060);
    assert!(
        lb.balancer
            .reload(vec![DestinationRow::new(
                1,
                1,
                format!("sip:{dest};transport=tcp"),
                "vm=10"
            )])
            .is_empty()
    );
    let arrived = tcp_destination(dest);
    let next_at_destination = || {
        arrived
            .recv_timeout(Duration::from_secs(10))
            .expect("a message at the destination")
    };
    let mut caller =
        TcpPeer::new(TcpStream::connect_timeout(&lb.addr, Duration::from_secs(5)).unwrap());
    let me = caller.stream.local_addr().unwrap();
    let uri = format!("sip:VM_1@{}", lb.addr);
    let mut body = String::from(
        "v=0\r\no=- 1 1 IN IP4 127.0.120.100\r\ns=-\r\nc=IN IP4 127.0.120.100\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
    );
    let mut port = 10_000;
    while body.len() < 70_000 {
        body.push_str(&format!(
            "a=candidate:{port} 1 UDP 2130706431 127.0.120.100 {port} typ host\r\n"
        ));
        port += 1;
    }
    let invite = |n: u32| {
        format!(
            "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/TCP {me};branch=z9hG4bK-big-{n}\r\nMax-Forwards: 70\r\nFrom: <sip:caller@{me}>;tag=c{n}\r\nTo: <{uri}>\r\nCall-ID: big-{n}@{me}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{me};transport=tcp>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    // The ACK of a failure is the caller's to siplb and siplb's to the destination,
    // hop by hop (RFC 3261 17.1.1.3).
    let ack_to_lb = |n: u32, answer: &Message| {
        format!(
            "ACK {uri} SIP/2.0\r\nVia: SIP/2.0/TCP {me};branch=z9hG4bK-big-{n}\r\nMax-Forwards: 70\r\nFrom: <sip:caller@{me}>;tag=c{n}\r\nTo: {}\r\nCall-ID: big-{n}@{me}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
            answer.header_text(HeaderName::To).unwrap()
        )
    };
    let answer = |request: &Message, code: u16, reason: &str| {
        build_response(request, code, reason, Some("dest"), &[])
    };

    // Busy: siplb acknowledges the 486 itself, then relays it.
    caller.send(invite(1).as_bytes());
    let (relayed, mut to_caller_side) = next_at_destination();
    assert_eq!(relayed.method(), Some(Method::Invite));
    assert_eq!(relayed.body(), body.as_bytes(), "the body arrives whole");
    to_caller_side
        .write_all(&answer(&relayed, 486, "Busy Here"))
        .unwrap();
    let (ack, _) = next_at_destination();
    assert_of_invite(&ack, Method::Ack, &relayed);
    let busy = caller.next_final();
    assert_eq!(busy.status(), Some(486));
    caller.send(ack_to_lb(1, &busy).as_bytes());

    // Cancelled while it rings: siplb's CANCEL is built from the INVITE it sent.
    caller.send(invite(2).as_bytes());
    let (relayed, mut to_caller_side) = next_at_destination();
    assert_eq!(relayed.body(), body.as_bytes(), "the body arrives whole");
    to_caller_side
        .write_all(&answer(&relayed, 180, "Ringing"))
        .unwrap();
    let ringing = loop {
        let m = caller.next().expect("ringing");
        if m.status() != Some(100) {
            break m;
        }
    };
    assert_eq!(ringing.status(), Some(180));
    caller.send(
        format!(
            "CANCEL {uri} SIP/2.0\r\nVia: SIP/2.0/TCP {me};branch=z9hG4bK-big-2\r\nMax-Forwards: 70\r\nFrom: <sip:caller@{me}>;tag=c2\r\nTo: <{uri}>\r\nCall-ID: big-2@{me}\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    );
    let (cancel, mut to_caller_side) = next_at_destination();
    assert_of_invite(&cancel, Method::Cancel, &relayed);
    to_caller_side
        .write_all(&build_response(&cancel, 200, "OK", None, &[]))
        .unwrap();
    to_caller_side
        .write_all(&answer(&relayed, 487, "Request Terminated"))
        .unwrap();
    let (ack, _) = next_at_destination();
    assert_of_invite(&ack, Method::Ack, &relayed);
    // The caller has siplb's 200 to its CANCEL and the 487, in either order.
    let finals = [caller.next_final(), caller.next_final()];
    let mut codes: Vec<u16> = finals.iter().filter_map(Message::status).collect();
    codes.sort_unstable();
    assert_eq!(codes, [200, 487], "{finals:?}");
    let terminated = finals.iter().find(|m| m.status() == Some(487)).unwrap();
    caller.send(ack_to_lb(2, terminated).as_bytes());
    wait_until(Duration::from_secs(10), || lb.total_load("vm") == 0);
    assert!(
        arrived.recv_timeout(Duration::from_millis(500)).is_err(),
        "nothing more reached the destination"
    );

    // A destination reached over UDP cannot take it in one datagram: the caller hears
    // so at once, and the destination is not blamed for it.
    let udp_dest = Sink::start(SocketAddr::new(lb.ip(12), 5060));
    assert!(
        lb.balancer
            .reload(vec![DestinationRow::new(
                1,
                1,
                format!("sip:{}", udp_dest.addr),
                "vm=10"
            )])
            .is_empty()
    );
    caller.send(invite(3).as_bytes());
    let too_large = caller.next_final();
    assert_eq!(too_large.status(), Some(513));
    caller.send(ack_to_lb(3, &too_large).as_bytes());
    assert_eq!(udp_dest.received(), 0);
    assert!(lb.destination(1).enabled);
    assert_eq!(lb.total_load("vm"), 0);
}
