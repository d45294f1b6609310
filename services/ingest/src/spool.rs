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
//! replayed the file is truncated.
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
use std::sync::Mutex;

use time::OffsetDateTime;

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

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    inner: Mutex<Inner>,
    /// `spool.lock`, flocked for as long as this value lives.
    _owner: File,
}

/// How long a starting ingest waits for its spool's lock: a peer adopting
/// it holds it for one bounded replay batch.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

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
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let owner = loop {
            if let Some(owner) = try_lock(dir)? {
                break owner;
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
            _owner: owner,
        };
        Ok(spool)
    }

    pub fn is_empty(&self) -> bool {
        self.lock().waiting.is_empty()
    }

    pub fn depth(&self) -> Depth {
        let inner = self.lock();
        Depth {
            events: inner.waiting.len() as u64,
            bytes: inner.len - inner.offset,
            oldest_ms: inner.waiting.front().map(|(_, ms)| *ms),
        }
    }

    /// Appends a record and fsyncs it: once this returns, it survives a crash.
    pub fn append(&self, payload: &[u8], received: OffsetDateTime) -> Result<(), SpoolError> {
        let received_ms = (received.unix_timestamp_nanos() / 1_000_000) as i64;
        let mut record = Vec::with_capacity(HEADER as usize + payload.len());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc(received_ms, payload).to_le_bytes());
        record.extend_from_slice(&received_ms.to_le_bytes());
        record.extend_from_slice(payload);
        let mut inner = self.lock();
        if inner.len - inner.offset + record.len() as u64 > self.max_bytes {
            return Err(SpoolError::Full {
                limit: self.max_bytes,
            });
        }
        let at = inner.len;
        inner.file.seek(SeekFrom::Start(at))?;
        if let Err(e) = inner
            .file
            .write_all(&record)
            .and_then(|()| inner.file.sync_data())
        {
            // Leave no partial record behind the next append.
            let _ = inner.file.set_len(at);
            return Err(e.into());
        }
        inner.len = at + record.len() as u64;
        let end = inner.len;
        inner.waiting.push_back((end, received_ms));
        Ok(())
    }

    /// The oldest record not yet replayed.
    pub fn peek(&self) -> std::io::Result<Option<Next>> {
        let inner = self.lock();
        let Some(&(end, _)) = inner.waiting.front() else {
            return Ok(None);
        };
        let start = inner.offset + HEADER;
        let mut payload = vec![0; (end - start) as usize];
        inner.file.read_exact_at(&mut payload, start)?;
        Ok(Some(Next { payload, end }))
    }

    /// Marks `next` replayed (the store committed it, or it is set aside).
    pub fn advance(&self, next: &Next) -> std::io::Result<()> {
        let mut inner = self.lock();
        if inner.waiting.front().map(|(end, _)| *end) != Some(next.end) {
            return Ok(()); // already advanced
        }
        inner.waiting.pop_front();
        if inner.waiting.is_empty() {
            // All replayed: start the file over.
            inner.file.set_len(0)?;
            inner.file.sync_all()?;
            inner.len = 0;
            inner.offset = 0;
        } else {
            inner.offset = next.end;
        }
        // A crash before this write replays the record again: the store
        // deduplicates it.
        write_synced(
            &self.dir.join("spool.offset"),
            inner.offset.to_string().as_bytes(),
        )
    }

    /// Keeps a record the store refuses outright (a bug, never expected)
    /// instead of blocking the spool behind it.
    pub fn set_aside(&self, next: &Next, why: &str) -> std::io::Result<()> {
        let mut rejected = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(self.dir.join("rejected.log"))?;
        rejected.write_all(&next.payload)?;
        rejected.write_all(b"\n")?;
        rejected.sync_data()?;
        tracing::error!(
            reason = why,
            "spool: dedup-store refused a spooled event; kept in rejected.log"
        );
        self.advance(next)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent state (every
        // mutation completes or is undone before returning).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Replays the spool into dedup-store, oldest first.
#[derive(Debug, Clone)]
pub struct Replayer {
    pub spool: std::sync::Arc<Spool>,
    pub store: std::sync::Arc<crate::store_client::StoreClient>,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// Other replicas' spool directories, adopted when their owner is gone.
    pub peers: Vec<PathBuf>,
}

/// Records replayed from an adopted spool before letting go of it, so its
/// owner, restarting, waits at most one batch for the lock.
const ADOPT_BATCH: u64 = 500;

impl Replayer {
    /// Sends waiting events until the spool is empty or the store fails;
    /// returns how many the store committed.
    pub async fn step(&self) -> anyhow::Result<u64> {
        self.replay(&self.spool, u64::MAX).await
    }

    /// Replays the spools of peers that are gone (unlocked, not empty), a
    /// bounded batch each; returns how many events the store committed.
    pub async fn adopt_step(&self) -> anyhow::Result<u64> {
        let mut replayed = 0;
        for dir in &self.peers {
            let dir = dir.clone();
            let Some(spool) = tokio::task::spawn_blocking(move || Spool::try_adopt(&dir)).await??
            else {
                continue;
            };
            let spool = std::sync::Arc::new(spool);
            let n = self.replay(&spool, ADOPT_BATCH).await?;
            self.metrics.spool_adopted.inc_by(n);
            tracing::warn!(
                dir = %spool.dir().display(),
                replayed = n,
                waiting = spool.depth().events,
                "spool: replayed events from the spool of a replica that is gone"
            );
            replayed += n;
        }
        Ok(replayed)
    }

    /// Sends up to `limit` of `spool`'s events, oldest first, until it is
    /// empty or the store fails.
    async fn replay(&self, spool: &std::sync::Arc<Spool>, limit: u64) -> anyhow::Result<u64> {
        let mut replayed = 0;
        while replayed < limit {
            let spool = spool.clone();
            let Some(next) = tokio::task::spawn_blocking({
                let spool = spool.clone();
                move || spool.peek()
            })
            .await??
            else {
                return Ok(replayed);
            };
            let payload = actix_web::web::Bytes::from(next.payload.clone());
            match self.store.store(payload).await {
                Ok(_) => {
                    tokio::task::spawn_blocking(move || spool.advance(&next)).await??;
                    self.metrics.spool_replayed.inc();
                    replayed += 1;
                }
                Err(crate::error::IngestError::StoreUnavailable { cause, .. }) => {
                    tracing::info!(
                        waiting = spool.depth().events,
                        error = format!("{cause:#}"),
                        "spool: dedup-store still unreachable"
                    );
                    return Ok(replayed);
                }
                Err(e) => {
                    let why = format!("{:#}", anyhow::Error::new(e));
                    tokio::task::spawn_blocking(move || spool.set_aside(&next, &why)).await??;
                    self.metrics.spool_rejected.inc();
                }
            }
        }
        Ok(replayed)
    }

    /// Steps every `interval` while anything waits, and looks at the
    /// peers' spools, until `stop`.
    pub async fn run(
        self,
        interval: std::time::Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.changed() => return,
            }
            if !self.peers.is_empty()
                && let Err(e) = self.adopt_step().await
            {
                tracing::error!(
                    error = format!("{e:#}"),
                    "spool: replaying a peer's spool failed"
                );
            }
            if self.spool.is_empty() {
                continue;
            }
            match self.step().await {
                Ok(n) if n > 0 => tracing::info!(
                    replayed = n,
                    waiting = self.spool.depth().events,
                    "spool: replayed"
                ),
                Ok(_) => {}
                Err(e) => tracing::error!(error = format!("{e:#}"), "spool: replay failed"),
            }
        }
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
mod tests {
    use std::io::Read as _;

    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    #[test]
    fn records_come_back_in_order_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        for i in 0..3 {
            spool
                .append(format!("event-{i}").as_bytes(), now())
                .unwrap();
        }
        let first = spool.peek().unwrap().unwrap();
        assert_eq!(first.payload, b"event-0");
        spool.advance(&first).unwrap();
        drop(spool);
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.depth().events, 2);
        let mut seen = Vec::new();
        while let Some(next) = spool.peek().unwrap() {
            seen.push(String::from_utf8(next.payload.clone()).unwrap());
            spool.advance(&next).unwrap();
        }
        assert_eq!(seen, ["event-1", "event-2"]);
        assert!(spool.is_empty());
        assert_eq!(
            std::fs::metadata(dir.path().join("spool.log"))
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_whole_records_kept() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        spool.append(b"whole", now()).unwrap();
        drop(spool);
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join("spool.log"))
            .unwrap();
        file.write_all(&[9, 0, 0, 0, 1, 2]).unwrap(); // half a header
        drop(file);
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.depth().events, 1);
        assert_eq!(spool.peek().unwrap().unwrap().payload, b"whole");
        spool.append(b"after", now()).unwrap();
        assert_eq!(spool.depth().events, 2);
    }

    #[test]
    fn a_corrupted_record_ends_the_valid_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        spool.append(b"good", now()).unwrap();
        spool.append(b"flipped", now()).unwrap();
        drop(spool);
        let path = dir.path().join("spool.log");
        let mut bytes = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut bytes).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.depth().events, 1);
    }

    #[test]
    fn above_its_bound_the_spool_refuses_and_keeps_what_it_has() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 100).unwrap();
        spool.append(&[1; 60], now()).unwrap();
        assert!(matches!(
            spool.append(&[2; 60], now()),
            Err(SpoolError::Full { limit: 100 })
        ));
        let depth = spool.depth();
        assert_eq!((depth.events, depth.bytes), (1, 76));
        assert!(depth.oldest_ms.is_some());
    }
}
