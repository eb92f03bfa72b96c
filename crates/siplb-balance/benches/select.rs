//! One selection + allocation + release on a group of 4, 100 and 1000 destinations, asking for
//! 1 or 3 resources; alone, and with a second thread doing the same on the same group.

// Fixture setup fails loudly on a bad fixture.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use siplb_balance::{Allocation, Balancer, DestinationRow, Flags, ResourceRequest, SplitMix64};

/// Upper bound on the contending thread's iterations, so it ends even if never told to stop.
const CONTENDER_MAX_ITERATIONS: u64 = 2_000_000_000;

fn request(resources: usize) -> ResourceRequest {
    let names = ["a", "b", "c"];
    ResourceRequest::parse(&names[..resources].join(";")).expect("valid request")
}

/// `n` destinations in group 1, each offering `a`, `b` and `c`, with a few calls already up so
/// that availabilities differ as in a live cluster.
fn setup(n: u32) -> (Arc<Balancer>, Vec<Allocation>) {
    let (balancer, errors) = Balancer::with_rows((1..=n).map(|id| {
        DestinationRow::new(
            id,
            1,
            format!(
                "sip:10.{}.{}.{}:5060",
                id >> 16,
                (id >> 8) & 0xff,
                id & 0xff
            ),
            format!(
                "a={}; b={}; c={}",
                1000 + id % 13,
                2000 + id % 7,
                500 + id % 11
            ),
        )
    }));
    assert!(errors.is_empty());
    let all = request(3);
    let busy = (1..=n)
        .flat_map(|id| (0..id % 5).map(move |_| id))
        .map(|id| balancer.restore(id, &all).expect("destination exists"))
        .collect();
    (Arc::new(balancer), busy)
}

fn select_release(
    balancer: &Balancer,
    request: &ResourceRequest,
    flags: Flags,
    rng: &mut SplitMix64,
) {
    let outcome = balancer.select(1, request, flags, rng);
    black_box(outcome.selected().map(Allocation::release));
}

fn single_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("select_release");
    for n in [4u32, 100, 1000] {
        let (balancer, _busy) = setup(n);
        for resources in [1usize, 3] {
            let req = request(resources);
            let mut rng = SplitMix64::new(1);
            group.bench_with_input(
                BenchmarkId::new(format!("{resources}res"), n),
                &n,
                |b, _| b.iter(|| select_release(&balancer, &req, Flags::NONE, &mut rng)),
            );
        }
    }
    let (balancer, _busy) = setup(100);
    let req = request(1);
    for flags in ["r", "s", "rs"] {
        let parsed: Flags = flags.parse().expect("valid flags");
        let mut rng = SplitMix64::new(1);
        group.bench_with_input(
            BenchmarkId::new(format!("1res_flags_{flags}"), 100),
            &100,
            |b, _| b.iter(|| select_release(&balancer, &req, parsed, &mut rng)),
        );
    }
    group.finish();
}

fn contended(c: &mut Criterion) {
    let mut group = c.benchmark_group("select_release_contended");
    for n in [4u32, 100, 1000] {
        let (balancer, _busy) = setup(n);
        for resources in [1usize, 3] {
            let req = request(resources);
            let stop = Arc::new(AtomicBool::new(false));
            let contender = {
                let (balancer, req, stop) = (Arc::clone(&balancer), req.clone(), Arc::clone(&stop));
                thread::spawn(move || {
                    let mut rng = SplitMix64::new(2);
                    let mut done = 0u64;
                    while !stop.load(Ordering::Relaxed) && done < CONTENDER_MAX_ITERATIONS {
                        select_release(&balancer, &req, Flags::NONE, &mut rng);
                        done += 1;
                    }
                    done
                })
            };
            let mut rng = SplitMix64::new(1);
            group.bench_with_input(
                BenchmarkId::new(format!("{resources}res"), n),
                &n,
                |b, _| b.iter(|| select_release(&balancer, &req, Flags::NONE, &mut rng)),
            );
            stop.store(true, Ordering::Relaxed);
            let done = contender.join().unwrap_or(0);
            black_box(done);
        }
    }
    group.finish();
}

criterion_group!(benches, single_thread, contended);
criterion_main!(benches);
