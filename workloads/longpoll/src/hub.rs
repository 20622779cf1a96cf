//! The hub: what this instance knows about each thread, and who is waiting on it.
//!
//! For each thread the hub keeps the last events it saw ([`Known`]: a contiguous run of
//! sequence numbers ending at the thread's head, as of the feed position the instance has
//! applied) and the polls and event streams waiting on it. Everything is sharded by thread
//! under short, synchronous locks.
//!
//! A held poll is a [`Slot`]. While its task is still deciding (looking at history, filling
//! a gap from sync) the slot is *active*: a new event only flags it and wakes the task. Once
//! the task decides to wait, it *parks* the slot: the socket moves into the slot and the task
//! ends, so a held poll costs its socket and this small record, not a task and buffers. A new
//! event then answers parked slots right here, writing one shared, pre-rendered answer to
//! each socket; a timer wheel answers those whose hold time passes with 204.
//!
//! The order that makes "no event is missed" hold: a slot is registered on its threads
//! before history is read, under the same lock [`Hub::publish`] takes, and the feed position
//! is advanced before the change is published. So an event is either in what the poll reads
//! (history, or a fill from sync "at least as fresh as" the position read after
//! registering), or it reaches the slot through `publish`.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use io360_common::model::{Change, ChangeKind, FeedPos, Seq};
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::event::{Event, poll_body};
use crate::http::{self, Origins};
use crate::metrics::Metrics;

const SHARDS: usize = 32;
const TICK: Duration = Duration::from_millis(100);
/// Parked slots answered by one task during a fan-out.
const CHUNK: usize = 2048;

/// A thread's recent events: sequence numbers `lo + 1 ..= lo + events.len()`, the last being
/// the thread's head as of the instance's feed position.
#[derive(Debug, Default)]
struct Known {
    lo: Seq,
    events: VecDeque<Event>,
}

impl Known {
    fn head(&self) -> Seq {
        self.lo + self.events.len() as Seq
    }
}

#[derive(Default)]
struct ThreadState {
    known: Option<Known>,
    /// Parked and deciding polls by slot id, which grows with each poll: oldest first.
    waiters: BTreeMap<u64, Arc<Slot>>,
    streams: HashMap<u64, Arc<Notify>>,
}

impl ThreadState {
    fn idle(&self) -> bool {
        self.waiters.is_empty() && self.streams.is_empty()
    }
}

#[derive(Default)]
struct Shard {
    threads: HashMap<Arc<str>, ThreadState>,
    /// Events in the order they were added, for the memory budget.
    fifo: VecDeque<(Arc<str>, Seq)>,
    events: usize,
}

/// What history says about a thread after a sequence number.
#[derive(Debug)]
pub enum Look {
    /// These events (at most a batch) follow the sequence number.
    Events(Vec<Event>),
    /// Nothing follows yet: wait.
    Hold,
    /// History does not cover the sequence number (or the client is ahead of it): ask sync.
    Fill,
}

fn look(known: Option<&Known>, since: Seq, batch: usize) -> Look {
    match known {
        Some(k) if since >= k.lo && since < k.head() => {
            let skip = (since - k.lo) as usize;
            Look::Events(k.events.iter().skip(skip).take(batch).cloned().collect())
        }
        Some(k) if since == k.head() => Look::Hold,
        _ => Look::Fill,
    }
}

enum SlotState {
    /// The poll's task is working on it; `notified` says an event arrived meanwhile.
    Active { notified: bool },
    /// Held: the socket waits here.
    Parked(TcpStream),
    /// Answered by a fan-out still writing to other polls: the socket waits here until the
    /// whole fan-out is written, then goes back to reading.
    Answered(TcpStream),
    /// Answered (or given up).
    Done,
}

/// One held poll.
pub struct Slot {
    id: u64,
    /// Threads and the sequence number after which the client wants events.
    threads: Box<[(Arc<str>, Seq)]>,
    /// Which CORS answer the request gets (see [`Origins`]).
    pub cors: u16,
    /// Whether the connection stays open after the answer.
    pub keep_alive: bool,
    /// Whether the client believes comments are suspended (`suspended=` in the query): when
    /// longpoll knows otherwise, the poll is answered at once with the state.
    pub believes_suspended: Option<bool>,
    deadline: Instant,
    state: Mutex<SlotState>,
    _held: HeldGuard,
}

/// Counts a held poll or stream for as long as it lives.
pub struct HeldGuard(prometheus_client::metrics::gauge::Gauge);

impl Drop for HeldGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Slot {
    /// The threads this poll waits on, with their sequence numbers.
    pub fn threads(&self) -> &[(Arc<str>, Seq)] {
        &self.threads
    }

    /// When the hold time is over.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    fn since(&self, thread: &str) -> Option<Seq> {
        self.threads
            .iter()
            .find(|(t, _)| &**t == thread)
            .map(|(_, s)| *s)
    }

    /// Takes the socket out of a parked slot, leaving it done; `None`, and the slot as it was,
    /// in any other state.
    pub(crate) fn parked_stream(&self) -> Option<TcpStream> {
        self.take_stream(|st| match st {
            SlotState::Parked(stream) => Ok(stream),
            other => Err(other),
        })
    }

    /// Takes the socket out of a slot a fan-out answered, leaving it done; `None`, and the
    /// slot as it was, in any other state.
    fn answered_stream(&self) -> Option<TcpStream> {
        self.take_stream(|st| match st {
            SlotState::Answered(stream) => Ok(stream),
            other => Err(other),
        })
    }

    fn take_stream(
        &self,
        pick: impl FnOnce(SlotState) -> Result<TcpStream, SlotState>,
    ) -> Option<TcpStream> {
        let mut st = self.state.lock();
        match pick(std::mem::replace(&mut *st, SlotState::Done)) {
            Ok(stream) => Some(stream),
            Err(other) => {
                *st = other;
                None
            }
        }
    }

    /// Marks the slot answered by its own task. False when it was already answered.
    pub fn finish(&self) -> bool {
        let mut st = self.state.lock();
        if matches!(*st, SlotState::Done | SlotState::Answered(_)) {
            return false;
        }
        *st = SlotState::Done;
        true
    }
}

/// What the hub calls back into the server with.
pub struct Callbacks {
    /// Serves the next request on a connection whose held poll was answered.
    pub resume: Box<dyn Fn(TcpStream) + Send + Sync>,
    /// Re-runs a parked poll that needs a gap fill before it can be answered.
    pub repoll: Box<dyn Fn(Arc<Slot>, TcpStream) + Send + Sync>,
}

/// Bounds of the hub's history.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most events kept per thread.
    pub per_thread: usize,
    /// Most events kept in all.
    pub events: usize,
    /// Most events one answer carries.
    pub batch: usize,
}

/// Threads, their recent events, and who waits on them.
pub struct Hub {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    pos: AtomicU64,
    started: AtomicBool,
    limits: Limits,
    timers: Mutex<BTreeMap<u64, Vec<Weak<Slot>>>>,
    epoch: Instant,
    next_id: AtomicU64,
    callbacks: OnceLock<Arc<Callbacks>>,
    origins: Origins,
    /// The hub's metrics.
    pub metrics: Metrics,
}

impl Hub {
    /// An empty hub.
    pub fn new(limits: Limits, origins: Origins, metrics: Metrics) -> Self {
        Hub {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            pos: AtomicU64::new(0),
            started: AtomicBool::new(false),
            limits,
            timers: Mutex::new(BTreeMap::new()),
            epoch: Instant::now(),
            next_id: AtomicU64::new(1),
            callbacks: OnceLock::new(),
            origins,
            metrics,
        }
    }

    /// Installs the server's callbacks (once).
    pub fn set_callbacks(&self, cb: Callbacks) {
        let _ = self.callbacks.set(Arc::new(cb));
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn shard(&self, thread: &str) -> &Mutex<Shard> {
        let i = self.hasher.hash_one(thread) as usize % SHARDS;
        &self.shards[i]
    }

    /// The feed position applied so far.
    pub fn pos(&self) -> FeedPos {
        self.pos.load(Ordering::SeqCst)
    }

    /// Whether the hub follows the feed yet (it has a position).
    pub fn started(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }

    /// Sets the starting position (the first sync stream's `after`).
    pub fn start_at(&self, pos: FeedPos) {
        if !self.started.swap(true, Ordering::SeqCst) {
            self.pos.store(pos, Ordering::SeqCst);
        }
    }

    /// A new slot for a poll on `threads`.
    pub fn slot(
        &self,
        threads: Vec<(Arc<str>, Seq)>,
        cors: u16,
        keep_alive: bool,
        believes_suspended: Option<bool>,
        hold: Duration,
    ) -> Arc<Slot> {
        self.metrics.held.inc();
        Arc::new(Slot {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            threads: threads.into_boxed_slice(),
            cors,
            keep_alive,
            believes_suspended,
            deadline: Instant::now() + hold,
            state: Mutex::new(SlotState::Active { notified: false }),
            _held: HeldGuard(self.metrics.held.clone()),
        })
    }

    /// Counts a held event stream until the guard drops.
    pub fn hold_stream(&self) -> HeldGuard {
        self.metrics.held.inc();
        HeldGuard(self.metrics.held.clone())
    }

    /// Registers `slot` on each of its threads and reads history for each, in one step per
    /// thread. Clears the slot's `notified` flag first: whatever it signalled is read now.
    pub fn register(&self, slot: &Arc<Slot>) -> Vec<Look> {
        if let SlotState::Active { notified } = &mut *slot.state.lock() {
            *notified = false;
        }
        let batch = self.limits.batch;
        slot.threads
            .iter()
            .map(|(thread, since)| {
                let mut shard = self.shard(thread).lock();
                let st = shard.threads.entry(thread.clone()).or_default();
                st.waiters.insert(slot.id, slot.clone());
                look(st.known.as_ref(), *since, batch)
            })
            .collect()
    }

    /// Removes `slot` from its threads (all but `except`).
    fn unregister_except(&self, slot: &Slot, except: Option<&str>) {
        for (thread, _) in slot.threads.iter() {
            if except.is_some_and(|e| e == &**thread) {
                continue;
            }
            let mut shard = self.shard(thread).lock();
            let remove = match shard.threads.get_mut(&**thread) {
                Some(st) => {
                    st.waiters.remove(&slot.id);
                    st.idle() && st.known.is_none()
                }
                None => false,
            };
            if remove {
                shard.threads.remove(&**thread);
            }
        }
    }

    /// Removes `slot` from all its threads.
    pub fn unregister(&self, slot: &Slot) {
        self.unregister_except(slot, None);
    }

    /// Reads history for an event stream (no registration).
    pub fn look(&self, thread: &str, since: Seq) -> Look {
        let shard = self.shard(thread).lock();
        look(
            shard.threads.get(thread).and_then(|s| s.known.as_ref()),
            since,
            self.limits.batch,
        )
    }

    /// Subscribes an event stream to a thread: `notify` fires on each of its events.
    pub fn subscribe(&self, thread: &Arc<str>, notify: Arc<Notify>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut shard = self.shard(thread).lock();
        shard
            .threads
            .entry(thread.clone())
            .or_default()
            .streams
            .insert(id, notify);
        id
    }

    /// Ends a subscription.
    pub fn unsubscribe(&self, thread: &str, id: u64) {
        let mut shard = self.shard(thread).lock();
        let remove = match shard.threads.get_mut(thread) {
            Some(st) => {
                st.streams.remove(&id);
                st.idle() && st.known.is_none()
            }
            None => false,
        };
        if remove {
            shard.threads.remove(thread);
        }
    }

    /// Records what a fill learned when history knew nothing of the thread: its head is
    /// `head` and nothing follows it. Only when nothing was published for the thread since
    /// the caller registered (else history already knows better).
    pub fn seed_head(&self, thread: &str, head: Seq) {
        let mut shard = self.shard(thread).lock();
        if let Some(st) = shard.threads.get_mut(thread)
            && st.known.is_none()
            && !st.idle()
        {
            st.known = Some(Known {
                lo: head,
                events: VecDeque::new(),
            });
        }
    }

    /// Parks an active slot with its socket until an event or its deadline. Gives the socket
    /// back when an event flagged the slot meanwhile (the caller looks again).
    pub fn park(&self, slot: &Arc<Slot>, stream: TcpStream) -> Result<(), TcpStream> {
        {
            let mut st = slot.state.lock();
            match &*st {
                SlotState::Active { notified: false } => *st = SlotState::Parked(stream),
                _ => return Err(stream),
            }
        }
        let tick = self.tick(slot.deadline);
        self.timers
            .lock()
            .entry(tick)
            .or_default()
            .push(Arc::downgrade(slot));
        Ok(())
    }

    fn tick(&self, at: Instant) -> u64 {
        (at.saturating_duration_since(self.epoch).as_millis() / TICK.as_millis()) as u64
    }

    /// Applies one change from the feed (its position already recorded with
    /// [`Hub::advance`]) and answers everyone waiting on its thread.
    pub fn publish(self: &Arc<Self>, change: Change) {
        let received = Instant::now();
        let thread: Arc<str> = Arc::from(change.thread.as_str());
        let seq = change.seq;
        let deleted = change
            .comment
            .as_ref()
            .filter(|_| change.kind == ChangeKind::Deleted)
            .map(|c| c.id);
        let event = Event::from_change(change);
        let limits = self.limits;
        let budget = (limits.events / SHARDS).max(limits.per_thread);
        let (waiters, snapshot) = {
            let mut guard = self.shard(&thread).lock();
            let shard = &mut *guard;
            let st = shard.threads.entry(thread.clone()).or_default();
            let mut dropped = 0usize;
            match &mut st.known {
                Some(k) if seq == k.head() + 1 => k.events.push_back(event),
                Some(k) if seq <= k.head() => return,
                known => {
                    if let Some(old) = known.as_ref() {
                        dropped += old.events.len();
                    }
                    *known = Some(Known {
                        lo: seq - 1,
                        events: VecDeque::from([event]),
                    });
                }
            }
            if let Some(k) = &mut st.known {
                // A deleted comment's earlier events lose its content (see Event::scrubbed).
                if let Some(id) = deleted {
                    for e in k.events.iter_mut().filter(|e| e.comment == Some(id)) {
                        *e = e.scrubbed();
                    }
                }
                while k.events.len() > limits.per_thread {
                    k.events.pop_front();
                    k.lo += 1;
                    dropped += 1;
                }
            }
            for n in st.streams.values() {
                n.notify_one();
            }
            // Answered oldest first. Besides being fair, this keeps a fan-out walking sockets,
            // slots and (on a client holding many polls) its buffers in the order they were
            // made, not scattered: that cut the CPU per delivery by a fifth on each side.
            let waiters: Vec<Arc<Slot>> = std::mem::take(&mut st.waiters).into_values().collect();
            let snapshot = if waiters.is_empty() {
                None
            } else {
                st.known.as_ref().map(|k| Snapshot {
                    lo: k.lo,
                    events: k.events.iter().cloned().collect(),
                })
            };
            shard.fifo.push_back((thread.clone(), seq));
            shard.events = (shard.events + 1).saturating_sub(dropped);
            while shard.events > budget || shard.fifo.len() > budget * 2 {
                let Some((t, s)) = shard.fifo.pop_front() else {
                    break;
                };
                let mut remove = false;
                if let Some(st) = shard.threads.get_mut(&t)
                    && let Some(k) = &mut st.known
                    && k.events.front().is_some_and(|e| e.seq == s)
                {
                    k.events.pop_front();
                    k.lo = s;
                    shard.events = shard.events.saturating_sub(1);
                    remove = k.events.is_empty() && st.idle();
                }
                if remove {
                    shard.threads.remove(&t);
                }
            }
            (waiters, snapshot)
        };
        let Some(snapshot) = snapshot else { return };
        let snapshot = Arc::new(snapshot);
        if waiters.len() <= CHUNK {
            self.answer(&thread, &snapshot, waiters, received, None);
        } else {
            // One share per core: the writes are the work, and they parallelize.
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            let share = waiters.len().div_ceil(cores).max(CHUNK / 2);
            // The connections go back to reading once every chunk is written.
            let chunks = waiters.len().div_ceil(share);
            let resumes = Arc::new(Resumes {
                left: AtomicUsize::new(chunks),
                chunks: Mutex::new(Vec::with_capacity(chunks)),
            });
            let mut rest = waiters;
            while !rest.is_empty() {
                let tail = rest.split_off(share.min(rest.len()));
                let chunk = std::mem::replace(&mut rest, tail);
                let hub = self.clone();
                let thread = thread.clone();
                let snapshot = snapshot.clone();
                let resumes = resumes.clone();
                tokio::spawn(async move {
                    hub.answer(&thread, &snapshot, chunk, received, Some(&resumes))
                });
            }
        }
    }

    /// Records that the feed has been applied up to `pos` (before publishing that change).
    pub fn advance(&self, pos: FeedPos) {
        self.pos.store(pos, Ordering::SeqCst);
        self.metrics.feed_position.set(pos as i64);
    }

    fn answer(
        &self,
        thread: &Arc<str>,
        snap: &Snapshot,
        waiters: Vec<Arc<Slot>>,
        t0: Instant,
        shared: Option<&Resumes>,
    ) {
        let Some(cb) = self.callbacks.get() else {
            return;
        };
        let head = snap.lo + snap.events.len() as Seq;
        let mut memo: HashMap<(Seq, u16, bool), Bytes> = HashMap::new();
        let mut put_back = Vec::new();
        // Connections go back to reading only after every answer is written (of every chunk,
        // given `shared`), so clients' next polls do not compete with the rest of the fan-out.
        // Meanwhile each answered socket waits in its slot, and nothing is allocated or freed
        // per answer while the fan-out writes. (Collecting the sockets in a growing vector
        // cost 5 ms at each doubling past 4,096, in fresh pages.)
        for slot in &waiters {
            let Some(since) = slot.since(thread) else {
                continue;
            };
            if since >= head {
                put_back.push(slot.clone());
                continue;
            }
            let stream = {
                let mut st = slot.state.lock();
                match std::mem::replace(&mut *st, SlotState::Done) {
                    SlotState::Parked(stream) => stream,
                    SlotState::Active { .. } => {
                        *st = SlotState::Active { notified: true };
                        continue;
                    }
                    answered @ SlotState::Answered(_) => {
                        *st = answered;
                        continue;
                    }
                    SlotState::Done => continue,
                }
            };
            if slot.threads.len() > 1 {
                self.unregister_except(slot, Some(thread));
            }
            if since < snap.lo {
                // The instance's history no longer reaches back to this client: fill first.
                *slot.state.lock() = SlotState::Active { notified: false };
                (cb.repoll)(slot.clone(), stream);
                continue;
            }
            let bytes = memo
                .entry((since, slot.cors, slot.keep_alive))
                .or_insert_with(|| {
                    let skip = (since - snap.lo) as usize;
                    let events = snap.events.iter().skip(skip).take(self.limits.batch);
                    Bytes::from(http::response(
                        200,
                        "OK",
                        self.origins.cors(slot.cors),
                        slot.keep_alive,
                        Some("application/json"),
                        &[],
                        &poll_body(events),
                    ))
                })
                .clone();
            let n = (head - since).min(self.limits.batch as Seq);
            self.metrics.delivered.inc_by(n);
            if let Some(stream) = send(cb, stream, bytes, slot.keep_alive) {
                *slot.state.lock() = SlotState::Answered(stream);
            }
        }
        self.metrics.fanout.observe(t0.elapsed().as_secs_f64());
        let written = match shared {
            Some(shared) => {
                shared.chunks.lock().push(waiters);
                if shared.left.fetch_sub(1, Ordering::AcqRel) == 1 {
                    std::mem::take(&mut *shared.chunks.lock())
                } else {
                    Vec::new()
                }
            }
            None => vec![waiters],
        };
        for slot in written.into_iter().flatten() {
            let answered = slot.answered_stream();
            // The answered poll is let go before its connection's next poll can count
            // against the cap on held polls.
            drop(slot);
            if let Some(stream) = answered {
                (cb.resume)(stream);
            }
        }
        if !put_back.is_empty() {
            let mut shard = self.shard(thread).lock();
            let st = shard.threads.entry(thread.clone()).or_default();
            for slot in put_back {
                if !matches!(*slot.state.lock(), SlotState::Done) {
                    st.waiters.insert(slot.id, slot);
                }
            }
        }
    }

    /// Answers parked slots whose hold time has passed with 204. Runs every tick.
    pub fn expire(&self, now: Instant) {
        let due = self.tick(now);
        let expired = {
            let mut timers = self.timers.lock();
            let later = timers.split_off(&(due + 1));
            std::mem::replace(&mut *timers, later)
        };
        let Some(cb) = self.callbacks.get() else {
            return;
        };
        let mut memo: HashMap<(u16, bool), Bytes> = HashMap::new();
        for slot in expired.into_values().flatten().filter_map(|w| w.upgrade()) {
            let Some(stream) = slot.parked_stream() else {
                continue;
            };
            self.unregister(&slot);
            let bytes = memo
                .entry((slot.cors, slot.keep_alive))
                .or_insert_with(|| {
                    Bytes::from(http::response(
                        204,
                        "No Content",
                        self.origins.cors(slot.cors),
                        slot.keep_alive,
                        None,
                        &[],
                        b"",
                    ))
                })
                .clone();
            if let Some(stream) = send(cb, stream, bytes, slot.keep_alive) {
                (cb.resume)(stream);
            }
        }
    }

    /// Answers every parked poll at once with the JSON `body(slot)` makes for it (a change
    /// every open page must learn, such as a suspension); the connections then go back to
    /// reading. Returns how many were answered.
    pub fn answer_parked(&self, body: impl Fn(&Slot) -> Vec<u8>) -> usize {
        let mut slots = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            for st in shard.threads.values() {
                slots.extend(st.waiters.values().cloned());
            }
        }
        self.answer_slots(slots, body)
    }

    /// Answers those of `slots` still parked with the JSON `body(slot)` makes for each.
    pub fn answer_slots(
        &self,
        slots: impl IntoIterator<Item = Arc<Slot>>,
        body: impl Fn(&Slot) -> Vec<u8>,
    ) -> usize {
        let Some(cb) = self.callbacks.get() else {
            return 0;
        };
        let mut answered = 0;
        for slot in slots {
            // A poll on several threads waits on each: only the first finds it parked.
            let Some(stream) = slot.parked_stream() else {
                continue;
            };
            self.unregister(&slot);
            answered += 1;
            let bytes = Bytes::from(http::response(
                200,
                "OK",
                self.origins.cors(slot.cors),
                slot.keep_alive,
                Some("application/json"),
                &[],
                &body(&slot),
            ));
            if let Some(stream) = send(cb, stream, bytes, slot.keep_alive) {
                (cb.resume)(stream);
            }
        }
        answered
    }

    /// Takes every parked slot out of the hub (shutdown). Their sockets are the caller's.
    pub fn take_parked(&self) -> Vec<(Arc<Slot>, TcpStream)> {
        let mut slots = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            for st in shard.threads.values_mut() {
                slots.extend(std::mem::take(&mut st.waiters).into_values());
            }
        }
        let mut out = Vec::with_capacity(slots.len());
        for slot in slots {
            if let Some(stream) = slot.parked_stream() {
                out.push((slot, stream));
            }
        }
        out
    }

    /// Wakes every event stream (shutdown).
    pub fn wake_streams(&self) {
        for shard in self.shards.iter() {
            let shard = shard.lock();
            for st in shard.threads.values() {
                for n in st.streams.values() {
                    n.notify_one();
                }
            }
        }
    }

    /// The origins allowed to read live updates.
    pub fn origins(&self) -> &Origins {
        &self.origins
    }
}

struct Snapshot {
    lo: Seq,
    events: Vec<Event>,
}

/// The polls of a fan-out in several chunks: their connections go back to reading once the
/// last chunk is written.
struct Resumes {
    left: AtomicUsize,
    chunks: Mutex<Vec<Vec<Arc<Slot>>>>,
}

/// Writes a whole answer to a socket without a task when the kernel takes it at once (the
/// usual case for a small answer), else hands it to a task. Returns the socket when it is
/// written and should serve another request.
fn send(
    cb: &Arc<Callbacks>,
    stream: TcpStream,
    bytes: Bytes,
    keep_alive: bool,
) -> Option<TcpStream> {
    match stream.try_write(&bytes) {
        Ok(n) if n == bytes.len() => keep_alive.then_some(stream),
        Ok(n) => {
            let rest = bytes.slice(n..);
            finish_write(cb, stream, rest, keep_alive);
            None
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            finish_write(cb, stream, bytes, keep_alive);
            None
        }
        Err(_) => None,
    }
}

fn finish_write(cb: &Arc<Callbacks>, mut stream: TcpStream, rest: Bytes, keep_alive: bool) {
    let cb = cb.clone();
    tokio::spawn(async move {
        if http::write_all(&mut stream, &rest, Duration::from_secs(10))
            .await
            .is_ok()
            && keep_alive
        {
            (cb.resume)(stream);
        }
    });
}
