//! What siplb's test suites share.
//!
//! A test that needs a tool or a server this machine lacks must not pass silently:
//! [`skip`] records it in the file `SIPLB_SKIPPED_LOG` names (which `scripts/test` reads
//! to list the skipped tests in its summary and count them apart from the passed ones),
//! and under `SIPLB_REQUIRE_ALL_TESTS` (CI) it fails the test instead.

use std::io::Write as _;

mod dnsmasq;

pub use dnsmasq::Dnsmasq;

/// Whether this run lets no test be skipped (CI sets `SIPLB_REQUIRE_ALL_TESTS`).
pub fn all_required() -> bool {
    std::env::var_os("SIPLB_REQUIRE_ALL_TESTS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Reports the running test (named after its thread, as the test harness names it) as
/// skipped for `reason`; the caller returns right after.
///
/// # Panics
///
/// Under `SIPLB_REQUIRE_ALL_TESTS`, always: there, a test that cannot run is a failure.
#[allow(clippy::panic)]
pub fn skip(reason: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    if all_required() {
        panic!("{test}: {reason}, and SIPLB_REQUIRE_ALL_TESTS (CI) lets no test be skipped");
    }
    eprintln!("skipped: {test}: {reason}");
    if let Some(path) = std::env::var_os("SIPLB_SKIPPED_LOG") {
        // One short line per write, appended: lines from parallel tests do not interleave.
        if let Ok(mut log) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = log.write_all(format!("{test}: {reason}\n").as_bytes());
        }
    }
}

/// Whether the tests against the `kind` database server (`mysql` or `postgres`) are to
/// be skipped: `SIPLB_SKIP_DB_TESTS` is `1` (both) or names it (`mysql`, `postgres`,
/// `mysql,postgres`), as `scripts/test` sets it for a server it could not start.
pub fn db_server_skipped(kind: &str) -> bool {
    std::env::var("SIPLB_SKIP_DB_TESTS")
        .is_ok_and(|v| v.trim() == "1" || v.split(',').any(|k| k.trim().eq_ignore_ascii_case(kind)))
}

/// The database server a test URL variable (`SIPLB_TEST_MYSQL_URL`,
/// `SIPLB_TEST_POSTGRES_URL`) points at, as [`db_server_skipped`] names it.
pub fn db_server_of(url_var: &str) -> &'static str {
    if url_var.contains("MYSQL") {
        "mysql"
    } else {
        "postgres"
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn server_names() {
        assert_eq!(super::db_server_of("SIPLB_TEST_MYSQL_URL"), "mysql");
        assert_eq!(super::db_server_of("SIPLB_TEST_POSTGRES_URL"), "postgres");
    }
}
