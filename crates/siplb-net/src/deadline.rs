//! The core's one timer: its next deadline, moved only when the deadline moves.
//!
//! On Linux it is a `timerfd` in the runtime's epoll set, so that the core sleeps in
//! an `epoll_wait` with no timeout. A tokio sleep would do the same work but hand
//! every `epoll_wait` a timeout, which the kernel arms and cancels as a timer of its
//! own on each sleep of the thread; on the benchmark's machine that cost about 1.2 us
//! of CPU per wake-up in a ping-pong measured alone (docs/BENCHMARKS-HISTORY.md,
//! "Issue 19, fourteenth round"), where the core sleeps about five times per call at
//! low rates and its deadline moves less than once per call. Elsewhere it is a tokio
//! sleep.

use std::io;
use std::task::{Context, Poll};
use std::time::Instant;

/// A one-shot timer for the core's next deadline.
#[derive(Debug)]
pub(crate) struct Deadline {
    #[cfg(target_os = "linux")]
    timer: tokio::io::unix::AsyncFd<linux::Timer>,
    #[cfg(not(target_os = "linux"))]
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// The deadline set, until it has fired or is taken off.
    armed: Option<Instant>,
}

impl Deadline {
    pub(crate) fn new() -> io::Result<Deadline> {
        Ok(Deadline {
            #[cfg(target_os = "linux")]
            timer: crate::udp::register(linux::Timer::new()?, tokio::io::Interest::READABLE)?,
            #[cfg(not(target_os = "linux"))]
            sleep: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
            armed: None,
        })
    }

    /// Sets the deadline to `at` (none: off), unless it is set there already.
    pub(crate) fn set(&mut self, at: Option<Instant>) -> io::Result<()> {
        if at == self.armed {
            return Ok(());
        }
        match at {
            #[cfg(target_os = "linux")]
            Some(at) => self.timer.get_ref().set(at)?,
            #[cfg(target_os = "linux")]
            None => self.timer.get_ref().unset()?,
            #[cfg(not(target_os = "linux"))]
            Some(at) => self
                .sleep
                .as_mut()
                .reset(tokio::time::Instant::from_std(at)),
            #[cfg(not(target_os = "linux"))]
            None => {}
        }
        self.armed = at;
        Ok(())
    }

    /// Ready once the deadline set has passed; it is then off until set again (even
    /// to the same instant). Pending while none is set.
    pub(crate) fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.armed.is_none() {
            return Poll::Pending;
        }
        #[cfg(target_os = "linux")]
        loop {
            let mut ready = match self.timer.poll_read_ready(cx) {
                Poll::Ready(Ok(ready)) => ready,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            let read = ready.get_inner().take_expiry();
            // Read or found empty (an expiry that a later `set` took back), the
            // timer is not ready any more: one read per expiry, not one more to learn it.
            ready.clear_ready();
            match read {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        #[cfg(not(target_os = "linux"))]
        if self.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.armed = None;
        Poll::Ready(Ok(()))
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::os::fd::{AsFd as _, AsRawFd, RawFd};
    use std::time::{Duration, Instant};

    use nix::sys::time::TimeSpec;
    use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

    /// A non-blocking `timerfd` on the monotonic clock, the clock of `Instant`.
    #[derive(Debug)]
    pub(super) struct Timer(TimerFd);

    impl AsRawFd for Timer {
        fn as_raw_fd(&self) -> RawFd {
            self.0.as_fd().as_raw_fd()
        }
    }

    impl Timer {
        pub(super) fn new() -> io::Result<Timer> {
            let flags = TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC;
            Ok(Timer(TimerFd::new(ClockId::CLOCK_MONOTONIC, flags)?))
        }

        /// Fires at `at`, relative to now: `Instant` gives no absolute reading of
        /// its clock, and a microsecond late is nothing to a SIP timer.
        pub(super) fn set(&self, at: Instant) -> io::Result<()> {
            // A zero expiry would disarm the timer: a deadline already past fires at once.
            let after = at
                .saturating_duration_since(Instant::now())
                .max(Duration::from_nanos(1));
            let expiry = Expiration::OneShot(TimeSpec::from_duration(after));
            Ok(self.0.set(expiry, TimerSetTimeFlags::empty())?)
        }

        pub(super) fn unset(&self) -> io::Result<()> {
            Ok(self.0.unset()?)
        }

        /// Reads the count of expiries, which clears the timer's readiness; an error
        /// of kind `WouldBlock` when it has not expired.
        pub(super) fn take_expiry(&self) -> io::Result<()> {
            let mut count = [0u8; 8];
            nix::unistd::read(self.0.as_fd(), &mut count)?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Whether the deadline fires within `limit`.
    async fn fires_within(deadline: &mut Deadline, limit: Duration) -> bool {
        let fired = std::future::poll_fn(|cx| deadline.poll_fired(cx));
        match tokio::time::timeout(limit, fired).await {
            Ok(result) => result.map(|()| true).unwrap(),
            Err(_elapsed) => false,
        }
    }

    #[tokio::test]
    async fn fires_once_at_its_deadline_and_not_before() {
        let mut deadline = Deadline::new().unwrap();
        let start = Instant::now();
        deadline
            .set(Some(start + Duration::from_millis(30)))
            .unwrap();
        assert!(fires_within(&mut deadline, Duration::from_secs(5)).await);
        assert!(start.elapsed() >= Duration::from_millis(30));
        // Off after firing: nothing more comes until it is set again.
        assert!(!fires_within(&mut deadline, Duration::from_millis(50)).await);
    }

    #[tokio::test]
    async fn a_deadline_moved_later_does_not_fire_at_the_old_one() {
        let mut deadline = Deadline::new().unwrap();
        let start = Instant::now();
        deadline
            .set(Some(start + Duration::from_millis(5)))
            .unwrap();
        // The first expiry passes, unread, before the deadline moves.
        std::thread::sleep(Duration::from_millis(20));
        deadline
            .set(Some(start + Duration::from_millis(80)))
            .unwrap();
        assert!(fires_within(&mut deadline, Duration::from_secs(5)).await);
        assert!(start.elapsed() >= Duration::from_millis(80));
    }

    #[tokio::test]
    async fn a_deadline_in_the_past_fires_at_once_and_none_never_fires() {
        let mut deadline = Deadline::new().unwrap();
        let now = Instant::now();
        deadline
            .set(now.checked_sub(Duration::from_millis(1)))
            .unwrap();
        assert!(fires_within(&mut deadline, Duration::from_secs(5)).await);
        deadline
            .set(Some(Instant::now() + Duration::from_millis(10)))
            .unwrap();
        deadline.set(None).unwrap();
        assert!(!fires_within(&mut deadline, Duration::from_millis(50)).await);
    }
}
