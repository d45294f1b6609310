//! The reconciler's statements: which deliveries are stored, and the
//! redelivery requests, at most one accepted per delivery (V5).

use rave_pg::{Pool, Prepared};

/// Of `$2`'s event ids, those stored for source `$1`, or erased (an erased
/// delivery is answered as a duplicate: asking for it again is pointless).
const STORED: &str = "SELECT event_uuid FROM events WHERE source = $1 AND event_uuid = ANY($2)
     UNION
     SELECT event_uuid FROM erasures WHERE source = $1 AND event_uuid = ANY($2)";

/// Of `$2`'s ids, those already asked for (in any state).
const REQUESTED: &str = "SELECT event_uuid, state, attempts FROM redelivery_requests
     WHERE source = $1 AND event_uuid = ANY($2)";

/// Claims the right to ask: a new row, or a failed one asked fewer than 3
/// times. No row back: another run (of any replica) asked already.
const CLAIM: &str = "INSERT INTO redelivery_requests (source, event_uuid, delivery_id, event_type)
     VALUES ($1, $2, $3, $4)
     ON CONFLICT (source, event_uuid) DO UPDATE
         SET attempts = redelivery_requests.attempts + 1, state = 'requesting',
             delivery_id = EXCLUDED.delivery_id, requested_at = now(), detail = NULL
         WHERE redelivery_requests.state = 'failed' AND redelivery_requests.attempts < 3
     RETURNING attempts";

const SETTLE: &str = "UPDATE redelivery_requests SET state = $3, detail = $4
     WHERE source = $1 AND event_uuid = $2";

/// Marks as recovered the requests whose event is now stored.
const RECOVERED: &str = "UPDATE redelivery_requests r SET recovered_at = now()
     FROM events e
     WHERE r.source = $1 AND r.recovered_at IS NULL
       AND e.source = r.source AND e.event_uuid = r.event_uuid";

const UNRECOVERED: &str = "SELECT count(*) FROM redelivery_requests
     WHERE source = $1 AND recovered_at IS NULL";

const FORGET: &str = "DELETE FROM redelivery_requests
     WHERE source = $1 AND requested_at < now() - make_interval(days => $2)";

/// One run's session lock per source: a second replica's run skips it.
const TRY_LOCK: &str = "SELECT pg_try_advisory_lock(hashtextextended('rave-reconcile:' || $1, 0))";
const UNLOCK: &str = "SELECT pg_advisory_unlock(hashtextextended('rave-reconcile:' || $1, 0))";

/// A request's state after asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    Requested,
    Failed,
}

impl Asked {
    fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Failed => "failed",
        }
    }
}

/// A pooled connection that may hold an advisory lock: closed, not
/// pooled, when dropped still holding it.
struct Locked(Option<rave_pg::Object>);

impl Drop for Locked {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            drop(rave_pg::Object::take(client));
        }
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
}

impl Store {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// Runs `work` holding `source`'s lock; `None` when another run holds it.
    pub async fn exclusively<T, F>(&self, source: &str, work: F) -> anyhow::Result<Option<T>>
    where
        F: std::future::Future<Output = T>,
    {
        // The lock lives on this connection, held unused for the run. If the
        // run is dropped half-way (a stop), the guard closes the connection
        // rather than return it to the pool still holding the lock.
        let mut guard = Locked(Some(self.pool.get().await?));
        let client = guard.0.as_ref().expect("just set");
        let locked: bool = client
            .query_one_prepared(TRY_LOCK, &[&source])
            .await?
            .get(0);
        if !locked {
            drop(guard.0.take()); // holds nothing: back to the pool
            return Ok(None);
        }
        let out = work.await;
        let client = guard.0.take().expect("still set");
        client.query_one_prepared(UNLOCK, &[&source]).await?;
        Ok(Some(out))
    }

    pub async fn stored(&self, source: &str, ids: &[String]) -> anyhow::Result<Vec<String>> {
        let client = self.pool.get().await?;
        let rows = client.query_prepared(STORED, &[&source, &ids]).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// `(event_uuid, state, attempts)` of the ids already asked for.
    pub async fn requested(
        &self,
        source: &str,
        ids: &[String],
    ) -> anyhow::Result<Vec<(String, String, i32)>> {
        let client = self.pool.get().await?;
        let rows = client.query_prepared(REQUESTED, &[&source, &ids]).await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Whether this run may ask for `event_uuid` (and records that it does).
    pub async fn claim(
        &self,
        source: &str,
        event_uuid: &str,
        delivery_id: &str,
        event_type: &str,
    ) -> anyhow::Result<bool> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt_prepared(CLAIM, &[&source, &event_uuid, &delivery_id, &event_type])
            .await?;
        Ok(row.is_some())
    }

    pub async fn settle(
        &self,
        source: &str,
        event_uuid: &str,
        asked: Asked,
        detail: Option<&str>,
    ) -> anyhow::Result<()> {
        let client = self.pool.get().await?;
        client
            .execute_prepared(SETTLE, &[&source, &event_uuid, &asked.as_str(), &detail])
            .await?;
        Ok(())
    }

    /// Marks what was recovered, forgets requests older than `keep_days`,
    /// and counts those still not recovered.
    pub async fn unrecovered(&self, source: &str, keep_days: i32) -> anyhow::Result<i64> {
        let client = self.pool.get().await?;
        client.execute_prepared(RECOVERED, &[&source]).await?;
        client
            .execute_prepared(FORGET, &[&source, &keep_days])
            .await?;
        Ok(client
            .query_one_prepared(UNRECOVERED, &[&source])
            .await?
            .get(0))
    }
}
