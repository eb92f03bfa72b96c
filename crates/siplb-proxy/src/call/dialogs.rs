//! A call's dialogs, and where its in-dialog requests go: only ever to the call's
//! other party (never to a Route or Request-URI host of the request's choosing), and
//! on the callee's side only to the destination that formed the dialog.

use siplb_sip::{Message, Method};

use super::{Call, Effect, Ending, Env, Phase, Strings};
use crate::addr::Peer;
use crate::agenda::CallTimer;

/// One dialog of an answered call (several when the 2xx forked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Dialog {
    /// The callee's tag (empty for a restored call whose tag was not stored: it then
    /// matches any), the 2xx's To field (callee URI and tag) and the callee's Contact,
    /// the last two for siplb's own BYE (empty for a restored call).
    strings: Strings<2>,
    pub(crate) acked: bool,
    /// Route from siplb towards the callee (proxies after siplb), nearest first.
    pub(crate) route: Box<[Box<str>]>,
}

impl Dialog {
    pub(crate) fn from_2xx(r: &Message, route: &[Box<str>]) -> Option<Dialog> {
        let tag = r.to_tag()?;
        let to = r.header_text(siplb_sip::HeaderName::To).unwrap_or_default();
        let target = r
            .contacts()
            .next()
            .and_then(Result::ok)
            .map(|c| c.uri_text)
            .unwrap_or_default();
        Some(Dialog {
            strings: Strings::new(&[tag, to, target]),
            acked: false,
            route: route.into(),
        })
    }

    pub(crate) fn tag(&self) -> &str {
        self.strings.get(0)
    }

    /// The 2xx's To field, empty if unknown.
    pub(crate) fn to(&self) -> &str {
        self.strings.get(1)
    }

    /// The callee's Contact, empty if unknown.
    pub(crate) fn target(&self) -> &str {
        self.strings.get(2)
    }

    /// A dialog brought back after a restart: acknowledged long ago.
    pub(crate) fn restored(tag: Option<&str>) -> Dialog {
        Dialog {
            strings: Strings::new(&[tag.unwrap_or_default()]),
            acked: true,
            route: Box::default(),
        }
    }
}

/// The live dialogs of a call, and the tags of those that ended (a 2xx the callee
/// resends after its dialog's BYE must not bring it back). The ended tags are boxed:
/// nearly every call ends with its one dialog, and a call up keeps only a null
/// pointer for them.
#[derive(Debug, Default)]
#[allow(
    clippy::box_collection,
    reason = "one pointer in every call up, for a list nearly none has"
)]
pub(crate) struct Dialogs(Vec<Dialog>, Option<Box<Vec<Box<str>>>>);

impl Dialogs {
    pub(crate) fn add(&mut self, d: Dialog) {
        // Nearly every call has one dialog (forks are rare): room for exactly one,
        // not the four a first push reserves.
        if self.0.capacity() == 0 {
            self.0.reserve_exact(1);
        }
        self.0.push(d);
    }

    pub(crate) fn ended(&self, tag: &str) -> bool {
        self.1
            .iter()
            .flat_map(|ended| ended.iter())
            .any(|t| &**t == tag)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn contains(&self, tag: &str) -> bool {
        self.0.iter().any(|d| d.tag() == tag || d.tag().is_empty())
    }

    fn position(&self, tag: &str) -> Option<usize> {
        self.0
            .iter()
            .position(|d| d.tag() == tag)
            .or_else(|| self.0.iter().position(|d| d.tag().is_empty()))
    }

    pub(crate) fn first_tag(&self) -> Option<&str> {
        self.0.first().map(Dialog::tag).filter(|t| !t.is_empty())
    }

    /// Marks a dialog acknowledged; true when none is left waiting.
    fn ack(&mut self, tag: &str) -> bool {
        if let Some(i) = self.position(tag) {
            self.0[i].acked = true;
        }
        self.0.iter().all(|d| d.acked)
    }

    fn remove(&mut self, tag: &str) {
        if let Some(i) = self.position(tag) {
            let d = self.0.remove(i);
            // Forks are few; a caller that makes more than this many is cut short.
            let ended = self.1.get_or_insert_default();
            if ended.len() < 8 {
                ended.push(d.tag().into());
            }
        }
    }

    pub(crate) fn take_unacked(&mut self) -> Vec<Dialog> {
        let (unacked, acked) = std::mem::take(&mut self.0)
            .into_iter()
            .partition(|d| !d.acked);
        self.0 = acked;
        unacked
    }

    pub(crate) fn take_all(&mut self) -> Vec<Dialog> {
        std::mem::take(&mut self.0)
    }
}

/// Who sent an in-dialog request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Caller,
    Callee,
}

/// What becomes of an in-dialog request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InDialog {
    Forward(Peer),
    Reply(u16, &'static str),
    Drop,
}

const NO_DIALOG: InDialog = InDialog::Reply(481, "Call/Transaction Does Not Exist");

impl Call {
    /// Where a request within one of the call's dialogs goes, and what it does to the
    /// call. `tag` is the callee's tag the request carries (its To tag from the
    /// caller, its From tag from the callee).
    pub(crate) fn route_in_dialog(
        &mut self,
        env: &mut Env<'_>,
        method: Method<'_>,
        tag: &str,
        from: Side,
        cseq: u32,
    ) -> InDialog {
        let unknown = if method == Method::Ack {
            InDialog::Drop
        } else {
            NO_DIALOG
        };
        if !matches!(method, Method::Ack | Method::Cancel) {
            match from {
                Side::Caller => self.caller.cseq = self.caller.cseq.max(cseq),
                Side::Callee => self.caller.callee_cseq = self.caller.callee_cseq.max(cseq),
            }
        }
        let caller = self.caller.peer;
        match &mut self.phase {
            Phase::Attempting { attempt, ending } => {
                let early = attempt.early_tags.iter().any(|t| &**t == tag);
                if from == Side::Caller && method == Method::Bye {
                    // The caller hung up before the answer: no failover from now on.
                    // A BYE for the attempt's early dialog ends the INVITE there (487
                    // from the callee); for any other, siplb cancels the attempt.
                    ending.get_or_insert(Ending::HungUp);
                    if !early {
                        self.cancel_when_rung(env);
                        return unknown;
                    }
                    // Should the destination not end the INVITE, the guard does.
                    if self.timers[CallTimer::Cancel as usize].is_none() {
                        let guard = env.now + env.settings.timers.t1.saturating_mul(64);
                        env.out.push(Effect::Arm(CallTimer::Cancel, guard));
                    }
                }
                match (early, from) {
                    (false, _) => unknown,
                    (true, Side::Caller) => InDialog::Forward(attempt.target.peer),
                    (true, Side::Callee) => InDialog::Forward(caller),
                }
            }
            Phase::Answered {
                callee, dialogs, ..
            } => {
                if !dialogs.contains(tag) {
                    return unknown;
                }
                let callee = *callee;
                match method {
                    Method::Ack
                        if from == Side::Caller
                            && dialogs.ack(tag)
                            && self.timers[CallTimer::Ack as usize].is_some() =>
                    {
                        env.out.push(Effect::Disarm(CallTimer::Ack));
                    }
                    Method::Bye => {
                        dialogs.remove(tag);
                        if dialogs.is_empty() {
                            self.end(env);
                        }
                    }
                    _ => {}
                }
                match from {
                    Side::Caller => InDialog::Forward(callee),
                    Side::Callee => InDialog::Forward(caller),
                }
            }
        }
    }
}
