//! Attempts: where a call's INVITE goes, what its responses do, and failover.

use super::balancing::Choice;
use siplb_sip::Message;
use tracing::{debug, info, warn};

use super::{Call, Effect, Env, Load, Phase};
use crate::addr::{Peer, peer_of_destination};
use crate::agenda::CallTimer;
use crate::call::dialogs::{Dialog, Dialogs};
use crate::failures::Fault;
use crate::slab::Id;
use crate::stats::Rejection;

/// Where one attempt goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    /// Attempts of a call are numbered from 0.
    pub(crate) n: u16,
    pub(crate) peer: Peer,
    /// The destination whose load the attempt holds (none for a relay).
    pub(crate) destination: Option<u32>,
    /// Which of the destination's addresses (its name's, in resolution order) `peer` is.
    pub(crate) address: u8,
    /// In a cluster: the ticket of the reservation the shared store must grant before
    /// the INVITE goes out (none once granted, and alone or for relays).
    pub(crate) reservation: Option<u64>,
}

/// The attempt in flight.
#[derive(Debug)]
pub(crate) struct Attempt {
    pub(crate) target: Target,
    /// Its client transaction, once the INVITE is out.
    pub(crate) client: Option<Id>,
    /// A provisional came: the attempt may be cancelled.
    pub(crate) provisional: bool,
    pub(crate) cancel_sent: bool,
    /// Tags of the early dialogs its provisionals formed.
    pub(crate) early_tags: Vec<Box<str>>,
}

impl Attempt {
    pub(crate) fn new(target: Target) -> Attempt {
        Attempt {
            target,
            client: None,
            provisional: false,
            cancel_sent: false,
            early_tags: Vec::new(),
        }
    }
}

/// Why the current attempt ended without a final response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No final in time (a local 408).
    Timeout,
    /// The transport could not deliver it.
    Transport,
    /// siplb has no listener to reach the target from.
    NoListener,
    /// What the caller sent cannot be forwarded (too large or too many fields once
    /// edited, malformed): the caller's fault, answered with this code, blaming no
    /// destination.
    Unsendable(u16, &'static str),
}

/// Early dialogs a call remembers per attempt: enough for any real forking.
const MAX_EARLY_TAGS: usize = 8;

/// The next destination for a balanced call: chooses among those not tried yet,
/// taking the load, and skips (blaming them) those whose URI cannot be sent to.
/// Gives the outcome when none is left.
pub(crate) fn first_target(
    load: &mut Load,
    env: &mut Env<'_>,
    n: u16,
) -> Result<Target, Rejection> {
    match load {
        Load::Balanced(balancing) => loop {
            let chosen = match balancing.next(env.balancer, env.tokens, &mut env.stats.overflows) {
                Choice::Chosen(a) => (
                    a.destination_id(),
                    peer_of_destination(a, 0, env.literal_peers),
                    a.reservation(),
                ),
                Choice::Exhausted(why) => return Err(why),
            };
            match chosen {
                (id, Ok(peer), reservation) => {
                    return Ok(Target {
                        n,
                        peer,
                        destination: Some(id),
                        address: 0,
                        reservation,
                    });
                }
                (id, Err(e), _) => {
                    warn!(destination = id, error = %e, "destination cannot be reached; trying the next");
                    env.out.push(Effect::Blame(id, Fault::Unreachable(e)));
                }
            }
        },
        // Relays are set up with their target; they have no next one.
        Load::Held(_) | Load::None => Err(Rejection::NoDestination),
    }
}

impl Call {
    pub(super) fn on_provisional(&mut self, env: &mut Env<'_>, r: Message) {
        let Phase::Attempting { attempt, ending } = &mut self.phase else {
            return;
        };
        attempt.provisional = true;
        if let Some(tag) = r.to_tag()
            && attempt.early_tags.len() < MAX_EARLY_TAGS
            && !attempt.early_tags.iter().any(|t| &**t == tag)
        {
            attempt.early_tags.push(tag.into());
        }
        let wants_cancel = ending.is_some();
        let status = r.status().unwrap_or(100);
        if wants_cancel {
            self.cancel_when_rung(env);
        }
        if status != 100 {
            self.observe_setup(env);
            env.out.push(Effect::Relay(r));
        }
    }

    pub(super) fn on_final(&mut self, env: &mut Env<'_>, r: Message) {
        let Phase::Attempting { attempt, ending } = &self.phase else {
            return;
        };
        let status = r.status().unwrap_or(500);
        let destination = attempt.target.destination;
        let failover = status >= 500 && ending.is_none() && matches!(self.load, Load::Balanced(_));
        if (200..300).contains(&status) {
            self.answered(env, r);
        } else if failover {
            info!(call_id = %self.key.call_id(), status, ?destination, "destination failed; failing over");
            if let Some(id) = destination {
                env.out.push(Effect::Blame(id, Fault::Status(status)));
            }
            self.fail_over(env);
        } else {
            if status < 500
                && let Some(id) = destination
            {
                env.out.push(Effect::Absolve(id));
            }
            self.observe_setup(env);
            env.out.push(Effect::Relay(r));
            self.end(env);
        }
    }

    /// The current attempt answered: failover is over, the load stays with the call,
    /// and the caller has 64*T1 to acknowledge.
    fn answered(&mut self, env: &mut Env<'_>, r: Message) {
        let Phase::Attempting { attempt, .. } = &self.phase else {
            return;
        };
        let target = attempt.target;
        let Some(dialog) = Dialog::from_2xx(&r, &env.listeners.route_beyond(&r)) else {
            // A 2xx without To tag forms no dialog: pass it on, end the call.
            env.out.push(Effect::Relay(r));
            self.end(env);
            return;
        };
        self.load = match std::mem::replace(&mut self.load, Load::None) {
            Load::Balanced(b) => b.into_allocation().map_or(Load::None, Load::Held),
            other => other,
        };
        self.invite = None;
        let mut dialogs = Dialogs::default();
        dialogs.add(dialog);
        self.phase = Phase::Answered {
            callee: target.peer,
            attempt: target.n,
            dialogs,
        };
        self.observe_setup(env);
        let expires = env.now + env.settings.dialog_timeout;
        if self.timers[CallTimer::Cancel as usize].is_some() {
            env.out.push(Effect::Disarm(CallTimer::Cancel));
        }
        env.out.push(Effect::Arm(
            CallTimer::Ack,
            env.now + env.settings.timers.t1.saturating_mul(64),
        ));
        env.out.push(Effect::Arm(CallTimer::Dialog, expires));
        if let Some(id) = target.destination {
            env.out.push(Effect::Absolve(id));
        }
        if self.load.allocation().is_some() {
            env.out.push(Effect::Persist);
        }
        env.out.push(Effect::Relay(r));
    }

    pub(super) fn on_late_2xx(&mut self, env: &mut Env<'_>, r: Message) {
        let Phase::Answered { dialogs, .. } = &mut self.phase else {
            return;
        };
        let Some(tag) = r.to_tag() else {
            return;
        };
        if !dialogs.contains(tag) && !dialogs.ended(tag) {
            // Another fork behind the destination answered too: a dialog of its own,
            // which the caller acknowledges (or not) like the first.
            if let Some(d) = Dialog::from_2xx(&r, &env.listeners.route_beyond(&r)) {
                dialogs.add(d);
                if self.timers[CallTimer::Ack as usize].is_none() {
                    env.out.push(Effect::Arm(
                        CallTimer::Ack,
                        env.now + env.settings.timers.t1.saturating_mul(64),
                    ));
                }
            }
        }
        env.out.push(Effect::Relay(r));
    }

    pub(super) fn on_failed(&mut self, env: &mut Env<'_>, why: Failure) {
        let Phase::Attempting { attempt, ending } = &mut self.phase else {
            return;
        };
        let destination = attempt.target.destination;
        let fault = match why {
            Failure::Unsendable(code, reason) => {
                warn!(call_id = %self.key.call_id(), code, reason, "the INVITE cannot be forwarded as the caller sent it");
                env.out.push(Effect::Reply(code, reason));
                self.end(env);
                return;
            }
            Failure::Timeout => Fault::Timeout,
            Failure::Transport => Fault::Transport,
            Failure::NoListener => Fault::NoListener,
        };
        // The attempt is given up; once it has rung it is cancelled, and should it
        // answer after all, the proxy ends that answer.
        let rang = attempt.provisional;
        if rang
            && !attempt.cancel_sent
            && let Some(client) = attempt.client
        {
            attempt.cancel_sent = true;
            env.out.push(Effect::CancelAttempt(client));
        }
        if ending.is_some() {
            env.out.push(Effect::Reply(487, "Request Terminated"));
            self.end(env);
            return;
        }
        if rang && fault == Fault::Timeout {
            // Timer C: it rang and nobody answered. The destination is alive and
            // did its part; another one would only ring again.
            env.out.push(Effect::Reply(408, "Request Timeout"));
            self.end(env);
            return;
        }
        if !matches!(self.load, Load::Balanced(_)) {
            let (code, reason) = match fault {
                Fault::Timeout => (408, "Request Timeout"),
                _ => (503, "Service Unavailable"),
            };
            env.out.push(Effect::Reply(code, reason));
            self.end(env);
            return;
        }
        if fault == Fault::Transport && self.next_address(env) {
            return;
        }
        info!(call_id = %self.key.call_id(), ?destination, reason = %fault, "destination failed; failing over");
        if let Some(id) = destination {
            env.out.push(Effect::Blame(id, fault));
        }
        self.fail_over(env);
    }

    /// The current attempt failed at the transport: sends the INVITE to the destination's
    /// next address, if its name resolved to another (RFC 3263 section 4.3), keeping the
    /// load it holds and blaming nobody yet. False when it has no other address.
    fn next_address(&mut self, env: &mut Env<'_>) -> bool {
        let Phase::Attempting { attempt, .. } = &self.phase else {
            return false;
        };
        let Load::Balanced(balancing) = &self.load else {
            return false;
        };
        let Some(allocation) = balancing.current() else {
            return false;
        };
        let previous = attempt.target;
        let Some(address) = previous.address.checked_add(1) else {
            return false;
        };
        let Ok(peer) = peer_of_destination(allocation, usize::from(address), env.literal_peers)
        else {
            return false;
        };
        let target = Target {
            n: previous.n.saturating_add(1),
            peer,
            address,
            reservation: None,
            ..previous
        };
        info!(call_id = %self.key.call_id(), destination = ?target.destination, from = %previous.peer, to = %peer, "address failed at the transport; trying the destination's next address");
        self.phase = Phase::Attempting {
            attempt: Box::new(Attempt::new(target)),
            ending: None,
        };
        env.out.push(Effect::Forward(target));
        true
    }

    /// The shared store answered the reservation of the current attempt: granted, the
    /// INVITE goes out; refused (another node took the last slot), the call chooses
    /// again among the destinations not tried yet, blaming none.
    pub(super) fn on_reservation(&mut self, env: &mut Env<'_>, ticket: u64, granted: bool) {
        let Phase::Attempting { attempt, .. } = &mut self.phase else {
            return;
        };
        if attempt.target.reservation != Some(ticket) {
            return;
        }
        attempt.target.reservation = None;
        // Disabled or drained while the store answered: the INVITE has not left yet, so
        // the call goes elsewhere, as it would have had it come a moment later.
        let still_open = attempt.target.destination.is_none_or(|id| {
            env.balancer
                .status(id)
                .is_ok_and(|s| s.enabled && !s.draining)
        });
        if granted && still_open {
            env.out.push(Effect::Forward(attempt.target));
            return;
        }
        if granted {
            debug!(call_id = %self.key.call_id(), destination = ?attempt.target.destination, "the destination stopped taking calls while the store answered; choosing again");
            self.choose_again(env, false);
            return;
        }
        env.stats.reservations_refused += 1;
        debug!(call_id = %self.key.call_id(), destination = ?attempt.target.destination, "the cluster has no room there any more; choosing again");
        self.choose_again(env, true);
    }

    /// Releases the failed attempt's load and forwards to the best destination not
    /// tried yet, or answers `full_reply` when none is left.
    fn fail_over(&mut self, env: &mut Env<'_>) {
        env.stats.failovers += 1;
        self.choose_again(env, false);
    }

    /// `after_refusal`: the last destination had no room left cluster-wide, so a call
    /// with none left is turned away for want of capacity.
    fn choose_again(&mut self, env: &mut Env<'_>, after_refusal: bool) {
        let Phase::Attempting { attempt, .. } = &self.phase else {
            return;
        };
        let n = attempt.target.n.saturating_add(1);
        match first_target(&mut self.load, env, n) {
            Ok(target) => {
                debug!(call_id = %self.key.call_id(), destination = ?target.destination, peer = %target.peer, "routing decision (failover)");
                self.phase = Phase::Attempting {
                    attempt: Box::new(Attempt::new(target)),
                    ending: None,
                };
                env.out.push(Effect::Forward(target));
            }
            Err(rejection) => {
                let rejection = match rejection {
                    Rejection::NoDestination if after_refusal => Rejection::NoCapacity,
                    other => other,
                };
                warn!(call_id = %self.key.call_id(), outcome = %rejection, "no destination left for call");
                env.stats.count_rejection(rejection);
                self.observe_setup(env);
                env.out.push(
                    rejection
                        .own_reply()
                        .map_or(Effect::ReplyFull, |(code, reason)| {
                            Effect::Reply(code, reason)
                        }),
                );
                self.end(env);
            }
        }
    }
}
