//! What a transaction has produced and the caller has not yet polled.

use std::collections::VecDeque;

use bytes::Bytes;

#[derive(Debug)]
pub(crate) struct Outbox<E> {
    transmits: Datagrams,
    events: VecDeque<E>,
}

impl<E> Default for Outbox<E> {
    fn default() -> Self {
        Outbox {
            transmits: Datagrams::Empty,
            events: VecDeque::new(),
        }
    }
}

/// Datagrams to send, the first one held inline. Between two polls a transaction
/// nearly always has one datagram to send (its request, a response, an ACK), and a
/// `VecDeque` allocated for it was four allocations per call. An event is a whole
/// message, so the events' queue does not keep one inline: every transaction,
/// lingering ones included, would grow by its size.
#[derive(Debug)]
enum Datagrams {
    Empty,
    One(Bytes),
    Many(VecDeque<Bytes>),
}

impl<E> Outbox<E> {
    pub(crate) fn transmit(&mut self, bytes: Bytes) {
        self.transmits = match std::mem::replace(&mut self.transmits, Datagrams::Empty) {
            Datagrams::Empty => Datagrams::One(bytes),
            Datagrams::One(first) => Datagrams::Many(VecDeque::from([first, bytes])),
            Datagrams::Many(mut queue) => {
                queue.push_back(bytes);
                Datagrams::Many(queue)
            }
        };
    }

    pub(crate) fn event(&mut self, event: E) {
        self.events.push_back(event);
    }

    /// `settled`: the transaction has nothing left to do but wait for its last timer
    /// (up to 64*T1 away); a queue drained then gives its buffer back instead of
    /// holding it until the end. An event carries a whole message, so an INVITE's
    /// queue is a kilobyte per call.
    pub(crate) fn poll_transmit(&mut self, settled: bool) -> Option<Bytes> {
        match std::mem::replace(&mut self.transmits, Datagrams::Empty) {
            Datagrams::Empty => None,
            Datagrams::One(bytes) => Some(bytes),
            Datagrams::Many(mut queue) => {
                let next = queue.pop_front();
                if next.is_some() || !settled {
                    self.transmits = Datagrams::Many(queue);
                }
                next
            }
        }
    }

    /// As [`Outbox::poll_transmit`], for events.
    pub(crate) fn poll_event(&mut self, settled: bool) -> Option<E> {
        let next = self.events.pop_front();
        if next.is_none() && settled && self.events.capacity() > 0 {
            self.events = VecDeque::new();
        }
        next
    }

    /// Bytes the queues hold on to outside the transaction, empty or not.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        let transmits = match &self.transmits {
            Datagrams::Many(queue) => queue.capacity() * std::mem::size_of::<Bytes>(),
            Datagrams::Empty | Datagrams::One(_) => 0,
        };
        transmits + self.events.capacity() * std::mem::size_of::<E>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Datagrams come out in the order they went in, however many wait, and a
    /// settled transaction's drained queue gives its buffer back.
    #[test]
    fn datagrams_come_out_in_order_and_a_settled_queue_lets_go() {
        let mut outbox = Outbox::<()>::default();
        assert_eq!(outbox.poll_transmit(false), None);
        for run in [1usize, 2, 5, 1] {
            let sent: Vec<Bytes> = (0..run)
                .map(|i| Bytes::from(format!("{run}-{i}")))
                .collect();
            for b in &sent {
                outbox.transmit(b.clone());
            }
            let mut got = Vec::new();
            while let Some(b) = outbox.poll_transmit(false) {
                got.push(b);
            }
            assert_eq!(got, sent);
        }
        // The queue a run of several left stays for the next, until settled.
        assert!(outbox.buffered() > 0);
        assert_eq!(outbox.poll_transmit(true), None);
        assert_eq!(outbox.buffered(), 0);
        // One datagram alone takes no buffer.
        outbox.transmit(Bytes::from_static(b"one"));
        assert_eq!(outbox.buffered(), 0);
        assert_eq!(outbox.poll_transmit(true), Some(Bytes::from_static(b"one")));
    }
}
