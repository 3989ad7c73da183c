//! Retrying transient S3 failures: [`RetryPolicy`] (exponential backoff with
//! jitter, `Retry-After` honoured, bounded by a number of attempts and a total
//! time) and the loop that applies it.
//!
//! The decision is a pure function ([`RetryPolicy::decide`]) and the loop takes its
//! clock and its randomness from the caller, so both are tested without sleeping.

use std::fmt;
use std::time::{Duration, Instant};

use steward_repo::BackendError;

use crate::config::ConfigError;

/// How transient failures are retried within one backend call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubled for each further one.
    pub initial_backoff: Duration,
    /// Largest backoff between two attempts (a server's `Retry-After` may be longer).
    pub max_backoff: Duration,
    /// No attempt starts later than this after the first one began; a wait that
    /// would end later gives up at once.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, backoff 0.25 s doubling up to 10 s, at most 2 minutes in all.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
            max_elapsed: Duration::from_secs(120),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Wait this long, then try again.
    Retry(Duration),
    /// Stop and report the failure.
    GiveUp(GiveUp),
}

/// Why retrying stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// All [`RetryPolicy::max_attempts`] were used.
    Attempts,
    /// The next backoff would end after [`RetryPolicy::max_elapsed`].
    TimeLimit,
    /// The server asked (`Retry-After`) to wait longer than the time left.
    RetryAfterTooLong(Duration),
}

impl RetryPolicy {
    /// Refuses policies that cannot work (no attempt at all).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_attempts == 0 {
            return Err(ConfigError::Invalid(
                "retry.max_attempts is 0: at least one attempt is needed (5 is the default)".into(),
            ));
        }
        Ok(())
    }

    /// The backoff after `failed` failed attempts (1 for the first failure), with
    /// "equal jitter": a random point in the upper half of the exponential step.
    /// `jitter` is in `[0, 1)`; values outside are clamped.
    pub fn backoff(&self, failed: u32, jitter: f64) -> Duration {
        let exp = failed.saturating_sub(1).min(32);
        let base = self
            .initial_backoff
            .saturating_mul(1u32 << exp.min(31))
            .min(self.max_backoff);
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.5
        };
        let half = base / 2;
        half + half.mul_f64(jitter)
    }

    /// What to do after `failed` failed attempts, `elapsed` after the first began,
    /// when the server asked to wait `retry_after` (from a `Retry-After` header).
    /// A `Retry-After` replaces the computed backoff (it may be shorter or longer).
    pub fn decide(
        &self,
        failed: u32,
        elapsed: Duration,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> RetryDecision {
        if failed >= self.max_attempts {
            return RetryDecision::GiveUp(GiveUp::Attempts);
        }
        let delay = retry_after.unwrap_or_else(|| self.backoff(failed, jitter));
        if elapsed.saturating_add(delay) > self.max_elapsed {
            return RetryDecision::GiveUp(match retry_after {
                Some(ra) => GiveUp::RetryAfterTooLong(ra),
                None => GiveUp::TimeLimit,
            });
        }
        RetryDecision::Retry(delay)
    }
}

/// The kinds of retryable failure, for the final message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// No connection (refused, DNS, no route, connect timeout).
    Unreachable,
    /// The request timed out after connecting.
    Timeout,
    /// The connection broke mid-request.
    ConnectionLost,
    /// The server answered 408, 429, 5xx or a retryable S3 error.
    Server,
}

/// A failure that may go away.
#[derive(Debug, Clone)]
pub(crate) struct Retryable {
    pub kind: FailureKind,
    /// What happened, e.g. `connection refused` or `HTTP 503 SlowDown: ...`.
    pub detail: String,
    /// The server's `Retry-After`, if any.
    pub retry_after: Option<Duration>,
}

/// How one attempt failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Not retried.
    Final(BackendError),
    /// Retried according to the policy.
    Retry(Retryable),
}

/// Retrying stopped on a retryable failure.
#[derive(Debug)]
pub(crate) struct Exhausted {
    pub attempts: u32,
    pub last: Retryable,
    pub why: GiveUp,
    pub elapsed: Duration,
}

/// Time and sleeping, injectable for tests.
pub(crate) trait RetryClock: Send + Sync + fmt::Debug {
    fn now(&self) -> Instant;
    fn sleep(&self, d: Duration);
}

/// The real clock.
#[derive(Debug, Default)]
pub(crate) struct SystemClock;

impl RetryClock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// Runs `op` (given the 1-based attempt number) until it succeeds, fails finally,
/// or the policy gives up. `on_retry(attempt, failure, delay)` is called before
/// each wait (for logging).
pub(crate) fn run<T>(
    policy: &RetryPolicy,
    clock: &dyn RetryClock,
    jitter: &mut dyn FnMut() -> f64,
    mut op: impl FnMut(u32) -> Result<T, Failure>,
    mut on_retry: impl FnMut(u32, &Retryable, Duration),
) -> Result<T, Result<BackendError, Exhausted>> {
    let start = clock.now();
    let mut attempt = 1u32;
    loop {
        match op(attempt) {
            Ok(v) => return Ok(v),
            Err(Failure::Final(e)) => return Err(Ok(e)),
            Err(Failure::Retry(r)) => {
                let elapsed = clock.now().saturating_duration_since(start);
                match policy.decide(attempt, elapsed, r.retry_after, jitter()) {
                    RetryDecision::Retry(delay) => {
                        on_retry(attempt, &r, delay);
                        if !delay.is_zero() {
                            clock.sleep(delay);
                        }
                        attempt += 1;
                    }
                    RetryDecision::GiveUp(why) => {
                        return Err(Err(Exhausted {
                            attempts: attempt,
                            last: r,
                            why,
                            elapsed,
                        }))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A clock that only moves when slept on, recording the sleeps.
    #[derive(Debug)]
    struct FakeClock {
        start: Instant,
        offset: Mutex<Duration>,
        sleeps: Mutex<Vec<Duration>>,
    }

    impl FakeClock {
        fn new() -> Self {
            FakeClock {
                start: Instant::now(),
                offset: Mutex::new(Duration::ZERO),
                sleeps: Mutex::new(Vec::new()),
            }
        }
        fn sleeps(&self) -> Vec<Duration> {
            self.sleeps.lock().unwrap().clone()
        }
    }

    impl RetryClock for FakeClock {
        fn now(&self) -> Instant {
            self.start + *self.offset.lock().unwrap()
        }
        fn sleep(&self, d: Duration) {
            *self.offset.lock().unwrap() += d;
            self.sleeps.lock().unwrap().push(d);
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            max_elapsed: Duration::from_secs(60),
        }
    }

    fn server_error(retry_after: Option<Duration>) -> Failure {
        Failure::Retry(Retryable {
            kind: FailureKind::Server,
            detail: "HTTP 503 SlowDown".into(),
            retry_after,
        })
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let p = policy();
        assert_eq!(p.backoff(1, 0.0), Duration::from_millis(50));
        assert_eq!(p.backoff(1, 1.0), Duration::from_millis(100));
        assert_eq!(p.backoff(2, 1.0), Duration::from_millis(200));
        assert_eq!(p.backoff(3, 0.5), Duration::from_millis(300));
        assert_eq!(p.backoff(10, 1.0), Duration::from_millis(1000));
        assert_eq!(p.backoff(u32::MAX, 1.0), Duration::from_millis(1000));
        assert_eq!(p.backoff(1, f64::NAN), Duration::from_millis(75));
        assert_eq!(p.backoff(1, 7.0), Duration::from_millis(100));
    }

    #[test]
    fn decide_honours_retry_after_and_bounds() {
        let p = policy();
        assert_eq!(
            p.decide(1, Duration::ZERO, Some(Duration::from_secs(7)), 0.3),
            RetryDecision::Retry(Duration::from_secs(7))
        );
        assert_eq!(
            p.decide(1, Duration::ZERO, Some(Duration::ZERO), 0.3),
            RetryDecision::Retry(Duration::ZERO)
        );
        assert_eq!(
            p.decide(5, Duration::ZERO, None, 0.3),
            RetryDecision::GiveUp(GiveUp::Attempts)
        );
        assert_eq!(
            p.decide(
                1,
                Duration::from_secs(59),
                Some(Duration::from_secs(3600)),
                0.3
            ),
            RetryDecision::GiveUp(GiveUp::RetryAfterTooLong(Duration::from_secs(3600)))
        );
        assert_eq!(
            p.decide(2, Duration::from_millis(59_990), None, 1.0),
            RetryDecision::GiveUp(GiveUp::TimeLimit)
        );
        assert!(RetryPolicy {
            max_attempts: 0,
            ..policy()
        }
        .validate()
        .is_err());
    }

    #[test]
    fn loop_waits_retry_after_then_succeeds() {
        let clock = FakeClock::new();
        let mut calls = 0;
        let mut logged = Vec::new();
        let r = run(
            &policy(),
            &clock,
            &mut || 1.0,
            |attempt| {
                calls += 1;
                match attempt {
                    1 => Err(server_error(Some(Duration::from_secs(3)))),
                    2 => Err(server_error(None)),
                    _ => Ok("done"),
                }
            },
            |a, _, d| logged.push((a, d)),
        );
        assert_eq!(r.unwrap(), "done");
        assert_eq!(calls, 3);
        assert_eq!(
            clock.sleeps(),
            vec![Duration::from_secs(3), Duration::from_millis(200)]
        );
        assert_eq!(logged.len(), 2);
    }

    #[test]
    fn loop_gives_up_after_max_attempts() {
        let clock = FakeClock::new();
        let mut calls = 0;
        let r: Result<(), _> = run(
            &policy(),
            &clock,
            &mut || 0.0,
            |_| {
                calls += 1;
                Err(Failure::Retry(Retryable {
                    kind: FailureKind::Unreachable,
                    detail: "connection refused".into(),
                    retry_after: None,
                }))
            },
            |_, _, _| {},
        );
        let ex = r.unwrap_err().unwrap_err();
        assert_eq!(calls, 5);
        assert_eq!(ex.attempts, 5);
        assert_eq!(ex.why, GiveUp::Attempts);
        assert_eq!(ex.last.detail, "connection refused");
        // 50 + 100 + 200 + 400 ms of backoff (jitter 0 = lower half).
        assert_eq!(
            clock.sleeps().iter().sum::<Duration>(),
            Duration::from_millis(750)
        );
    }

    #[test]
    fn loop_does_not_wait_an_hour_for_retry_after() {
        let clock = FakeClock::new();
        let r: Result<(), _> = run(
            &policy(),
            &clock,
            &mut || 0.5,
            |_| Err(server_error(Some(Duration::from_secs(3600)))),
            |_, _, _| {},
        );
        let ex = r.unwrap_err().unwrap_err();
        assert_eq!(ex.attempts, 1);
        assert_eq!(ex.why, GiveUp::RetryAfterTooLong(Duration::from_secs(3600)));
        assert!(clock.sleeps().is_empty());
    }

    #[test]
    fn loop_stops_on_final_errors() {
        let clock = FakeClock::new();
        let mut calls = 0;
        let r: Result<(), _> = run(
            &policy(),
            &clock,
            &mut || 0.5,
            |_| {
                calls += 1;
                Err(Failure::Final(BackendError::NotFound { what: "x".into() }))
            },
            |_, _, _| {},
        );
        assert!(r.unwrap_err().unwrap().is_not_found());
        assert_eq!(calls, 1);
    }
}
