//! One call's life, as a state machine whose transitions are the only place its load
//! is taken, moved or released.
//!
//! ```text
//!            INVITE accepted, a destination chosen (load taken)
//!                          |
//!                          v
//!   +-----------> Attempting { attempt n } ----------------------------+
//!   | failover:     |   |   |  \                                        |
//!   | 5xx/6xx,      |   |   |   CANCEL, early BYE: ending set,          |
//!   | timeout,      |   |   |   CANCEL the attempt once it rang         |
//!   | transport     |   |   |                                           |
//!   | (load moved)  |   |   +-- non-2xx final, none left, message the    |
//!   +---------------+   |       caller sent cannot be forwarded,        |
//!                       |       operator: final to the caller --------> Ended
//!                   2xx |                                               (load
//!                       v                                              released)
//!        Answered { dialogs: forks of the 2xx, ACKed or not } ---------> ^
//!             BYE of the last dialog, no ACK in 64*T1, dialog timeout,  |
//!             operator -------------------------------------------------+
//! ```
//!
//! A call never acts by itself: [`Call::handle`] and [`Call::route_in_dialog`] change
//! its state and push [`Effect`]s, which the proxy carries out afterwards (forward,
//! cancel, reply, end a dialog, blame a destination...). Whatever ends a call first
//! (a final, CANCEL, an early BYE, the operator, a timeout), its INVITE gets exactly
//! one final response, and a 2xx that comes for an attempt that is over is
//! acknowledged and ended by the proxy rather than relayed (see `responses.rs`).

mod attempt;
mod balancing;
mod dialogs;
mod pair;

use std::time::Instant;

use siplb_balance::{Allocation, Balancer};
use siplb_sip::Message;

use crate::addr::{Listeners, LiteralPeers, Peer};
use crate::agenda::{CallTimer, Slot};
use crate::failures::Fault;
use crate::keys::CallKey;
use crate::settings::Settings;
use crate::slab::Id;
use crate::stats::Stats;
use crate::tokens::Tokens;

pub(crate) use attempt::{Attempt, Failure, Target, first_target};
pub(crate) use balancing::Balancing;
pub(crate) use dialogs::{Dialog, Dialogs, InDialog, Side};
pub(crate) use pair::{Pair, Strings};

/// The load a call holds. Dropping it releases the load, exactly once.
#[derive(Debug)]
pub(crate) enum Load {
    /// Chosen by load, with the failover state of the call. Boxed: once the call is
    /// answered it holds its allocation alone, and every call up would otherwise keep
    /// room for a failover session it no longer has.
    Balanced(Box<Balancing>),
    /// Held without failover: a call from the cluster counted against the destination
    /// it came from, an answered call, or a call restored after a restart.
    Held(Allocation),
    /// Relayed without load.
    None,
}

impl Load {
    pub(crate) fn allocation(&self) -> Option<&Allocation> {
        match self {
            Load::Balanced(b) => b.current(),
            Load::Held(a) => Some(a),
            Load::None => None,
        }
    }
}

/// Why the caller no longer wants a call that is still being set up: no failover
/// from then on, and the attempt is cancelled as soon as it has rung.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    Cancelled,
    /// A BYE in an early dialog.
    HungUp,
}

#[derive(Debug)]
pub(crate) enum Phase {
    Attempting {
        /// Boxed, as `Load::Balanced`: most calls are up, and keep no attempt.
        attempt: Box<Attempt>,
        ending: Option<Ending>,
    },
    Answered {
        /// Where the answering attempt went: every dialog's requests go there.
        callee: Peer,
        /// The attempt that answered, so that its later 2xx (forks, retransmissions)
        /// are told from those of attempts given up.
        attempt: u16,
        dialogs: Dialogs,
    },
}

/// What happens to a call.
#[derive(Debug)]
pub(crate) enum Input {
    /// A provisional response of the current attempt.
    Provisional(Message),
    /// The first final response of the current attempt.
    Final(Message),
    /// A later 2xx of the attempt that answered (a retransmission or another fork).
    Late2xx(Message),
    /// The current attempt got no answer, or could not be sent.
    Failed(Failure),
    /// CANCEL from the caller.
    Cancel,
    Timer(CallTimer),
    /// `lb_end_call`.
    Operator,
    /// The shared store's answer to the reservation with this ticket (a cluster).
    Reservation {
        ticket: u64,
        granted: bool,
    },
}

/// What a call asks the proxy to do, in order, after a transition.
#[derive(Debug)]
pub(crate) enum Effect {
    /// Send the INVITE to `target` as attempt `target.n`.
    Forward(Target),
    /// CANCEL the current attempt's client transaction.
    CancelAttempt(Id),
    /// siplb's own final response to the caller.
    Reply(u16, &'static str),
    /// The caller gets `full_reply` (no destination could take the call).
    ReplyFull,
    /// A response from the callee, on to the caller.
    Relay(Message),
    /// siplb ends this dialog itself: BYE to both sides.
    EndDialog(Dialog),
    /// A destination failed (or answered well again).
    Blame(u32, Fault),
    Absolve(u32),
    Arm(CallTimer, Instant),
    Disarm(CallTimer),
    /// Store the call (answered, holds load) for a restart.
    Persist,
    /// The call is over and its load released: forget it.
    Ended,
}

/// What a transition may use: the time, the table, randomness for ties, the
/// settings, counters, and where to put its effects.
#[derive(Debug)]
pub(crate) struct Env<'a> {
    pub(crate) now: Instant,
    pub(crate) balancer: &'a Balancer,
    pub(crate) tokens: &'a mut Tokens,
    pub(crate) settings: &'a Settings,
    pub(crate) listeners: &'a Listeners,
    pub(crate) literal_peers: &'a mut LiteralPeers,
    pub(crate) stats: &'a mut Stats,
    pub(crate) out: &'a mut Vec<Effect>,
}

/// Builds a call's `Env` from the proxy's fields. A macro rather than a method: a
/// method would borrow the whole proxy while the call itself is borrowed from it.
macro_rules! call_env {
    ($proxy:expr, $now:expr) => {
        $crate::call::Env {
            now: $now,
            balancer: &$proxy.balancer,
            tokens: &mut $proxy.tokens,
            settings: &$proxy.settings,
            listeners: &$proxy.listeners,
            literal_peers: &mut $proxy.literal_peers,
            stats: &mut $proxy.stats,
            out: &mut $proxy.effects,
        }
    };
}
pub(crate) use call_env;

/// What siplb keeps of the caller's side, to route towards it and to end the call
/// itself.
#[derive(Debug)]
pub(crate) struct CallerSide {
    pub(crate) peer: Peer,
    /// The From field as received, tag included, then the caller's Contact, where
    /// siplb's own BYE goes.
    pub(crate) from_and_target: Pair,
    /// Record-Route entries the INVITE brought (proxies before siplb), top first.
    pub(crate) route: Box<[Box<str>]>,
    /// The INVITE's CSeq, then the highest the caller used in the dialog.
    pub(crate) cseq: u32,
    /// The highest CSeq the callee used in the dialog (0 before any).
    pub(crate) callee_cseq: u32,
}

#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) key: CallKey,
    pub(crate) caller: CallerSide,
    /// The caller's INVITE server transaction (none for a call restored after a
    /// restart).
    pub(crate) server: Option<Id>,
    /// The INVITE as received, while attempts may still be made. Boxed: answered
    /// calls, most of them, keep no message-sized slot.
    pub(crate) invite: Option<Box<Message>>,
    /// Route entries naming siplb on top of the INVITE (a preloaded route), removed
    /// from every attempt.
    pub(crate) own_routes: u8,
    pub(crate) load: Load,
    pub(crate) phase: Phase,
    pub(crate) started: Instant,
    /// The first reply other than 100 has been seen (setup time recorded).
    pub(crate) setup_seen: bool,
    /// The agenda entries of its timers but the dialog timeout (see `expiry`).
    pub(crate) timers: [Option<Slot>; CallTimer::SLOTS],
    /// Stored for a restart: its end must be stored too.
    pub(crate) persisted: bool,
}

impl Call {
    pub(crate) fn is_answered(&self) -> bool {
        matches!(self.phase, Phase::Answered { .. })
    }

    /// The peer the call's requests go to on the callee's side (the current attempt's
    /// while being set up).
    pub(crate) fn callee(&self) -> Option<Peer> {
        match &self.phase {
            Phase::Attempting { attempt, .. } => Some(attempt.target.peer),
            Phase::Answered { callee, .. } => Some(*callee),
        }
    }

    /// Carries out one input; the effects are in `env.out`.
    pub(crate) fn handle(&mut self, env: &mut Env<'_>, input: Input) {
        match input {
            Input::Provisional(r) => self.on_provisional(env, r),
            Input::Final(r) => self.on_final(env, r),
            Input::Late2xx(r) => self.on_late_2xx(env, r),
            Input::Failed(why) => self.on_failed(env, why),
            Input::Cancel => self.on_cancel(env),
            Input::Timer(t) => self.on_timer(env, t),
            Input::Operator => self.on_operator(env),
            Input::Reservation { ticket, granted } => self.on_reservation(env, ticket, granted),
        }
    }

    fn on_cancel(&mut self, env: &mut Env<'_>) {
        if let Phase::Attempting { ending, .. } = &mut self.phase
            && ending.is_none()
        {
            *ending = Some(Ending::Cancelled);
            self.cancel_when_rung(env);
        }
        // An answered call is past cancelling: the CANCEL had its 200 and no effect.
    }

    /// Sends CANCEL for the current attempt if it has rung (RFC 3261 9.1: never
    /// before a provisional, so that the CANCEL cannot overtake its INVITE); if it
    /// has not, the first provisional sends it. A guard ends the call should the
    /// destination never end the attempt.
    fn cancel_when_rung(&mut self, env: &mut Env<'_>) {
        let Phase::Attempting { attempt, .. } = &mut self.phase else {
            return;
        };
        if attempt.target.reservation.is_some() {
            // Still waiting for the cluster's room: the INVITE never went out, so
            // there is nothing to cancel downstream.
            env.out.push(Effect::Reply(487, "Request Terminated"));
            self.end(env);
            return;
        }
        if attempt.provisional && !attempt.cancel_sent {
            attempt.cancel_sent = true;
            if let Some(client) = attempt.client {
                env.out.push(Effect::CancelAttempt(client));
            }
            let guard = env.now + env.settings.timers.t1.saturating_mul(64);
            env.out.push(Effect::Arm(CallTimer::Cancel, guard));
        }
    }

    fn on_timer(&mut self, env: &mut Env<'_>, timer: CallTimer) {
        match (timer, &mut self.phase) {
            (CallTimer::Cancel, Phase::Attempting { .. }) => {
                // The destination never ended the cancelled attempt; a late 2xx of it
                // is acknowledged and ended by the proxy.
                env.out.push(Effect::Reply(487, "Request Terminated"));
                self.end(env);
            }
            (CallTimer::Ack, Phase::Answered { dialogs, .. }) => {
                // RFC 3261 13.3.1.4: a 2xx never acknowledged ends its session.
                for d in dialogs.take_unacked() {
                    env.stats.ack_timeouts += 1;
                    env.out.push(Effect::EndDialog(d));
                }
                if dialogs.is_empty() {
                    self.end(env);
                }
            }
            (CallTimer::Dialog, Phase::Answered { dialogs, .. }) => {
                env.stats.dialog_timeouts += 1;
                for d in dialogs.take_all() {
                    env.out.push(Effect::EndDialog(d));
                }
                self.end(env);
            }
            _ => {}
        }
    }

    fn on_operator(&mut self, env: &mut Env<'_>) {
        match &mut self.phase {
            Phase::Attempting { attempt, .. } => {
                // The attempt is given up: cancelled now if it has rung, else when it
                // does (the proxy cancels provisionals of attempts that are over).
                if attempt.provisional
                    && !attempt.cancel_sent
                    && let Some(client) = attempt.client
                {
                    attempt.cancel_sent = true;
                    env.out.push(Effect::CancelAttempt(client));
                }
                env.out.push(Effect::Reply(487, "Request Terminated"));
            }
            Phase::Answered { dialogs, .. } => {
                for d in dialogs.take_all() {
                    env.out.push(Effect::EndDialog(d));
                }
            }
        }
        self.end(env);
    }

    /// The call is over: its load goes back now, and the proxy forgets it.
    fn end(&mut self, env: &mut Env<'_>) {
        self.load = Load::None;
        // Its dialog timeout goes with it (`Proxy::forget_call`).
        for timer in [CallTimer::Ack, CallTimer::Cancel] {
            if self.timers[timer as usize].is_some() {
                env.out.push(Effect::Disarm(timer));
            }
        }
        env.out.push(Effect::Ended);
    }

    /// Records the setup time at the first reply the caller sees.
    fn observe_setup(&mut self, env: &mut Env<'_>) {
        if !self.setup_seen {
            self.setup_seen = true;
            env.stats
                .setup
                .observe(env.now.saturating_duration_since(self.started));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Call;

    /// Every call up keeps one of these for hours, in an allocation of its own: its
    /// size is most of siplb's memory per call (docs/BENCHMARKS.md). State only a call
    /// being set up needs is boxed out of it, and its dialog timeout kept beside it
    /// (`expiry`), which keeps it within jemalloc's 320-byte class (488 bytes, so 512,
    /// at first).
    #[test]
    fn a_call_stays_small() {
        let size = std::mem::size_of::<Call>();
        assert!(size <= 320, "Call grew to {size} bytes");
        // Its one dialog, in an allocation of its own (jemalloc's 48-byte class).
        let size = std::mem::size_of::<super::Dialog>();
        assert!(size <= 48, "Dialog grew to {size} bytes");
    }
}
