//! Transactions by key, with one queue of deadlines for all of them.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use siplb_sip::Message;

use crate::client::ClientTransaction;
use crate::key::{ClientKey, ServerKey};
use crate::server::ServerTransaction;

/// Either kind of key, as reported by [`TransactionTable::handle_timeout`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TxKey {
    Client(ClientKey),
    Server(ServerKey),
}

/// A transaction with this key is already in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a transaction with this key already exists")]
pub struct DuplicateKey;

#[derive(Debug)]
struct Slot<T> {
    tx: T,
    /// The deadline last queued for this transaction.
    armed: Option<Instant>,
}

/// Client and server transactions by key.
///
/// Deadlines live in one heap, so finding the next one does not scan the table.
/// Entries are never removed from the heap early: an entry is stale when its deadline
/// is no longer the one armed for its transaction, and is skipped when it surfaces.
/// Access through `*_mut` may move a deadline, so those keys are re-armed before the
/// heap is next read.
///
/// Terminated transactions stay until removed (so their last events can be
/// polled) but match nothing: a message for them is the caller's to handle, which is
/// how late 2xx responses get forwarded.
#[derive(Debug, Default)]
pub struct TransactionTable {
    clients: HashMap<ClientKey, Slot<ClientTransaction>>,
    servers: HashMap<ServerKey, Slot<ServerTransaction>>,
    deadlines: BinaryHeap<Reverse<(Instant, TxKey)>>,
    touched: Vec<TxKey>,
}

impl TransactionTable {
    pub fn new() -> TransactionTable {
        TransactionTable::default()
    }

    pub fn len(&self) -> usize {
        self.clients.len() + self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn insert_client(&mut self, tx: ClientTransaction) -> Result<(), DuplicateKey> {
        let key = tx.key().clone();
        if self.clients.contains_key(&key) {
            return Err(DuplicateKey);
        }
        self.clients.insert(key.clone(), Slot { tx, armed: None });
        self.touched.push(TxKey::Client(key));
        Ok(())
    }

    pub fn insert_server(&mut self, tx: ServerTransaction) -> Result<(), DuplicateKey> {
        let key = tx.key().clone();
        if self.servers.contains_key(&key) {
            return Err(DuplicateKey);
        }
        self.servers.insert(key.clone(), Slot { tx, armed: None });
        self.touched.push(TxKey::Server(key));
        Ok(())
    }

    pub fn client(&self, key: &ClientKey) -> Option<&ClientTransaction> {
        self.clients.get(key).map(|s| &s.tx)
    }

    pub fn server(&self, key: &ServerKey) -> Option<&ServerTransaction> {
        self.servers.get(key).map(|s| &s.tx)
    }

    pub fn client_mut(&mut self, key: &ClientKey) -> Option<&mut ClientTransaction> {
        let slot = self.clients.get_mut(key)?;
        self.touched.push(TxKey::Client(key.clone()));
        Some(&mut slot.tx)
    }

    pub fn server_mut(&mut self, key: &ServerKey) -> Option<&mut ServerTransaction> {
        let slot = self.servers.get_mut(key)?;
        self.touched.push(TxKey::Server(key.clone()));
        Some(&mut slot.tx)
    }

    pub fn remove_client(&mut self, key: &ClientKey) -> Option<ClientTransaction> {
        self.clients.remove(key).map(|s| s.tx)
    }

    pub fn remove_server(&mut self, key: &ServerKey) -> Option<ServerTransaction> {
        self.servers.remove(key).map(|s| s.tx)
    }

    /// The live client transaction a response belongs to.
    pub fn match_response(&self, response: &Message) -> Option<ClientKey> {
        let key = ClientKey::from_response(response).ok()?;
        let slot = self.clients.get(&key)?;
        (!slot.tx.is_terminated()).then_some(key)
    }

    /// The live server transaction a request belongs to: a retransmission, or an
    /// ACK for an INVITE's non-2xx final.
    pub fn match_request(&self, request: &Message) -> Option<ServerKey> {
        let key = ServerKey::from_request(request).ok()?;
        self.live_server(key)
    }

    /// The live INVITE server transaction a CANCEL request cancels.
    pub fn match_cancelled_invite(&self, cancel: &Message) -> Option<ServerKey> {
        let key = ServerKey::invite_for_cancel(cancel).ok()?;
        self.live_server(key)
    }

    fn live_server(&self, key: ServerKey) -> Option<ServerKey> {
        let slot = self.servers.get(&key)?;
        (!slot.tx.is_terminated()).then_some(key)
    }

    /// Fires every transaction timer due at `now` and returns the keys of the
    /// transactions that fired, whose outputs the caller then polls.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<TxKey> {
        self.rearm();
        let mut fired = Vec::new();
        while let Some(Reverse((at, _))) = self.deadlines.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, key))) = self.deadlines.pop() else {
                break;
            };
            if self.armed(&key) != Some(at) {
                continue;
            }
            match &key {
                TxKey::Client(k) => {
                    if let Some(slot) = self.clients.get_mut(k) {
                        slot.tx.handle_timeout(now);
                    }
                }
                TxKey::Server(k) => {
                    if let Some(slot) = self.servers.get_mut(k) {
                        slot.tx.handle_timeout(now);
                    }
                }
            }
            self.rearm_one(&key);
            fired.push(key);
        }
        fired
    }

    /// The earliest deadline of any transaction.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.rearm();
        while let Some(Reverse((at, key))) = self.deadlines.peek() {
            if self.armed(key) == Some(*at) {
                return Some(*at);
            }
            self.deadlines.pop();
        }
        None
    }

    fn armed(&self, key: &TxKey) -> Option<Instant> {
        match key {
            TxKey::Client(k) => self.clients.get(k).and_then(|s| s.armed),
            TxKey::Server(k) => self.servers.get(k).and_then(|s| s.armed),
        }
    }

    fn rearm(&mut self) {
        let touched = std::mem::take(&mut self.touched);
        for key in &touched {
            self.rearm_one(key);
        }
        // Keeps the buffer's capacity for the next round.
        self.touched = touched;
        self.touched.clear();
    }

    /// Queues the transaction's current deadline if it moved.
    fn rearm_one(&mut self, key: &TxKey) {
        let (next, armed) = match key {
            TxKey::Client(k) => match self.clients.get_mut(k) {
                Some(s) => (s.tx.poll_timeout(), &mut s.armed),
                None => return,
            },
            TxKey::Server(k) => match self.servers.get_mut(k) {
                Some(s) => (s.tx.poll_timeout(), &mut s.armed),
                None => return,
            },
        };
        if next != *armed {
            *armed = next;
            if let Some(at) = next {
                self.deadlines.push(Reverse((at, key.clone())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::client::ClientEvent;
    use crate::server::ServerEvent;
    use crate::test_messages::{LB_VIA, invite, request_with, response};
    use crate::timers::{Reliability, Timers};

    #[test]
    fn routes_messages_and_timers_by_key() {
        let t0 = Instant::now();
        let timers = Timers::default();
        let mut table = TransactionTable::new();

        let inv = invite();
        let client =
            ClientTransaction::new(inv.clone(), Reliability::Unreliable, timers, t0).unwrap();
        let ckey = client.key().clone();
        table.insert_client(client).unwrap();
        let dup = ClientTransaction::new(inv.clone(), Reliability::Unreliable, timers, t0).unwrap();
        assert_eq!(table.insert_client(dup), Err(DuplicateKey));

        let upstream = request_with(
            "INVITE",
            "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
            "",
        );
        let server = ServerTransaction::new(&upstream, Reliability::Unreliable, timers).unwrap();
        let skey = server.key().clone();
        table.insert_server(server).unwrap();
        assert_eq!(table.len(), 2);

        // Timer A of the client is the first deadline.
        assert_eq!(table.poll_timeout(), Some(t0 + timers.t1));
        assert_eq!(table.handle_timeout(t0), vec![]);
        let fired = table.handle_timeout(t0 + timers.t1);
        assert_eq!(fired, vec![TxKey::Client(ckey.clone())]);
        let tx = table.client_mut(&ckey).unwrap();
        assert!(tx.poll_transmit().is_some()); // the original send
        assert!(tx.poll_transmit().is_some()); // the retransmission
        assert_eq!(table.poll_timeout(), Some(t0 + timers.t1 * 3));

        // A provisional moves the deadline to Timer C; the table notices.
        assert_eq!(
            table.match_response(&response(&inv, 180)),
            Some(ckey.clone())
        );
        let tx = table.client_mut(&ckey).unwrap();
        tx.handle_response(response(&inv, 180), t0 + timers.t1)
            .unwrap();
        assert_eq!(
            table.poll_timeout(),
            Some(t0 + timers.t1 + timers.proceeding_timeout)
        );

        // Requests and CANCEL find the server transaction.
        assert_eq!(table.match_request(&upstream), Some(skey.clone()));
        let cancel = request_with(
            "CANCEL",
            "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
            "",
        );
        assert_eq!(table.match_request(&cancel), None);
        assert_eq!(table.match_cancelled_invite(&cancel), Some(skey.clone()));
        assert_eq!(table.match_cancelled_invite(&upstream), None);

        // A server answering with a non-2xx arms Timer G through server_mut.
        let now = t0 + Duration::from_secs(1);
        table
            .server_mut(&skey)
            .unwrap()
            .send_response(response(&upstream, 486).to_bytes(), now)
            .unwrap();
        assert_eq!(table.poll_timeout(), Some(now + timers.t1));

        // The 2xx terminates the client; terminated transactions match nothing.
        let tx = table.client_mut(&ckey).unwrap();
        tx.handle_response(response(&inv, 200), now).unwrap();
        assert!(tx.is_terminated());
        assert_eq!(table.match_response(&response(&inv, 200)), None);
        assert!(table.remove_client(&ckey).is_some());

        // ACK confirms the server, Timer I ends it.
        let ack = request_with(
            "ACK",
            "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
            ";tag=bob1",
        );
        assert_eq!(table.match_request(&ack), Some(skey.clone()));
        table
            .server_mut(&skey)
            .unwrap()
            .handle_request(ack, now)
            .unwrap();
        assert_eq!(table.poll_timeout(), Some(now + timers.t4));
        let fired = table.handle_timeout(now + timers.t4);
        assert_eq!(fired, vec![TxKey::Server(skey.clone())]);
        let tx = table.server_mut(&skey).unwrap();
        let mut terminated = false;
        while let Some(e) = tx.poll_event() {
            terminated |= matches!(e, ServerEvent::Terminated);
        }
        assert!(terminated);
        assert_eq!(table.poll_timeout(), None);
        assert!(table.remove_server(&skey).is_some());
        assert!(table.is_empty());
    }

    #[test]
    fn transactions_can_move_between_threads() {
        fn sendable<T: Send + Sync>() {}
        sendable::<TransactionTable>();
        sendable::<ClientTransaction>();
        sendable::<ServerTransaction>();
    }

    #[test]
    fn many_transactions_fire_in_deadline_order() {
        let t0 = Instant::now();
        let timers = Timers::default();
        let mut table = TransactionTable::new();
        let mut keys = Vec::new();
        for i in 0..5u64 {
            let via = format!("{LB_VIA}{i}");
            let req = request_with("OPTIONS", &via, "");
            let start = t0 + Duration::from_millis(100 * i);
            let tx = ClientTransaction::new(req, Reliability::Reliable, timers, start).unwrap();
            keys.push(tx.key().clone());
            table.insert_client(tx).unwrap();
        }
        let mut now = t0;
        let mut order = Vec::new();
        while let Some(at) = table.poll_timeout() {
            now = at;
            for key in table.handle_timeout(now) {
                let TxKey::Client(k) = key else { continue };
                let tx = table.client_mut(&k).unwrap();
                while let Some(e) = tx.poll_event() {
                    if matches!(e, ClientEvent::Timeout) {
                        order.push(k.clone());
                    }
                }
            }
        }
        assert_eq!(order, keys);
        assert_eq!(
            now,
            t0 + Duration::from_millis(400) + timers.non_invite_timeout
        );
    }
}
