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

    pub(crate) fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmits.pop_front()
    }

    pub(crate) fn poll_event(&mut self) -> Option<E> {
        self.events.pop_front()
    }
}
