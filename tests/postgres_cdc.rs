//! PostgreSQL CDC against the machine's PostgreSQL (127.0.0.1:5432, database `test`,
//! `wal_level = logical`, which `.ci/run` sets): two tables under random multi-statement
//! transactions while Sluice snapshots them and follows their streams; Sluice is killed with
//! SIGKILL mid-stream several times and PostgreSQL is restarted once; after every quiet point,
//! an aggregate view and a join view equal the same queries run in PostgreSQL itself.
//!
//! This file holds one test, alone in its binary: it restarts the PostgreSQL server.

mod common;

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::{Client, NoTls};

use common::process::{ServerProcess, connect_when_up, free_port, spawn_with};
use common::sorted_rows;

const POSTGRES: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";
const SCHEMA: &str = "sluice_cdc_test";

async fn postgres() -> Client {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match tokio_postgres::connect(POSTGRES, NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                client.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
                return client;
            }
            Err(e) if Instant::now() < deadline => {
                eprintln!("postgres not up yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the machine's PostgreSQL on 127.0.0.1:5432: {e}"),
        }
    }
}

fn spawn(dir: &std::path::Path, port: u16) -> ServerProcess {
    spawn_with(dir, port, &["--checkpoint-interval", "300ms"])
}

fn cdc_options(table: &str) -> String {
    format!(
        "connector = 'postgres-cdc', hostname = '127.0.0.1', port = '5432', username = 'postgres', \
         database.name = 'test', schema.name = '{SCHEMA}', table.name = '{table}', \
         slot.name = 'sluice_test_{table}'"
    )
}

/// One random transaction of several statements on both tables.
async fn transaction(pg: &Client, rng: &mut StdRng, next_order: &mut i64) {
    let mut sql = vec!["BEGIN".to_string()];
    for _ in 0..rng.random_range(1..6) {
        match rng.random_range(0..10) {
            0..=3 => {
                let rows: Vec<String> = (0..rng.random_range(1..30))
                    .map(|_| {
                        *next_order += 1;
                        format!(
                            "({}, {}, {}.{:02}, 'new', TIMESTAMPTZ '2026-01-01 00:00:00+00' + INTERVAL '{} seconds')",
                            *next_order,
                            rng.random_range(0..220),
                            rng.random_range(0..900),
                            rng.random_range(0..100),
                            rng.random_range(0..86_400)
                        )
                    })
                    .collect();
                sql.push(format!("INSERT INTO {SCHEMA}.orders VALUES {}", rows.join(", ")));
            }
            4..=5 => sql.push(format!(
                "UPDATE {SCHEMA}.orders SET amount = amount + 1.25, status = 'paid' WHERE id % 97 = {}",
                rng.random_range(0..97)
            )),
            6 => sql.push(format!(
                "DELETE FROM {SCHEMA}.orders WHERE id % 89 = {}",
                rng.random_range(0..89)
            )),
            7 => sql.push(format!(
                // The key itself changes.
                "UPDATE {SCHEMA}.orders SET id = id + 1000000 WHERE id % 211 = {} AND id < 1000000",
                rng.random_range(0..211)
            )),
            8 => sql.push(format!(
                "UPDATE {SCHEMA}.customers SET region = 'r{}' WHERE id % 13 = {}",
                rng.random_range(0..5),
                rng.random_range(0..13)
            )),
            _ => {
                let id = rng.random_range(0..220);
                sql.push(format!(
                    "DELETE FROM {SCHEMA}.customers WHERE id = {id}; \
                     INSERT INTO {SCHEMA}.customers VALUES ({id}, 'c{id}\\t\"x\"', 'r{}')",
                    rng.random_range(0..5)
                ));
            }
        }
    }
    sql.push("COMMIT".into());
    // A transaction cut by the PostgreSQL restart is rolled back: it is simply not there.
    if let Err(e) = pg.batch_execute(&sql.join("; ")).await {
        eprintln!("transaction failed: {e}");
    }
}

const QUERIES: [(&str, &str); 2] = [
    (
        "SELECT customer_id, n, total FROM per_customer",
        "SELECT customer_id, count(*), sum(amount) FROM sluice_cdc_test.orders GROUP BY customer_id",
    ),
    (
        "SELECT region, n, total FROM per_region",
        "SELECT c.region, count(*), sum(o.amount) FROM sluice_cdc_test.orders o \
         JOIN sluice_cdc_test.customers c ON o.customer_id = c.id GROUP BY c.region",
    ),
];

/// Waits until every view equals its query in PostgreSQL.
async fn await_equal(sluice: &Client, pg: &Client, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for (view, query) in QUERIES {
        loop {
            let expected = sorted_rows(pg, query).await;
            sluice.batch_execute("FLUSH").await.unwrap();
            let got = sorted_rows(sluice, view).await;
            if got == expected {
                break;
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
                let sources = sorted_rows(sluice, "SELECT * FROM sluice_sources").await;
                panic!("{what}: {view}: missing {missing:?}, extra {extra:?}; sources {sources:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_views_equal_postgres_across_sigkills_and_a_postgres_restart() {
    let mut pg = postgres().await;
    let wal_level: String = pg.query_one("SHOW wal_level", &[]).await.unwrap().get(0);
    assert_eq!(
        wal_level, "logical",
        "run .ci/run once: it sets wal_level = logical"
    );
    pg.execute(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
         WHERE slot_name LIKE 'sluice_test_%'",
        &[],
    )
    .await
    .unwrap();
    pg.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA};
         DROP PUBLICATION IF EXISTS sluice_test_cdc;
         CREATE TABLE {SCHEMA}.customers (id INT PRIMARY KEY, name TEXT, region TEXT);
         CREATE TABLE {SCHEMA}.orders (id BIGINT PRIMARY KEY, customer_id INT,
                                       amount NUMERIC(10, 2), status TEXT NOT NULL, at TIMESTAMPTZ);
         INSERT INTO {SCHEMA}.customers
           SELECT g, 'c' || g, 'r' || (g % 5) FROM generate_series(0, 199) g;
         INSERT INTO {SCHEMA}.orders
           SELECT g, g % 230, (g % 1000) * 0.37, 'new',
                  TIMESTAMPTZ '2026-01-01 00:00:00+00' + g * INTERVAL '1 minute'
           FROM generate_series(1, 20000) g;
         CREATE PUBLICATION sluice_test_cdc FOR TABLE {SCHEMA}.orders, {SCHEMA}.customers;"
    ))
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = spawn(dir.path(), port);
    let mut sluice = connect_when_up(port).await;
    let mut rng = StdRng::seed_from_u64(
        std::env::var("SLUICE_TEST_SEED").map_or(41, |s| s.parse().expect("a u64 seed")),
    );
    let mut next_order = 20000i64;

    // Writes go on while the tables take their snapshots.
    let writer = {
        let mut rng = StdRng::seed_from_u64(rng.random());
        tokio::spawn(async move {
            let pg = postgres().await;
            let mut next = 5_000_000i64;
            for _ in 0..60 {
                transaction(&pg, &mut rng, &mut next).await;
            }
        })
    };
    sluice
        .batch_execute(&format!(
            "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id INT, amount NUMERIC(10, 2),
                                  status TEXT NOT NULL, at TIMESTAMPTZ) WITH ({}, publication.name = 'sluice_test_cdc');
             CREATE SOURCE pg WITH (connector = 'postgres-cdc', hostname = '127.0.0.1',
               port = '5432', username = 'postgres', database.name = 'test',
               publication.name = 'sluice_test_cdc', slot.name = 'sluice_test_pg');
             CREATE TABLE customers (id INT PRIMARY KEY, name TEXT, region TEXT)
               FROM pg TABLE '{SCHEMA}.customers';
             CREATE MATERIALIZED VIEW per_customer AS
               SELECT customer_id, count(*) AS n, sum(amount) AS total FROM orders GROUP BY customer_id;
             CREATE MATERIALIZED VIEW per_region AS
               SELECT c.region, count(*) AS n, sum(o.amount) AS total
               FROM orders o JOIN customers c ON o.customer_id = c.id GROUP BY c.region;",
            cdc_options("orders"),
        ))
        .await
        .unwrap();
    writer.await.unwrap();
    await_equal(&sluice, &pg, "after the snapshot").await;
    let slots = sorted_rows(
        &pg,
        "SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'sluice_test_%'",
    )
    .await;
    assert_eq!(
        slots,
        vec!["sluice_test_orders", "sluice_test_pg_customers"]
    );

    for round in 0..6 {
        for _ in 0..rng.random_range(10..40) {
            transaction(&pg, &mut rng, &mut next_order).await;
        }
        if round == 3 {
            // PostgreSQL restarts mid-stream: Sluice reconnects and resumes.
            let cluster = std::fs::read_dir("/etc/postgresql")
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .file_name();
            let status = std::process::Command::new("pg_ctlcluster")
                .args(["--skip-systemctl-redirect"])
                .arg(&cluster)
                .args(["main", "restart"])
                .status()
                .expect("pg_ctlcluster");
            assert!(status.success(), "PostgreSQL restarted");
            pg = postgres().await;
        } else if round % 2 == 0 {
            // Killed mid-stream: transactions go on before, during and after the kill.
            let writer = {
                let mut rng = StdRng::seed_from_u64(rng.random());
                let mut next = 10_000_000 * (round as i64 + 1);
                tokio::spawn(async move {
                    let pg = postgres().await;
                    for _ in 0..80 {
                        transaction(&pg, &mut rng, &mut next).await;
                    }
                })
            };
            tokio::time::sleep(Duration::from_millis(rng.random_range(20..300))).await;
            child.kill();
            writer.await.unwrap();
            child = spawn(dir.path(), port);
            sluice = connect_when_up(port).await;
        } else {
            // Emptied and filled again in one transaction.
            pg.batch_execute(&format!(
                "BEGIN; TRUNCATE {SCHEMA}.customers;
                 INSERT INTO {SCHEMA}.customers SELECT g, 'again' || g, 'r' || (g % 4)
                   FROM generate_series(0, 209) g;
                 COMMIT"
            ))
            .await
            .unwrap();
        }
        for _ in 0..rng.random_range(5..20) {
            transaction(&pg, &mut rng, &mut next_order).await;
        }
        await_equal(&sluice, &pg, &format!("round {round}")).await;
    }
    // Every row, not only the aggregates.
    let rows = sorted_rows(
        &sluice,
        "SELECT id, customer_id, amount, status, at FROM orders",
    )
    .await;
    let upstream = sorted_rows(
        &pg,
        &format!("SELECT id, customer_id, amount, status, at FROM {SCHEMA}.orders"),
    )
    .await;
    assert_eq!(rows.len(), upstream.len());
    assert!(rows == upstream, "the orders table equals PostgreSQL's");
    let names = sorted_rows(&sluice, "SELECT id, name, region FROM customers").await;
    let upstream = sorted_rows(
        &pg,
        &format!("SELECT id, name, region FROM {SCHEMA}.customers"),
    )
    .await;
    assert!(names == upstream, "the customers table equals PostgreSQL's");

    // DROP TABLE drops its slot.
    sluice
        .batch_execute(
            "DROP MATERIALIZED VIEW per_region; DROP MATERIALIZED VIEW per_customer; \
             DROP TABLE orders; DROP SOURCE pg CASCADE",
        )
        .await
        .unwrap();
    let slots = sorted_rows(
        &pg,
        "SELECT slot_name FROM pg_replication_slots \
         WHERE slot_name LIKE 'sluice_test_%'",
    )
    .await;
    assert!(slots.is_empty(), "{slots:?}");
    drop(child);
    pg.batch_execute(&format!(
        "DROP SCHEMA {SCHEMA} CASCADE; DROP PUBLICATION IF EXISTS sluice_test_cdc"
    ))
    .await
    .unwrap();
}
