//! The session pool: per integration, logged-in browser contexts kept warm between
//! actions, each with its own cookie jar and its own sign-in.
//!
//! Several sessions let jobs of one integration run side by side in apps that serialise
//! the requests of one server-side session (PHP's session lock, Rails' cookie store
//! races). The pool grows only when every session is busy, up to a bound; a session is
//! handed back after its action and taken by the next one, so a warm page, a proven
//! login and the app's own caches are reused. The bookkeeping here knows nothing of
//! the browser: `T` is whatever one session holds.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;

use crate::browser::SessionState;

/// An idle session is closed after this long unused: apps expire idle sessions too,
/// and an idle context holds a renderer.
pub const IDLE_TTL: Duration = Duration::from_secs(5 * 60);

/// Cookie jars of sessions lost with a dead browser, kept to restore (checked first).
const SPARE_JARS: usize = 8;

/// One session of an integration.
pub struct Session<T> {
    pub item: T,
    /// The pool generation it was made in: a forgotten pool's sessions are not reused.
    generation: u64,
    /// Signed in (by a login, or restored cookies of one): the check decides.
    pub logged_in: bool,
    /// The last time a session check or an action proved the session logged in.
    pub proven_at: Option<Instant>,
    /// When this session's login succeeded.
    pub login_at: Option<Instant>,
    /// The cookies after its last login or action, to restore it after a browser crash.
    pub jar: Option<SessionState>,
    /// Made to log in and not logged in yet (counted in [`Pool::pending`]).
    pending: bool,
}

impl<T> Session<T> {
    /// True when the session proved itself less than `trust` ago.
    pub fn trusted(&self, trust: Duration, now: Instant) -> bool {
        self.logged_in
            && self
                .proven_at
                .is_some_and(|p| now.saturating_duration_since(p) < trust)
    }
}

struct Idle<T> {
    session: Session<T>,
    since: Instant,
}

struct Pool<T> {
    generation: u64,
    /// Most recently released last.
    idle: Vec<Idle<T>>,
    /// Sessions idle, in use, or being made.
    live: usize,
    /// New sessions not logged in yet: the pool grows by one sign-in at a time (sign-ins
    /// of an integration run one at a time anyway, each with its own TOTP window).
    pending: usize,
    notify: Arc<Notify>,
    /// The app ended a session when another one signed in: one session from now on.
    single: bool,
    /// The last successful login of any session of this pool.
    last_login: Option<Instant>,
    /// Sessions proven before this must be checked (the password changed).
    distrust_before: Option<Instant>,
    spare_jars: Vec<SessionState>,
}

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Pool {
            generation: 0,
            idle: Vec::new(),
            live: 0,
            pending: 0,
            notify: Arc::new(Notify::new()),
            single: false,
            last_login: None,
            distrust_before: None,
            spare_jars: Vec::new(),
        }
    }
}

/// What [`Pools::checkout`] decided.
pub enum Checkout<T> {
    /// An idle session of the pool.
    Warm(Session<T>),
    /// Make a new session (counted in the pool already; [`Pools::abandon`] if making it
    /// fails), restoring `jar` if there is one.
    Grow {
        generation: u64,
        jar: Option<SessionState>,
    },
    /// Wait for a session to come back (`woken`, registered before the pool was
    /// unlocked so no release is missed) or `at_most`, then ask again.
    Wait {
        woken: Pin<Box<OwnedNotified>>,
        at_most: Duration,
    },
}

/// How a session comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Return {
    /// Signed in and usable: keep it for the next action.
    Keep,
    /// Not usable (its login failed, it broke): close it.
    Close,
    /// Its browser died: close it, keep its cookies to restore.
    Crashed,
}

/// The pools of every integration, with one bound on idle sessions across them.
pub struct Pools<T> {
    pools: Mutex<HashMap<String, Pool<T>>>,
    /// Idle sessions at most across every integration (least recently used go first).
    idle_cap: usize,
}

impl<T> Pools<T> {
    pub fn new(idle_cap: usize) -> Pools<T> {
        Pools {
            pools: Mutex::new(HashMap::new()),
            idle_cap: idle_cap.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Pool<T>>> {
        match self.pools.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Takes an idle session of `key`, or says to make one (while fewer than `max` live
    /// and, when `grow_wait` is not zero — no unused TOTP window yet — none lives at
    /// all), or to wait. Sessions that are idle too long or fail `alive` are handed
    /// back in the second value to be closed (their jars kept when the browser died).
    pub fn checkout(
        &self,
        key: &str,
        max: usize,
        grow_wait: Duration,
        now: Instant,
        alive: impl Fn(&T) -> bool,
    ) -> (Checkout<T>, Vec<T>) {
        let mut pools = self.lock();
        let pool = pools.entry(key.to_owned()).or_default();
        let mut closing = Vec::new();
        let mut kept = Vec::with_capacity(pool.idle.len());
        for i in pool.idle.drain(..) {
            if !alive(&i.session.item) {
                if let Some(jar) = i.session.jar {
                    pool.spare_jars.push(jar);
                }
                pool.live = pool.live.saturating_sub(1);
                closing.push(i.session.item);
            } else if now.saturating_duration_since(i.since) >= IDLE_TTL {
                pool.live = pool.live.saturating_sub(1);
                closing.push(i.session.item);
            } else {
                kept.push(i);
            }
        }
        pool.idle = kept;
        let excess = pool.spare_jars.len().saturating_sub(SPARE_JARS);
        pool.spare_jars.drain(..excess);
        if let Some(i) = pool.idle.pop() {
            let mut s = i.session;
            if pool
                .distrust_before
                .is_some_and(|d| s.proven_at.is_none_or(|p| p < d))
            {
                s.proven_at = None;
            }
            return (Checkout::Warm(s), closing);
        }
        let max = if pool.single { 1 } else { max.max(1) };
        if pool.live < max && (pool.live == 0 || (grow_wait.is_zero() && pool.pending == 0)) {
            pool.live += 1;
            let jar = pool.spare_jars.pop();
            if jar.is_none() {
                pool.pending += 1;
            }
            return (
                Checkout::Grow {
                    generation: pool.generation,
                    jar,
                },
                closing,
            );
        }
        let at_most = if pool.live < max && pool.pending == 0 {
            grow_wait
        } else {
            // Woken by a release; the bound only guards against a lost wake-up.
            Duration::from_secs(5)
        };
        let mut woken = Box::pin(pool.notify.clone().notified_owned());
        woken.as_mut().enable();
        (Checkout::Wait { woken, at_most }, closing)
    }

    /// A new session of `generation` (from [`Checkout::Grow`]).
    pub fn session(&self, item: T, generation: u64, jar: Option<SessionState>) -> Session<T> {
        Session {
            item,
            generation,
            logged_in: jar.is_some(),
            proven_at: None,
            login_at: None,
            pending: jar.is_none(),
            jar,
        }
    }

    /// Counts a session about to be made whatever the bound (a forced fresh login);
    /// returns the generation to make it in.
    pub fn grow(&self, key: &str) -> u64 {
        let mut pools = self.lock();
        let pool = pools.entry(key.to_owned()).or_default();
        pool.live += 1;
        pool.pending += 1;
        pool.generation
    }

    /// Making a session from [`Checkout::Grow`] (or [`grow`](Self::grow)) failed;
    /// `had_jar`: the grow handed out a jar; `keep`: a jar to keep for the next grow
    /// (the browser died: after its relaunch the jar still restores the session).
    pub fn abandon(&self, key: &str, had_jar: bool, keep: Option<SessionState>) {
        let mut pools = self.lock();
        if let Some(pool) = pools.get_mut(key) {
            pool.live = pool.live.saturating_sub(1);
            if !had_jar {
                pool.pending = pool.pending.saturating_sub(1);
            }
            if let Some(j) = keep {
                pool.spare_jars.push(j);
            }
            pool.notify.notify_waiters();
        }
    }

    /// Hands a session back. Returns what to close: the session itself unless it is
    /// kept, and idle sessions beyond the bound across integrations.
    pub fn release(&self, key: &str, s: Session<T>, how: Return, now: Instant) -> Vec<T> {
        let mut pools = self.lock();
        let mut closing = Vec::new();
        {
            let pool = pools.entry(key.to_owned()).or_default();
            if s.pending {
                pool.pending = pool.pending.saturating_sub(1);
            }
            let over = pool.single && pool.live > 1;
            let keep = how == Return::Keep && s.generation == pool.generation && !over;
            if keep {
                pool.idle.push(Idle {
                    session: s,
                    since: now,
                });
            } else {
                if how == Return::Crashed
                    && s.generation == pool.generation
                    && let Some(jar) = s.jar
                {
                    pool.spare_jars.push(jar);
                }
                pool.live = pool.live.saturating_sub(1);
                closing.push(s.item);
            }
            pool.notify.notify_waiters();
        }
        // The least recently used idle sessions go beyond the bound.
        loop {
            let idle: usize = pools.values().map(|p| p.idle.len()).sum();
            if idle <= self.idle_cap {
                break;
            }
            let oldest = pools
                .iter()
                .filter_map(|(k, p)| p.idle.first().map(|i| (k.clone(), i.since)))
                .min_by_key(|(_, since)| *since)
                .map(|(k, _)| k);
            let Some(k) = oldest else { break };
            if let Some(p) = pools.get_mut(&k) {
                let i = p.idle.remove(0);
                p.live = p.live.saturating_sub(1);
                closing.push(i.session.item);
            }
        }
        closing
    }

    /// A session of `key` signed in now.
    pub fn logged_in(&self, key: &str, s: &mut Session<T>, now: Instant) {
        s.logged_in = true;
        s.login_at = Some(now);
        s.proven_at = Some(now);
        let mut pools = self.lock();
        let pool = pools.entry(key.to_owned()).or_default();
        pool.last_login = Some(now);
        if s.pending {
            s.pending = false;
            pool.pending = pool.pending.saturating_sub(1);
        }
        // A waiter may grow now (or see the TOTP window it needs is taken).
        pool.notify.notify_waiters();
    }

    /// The check found a kept session of `key` logged out. If another session signed in
    /// since this one did, the app allows one session per account: the
    /// pool keeps one from now on. True when that was learnt now.
    pub fn lost(&self, key: &str, s: &mut Session<T>) -> bool {
        // Since its own sign-in: a sibling's sign-in may end it at any point after.
        let since = s.login_at.or(s.proven_at);
        s.logged_in = false;
        s.proven_at = None;
        let mut pools = self.lock();
        let pool = pools.entry(key.to_owned()).or_default();
        let other_login_after = match (pool.last_login, since) {
            (Some(last), Some(mine)) => last > mine && s.login_at != Some(last),
            _ => false,
        };
        if other_login_after && pool.live > 1 && !pool.single {
            pool.single = true;
            return true;
        }
        false
    }

    /// Sessions of `key` must pass their check before their next action (the service
    /// account's password changed).
    pub fn distrust(&self, key: &str, now: Instant) {
        let mut pools = self.lock();
        pools.entry(key.to_owned()).or_default().distrust_before = Some(now);
    }

    /// Forgets the sessions of `key`: idle ones are returned to be closed, ones in use
    /// are closed when they come back.
    pub fn forget(&self, key: &str) -> Vec<T> {
        let mut pools = self.lock();
        let Some(pool) = pools.get_mut(key) else {
            return Vec::new();
        };
        pool.generation += 1;
        pool.spare_jars.clear();
        let closing: Vec<T> = pool.idle.drain(..).map(|i| i.session.item).collect();
        pool.live = pool.live.saturating_sub(closing.len());
        pool.notify.notify_waiters();
        closing
    }

    /// Every idle session, to be closed (shutdown).
    pub fn drain(&self) -> Vec<T> {
        let mut pools = self.lock();
        let mut closing = Vec::new();
        for pool in pools.values_mut() {
            pool.live = pool.live.saturating_sub(pool.idle.len());
            closing.extend(pool.idle.drain(..).map(|i| i.session.item));
            pool.notify.notify_waiters();
        }
        closing
    }

    /// Idle sessions of `key` now (for tests and metrics).
    pub fn idle(&self, key: &str) -> usize {
        self.lock().get(key).map_or(0, |p| p.idle.len())
    }

    /// Sessions of `key` idle, in use or being made.
    pub fn live(&self, key: &str) -> usize {
        self.lock().get(key).map_or(0, |p| p.live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new session, logged in at `now`.
    fn grow(p: &Pools<u32>, key: &str, max: usize, item: u32, now: Instant) -> Session<u32> {
        match p.checkout(key, max, Duration::ZERO, now, |_| true).0 {
            Checkout::Grow { generation, jar } => {
                let mut s = p.session(item, generation, jar);
                p.logged_in(key, &mut s, now);
                s
            }
            Checkout::Warm(_) => panic!("expected to grow, got a warm session"),
            Checkout::Wait { .. } => panic!("expected to grow, got a wait"),
        }
    }

    fn warm(p: &Pools<u32>, key: &str, max: usize, now: Instant) -> Option<Session<u32>> {
        match p.checkout(key, max, Duration::ZERO, now, |_| true).0 {
            Checkout::Warm(s) => Some(s),
            _ => None,
        }
    }

    #[test]
    fn grows_to_the_bound_then_waits_then_reuses_the_most_recent() {
        let p = Pools::new(8);
        let now = Instant::now();
        let a = grow(&p, "k", 2, 1, now);
        let b = grow(&p, "k", 2, 2, now);
        assert!(matches!(
            p.checkout("k", 2, Duration::ZERO, now, |_| true).0,
            Checkout::Wait { .. }
        ));
        assert!(p.release("k", a, Return::Keep, now).is_empty());
        assert!(p.release("k", b, Return::Keep, now).is_empty());
        assert_eq!((p.idle("k"), p.live("k")), (2, 2));
        assert_eq!(warm(&p, "k", 2, now).map(|s| s.item), Some(2));
    }

    #[test]
    fn grows_without_a_free_totp_window_only_when_none_lives() {
        let p: Pools<u32> = Pools::new(8);
        let now = Instant::now();
        let wait = Duration::from_secs(7);
        let first = p.checkout("k", 4, wait, now, |_| true).0;
        let Checkout::Grow { generation, jar } = first else {
            panic!("the first session does not wait for a window");
        };
        let mut a = p.session(1, generation, jar);
        p.logged_in("k", &mut a, now);
        match p.checkout("k", 4, wait, now, |_| true).0 {
            Checkout::Wait { at_most, .. } => assert_eq!(at_most, wait),
            _ => panic!("a second session waits for the window or a release"),
        }
    }

    #[test]
    fn the_pool_grows_by_one_sign_in_at_a_time() {
        let p: Pools<u32> = Pools::new(8);
        let now = Instant::now();
        let grow_raw = |item: u32| match p.checkout("k", 4, Duration::ZERO, now, |_| true).0 {
            Checkout::Grow { generation, jar } => p.session(item, generation, jar),
            _ => panic!("expected to grow"),
        };
        let _a = grow(&p, "k", 4, 1, now);
        let mut b = grow_raw(2);
        // b has not logged in yet: a third session waits instead of queueing a sign-in
        // that would need a TOTP window nobody knows is free.
        assert!(matches!(
            p.checkout("k", 4, Duration::ZERO, now, |_| true).0,
            Checkout::Wait { .. }
        ));
        p.logged_in("k", &mut b, now);
        let c = grow_raw(3);
        // A session that comes back without logging in no longer counts as pending.
        p.release("k", c, Return::Close, now);
        assert!(matches!(
            p.checkout("k", 4, Duration::ZERO, now, |_| true).0,
            Checkout::Grow { .. }
        ));
    }

    #[test]
    fn closed_and_forgotten_sessions_are_not_reused() {
        let p = Pools::new(8);
        let now = Instant::now();
        let a = grow(&p, "k", 2, 1, now);
        assert_eq!(p.release("k", a, Return::Close, now), vec![1]);
        assert_eq!(p.live("k"), 0);
        let b = grow(&p, "k", 2, 2, now);
        let c = grow(&p, "k", 2, 3, now);
        p.release("k", b, Return::Keep, now);
        assert_eq!(p.forget("k"), vec![2]);
        // In use while forgotten: closed when it comes back.
        assert_eq!(p.release("k", c, Return::Keep, now), vec![3]);
        assert_eq!((p.idle("k"), p.live("k")), (0, 0));
    }

    #[test]
    fn idle_sessions_expire_and_dead_ones_leave_their_jar() {
        let p = Pools::new(8);
        let now = Instant::now();
        let mut a = grow(&p, "k", 2, 1, now);
        a.jar = Some(SessionState::default());
        let b = grow(&p, "k", 2, 2, now);
        p.release("k", a, Return::Keep, now);
        p.release("k", b, Return::Keep, now);
        let later = now + IDLE_TTL / 2;
        let (c, closing) = p.checkout("k", 2, Duration::ZERO, later, |i| *i != 1);
        assert_eq!(closing, vec![1]);
        assert!(matches!(c, Checkout::Warm(ref s) if s.item == 2));
        let (c, _) = p.checkout("k", 2, Duration::ZERO, later, |_| true);
        let jar = match c {
            Checkout::Grow { jar, .. } => jar,
            _ => panic!("grows with the jar"),
        };
        assert!(jar.is_some(), "the dead session's jar");
        // Restoring it failed because the browser was gone too: the jar is kept for
        // the grow after the relaunch.
        p.abandon("k", true, jar);
        assert_eq!(p.live("k"), 1);
        match p.checkout("k", 2, Duration::ZERO, later, |_| true).0 {
            Checkout::Grow { jar, .. } => assert!(jar.is_some(), "the jar again"),
            _ => panic!("grows with the jar again"),
        }
        let much_later = now + IDLE_TTL * 2;
        p.release(
            "k",
            p.session(3, 0, None),
            Return::Keep,
            much_later - IDLE_TTL,
        );
        let (_, closing) = p.checkout("k", 2, Duration::ZERO, much_later, |_| true);
        assert_eq!(closing, vec![3]);
    }

    #[test]
    fn idle_sessions_across_integrations_are_bounded_least_recent_first() {
        let p = Pools::new(2);
        let t0 = Instant::now();
        let a = grow(&p, "a", 2, 1, t0);
        let b = grow(&p, "b", 2, 2, t0);
        let c = grow(&p, "c", 2, 3, t0);
        p.release("a", a, Return::Keep, t0);
        p.release("b", b, Return::Keep, t0 + Duration::from_secs(1));
        let closing = p.release("c", c, Return::Keep, t0 + Duration::from_secs(2));
        assert_eq!(closing, vec![1]);
        assert_eq!((p.idle("a"), p.live("a")), (0, 0));
    }

    #[test]
    fn a_session_lost_after_a_sibling_signed_in_means_one_session_per_account() {
        let p = Pools::new(8);
        let t0 = Instant::now();
        let mut a = grow(&p, "k", 4, 1, t0);
        p.logged_in("k", &mut a, t0);
        let mut b = grow(&p, "k", 4, 2, t0);
        p.logged_in("k", &mut b, t0 + Duration::from_secs(1));
        assert!(p.lost("k", &mut a), "a was signed out by b's sign-in");
        assert!(!a.logged_in);
        // Over the learnt bound of one: the first to come back (the lost one, in the
        // driver) is closed, the other kept.
        assert_eq!(p.release("k", a, Return::Keep, t0), vec![1]);
        assert!(p.release("k", b, Return::Keep, t0).is_empty());
        assert_eq!(p.live("k"), 1);
        assert_eq!(warm(&p, "k", 4, t0).map(|s| s.item), Some(2));
        assert!(matches!(
            p.checkout("k", 4, Duration::ZERO, t0, |_| true).0,
            Checkout::Wait { .. }
        ));
    }

    #[test]
    fn a_session_lost_without_a_later_sibling_sign_in_is_an_ordinary_expiry() {
        let p = Pools::new(8);
        let t0 = Instant::now();
        let mut a = grow(&p, "k", 4, 1, t0);
        let mut b = grow(&p, "k", 4, 2, t0);
        p.logged_in("k", &mut b, t0);
        p.logged_in("k", &mut a, t0 + Duration::from_secs(1));
        a.proven_at = Some(t0 + Duration::from_secs(2));
        assert!(!p.lost("k", &mut a));
    }

    #[test]
    fn distrust_makes_sessions_proven_before_it_check_again() {
        let p = Pools::new(8);
        let t0 = Instant::now();
        let mut a = grow(&p, "k", 2, 1, t0);
        p.logged_in("k", &mut a, t0);
        assert!(a.trusted(Duration::from_secs(60), t0 + Duration::from_secs(1)));
        p.release("k", a, Return::Keep, t0);
        p.distrust("k", t0 + Duration::from_secs(1));
        let a = warm(&p, "k", 2, t0 + Duration::from_secs(2)).expect("warm");
        assert!(!a.trusted(Duration::from_secs(60), t0 + Duration::from_secs(2)));
        assert!(a.logged_in);
    }

    #[tokio::test]
    async fn a_waiter_is_woken_by_a_release() {
        let p = Arc::new(Pools::new(8));
        let now = Instant::now();
        let a = grow(&p, "k", 1, 1, now);
        let Checkout::Wait { woken, .. } = p.checkout("k", 1, Duration::ZERO, now, |_| true).0
        else {
            panic!("waits");
        };
        // Released before anyone awaits: the wake-up is not lost.
        let p2 = p.clone();
        p2.release("k", a, Return::Keep, Instant::now());
        tokio::time::timeout(Duration::from_secs(5), woken)
            .await
            .expect("woken by the release");
        assert!(warm(&p, "k", 1, Instant::now()).is_some());
    }
}
