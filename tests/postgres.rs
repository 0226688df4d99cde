//! PostgreSQL as a real system beside Sluice: the machine's PostgreSQL on 127.0.0.1:5432
//! (trust authentication, database `test`), each test in a schema of its own.
//!
//! - The sink: views sunk into PostgreSQL tables equal their views after every `FLUSH` (once
//!   the checkpoint holding the changes committed), across SIGKILLs of the Sluice server, with
//!   no row missing and none twice; the sunk tables are read with `psql`, as a user would.
//! - Sunk values keep PostgreSQL's own types (`NUMERIC`, `TIMESTAMPTZ`, arrays, `JSONB`, …).
//! - `examples/postgres`: CDC in, a view, the sink back out, as shipped.
//!
//! (The CDC test that restarts PostgreSQL is alone in `postgres_cdc.rs`.)

mod common;

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tokio_postgres::{Client, NoTls};

use common::process::{ServerProcess, connect_when_up, free_port, spawn_with};
use common::{db_error, sorted_rows};

const POSTGRES: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

/// A client of the machine's PostgreSQL, in UTC.
async fn postgres() -> Client {
    let (client, connection) = tokio_postgres::connect(POSTGRES, NoTls)
        .await
        .expect("the machine's PostgreSQL on 127.0.0.1:5432 (database test)");
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("postgres connection: {e}");
        }
    });
    client.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    client
}

/// A fresh schema in PostgreSQL's `test` database, dropped first if a failed run left it.
async fn fresh_schema(pg: &Client, name: &str) {
    pg.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
    ))
    .await
    .unwrap();
}

fn sink_options(schema: &str, table: &str) -> String {
    format!(
        "connector = 'postgres', hostname = '127.0.0.1', port = '5432', username = 'postgres', \
         database.name = 'test', schema.name = '{schema}', table.name = '{table}'"
    )
}

fn spawn(dir: &std::path::Path, port: u16) -> ServerProcess {
    spawn_with(dir, port, &["--checkpoint-interval", "200ms"])
}

/// `query`'s rows in the machine's PostgreSQL as `psql -At` prints them (in UTC, NULL as
/// `NULL`), sorted: the same text as [`sorted_rows`] gives for Sluice's rows.
fn psql_rows(query: &str) -> Vec<String> {
    let out = std::process::Command::new("psql")
        .args([
            "-X",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-P",
            "null=NULL",
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
            "-U",
            "postgres",
            "-d",
            "test",
            "-c",
            query,
        ])
        .env("PGTZ", "UTC")
        .output()
        .expect("psql (postgresql-client, installed by .ci/run)");
    assert!(
        out.status.success(),
        "psql -c {query}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rows: Vec<String> = String::from_utf8(out.stdout)
        .expect("UTF-8")
        .lines()
        .map(str::to_string)
        .collect();
    rows.sort();
    rows
}

/// Waits until `pg_query`, read from PostgreSQL with `psql`, gives the rows `sluice_query`
/// gives in Sluice now.
async fn await_sunk(sluice: &Client, sluice_query: &str, pg_query: &str, what: &str) {
    let expected = sorted_rows(sluice, sluice_query).await;
    await_rows(&expected, || async { psql_rows(pg_query) }, what).await;
}

/// Waits until `b_query` in `b` gives the rows `a_query` gives in `a` now.
async fn await_equal(a: &Client, a_query: &str, b: &Client, b_query: &str, what: &str) {
    let expected = sorted_rows(a, a_query).await;
    await_rows(&expected, || sorted_rows(b, b_query), what).await;
}

/// Waits until `read` gives `expected` (for 30 s at most).
async fn await_rows<F: std::future::Future<Output = Vec<String>>>(
    expected: &[String],
    read: impl Fn() -> F,
    what: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = read().await;
        if got == expected {
            return;
        }
        if Instant::now() > deadline {
            let missing: Vec<_> = expected
                .iter()
                .filter(|r| !got.contains(r))
                .take(5)
                .collect();
            let extra: Vec<_> = got
                .iter()
                .filter(|r| !expected.contains(r))
                .take(5)
                .collect();
            panic!(
                "{what}: {} rows read, {} expected; missing {missing:?}, extra {extra:?}",
                got.len(),
                expected.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sunk_views_equal_their_views_across_sigkills() {
    let pg = postgres().await;
    let schema = "sluice_sink_test";
    fresh_schema(&pg, schema).await;
    // An existing target table with a column the view does not have (it keeps its default).
    pg.batch_execute(&format!(
        "CREATE TABLE {schema}.per_customer (customer INT PRIMARY KEY, orders BIGINT, \
         total NUMERIC(20, 2), last_at TIMESTAMPTZ, note TEXT DEFAULT 'kept')"
    ))
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = spawn(dir.path(), port);
    let sluice = connect_when_up(port).await;
    sluice
        .batch_execute(&format!(
            "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer INT, amount NUMERIC(10, 2),
                                  at TIMESTAMPTZ, tags TEXT);
             CREATE TABLE clicks (id BIGINT, page TEXT, n INT) APPEND ONLY;
             CREATE MATERIALIZED VIEW per_customer AS
               SELECT customer, count(*) AS orders, sum(amount) AS total, max(at) AS last_at
               FROM orders GROUP BY customer;
             CREATE MATERIALIZED VIEW big_clicks AS SELECT id, page, n FROM clicks WHERE n > 3;
             CREATE SINK per_customer_out FROM per_customer
               WITH ({}, primary_key = 'customer');
             CREATE SINK big_clicks_out FROM big_clicks WITH ({}, type = 'append-only');",
            sink_options(schema, "per_customer"),
            sink_options(schema, "big_clicks")
        ))
        .await
        .unwrap();

    let mut rng = rand::rngs::StdRng::seed_from_u64(
        std::env::var("SLUICE_TEST_SEED").map_or(21, |s| s.parse().expect("a u64 seed")),
    );
    let mut click_id = 0i64;
    let mut sluice = sluice;
    for round in 0..12 {
        // A round of writes: upserts, updates and deletes of orders; clicks appended.
        let mut statements = Vec::new();
        for _ in 0..rng.random_range(1..6) {
            let rows: Vec<String> = (0..rng.random_range(1..200))
                .map(|_| {
                    let id = rng.random_range(0..2000);
                    format!(
                        "({id}, {}, {}.{:02}, TIMESTAMPTZ '2026-01-01 00:00:00+00' + INTERVAL '{} seconds', 'it''s \"{}\"\\t')",
                        rng.random_range(0..40),
                        rng.random_range(0..500),
                        rng.random_range(0..100),
                        rng.random_range(0..100_000),
                        id % 7
                    )
                })
                .collect();
            statements.push(format!("INSERT INTO orders VALUES {}", rows.join(", ")));
        }
        statements.push(format!(
            "UPDATE orders SET amount = amount + 1 WHERE customer = {}",
            rng.random_range(0..40)
        ));
        statements.push(format!(
            "DELETE FROM orders WHERE id % 17 = {} OR customer = {}",
            rng.random_range(0..17),
            rng.random_range(0..40)
        ));
        let clicks: Vec<String> = (0..rng.random_range(1..300))
            .map(|_| {
                click_id += 1;
                format!(
                    "({click_id}, 'p{} \\ \"q\" it''s', {})",
                    click_id % 13,
                    rng.random_range(0..8)
                )
            })
            .collect();
        statements.push(format!("INSERT INTO clicks VALUES {}", clicks.join(", ")));
        for statement in &statements {
            sluice.batch_execute(statement).await.unwrap();
        }
        sluice.batch_execute("FLUSH").await.unwrap();
        if round % 3 == 1 {
            // Killed with changes of the last checkpoint possibly not yet in PostgreSQL.
            child.kill();
            child = spawn(dir.path(), port);
            sluice = connect_when_up(port).await;
            sluice.batch_execute("FLUSH").await.unwrap();
        }
        await_sunk(
            &sluice,
            "SELECT customer, orders, total, last_at FROM per_customer",
            &format!("SELECT customer, orders, total, last_at FROM {schema}.per_customer"),
            &format!("round {round}: per_customer"),
        )
        .await;
        await_sunk(
            &sluice,
            "SELECT id, page, n FROM big_clicks",
            &format!("SELECT id, page, n FROM {schema}.big_clicks"),
            &format!("round {round}: big_clicks"),
        )
        .await;
    }
    // The column the view lacks kept its default; the table Sluice created has its key.
    let notes = sorted_rows(
        &pg,
        &format!("SELECT DISTINCT note FROM {schema}.per_customer"),
    )
    .await;
    assert_eq!(notes, vec!["kept"]);
    let types = sorted_rows(
        &pg,
        &format!(
            "SELECT column_name, data_type FROM information_schema.columns \
             WHERE table_schema = '{schema}' AND table_name = 'big_clicks'"
        ),
    )
    .await;
    assert_eq!(types, vec!["id|bigint", "n|integer", "page|text"]);
    let shown = sorted_rows(
        &sluice,
        "SELECT sink_name, connector, exactly_once, status FROM sluice_sinks",
    )
    .await;
    assert_eq!(
        shown,
        vec![
            "big_clicks_out|postgres|t|running",
            "per_customer_out|postgres|t|running"
        ]
    );
    drop(child);
    pg.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

/// A view of many types sunk twice: into a table the sink creates (each column gets
/// PostgreSQL's own type for the view's) and into an existing one with `JSONB` and `NUMERIC`
/// columns where Sluice has text and double precision. Both read back with `psql` as the view
/// prints (PostgreSQL's text forms), and PostgreSQL's operators work on the values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sunk_values_keep_postgresql_types() {
    let pg = postgres().await;
    let schema = "sluice_sink_types";
    fresh_schema(&pg, schema).await;
    pg.batch_execute(&format!(
        "CREATE TABLE {schema}.typed_json (k INT PRIMARY KEY, doc JSONB, f NUMERIC, ints INT[], \
         texts TEXT[], ts TIMESTAMPTZ)"
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _child = spawn(dir.path(), port);
    let sluice = connect_when_up(port).await;
    sluice
        .batch_execute(&format!(
            "CREATE TABLE typed (k INT PRIMARY KEY, n NUMERIC(12, 3), ts TIMESTAMPTZ, t TIMESTAMP,
               d DATE, b BOOLEAN, f DOUBLE PRECISION, r REAL, s SMALLINT, big BIGINT,
               iv INTERVAL, ints INT[], texts TEXT[], doc TEXT, v VARCHAR(10), u UUID);
             CREATE MATERIALIZED VIEW typed_v AS SELECT * FROM typed;
             CREATE MATERIALIZED VIEW typed_json AS SELECT k, doc, f, ints, texts, ts FROM typed;
             CREATE SINK typed_out FROM typed_v WITH ({}, primary_key = 'k');
             CREATE SINK typed_json_out FROM typed_json WITH ({}, primary_key = 'k');",
            sink_options(schema, "typed"),
            sink_options(schema, "typed_json"),
        ))
        .await
        .unwrap();
    sluice
        .batch_execute(
            r#"INSERT INTO typed VALUES
               (1, 12.5, '2026-01-01 10:00:00+02', '2026-01-01 10:00:00.123456', '2026-02-03',
                true, '1.5e300', 0.1, -3, 9223372036854775807,
                INTERVAL '1 day 2 hours 3 minutes 4.5 seconds', ARRAY[1, NULL, 3],
                ARRAY['a b', NULL, 'q"uo,te', '', 'back\slash', 'NULL'],
                '{"a": 1, "b": [1, 2], "c": {"d": "it''s"}}', 'var',
                'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'),
               (2, -0.001, '1999-12-31 23:59:59.999999+00', '1970-01-01 00:00:00', '2000-02-29',
                false, '-0.5', '-1e-30', 32767, -1, INTERVAL '-3 seconds', ARRAY[]::INT[],
                ARRAY['{}', 'x	y'], '[1, "two", null, true]', '',
                '{FFFFFFFF-0000-4000-8000-00000000000A}'),
               (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                'null', NULL, NULL);
             FLUSH"#,
        )
        .await
        .unwrap();
    await_sunk(
        &sluice,
        "SELECT * FROM typed_v",
        &format!(
            "SELECT k, n, ts, t, d, b, f, r, s, big, iv, ints, texts, doc, v, u FROM {schema}.typed"
        ),
        "typed",
    )
    .await;
    await_sunk(
        &sluice,
        "SELECT * FROM typed_json",
        // NUMERIC prints 1.5e300 with all its digits: read back as double precision.
        &format!("SELECT k, doc, f::float8, ints, texts, ts FROM {schema}.typed_json"),
        "typed_json",
    )
    .await;
    // The table the sink created has PostgreSQL's types for the view's columns.
    let types = psql_rows(&format!(
        "SELECT column_name, format_type(atttypid, atttypmod) FROM information_schema.columns c \
         JOIN pg_attribute a ON a.attrelid = '{schema}.typed'::regclass AND a.attname = c.column_name \
         WHERE table_schema = '{schema}' AND table_name = 'typed'"
    ));
    assert_eq!(
        types,
        vec![
            "big|bigint",
            "b|boolean",
            "doc|text",
            "d|date",
            "f|double precision",
            "ints|integer[]",
            "iv|interval",
            "k|integer",
            "n|numeric(12,3)",
            "r|real",
            "s|smallint",
            "texts|text[]",
            "ts|timestamp with time zone",
            "t|timestamp without time zone",
            "u|uuid",
            // Sluice keeps VARCHAR(n) as text.
            "v|text",
        ]
    );
    // PostgreSQL works with the values as its own.
    let used = psql_rows(&format!(
        "SELECT k, doc -> 'c' ->> 'd', doc @> '{{\"a\": 1}}', jsonb_typeof(doc), ints[3], \
         cardinality(texts), f::float8 + 1 FROM {schema}.typed_json"
    ));
    assert_eq!(
        used,
        vec![
            "1|it's|t|object|3|6|1.5e+300",
            "2|NULL|f|array|NULL|2|0.5",
            "3|NULL|f|null|NULL|NULL|NULL",
        ]
    );
    pg.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_does_not_fit_is_refused_at_create_sink() {
    let pg = postgres().await;
    let schema = "sluice_sink_refusals";
    fresh_schema(&pg, schema).await;
    pg.batch_execute(&format!("CREATE TABLE {schema}.narrow (k INT PRIMARY KEY)"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _child = spawn(dir.path(), port);
    let sluice = connect_when_up(port).await;
    sluice
        .batch_execute(
            "CREATE TABLE t (k INT PRIMARY KEY, v TEXT);
             CREATE MATERIALIZED VIEW v AS SELECT k, v FROM t;",
        )
        .await
        .unwrap();
    let refused = |sql: String| {
        let sluice = &sluice;
        async move {
            let e = sluice.batch_execute(&sql).await.expect_err(&sql);
            db_error(&e)
        }
    };
    let (code, message) = refused(format!(
        "CREATE SINK s FROM v WITH ({}, primary_key = 'k')",
        sink_options(schema, "narrow")
    ))
    .await;
    assert_eq!(code, "42703", "{message}");
    assert!(message.contains("no column \"v\""), "{message}");
    let (code, message) = refused(format!(
        "CREATE SINK s FROM v WITH ({})",
        sink_options(schema, "anything")
    ))
    .await;
    assert_eq!(code, "22023", "{message}");
    let (code, message) = refused(
        "CREATE SINK s FROM v WITH (connector = 'postgres', port = '1', username = 'postgres', \
         database.name = 'test', table.name = 'x', primary_key = 'k')"
            .to_string(),
    )
    .await;
    assert_eq!(code, "08001", "{message}");
    let (code, _) = refused(format!(
        "CREATE SINK s FROM v WITH ({}, primary_key = 'nope')",
        sink_options(schema, "anything")
    ))
    .await;
    assert_eq!(code, "42703");
    // Nothing was created by the refused sinks.
    let sinks = sorted_rows(&sluice, "SELECT sink_name FROM sluice_sinks").await;
    assert!(sinks.is_empty(), "{sinks:?}");
    pg.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

/// `examples/postgres` as shipped: its upstream tables, its pipeline (CDC in, a join, a sink
/// back out), and the sunk table following changes made upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_example_pipeline_runs_as_shipped() {
    let pg = postgres().await;
    let wal_level: String = pg.query_one("SHOW wal_level", &[]).await.unwrap().get(0);
    assert_eq!(
        wal_level, "logical",
        "run .ci/run once: it sets wal_level = logical"
    );
    pg.batch_execute(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
           WHERE NOT active AND (slot_name LIKE 'sluice_customers_%' OR slot_name LIKE 'sluice_orders_%');
         DROP SCHEMA IF EXISTS shop CASCADE;",
    )
    .await
    .unwrap();
    let example = |file: &str| {
        std::fs::read_to_string(format!(
            "{}/examples/postgres/{file}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    };
    pg.batch_execute(&example("upstream.sql")).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let metrics = format!("127.0.0.1:{}", free_port());
    let child = spawn_with(
        dir.path(),
        port,
        &[
            "--checkpoint-interval",
            "200ms",
            "--metrics-listen",
            &metrics,
        ],
    );
    let sluice = connect_when_up(port).await;
    sluice
        .batch_execute(&example("pipeline.sql"))
        .await
        .unwrap();
    let upstream = "SELECT c.country, count(*), sum(o.amount) FROM shop.orders o \
                    JOIN shop.customers c ON o.customer_id = c.id GROUP BY c.country";
    let sunk = "SELECT country, orders, revenue FROM shop.revenue_by_country";
    await_equal(&pg, upstream, &pg, sunk, "as shipped").await;
    assert_eq!(sorted_rows(&pg, sunk).await.len(), 3);
    pg.batch_execute(
        "INSERT INTO shop.orders (id, customer_id, amount) VALUES (5, 3, 100.00);
         UPDATE shop.customers SET country = 'SE' WHERE id = 3;
         DELETE FROM shop.orders WHERE id = 2;",
    )
    .await
    .unwrap();
    await_equal(&pg, upstream, &pg, sunk, "after upstream changes").await;
    assert!(
        sorted_rows(&pg, sunk)
            .await
            .contains(&"SE|2|107.25".to_string())
    );
    // The metrics endpoint of the server binary: CDC rows and WAL lag, the sink's deliveries.
    let text = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut socket = tokio::net::TcpStream::connect(&metrics).await.unwrap();
        socket
            .write_all(b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        socket.read_to_string(&mut response).await.unwrap();
        response
    };
    let sample = |series: &str| -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    };
    let orders = r#"{source="orders",connector="postgres-cdc"}"#;
    assert!(
        sample(&format!("sluice_source_rows_total{orders}")).unwrap() >= 4.0,
        "{text}"
    );
    assert!(
        sample(&format!("sluice_source_lag_bytes{orders}")).unwrap() >= 0.0,
        "{text}"
    );
    assert!(sample(&format!("sluice_source_received_bytes_total{orders}")).unwrap() > 0.0);
    let sink = r#"{sink="revenue_out",view="revenue_by_country",connector="postgres"}"#;
    assert!(
        sample(&format!("sluice_sink_records_total{sink}")).unwrap() >= 3.0,
        "{text}"
    );
    assert_eq!(sample(&format!("sluice_sink_up{sink}")), Some(1.0));
    sluice
        .batch_execute("DROP SINK revenue_out; DROP MATERIALIZED VIEW revenue_by_country; DROP SOURCE shop CASCADE")
        .await
        .unwrap();
    drop(child);
    pg.batch_execute("DROP SCHEMA shop CASCADE").await.unwrap();
}

/// A CDC table killed in the middle of its snapshot takes it again from the start (the rows
/// the first try wrote are not kept twice); one whose upstream table loses a column it takes
/// stops, with the reason in `sluice_sources`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_snapshot_interrupted_and_a_schema_change_it_cannot_follow() {
    let pg = postgres().await;
    let schema = "sluice_cdc_snapshot";
    pg.batch_execute(&format!(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
           WHERE slot_name IN ('sluice_snap_big', 'sluice_snap_small');
         DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
         CREATE TABLE {schema}.big (id BIGINT PRIMARY KEY, v TEXT);
         INSERT INTO {schema}.big SELECT g, repeat('x', 100) || g FROM generate_series(1, 400000) g;
         CREATE TABLE {schema}.small (id INT PRIMARY KEY, a INT, b TEXT);
         INSERT INTO {schema}.small VALUES (1, 1, 'one'), (2, 2, 'two');"
    ))
    .await
    .unwrap();
    let options = |table: &str| {
        format!(
            "connector = 'postgres-cdc', hostname = '127.0.0.1', port = '5432', \
             username = 'postgres', database.name = 'test', schema.name = '{schema}', \
             table.name = '{table}', slot.name = 'sluice_snap_{table}'"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = spawn(dir.path(), port);
    let sluice = connect_when_up(port).await;
    sluice
        .batch_execute(&format!(
            "CREATE TABLE big (id BIGINT PRIMARY KEY, v TEXT) WITH ({});
             CREATE TABLE small (id INT PRIMARY KEY, a INT, b TEXT) WITH ({});",
            options("big"),
            options("small")
        ))
        .await
        .unwrap();
    // Killed once some of the snapshot is in.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows: i64 = sluice
            .query_one(
                "SELECT rows FROM sluice_sources WHERE source_name = 'big'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if rows > 0 {
            assert!(rows < 400_000, "the snapshot ended before the kill");
            break;
        }
        assert!(Instant::now() < deadline, "no snapshot rows");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill();
    pg.batch_execute(&format!(
        "DELETE FROM {schema}.big WHERE id % 3 = 0; UPDATE {schema}.big SET v = 'changed' WHERE id % 5 = 0"
    ))
    .await
    .unwrap();
    let child = spawn(dir.path(), port);
    let sluice = connect_when_up(port).await;
    await_equal(
        &pg,
        &format!(
            "SELECT count(*), count(*) FILTER (WHERE v = 'changed'), sum(id) FROM {schema}.big"
        ),
        &sluice,
        "SELECT count(*), count(*) FILTER (WHERE v = 'changed'), sum(id) FROM big",
        "after the interrupted snapshot",
    )
    .await;

    // A column the Sluice table takes is dropped upstream.
    pg.batch_execute(&format!(
        "ALTER TABLE {schema}.small DROP COLUMN b; INSERT INTO {schema}.small VALUES (3, 3)"
    ))
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = sluice
            .query_one(
                "SELECT status, coalesce(error, '') FROM sluice_sources WHERE source_name = 'small'",
                &[],
            )
            .await
            .unwrap();
        let (status, error): (String, String) = (row.get(0), row.get(1));
        if status == "failed" {
            assert!(error.contains("no longer has column \"b\""), "{error}");
            break;
        }
        assert!(Instant::now() < deadline, "status {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What it had stays readable.
    assert_eq!(
        sorted_rows(&sluice, "SELECT id, b FROM small").await,
        vec!["1|one", "2|two"]
    );
    sluice
        .batch_execute("DROP TABLE big; DROP TABLE small")
        .await
        .unwrap();
    drop(child);
    pg.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

/// A PostgreSQL table keyed by `uuid` (with a `uuid[]` column) followed by CDC: the snapshot,
/// then inserts, updates and deletes by key, equal in Sluice and PostgreSQL; a view keyed by
/// the `uuid` follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_follows_a_table_keyed_by_uuid() {
    let pg = postgres().await;
    let schema = "sluice_cdc_uuid";
    pg.batch_execute(&format!(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
           WHERE slot_name = 'sluice_uuid_items';
         DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
         CREATE TABLE {schema}.items (id UUID PRIMARY KEY, owner UUID, tags UUID[], n INT);
         INSERT INTO {schema}.items
           SELECT md5(g::text)::uuid, md5((g % 7)::text)::uuid,
                  ARRAY[md5((g + 1)::text)::uuid, NULL], g
           FROM generate_series(1, 500) g;"
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _child = spawn(dir.path(), port);
    let sluice = connect_when_up(port).await;
    sluice
        .batch_execute(&format!(
            "CREATE TABLE items (id UUID PRIMARY KEY, owner UUID, tags UUID[], n INT) WITH (
               connector = 'postgres-cdc', hostname = '127.0.0.1', port = '5432',
               username = 'postgres', database.name = 'test', schema.name = '{schema}',
               table.name = 'items', slot.name = 'sluice_uuid_items');
             CREATE MATERIALIZED VIEW per_owner AS
               SELECT owner, count(*) AS items, sum(n) AS total FROM items GROUP BY owner;"
        ))
        .await
        .unwrap();
    let rows = "SELECT id, owner, tags, n FROM items";
    let per_owner = "SELECT owner, count(*), sum(n) FROM items GROUP BY owner";
    await_equal(
        &pg,
        &format!("SELECT id, owner, tags, n FROM {schema}.items"),
        &sluice,
        rows,
        "after the snapshot",
    )
    .await;
    pg.batch_execute(&format!(
        "INSERT INTO {schema}.items SELECT gen_random_uuid(), md5('new')::uuid, NULL, g
           FROM generate_series(1, 50) g;
         UPDATE {schema}.items SET owner = md5('moved')::uuid, tags = ARRAY[id] WHERE n % 5 = 0;
         DELETE FROM {schema}.items WHERE n % 9 = 0;
         UPDATE {schema}.items SET id = md5('rekeyed')::uuid WHERE n = 1 AND owner <> md5('new')::uuid;"
    ))
    .await
    .unwrap();
    await_equal(
        &pg,
        &format!("SELECT id, owner, tags, n FROM {schema}.items"),
        &sluice,
        rows,
        "after the stream",
    )
    .await;
    await_equal(
        &pg,
        &format!("SELECT owner, count(*), sum(n) FROM {schema}.items GROUP BY owner"),
        &sluice,
        "SELECT * FROM per_owner",
        "the view",
    )
    .await;
    // Equal to its batch query, and found by a key written in PostgreSQL's other forms.
    assert_eq!(
        sorted_rows(&sluice, per_owner).await,
        sorted_rows(&sluice, "SELECT * FROM per_owner").await
    );
    let upper: String = pg
        .query_one("SELECT upper(md5('rekeyed'))", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        sorted_rows(
            &sluice,
            &format!("SELECT n FROM items WHERE id = '{{{upper}}}'")
        )
        .await,
        vec!["1"]
    );
    sluice
        .batch_execute("DROP MATERIALIZED VIEW per_owner; DROP TABLE items")
        .await
        .unwrap();
    pg.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}
