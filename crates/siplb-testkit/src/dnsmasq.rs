//! A real DNS server for the tests: dnsmasq (Debian package `dnsmasq-base`) answering
//! for one zone from records given on its command line, on a loopback address.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// dnsmasq, answering only for `zone` (NXDOMAIN for any other name in it), records
/// with a TTL of one second. Ended by PID when dropped.
#[derive(Debug)]
pub struct Dnsmasq {
    child: Option<Child>,
    pub addr: SocketAddr,
    zone: String,
    log: PathBuf,
}

/// Where dnsmasq is, if installed.
fn binary() -> Option<PathBuf> {
    ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

impl Dnsmasq {
    /// Starts dnsmasq on `addr` with `records`: `host-record=NAME,IP` and
    /// `srv-host=_sip._udp.NAME,TARGET,PORT,PRIORITY,WEIGHT` lines as its options
    /// take them (without the leading `--`). `None` (the test reported skipped) when
    /// dnsmasq is not installed.
    pub fn start(addr: SocketAddr, zone: &str, records: &[String], dir: &Path) -> Option<Dnsmasq> {
        if binary().is_none() {
            crate::skip("dnsmasq is not installed (Debian package dnsmasq-base)");
            return None;
        }
        let mut server = Dnsmasq {
            child: None,
            addr,
            zone: zone.to_owned(),
            log: dir.join(format!("dnsmasq-{}-{}.log", addr.ip(), addr.port())),
        };
        server.spawn(records);
        Some(server)
    }

    /// Stops and starts it again with other records, on the same address.
    pub fn restart(&mut self, records: &[String]) {
        self.stop();
        self.spawn(records);
    }

    /// Stops it: the address then answers nothing.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    #[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    fn spawn(&mut self, records: &[String]) {
        let Some(binary) = binary() else {
            panic!("dnsmasq went away");
        };
        let log = std::fs::File::create(&self.log).expect("dnsmasq log file");
        let mut command = Command::new(binary);
        command
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--local-ttl=1",
                "--pid-file=",
                "--log-facility=-",
                "--log-queries",
            ])
            .arg(format!("--listen-address={}", self.addr.ip()))
            .arg(format!("--port={}", self.addr.port()))
            .arg(format!("--local=/{}/", self.zone))
            .args(records.iter().map(|r| format!("--{r}")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // Some loopback addresses are not on `lo` until something binds them; on
        // Linux all of 127.0.0.0/8 is, so binding succeeds at once.
        self.child = Some(command.spawn().expect("dnsmasq starts"));
        let start = Instant::now();
        while !self.log_text().contains("cleared cache") {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "dnsmasq did not start: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What dnsmasq logged (every query, with `--log-queries`).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn ip(&self) -> IpAddr {
        self.addr.ip()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}
