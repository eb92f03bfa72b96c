//! Property test: random tables and random sequences of operations give the same choices,
//! loads and statuses as a brute-force model over plain vectors, and every load returns to 0
//! once all calls are released.
//!
//! The model is deliberately naive: it rescans everything on every call, keeps loads in one
//! vector of counters (a reload reuses a counter's index where the crate reuses its `Arc`),
//! and measures relative availability as `(capacity - load) * 60 / capacity`, which is exact
//! because every capacity generated here (0 to 5) divides 60.

// Fixture helpers outside `#[test]` functions fail loudly, like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;

use proptest::prelude::*;
use siplb_balance::{
    Allocation, AttachError, Balancer, DestinationRow, FailoverDisable, Flags, Outcome,
    ResizeError, ResourceRequest, Session, SplitMix64,
};

/// `zz` is never offered, to exercise the unknown-resource outcome.
const NAMES: [&str; 4] = ["a", "b", "c", "zz"];
const CALLS: usize = 4;

#[derive(Clone, Debug)]
struct RowSpec {
    id: u32,
    group: u32,
    host: u8,
    port: u16,
    upper_scheme: bool,
    /// `None`: a resources column that does not parse.
    resources: Option<Vec<(usize, u32)>>,
}

impl RowSpec {
    fn uri(&self) -> String {
        let scheme = if self.upper_scheme { "SIP" } else { "sip" };
        match self.port {
            0 => format!("{scheme}:10.0.0.{}", self.host),
            port => format!("{scheme}:10.0.0.{}:{port}", self.host),
        }
    }

    fn row(&self) -> DestinationRow {
        let resources = match &self.resources {
            Some(list) => list
                .iter()
                .map(|&(n, cap)| format!("{}={cap}", NAMES[n]))
                .collect::<Vec<_>>()
                .join("; "),
            None => "a=1;a=2".into(),
        };
        DestinationRow::new(self.id, self.group, self.uri(), resources)
    }
}

#[derive(Clone, Debug)]
enum Op {
    Start {
        call: usize,
        group: u32,
        request: Vec<usize>,
        flags: Flags,
    },
    Next {
        call: usize,
    },
    End {
        call: usize,
    },
    Select {
        group: u32,
        request: Vec<usize>,
        flags: Flags,
    },
    DropLoose {
        index: usize,
    },
    Resize {
        id: u32,
        name: usize,
        capacity: u32,
    },
    FailoverDisable {
        id: u32,
        floor: usize,
    },
    Operator {
        id: u32,
        enabled: bool,
    },
    ProbeEnable {
        id: u32,
    },
    ProbeDisable {
        id: u32,
    },
    Reload {
        rows: Vec<RowSpec>,
    },
    Count {
        host: u8,
        port: u16,
        group: Option<u32>,
        request: Vec<usize>,
    },
    Restore {
        id: u32,
        request: Vec<usize>,
    },
}

fn resources() -> impl Strategy<Value = Vec<(usize, u32)>> {
    prop::sample::subsequence(vec![0usize, 1, 2], 1..=3)
        .prop_shuffle()
        .prop_flat_map(|names| {
            let n = names.len();
            (Just(names), prop::collection::vec(0u32..=5, n))
        })
        .prop_map(|(names, caps)| names.into_iter().zip(caps).collect())
}

fn row_spec() -> impl Strategy<Value = RowSpec> {
    (
        1u32..=8,
        1u32..=3,
        1u8..=3,
        prop::sample::select(vec![0u16, 5060, 5070]),
        any::<bool>(),
        prop_oneof![12 => resources().prop_map(Some), 1 => Just(None)],
    )
        .prop_map(|(id, group, host, port, upper_scheme, resources)| RowSpec {
            id,
            group,
            host,
            port,
            upper_scheme,
            resources,
        })
}

fn table() -> impl Strategy<Value = Vec<RowSpec>> {
    prop::collection::vec(row_spec(), 1..=8)
}

fn request() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        6 => prop::sample::subsequence(vec![0usize, 1, 2], 1..=3).prop_shuffle(),
        1 => prop::sample::subsequence(vec![0usize, 1, 2, 3], 1..=2).prop_shuffle(),
    ]
}

fn flags() -> impl Strategy<Value = Flags> {
    any::<(bool, bool, bool)>().prop_map(|(relative, allow_full, random_ties)| Flags {
        relative,
        allow_full,
        random_ties,
    })
}

fn op() -> impl Strategy<Value = Op> {
    let call = 0..CALLS;
    let id = 1u32..=9;
    prop_oneof![
        8 => (call.clone(), 1u32..=3, request(), flags())
            .prop_map(|(call, group, request, flags)| Op::Start { call, group, request, flags }),
        5 => call.clone().prop_map(|call| Op::Next { call }),
        4 => call.prop_map(|call| Op::End { call }),
        4 => (1u32..=3, request(), flags())
            .prop_map(|(group, request, flags)| Op::Select { group, request, flags }),
        3 => any::<usize>().prop_map(|index| Op::DropLoose { index }),
        2 => (id.clone(), 0usize..4, 0u32..=5)
            .prop_map(|(id, name, capacity)| Op::Resize { id, name, capacity }),
        2 => (id.clone(), 0usize..=2).prop_map(|(id, floor)| Op::FailoverDisable { id, floor }),
        2 => (id.clone(), any::<bool>()).prop_map(|(id, enabled)| Op::Operator { id, enabled }),
        1 => id.clone().prop_map(|id| Op::ProbeEnable { id }),
        1 => id.clone().prop_map(|id| Op::ProbeDisable { id }),
        2 => table().prop_map(|rows| Op::Reload { rows }),
        1 => (1u8..=4, prop::sample::select(vec![0u16, 5060, 5070]),
              prop::option::of(1u32..=3), request())
            .prop_map(|(host, port, group, request)| Op::Count { host, port, group, request }),
        1 => (id, request()).prop_map(|(id, request)| Op::Restore { id, request }),
    ]
}

// ---------------------------------------------------------------------------------------
// The model.

/// Per destination in table order: id, group, enabled, auto-reenable, (name, max, load).
type State = Vec<(u32, u32, bool, bool, Vec<(String, u32, i64)>)>;

#[derive(Clone, Debug)]
struct MRes {
    name: usize,
    capacity: u32,
    counter: usize,
}

#[derive(Clone, Debug)]
struct MDest {
    id: u32,
    group: u32,
    host: u8,
    port: u16,
    uri: String,
    resources: Vec<MRes>,
    enabled: bool,
    auto_reenable: bool,
}

#[derive(Debug)]
struct MAlloc {
    id: u32,
    counters: Vec<usize>,
}

#[derive(Default)]
struct Model {
    dests: Vec<MDest>,
    counters: Vec<i64>,
}

#[derive(Debug)]
struct MSession {
    group: u32,
    request: Vec<usize>,
    flags: Flags,
    tried: Vec<u32>,
    current: Option<MAlloc>,
}

/// What an operation returned, in a form both sides can produce.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Selected(u32),
    NoCapacity,
    NoDestination,
    UnknownResource,
    /// Never expected: the model's rows set no `max_cps` and get no overload feedback.
    RateLimited,
    Throttled,
    Changed(bool),
    Failover(FailoverDisable),
    Ok,
    NotFound,
    NoSuchResource,
    NoMatch,
    Missing(u32, String),
    Nothing,
}

fn pick(rng: &mut SplitMix64, n: usize) -> usize {
    (rng.next_u64() % n as u64) as usize
}

impl Model {
    fn load(&self, r: &MRes) -> i64 {
        self.counters[r.counter]
    }

    fn find(&mut self, id: u32) -> Option<&mut MDest> {
        self.dests.iter_mut().find(|d| d.id == id)
    }

    fn take(&mut self, d: usize, request: &[usize]) -> Result<MAlloc, Seen> {
        let dest = &self.dests[d];
        let mut counters = Vec::new();
        for &n in request {
            match dest.resources.iter().find(|r| r.name == n) {
                Some(r) => counters.push(r.counter),
                None => return Err(Seen::Missing(dest.id, NAMES[n].into())),
            }
        }
        for &c in &counters {
            self.counters[c] += 1;
        }
        Ok(MAlloc {
            id: dest.id,
            counters,
        })
    }

    fn release(&mut self, a: MAlloc) {
        for c in a.counters {
            self.counters[c] -= 1;
            assert!(self.counters[c] >= 0);
        }
    }

    fn availability(&self, d: &MDest, request: &[usize], relative: bool) -> Option<i64> {
        let mut all = Vec::new();
        for &n in request {
            let r = d.resources.iter().find(|r| r.name == n)?;
            let cap = i64::from(r.capacity);
            let free = cap - self.load(r);
            all.push(match (relative, cap) {
                (false, _) => free,
                (true, 0) => 0,
                (true, _) => free * 60 / cap,
            });
        }
        all.into_iter().min()
    }

    fn select(
        &mut self,
        group: u32,
        request: &[usize],
        flags: Flags,
        tried: &[u32],
        rng: &mut SplitMix64,
    ) -> (Seen, Option<MAlloc>) {
        let known = request.iter().all(|&n| {
            self.dests
                .iter()
                .any(|d| d.resources.iter().any(|r| r.name == n))
        });
        if !known {
            return (Seen::UnknownResource, None);
        }
        let candidates: Vec<(usize, i64)> = self
            .dests
            .iter()
            .enumerate()
            .filter(|(_, d)| d.group == group && d.enabled && !tried.contains(&d.id))
            .filter_map(|(i, d)| Some((i, self.availability(d, request, flags.relative)?)))
            .collect();
        if candidates.is_empty() {
            return (Seen::NoDestination, None);
        }
        let eligible: Vec<(usize, i64)> = candidates
            .into_iter()
            .filter(|&(_, av)| av > 0 || flags.allow_full)
            .collect();
        let Some(best) = eligible.iter().map(|&(_, av)| av).max() else {
            return (Seen::NoCapacity, None);
        };
        let ties: Vec<usize> = eligible
            .iter()
            .filter(|&&(_, av)| av == best)
            .map(|&(i, _)| i)
            .collect();
        let winner = if flags.random_ties && ties.len() > 1 {
            ties[pick(rng, ties.len())]
        } else {
            ties[0]
        };
        let Ok(a) = self.take(winner, request) else {
            unreachable!("candidates offer every resource")
        };
        (Seen::Selected(a.id), Some(a))
    }

    fn reload(&mut self, rows: &[RowSpec]) {
        let mut seen = Vec::new();
        let mut dests = Vec::new();
        // The table is kept in id order; of two rows with one id, the first given wins.
        let mut rows: Vec<&RowSpec> = rows.iter().collect();
        rows.sort_by_key(|r| r.id);
        for spec in rows {
            if seen.contains(&spec.id) {
                continue;
            }
            seen.push(spec.id);
            let Some(resources) = &spec.resources else {
                continue;
            };
            let uri = spec.uri();
            let old = self.dests.iter().find(|d| {
                d.id == spec.id && d.group == spec.group && d.uri.eq_ignore_ascii_case(&uri)
            });
            let resources = resources
                .iter()
                .map(|&(name, capacity)| {
                    let carried = old
                        .and_then(|o| o.resources.iter().find(|r| r.name == name))
                        .map(|r| r.counter);
                    let counter = carried.unwrap_or_else(|| {
                        self.counters.push(0);
                        self.counters.len() - 1
                    });
                    MRes {
                        name,
                        capacity,
                        counter,
                    }
                })
                .collect();
            dests.push(MDest {
                id: spec.id,
                group: spec.group,
                host: spec.host,
                port: spec.port,
                uri,
                resources,
                enabled: old.is_none_or(|o| o.enabled),
                auto_reenable: old.is_none_or(|o| o.auto_reenable),
            });
        }
        self.dests = dests;
    }

    fn state(&self) -> State {
        self.dests
            .iter()
            .map(|d| {
                (
                    d.id,
                    d.group,
                    d.enabled,
                    d.auto_reenable,
                    d.resources
                        .iter()
                        .map(|r| (NAMES[r.name].to_owned(), r.capacity, self.load(r)))
                        .collect(),
                )
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Driving both sides.

fn real_state(b: &Balancer) -> State {
    b.snapshot()
        .into_iter()
        .map(|d| {
            (
                d.id,
                d.group,
                d.enabled,
                d.auto_reenable,
                d.resources
                    .iter()
                    .map(|r| (r.name.to_string(), r.max, i64::from(r.load)))
                    .collect(),
            )
        })
        .collect()
}

fn real_request(names: &[usize]) -> ResourceRequest {
    let list: Vec<&str> = names.iter().map(|&n| NAMES[n]).collect();
    ResourceRequest::parse(&list.join(";")).unwrap()
}

fn seen<A>(outcome: &Outcome<A>, id: impl Fn(&A) -> u32) -> Seen {
    match outcome {
        Outcome::Selected(a) => Seen::Selected(id(a)),
        Outcome::NoCapacity => Seen::NoCapacity,
        Outcome::NoDestination => Seen::NoDestination,
        Outcome::UnknownResource => Seen::UnknownResource,
        Outcome::RateLimited => Seen::RateLimited,
        Outcome::Throttled => Seen::Throttled,
    }
}

fn attach_seen(result: &Result<Allocation, AttachError>) -> Seen {
    match result {
        Ok(a) => Seen::Selected(a.destination_id()),
        Err(AttachError::NoMatchingDestination) => Seen::NoMatch,
        Err(AttachError::DestinationNotFound(_)) => Seen::NotFound,
        Err(AttachError::MissingResource { id, resource }) => Seen::Missing(*id, resource.clone()),
    }
}

fn run(initial: Vec<RowSpec>, ops: Vec<Op>, seed: u64) -> Result<(), TestCaseError> {
    let real = Balancer::new();
    let mut model = Model::default();
    let rows: Vec<DestinationRow> = initial.iter().map(RowSpec::row).collect();
    let errors = real.reload(rows);
    model.reload(&initial);
    prop_assert_eq!(errors.len(), initial.len() - model.dests.len());

    let (mut real_rng, mut model_rng) = (SplitMix64::new(seed), SplitMix64::new(seed));
    let mut real_tie = |n: usize| pick(&mut real_rng, n);
    let mut sessions: Vec<Option<(Session, MSession)>> = (0..CALLS).map(|_| None).collect();
    let mut loose: Vec<(Allocation, MAlloc)> = Vec::new();

    for op in ops {
        let (got, want) = match op.clone() {
            Op::Start {
                call,
                group,
                request,
                flags,
            } => {
                if let Some((s, m)) = sessions[call].take() {
                    s.release();
                    if let Some(a) = m.current {
                        model.release(a);
                    }
                }
                let mut s = Session::new(group, real_request(&request), flags);
                let got = seen(&s.next(&real, &mut real_tie), |a| a.destination_id());
                let mut m = MSession {
                    group,
                    request,
                    flags,
                    tried: vec![],
                    current: None,
                };
                let (want, a) = model.select(group, &m.request, flags, &[], &mut model_rng);
                if let Some(a) = a {
                    m.tried.push(a.id);
                    m.current = Some(a);
                }
                sessions[call] = Some((s, m));
                (got, want)
            }
            Op::Next { call } => match &mut sessions[call] {
                None => (Seen::Nothing, Seen::Nothing),
                Some((s, m)) => {
                    let got = seen(&s.next(&real, &mut real_tie), |a| a.destination_id());
                    if let Some(a) = m.current.take() {
                        model.release(a);
                    }
                    let (want, a) =
                        model.select(m.group, &m.request, m.flags, &m.tried, &mut model_rng);
                    if let Some(a) = a {
                        m.tried.push(a.id);
                        m.current = Some(a);
                    }
                    prop_assert_eq!(s.tried(), &m.tried[..]);
                    (got, want)
                }
            },
            Op::End { call } => {
                if let Some((s, m)) = sessions[call].take() {
                    drop(s);
                    if let Some(a) = m.current {
                        model.release(a);
                    }
                }
                (Seen::Nothing, Seen::Nothing)
            }
            Op::Select {
                group,
                request,
                flags,
            } => {
                let outcome = real.select(group, &real_request(&request), flags, &mut real_tie);
                let got = seen(&outcome, Allocation::destination_id);
                let (want, a) = model.select(group, &request, flags, &[], &mut model_rng);
                if let (Outcome::Selected(r), Some(m)) = (outcome, a) {
                    loose.push((r, m));
                }
                (got, want)
            }
            Op::DropLoose { index } => {
                if !loose.is_empty() {
                    let (r, m) = loose.swap_remove(index % loose.len());
                    r.release();
                    model.release(m);
                }
                (Seen::Nothing, Seen::Nothing)
            }
            Op::Resize { id, name, capacity } => {
                let got = match real.resize(id, NAMES[name], capacity) {
                    Ok(()) => Seen::Ok,
                    Err(ResizeError::DestinationNotFound(_)) => Seen::NotFound,
                    Err(ResizeError::NoSuchResource { .. }) => Seen::NoSuchResource,
                };
                let want = match model.find(id) {
                    None => Seen::NotFound,
                    Some(d) => match d.resources.iter_mut().find(|r| r.name == name) {
                        None => Seen::NoSuchResource,
                        Some(r) => {
                            r.capacity = capacity;
                            Seen::Ok
                        }
                    },
                };
                (got, want)
            }
            Op::FailoverDisable { id, floor } => {
                let got = real
                    .disable_by_failover(id, floor)
                    .map_or(Seen::NotFound, Seen::Failover);
                let enabled_in = |group: u32, model: &Model| {
                    model
                        .dests
                        .iter()
                        .filter(|d| d.group == group && d.enabled)
                        .count()
                };
                let want = match model.dests.iter().position(|d| d.id == id) {
                    None => Seen::NotFound,
                    Some(i) if !model.dests[i].enabled => {
                        Seen::Failover(FailoverDisable::AlreadyDisabled)
                    }
                    Some(i) if floor > 0 && enabled_in(model.dests[i].group, &model) <= floor => {
                        Seen::Failover(FailoverDisable::KeptByFloor)
                    }
                    Some(i) => {
                        model.dests[i].enabled = false;
                        Seen::Failover(FailoverDisable::Disabled)
                    }
                };
                (got, want)
            }
            Op::Operator { id, enabled } => {
                let got = real
                    .set_status_by_operator(id, enabled)
                    .map_or(Seen::NotFound, Seen::Changed);
                let want = match model.find(id) {
                    None => Seen::NotFound,
                    Some(d) => {
                        let changed = (d.enabled, d.auto_reenable) != (enabled, enabled);
                        (d.enabled, d.auto_reenable) = (enabled, enabled);
                        Seen::Changed(changed)
                    }
                };
                (got, want)
            }
            Op::ProbeEnable { id } => {
                let got = real
                    .enable_by_probe(id)
                    .map_or(Seen::NotFound, Seen::Changed);
                let want = match model.find(id) {
                    None => Seen::NotFound,
                    Some(d) => {
                        let changed = !d.enabled && d.auto_reenable;
                        d.enabled |= changed;
                        Seen::Changed(changed)
                    }
                };
                (got, want)
            }
            Op::ProbeDisable { id } => {
                let got = real
                    .disable_by_probe(id)
                    .map_or(Seen::NotFound, Seen::Changed);
                let want = match model.find(id) {
                    None => Seen::NotFound,
                    Some(d) => {
                        let changed = d.enabled;
                        d.enabled = false;
                        Seen::Changed(changed)
                    }
                };
                (got, want)
            }
            Op::Reload { rows } => {
                let errors = real.reload(rows.iter().map(RowSpec::row));
                model.reload(&rows);
                prop_assert_eq!(errors.len(), rows.len() - model.dests.len());
                (Seen::Nothing, Seen::Nothing)
            }
            Op::Count {
                host,
                port,
                group,
                request,
            } => {
                let ip: IpAddr = format!("10.0.0.{host}").parse().unwrap();
                let result = real.count_call(ip, port, group, &real_request(&request));
                let got = attach_seen(&result);
                let matched = model.dests.iter().position(|d| {
                    group.is_none_or(|g| d.group == g)
                        && d.host == host
                        && (port == 0 || d.port == 0 || d.port == port)
                });
                let want = match matched {
                    None => Seen::NoMatch,
                    Some(i) => match model.take(i, &request) {
                        Ok(m) => {
                            if let Ok(r) = result {
                                loose.push((r, m));
                            }
                            Seen::Selected(model.dests[i].id)
                        }
                        Err(e) => e,
                    },
                };
                (got, want)
            }
            Op::Restore { id, request } => {
                let result = real.restore(id, &real_request(&request));
                let got = attach_seen(&result);
                let want = match model.dests.iter().position(|d| d.id == id) {
                    None => Seen::NotFound,
                    Some(i) => match model.take(i, &request) {
                        Ok(m) => {
                            if let Ok(r) = result {
                                loose.push((r, m));
                            }
                            Seen::Selected(id)
                        }
                        Err(e) => e,
                    },
                };
                (got, want)
            }
        };
        prop_assert_eq!(got, want, "after {:?}", op);
        prop_assert_eq!(real_state(&real), model.state(), "after {:?}", op);
    }

    for (s, m) in sessions.into_iter().flatten() {
        drop(s);
        if let Some(a) = m.current {
            model.release(a);
        }
    }
    for (r, m) in loose {
        r.release();
        model.release(m);
    }
    prop_assert!(model.counters.iter().all(|&c| c == 0));
    prop_assert!(
        real_state(&real)
            .iter()
            .all(|(.., resources)| resources.iter().all(|&(_, _, load)| load == 0))
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn matches_the_brute_force_model(
        initial in table(),
        ops in prop::collection::vec(op(), 1..60),
        seed in any::<u64>(),
    ) {
        run(initial, ops, seed)?;
    }
}
