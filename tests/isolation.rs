//! Isolation between views: a view reading a long backlog, or a view whose sink cannot
//! deliver, never holds back the other views, `FLUSH`, or the clients.
//!
//! - While one connection's `CREATE MATERIALIZED VIEW` reads a backlog of a million rows,
//!   another connection's writes to a small table show in its view after a `FLUSH`.
//! - A PostgreSQL sink whose target table is locked in the machine's PostgreSQL stops
//!   answering; its view is held back (`sluice_sinks` says `backpressured`), other views and
//!   `FLUSH` go on, and once the lock is gone the sink delivers everything.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

use common::TestServer;

/// One write to `small`, made visible by `FLUSH`; true when its row then shows in `small_v`.
async fn ping(client: &Client, k: i64) -> bool {
    client
        .batch_execute(&format!("INSERT INTO small VALUES ({k}); FLUSH"))
        .await
        .unwrap();
    let rows = client
        .query("SELECT k FROM small_v WHERE k = $1", &[&k])
        .await
        .unwrap();
    rows.len() == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_show_in_other_views_while_a_view_reads_its_backlog() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    // A backlog of 100 log records (one per INSERT) of 10,000 rows each.
    client
        .batch_execute(
            "CREATE TABLE small (k BIGINT);
             CREATE MATERIALIZED VIEW small_v AS SELECT k, count(*) AS n FROM small GROUP BY k;
             CREATE TABLE big (k BIGINT, v BIGINT);",
        )
        .await
        .unwrap();
    for i in 0..100i64 {
        client
            .batch_execute(&format!(
                "INSERT INTO big SELECT g, g % 7 FROM generate_series({}, {}) AS t(g)",
                i * 10_000,
                i * 10_000 + 9_999
            ))
            .await
            .unwrap();
    }
    let creator = server.connect().await;
    let created = Arc::new(AtomicBool::new(false));
    let creating = {
        let created = Arc::clone(&created);
        tokio::spawn(async move {
            creator
                .batch_execute(
                    "CREATE MATERIALIZED VIEW big_v AS \
                     SELECT k % 1000 AS g, count(*) AS n, sum(v) AS s FROM big GROUP BY k % 1000",
                )
                .await
                .unwrap();
            created.store(true, Ordering::SeqCst);
        })
    };
    // Pings while the view reads its backlog: each must show after its FLUSH, and at least
    // one must begin and end while `sluice_views` shows the view backfilling (with one
    // thread stepping every view, a FLUSH waited for the whole backlog to be read).
    let backfilling = || async {
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM sluice_views WHERE view_name = 'big_v' AND status = 'backfilling'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        n == 1
    };
    let mut during = 0;
    let mut k = 0i64;
    while !created.load(Ordering::SeqCst) {
        k += 1;
        let before = backfilling().await;
        assert!(
            ping(&client, k).await,
            "write {k} is not in small_v after FLUSH"
        );
        if before && backfilling().await {
            during += 1;
        }
    }
    creating.await.unwrap();
    assert!(
        during >= 1,
        "no write showed while big_v read its backlog ({k} pings in all)"
    );
    // The new view is whole, and equals its query over the table.
    let view = common::sorted_rows(&client, "SELECT g, n, s FROM big_v").await;
    let batch = common::sorted_rows(
        &client,
        "SELECT k % 1000 AS g, count(*) AS n, sum(v) AS s FROM big GROUP BY k % 1000",
    )
    .await;
    assert_eq!(view.len(), 1000);
    assert_eq!(view, batch);
}

/// One more row into `feed` (the sunk view's table), then a ping that must show.
async fn feed_and_ping(client: &Client, written: &mut i64, k: &mut i64) {
    client
        .batch_execute(&format!("INSERT INTO feed VALUES ({})", *written % 50))
        .await
        .unwrap();
    *written += 1;
    *k += 1;
    assert!(
        ping(client, *k).await,
        "write {k} is not in small_v after FLUSH"
    );
}

/// The machine's PostgreSQL, or `None` (the test then says why it did not run).
async fn postgres() -> Option<Client> {
    let (client, connection) =
        tokio_postgres::connect("host=127.0.0.1 port=5432 user=postgres dbname=test", NoTls)
            .await
            .ok()?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("postgres connection: {e}");
        }
    });
    Some(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_cannot_deliver_holds_back_only_its_own_view() {
    let Some(pg) = postgres().await else {
        eprintln!("skipped: no PostgreSQL on 127.0.0.1:5432 (database test)");
        return;
    };
    pg.batch_execute(
        "DROP SCHEMA IF EXISTS sluice_isolation CASCADE; CREATE SCHEMA sluice_isolation;
         CREATE TABLE sluice_isolation.out (k BIGINT PRIMARY KEY, n BIGINT)",
    )
    .await
    .unwrap();
    // The sink is exactly-once: it gets one batch per checkpoint, so checkpoints come often.
    let server =
        TestServer::start_with(|c| c.checkpoint_interval = Some(Duration::from_millis(100))).await;
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE small (k BIGINT);
             CREATE MATERIALIZED VIEW small_v AS SELECT k, count(*) AS n FROM small GROUP BY k;
             CREATE TABLE feed (k BIGINT);
             CREATE MATERIALIZED VIEW feed_v AS SELECT k, count(*) AS n FROM feed GROUP BY k;
             CREATE SINK out FROM feed_v WITH (connector = 'postgres', hostname = '127.0.0.1',
               port = '5432', username = 'postgres', database.name = 'test',
               schema.name = 'sluice_isolation', table.name = 'out', primary_key = 'k');
             INSERT INTO feed VALUES (0); FLUSH;",
        )
        .await
        .unwrap();
    // The sink stops answering: its next write waits for the lock.
    let locker = postgres().await.expect("a second PostgreSQL connection");
    locker
        .batch_execute("BEGIN; LOCK TABLE sluice_isolation.out IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    // Epochs that change feed_v, until the sink's channel is full and it holds its view back;
    // meanwhile every write to `small` shows after its FLUSH. A FLUSH that waits for the
    // stuck sink fails the test by timing out (the executor blocked on the sink).
    let status = "SELECT status, blocked_since IS NOT NULL, lag_seconds FROM sluice_sinks \
                  WHERE sink_name = 'out'";
    let mut written = 1i64;
    let mut k = 0i64;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        tokio::time::timeout(
            Duration::from_secs(60),
            feed_and_ping(&client, &mut written, &mut k),
        )
        .await
        .expect("FLUSH waited for the stuck sink");
        let row = client.query_one(status, &[]).await.unwrap();
        let (shown, blocked, lag): (String, bool, f64) = (row.get(0), row.get(1), row.get(2));
        if shown == "backpressured" {
            assert!(blocked);
            // Seconds since the sink last delivered (or got stuck): the test's own time.
            assert!(lag > 0.0 && lag < 300.0, "lag_seconds {lag}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sink never showed as backpressured ({shown})"
        );
    }
    // Held back: feed_v no longer takes writes in (its sink has no room), small_v still does.
    let held: i64 = client
        .query_one("SELECT sum(n)::bigint FROM feed_v", &[])
        .await
        .unwrap()
        .get(0);
    for _ in 0..5 {
        feed_and_ping(&client, &mut written, &mut k).await;
    }
    let still: i64 = client
        .query_one("SELECT sum(n)::bigint FROM feed_v", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(still, held, "feed_v ran while its sink had no room");
    let shown: String = client
        .query_one(
            "SELECT status FROM sluice_views WHERE view_name = 'feed_v'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(shown, "backpressured");
    // The lock goes: the sink delivers, the view catches up, and PostgreSQL holds every row.
    locker.batch_execute("ROLLBACK").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        client.batch_execute("FLUSH").await.unwrap();
        let in_view: i64 = client
            .query_one("SELECT sum(n)::bigint FROM feed_v", &[])
            .await
            .unwrap()
            .get(0);
        let in_pg: i64 = pg
            .query_one(
                "SELECT coalesce(sum(n), 0)::bigint FROM sluice_isolation.out",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        let shown: String = client.query_one(status, &[]).await.unwrap().get(0);
        if in_view == written && in_pg == written && shown == "running" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the lock: view {in_view}, PostgreSQL {in_pg}, written {written}, sink {shown}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pg.batch_execute("DROP SCHEMA sluice_isolation CASCADE")
        .await
        .unwrap();
}
