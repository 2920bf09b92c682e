//! Enforcer sessions: one agent instance talking to one connector, made of client flows
//! (agent <-> proxy) and backend flows (proxy <-> upstream). Protocol session ids
//! (Mcp-Session-Id), where the era has them, are attributes. Idle sessions are closed on both
//! legs: their client connections end and their upstream pool is dropped.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime},
};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub instance_cgroup_id: u64,
    pub connector: String,
}

/// Who a session belongs to, for listings.
#[derive(Debug, Clone, Serialize)]
pub struct Owner {
    pub agent: String,
    pub instance: String,
    pub instance_id: u64,
    pub user: String,
}

pub struct Session<T> {
    pub id: String,
    pub owner: Owner,
    pub connector: String,
    pub created: SystemTime,
    pub idle_limit: Duration,
    started: Instant,
    last_activity_ms: AtomicU64,
    calls: AtomicU64,
    in_flight: AtomicUsize,
    client_flows: AtomicUsize,
    protocol_ids: Mutex<BTreeSet<String>>,
    /// Distinct tools called in this session (unique tools per session, for metrics).
    tools: Mutex<BTreeSet<String>>,
    /// MCP clientInfo the agent announced (client surface; the client's word).
    client: Mutex<Option<String>>,
    /// The last session-era request sent upstream (URI and headers, credential included), to
    /// end the server's session with a DELETE when an admin terminates this one.
    pub last_upstream: Mutex<Option<(http::Uri, http::HeaderMap)>>,
    cancel: CancellationToken,
    /// Why the session ended (set before `cancel` fires), for the errors in-flight calls get.
    close_reason: Mutex<Option<CloseReason>>,
    /// Per-session state of the layer that owns the registry (the proxy's upstream pool).
    pub state: T,
}

/// Why a session was ended: a reason code the agent's error carries, and a sentence.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CloseReason {
    /// `session_terminated`, `revoked`, `idle_timeout`, `connector_disabled`, ...
    pub code: String,
    pub message: String,
}

impl CloseReason {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// A serialisable view of a session.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub id: String,
    pub owner: Owner,
    pub connector: String,
    pub state: &'static str,
    pub created: String,
    pub idle_ms: u64,
    pub idle_limit_ms: u64,
    pub calls: u64,
    pub in_flight: usize,
    pub client_flows: usize,
    pub protocol_session_ids: Vec<String>,
}

impl<T> Session<T> {
    pub fn touch(&self) {
        self.last_activity_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub fn count_call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    pub fn saw_tool(&self, name: &str) {
        let mut tools = self.tools.lock().unwrap_or_else(|e| e.into_inner());
        if !tools.contains(name) {
            tools.insert(name.to_string());
        }
    }

    pub fn add_protocol_id(&self, id: &str) {
        // Every call of a session names it: allocate only for a new one.
        let mut ids = self.protocol_ids.lock().unwrap_or_else(|e| e.into_inner());
        if !ids.contains(id) {
            ids.insert(id.to_string());
        }
    }

    pub fn set_client(&self, client: &str) {
        *self.client.lock().unwrap_or_else(|e| e.into_inner()) = Some(client.to_string());
    }

    pub fn protocol_ids(&self) -> Vec<String> {
        self.protocol_ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    pub fn client(&self) -> Option<String> {
        self.client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn state_name(&self) -> &'static str {
        if self.is_closed() {
            "closed"
        } else if self.in_flight.load(Ordering::Relaxed) > 0 {
            "active"
        } else {
            "idle"
        }
    }

    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    pub fn is_closed(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Why the session ended; None while it is open.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn client_flows(&self) -> usize {
        self.client_flows.load(Ordering::Relaxed)
    }

    fn close(&self, reason: &CloseReason) {
        self.close_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(|| reason.clone());
        self.cancel.cancel();
    }

    /// Marks a request in flight until the guard drops; in-flight sessions are never idle.
    pub fn request(self: &Arc<Self>) -> ActivityGuard<T> {
        self.touch();
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        ActivityGuard {
            session: self.clone(),
            counter: Counter::InFlight,
        }
    }

    /// Marks a client connection attached until the guard drops.
    pub fn client_flow(self: &Arc<Self>) -> ActivityGuard<T> {
        self.client_flows.fetch_add(1, Ordering::Relaxed);
        ActivityGuard {
            session: self.clone(),
            counter: Counter::ClientFlow,
        }
    }

    fn idle_for(&self) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_activity_ms.load(Ordering::Relaxed)))
    }

    pub fn info(&self) -> SessionInfo {
        SessionInfo {
            id: self.id.clone(),
            owner: self.owner.clone(),
            connector: self.connector.clone(),
            state: self.state_name(),
            created: humantime::format_rfc3339_seconds(self.created).to_string(),
            idle_ms: self.idle_for().as_millis() as u64,
            idle_limit_ms: self.idle_limit.as_millis() as u64,
            calls: self.calls.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            client_flows: self.client_flows.load(Ordering::Relaxed),
            protocol_session_ids: self
                .protocol_ids
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned()
                .collect(),
        }
    }
}

enum Counter {
    InFlight,
    ClientFlow,
}

pub struct ActivityGuard<T> {
    session: Arc<Session<T>>,
    counter: Counter,
}

impl<T> Drop for ActivityGuard<T> {
    fn drop(&mut self) {
        self.session.touch();
        match self.counter {
            Counter::InFlight => self.session.in_flight.fetch_sub(1, Ordering::Relaxed),
            Counter::ClientFlow => self.session.client_flows.fetch_sub(1, Ordering::Relaxed),
        };
    }
}

/// What the registry tells its observer (metrics).
pub enum SessionEvent {
    Started,
    Ended {
        duration: Duration,
        calls: u64,
        unique_tools: u64,
    },
}

type Observer = Box<dyn Fn(SessionEvent) + Send + Sync>;

pub struct Registry<T> {
    sessions: Mutex<HashMap<SessionKey, Arc<Session<T>>>>,
    next: AtomicU64,
    observer: std::sync::OnceLock<Observer>,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            observer: std::sync::OnceLock::new(),
        }
    }
}

impl<T> Registry<T> {
    /// Set (once) who hears about sessions starting and ending.
    pub fn observe(&self, f: impl Fn(SessionEvent) + Send + Sync + 'static) {
        let _ = self.observer.set(Box::new(f));
    }

    fn tell(&self, event: SessionEvent) {
        if let Some(f) = self.observer.get() {
            f(event);
        }
    }

    /// The live session for `key`, or a new one built with `state`.
    pub fn get_or_create(
        &self,
        key: SessionKey,
        owner: impl FnOnce() -> Owner,
        idle_limit: Duration,
        state: impl FnOnce() -> T,
    ) -> Arc<Session<T>> {
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get(&key) {
            if !s.is_closed() {
                return s.clone();
            }
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let session = Arc::new(Session {
            id: format!("s-{:x}-{n}", std::process::id()),
            owner: owner(),
            connector: key.connector.clone(),
            created: SystemTime::now(),
            idle_limit,
            started,
            last_activity_ms: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            client_flows: AtomicUsize::new(0),
            protocol_ids: Mutex::new(BTreeSet::new()),
            tools: Mutex::new(BTreeSet::new()),
            client: Mutex::new(None),
            last_upstream: Mutex::new(None),
            cancel: CancellationToken::new(),
            close_reason: Mutex::new(None),
            state: state(),
        });
        map.insert(key, session.clone());
        self.tell(SessionEvent::Started);
        session
    }

    /// The live sessions matching `pred`.
    pub fn find(&self, pred: impl Fn(&Session<T>) -> bool) -> Vec<Arc<Session<T>>> {
        let map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        map.values().filter(|s| pred(s)).cloned().collect()
    }

    pub fn list(&self) -> Vec<SessionInfo> {
        let map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = map.values().map(|s| s.info()).collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Close and forget sessions idle past their limit; returns their ids.
    pub fn reap_idle(&self) -> Vec<String> {
        self.close_where(
            |s| s.in_flight.load(Ordering::Relaxed) == 0 && s.idle_for() > s.idle_limit,
            &CloseReason::new("idle_timeout", "the session was idle past its limit"),
        )
    }

    /// Close and forget the sessions matching `pred` (termination, revocation); their
    /// in-flight calls are answered with an error carrying `reason`.
    pub fn close_where(
        &self,
        pred: impl Fn(&Session<T>) -> bool,
        reason: &CloseReason,
    ) -> Vec<String> {
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let mut closed = Vec::new();
        let mut ended = Vec::new();
        map.retain(|_, s| {
            if pred(s) {
                s.close(reason);
                closed.push(s.id.clone());
                ended.push(SessionEvent::Ended {
                    duration: s.started.elapsed(),
                    calls: s.calls.load(Ordering::Relaxed),
                    unique_tools: s.tools.lock().unwrap_or_else(|e| e.into_inner()).len() as u64,
                });
                false
            } else {
                true
            }
        });
        drop(map);
        for e in ended {
            self.tell(e);
        }
        closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner {
            agent: "a".into(),
            instance: "i".into(),
            instance_id: 7,
            user: "u".into(),
        }
    }

    fn key(c: &str) -> SessionKey {
        SessionKey {
            instance_cgroup_id: 7,
            connector: c.into(),
        }
    }

    #[test]
    fn one_session_per_instance_and_connector() {
        let r: Registry<()> = Registry::default();
        let a = r.get_or_create(key("x"), owner, Duration::from_secs(60), || ());
        let b = r.get_or_create(key("x"), owner, Duration::from_secs(60), || ());
        let c = r.get_or_create(key("y"), owner, Duration::from_secs(60), || ());
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        a.add_protocol_id("abc");
        a.count_call();
        let info = r.list();
        assert_eq!(info.len(), 2);
        assert_eq!(
            info.iter()
                .find(|i| i.id == a.id)
                .unwrap()
                .protocol_session_ids,
            vec!["abc"]
        );
    }

    #[test]
    fn idle_sessions_are_closed_unless_busy() {
        let r: Registry<()> = Registry::default();
        let busy = r.get_or_create(key("busy"), owner, Duration::from_millis(10), || ());
        let idle = r.get_or_create(key("idle"), owner, Duration::from_millis(10), || ());
        let _in_flight = busy.request();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(r.reap_idle(), vec![idle.id.clone()]);
        assert!(idle.is_closed());
        assert!(!busy.is_closed());
        // A closed session is replaced by a fresh one.
        let again = r.get_or_create(key("idle"), owner, Duration::from_millis(10), || ());
        assert_ne!(again.id, idle.id);
    }
}
