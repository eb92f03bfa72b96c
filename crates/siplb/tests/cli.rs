//! The command line: `siplb check` and `siplb db init` as an operator runs them.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn siplb(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_siplb"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check(config: &str) -> (bool, String, String) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!(
        "{:x}.toml",
        config.len() * 31 + config.bytes().map(usize::from).sum::<usize>()
    ));
    std::fs::write(&path, config).unwrap();
    siplb(&["check", "--config", path.to_str().unwrap()])
}

#[test]
fn check_accepts_the_embedded_default_and_lists_it() {
    let (ok, out, _) = siplb(&["check"]);
    assert!(ok);
    assert!(
        out.contains("listen: udp:127.0.0.1:5060, tcp:127.0.0.1:5060"),
        "{out}"
    );
    assert!(
        out.contains("route #1: balance group 1 resources \"vm\""),
        "{out}"
    );
    assert!(out.ends_with("configuration OK\n"), "{out}");
}

#[test]
fn check_names_the_key_and_line_of_each_fault() {
    let cases = [
        (
            "[sip]\nlisten = [\"udp:127.0.0.1:5060\"]\nlisen = 3\n",
            "line 3",
        ),
        (
            "[[route]]\nmatch = { ruri_user = \"(\" }\nreply = { code = 404, reason = \"x\" }\n",
            "regular expression",
        ),
        (
            "[[route]]\nbalance = { group = 1, resources = \"vm\", flags = \"q\" }\n",
            "balance.flags",
        ),
        ("[[route]]\nrelay = \"gw.example.com\"\n", "not a SIP URI"),
        (
            "[sip]\nlisten = [\"tls:127.0.0.1:5061\"]\n",
            "tls.certificate",
        ),
        // The certificate files are read, as `run` reads them.
        (
            "[tls]\ncertificate = \"/nonexistent/siplb.pem\"\nprivate_key = \"/nonexistent/siplb.key\"\n",
            "tls.certificate: /nonexistent/siplb.pem",
        ),
        ("[database]\ntable = \"x y\"\n", "database.table"),
        ("[database]\nurl = \"redis://127.0.0.1\"\n", "database.url"),
        ("[management]\nlisten = \"nowhere\"\n", "management.listen"),
    ];
    for (config, expected) in cases {
        let (ok, _, err) = check(config);
        assert!(!ok, "{config}");
        assert!(err.contains(expected), "{config}: {err}");
    }
}

#[test]
fn db_init_creates_the_table_once() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-db");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("t.db").display());
    let (ok, out, err) = siplb(&["db", "init", "--database", &url, "--examples"]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "table load_balancer: created, 4 example rows inserted\n"
    );
    let (ok, out, _) = siplb(&["db", "init", "--database", &url, "--examples"]);
    assert!(ok);
    assert_eq!(
        out,
        "table load_balancer: already there, 0 example rows inserted\n"
    );
    let (ok, _, err) = siplb(&["db", "init", "--database", "mysql://root@127.0.0.1:1/test"]);
    assert!(!ok);
    assert!(err.contains("127.0.0.1:1"), "{err}");
}

/// `siplb check | head -1`, or a reader that stops before siplb writes: no panic,
/// no error, whatever the pipe's end did.
#[test]
fn a_reader_that_stops_early_is_no_error() {
    for _ in 0..5 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_siplb"))
            .arg("check")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Close the reading end at once: siplb's write meets a closed pipe.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// The configurations the Debian package and the container image install pass
/// `siplb check` (the unit runs it before starting), the container's once its
/// entrypoint has filled in the SIP address.
#[test]
fn the_packaged_configurations_check() {
    let packaging = concat!(env!("CARGO_MANIFEST_DIR"), "/../../packaging/");
    let deb = std::fs::read_to_string(format!("{packaging}siplb.toml")).unwrap();
    let (ok, out, err) = check(&deb);
    assert!(ok, "{err}");
    assert!(out.contains("sqlite:///var/lib/siplb/siplb.db"), "{out}");
    let container = std::fs::read_to_string(format!("{packaging}container.toml"))
        .unwrap()
        .replace("@SIP_ADDRESS@", "192.0.2.10");
    let (ok, out, err) = check(&container);
    assert!(ok, "{err}");
    assert!(out.contains("udp:192.0.2.10:5060"), "{out}");
    // The unit starts what it checks, as the siplb user, and reloads with SIGHUP.
    let unit = std::fs::read_to_string(format!("{packaging}siplb.service")).unwrap();
    for line in [
        "User=siplb",
        "ExecStartPre=/usr/bin/siplb check --config /etc/siplb/siplb.toml",
        "ExecStart=/usr/bin/siplb run --config /etc/siplb/siplb.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line}");
    }
}
