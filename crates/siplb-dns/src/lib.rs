//! Resolution of siplb's host-named destinations (SPEC section 7).
//!
//! The balancer (`siplb-balance`) holds one cell per name the table uses; this crate keeps
//! them filled, off the call path: [`keep_resolved`] looks every name up as RFC 3263 says
//! ([`rfc3263`]: SRV after the URI's transport, targets in RFC 2782 order ([`srv`]), else
//! A/AAAA on the default port), again when the records expire, and publishes the addresses
//! in the order they are to be tried. A call never waits for it: a destination whose name
//! has no address yet is simply not a candidate.
//!
//! The lookups themselves go through [`Lookups`], which [`Hickory`] implements on hickory's
//! stub resolver (system configuration or `[dns] servers`); the order and the refresh logic
//! are tested on their own against a table of answers.

pub mod hickory;
pub mod refresh;
pub mod rfc3263;
pub mod srv;

pub use hickory::{Hickory, Servers};
pub use refresh::{Kick, Policy, keep_resolved};
pub use rfc3263::{LookupError, Lookups, Resolved};
