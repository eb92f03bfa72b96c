//! The core's transactions (from `siplb-txn`) by key, each with what it is for, its
//! one pending timer, and the peer it talks to.
//!
//! Draining a transaction moves its output to the send queue and its events to the
//! core's work queue; nothing here decides what an event means.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use siplb_sip::{Message, Method};
use siplb_txn::{
    ClientEvent, ClientProbe, ClientTransaction, KeyError, ServerEvent, ServerKey, ServerProbe,
    ServerTransaction, Timers,
};

use crate::addr::Peer;
use crate::agenda::{Agenda, Due, Slot};
use crate::id_table::IdTable;
use crate::own_overload::sender_announces;
use crate::proxy::{Transmit, Work};
use crate::slab::{Id, Slab};

/// What a client transaction is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClientRole {
    /// Attempt `n` of a call's INVITE.
    Attempt { call: Id, n: u16 },
    /// A CANCEL siplb sent; its response stays here.
    Cancel,
    /// A request relayed for a server transaction, whose responses go back there.
    Relay { server: Id },
    /// An OPTIONS probe of a destination.
    Probe(u32),
    /// A request of siplb's own (the BYE that ends a dialog): its response is only
    /// absorbed.
    Own,
}

#[derive(Debug)]
pub(crate) struct ServerCtx {
    pub(crate) tx: ServerTransaction,
    pub(crate) peer: Peer,
    /// The request, kept for relayed non-INVITE requests so that siplb can answer it
    /// itself when the next hop fails, until it is answered. Boxed, so that the
    /// transactions without it (most of them, and every one that lingers) do not
    /// keep its room.
    pub(crate) request: Option<Box<Message>>,
    /// The sender takes RFC 7339 overload feedback in the responses (its top Via
    /// said so).
    pub(crate) caller_oc: bool,
    /// The call an INVITE set up, which a CANCEL of it reaches while this
    /// transaction lasts (RFC 3261 9.2: after that, 481).
    pub(crate) call: Option<Id>,
    timer: Option<Slot>,
}

#[derive(Debug)]
pub(crate) struct ClientCtx {
    pub(crate) tx: ClientTransaction,
    pub(crate) peer: Peer,
    pub(crate) role: ClientRole,
    /// A CANCEL went for it (attempts), or its 2xx was already refused.
    pub(crate) cancel_sent: bool,
    pub(crate) refused: bool,
    timer: Option<Slot>,
}

#[derive(Debug, Default)]
pub(crate) struct Transactions {
    pub(crate) servers: Slab<ServerCtx>,
    /// The servers by their keys, which they hold.
    server_keys: IdTable,
    pub(crate) clients: Slab<ClientCtx>,
    client_keys: IdTable,
    /// The timers the latest transactions were made with, which the next ones share
    /// while they are the same.
    timers: Option<Arc<Timers>>,
}

/// What a client transaction sends.
pub(crate) enum Outgoing<'a> {
    /// A request siplb wrote whole (a CANCEL, its own BYE, a probe), parsed.
    Parsed(Message),
    /// A request siplb relays: the bytes its edits wrote (`Editor::finish`), its
    /// method, and the branch of siplb's Via on top.
    Relayed {
        bytes: Bytes,
        method: Method<'a>,
        branch: &'a str,
    },
}

impl Transactions {
    pub(crate) fn len(&self) -> usize {
        self.servers.len() + self.clients.len()
    }

    pub(crate) fn requests_held(&self) -> usize {
        let servers = self.servers.iter().filter(|(_, s)| s.request.is_some());
        let clients = self.clients.iter().filter(|(_, c)| c.tx.holds_request());
        servers.count() + clients.count()
    }

    /// The server transaction a request read as `probe` belongs to.
    pub(crate) fn server_id(&self, probe: &ServerProbe<'_>) -> Option<Id> {
        let servers = &self.servers;
        self.server_keys.find(probe.digest(), |id| {
            servers.get(id).is_some_and(|s| s.tx.key().matches(probe))
        })
    }

    /// The client transaction a response read as `probe` belongs to.
    pub(crate) fn client_id(&self, probe: &ClientProbe<'_>) -> Option<Id> {
        let clients = &self.clients;
        self.client_keys.find(probe.digest(), |id| {
            clients.get(id).is_some_and(|c| c.tx.key().matches(probe))
        })
    }

    /// A server transaction for a received request (not an ACK); nothing is sent yet.
    pub(crate) fn add_server(
        &mut self,
        key: ServerKey,
        request: &Message,
        peer: Peer,
        timers: Timers,
        keep_request: bool,
    ) -> Result<Id, KeyError> {
        let hash = key.digest();
        let servers = &self.servers;
        if let Some(id) = self.server_keys.find(hash, |id| {
            servers.get(id).is_some_and(|s| *s.tx.key() == key)
        }) {
            return Ok(id);
        }
        let timers = self.shared(timers);
        let tx = ServerTransaction::with_key(key, request, peer.reliability(), timers)?;
        let id = self.servers.insert(ServerCtx {
            tx,
            peer,
            request: keep_request.then(|| Box::new(request.clone())),
            caller_oc: sender_announces(request),
            call: None,
            timer: None,
        });
        let servers = &self.servers;
        self.server_keys
            .insert(hash, id, |i| server_hash(servers, i));
        Ok(id)
    }

    /// A client transaction for `request` (whose top Via is siplb's), queued for
    /// sending; drain it to send.
    pub(crate) fn add_client(
        &mut self,
        request: Outgoing<'_>,
        peer: Peer,
        role: ClientRole,
        timers: Timers,
        now: Instant,
    ) -> Result<Id, KeyError> {
        let timers = self.shared(timers);
        let reliability = peer.reliability();
        let tx = match request {
            Outgoing::Parsed(m) => ClientTransaction::new(m, reliability, timers, now),
            Outgoing::Relayed {
                bytes,
                method,
                branch,
            } => ClientTransaction::from_sent(bytes, method, branch, reliability, timers, now),
        }?;
        Ok(self.insert_client(tx, peer, role))
    }

    fn insert_client(&mut self, tx: ClientTransaction, peer: Peer, role: ClientRole) -> Id {
        let hash = tx.key().digest();
        let clients = &self.clients;
        let old = self.client_keys.find(hash, |id| {
            clients.get(id).is_some_and(|c| c.tx.key() == tx.key())
        });
        if let Some(old) = old {
            // Branches are random: two alike mean a bug, not a peer's doing.
            tracing::error!("client transaction key reused");
            self.client_keys.remove(hash, old);
            self.clients.remove(old);
        }
        let id = self.clients.insert(ClientCtx {
            tx,
            peer,
            role,
            cancel_sent: false,
            refused: false,
            timer: None,
        });
        let clients = &self.clients;
        self.client_keys
            .insert(hash, id, |i| client_hash(clients, i));
        id
    }

    /// `timers` to share: those of the last transaction made when they are the same
    /// (they change only with the settings, and for probes).
    fn shared(&mut self, timers: Timers) -> Arc<Timers> {
        match &self.timers {
            Some(shared) if **shared == timers => Arc::clone(shared),
            _ => Arc::clone(self.timers.insert(Arc::new(timers))),
        }
    }

    /// Moves a server transaction's output on; removes it once terminated.
    pub(crate) fn drain_server(
        &mut self,
        id: Id,
        agenda: &mut Agenda,
        out: &mut std::collections::VecDeque<Transmit>,
        work: &mut std::collections::VecDeque<Work>,
    ) {
        let Some(ctx) = self.servers.get_mut(id) else {
            return;
        };
        let peer = ctx.peer;
        while let Some(data) = ctx.tx.poll_transmit() {
            out.push_back(Transmit { peer, data });
        }
        while let Some(event) = ctx.tx.poll_event() {
            match event {
                ServerEvent::Ack(ack) => work.push_back(Work::Ack { peer, ack }),
                ServerEvent::TryingDue => work.push_back(Work::Trying { server: id }),
                _ => {}
            }
        }
        match ctx.tx.poll_timeout() {
            Some(at) if ctx.tx.lingering() => agenda.rearm_lax(&mut ctx.timer, at, Due::Server(id)),
            at => agenda.rearm(&mut ctx.timer, at, Due::Server(id)),
        }
        if ctx.tx.is_terminated() {
            if let Some(slot) = ctx.timer.take() {
                agenda.cancel(slot);
            }
            if let Some(ended) = self.servers.remove(id) {
                self.server_keys.remove(ended.tx.key().digest(), id);
            }
        }
    }

    /// Moves a client transaction's output on and its events to the work queue;
    /// removes it once terminated.
    pub(crate) fn drain_client(
        &mut self,
        id: Id,
        agenda: &mut Agenda,
        out: &mut std::collections::VecDeque<Transmit>,
        work: &mut std::collections::VecDeque<Work>,
    ) {
        let Some(ctx) = self.clients.get_mut(id) else {
            return;
        };
        let peer = ctx.peer;
        while let Some(data) = ctx.tx.poll_transmit() {
            out.push_back(Transmit { peer, data });
        }
        while let Some(event) = ctx.tx.poll_event() {
            if !matches!(event, ClientEvent::Absorbed | ClientEvent::Terminated) {
                work.push_back(Work::Client {
                    id,
                    peer,
                    role: ctx.role,
                    event,
                });
            }
        }
        match ctx.tx.poll_timeout() {
            Some(at) if ctx.tx.lingering() => agenda.rearm_lax(&mut ctx.timer, at, Due::Client(id)),
            at => agenda.rearm(&mut ctx.timer, at, Due::Client(id)),
        }
        if ctx.tx.is_terminated() {
            if let Some(slot) = ctx.timer.take() {
                agenda.cancel(slot);
            }
            if let Some(ended) = self.clients.remove(id) {
                self.client_keys.remove(ended.tx.key().digest(), id);
            }
        }
    }

    /// A timer of this transaction fired (its agenda entry is gone).
    pub(crate) fn server_timer_fired(&mut self, id: Id, now: Instant) {
        if let Some(ctx) = self.servers.get_mut(id) {
            ctx.timer = None;
            ctx.tx.handle_timeout(now);
        }
    }

    pub(crate) fn client_timer_fired(&mut self, id: Id, now: Instant) {
        if let Some(ctx) = self.clients.get_mut(id) {
            ctx.timer = None;
            ctx.tx.handle_timeout(now);
        }
    }

    /// Probe transactions alive, and how many of them have a timer pending: the
    /// periodic work that is never "over".
    pub(crate) fn probes(&self) -> (usize, usize) {
        self.clients
            .iter()
            .filter(|(_, c)| matches!(c.role, ClientRole::Probe(_)))
            .fold((0, 0), |(n, t), (_, c)| {
                (n + 1, t + usize::from(c.timer.is_some()))
            })
    }

    /// No forwarded request still waits for its final response.
    pub(crate) fn none_waiting(&self) -> bool {
        self.clients.iter().all(|(_, c)| {
            // A request that timed out has had its answer (a local 408) already.
            c.tx.timed_out()
                || !matches!(
                    c.tx.state(),
                    siplb_txn::State::Calling
                        | siplb_txn::State::Trying
                        | siplb_txn::State::Proceeding
                )
        })
    }

    pub(crate) fn shrink(&mut self) {
        self.servers.shrink();
        self.clients.shrink();
        let (servers, clients) = (&self.servers, &self.clients);
        self.server_keys.shrink(|i| server_hash(servers, i));
        self.client_keys.shrink(|i| client_hash(clients, i));
    }
}

fn server_hash(servers: &Slab<ServerCtx>, id: Id) -> u64 {
    servers.get(id).map_or(0, |s| s.tx.key().digest())
}

fn client_hash(clients: &Slab<ClientCtx>, id: Id) -> u64 {
    clients.get(id).map_or(0, |c| c.tx.key().digest())
}

/// Gives back the room a burst left in a hash map (`slab::shrunk_room`).
pub(crate) fn shrink_map<K, V, S>(map: &mut HashMap<K, V, S>)
where
    K: std::hash::Hash + Eq,
    S: std::hash::BuildHasher,
{
    if let Some(room) = crate::slab::shrunk_room(map.len(), map.capacity()) {
        map.shrink_to(room);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use siplb_txn::Timers;

    use super::Transactions;

    /// Transactions made with the same timers share one copy; other timers (a
    /// probe's, new settings) get theirs, which the next ones share in turn.
    #[test]
    fn transactions_share_their_timers_while_they_are_the_same() {
        let mut txns = Transactions::default();
        let settings = Timers::default();
        let first = txns.shared(settings);
        assert!(Arc::ptr_eq(&first, &txns.shared(settings)));
        let probe = Timers {
            non_invite_timeout: Duration::from_secs(2),
            ..settings
        };
        let probing = txns.shared(probe);
        assert!(!Arc::ptr_eq(&first, &probing));
        assert_eq!(*probing, probe);
        assert!(Arc::ptr_eq(&probing, &txns.shared(probe)));
        assert_eq!(*txns.shared(settings), settings);
    }
}
