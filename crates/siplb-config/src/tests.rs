use std::time::Duration;

use super::*;

#[test]
fn embedded_default_is_valid() {
    let c = Config::embedded_default().unwrap();
    assert_eq!(c.sip.listen.len(), 2);
    assert_eq!(c.probing.interval, Duration::from_secs(30));
    assert_eq!(c.routes().count(), 3);
    assert!(matches!(c.routes().last().unwrap().action(), Some(Action::Reply(r)) if r.code == 404));
}

#[test]
fn spec_example_parses() {
    let text = r#"
[sip]
listen = ["udp:127.0.0.1:5060", "tcp:[::1]:5060"]

[database]
url = "sqlite://siplb.db"
table = "load_balancer"

[management]
listen = "127.0.0.1:8888"

[probing]
interval = "30s"
from = "sip:pinger@127.0.0.1:5060"
reply_codes = [404]

[transaction]
invite_timeout = "5s"

[dialog]
timeout = "12h"

[failover]
full_reply = { code = 500, reason = "Service full" }

[[route]]
match = { source_group = 1 }
count = { group = 1, resources = "pstn" }
relay = "sip:127.0.0.1:5080"

[[route]]
match = { ruri_user = "^VM_" }
balance = { group = 1, resources = "vm" }

[[route]]
match = { ruri_user = "^[0-9]+$", header = { "X-Priority" = "^high$" }, sdp_codec_none = ["PCMA"] }
balance = { group = 1, resources = "transc;pstn", flags = "rn" }

[[route]]
reply = { code = 404, reason = "Destination not found" }
"#;
    let c = Config::parse(text).unwrap();
    assert_eq!(c.sip.listen[1].to_string(), "tcp:[::1]:5060");
    assert_eq!(c.probing.reply_codes, [404]);
    assert_eq!(c.dialog.timeout, Duration::from_secs(43_200));
    let routes: Vec<_> = c.routes().collect();
    assert!(matches!(
        routes[0].action(),
        Some(Action::CountAndRelay {
            relay: "sip:127.0.0.1:5080",
            ..
        })
    ));
    assert!(routes[2].matcher.header["X-Priority"].0.is_match("high"));
    assert_eq!(
        routes[2].matcher.sdp_codec_none.as_deref(),
        Some(&["PCMA".to_owned()][..])
    );

    // What the core runs on: the same routes, compiled once, in its own types.
    let settings = c.settings();
    assert_eq!(settings.listen, c.sip.listen);
    assert_eq!(settings.routes.len(), 4);
    assert!(matches!(
        &settings.routes[0].action,
        siplb_proxy::RouteAction::CountAndRelay { group: 1, relay, .. }
            if relay.to_string() == "udp:127.0.0.1:5080"
    ));
    assert_eq!(settings.routes[0].matcher.source_group, Some(1));
    let m = &settings.routes[2].matcher;
    assert!(m.ruri_user.as_ref().unwrap().is_match("0123"));
    assert_eq!(m.header[0].0, "X-Priority");
    assert!(m.header[0].1.is_match("high"));
    assert!(matches!(
        &settings.routes[3].action,
        siplb_proxy::RouteAction::Reply { code: 404, .. }
    ));
    assert_eq!(settings.full_reply, (500, "Service full".to_owned()));

    let c = Config::parse(
        "[[route]]\nbalance = { group = 1, resources = \"pstn\", overflow = [{ group = 2, resources = \"pstn\", flags = \"r\" }] }\n",
    )
    .unwrap();
    let siplb_proxy::RouteAction::Balance { first, overflow } = &c.settings().routes[0].action
    else {
        panic!("a balance route");
    };
    assert_eq!((first.group, overflow.len()), (1, 1));
    assert_eq!(overflow[0].group, 2);
    assert!(overflow[0].flags.relative);
    assert_eq!(settings.timers.invite_timeout, Duration::from_secs(5));
}

fn error_of(text: &str) -> String {
    Config::parse(text).unwrap_err().to_string()
}

#[test]
fn errors_name_the_key_and_line() {
    let e = error_of("[sip]\nlisten = [\"udp:127.0.0.1:5060\"]\nlistne = 1\n");
    assert!(e.contains("line 3") && e.contains("listne"), "{e}");

    let e = error_of("[probing]\ninterval = \"soon\"\n");
    assert!(e.contains("line 2") && e.contains("soon"), "{e}");

    let e = error_of("[sip]\nlisten = [\"sctp:127.0.0.1:5060\"]\n");
    assert!(e.contains("line 2") && e.contains("sctp"), "{e}");

    let e = error_of(
        "[[route]]\nmatch = { ruri_user = \"([\" }\nreply = { code = 404, reason = \"x\" }\n",
    );
    assert!(
        e.contains("line 2") && e.contains("regular expression"),
        "{e}"
    );

    let e = error_of(
        "[[route]]\nreply = { code = 404, reason = \"x\" }\n\n[[route]]\nmatch = { method = \"INVITE\" }\n",
    );
    assert!(
        e.contains("line 4") && e.contains("route #2") && e.contains("exactly one action"),
        "{e}"
    );

    let e = error_of("[[route]]\nbalance = { group = 1, resources = \"vm\", flags = \"rx\" }\n");
    assert!(
        e.contains("route #1") && e.contains("flags") && e.contains('x'),
        "{e}"
    );

    let e = error_of("[[route]]\nbalance = { group = 1, resources = \"vm=3\" }\n");
    assert!(e.contains("balance.resources"), "{e}");

    let e = error_of("[[route]]\ncount = { group = 1, resources = \"pstn\" }\n");
    assert!(e.contains("exactly one action"), "{e}");

    let e = error_of("[[route]]\nrelay = \"http://example.com\"\n");
    assert!(e.contains("relay") && e.contains("not a SIP URI"), "{e}");

    let e = error_of(
        "[[route]]\nbalance = { group = 1, resources = \"vm\", overflow = [{ group = 2, resources = \"vm\" }, { group = 3, resources = \"vm=2\" }] }\n",
    );
    assert!(
        e.contains("line 1") && e.contains("balance.overflow[1].resources"),
        "{e}"
    );
    let e = error_of(
        "[[route]]\nbalance = { group = 1, resources = \"vm\", overflow = [{ group = 2, resource = \"vm\" }] }\n",
    );
    assert!(e.contains("resource"), "{e}");

    // A relay target may be named by host; one that is no URI is said with its line.
    let e = error_of(
        "[[route]]\nreply = { code = 404, reason = \"x\" }\n\n[[route]]\nrelay = \"gw.example.com\"\n",
    );
    assert!(
        e.contains("line 4") && e.contains("route #2") && e.contains("relay"),
        "{e}"
    );
    let c = Config::parse("[[route]]\nrelay = \"sips:gw.example.com\"\n").unwrap();
    assert_eq!(
        c.settings().routes[0]
            .action
            .relay()
            .map(ToString::to_string)
            .as_deref(),
        Some("tls:gw.example.com (by DNS)")
    );
    let c =
        Config::parse("[[route]]\nrelay = \"sip:GW.example.com:5080;transport=tcp\"\n").unwrap();
    assert_eq!(
        c.settings().routes[0]
            .action
            .relay()
            .map(ToString::to_string)
            .as_deref(),
        Some("tcp:gw.example.com:5080 (by DNS)")
    );

    let e = error_of("[failover]\nfull_reply = { code = 200, reason = \"OK\" }\n");
    assert!(e.contains("full_reply.code"), "{e}");

    let e = error_of("[management]\nlisten = \"localhost\"\n");
    assert!(e.contains("management.listen"), "{e}");

    let e = error_of("[probing]\nreply_codes = [99]\n");
    assert!(e.contains("reply_codes"), "{e}");

    let e = error_of("[probing]\nfrom = \"prober\"\n");
    assert!(e.contains("probing.from"), "{e}");

    let e = error_of("[probing]\nmethod = \"OPT IONS\"\n");
    assert!(e.contains("probing.method"), "{e}");

    let e = error_of("[dialog]\ntimeout = 5\n");
    assert!(e.contains("line 2"), "{e}");
}

#[test]
fn dns_servers_and_timeout() {
    let c = Config::parse("").unwrap();
    assert!(c.dns.servers.is_empty());
    assert_eq!(c.dns.timeout, Duration::from_secs(2));
    let c = Config::parse(
        "[dns]\nservers = [\"127.0.0.1:5353\", \"10.0.0.53\", \"[::1]:53\"]\ntimeout = \"500ms\"\n",
    )
    .unwrap();
    let servers: Vec<String> = c.dns.servers.iter().map(ToString::to_string).collect();
    assert_eq!(servers, ["127.0.0.1:5353", "10.0.0.53:53", "[::1]:53"]);
    assert_eq!(c.dns.timeout, Duration::from_millis(500));
    let e = error_of("[dns]\nservers = [\"ns1.example.net\"]\n");
    assert!(e.contains("line 2") && e.contains("ns1.example.net"), "{e}");
    let e = error_of("[dns]\ntimeout = \"0s\"\n");
    assert!(e.contains("dns.timeout"), "{e}");
    let e = error_of("[dns]\nserver = []\n");
    assert!(e.contains("server"), "{e}");
}

#[test]
fn tls_listeners_need_a_certificate() {
    let e = error_of("[sip]\nlisten = [\"tls:127.0.0.1:5061\"]\n");
    assert!(e.contains("tls.certificate"), "{e}");
    let e = error_of("[tls]\ncertificate = \"a.pem\"\n");
    assert!(e.contains("go together") && e.contains("line 1"), "{e}");
    let e = error_of("[tls]\nverify_client = true\n");
    assert!(e.contains("ca_certificates"), "{e}");
    let c = Config::parse(
        "[sip]\nlisten = [\"udp:127.0.0.1:5060\", \"tls:127.0.0.1:5061\"]\n[tls]\ncertificate = \"a.pem\"\nprivate_key = \"a.key\"\n",
    )
    .unwrap();
    assert_eq!(c.settings().listen[1].to_string(), "tls:127.0.0.1:5061");
}

#[test]
fn management_dashboard() {
    let c = Config::parse("").unwrap();
    assert!(c.management.dashboard && !c.management.dashboard_writes);
    let c = Config::parse("[management]\ndashboard = false\ndashboard_writes = true\n").unwrap();
    assert!(!c.management.dashboard && c.management.dashboard_writes);
    let e = error_of("[management]\ndashboard_writes = \"yes\"\n");
    assert!(e.contains("dashboard_writes"), "{e}");
}

#[test]
fn management_token() {
    let c = Config::embedded_default().unwrap();
    assert_eq!(c.management.token, None);

    let c = Config::parse("[management]\ntoken = \"s3cr3t-T0ken_~!\"\n").unwrap();
    assert_eq!(c.management.token.as_deref(), Some("s3cr3t-T0ken_~!"));
    assert_eq!(c.management.listen, "127.0.0.1:8888");
    // Never in a log line.
    let debug = format!("{c:?}");
    assert!(!debug.contains("s3cr3t"), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");

    let longest = "x".repeat(256);
    let c = Config::parse(&format!("[management]\ntoken = \"{longest}\"\n")).unwrap();
    assert_eq!(c.management.token.as_deref(), Some(longest.as_str()));

    let e = error_of("[management]\ntoken = \"\"\n");
    assert!(e.contains("management.token") && e.contains("empty"), "{e}");

    for bad in [
        "two words",
        "tab\\there",
        "new\\nline",
        "caf\u{e9}",
        "del\\u007f",
    ] {
        let e = error_of(&format!("[management]\ntoken = \"{bad}\"\n"));
        assert!(
            e.contains("management.token") && e.contains("printable ASCII"),
            "{bad}: {e}"
        );
        // The value is a secret: the error does not repeat it.
        assert!(!e.contains(bad), "{e}");
    }

    let e = error_of(&format!("[management]\ntoken = \"{}\"\n", "x".repeat(257)));
    assert!(e.contains("management.token") && e.contains("256"), "{e}");

    let e = error_of("[management]\ntoken = 42\n");
    assert!(e.contains("token"), "{e}");
}

#[test]
fn overload_control_is_on_by_default_and_its_bounds_name_the_section() {
    let s = Config::embedded_default().unwrap().settings();
    assert!(s.overload.feedback);
    assert!((s.overload.target - 0.9).abs() < 1e-9);
    assert_eq!(s.overload.validity, Duration::from_secs(2));
    let text = "[sip]\nlisten = [\"udp:127.0.0.1:5060\"]\n\n[overload]\nfeedback = false\nbusy_target = 75\nvalidity = \"500ms\"\n";
    let s = Config::parse(text).unwrap().settings();
    assert!(!s.overload.feedback);
    assert!((s.overload.target - 0.75).abs() < 1e-9);
    assert_eq!(s.overload.validity, Duration::from_millis(500));
    for (bad, key) in [
        ("busy_target = 100", "overload.busy_target"),
        ("busy_target = 5", "overload.busy_target"),
        ("validity = \"10ms\"", "overload.validity"),
    ] {
        let text = format!("[sip]\nlisten = [\"udp:127.0.0.1:5060\"]\n\n[overload]\n{bad}\n");
        match Config::parse(&text) {
            Err(ConfigError::Invalid { line, message }) => {
                assert_eq!(line, 4, "{bad}");
                assert!(message.starts_with(key), "{message}");
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
}

#[test]
fn cluster_section_defaults_addresses_and_faults() {
    let c = Config::parse("").unwrap();
    assert!(c.cluster.is_none(), "one node unless [cluster] is there");
    assert!(c.settings().aliases.is_empty());
    let c = Config::parse(
        "[sip]\nlisten = [\"udp:10.0.0.11:5060\"]\n[cluster]\nredis = \"redis://10.0.0.20/0\"\n\
         node = \"lb-a\"\naddresses = [\"sip:10.0.0.11:5060\", \"sip:10.0.0.12\", \"[::1]:5070\"]\n",
    )
    .unwrap();
    let cluster = c.cluster.clone().unwrap();
    assert_eq!(cluster.heartbeat, Duration::from_secs(1));
    assert_eq!(cluster.node_timeout, Duration::from_secs(5));
    assert_eq!(cluster.reserve_timeout, Duration::from_millis(250));
    assert_eq!(cluster.prefix, "siplb");
    let aliases: Vec<String> = c
        .settings()
        .aliases
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(aliases, ["10.0.0.11:5060", "10.0.0.12:5060", "[::1]:5070"]);
    assert!(
        c.settings().persist_dialogs,
        "a cluster stores its calls for adoption"
    );

    let base = "[sip]\nlisten = [\"udp:10.0.0.11:5060\"]\n[cluster]\nredis = \"redis://h/0\"\n";
    for (extra, key) in [
        ("node = \"lb a\"", "cluster.node"),
        (
            "node = \"a\"\nheartbeat = \"1s\"\nnode_timeout = \"1s\"",
            "cluster.node_timeout",
        ),
        ("node = \"a\"\nheartbeat = \"10ms\"", "cluster.heartbeat"),
        (
            "node = \"a\"\nreserve_timeout = \"0s\"",
            "cluster.reserve_timeout",
        ),
        ("node = \"a\"\nprefix = \"a b\"", "cluster.prefix"),
    ] {
        let e = error_of(&format!("{base}{extra}\n"));
        assert!(e.contains(key) && e.contains("line 3"), "{extra}: {e}");
    }
    let e = error_of("[cluster]\nredis = \"http://h\"\nnode = \"a\"\n");
    assert!(e.contains("cluster.redis") && e.contains("line 1"), "{e}");
    let e = error_of(&format!(
        "{base}node = \"a\"\naddresses = [\"sip:lb-b.example\"]\n"
    ));
    assert!(e.contains("lb-b.example") && e.contains("line 6"), "{e}");
    let e = error_of("[cluster]\nnode = \"a\"\n");
    assert!(e.contains("redis"), "{e}");
}

#[test]
fn the_100_trying_waits_200ms_at_most() {
    let c = Config::parse("").unwrap();
    assert_eq!(c.settings().timers.trying_after, Duration::from_millis(200));
    let c = Config::parse("[transaction]\ntrying_after = \"0s\"\n").unwrap();
    assert_eq!(c.settings().timers.trying_after, Duration::ZERO);
    let e = error_of("\n[transaction]\ntrying_after = \"300ms\"\n");
    assert!(e.contains("trying_after") && e.contains("line 2"), "{e}");
}
