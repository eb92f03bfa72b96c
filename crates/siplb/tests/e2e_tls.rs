//! SIP over TLS end to end: siplb as a process, certificates made by the test (rcgen),
//! TLS peers written here on rustls (Debian's SIPp has no TLS), SIPp on the UDP side.

#![allow(
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    dead_code
)]

mod harness;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use harness::{
    Node, ctl_json, db_init, insert_destinations, ip, listed, node_config, scratch, uac_to,
    wait_until,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use siplb_sip::{Frame, Limits, Message, StreamDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::{self, pki_types};

/// A certificate authority of the test's own.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pem: PathBuf,
}

fn ca(dir: &Path, name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("siplb test CA {name}"));
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let pem = dir.join(format!("{name}-ca.pem"));
    std::fs::write(&pem, issuer.pem()).unwrap();
    Ca { issuer, pem }
}

/// A certificate for `names` (IP addresses or host names) signed by `ca`, written to
/// `name.pem` and `name.key`; `expired` puts its validity in the past.
fn leaf(ca: &Ca, dir: &Path, name: &str, names: &[&str], expired: bool) -> (PathBuf, PathBuf) {
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let (cert_path, key_path) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_config(cert: &Path, key: &Path) -> Arc<rustls::ServerConfig> {
    use pki_types::pem::PemObject;
    let chain: Vec<_> = pki_types::CertificateDer::pem_file_iter(cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
    )
}

fn client_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    use pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// What a TLS destination received, by method.
#[derive(Default)]
struct Seen {
    invites: AtomicUsize,
    acks: AtomicUsize,
    byes: AtomicUsize,
    handshakes: AtomicUsize,
}

/// A destination over TLS: answers INVITE 200 (and BYE, OPTIONS 200), counts what it
/// gets. Runs until the runtime ends.
async fn tls_destination(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    seen: Arc<Seen>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let (acceptor, seen) = (acceptor.clone(), Arc::clone(&seen));
        let me = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let Ok(mut tls) = acceptor.accept(stream).await else {
                return;
            };
            seen.handshakes.fetch_add(1, Ordering::Relaxed);
            let mut decoder = StreamDecoder::new(Limits::default());
            let mut buf = vec![0u8; 16384];
            loop {
                let n = match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                decoder.extend(&buf[..n]);
                while let Ok(Some(frame)) = decoder.decode() {
                    let Frame::Message(m) = frame else { continue };
                    let contact = format!("<sip:uas@{me};transport=tls>");
                    let answer = match m.method().map(|x| x.as_str().to_owned()).as_deref() {
                        Some("INVITE") => {
                            seen.invites.fetch_add(1, Ordering::Relaxed);
                            Some(siplb_sip::build_response(
                                &m,
                                200,
                                "OK",
                                Some("uas"),
                                &[("Contact", &contact)],
                            ))
                        }
                        Some("BYE") => {
                            seen.byes.fetch_add(1, Ordering::Relaxed);
                            Some(siplb_sip::build_response(&m, 200, "OK", None, &[]))
                        }
                        Some("ACK") => {
                            seen.acks.fetch_add(1, Ordering::Relaxed);
                            None
                        }
                        Some(_) => Some(siplb_sip::build_response(&m, 200, "OK", None, &[])),
                        None => None,
                    };
                    if let Some(a) = answer
                        && (tls.write_all(&a).await.is_err() || tls.flush().await.is_err())
                    {
                        return;
                    }
                }
            }
        });
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Destinations over TLS, in the order selection tries them: one whose certificate
/// names another address, one whose certificate has expired, one named by host whose
/// certificate names another host; then two right ones, by name (the certificate must
/// carry the name, which siplb sends as SNI) and by address. The first three fail at
/// the transport, at once (never a plain-text fallback), and the call fails over; the
/// calls land on the right ones, where their ACK and BYE follow over TLS.
#[test]
fn tls_destinations_are_verified_and_fail_over() {
    let test = 95;
    let dir = scratch("tls-destinations-95");
    let server = SocketAddr::new(ip(test, 53), 5353);
    let records = vec![
        format!("host-record=wrong.mycluster.net,{}", ip(test, 13)),
        format!("host-record=tlsgw.mycluster.net,{}", ip(test, 14)),
    ];
    let Some(_dns) = siplb_testkit::Dnsmasq::start(server, "mycluster.net", &records, &dir) else {
        return;
    };
    let authority = ca(&dir, "a");
    let rt = runtime();
    let mut seen = Vec::new();
    for (h, name, expired) in [
        (11, "127.0.95.99".to_owned(), false),
        (12, ip(test, 12).to_string(), true),
        (13, "other.mycluster.net".to_owned(), false),
        (14, "tlsgw.mycluster.net".to_owned(), false),
        (15, ip(test, 15).to_string(), false),
    ] {
        let (cert, key) = leaf(&authority, &dir, &format!("dst{h}"), &[&name], expired);
        let listener = rt
            .block_on(TcpListener::bind(SocketAddr::new(ip(test, h), 5061)))
            .unwrap();
        let s = Arc::new(Seen::default());
        rt.spawn(tls_destination(
            listener,
            server_config(&cert, &key),
            Arc::clone(&s),
        ));
        seen.push(s);
    }
    let url = format!("sqlite://{}", dir.join("siplb.db").display());
    db_init(&["--database", &url]);
    let (first, second, fifth) = (
        format!("sips:{}:5061", ip(test, 11)),
        format!("sip:{}:5061;transport=tls", ip(test, 12)),
        format!("sips:{}:5061", ip(test, 15)),
    );
    insert_destinations(
        &url,
        &[
            (1, 1, &first, "vm=50"),
            (2, 1, &second, "vm=40"),
            // No port: no SRV record for _sips._tcp, so A on 5061.
            (3, 1, "sips:wrong.mycluster.net", "vm=35"),
            (4, 1, "sips:tlsgw.mycluster.net", "vm=30"),
            (5, 1, &fifth, "vm=30"),
        ],
    );
    let sip = SocketAddr::new(ip(test, 1), 5060);
    let mi_addr = SocketAddr::new(ip(test, 1), 8888);
    let config = node_config(
        &dir,
        &format!("listen = [\"udp:{sip}\"]\ndrain = \"1s\""),
        &url,
        mi_addr,
        &format!(
            "[dns]\nservers = [\"{server}\"]\n[tls]\nca_certificates = \"{}\"\n[transaction]\ninvite_timeout = \"60s\"\n[failover]\nmin_enabled = 0\n{}",
            authority.pem.display(),
            harness::VM_ROUTE
        ),
    );
    let node = Node::start(&config, dir.join("siplb.log"));
    // Two overlapping calls: the first fails over to 4 (30 free, lowest id of the
    // tie), the second finds 5 with more room.
    let report = uac_to(&dir, "uac", sip, ip(test, 100), 5060, "VM_1", (2, 10, 1500))
        .finish(Duration::from_secs(30));
    assert!(report.success, "{}\n{}", report.output, node.log_text());
    assert_eq!(report.successful_calls, 2);
    let got = |s: &Seen| {
        (
            s.invites.load(Ordering::Relaxed),
            s.acks.load(Ordering::Relaxed),
            s.byes.load(Ordering::Relaxed),
        )
    };
    wait_until(Duration::from_secs(5), || {
        got(&seen[3]) == (1, 1, 1) && got(&seen[4]) == (1, 1, 1)
    });
    // The bad certificates: not one message went to them.
    for bad in &seen[..3] {
        assert_eq!(got(bad), (0, 0, 0));
    }
    for (id, enabled) in [(1, "no"), (2, "no"), (3, "no"), (4, "yes"), (5, "yes")] {
        assert_eq!(listed(mi_addr, id)["enabled"], enabled, "destination {id}");
    }
    let log = node.log_text();
    assert!(
        log.contains("TLS handshake with a destination failed"),
        "{log}"
    );
    drop(rt);
}

/// Sends `text` on `tls` and reads messages until one with `status` comes (provisional
/// ones are skipped); returns it.
async fn exchange<S>(tls: &mut S, decoder: &mut StreamDecoder, text: &str, status: u16) -> Message
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tls.write_all(text.replace('\n', "\r\n").as_bytes())
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let mut buf = vec![0u8; 16384];
    loop {
        while let Some(frame) = decoder.decode().unwrap() {
            if let Frame::Message(m) = frame {
                match m.status() {
                    Some(s) if s == status => return m,
                    Some(s) if s < 200 => {}
                    other => panic!("expected {status}, got {other:?}: {m:?}"),
                }
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(n > 0, "siplb closed the connection");
        decoder.extend(&buf[..n]);
    }
}

/// The next message that arrives on `tls`.
async fn next_message<S>(tls: &mut S, decoder: &mut StreamDecoder) -> Message
where
    S: tokio::io::AsyncRead + Unpin,
{
    let mut buf = vec![0u8; 16384];
    loop {
        if let Some(Frame::Message(m)) = decoder.decode().unwrap() {
            return m;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf))
            .await
            .expect("a message in time")
            .unwrap();
        assert!(n > 0, "siplb closed the connection");
        decoder.extend(&buf[..n]);
    }
}

fn angle(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    let start = text.find('<').map_or(0, |i| i + 1);
    let end = text[start..].find('>').map_or(text.len(), |i| start + i);
    text[start..end].to_owned()
}

/// A caller over TLS (a rustls client checking siplb's certificate), a destination over
/// UDP (SIPp): the INVITE, its 200 back over TLS with siplb record-routed twice (TLS
/// facing the caller, UDP facing the destination), the ACK and the BYE along the route
/// set the caller built; the INVITE carries a preloaded Route naming siplb, as from a
/// phone with siplb as its outbound proxy. Then the certificate is replaced and
/// `lb_reload` read: a new connection gets the new one, the one already up goes on; a
/// connection that sends garbage is closed and the other still served.
#[test]
fn a_tls_caller_reaches_a_udp_destination_and_certificates_rotate() {
    let test = 96;
    let dir = scratch("tls-caller-96");
    let first = ca(&dir, "first");
    let (cert, key) = leaf(&first, &dir, "siplb", &[&ip(test, 1).to_string()], false);
    let scenario = harness::scenario("uas_rr_bye.xml");
    let host = ip(test, 11).to_string();
    let _destination = harness::Sipp::spawn(
        &dir,
        "uas-rr-bye",
        &["-sf", scenario.to_str().unwrap(), "-i", &host, "-p", "5060"],
    );
    std::thread::sleep(Duration::from_millis(300));
    let url = format!("sqlite://{}", dir.join("siplb.db").display());
    db_init(&["--database", &url]);
    let uri = format!("sip:{}:5060", ip(test, 11));
    insert_destinations(&url, &[(1, 1, &uri, "vm=10")]);
    let sip = SocketAddr::new(ip(test, 1), 5060);
    let tls_at = SocketAddr::new(ip(test, 1), 5061);
    let mi_addr = SocketAddr::new(ip(test, 1), 8888);
    let config = node_config(
        &dir,
        &format!("listen = [\"udp:{sip}\", \"tls:{tls_at}\"]\ndrain = \"1s\""),
        &url,
        mi_addr,
        &format!(
            "[tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n{}",
            cert.display(),
            key.display(),
            harness::VM_ROUTE
        ),
    );
    let node = Node::start(&config, dir.join("siplb.log"));
    let rt = runtime();
    let me = ip(test, 100);
    let server_name = pki_types::ServerName::IpAddress(ip(test, 1).into());
    let connect = |ca: &Path| {
        let connector = tokio_rustls::TlsConnector::from(client_config(ca));
        let name = server_name.clone();
        async move {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::new(me, 0)).unwrap();
            let stream: TcpStream = socket.connect(tls_at).await.unwrap();
            connector.connect(name, stream).await
        }
    };
    let mut tls = rt
        .block_on(connect(&first.pem))
        .expect("siplb's certificate verifies");
    let local = rt.block_on(async { tls.get_ref().0.local_addr().unwrap() });
    let mut decoder = StreamDecoder::new(Limits::default());
    // As a phone with siplb as its outbound proxy sends it: a preloaded Route naming
    // siplb's TLS listener, which siplb consumes (RFC 3261 16.4).
    let invite = format!(
        "INVITE sip:VM_1@{tls_at};transport=tls SIP/2.0\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-tls-inv\nRoute: <sip:{tls_at};transport=tls;lr>\nMax-Forwards: 70\nFrom: <sip:alice@{me}>;tag=a1\nTo: <sip:VM_1@{}>\nCall-ID: tls-call-1\nCSeq: 1 INVITE\nContact: <sip:alice@{local};transport=tls>\nContent-Length: 0\n\n",
        ip(test, 1)
    );
    let ok = rt.block_on(exchange(&mut tls, &mut decoder, &invite, 200));
    let to_tag = ok.to_tag().unwrap().to_owned();
    let record_routes: Vec<String> = ok
        .header_values(siplb_sip::HeaderName::RecordRoute)
        .flat_map(|v| {
            // One field or several, as the destination wrote them.
            String::from_utf8_lossy(v)
                .split(',')
                .map(|r| r.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    // Two entries, the one facing the destination (UDP) on top, ours (TLS) below.
    assert_eq!(record_routes.len(), 2, "{record_routes:?}");
    assert!(
        record_routes[1].contains("transport=tls"),
        "{record_routes:?}"
    );
    assert!(
        !record_routes[0].contains("transport=tls"),
        "{record_routes:?}"
    );
    let contact = angle(ok.header(siplb_sip::HeaderName::Contact).unwrap());
    // The caller's route set: the Record-Route entries in reverse.
    let routes: String = record_routes
        .iter()
        .rev()
        .map(|r| format!("Route: {r}\n"))
        .collect();
    let in_dialog = |method: &str, cseq: u32, branch: &str| {
        format!(
            "{method} {contact} SIP/2.0\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-{branch}\nMax-Forwards: 70\n{routes}From: <sip:alice@{me}>;tag=a1\nTo: <sip:VM_1@{}>;tag={to_tag}\nCall-ID: tls-call-1\nCSeq: {cseq} {method}\nContent-Length: 0\n\n",
            ip(test, 1)
        )
    };
    rt.block_on(async {
        let ack = in_dialog("ACK", 1, "tls-ack").replace('\n', "\r\n");
        tls.write_all(ack.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();
    });
    wait_until(Duration::from_secs(5), || {
        listed(mi_addr, 1)["Resources"][0]["load"] == 1
    });
    // The destination hangs up: its BYE comes to the caller over TLS, along the route
    // set it kept; the caller's 200 goes back to it and the load is released.
    let bye = rt.block_on(next_message(&mut tls, &mut decoder));
    assert_eq!(
        bye.method().map(|m| m.as_str().to_owned()).as_deref(),
        Some("BYE"),
        "{bye:?}"
    );
    assert_eq!(bye.call_id(), Some("tls-call-1"));
    let answer = siplb_sip::build_response(&bye, 200, "OK", None, &[]);
    rt.block_on(async {
        tls.write_all(&answer).await.unwrap();
        tls.flush().await.unwrap();
    });
    wait_until(Duration::from_secs(5), || {
        listed(mi_addr, 1)["Resources"][0]["load"] == 0
    });

    // Certificate rotation: a new authority, new files in the same place, lb_reload.
    let second = ca(&dir, "second");
    let (new_cert, new_key) = leaf(
        &second,
        &dir,
        "siplb-new",
        &[&ip(test, 1).to_string()],
        false,
    );
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    assert_eq!(ctl_json(mi_addr, &["lb_reload"]), "OK");
    assert!(node.log_text().contains("TLS certificates read again"));
    // New connections get the new certificate: the old authority no longer verifies it.
    assert!(rt.block_on(connect(&first.pem)).is_err());
    let mut fresh = rt
        .block_on(connect(&second.pem))
        .expect("the new certificate verifies");
    let options = |via_host: SocketAddr, branch: &str| {
        format!(
            "OPTIONS sip:{tls_at};transport=tls SIP/2.0\nVia: SIP/2.0/TLS {via_host};branch=z9hG4bK-{branch}\nMax-Forwards: 70\nFrom: <sip:alice@{me}>;tag=o1\nTo: <sip:{tls_at}>\nCall-ID: tls-options-{branch}\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n"
        )
    };
    let fresh_local = rt.block_on(async { fresh.get_ref().0.local_addr().unwrap() });
    let mut fresh_decoder = StreamDecoder::new(Limits::default());
    rt.block_on(exchange(
        &mut fresh,
        &mut fresh_decoder,
        &options(fresh_local, "new"),
        200,
    ));
    // The connection made before the rotation goes on.
    rt.block_on(exchange(
        &mut tls,
        &mut decoder,
        &options(local, "old"),
        200,
    ));
    // Garbage from a caller over TLS gets that connection closed (after a 400 when one
    // can be routed), and harms no other.
    rt.block_on(async {
        fresh
            .write_all(b"NOT SIP AT ALL\r\n\r\n\x00\x01\x02\r\n\r\n")
            .await
            .unwrap();
        fresh.flush().await.unwrap();
        let mut buf = vec![0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), fresh.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(_)) => {}
                Err(_) => panic!("the connection that sent garbage stayed open"),
            }
        }
    });
    rt.block_on(exchange(
        &mut tls,
        &mut decoder,
        &options(local, "after-garbage"),
        200,
    ));
    drop(rt);
}

/// With `verify_client`, a caller over TLS must show a certificate signed by
/// `ca_certificates`: one without gets nothing answered, one with is served.
#[test]
fn verify_client_asks_callers_for_a_certificate() {
    use pki_types::pem::PemObject;
    let test = 97;
    let dir = scratch("tls-verify-client-97");
    let authority = ca(&dir, "a");
    let (cert, key) = leaf(
        &authority,
        &dir,
        "siplb",
        &[&ip(test, 1).to_string()],
        false,
    );
    let (client_cert, client_key) = leaf(&authority, &dir, "phone", &["phone.example.net"], false);
    let url = format!("sqlite://{}", dir.join("siplb.db").display());
    db_init(&["--database", &url]);
    let tls_at = SocketAddr::new(ip(test, 1), 5061);
    let mi_addr = SocketAddr::new(ip(test, 1), 8888);
    let config = node_config(
        &dir,
        &format!("listen = [\"tls:{tls_at}\"]\ndrain = \"1s\""),
        &url,
        mi_addr,
        &format!(
            "[tls]\ncertificate = \"{}\"\nprivate_key = \"{}\"\nca_certificates = \"{}\"\nverify_client = true\n",
            cert.display(),
            key.display(),
            authority.pem.display()
        ),
    );
    let _node = Node::start(&config, dir.join("siplb.log"));
    let rt = runtime();
    let roots = client_config(&authority.pem);
    let options = format!(
        "OPTIONS sip:{tls_at};transport=tls SIP/2.0\nVia: SIP/2.0/TLS {};branch=z9hG4bK-vc\nMax-Forwards: 70\nFrom: <sip:phone@{}>;tag=v1\nTo: <sip:{tls_at}>\nCall-ID: verify-client\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n",
        ip(test, 100),
        ip(test, 100)
    )
    .replace('\n', "\r\n");
    let ask = |config: Arc<rustls::ClientConfig>| {
        let options = options.clone();
        async move {
            let stream = TcpStream::connect(tls_at).await.ok()?;
            let name = pki_types::ServerName::IpAddress(ip(test, 1).into());
            let mut tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await
                .ok()?;
            tls.write_all(options.as_bytes()).await.ok()?;
            tls.flush().await.ok()?;
            let mut buf = vec![0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
                .await
                .ok()?
                .ok()?;
            (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
        }
    };
    assert_eq!(
        rt.block_on(ask(Arc::clone(&roots))),
        None,
        "served without a certificate"
    );
    let chain: Vec<_> = pki_types::CertificateDer::pem_file_iter(&client_cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut store = rustls::RootCertStore::empty();
    for c in pki_types::CertificateDer::pem_file_iter(&authority.pem).unwrap() {
        store.add(c.unwrap()).unwrap();
    }
    let with_certificate = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(store)
            .with_client_auth_cert(
                chain,
                pki_types::PrivateKeyDer::from_pem_file(&client_key).unwrap(),
            )
            .unwrap(),
    );
    let answer = rt.block_on(ask(with_certificate)).expect("an answer");
    assert!(answer.starts_with("SIP/2.0 200 OK"), "{answer}");
    drop(rt);
}
