//! What a transaction has produced and the caller has not yet polled.

use std::collections::VecDeque;

use bytes::Bytes;

#[derive(Debug)]
pub(crate) struct Outbox<E> {
    transmits: VecDeque<Bytes>,
    events: VecDeque<E>,
}

impl<E> Default for Outbox<E> {
    fn default() -> Self {
        Outbox {
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }
}

impl<E> Outbox<E> {
    pub(crate) fn transmit(&mut self, bytes: Bytes) {
        self.transmits.push_back(bytes);
    }

    pub(crate) fn event(&mut self, event: E) {
        self.events.push_back(event);
    }

    /// `settled`: the transaction has nothing left to do but wait for its last timer
    /// (up to 64*T1 away); a queue drained then gives its buffer back instead of
    /// holding it until the end. An event carries a whole message, so an INVITE's
    /// queue is a kilobyte per call.
    pub(crate) fn poll_transmit(&mut self, settled: bool) -> Option<Bytes> {
        let next = self.transmits.pop_front();
        if next.is_none() && settled && self.transmits.capacity() > 0 {
            self.transmits = VecDeque::new();
        }
        next
    }

    /// As [`Outbox::poll_transmit`], for events.
    pub(crate) fn poll_event(&mut self, settled: bool) -> Option<E> {
        let next = self.events.pop_front();
        if next.is_none() && settled && self.events.capacity() > 0 {
            self.events = VecDeque::new();
        }
        next
    }

    /// Bytes the queues hold on to, empty or not.
    #[cfg(test)]
    pub(crate) fn buffered(&self) -> usize {
        self.transmits.capacity() * std::mem::size_of::<Bytes>()
            + self.events.capacity() * std::mem::size_of::<E>()
    }
}
