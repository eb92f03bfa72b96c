//! Calls seen from outside the SIP traffic: restored after a restart, listed and
//! ended by the operator, stored for the next restart.

use std::time::{Duration, Instant};

use siplb_balance::ResourceRequest;
use tracing::info;

use crate::addr::Peer;
use crate::agenda::{CallTimer, Due};
use crate::call::{Call, CallerSide, Dialog, Dialogs, Input, Load, Pair, Phase};
use crate::keys::CallKey;
use crate::persist::{DialogChange, PersistedCall, RestoreError};
use crate::proxy::Proxy;
use crate::slab::Id;

/// One call as the management interface lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallSummary {
    pub call_id: String,
    /// The destination whose load the call holds (none for a plain relay).
    pub destination: Option<u32>,
    pub uri: Option<String>,
    pub resources: Vec<String>,
    /// Where the call's INVITE went (the address that answered, once answered): for a
    /// destination named by host, which of its addresses.
    pub peer: Peer,
    /// `early` until answered, then `confirmed`.
    pub state: &'static str,
    pub age: Duration,
}

impl Proxy {
    /// The calls being set up or up, for `lb_calls`.
    pub fn call_summaries(&self, now: Instant) -> Vec<CallSummary> {
        self.calls
            .iter()
            .map(|(_, call)| {
                let allocation = call.load.allocation();
                CallSummary {
                    call_id: call.key.call_id().to_owned(),
                    destination: allocation.map(|a| a.destination_id()),
                    uri: allocation.map(|a| a.uri().to_owned()),
                    resources: allocation
                        .map(|a| a.resources().map(str::to_owned).collect())
                        .unwrap_or_default(),
                    peer: match &call.phase {
                        Phase::Attempting { attempt, .. } => attempt.target.peer,
                        Phase::Answered { callee, .. } => *callee,
                    },
                    state: if call.is_answered() {
                        "confirmed"
                    } else {
                        "early"
                    },
                    age: now.saturating_duration_since(call.started),
                }
            })
            .collect()
    }

    /// Ends every call with this Call-ID (`lb_end_call`): a call being set up is
    /// cancelled and its caller answered `487`; a call that is up gets a BYE on both
    /// sides. The load goes back at once. Returns how many.
    pub fn end_calls_with_id(&mut self, now: Instant, call_id: &str) -> usize {
        let ids: Vec<Id> = self
            .calls
            .iter()
            .filter(|(_, c)| c.key.call_id() == call_id)
            .map(|(id, _)| id)
            .collect();
        for &id in &ids {
            info!(call_id, "call ended by the operator, load released");
            self.call_input(now, id, Input::Operator);
        }
        self.drive(now);
        ids.len()
    }

    /// Stores an answered call once it has lasted `store_after`, or at once while
    /// draining. Most calls of a busy system are short: waiting spares them both the
    /// row and its deletion (about a tenth of a call's instructions in
    /// docs/BENCHMARKS.md's benchmark), and a call younger than that is little to
    /// lose in a crash.
    pub(crate) fn store_later(&mut self, now: Instant, id: Id) {
        if !self.settings.persist_dialogs {
            return;
        }
        if self.draining {
            return self.persist_call(now, id);
        }
        // With `store_after` zero the entry is due at once and this stores it.
        self.unstored
            .push_back((now + self.settings.store_after, id));
        if self.unstored.len() == 1 {
            self.store_due(Some(now));
        }
    }

    /// Stores the waiting calls that have lasted long enough by `now` (all of them
    /// when none), and sets the agenda for the next. That entry goes on the lingers'
    /// grid: storing a call may come a little late, and then shares a wake-up.
    pub(crate) fn store_due(&mut self, now: Option<Instant>) {
        while let Some(&(at, id)) = self.unstored.front() {
            if now.is_some_and(|now| at > now) {
                self.agenda
                    .rearm_lax(&mut self.store_sweep, at, Due::StoreSweep);
                return;
            }
            self.unstored.pop_front();
            // A call that ended meanwhile is gone from the slab (its id's generation
            // no longer matches): nothing to store, nor to delete later.
            self.persist_call(now.unwrap_or(self.clock), id);
        }
        if let Some(slot) = self.store_sweep.take() {
            self.agenda.cancel(slot);
        }
    }

    /// Stores an answered call that holds load, so a restart can restore it.
    pub(crate) fn persist_call(&mut self, now: Instant, id: Id) {
        if !self.settings.persist_dialogs {
            return;
        }
        let Some(call) = self.calls.get_mut(id).filter(|c| !c.persisted) else {
            return;
        };
        let (
            Some(allocation),
            Phase::Answered {
                callee, dialogs, ..
            },
        ) = (call.load.allocation(), &call.phase)
        else {
            return;
        };
        let record = PersistedCall {
            call_id: call.key.call_id().to_owned(),
            caller_tag: call.key.caller_tag().to_owned(),
            callee_tag: dialogs.first_tag().map(str::to_owned),
            destination_id: allocation.destination_id(),
            resources: allocation.resources().collect::<Vec<_>>().join(";"),
            caller: call.caller.peer,
            callee: *callee,
            age: now.saturating_duration_since(call.started),
            expires_in: self
                .expiries
                .get(id)
                .map_or(self.settings.dialog_timeout, |t| {
                    t.saturating_duration_since(now)
                }),
        };
        call.persisted = true;
        self.dialog_event(DialogChange::Upsert(record));
    }

    /// Brings back calls stored elsewhere (a cluster's store, after a restart or from
    /// a dead node), each as [`Proxy::restore_call`]; how many came back. A call that
    /// cannot be restored is logged and skipped.
    pub fn restore_calls(&mut self, now: Instant, calls: Vec<PersistedCall>) -> usize {
        let mut restored = 0;
        for call in calls {
            let call_id = call.call_id.clone();
            match self.restore_call(now, call) {
                Ok(()) => restored += 1,
                Err(error) => tracing::warn!(call_id, %error, "stored call not restored"),
            }
        }
        restored
    }

    /// Brings back a call stored before a restart: its load is taken again on its
    /// destination (whatever the capacity), and its in-dialog requests are routed as
    /// before. Fails when the destination or a resource is gone from the table.
    pub fn restore_call(
        &mut self,
        now: Instant,
        stored: PersistedCall,
    ) -> Result<(), RestoreError> {
        let request = ResourceRequest::parse(&stored.resources).map_err(RestoreError::Resources)?;
        let allocation = self
            .balancer
            .restore(stored.destination_id, &request)
            .map_err(RestoreError::Table)?;
        let expires = now + stored.expires_in;
        let mut dialogs = Dialogs::default();
        dialogs.add(Dialog::restored(stored.callee_tag.as_deref()));
        let call = Call {
            key: CallKey::new(&stored.call_id, &stored.caller_tag),
            caller: CallerSide {
                peer: stored.caller,
                from_and_target: Pair::default(),
                route: Box::default(),
                cseq: 1,
                callee_cseq: 0,
            },
            server: None,
            invite: None,
            own_routes: 0,
            load: Load::Held(allocation),
            phase: Phase::Answered {
                callee: stored.callee,
                attempt: u16::MAX,
                dialogs,
            },
            started: now.checked_sub(stored.age).unwrap_or(now),
            setup_seen: true,
            timers: [None; CallTimer::SLOTS],
            persisted: true,
        };
        // The same call restored again (from the cluster's store, say) replaces the
        // one here, whose load goes back as it is dropped.
        if let Some(old) = self
            .call_index
            .find(&self.calls, &stored.call_id, &stored.caller_tag)
            && let Some(old_call) = self.remove_call(old)
        {
            for slot in old_call.timers.iter().flatten() {
                self.agenda.cancel(*slot);
            }
        }
        let id = self.calls.insert(call);
        self.call_index.insert(&self.calls, id);
        self.set_expiry(id, expires);
        Ok(())
    }
}
