//! A deterministic call simulator for siplb's proxy core.
//!
//! The sans-I/O core ([`siplb_proxy::Proxy`]) runs in virtual time among simulated
//! callers and destinations, each a small SIP user agent following a seeded script,
//! over a simulated network that loses, duplicates, delays and reorders UDP datagrams
//! and carries TCP in order. Scripts ([`Script`]) cover what real peers do: answer,
//! ring, reject, stay silent, answer too late, fork, ring forever; CANCEL at any
//! moment, BYE from either side (early included), re-INVITE, never acknowledge;
//! record-route aware and unaware callers, preloaded Routes, UDP and TCP on either
//! side; operator actions (`lb_status`, `lb_resize`, `lb_reload`, `lb_end_call`),
//! probes, destination outages, and hostile messages at the parser's limits.
//!
//! After every step the world checks its invariants:
//! - no load wraps below zero, none grows above its capacity, and none is held by no
//!   call;
//! - every INVITE gets one final response (a non-2xx resent identically, or 2xx
//!   only), and every INVITE a caller got to siplb gets one;
//! - no destination is disabled by failover or probing unless it failed in the
//!   script (a 5xx/6xx, silence, an outage) shortly before;
//! - no message goes to a host outside the world, nor an in-dialog request to a
//!   destination that did not answer the dialog, and every request a user agent sends
//!   gets a final response;
//! - record-routing gives each side a route set that reaches siplb the way it came;
//! - a step produces a bounded number of messages;
//!
//! and once everything has settled (well before any dialog timeout): every load is 0,
//! and no call, transaction, timer or stored call is left.
//!
//! [`run`] runs one script; [`shrink`] makes a failing one minimal, so that its trace
//! shows only what the failure needs.

mod callee;
mod caller;
mod hostile;
mod rng;
mod script;
mod sip;
mod store;
mod trace;
mod world;

pub use rng::Rng;
pub use script::{
    Answer, Call, Ending, Hostile, HostileKind, Knobs, Net, Op, OpKind, Outage, Script, Target,
};
pub use world::{Failure, Report};

/// The most runs [`shrink`] makes.
pub const SHRINK_RUNS: usize = 2000;

/// Runs one script to its end.
pub fn run(script: &Script) -> Result<Report, Failure> {
    world::World::new(script).run()
}

/// A smaller script that still fails (by removing calls, operator actions, outages,
/// hostile messages and network faults one at a time while the run keeps failing),
/// with its failure.
///
/// Only failures of the same kind count (the violation's text with its numbers left
/// out), so that shrinking does not wander off to another fault. Bounded to
/// [`SHRINK_RUNS`] runs: a large script may stop short of minimal.
pub fn shrink(script: &Script) -> Option<(Script, Failure)> {
    let mut best = script.clone();
    let mut failure = run(&best).err()?;
    let kind = kind_of(&failure.violation);
    let mut runs = 0;
    loop {
        let mut smaller = None;
        for candidate in candidates(&best) {
            runs += 1;
            if runs > SHRINK_RUNS {
                return Some((best, failure));
            }
            if let Err(f) = run(&candidate)
                && kind_of(&f.violation) == kind
            {
                smaller = Some((candidate, f));
                break;
            }
        }
        match smaller {
            Some((s, f)) => {
                best = s;
                failure = f;
            }
            None => return Some((best, failure)),
        }
    }
}

fn kind_of(violation: &str) -> String {
    let mut out = String::new();
    for c in violation.chars() {
        if c.is_ascii_digit() {
            if !out.ends_with('#') {
                out.push('#');
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Scripts with one thing less, larger cuts first.
fn candidates(s: &Script) -> Vec<Script> {
    let mut out = Vec::new();
    let n = s.calls.len();
    // Halves, then quarters... of the calls.
    let mut chunk = n / 2;
    while chunk >= 1 {
        let mut start = 0;
        while start < n {
            let mut c = s.clone();
            let end = (start + chunk).min(n);
            c.calls.drain(start..end);
            out.push(c);
            start += chunk;
        }
        if chunk == 1 {
            break;
        }
        chunk /= 2;
    }
    for i in 0..s.ops.len() {
        let mut c = s.clone();
        c.ops.remove(i);
        out.push(c);
    }
    for i in 0..s.outages.len() {
        let mut c = s.clone();
        c.outages.remove(i);
        out.push(c);
    }
    for i in 0..s.hostile.len() {
        let mut c = s.clone();
        c.hostile.remove(i);
        out.push(c);
    }
    if s.net != Net::default() {
        let mut c = s.clone();
        c.net = Net::default();
        out.push(c);
    }
    for i in 0..s.calls.len() {
        if s.calls[i].answers.len() > 1 {
            let mut c = s.clone();
            c.calls[i].answers.truncate(1);
            out.push(c);
        }
    }
    out
}
