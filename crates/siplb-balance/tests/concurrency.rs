//! Many threads selecting and releasing on one group, with status changes, resizes and
//! reloads racing them: no load ever exceeds the capacity a selection could have seen (no
//! flag `n` here), and every load is back to zero at the end. Bounded by iteration counts,
//! not time.

// Fixture helpers outside `#[test]` functions fail loudly, like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use siplb_balance::{
    Allocation, Balancer, DestinationRow, Flags, ResourceRequest, Session, SplitMix64,
};

const THREADS: usize = 8;
const ITERATIONS: usize = 60_000;

fn flags(s: &str) -> Flags {
    s.parse().unwrap()
}

fn all_zero(b: &Balancer) -> bool {
    b.snapshot()
        .iter()
        .all(|d| d.resources.iter().all(|r| r.load == 0))
}

/// Asserts every visible load is within `bound` (or within its own capacity if `None`).
fn check(b: &Balancer, bound: Option<u32>) {
    for d in b.snapshot() {
        for r in &d.resources {
            let limit = bound.unwrap_or(r.max);
            assert!(
                r.load <= limit,
                "destination {} {}: load {} > {limit}",
                d.id,
                r.name,
                r.load
            );
        }
    }
}

/// Like [`check`] for one destination, right after a selection took load on it: the moment
/// an overbooking would be visible.
fn check_one(b: &Balancer, id: u32, bound: Option<u32>) {
    if let Some(d) = b.destination(id) {
        for r in &d.resources {
            let limit = bound.unwrap_or(r.max);
            assert!(
                r.load <= limit,
                "destination {id} {}: load {} > {limit}",
                r.name,
                r.load
            );
        }
    }
}

/// One worker: a mix of plain selections, sessions with failover, and releases, holding up to
/// a few calls at a time so that destinations fill up and the last slot is contended.
fn worker(b: &Balancer, seed: u64, bound: Option<u32>) {
    let requests = [
        ResourceRequest::parse("vm").unwrap(),
        ResourceRequest::parse("pstn").unwrap(),
        ResourceRequest::parse("vm;pstn").unwrap(),
    ];
    let all_flags = [flags(""), flags("r"), flags("s"), flags("rs")];
    let mut rng = SplitMix64::new(seed);
    let mut held: Vec<Allocation> = Vec::new();
    let mut sessions: Vec<Session> = Vec::new();
    for _ in 0..ITERATIONS {
        let r = rng.next_u64();
        let request = &requests[(r % 3) as usize];
        let f = all_flags[((r >> 8) % 4) as usize];
        match (r >> 16) % 8 {
            0..=2 => {
                if let Some(a) = b.select(1, request, f, &mut rng).selected() {
                    check_one(b, a.destination_id(), bound);
                    held.push(a);
                }
            }
            3 => {
                let mut s = Session::new(1, request.clone(), f);
                let _ = s.next(b, &mut rng);
                sessions.push(s);
            }
            4 => {
                if let Some(s) = sessions.last_mut() {
                    let _ = s.next(b, &mut rng);
                }
            }
            5 | 6 => {
                if !held.is_empty() {
                    let i = (r >> 24) as usize % held.len();
                    held.swap_remove(i).release();
                }
            }
            _ => {
                if !sessions.is_empty() {
                    let i = (r >> 24) as usize % sessions.len();
                    sessions.swap_remove(i).release();
                }
            }
        }
        if held.len() > 4 {
            held.swap_remove(0);
        }
        if sessions.len() > 3 {
            sessions.swap_remove(0);
        }
        if (r >> 40).is_multiple_of(16) {
            check(b, bound);
        }
    }
}

fn rows(variant: u64) -> Vec<DestinationRow> {
    // Capacities 3 or 4: a selection never sees more than 4, whatever the interleaving.
    let cap = 3 + variant % 2;
    let mut rows = vec![
        DestinationRow::new(1, 1, "sip:10.0.0.1", format!("vm={cap};pstn=2")),
        DestinationRow::new(2, 1, "sip:10.0.0.2", format!("vm={cap}")),
        DestinationRow::new(4, 1, "sip:10.0.0.4", format!("vm=2;pstn={cap}")),
    ];
    match variant % 3 {
        // Destination 3 comes and goes.
        0 => rows.insert(2, DestinationRow::new(3, 1, "sip:10.0.0.3", "vm=1;pstn=1")),
        // Destination 4 changes URI: a new destination with fresh counters.
        1 => rows[2].dst_uri = "sip:10.0.0.44".into(),
        _ => {}
    }
    rows
}

#[test]
fn no_overbooking_with_status_changes() {
    let (b, errors) = Balancer::with_rows(rows(0));
    assert!(errors.is_empty());
    let b = Arc::new(b);
    let stop = Arc::new(AtomicBool::new(false));
    let toggler = {
        let (b, stop) = (Arc::clone(&b), Arc::clone(&stop));
        thread::spawn(move || {
            let mut rng = SplitMix64::new(99);
            // Bounded even if the workers were slow to finish.
            for _ in 0..1_000_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let id = 1 + (rng.next_u64() % 4) as u32;
                match rng.next_u64() % 4 {
                    0 => drop(b.disable_by_failover(id, 1)),
                    1 => drop(b.enable_by_probe(id)),
                    2 => drop(b.set_status_by_operator(id, true)),
                    _ => drop(b.set_status_by_operator(id, false)),
                }
                check(&b, None);
                thread::yield_now();
            }
        })
    };
    let start = Arc::new(Barrier::new(THREADS));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (b, start) = (Arc::clone(&b), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                worker(&b, t as u64, None)
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    toggler.join().unwrap();
    assert!(all_zero(&b));
}

#[test]
fn no_overbooking_while_reloading_and_resizing() {
    let (b, _) = Balancer::with_rows(rows(0));
    let b = Arc::new(b);
    let stop = Arc::new(AtomicBool::new(false));
    let churn: Vec<_> = [0u64, 1]
        .into_iter()
        .map(|kind| {
            let (b, stop) = (Arc::clone(&b), Arc::clone(&stop));
            thread::spawn(move || {
                let mut rng = SplitMix64::new(kind + 7);
                let mut rounds = 0u64;
                while !stop.load(Ordering::Relaxed) && rounds < 1_000_000 {
                    rounds += 1;
                    if kind == 0 {
                        assert!(b.reload(rows(rng.next_u64())).is_empty());
                    } else {
                        let id = 1 + (rng.next_u64() % 4) as u32;
                        let cap = 2 + (rng.next_u64() % 3) as u32;
                        let name = if rng.next_u64().is_multiple_of(2) {
                            "vm"
                        } else {
                            "pstn"
                        };
                        let _ = b.resize(id, name, cap);
                    }
                    check(&b, Some(4));
                    thread::yield_now();
                }
                rounds
            })
        })
        .collect();
    let start = Arc::new(Barrier::new(THREADS - 2));
    let workers: Vec<_> = (0..THREADS - 2)
        .map(|t| {
            let (b, start) = (Arc::clone(&b), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                worker(&b, 100 + t as u64, Some(4))
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let rounds: Vec<u64> = churn.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(
        rounds.iter().all(|&r| r > 0),
        "churn threads ran: {rounds:?}"
    );
    // Whatever table is current now, nothing is held on it.
    assert!(all_zero(&b));
    // Reloading the variant that brings destination 3 back shows a zero there too.
    b.reload(rows(0));
    assert!(all_zero(&b));
}
