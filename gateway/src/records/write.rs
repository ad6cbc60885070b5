//! Writing records in batches: one transaction per batch, a few multi-row statements each
//! (`UNNEST` arrays on PostgreSQL, multi-row `VALUES` on SQLite).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::{Postgres, QueryBuilder, Row, Sqlite, Transaction};

use super::{content_hash, external_id, Action, Dataset, Records, RecordsError};
use crate::store::{BeginWrite, Db};

/// SQLite binds at most 32,766 parameters per statement; this keeps every statement below it.
const SQLITE_ROWS_PER_STATEMENT: usize = 2_000;

/// Creates the dataset on first write and locks its row until the transaction ends; evaluates
/// to its [`Head`] as of `now`. A macro rather than a generic function: the executor bounds of
/// a generic one make every caller's future lose `Send`.
macro_rules! lock_dataset {
    ($tx:expr, $dataset:expr, $now:expr) => {
        // An upsert that changes nothing still takes the row lock (and SQLite's write lock) at once.
        sqlx::query_as::<_, (i64, i64)>(
            "INSERT INTO record_datasets (connection, model, last_seq, last_modified_at) VALUES ($1, $2, 0, 0)
             ON CONFLICT (connection, model) DO UPDATE SET last_seq = record_datasets.last_seq
             RETURNING last_seq, last_modified_at",
        )
        .bind($dataset.connection)
        .bind($dataset.model.as_str())
        .fetch_one(&mut *$tx)
        .await
        .map(|(last_seq, last_modified_at)| Head { last_seq, now: last_modified_at.max($now) })
    };
}

macro_rules! set_head {
    ($tx:expr, $dataset:expr, $head:expr) => {
        sqlx::query(
            "UPDATE record_datasets SET last_seq = $1, last_modified_at = $2 WHERE connection = $3 AND model = $4",
        )
        .bind($head.last_seq)
        .bind($head.now)
        .bind($dataset.connection)
        .bind($dataset.model.as_str())
        .execute(&mut *$tx)
        .await
    };
}

/// Where a locked dataset stands: its last sequence number, and the time a write stamps on the
/// records it changes. That time never goes back along `seq` (a clock behind the dataset's last
/// write, on this node or another, is taken as equal to it), which lets `modified_after` start
/// a page at one `seq` instead of scanning the dataset.
#[derive(Debug, Clone, Copy)]
struct Head {
    last_seq: i64,
    now: i64,
}

impl Head {
    /// The head once `changes` more sequence numbers are taken.
    fn after(self, changes: usize) -> Head {
        Head { last_seq: self.last_seq + changes as i64, ..self }
    }
}

/// What one write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub added: u64,
    pub updated: u64,
    pub deleted: u64,
    #[serde(skip)]
    pub unchanged: u64,
}

impl Summary {
    pub fn add(&mut self, other: Summary) {
        self.added += other.added;
        self.updated += other.updated;
        self.deleted += other.deleted;
        self.unchanged += other.unchanged;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Save,
    Update,
    Delete,
}

struct Incoming {
    external_id: String,
    record: Map<String, Value>,
}

struct Existing {
    hash: String,
    deleted: bool,
    data: Option<String>,
}

/// A row to write, with its new sequence number.
struct Change {
    external_id: String,
    data: String,
    hash: String,
    seq: i64,
    deleted_at: Option<i64>,
    action: Action,
    /// Whether the dataset has a row for this id (a live or a deleted record).
    stored: bool,
}

impl Records {
    /// Upserts whole records. `run` marks them as seen by that sync run (0: no run).
    pub async fn save(
        &self,
        dataset: &Dataset,
        records: Vec<Value>,
        run: i64,
        now: i64,
    ) -> Result<Summary, RecordsError> {
        self.write(dataset, incoming(dataset, records)?, Mode::Save, run, now).await
    }

    /// Merges partial records into the stored ones that exist and are not deleted; others are
    /// ignored, as Nango does.
    pub async fn update(
        &self,
        dataset: &Dataset,
        partials: Vec<Value>,
        run: i64,
        now: i64,
    ) -> Result<Summary, RecordsError> {
        self.write(dataset, incoming(dataset, partials)?, Mode::Update, run, now).await
    }

    /// Marks records as deleted (only their `id` is read).
    pub async fn delete(&self, dataset: &Dataset, records: Vec<Value>, now: i64) -> Result<Summary, RecordsError> {
        self.write(dataset, incoming(dataset, records)?, Mode::Delete, 0, now).await
    }

    /// Deletion tracking for a full sync: marks deleted every record of the dataset that run
    /// `run` did not save. Returns how many were deleted.
    pub async fn delete_unseen(&self, dataset: &Dataset, run: i64, now: i64) -> Result<u64, RecordsError> {
        let deleted = crate::with_pool!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let head = lock_dataset!(tx, dataset, now)?;
            let done = sqlx::query(
                "WITH doomed AS (
                     SELECT external_id, ROW_NUMBER() OVER (ORDER BY seq) AS n FROM records
                     WHERE connection = $1 AND model = $2 AND deleted_at IS NULL AND seen_run < $3
                 )
                 UPDATE records SET deleted_at = $4, last_modified_at = $4, last_action = 'DELETED',
                     seq = $5 + doomed.n
                 FROM doomed
                 WHERE records.connection = $1 AND records.model = $2 AND records.external_id = doomed.external_id",
            )
            .bind(dataset.connection)
            .bind(&dataset.model)
            .bind(run)
            .bind(head.now)
            .bind(head.last_seq)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            set_head!(tx, dataset, head.after(done as usize))?;
            tx.commit().await?;
            done
        });
        Ok(deleted)
    }

    async fn write(
        &self,
        dataset: &Dataset,
        incoming: Vec<Incoming>,
        mode: Mode,
        run: i64,
        now: i64,
    ) -> Result<Summary, RecordsError> {
        if incoming.is_empty() {
            return Ok(Summary::default());
        }
        let ids: Vec<String> = incoming.iter().map(|r| r.external_id.clone()).collect();
        let with_data = mode != Mode::Save;
        match &self.db {
            Db::Postgres(pool) => {
                let mut tx = pool.begin_write().await?;
                let head = lock_dataset!(tx, dataset, now)?;
                let existing = pg_existing(&mut tx, dataset, &ids, with_data).await?;
                let (changes, unchanged, summary) = classify(incoming, &existing, mode, head)?;
                pg_upsert(&mut tx, dataset, &changes, run, head.now).await?;
                if run > 0 && !unchanged.is_empty() {
                    sqlx::query(
                        "UPDATE records SET seen_run = $1
                         WHERE connection = $2 AND model = $3 AND external_id = ANY($4)",
                    )
                    .bind(run)
                    .bind(dataset.connection)
                    .bind(&dataset.model)
                    .bind(&unchanged)
                    .execute(&mut *tx)
                    .await?;
                }
                set_head!(tx, dataset, head.after(changes.len()))?;
                tx.commit().await?;
                keep_statistics_fresh(pool, changes.len());
                Ok(summary)
            }
            Db::Sqlite(pool) => {
                let mut tx = pool.begin_write().await?;
                let head = lock_dataset!(tx, dataset, now)?;
                let existing = sqlite_existing(&mut tx, dataset, &ids, with_data).await?;
                let (changes, unchanged, summary) = classify(incoming, &existing, mode, head)?;
                sqlite_upsert(&mut tx, dataset, &changes, run, head.now).await?;
                if run > 0 {
                    for chunk in unchanged.chunks(SQLITE_ROWS_PER_STATEMENT) {
                        let mut q = QueryBuilder::<Sqlite>::new("UPDATE records SET seen_run = ");
                        q.push_bind(run)
                            .push(" WHERE connection = ")
                            .push_bind(dataset.connection)
                            .push(" AND model = ")
                            .push_bind(&dataset.model)
                            .push(" AND external_id IN (");
                        let mut list = q.separated(", ");
                        for id in chunk {
                            list.push_bind(id);
                        }
                        q.push(")");
                        q.build().execute(&mut *tx).await?;
                    }
                }
                set_head!(tx, dataset, head.after(changes.len()))?;
                tx.commit().await?;
                Ok(summary)
            }
        }
    }
}

/// Validates the batch and drops repeated ids (the first occurrence wins).
fn incoming(dataset: &Dataset, records: Vec<Value>) -> Result<Vec<Incoming>, RecordsError> {
    let mut seen = HashSet::with_capacity(records.len());
    let mut out = Vec::with_capacity(records.len());
    for (index, record) in records.into_iter().enumerate() {
        let invalid = |reason| RecordsError::InvalidRecord { model: dataset.model.clone(), index, reason };
        let Value::Object(mut record) = record else { return Err(invalid("is not an object")) };
        let id = external_id(&record).map_err(invalid)?;
        record.remove("_nango_metadata");
        if seen.insert(id.clone()) {
            out.push(Incoming { external_id: id, record });
        }
    }
    Ok(out)
}

/// Decides what each incoming record does and numbers the changes after the dataset's head.
/// Also returns the ids of the records that did not change.
fn classify(
    incoming: Vec<Incoming>,
    existing: &HashMap<String, Existing>,
    mode: Mode,
    head: Head,
) -> Result<(Vec<Change>, Vec<String>, Summary), RecordsError> {
    let mut changes = Vec::with_capacity(incoming.len());
    let mut unchanged = Vec::new();
    let mut summary = Summary::default();
    for Incoming { external_id, record } in incoming {
        let before = existing.get(&external_id);
        let live = before.filter(|e| !e.deleted);
        let (data, action, deleted_at) = match mode {
            Mode::Save => (Value::Object(record).to_string(), Action::Added, None),
            Mode::Update => {
                let Some(stored) = live.and_then(|e| e.data.as_deref()) else { continue };
                let mut merged = serde_json::from_str::<Value>(stored)?;
                deep_merge(&mut merged, Value::Object(record));
                (merged.to_string(), Action::Updated, None)
            }
            Mode::Delete => {
                let Some(stored) = live else { continue };
                (stored.data.clone().unwrap_or_else(|| "{}".into()), Action::Deleted, Some(head.now))
            }
        };
        let hash = content_hash(&data);
        let action = match (mode, live) {
            (Mode::Delete, _) => Action::Deleted,
            (_, Some(e)) if e.hash == hash => {
                summary.unchanged += 1;
                unchanged.push(external_id);
                continue;
            }
            (_, Some(_)) => Action::Updated,
            (_, None) => action,
        };
        match action {
            Action::Added => summary.added += 1,
            Action::Updated => summary.updated += 1,
            Action::Deleted => summary.deleted += 1,
        }
        let seq = head.last_seq + changes.len() as i64 + 1;
        changes.push(Change { external_id, data, hash, seq, deleted_at, action, stored: before.is_some() });
    }
    Ok((changes, unchanged, summary))
}

/// Objects merge key by key; anything else (arrays included) replaces.
fn deep_merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                match target.get_mut(&key) {
                    Some(slot) => deep_merge(slot, value),
                    None => {
                        target.insert(key, value);
                    }
                }
            }
        }
        (slot, value) => *slot = value,
    }
}

async fn pg_existing(
    tx: &mut Transaction<'_, Postgres>,
    dataset: &Dataset,
    ids: &[String],
    with_data: bool,
) -> Result<HashMap<String, Existing>, sqlx::Error> {
    let sql = if with_data {
        "SELECT external_id, data_hash, deleted_at IS NOT NULL, data FROM records
         WHERE connection = $1 AND model = $2 AND external_id = ANY($3)"
    } else {
        "SELECT external_id, data_hash, deleted_at IS NOT NULL, NULL::text FROM records
         WHERE connection = $1 AND model = $2 AND external_id = ANY($3)"
    };
    let rows = sqlx::query(sql).bind(dataset.connection).bind(&dataset.model).bind(ids).fetch_all(&mut **tx).await?;
    rows.into_iter().map(|row| Ok((row.try_get(0)?, existing_row(&row)?))).collect()
}

/// How many records this process changed since it last looked at the table's statistics.
static CHANGED_SINCE_CHECK: AtomicU64 = AtomicU64::new(0);
/// Whether an ANALYZE this process started is running.
static ANALYZING: AtomicBool = AtomicBool::new(false);
/// How many changed records make this process look at the statistics again.
const CHECK_EVERY: u64 = 2_000;

/// Analyzes `records` when its statistics lag far behind its contents. Without statistics
/// PostgreSQL guesses that a dataset holds a handful of rows and looks a batch's records up by
/// scanning the whole dataset instead of probing the unique index (a thousand comparisons a row,
/// batchSave falls to hundreds of records per second). Autovacuum normally prevents that; this
/// covers a server where it is off or has not caught up with a first large sync.
fn keep_statistics_fresh(pool: &sqlx::PgPool, changed: usize) {
    if CHANGED_SINCE_CHECK.fetch_add(changed as u64, Ordering::Relaxed) + (changed as u64) < CHECK_EVERY {
        return;
    }
    if ANALYZING.swap(true, Ordering::AcqRel) {
        return;
    }
    CHANGED_SINCE_CHECK.store(0, Ordering::Relaxed);
    let pool = pool.clone();
    tokio::spawn(async move {
        let stale: Result<bool, sqlx::Error> = async {
            let stale = sqlx::query_scalar(
                "SELECT s.n_mod_since_analyze > GREATEST(1000, c.reltuples * 0.2)
                 FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
                 WHERE s.relid = 'records'::regclass",
            )
            .fetch_optional(&pool)
            .await?;
            Ok(stale.unwrap_or(false))
        }
        .await;
        let analyzed = match stale {
            Ok(true) => sqlx::query("ANALYZE records").execute(&pool).await.map(|_| ()),
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = analyzed {
            tracing::warn!("cannot refresh the statistics of the records table: {e}");
        }
        ANALYZING.store(false, Ordering::Release);
    });
}

/// A stored row from columns 1 to 3 of a lookup: hash, whether deleted, data.
fn existing_row<R: Row>(row: &R) -> Result<Existing, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    bool: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(Existing { hash: row.try_get(1)?, deleted: row.try_get(2)?, data: row.try_get(3)? })
}

async fn sqlite_existing(
    tx: &mut Transaction<'_, Sqlite>,
    dataset: &Dataset,
    ids: &[String],
    with_data: bool,
) -> Result<HashMap<String, Existing>, sqlx::Error> {
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(SQLITE_ROWS_PER_STATEMENT * 4) {
        let columns = if with_data { "data" } else { "NULL" };
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT external_id, data_hash, deleted_at IS NOT NULL, {columns} FROM records WHERE connection = "
        ));
        q.push_bind(dataset.connection).push(" AND model = ").push_bind(&dataset.model).push(" AND external_id IN (");
        let mut list = q.separated(", ");
        for id in chunk {
            list.push_bind(id);
        }
        q.push(")");
        for row in q.build().fetch_all(&mut **tx).await? {
            out.insert(row.try_get(0)?, existing_row(&row)?);
        }
    }
    Ok(out)
}

/// The conflict clause both databases share: a re-added record starts its life again.
const ON_CONFLICT: &str = " ON CONFLICT (connection, model, external_id) DO UPDATE SET
    data = excluded.data, data_hash = excluded.data_hash, seq = excluded.seq,
    last_modified_at = excluded.last_modified_at, deleted_at = excluded.deleted_at,
    last_action = excluded.last_action, pruned_at = NULL,
    seen_run = CASE WHEN excluded.seen_run > records.seen_run THEN excluded.seen_run ELSE records.seen_run END,
    first_seen_at = CASE WHEN excluded.last_action = 'ADDED' THEN excluded.first_seen_at ELSE records.first_seen_at END";

/// Writes the changes: a plain INSERT for the ids the dataset has no row for, an upsert for the
/// others. The dataset's lock keeps other writers from adding rows in between, and a plain
/// INSERT skips the speculative insertion an upsert makes for every row; the upsert stays for
/// stored rows, which a `clear` may have removed since they were read.
async fn pg_upsert(
    tx: &mut Transaction<'_, Postgres>,
    dataset: &Dataset,
    changes: &[Change],
    run: i64,
    now: i64,
) -> Result<(), sqlx::Error> {
    let (stored, new): (Vec<&Change>, Vec<&Change>) = changes.iter().partition(|c| c.stored);
    for (rows, conflict) in [(new, ""), (stored, ON_CONFLICT)] {
        if rows.is_empty() {
            continue;
        }
        let ids: Vec<&str> = rows.iter().map(|c| c.external_id.as_str()).collect();
        let data: Vec<&str> = rows.iter().map(|c| c.data.as_str()).collect();
        let hashes: Vec<&str> = rows.iter().map(|c| c.hash.as_str()).collect();
        let seqs: Vec<i64> = rows.iter().map(|c| c.seq).collect();
        let deleted: Vec<Option<i64>> = rows.iter().map(|c| c.deleted_at).collect();
        let actions: Vec<&str> = rows.iter().map(|c| c.action.as_str()).collect();
        let sql = format!(
            "INSERT INTO records (connection, model, external_id, data, data_hash, seq, first_seen_at,
                 last_modified_at, deleted_at, last_action, seen_run)
             SELECT $1, $2, t.external_id, t.data, t.data_hash, t.seq, $3, $3, t.deleted_at, t.last_action, $4
             FROM UNNEST($5::text[], $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::text[])
                 AS t(external_id, data, data_hash, seq, deleted_at, last_action)
             {conflict}"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(dataset.connection)
            .bind(&dataset.model)
            .bind(now)
            .bind(run)
            .bind(&ids)
            .bind(&data)
            .bind(&hashes)
            .bind(&seqs)
            .bind(&deleted)
            .bind(&actions)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

async fn sqlite_upsert(
    tx: &mut Transaction<'_, Sqlite>,
    dataset: &Dataset,
    changes: &[Change],
    run: i64,
    now: i64,
) -> Result<(), sqlx::Error> {
    for chunk in changes.chunks(SQLITE_ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO records (connection, model, external_id, data, data_hash, seq, first_seen_at,
                 last_modified_at, deleted_at, last_action, seen_run) ",
        );
        q.push_values(chunk, |mut row, change| {
            row.push_bind(dataset.connection)
                .push_bind(&dataset.model)
                .push_bind(&change.external_id)
                .push_bind(&change.data)
                .push_bind(&change.hash)
                .push_bind(change.seq)
                .push_bind(now)
                .push_bind(now)
                .push_bind(change.deleted_at)
                .push_bind(change.action.as_str())
                .push_bind(run);
        });
        q.push(ON_CONFLICT);
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}
