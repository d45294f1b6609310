//! The store-outage spool. When dedup-store cannot take a verified event,
//! ingest appends it here and fsyncs before answering 202, then replays the
//! spool in order once the store is back; dedup-store deduplicates repeats
//! (a replay after a crash, or an event the store committed but whose answer
//! was lost). Without it a GitHub delivery during a database restart is
//! lost: GitHub never redelivers by itself.
//!
//! One file, `spool.log`, of records `[len u32][crc32 u32][received_ms i64]
//! [payload]` (little-endian; payload = dedup-store's insert request), and
//! `spool.offset`, the replay position. A torn tail (a crash mid-append,
//! never acknowledged) is cut when the spool opens. Once everything is
//! replayed the file is truncated; before that, the replayed prefix is
//! compacted away, so the file never outgrows `spool.max_bytes`.
//!
//! Request handlers never wait on the file: appends run on blocking
//! threads, and what handlers read (is it empty, how deep) is kept in
//! atomics outside the lock an fsync holds.
//!
//! Replicas: each ingest owns its directory through an exclusive `flock` on
//! `spool.lock`, held while it runs, so two processes never share a spool.
//! A replica also lists its peers' directories (`spool.peer_dirs`); when a
//! peer's lock is free (that ingest is gone) and its spool holds events, it
//! adopts the spool, replays a bounded batch and lets go again, so events a
//! dead replica acknowledged are delivered without waiting for it.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use time::OffsetDateTime;

mod replay;

pub use replay::Replayer;

const HEADER: u64 = 16;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool is full ({limit} bytes)")]
    Full { limit: u64 },
    #[error("the spool cannot be written: {0}")]
    Io(#[from] std::io::Error),
}

/// How much is waiting, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Depth {
    pub events: u64,
    pub bytes: u64,
    /// When the oldest waiting event was received (ms since the epoch).
    pub oldest_ms: Option<i64>,
}

/// Called before each fsync (tests slow it down); `None` in service.
type SyncHook = Arc<dyn Fn() + Send + Sync>;

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    inner: Mutex<Inner>,
    /// What handlers read, kept current under `inner` and read without it.
    events: AtomicU64,
    bytes: AtomicU64,
    oldest_ms: AtomicI64,
    /// The replayer is sending the last of the backlog: new deliveries
    /// wait for it (briefly) instead of queueing behind it, so the spool
    /// empties even under steady load.
    closing: AtomicBool,
    emptied: tokio::sync::Notify,
    sync_hook: RwLock<Option<SyncHook>>,
    /// `spool.lock`, flocked for as long as this value lives.
    _owner: File,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.dir)
            .field("depth", &self.depth())
            .finish_non_exhaustive()
    }
}

/// How long a starting ingest waits for its spool's lock: a peer adopting
/// it holds it for one bounded replay batch.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// The second spool directory of a replica, inside its first (see
/// [`Spool::slots`]).
const HANDOVER_SLOT: &str = "handover";

const NO_OLDEST: i64 = i64::MIN;

#[derive(Debug)]
struct Inner {
    file: File,
    len: u64,
    offset: u64,
    /// (end offset, received_ms) of every record not yet replayed, in order.
    waiting: VecDeque<(u64, i64)>,
}

/// A record to replay: its payload and where the next one starts.
#[derive(Debug)]
pub struct Next {
    pub payload: Vec<u8>,
    end: u64,
}

impl Spool {
    /// Opens (or creates, mode 0700) the spool in `dir` and locks it,
    /// cutting a torn tail. Fails if another process keeps it locked.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Self> {
        Self::open_any(std::slice::from_ref(&dir.to_path_buf()), max_bytes)
    }

    /// The spool directories of one replica: `dir` itself and the handover
    /// slot inside it. A replacement started while its predecessor still
    /// runs (a restart without downtime) takes the slot the predecessor
    /// does not hold, and adopts what the predecessor left once it is gone.
    pub fn slots(dir: &Path) -> [PathBuf; 2] {
        [dir.to_path_buf(), dir.join(HANDOVER_SLOT)]
    }

    /// [`Spool::open`] on the first of `dirs` no other process holds.
    pub fn open_any(dirs: &[PathBuf], max_bytes: u64) -> std::io::Result<Self> {
        for dir in dirs {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let dir = dirs.first().ok_or(std::io::ErrorKind::InvalidInput)?;
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let (dir, owner) = loop {
            let mut free = None;
            for candidate in dirs {
                if let Some(owner) = try_lock(candidate)? {
                    free = Some((candidate, owner));
                    break;
                }
            }
            if let Some(free) = free {
                break free;
            }
            if std::time::Instant::now() > deadline {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!(
                        "{} is locked by another ingest process; each replica needs its own spool.dir",
                        dir.display()
                    ),
                ));
            }
            // A peer replaying this spool lets go after one batch.
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        Self::open_locked(dir, max_bytes, owner)
    }

    /// Opens a peer's spool if it holds events and no process owns it;
    /// `None` otherwise. Never creates anything, and never appends to it
    /// (so no bound applies).
    pub fn try_adopt(dir: &Path) -> std::io::Result<Option<Self>> {
        let waiting = std::fs::metadata(dir.join("spool.log")).is_ok_and(|m| m.len() > 0);
        if !waiting {
            return Ok(None);
        }
        match try_lock(dir)? {
            Some(owner) => Ok(Some(Self::open_locked(dir, u64::MAX, owner)?)),
            None => Ok(None),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn open_locked(dir: &Path, max_bytes: u64, owner: File) -> std::io::Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join("spool.log"))?;
        let len = file.seek(SeekFrom::End(0))?;
        let offset = std::fs::read_to_string(dir.join("spool.offset"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .filter(|&o| o <= len)
            .unwrap_or(0);
        // Walk the records from the replay position; stop at the first that
        // is short or fails its checksum.
        let mut waiting = VecDeque::new();
        let mut at = offset;
        while let Some((end, received_ms)) = read_header_checked(&file, at, len)? {
            waiting.push_back((end, received_ms));
            at = end;
        }
        if at < len {
            tracing::warn!(
                valid = at,
                length = len,
                "spool: cutting a torn record at its end (never acknowledged)"
            );
            file.set_len(at)?;
            file.sync_all()?;
        }
        let spool = Self {
            dir: dir.to_path_buf(),
            max_bytes,
            inner: Mutex::new(Inner {
                file,
                len: at,
                offset,
                waiting,
            }),
            events: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            oldest_ms: AtomicI64::new(NO_OLDEST),
            closing: AtomicBool::new(false),
            emptied: tokio::sync::Notify::new(),
            sync_hook: RwLock::new(None),
            _owner: owner,
        };
        spool.publish(&spool.lock());
        Ok(spool)
    }

    /// Without the lock: handlers call it.
    pub fn is_empty(&self) -> bool {
        self.events.load(Ordering::SeqCst) == 0
    }

    /// Without the lock: handlers and `/metrics` call it.
    pub fn depth(&self) -> Depth {
        let oldest = self.oldest_ms.load(Ordering::SeqCst);
        Depth {
            events: self.events.load(Ordering::SeqCst),
            bytes: self.bytes.load(Ordering::SeqCst),
            oldest_ms: (oldest != NO_OLDEST).then_some(oldest),
        }
    }

    /// Runs `hook` before every fsync (tests: a slow disk).
    #[doc(hidden)]
    pub fn before_each_sync(&self, hook: impl Fn() + Send + Sync + 'static) {
        *self.sync_hook.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(hook));
    }

    fn sync_data(&self, file: &File) -> std::io::Result<()> {
        let hook = self
            .sync_hook
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(hook) = hook {
            hook();
        }
        file.sync_data()
    }

    /// Appends a record and fsyncs it: once this returns, it survives a crash.
    /// Blocking: call it on a blocking thread.
    pub fn append(&self, payload: &[u8], received: OffsetDateTime) -> Result<(), SpoolError> {
        let received_ms = (received.unix_timestamp_nanos() / 1_000_000) as i64;
        let mut record = Vec::with_capacity(HEADER as usize + payload.len());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc(received_ms, payload).to_le_bytes());
        record.extend_from_slice(&received_ms.to_le_bytes());
        record.extend_from_slice(payload);
        let mut inner = self.lock();
        let size = record.len() as u64;
        if inner.len + size > self.max_bytes && inner.offset > 0 {
            self.compact(&mut inner)?;
        }
        if inner.len + size > self.max_bytes {
            return Err(SpoolError::Full {
                limit: self.max_bytes,
            });
        }
        let at = inner.len;
        inner.file.seek(SeekFrom::Start(at))?;
        let written = inner.file.write_all(&record);
        if let Err(e) = written.and_then(|()| self.sync_data(&inner.file)) {
            // Leave no partial record behind the next append.
            let _ = inner.file.set_len(at);
            return Err(e.into());
        }
        inner.len = at + size;
        let end = inner.len;
        inner.waiting.push_back((end, received_ms));
        self.publish(&inner);
        Ok(())
    }

    /// Up to `max_events` of the oldest records not yet replayed, and
    /// about `max_bytes` (the first always). Blocking.
    pub fn peek_batch(&self, max_events: usize, max_bytes: u64) -> std::io::Result<Vec<Next>> {
        let inner = self.lock();
        let mut batch = Vec::new();
        let (mut start, mut total) = (inner.offset, 0);
        for &(end, _) in inner.waiting.iter().take(max_events) {
            if !batch.is_empty() && total + (end - start) > max_bytes {
                break;
            }
            let mut payload = vec![0; (end - start - HEADER) as usize];
            inner.file.read_exact_at(&mut payload, start + HEADER)?;
            total += end - start;
            batch.push(Next { payload, end });
            start = end;
        }
        Ok(batch)
    }

    /// The oldest record not yet replayed.
    pub fn peek(&self) -> std::io::Result<Option<Next>> {
        Ok(self.peek_batch(1, u64::MAX)?.into_iter().next())
    }

    /// Marks `next` replayed (the store committed it, or it is set aside).
    pub fn advance(&self, next: &Next) -> std::io::Result<()> {
        self.advance_to(next.end)
    }

    /// Marks every record up to the one ending at `end` replayed, with one
    /// write of the replay position. Blocking.
    pub fn advance_to(&self, end: u64) -> std::io::Result<()> {
        let mut inner = self.lock();
        if !inner.waiting.iter().any(|(e, _)| *e == end) {
            return Ok(()); // already advanced
        }
        while let Some(&(first, _)) = inner.waiting.front() {
            if first > end {
                break;
            }
            inner.waiting.pop_front();
        }
        if inner.waiting.is_empty() {
            // All replayed: start the file over.
            inner.file.set_len(0)?;
            inner.file.sync_all()?;
            inner.len = 0;
            inner.offset = 0;
        } else {
            inner.offset = end;
        }
        // A crash before this write replays those records again: the store
        // deduplicates them.
        write_synced(
            &self.dir.join("spool.offset"),
            inner.offset.to_string().as_bytes(),
        )?;
        if inner.offset > self.max_bytes / 2 {
            self.compact(&mut inner)?;
        }
        self.publish(&inner);
        if inner.waiting.is_empty() {
            self.open_tail();
        }
        Ok(())
    }

    /// Drops the replayed prefix: the records still waiting are copied to
    /// a new file that replaces the old. Crash-safe: the replay position is
    /// reset to 0 first, so a crash before the rename replays the old file
    /// from its start (the store deduplicates), and one after finds the new.
    fn compact(&self, inner: &mut Inner) -> std::io::Result<()> {
        let (offset, live) = (inner.offset, inner.len - inner.offset);
        let path = self.dir.join("spool.log");
        let tmp = self.dir.join("spool.log.compact");
        let mut copy = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        let mut source = inner.file.try_clone()?;
        source.seek(SeekFrom::Start(offset))?;
        let copied = std::io::copy(&mut std::io::Read::take(source, live), &mut copy)?;
        if copied != live {
            return Err(std::io::Error::other("spool: short copy while compacting"));
        }
        copy.sync_all()?;
        write_synced(&self.dir.join("spool.offset"), b"0")?;
        std::fs::rename(&tmp, &path)?;
        File::open(&self.dir)?.sync_all()?;
        inner.file = copy;
        inner.len = live;
        inner.offset = 0;
        for (end, _) in inner.waiting.iter_mut() {
            *end -= offset;
        }
        tracing::info!(dropped = offset, kept = live, "spool: compacted");
        Ok(())
    }

    /// Keeps a record the store refuses outright (a bug, never expected)
    /// in `rejected.log`, so it does not block the spool behind it; the
    /// caller then advances past it. Blocking.
    fn keep_refused(&self, payload: &[u8], why: &str) -> std::io::Result<()> {
        let mut rejected = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(self.dir.join("rejected.log"))?;
        rejected.write_all(payload)?;
        rejected.write_all(b"\n")?;
        rejected.sync_data()?;
        tracing::error!(
            reason = why,
            "spool: dedup-store refused a spooled event; kept in rejected.log"
        );
        Ok(())
    }

    /// New deliveries wait for the backlog's last batch instead of queueing
    /// behind it ([`Spool::wait_for_empty`]).
    fn close_tail(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Lets waiting deliveries go (the spool emptied, or replay stopped).
    fn open_tail(&self) {
        self.closing.store(false, Ordering::SeqCst);
        self.emptied.notify_waiters();
    }

    /// Whether the spool is empty, waiting up to `timeout` for it while the
    /// replayer sends the backlog's last batch; `false` at once otherwise.
    pub async fn wait_for_empty(&self, timeout: std::time::Duration) -> bool {
        if self.is_empty() {
            return true;
        }
        if !self.closing.load(Ordering::SeqCst) {
            return false;
        }
        let emptied = self.emptied.notified();
        tokio::pin!(emptied);
        emptied.as_mut().enable();
        if self.is_empty() || !self.closing.load(Ordering::SeqCst) {
            return self.is_empty();
        }
        let _ = tokio::time::timeout(timeout, emptied).await;
        self.is_empty()
    }

    fn publish(&self, inner: &Inner) {
        self.events
            .store(inner.waiting.len() as u64, Ordering::SeqCst);
        self.bytes.store(inner.len - inner.offset, Ordering::SeqCst);
        self.oldest_ms.store(
            inner.waiting.front().map_or(NO_OLDEST, |(_, ms)| *ms),
            Ordering::SeqCst,
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent state (every
        // mutation completes or is undone before returning).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `dir/spool.lock`, flocked exclusively; `None` while another process
/// holds it. The lock goes with the process, however it ends.
fn try_lock(dir: &Path) -> std::io::Result<Option<File>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(dir.join("spool.lock"))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(file)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn crc(received_ms: i64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&received_ms.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// The record at `at` if it is whole and its checksum matches: (end, received_ms).
fn read_header_checked(file: &File, at: u64, len: u64) -> std::io::Result<Option<(u64, i64)>> {
    if at + HEADER > len {
        return Ok(None);
    }
    let mut header = [0u8; HEADER as usize];
    file.read_exact_at(&mut header, at)?;
    let size = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as u64;
    let sum = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let received_ms = i64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    let end = at + HEADER + size;
    if end > len {
        return Ok(None);
    }
    let mut payload = vec![0; size as usize];
    file.read_exact_at(&mut payload, at + HEADER)?;
    Ok((crc(received_ms, &payload) == sum).then_some((end, received_ms)))
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
