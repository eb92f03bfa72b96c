//! RFC 3261 section 17 transactions as sans-I/O state machines.
//!
//! Nothing here opens a socket, reads the clock or sleeps. Every input carries the
//! current time as an [`Instant`](std::time::Instant), and the outputs are pulled, in
//! the style of quinn-proto:
//!
//! - `handle_*` methods feed a transaction a message, a timer expiry or a transport
//!   error;
//! - `poll_transmit` yields the bytes to send (the caller knows where: a client
//!   transaction sends to the next hop it was created for, a server transaction to the
//!   source of its request);
//! - `poll_timeout` gives the earliest deadline, at which the caller calls
//!   `handle_timeout`;
//! - `poll_event` yields what the transaction user (the proxy core) must know.
//!
//! [`ClientTransaction`] covers the INVITE (17.1.1) and non-INVITE (17.1.2) client
//! machines, [`ServerTransaction`] the INVITE (17.2.1) and non-INVITE (17.2.2) server
//! machines. [`ClientKey`] and [`ServerKey`] implement the matching rules of 17.1.3 and
//! 17.2.3. Keeping transactions by key, with their deadlines, is the proxy core's job:
//! it keeps them in one agenda with its calls' timers.
//!
//! # Deviations and choices
//!
//! - Both INVITE machines implement RFC 6026's Accepted state. A client transaction
//!   that passed a 2xx up stays for Timer M (64*T1, over any transport), passing up
//!   every further 2xx (retransmissions, other forks) as [`ClientEvent::Late2xx`], so
//!   the proxy decides about each instead of meeting them as strays.
//! - The INVITE server transaction does implement the RFC 6026 Accepted state: after
//!   a 2xx it stays for Timer L (64*T1), absorbing INVITE retransmissions (otherwise a
//!   late retransmission would look like a new call and be forwarded again) and
//!   sending every further 2xx the TU hands it.
//! - A proxy gives up on an INVITE long before Timer B: [`Timers::invite_timeout`]
//!   cuts the wait for a first response short, and [`Timers::proceeding_timeout`]
//!   (Timer C) bounds the wait for a final one after a provisional. Either produces
//!   [`ClientEvent::Timeout`] once, after which the transaction stops retransmitting
//!   but stays until 64*T1 has passed, so that a late provisional can still be
//!   cancelled and a late final still gets its ACK (RFC 3261 sections 9.1 and 16.8).
//! - Server transactions wait for the TU's final response as long as it takes: a
//!   proxy's own client transactions guarantee that it comes.

mod ack;
mod client;
mod error;
mod key;
mod outbox;
mod prehash;
mod server;
mod state;

mod timer_table;
mod timers;

#[cfg(test)]
mod test_messages;

pub use ack::hop_by_hop_ack;
pub use client::{ClientEvent, ClientTransaction};
pub use error::{InputError, KeyError};
pub use key::{ClientKey, ClientProbe, ServerKey, ServerProbe};
pub use prehash::prehash;
pub use server::{ServerEvent, ServerTransaction};
pub use state::State;

pub use timers::{Reliability, Timers};
