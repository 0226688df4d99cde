//! The PostgreSQL CDC source: a Sluice table that mirrors a PostgreSQL table by its key.
//!
//! A new table first takes a consistent snapshot: on a replication connection it creates its
//! slot with `EXPORT_SNAPSHOT`, reads the table with `COPY … TO STDOUT` in a transaction that
//! imported that snapshot, and records the slot's consistent point in its log. Then it follows
//! the slot's logical replication stream (`pgoutput`, through `pgwire-replication`): each
//! committed transaction's inserts, updates, deletes and truncates of the table, netted per key
//! over a run of transactions, are written as one record of upserts and deleted keys together
//! with the LSN of the last commit. Only once that record is durable (fsynced) is the LSN
//! confirmed to PostgreSQL, so the slot keeps everything Sluice has not made durable.
//!
//! After a restart the table resumes from the LSN in its last record: transactions PostgreSQL
//! sends again that end at or before it are skipped, so nothing is applied twice and nothing
//! lost. A snapshot that a crash interrupted is taken again from scratch (the rows it wrote are
//! deleted first). A lost connection is made again with back-off (`sluice_sources` shows
//! `stalled`); a change Sluice cannot follow (a column of the Sluice table dropped upstream, the
//! slot gone) stops the table with the error in `sluice_sources`.
//!
//! Values travel in PostgreSQL's text form, pinned by session settings (UTC, ISO dates), and
//! are decoded by the same columnar decoder as `COPY … FROM STDIN`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use futures::StreamExt;
use pgwire_replication::{
    Lsn, PgWireError, ReplicationClient, ReplicationConfig, ReplicationEvent,
};
use serde::{Deserialize, Serialize};

use super::pgoutput::{self, Message, Value};
use crate::catalog::table_def::TableDef;
use crate::connector::queue::table::ConnectorBatch;
use crate::connector::source::{Failure, SourceContext, SourceStatus, SplitProgress, SplitState};
use crate::connector::spec::{PostgresCdcSource, quote_identifier};
use crate::error::{Error, Result, sqlstate};
use crate::sql::copy::{CopyFormat, CopyIn};

/// Session settings that fix the text form of values.
const SESSION_OPTIONS: &str = "-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=postgres \
                               -c extra_float_digits=3 -c bytea_output=hex";
/// Changed rows gathered before they are written.
const MAX_PENDING_ROWS: usize = 16 * 1024;
/// How long committed changes may wait to be written with later ones.
const GATHER_WAIT: Duration = Duration::from_millis(20);
/// How often a position alone (no rows of the table) is written when other traffic moved on.
const QUIET_MARK_EVERY: Duration = Duration::from_secs(10);
/// Snapshot bytes decoded at a time.
const SNAPSHOT_CHUNK_ROWS: usize = 16 * 1024;

/// Where the table stands: the end LSN of the last commit it holds; `None` while its
/// snapshot is not complete. Stored (and shown in `sluice_sources.position`) in PostgreSQL's
/// form, `{"lsn":"0/1FA7978"}`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Position {
    #[serde(default, skip_serializing_if = "Option::is_none", with = "lsn_text")]
    lsn: Option<u64>,
}

/// An LSN as PostgreSQL writes it.
mod lsn_text {
    use pgwire_replication::Lsn;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(lsn: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match lsn {
            Some(lsn) => s.serialize_str(&Lsn(*lsn).to_pg_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| {
                Lsn::parse(&text)
                    .map(|l| l.as_u64())
                    .map_err(|e| serde::de::Error::custom(format!("LSN {text}: {e}")))
            })
            .transpose()
    }
}

/// The slot and publication of a CDC table.
#[derive(Debug, Clone)]
pub struct Names {
    /// The replication slot.
    pub slot: String,
    /// The publication.
    pub publication: String,
    /// Whether Sluice made the publication (and drops it with the table).
    pub own_publication: bool,
}

impl Names {
    /// The names `cdc` gives, or the defaults for table `def`.
    pub fn of(cdc: &PostgresCdcSource, def: &TableDef) -> Self {
        // The table's id is kept whole, so that two tables never share a slot.
        let id = format!("_{}", def.id);
        let own = slot_name(&format!("sluice_{}", def.name), 63 - id.len()) + &id;
        Self {
            slot: cdc.slot.clone().unwrap_or_else(|| own.clone()),
            own_publication: cdc.publication.is_none(),
            publication: cdc.publication.clone().unwrap_or(own),
        }
    }
}

/// `text` as a replication slot (or publication) name: lower case, anything but letters and
/// digits as `_`, at most `max` characters.
pub fn slot_name(text: &str, max: usize) -> String {
    text.to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(max)
        .collect()
}

fn sql_failure(what: &'static str) -> impl Fn(tokio_postgres::Error) -> Failure {
    move |e| {
        let detail = super::describe(&e);
        if super::is_transient(&e) {
            Failure::Retry(format!("{what}: {detail}"))
        } else {
            Failure::Fatal(Error::connector(format!("postgres-cdc: {what}: {detail}")))
        }
    }
}

fn stream_failure(what: &'static str) -> impl Fn(PgWireError) -> Failure {
    move |e| match &e {
        PgWireError::Io(_) | PgWireError::Task(_) => Failure::Retry(format!("{what}: {e}")),
        PgWireError::Server(message)
            if ![
                "does not exist",
                "can no longer get changes",
                "has already been removed",
            ]
            .iter()
            .any(|m| message.contains(m)) =>
        {
            Failure::Retry(format!("{what}: {e}"))
        }
        _ => Failure::Fatal(Error::connector(format!("postgres-cdc: {what}: {e}"))),
    }
}

/// Follows the PostgreSQL table until the source is stopped.
pub fn run(context: &SourceContext, cdc: &PostgresCdcSource) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("postgres-cdc runtime: {e}")))?;
    runtime.block_on(run_async(context, cdc))
}

async fn run_async(context: &SourceContext, cdc: &PostgresCdcSource) -> Result<()> {
    let mut backoff = Duration::from_millis(200);
    while !context.stopped() {
        let mut session = Session::new(context, cdc)?;
        match session.run().await {
            Ok(()) => return Ok(()),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Retry(reason)) => {
                context
                    .back_off("postgres-cdc", &reason, &mut backoff)
                    .await;
            }
        }
    }
    Ok(())
}

/// Connects a SQL session with the pinned settings.
async fn sql_client(
    cdc: &PostgresCdcSource,
) -> std::result::Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = cdc.target.config();
    config.options(SESSION_OPTIONS);
    super::connect(&config).await
}

/// At `CREATE SOURCE`: PostgreSQL is reachable and decodes logically.
pub async fn check_server(cdc: &PostgresCdcSource) -> Result<()> {
    let client = connect_checked(cdc).await?;
    match check_wal_level(&client).await {
        Ok(()) => Ok(()),
        Err(Failure::Fatal(e)) => Err(e),
        Err(Failure::Retry(reason)) => Err(Error::connector(format!("postgres-cdc: {reason}"))),
    }
}

async fn connect_checked(cdc: &PostgresCdcSource) -> Result<tokio_postgres::Client> {
    sql_client(cdc).await.map_err(|e| {
        Error::user(
            sqlstate::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
            format!(
                "postgres-cdc: cannot connect to {}:{} database {}: {e}",
                cdc.target.host, cdc.target.port, cdc.target.database
            ),
        )
    })
}

async fn check_wal_level(client: &tokio_postgres::Client) -> std::result::Result<(), Failure> {
    let wal_level: String = client
        .query_one("SHOW wal_level", &[])
        .await
        .map_err(sql_failure("SHOW wal_level"))?
        .get(0);
    if wal_level != "logical" {
        return Err(Failure::Fatal(Error::user(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!(
                "postgres-cdc: PostgreSQL has wal_level = {wal_level}; logical decoding needs \
                 wal_level = logical (ALTER SYSTEM SET wal_level = logical, then restart it)"
            ),
        )));
    }
    Ok(())
}

/// At `CREATE TABLE`: PostgreSQL is reachable, decodes logically, and has the table with every
/// column of the Sluice table and the same key.
pub async fn check_table(cdc: &PostgresCdcSource, def: &TableDef) -> Result<()> {
    let client = connect_checked(cdc).await?;
    match check_upstream(&client, cdc, def).await {
        Ok(()) => Ok(()),
        Err(Failure::Fatal(e)) => Err(e),
        Err(Failure::Retry(reason)) => Err(Error::connector(format!("postgres-cdc: {reason}"))),
    }
}

async fn check_upstream(
    client: &tokio_postgres::Client,
    cdc: &PostgresCdcSource,
    def: &TableDef,
) -> std::result::Result<(), Failure> {
    check_wal_level(client).await?;
    let table = cdc.target.qualified_table();
    let rows = client
        .query(
            "SELECT a.attname::text, coalesce(a.attnum = ANY(i.indkey::int2[]), false) \
             FROM pg_attribute a LEFT JOIN pg_index i \
               ON i.indrelid = a.attrelid AND i.indisprimary \
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
            &[&table],
        )
        .await
        .map_err(sql_failure("reading the table's columns"))?;
    if rows.is_empty() {
        return Err(Failure::Fatal(Error::user(
            sqlstate::UNDEFINED_TABLE,
            format!(
                "postgres-cdc: PostgreSQL has no table {}.{}",
                cdc.target.schema, cdc.target.table
            ),
        )));
    }
    let upstream: HashMap<String, bool> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    for (i, field) in def.schema.fields().iter().enumerate() {
        match upstream.get(field.name()) {
            None => {
                return Err(Failure::Fatal(Error::user(
                    sqlstate::UNDEFINED_COLUMN,
                    format!(
                        "postgres-cdc: PostgreSQL table {}.{} has no column \"{}\"",
                        cdc.target.schema,
                        cdc.target.table,
                        field.name()
                    ),
                )));
            }
            Some(&in_key) if in_key != def.primary_key.contains(&i) => {
                return Err(Failure::Fatal(Error::user(
                    sqlstate::INVALID_PARAMETER_VALUE,
                    format!(
                        "postgres-cdc: the table's PRIMARY KEY must be the PostgreSQL table's \
                         (column \"{}\" differs)",
                        field.name()
                    ),
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Drops the slot of a dropped CDC table (and the publication Sluice made for it).
pub fn drop_upstream(cdc: &PostgresCdcSource, def: &TableDef) {
    let names = Names::of(cdc, def);
    let slot = names.slot.clone();
    let cdc = cdc.clone();
    let cleanup = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let client = sql_client(&cdc).await.map_err(|e| e.to_string())?;
            drop_slot(&client, &names.slot)
                .await
                .map_err(|e| e.to_string())?;
            if names.own_publication {
                client
                    .batch_execute(&format!(
                        "DROP PUBLICATION IF EXISTS {}",
                        quote_identifier(&names.publication)
                    ))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(())
        })
    });
    match cleanup.join() {
        Ok(Ok(())) => tracing::info!(%slot, "replication slot dropped"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "postgres-cdc: could not drop the replication slot; drop it by hand (pg_drop_replication_slot)")
        }
        Err(_) => tracing::warn!("postgres-cdc: the slot cleanup panicked"),
    }
}

/// Ends the slot's walsender, if any, and drops the slot, if it exists.
async fn drop_slot(
    client: &tokio_postgres::Client,
    slot: &str,
) -> std::result::Result<(), tokio_postgres::Error> {
    client
        .execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
             WHERE slot_name = $1 AND active_pid IS NOT NULL",
            &[&slot],
        )
        .await?;
    for attempt in 0..50 {
        match client
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE slot_name = $1",
                &[&slot],
            )
            .await
        {
            Ok(_) => return Ok(()),
            // Still active for a moment after its walsender was told to end.
            Err(e) if attempt < 49 && e.code().is_some_and(|c| c.code() == "55006") => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A change to one row, by key, netted over the transactions not yet written.
#[derive(Debug)]
enum RowChange {
    /// The row's new values, in the Sluice table's column order.
    Upsert(Vec<Value>),
    /// The row is gone; its key values in key order.
    Delete(Vec<Value>),
}

/// Changes netted per key: the last change of each key, and whether the table was emptied
/// before them.
#[derive(Debug, Default)]
struct Changes {
    truncated: bool,
    /// Per key (its values, encoded), the last change.
    rows: HashMap<Vec<u8>, RowChange>,
}

impl Changes {
    fn is_empty(&self) -> bool {
        !self.truncated && self.rows.is_empty()
    }

    /// Records a key's change. An upsert that left large values unchanged (not sent) takes
    /// them from the key's earlier upsert here, if any.
    fn put(&mut self, key: Vec<u8>, mut change: RowChange) {
        if let (RowChange::Upsert(values), Some(RowChange::Upsert(before))) =
            (&mut change, self.rows.get(&key))
        {
            for (value, earlier) in values.iter_mut().zip(before) {
                if *value == Value::Unchanged {
                    *value = earlier.clone();
                }
            }
        }
        self.rows.insert(key, change);
    }

    fn truncate(&mut self) {
        self.rows.clear();
        self.truncated = true;
    }

    /// The changes of a later transaction on top of these.
    fn absorb(&mut self, later: Changes) {
        if later.truncated {
            self.truncate();
        }
        for (key, change) in later.rows {
            self.put(key, change);
        }
    }
}

/// Committed changes not yet written.
#[derive(Debug, Default)]
struct Pending {
    changes: Changes,
    /// The end LSN of the last commit gathered.
    lsn: Option<u64>,
    /// When the first of them committed.
    since: Option<Instant>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.lsn.is_none()
    }
}

/// How the stream's columns map to the Sluice table's.
#[derive(Debug)]
struct RelationMap {
    id: u32,
    /// For each Sluice column, its position in the stream's tuples.
    columns: Vec<usize>,
}

/// One connection's life.
struct Session<'a> {
    context: &'a SourceContext,
    cdc: &'a PostgresCdcSource,
    names: Names,
    /// The Sluice table's key columns.
    key: Vec<usize>,
    position: Position,
}

impl<'a> Session<'a> {
    fn new(context: &'a SourceContext, cdc: &'a PostgresCdcSource) -> Result<Self> {
        let def = context.table.def();
        Ok(Self {
            context,
            cdc,
            names: Names::of(cdc, def),
            key: def.primary_key.clone(),
            position: context.resume()?.unwrap_or_default(),
        })
    }

    async fn run(&mut self) -> std::result::Result<(), Failure> {
        let def = self.context.table.def();
        let client = sql_client(self.cdc).await.map_err(sql_failure("connect"))?;
        check_upstream(&client, self.cdc, def).await?;
        self.ensure_publication(&client).await?;
        let base = ReplicationConfig::new(
            self.cdc.target.host.clone(),
            self.cdc.target.user.clone(),
            self.cdc.target.password.clone().unwrap_or_default(),
            self.cdc.target.database.clone(),
            self.names.slot.clone(),
            self.names.publication.as_str(),
        )
        .with_port(self.cdc.target.port)
        .with_options(SESSION_OPTIONS)
        .with_application_name(format!("sluice-cdc-{}", def.name))
        .with_status_interval(Duration::from_secs(1));
        let mut stream = match self.position.lsn {
            None => self.snapshot(&client, base).await?,
            Some(lsn) => {
                let slot = client
                    .query_opt(
                        "SELECT confirmed_flush_lsn::text, coalesce(wal_status, '') \
                         FROM pg_replication_slots WHERE slot_name = $1",
                        &[&self.names.slot],
                    )
                    .await
                    .map_err(sql_failure("reading the replication slots"))?;
                if let Some(slot) = &slot {
                    let confirmed: Option<String> = slot.get(0);
                    let status: String = slot.get(1);
                    let ahead = confirmed
                        .and_then(|c| Lsn::parse(&c).ok())
                        .is_some_and(|c| c.as_u64() > lsn);
                    if status == "lost" || ahead {
                        return Err(Failure::Fatal(Error::connector(format!(
                            "postgres-cdc: the replication slot {} no longer holds the changes \
                             since LSN {} ({}): drop the table and create it again (a new snapshot)",
                            self.names.slot,
                            Lsn(lsn).to_pg_string(),
                            if ahead {
                                "another consumer confirmed past them"
                            } else {
                                "PostgreSQL removed the WAL"
                            }
                        ))));
                    }
                }
                if slot.is_none() {
                    return Err(Failure::Fatal(Error::connector(format!(
                        "postgres-cdc: the replication slot {} is gone, so changes since LSN {} \
                         cannot be read: drop the table and create it again (a new snapshot)",
                        self.names.slot,
                        Lsn(lsn).to_pg_string()
                    ))));
                }
                let config = base.with_start_lsn(Lsn(lsn)).with_ack_lsn(Lsn(lsn));
                ReplicationClient::connect(config)
                    .await
                    .map_err(stream_failure("start replication"))?
            }
        };
        drop(client);
        self.context.stats.set_status(SourceStatus::Running);
        let result = self.follow(&mut stream).await;
        stream.stop();
        result
    }

    async fn ensure_publication(
        &self,
        client: &tokio_postgres::Client,
    ) -> std::result::Result<(), Failure> {
        let target = &self.cdc.target;
        let holds = client
            .query_opt(
                "SELECT 1 FROM pg_publication_tables \
                 WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
                &[&self.names.publication, &target.schema, &target.table],
            )
            .await
            .map_err(sql_failure("reading the publications"))?
            .is_some();
        if holds {
            return Ok(());
        }
        if !self.names.own_publication {
            return Err(Failure::Fatal(Error::user(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!(
                    "postgres-cdc: publication {} does not hold table {}.{}",
                    self.names.publication, target.schema, target.table
                ),
            )));
        }
        // Sluice's own publication: made for the table, or (left from an earlier upstream
        // table of that name) given it again.
        let exists = client
            .query_opt(
                "SELECT 1 FROM pg_publication WHERE pubname = $1",
                &[&self.names.publication],
            )
            .await
            .map_err(sql_failure("reading the publications"))?
            .is_some();
        let sql = if exists {
            format!(
                "ALTER PUBLICATION {} ADD TABLE {}",
                quote_identifier(&self.names.publication),
                target.qualified_table()
            )
        } else {
            format!(
                "CREATE PUBLICATION {} FOR TABLE {}",
                quote_identifier(&self.names.publication),
                target.qualified_table()
            )
        };
        client
            .batch_execute(&sql)
            .await
            .map_err(sql_failure("creating the publication"))?;
        Ok(())
    }

    /// Creates the slot, copies the table as of its consistent point and starts the stream
    /// there.
    async fn snapshot(
        &mut self,
        client: &tokio_postgres::Client,
        base: ReplicationConfig,
    ) -> std::result::Result<ReplicationClient, Failure> {
        let def = self.context.table.def();
        drop_slot(client, &self.names.slot)
            .await
            .map_err(sql_failure("dropping an unfinished snapshot's slot"))?;
        let mut stream = ReplicationClient::connect_gated(base)
            .await
            .map_err(stream_failure("replication connection"))?;
        let created = stream
            .simple_query(&format!(
                "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT",
                self.names.slot
            ))
            .await
            .map_err(stream_failure("creating the replication slot"))?;
        let text = |i: usize| {
            created
                .first()
                .and_then(|row| row.get(i).cloned().flatten())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .ok_or_else(|| {
                    Failure::Fatal(Error::connector(
                        "postgres-cdc: CREATE_REPLICATION_SLOT answered no row",
                    ))
                })
        };
        let consistent_point = Lsn::parse(&text(1)?).map_err(|e| {
            Failure::Fatal(Error::connector(format!(
                "postgres-cdc: slot position: {e}"
            )))
        })?;
        let snapshot_name = text(2)?;
        tracing::info!(slot = %self.names.slot, lsn = %consistent_point.to_pg_string(), "postgres-cdc: snapshot");

        // Rows an interrupted snapshot wrote go first.
        if let Some(keys) = self.existing_keys()? {
            self.write(None, Some(keys), &Position { lsn: None })?;
        }
        let estimate: f32 = client
            .query_one(
                "SELECT greatest(reltuples, 0)::float4 FROM pg_class WHERE oid = to_regclass($1)",
                &[&self.cdc.target.qualified_table()],
            )
            .await
            .map_err(sql_failure("estimating the table's rows"))?
            .get(0);
        let mut copying = sql_client(self.cdc).await.map_err(sql_failure("connect"))?;
        let transaction = copying
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(sql_failure("snapshot transaction"))?;
        transaction
            .batch_execute(&format!("SET TRANSACTION SNAPSHOT '{snapshot_name}'"))
            .await
            .map_err(sql_failure("importing the slot's snapshot"))?;
        let columns: Vec<String> = def
            .schema
            .fields()
            .iter()
            .map(|f| quote_identifier(f.name()))
            .collect();
        let copy = transaction
            .copy_out(&format!(
                "COPY (SELECT {} FROM {}) TO STDOUT",
                columns.join(", "),
                self.cdc.target.qualified_table()
            ))
            .await
            .map_err(sql_failure("COPY of the snapshot"))?;
        futures::pin_mut!(copy);
        let mut decoder =
            crate::sql::copy::CopyDecoder::new(self.copy_in((0..columns.len()).collect()))?;
        let mut batches: Vec<RecordBatch> = Vec::new();
        let mut rows = 0u64;
        while let Some(chunk) = copy.next().await {
            let chunk = chunk.map_err(sql_failure("COPY of the snapshot"))?;
            self.context.received(chunk.len());
            decoder.push(&chunk, &mut |b| {
                batches.push(b);
                Ok(())
            })?;
            if batches.iter().map(RecordBatch::num_rows).sum::<usize>() >= SNAPSHOT_CHUNK_ROWS {
                rows += self.write_rows(std::mem::take(&mut batches))?;
                self.show(rows, estimate as u64, SplitState::Lagging);
            }
            if self.context.stopped() {
                return Err(Failure::Retry("stopped during the snapshot".into()));
            }
        }
        decoder.finish(&mut |b| {
            batches.push(b);
            Ok(())
        })?;
        rows += self.write_rows(batches)?;
        transaction
            .commit()
            .await
            .map_err(sql_failure("ending the snapshot transaction"))?;
        self.position.lsn = Some(consistent_point.as_u64());
        self.write(
            None,
            None,
            &Position {
                lsn: Some(consistent_point.as_u64()),
            },
        )?;
        self.durable().await?;
        tracing::info!(rows, "postgres-cdc: snapshot taken");
        self.show(
            consistent_point.as_u64(),
            consistent_point.as_u64(),
            SplitState::CaughtUp,
        );
        stream
            .start()
            .await
            .map_err(stream_failure("start replication"))?;
        Ok(stream)
    }

    /// The keys of every row the table holds, if any.
    fn existing_keys(&self) -> Result<Option<RecordBatch>> {
        let existing = self.context.table.snapshot()?;
        if existing.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            concat_batches(&existing[0].schema(), &existing)?.project(&self.key)?,
        ))
    }

    /// Writes snapshot rows (position: snapshot not complete).
    fn write_rows(&self, batches: Vec<RecordBatch>) -> Result<u64> {
        let mut written = 0;
        for batch in batches {
            written += batch.num_rows() as u64;
            let rows = RecordBatch::try_new(
                Arc::clone(&self.context.table.def().schema),
                batch.columns().to_vec(),
            )?;
            self.write(Some(rows), None, &Position { lsn: None })?;
        }
        Ok(written)
    }

    fn write(
        &self,
        rows: Option<RecordBatch>,
        deleted_keys: Option<RecordBatch>,
        position: &Position,
    ) -> Result<()> {
        self.context.write(ConnectorBatch {
            rows: rows.unwrap_or_else(|| {
                RecordBatch::new_empty(Arc::clone(&self.context.table.def().schema))
            }),
            deleted_keys,
            watermark: None,
            position: crate::connector::source::position_text(position),
            end_of_input: false,
        })
    }

    async fn durable(&self) -> Result<()> {
        self.context.durable().await
    }

    fn copy_in(&self, columns: Vec<usize>) -> CopyIn {
        let def = self.context.table.def();
        CopyIn {
            table: def.name.clone(),
            schema: Arc::clone(&def.schema),
            columns,
            format: CopyFormat::Text {
                delimiter: b'\t',
                null: "\\N".into(),
            },
            // Every column comes from upstream.
            defaults: Vec::new(),
        }
    }

    /// What `sluice_source_partitions` shows: snapshot rows against the estimate, then the
    /// LSN written against the server's.
    fn show(&self, position: u64, end: u64, state: SplitState) {
        self.context.stats.set_splits(vec![SplitProgress {
            split: 0,
            position: Some(i64::try_from(position).unwrap_or(i64::MAX)),
            end: Some(i64::try_from(end.max(position)).unwrap_or(i64::MAX)),
            state,
            watermark: None,
            skipped: 0,
        }]);
    }

    /// Applies the stream's committed changes until stopped.
    async fn follow(&mut self, stream: &mut ReplicationClient) -> std::result::Result<(), Failure> {
        let mut relation: Option<RelationMap> = None;
        let mut pending = Pending::default();
        let mut transaction = Changes::default();
        let mut skip = false;
        let mut in_transaction = false;
        let mut server_end = self.position.lsn.unwrap_or(0);
        // The newest position with nothing of the table in flight below it (commits of other
        // tables, keepalives), and when such a position was last written.
        let mut quiet_lsn = 0u64;
        let mut last_mark = Instant::now();
        while !self.context.stopped() {
            let event = match tokio::time::timeout(Duration::from_millis(50), stream.recv()).await {
                Err(_) => None,
                Ok(Ok(Some(event))) => Some(event),
                Ok(Ok(None)) => return Err(Failure::Retry("the replication stream ended".into())),
                Ok(Err(e)) => return Err(stream_failure("replication stream")(e)),
            };
            match event {
                None => {}
                Some(ReplicationEvent::Begin { final_lsn, .. }) => {
                    in_transaction = true;
                    // Committed before the position: already applied.
                    skip = self.position.lsn.is_some_and(|p| final_lsn.as_u64() < p);
                    transaction = Changes::default();
                }
                Some(ReplicationEvent::XLogData { data, .. }) => {
                    self.context.received(data.len());
                    let message = pgoutput::decode(data).map_err(|e| {
                        Failure::Fatal(Error::connector(format!("postgres-cdc: {e}")))
                    })?;
                    // A skipped transaction's relation descriptions still hold for later ones.
                    if !skip || matches!(message, Message::Relation(_)) {
                        self.take(message, &mut relation, &mut transaction)?;
                    }
                }
                Some(ReplicationEvent::Commit { end_lsn, .. }) => {
                    in_transaction = false;
                    let changes = std::mem::take(&mut transaction);
                    if skip {
                    } else if changes.is_empty() {
                        // Nothing of this table: no record for it.
                        quiet_lsn = quiet_lsn.max(end_lsn.as_u64());
                    } else {
                        pending.changes.absorb(changes);
                        pending.lsn = Some(end_lsn.as_u64());
                        pending.since.get_or_insert_with(Instant::now);
                    }
                    server_end = server_end.max(end_lsn.as_u64());
                }
                Some(ReplicationEvent::KeepAlive { wal_end, .. }) => {
                    server_end = server_end.max(wal_end.as_u64());
                    if !in_transaction {
                        quiet_lsn = quiet_lsn.max(wal_end.as_u64());
                    }
                }
                Some(ReplicationEvent::Message { .. })
                | Some(ReplicationEvent::StoppedAt { .. }) => {}
            }
            let due = pending.changes.rows.len() >= MAX_PENDING_ROWS
                || pending.since.is_some_and(|t| t.elapsed() >= GATHER_WAIT);
            if !pending.is_empty() && due {
                let lsn = self.flush(&mut pending).await?;
                stream.update_applied_lsn(Lsn(lsn));
                last_mark = Instant::now();
            } else if pending.is_empty()
                && !in_transaction
                && self.position.lsn.is_some_and(|p| quiet_lsn > p)
                && last_mark.elapsed() >= QUIET_MARK_EVERY
            {
                // Nothing of the table is in flight below `quiet_lsn`: the table stands there
                // too, so the slot need not keep the WAL before it for other tables' traffic.
                self.position.lsn = Some(quiet_lsn);
                self.write(
                    None,
                    None,
                    &Position {
                        lsn: Some(quiet_lsn),
                    },
                )?;
                self.durable().await?;
                stream.update_applied_lsn(Lsn(quiet_lsn));
                last_mark = Instant::now();
            }
            let at = self.position.lsn.unwrap_or(0);
            let state = if at >= server_end {
                SplitState::CaughtUp
            } else {
                SplitState::Lagging
            };
            self.show(at, server_end, state);
        }
        Ok(())
    }

    /// Takes one change message into the open transaction.
    fn take(
        &self,
        message: Message,
        relation: &mut Option<RelationMap>,
        transaction: &mut Changes,
    ) -> std::result::Result<(), Failure> {
        let ours = |id: u32| relation.as_ref().is_some_and(|r| r.id == id);
        match message {
            Message::Relation(r)
                if r.namespace == self.cdc.target.schema && r.name == self.cdc.target.table =>
            {
                *relation = Some(self.map_relation(&r)?);
            }
            Message::Insert { relation: id, new } if ours(id) => {
                let new = self.row(relation, new, None)?;
                transaction.put(self.upsert_key(&new), RowChange::Upsert(new));
            }
            Message::Update {
                relation: id,
                old,
                new,
            } if ours(id) => {
                let full = old.as_ref().filter(|o| o.full).map(|o| o.values.as_slice());
                let new = self.row(relation, new, full)?;
                if let Some(old) = old {
                    let old_key = self.key_values(relation, &old.values);
                    let new_key: Vec<Value> = self.key.iter().map(|&k| new[k].clone()).collect();
                    if old_key != new_key {
                        let key = self.key_bytes(old_key.iter());
                        transaction.put(key, RowChange::Delete(old_key));
                    }
                }
                transaction.put(self.upsert_key(&new), RowChange::Upsert(new));
            }
            Message::Delete { relation: id, old } if ours(id) => {
                let key = self.key_values(relation, &old);
                transaction.put(self.key_bytes(key.iter()), RowChange::Delete(key));
            }
            Message::Truncate { relations } if relations.iter().any(|&id| ours(id)) => {
                transaction.truncate();
            }
            _ => {}
        }
        Ok(())
    }

    fn upsert_key(&self, values: &[Value]) -> Vec<u8> {
        self.key_bytes(self.key.iter().map(|&k| &values[k]))
    }

    fn map_relation(&self, r: &pgoutput::Relation) -> std::result::Result<RelationMap, Failure> {
        let def = self.context.table.def();
        let mut columns = Vec::with_capacity(def.schema.fields().len());
        for (i, field) in def.schema.fields().iter().enumerate() {
            let Some(at) = r.columns.iter().position(|c| c == field.name()) else {
                return Err(Failure::Fatal(Error::connector(format!(
                    "postgres-cdc: table {}.{} no longer has column \"{}\" (changed upstream); \
                     the Sluice table stops here: drop and create it again to follow the new schema",
                    r.namespace,
                    r.name,
                    field.name()
                ))));
            };
            if self.key.contains(&i) && !r.key[at] {
                return Err(Failure::Fatal(Error::connector(format!(
                    "postgres-cdc: column \"{}\" is no longer part of the replica identity of {}.{}",
                    field.name(),
                    r.namespace,
                    r.name
                ))));
            }
            columns.push(at);
        }
        Ok(RelationMap { id: r.id, columns })
    }

    /// A stream tuple in the Sluice table's column order. A large (TOASTed) value the update
    /// left unchanged is not sent: it is taken from the whole old row when the stream sent it,
    /// else left `Unchanged` for [`Changes::put`] or [`Session::flush`] to fill.
    fn row(
        &self,
        relation: &Option<RelationMap>,
        tuple: Vec<Value>,
        old: Option<&[Value]>,
    ) -> std::result::Result<Vec<Value>, Failure> {
        let map = relation.as_ref().ok_or_else(|| {
            Failure::Fatal(Error::connector(
                "postgres-cdc: a change before its relation",
            ))
        })?;
        map.columns
            .iter()
            .map(|&at| match tuple.get(at) {
                Some(Value::Unchanged) => Ok(old
                    .and_then(|o| o.get(at))
                    .filter(|v| **v != Value::Unchanged)
                    .cloned()
                    .unwrap_or(Value::Unchanged)),
                Some(v) => Ok(v.clone()),
                None => Err(Failure::Fatal(Error::connector(
                    "postgres-cdc: a tuple shorter than its relation",
                ))),
            })
            .collect()
    }

    fn key_values(&self, relation: &Option<RelationMap>, tuple: &[Value]) -> Vec<Value> {
        self.key
            .iter()
            .map(|&k| {
                relation
                    .as_ref()
                    .and_then(|m| tuple.get(m.columns[k]))
                    .cloned()
                    .unwrap_or(Value::Null)
            })
            .collect()
    }

    fn key_bytes<'v>(&self, values: impl Iterator<Item = &'v Value>) -> Vec<u8> {
        let mut out = Vec::new();
        for v in values {
            match v {
                Value::Text(t) => {
                    out.push(1);
                    out.extend_from_slice(&(t.len() as u32).to_le_bytes());
                    out.extend_from_slice(t);
                }
                _ => out.push(0),
            }
        }
        out
    }

    /// Writes the pending changes as one record with their LSN, waits until it is durable, and
    /// returns the LSN.
    async fn flush(&mut self, pending: &mut Pending) -> std::result::Result<u64, Failure> {
        let lsn = pending
            .lsn
            .take()
            .ok_or_else(|| Failure::Fatal(Error::internal("nothing to flush")))?;
        let changes = std::mem::take(&mut pending.changes);
        pending.since = None;
        if changes.truncated
            && let Some(keys) = self.existing_keys()?
        {
            self.write(
                None,
                Some(keys),
                &Position {
                    lsn: self.position.lsn,
                },
            )?;
        }
        let mut upserts = BytesMut::new();
        let mut deletes = BytesMut::new();
        for change in changes.rows.values() {
            match change {
                RowChange::Upsert(values) if values.contains(&Value::Unchanged) => {
                    return Err(Failure::Fatal(Error::connector(format!(
                        "postgres-cdc: an update of {}.{} left a large (TOASTed) value unchanged, \
                         which the stream does not send: ALTER TABLE … REPLICA IDENTITY FULL lets \
                         Sluice follow such updates",
                        self.cdc.target.schema, self.cdc.target.table
                    ))));
                }
                RowChange::Upsert(values) => copy_line(&mut upserts, values),
                RowChange::Delete(key) => copy_line(&mut deletes, key),
            }
        }
        let schema = Arc::clone(&self.context.table.def().schema);
        let rows = if upserts.is_empty() {
            None
        } else {
            let copy = self.copy_in((0..schema.fields().len()).collect());
            let batch = copy.decode(&upserts)?;
            Some(RecordBatch::try_new(schema, batch.columns().to_vec()).map_err(Error::from)?)
        };
        let deleted_keys = if deletes.is_empty() {
            None
        } else {
            // Only the key columns: the others, absent, must not trip NOT NULL checks.
            let keys = Arc::new(
                self.context
                    .table
                    .def()
                    .schema
                    .project(&self.key)
                    .map_err(Error::from)?,
            );
            let copy = CopyIn {
                schema: keys,
                columns: (0..self.key.len()).collect(),
                ..self.copy_in(Vec::new())
            };
            Some(copy.decode(&deletes)?)
        };
        self.position.lsn = Some(lsn);
        self.write(rows, deleted_keys, &Position { lsn: Some(lsn) })?;
        self.durable().await?;
        Ok(lsn)
    }
}

/// One line of `COPY` text: the values tab-separated, `\N` for NULL, backslash escapes.
fn copy_line(out: &mut BytesMut, values: &[Value]) {
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.put_u8(b'\t');
        }
        match value {
            Value::Text(text) => crate::serve::encode::put_copy_text(out, text),
            Value::Null | Value::Unchanged => out.put_slice(b"\\N"),
        }
    }
    out.put_u8(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn positions_keep_lsns_in_postgres_form() {
        let text = crate::connector::source::position_text(&Position {
            lsn: Some((1 << 32) + 0x1FA_7978),
        });
        assert_eq!(text, r#"{"lsn":"1/1FA7978"}"#);
        let back: Position = serde_json::from_str(&text).unwrap();
        assert_eq!(back.lsn, Some((1 << 32) + 0x1FA_7978));
        let none: Position = serde_json::from_str("{}").unwrap();
        assert_eq!(none.lsn, None);
        assert!(serde_json::from_str::<Position>(r#"{"lsn":"nope"}"#).is_err());
    }

    #[test]
    fn copy_lines_escape_what_copy_unescapes() {
        let mut out = BytesMut::new();
        copy_line(
            &mut out,
            &[
                Value::Text(Bytes::from("a\tb\\c\nd")),
                Value::Null,
                Value::Text(Bytes::from("")),
            ],
        );
        assert_eq!(&out[..], b"a\\tb\\\\c\\nd\t\\N\t\n");
    }
}
