//! In-process retries with the same policies, jitter and classification as the server.
//!
//! An error says what it is by implementing [`Classify`] (or by being wrapped in
//! [`Transient`] / [`Permanent`]), or a closure decides. The success path allocates nothing,
//! and reads no clock unless the policy has a time budget (`max_elapsed`): everything else
//! (classification, the decision, the hook) waits until an attempt has failed.
//!
//! ```
//! use retryd_core::retry::{Retry, Transient};
//! use retryd_core::{Jitter, Policy};
//! use std::time::Duration;
//!
//! let policy = Policy { initial_delay: Duration::ZERO, jitter: Jitter::None, ..Policy::default() };
//! let mut calls = 0;
//! let value = Retry::new(&policy).run_blocking(|attempt| {
//!     calls += 1;
//!     if attempt < 3 { Err(Transient("connection refused")) } else { Ok(42) }
//! });
//! assert_eq!(value.unwrap(), 42);
//! assert_eq!(calls, 3);
//! ```
//!
//! Async code passes its runtime's sleep, since this crate has no runtime of its own:
//! `Retry::new(&policy).run(|attempt| call(attempt), tokio::time::sleep).await`.

use crate::classify::Class;
use crate::clock::{Clock, SystemClock};
use crate::decide::{Decision, FailedAttempt, decide};
use crate::policy::Policy;
use chrono::{DateTime, Utc};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// An error that knows whether another attempt could succeed.
pub trait Classify {
    fn class(&self) -> Class;

    /// A server's hint of when to try again (like HTTP `Retry-After`).
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

/// Wraps an error that is worth another attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transient<E>(pub E);

/// Wraps an error that another attempt would repeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permanent<E>(pub E);

impl<E> Classify for Transient<E> {
    fn class(&self) -> Class {
        Class::Transient
    }
}

impl<E> Classify for Permanent<E> {
    fn class(&self) -> Class {
        Class::Permanent
    }
}

impl<E: fmt::Display> fmt::Display for Transient<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<E: fmt::Display> fmt::Display for Permanent<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for Transient<E> {}
impl<E: fmt::Debug + fmt::Display> std::error::Error for Permanent<E> {}

/// Decides the class of an error (and an optional retry-after hint).
pub trait Classifier<E> {
    fn classify(&mut self, error: &E) -> (Class, Option<Duration>);
}

/// Asks the error itself, through [`Classify`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ByErrorType;

impl<E: Classify> Classifier<E> for ByErrorType {
    fn classify(&mut self, error: &E) -> (Class, Option<Duration>) {
        (error.class(), error.retry_after())
    }
}

impl<E, F: FnMut(&E) -> Class> Classifier<E> for F {
    fn classify(&mut self, error: &E) -> (Class, Option<Duration>) {
        (self(error), None)
    }
}

/// Called before each wait: the attempt that failed, its error, the wait chosen.
pub trait OnRetry<E> {
    fn on_retry(&mut self, attempt: u32, error: &E, delay: Duration);
}

/// No hook.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHook;

impl<E> OnRetry<E> for NoHook {
    fn on_retry(&mut self, _: u32, _: &E, _: Duration) {}
}

impl<E, F: FnMut(u32, &E, Duration)> OnRetry<E> for F {
    fn on_retry(&mut self, attempt: u32, error: &E, delay: Duration) {
        self(attempt, error, delay)
    }
}

/// Why the retries stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaveUp {
    /// The error was permanent (or unknown, with a policy that does not retry those).
    Permanent,
    /// Attempts or the time budget ran out.
    Exhausted,
    /// The deadline would pass before the next attempt.
    Deadline,
    /// The cancel flag was set.
    Cancelled,
}

/// The last error, with how many attempts were made and why they stopped.
#[derive(Debug)]
pub struct RetryError<E> {
    pub error: E,
    pub attempts: u32,
    pub gave_up: GaveUp,
    pub class: Class,
}

impl<E: fmt::Display> fmt::Display for RetryError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gave up after {} attempt(s) ({:?}, {}): {}",
            self.attempts, self.gave_up, self.class, self.error
        )
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for RetryError<E> {}

static SYSTEM_CLOCK: SystemClock = SystemClock;

/// A configured retry loop. Build it with [`Retry::new`], then `run` or `run_blocking`.
pub struct Retry<'a, C = ByErrorType, H = NoHook> {
    policy: &'a Policy,
    classifier: C,
    hook: H,
    deadline: Option<DateTime<Utc>>,
    cancel: Option<&'a AtomicBool>,
    clock: &'a dyn Clock,
}

impl<'a> Retry<'a> {
    pub fn new(policy: &'a Policy) -> Self {
        Retry {
            policy,
            classifier: ByErrorType,
            hook: NoHook,
            deadline: None,
            cancel: None,
            clock: &SYSTEM_CLOCK,
        }
    }
}

/// What to do after a failed attempt.
enum Step<E> {
    Wait(Duration, E),
    Stop(RetryError<E>),
}

impl<'a, C, H> Retry<'a, C, H> {
    /// Lets a closure classify errors instead of their type.
    pub fn classify_with<C2>(self, classifier: C2) -> Retry<'a, C2, H> {
        Retry {
            policy: self.policy,
            classifier,
            hook: self.hook,
            deadline: self.deadline,
            cancel: self.cancel,
            clock: self.clock,
        }
    }

    /// Calls `hook(attempt, &error, delay)` before each wait.
    pub fn on_retry<H2>(self, hook: H2) -> Retry<'a, C, H2> {
        Retry {
            policy: self.policy,
            classifier: self.classifier,
            hook,
            deadline: self.deadline,
            cancel: self.cancel,
            clock: self.clock,
        }
    }

    /// Gives up rather than start an attempt after this instant.
    pub fn deadline(mut self, deadline: DateTime<Utc>) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Stops before the next attempt once `flag` is set.
    pub fn cancel_on(mut self, flag: &'a AtomicBool) -> Self {
        self.cancel = Some(flag);
        self
    }

    /// Reads time from this clock (for tests).
    pub fn clock(mut self, clock: &'a dyn Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The first attempt's start, read only for a policy with a time budget (`max_elapsed`,
    /// the one thing [`decide`] measures from it): without one, the success path reads no
    /// clock. A deadline needs no start: it is checked against the time of each failure.
    fn first_started_at(&self) -> Option<DateTime<Utc>> {
        self.policy.max_elapsed.map(|_| self.clock.now())
    }

    fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|flag| flag.load(Ordering::SeqCst))
    }

    fn after_failure<E>(
        &mut self,
        attempt: u32,
        error: E,
        first: Option<DateTime<Utc>>,
        previous: Option<Duration>,
    ) -> Step<E>
    where
        C: Classifier<E>,
        H: OnRetry<E>,
    {
        let (class, retry_after) = self.classifier.classify(&error);
        let failed = FailedAttempt {
            attempt,
            class,
            now: self.clock.now(),
            first_started_at: first,
            deadline: self.deadline,
            previous_delay: previous,
            retry_after,
        };
        let gave_up = match decide(self.policy, &failed, &mut rand::rng()) {
            Decision::Retry { delay, .. } if !self.cancelled() => {
                self.hook.on_retry(attempt, &error, delay);
                return Step::Wait(delay, error);
            }
            Decision::Retry { .. } => GaveUp::Cancelled,
            Decision::Fail { .. }
                if class == Class::Transient
                    || (class == Class::Unknown && self.policy.retry_unknown) =>
            {
                GaveUp::Exhausted
            }
            Decision::Fail { .. } => GaveUp::Permanent,
            Decision::Expire { .. } => GaveUp::Deadline,
        };
        Step::Stop(RetryError {
            error,
            attempts: attempt,
            gave_up,
            class,
        })
    }

    /// Runs `op(attempt)` (attempts count from 1) until it succeeds or the policy gives up,
    /// sleeping the thread between attempts.
    pub fn run_blocking<T, E>(
        mut self,
        mut op: impl FnMut(u32) -> Result<T, E>,
    ) -> Result<T, RetryError<E>>
    where
        C: Classifier<E>,
        H: OnRetry<E>,
    {
        let first = self.first_started_at();
        let mut previous = None;
        let mut attempt = 1;
        loop {
            let error = match op(attempt) {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            match self.after_failure(attempt, error, first, previous) {
                Step::Wait(delay, _) => {
                    std::thread::sleep(delay);
                    previous = Some(delay);
                }
                Step::Stop(stopped) => return Err(stopped),
            }
            attempt += 1;
        }
    }

    /// The same for async code: `sleep` is the runtime's, e.g. `tokio::time::sleep`.
    pub async fn run<T, E, Fut, S, SleepFut>(
        mut self,
        mut op: impl FnMut(u32) -> Fut,
        mut sleep: S,
    ) -> Result<T, RetryError<E>>
    where
        C: Classifier<E>,
        H: OnRetry<E>,
        Fut: Future<Output = Result<T, E>>,
        S: FnMut(Duration) -> SleepFut,
        SleepFut: Future<Output = ()>,
    {
        let first = self.first_started_at();
        let mut previous = None;
        let mut attempt = 1;
        loop {
            let error = match op(attempt).await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            match self.after_failure(attempt, error, first, previous) {
                Step::Wait(delay, _) => {
                    sleep(delay).await;
                    previous = Some(delay);
                }
                Step::Stop(stopped) => return Err(stopped),
            }
            attempt += 1;
        }
    }
}

/// `Retry::new(policy).run_blocking(op)`.
pub fn retry_blocking<T, E: Classify>(
    policy: &Policy,
    op: impl FnMut(u32) -> Result<T, E>,
) -> Result<T, RetryError<E>> {
    Retry::new(policy).run_blocking(op)
}

/// `Retry::new(policy).run(op, sleep)`.
pub async fn retry<T, E, Fut, S, SleepFut>(
    policy: &Policy,
    op: impl FnMut(u32) -> Fut,
    sleep: S,
) -> Result<T, RetryError<E>>
where
    E: Classify,
    Fut: Future<Output = Result<T, E>>,
    S: FnMut(Duration) -> SleepFut,
    SleepFut: Future<Output = ()>,
{
    Retry::new(policy).run(op, sleep).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Jitter;

    fn instant_policy(max_attempts: u32) -> Policy {
        Policy {
            max_attempts,
            initial_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            jitter: Jitter::None,
            ..Policy::default()
        }
    }

    #[test]
    fn permanent_errors_stop_at_once() {
        let mut calls = 0;
        let result: Result<(), _> = retry_blocking(&instant_policy(5), |_| {
            calls += 1;
            Err(Permanent("invalid credentials"))
        });
        let error = result.unwrap_err();
        assert_eq!(
            (calls, error.attempts, error.gave_up),
            (1, 1, GaveUp::Permanent)
        );
    }

    #[test]
    fn transient_errors_exhaust_the_attempts_and_hooks_see_each_wait() {
        let policy = Policy {
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
            ..instant_policy(4)
        };
        let mut waits = Vec::new();
        let result: Result<(), _> = Retry::new(&policy)
            .on_retry(|attempt, _: &Transient<&str>, delay| waits.push((attempt, delay)))
            .run_blocking(|_| Err(Transient("timeout")));
        let error = result.unwrap_err();
        assert_eq!((error.attempts, error.gave_up), (4, GaveUp::Exhausted));
        assert_eq!(
            waits,
            vec![
                (1, Duration::from_millis(1)),
                (2, Duration::from_millis(2)),
                (3, Duration::from_millis(4))
            ]
        );
    }

    #[test]
    fn a_retry_after_hint_sets_the_wait() {
        struct RateLimited;
        impl Classify for RateLimited {
            fn class(&self) -> Class {
                Class::Transient
            }
            fn retry_after(&self) -> Option<Duration> {
                Some(Duration::from_millis(7))
            }
        }
        let policy = Policy {
            max_delay: Duration::from_secs(1),
            ..instant_policy(2)
        };
        let mut waits = Vec::new();
        let result = Retry::new(&policy)
            .on_retry(|_, _: &RateLimited, delay| waits.push(delay))
            .run_blocking(|attempt| {
                if attempt == 1 {
                    Err(RateLimited)
                } else {
                    Ok(())
                }
            });
        assert!(result.is_ok());
        assert_eq!(
            waits,
            vec![Duration::from_millis(7)],
            "the hint, not the zero backoff"
        );
    }

    #[test]
    fn a_closure_can_classify_plain_errors() {
        let mut calls = 0;
        let result = Retry::new(&instant_policy(3))
            .classify_with(|e: &std::io::Error| {
                if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    Class::Transient
                } else {
                    Class::Permanent
                }
            })
            .run_blocking(|attempt| {
                calls += 1;
                if attempt == 1 {
                    Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
                } else {
                    Ok("up")
                }
            });
        assert_eq!((result.unwrap(), calls), ("up", 2));
    }

    #[test]
    fn cancel_and_deadline_stop_the_loop() {
        let flag = AtomicBool::new(true);
        let result: Result<(), _> = Retry::new(&instant_policy(5))
            .cancel_on(&flag)
            .run_blocking(|_| Err(Transient(())));
        assert_eq!(result.unwrap_err().gave_up, GaveUp::Cancelled);
        let slow = Policy {
            initial_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(10),
            ..instant_policy(5)
        };
        let result: Result<(), _> = Retry::new(&slow)
            .deadline(Utc::now() + chrono::Duration::seconds(1))
            .run_blocking(|_| Err(Transient(())));
        assert_eq!(result.unwrap_err().gave_up, GaveUp::Deadline);
    }

    /// Counts its reads, moving a manual clock on by a fixed step at each.
    #[derive(Debug)]
    struct CountingClock {
        inner: crate::clock::ManualClock,
        reads: std::sync::atomic::AtomicU32,
    }

    impl CountingClock {
        fn new() -> Self {
            CountingClock {
                inner: crate::clock::ManualClock::new(DateTime::UNIX_EPOCH),
                reads: std::sync::atomic::AtomicU32::new(0),
            }
        }

        fn reads(&self) -> u32 {
            self.reads.load(Ordering::SeqCst)
        }
    }

    impl Clock for CountingClock {
        fn now(&self) -> DateTime<Utc> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.inner.now()
        }
    }

    #[test]
    fn the_success_path_reads_no_clock_without_a_time_budget() {
        let clock = CountingClock::new();
        let result = Retry::new(&instant_policy(3))
            .clock(&clock)
            .run_blocking(|_| Ok::<_, Transient<()>>(1));
        assert_eq!((result.unwrap(), clock.reads()), (1, 0));
    }

    #[test]
    fn a_time_budget_counts_from_the_first_attempts_start() {
        // Issue #8 moved the clock read off the success path; with `max_elapsed` it must
        // still happen before the first attempt, or a slow first attempt would not count.
        let policy = Policy {
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(1),
            max_elapsed: Some(Duration::from_secs(10)),
            ..instant_policy(5)
        };
        let clock = CountingClock::new();
        let mut calls = 0;
        let result: Result<(), _> = Retry::new(&policy).clock(&clock).run_blocking(|_| {
            calls += 1;
            clock.inner.advance(chrono::Duration::seconds(10));
            Err(Transient("slow"))
        });
        let error = result.unwrap_err();
        assert_eq!(
            (calls, error.attempts, error.gave_up),
            (1, 1, GaveUp::Exhausted),
            "10s spent in the first attempt leave no room for a retry 1s later"
        );
        assert_eq!(clock.reads(), 2, "the start, then the failure");
    }

    #[test]
    fn async_code_retries_with_its_own_sleep() {
        let mut slept = Vec::new();
        let policy = Policy {
            initial_delay: Duration::from_millis(3),
            ..instant_policy(3)
        };
        let future = Retry::new(&policy).run(
            |attempt| async move {
                if attempt < 3 {
                    Err(Transient(attempt))
                } else {
                    Ok(attempt)
                }
            },
            |delay| {
                slept.push(delay);
                std::future::ready(())
            },
        );
        let value = futures_lite_block_on(future);
        assert_eq!(value.unwrap(), 3);
        assert_eq!(slept.len(), 2);
    }

    /// Drives a future whose sleeps are ready at once.
    fn futures_lite_block_on<F: Future>(future: F) -> F::Output {
        use std::task::{Context, Poll, Waker};
        let mut future = std::pin::pin!(future);
        let mut context = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(value) = future.as_mut().poll(&mut context) {
                return value;
            }
        }
    }
}
