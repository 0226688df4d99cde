//! Views are in the catalog: a restart on the same data directory brings every view back,
//! rebuilt from its tables' logs, with the same contents, and it goes on following new writes.

mod common;

use tokio_postgres::Client;

async fn rows(client: &Client, sql: &str) -> Vec<String> {
    common::sorted_rows(client, sql).await
}

const VIEWS: &[&str] = &["per_user", "hot_windows", "closed", "users_per_count"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_come_back_after_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = common::start_on(dir.path()).await;
    let client = common::connect(server.addr.port()).await;
    client
        .batch_execute(
            "CREATE TABLE clicks (id INT PRIMARY KEY, uid INT, ts TIMESTAMP);
             CREATE TABLE events (uid INT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) APPEND ONLY;
             INSERT INTO clicks SELECT v, v % 7, to_timestamp_millis(1767225600000 + v * 250) FROM generate_series(1, 500) AS g(v);
             INSERT INTO events SELECT v % 5, to_timestamp_millis(1767225600000 + v * 100) FROM generate_series(1, 500) AS g(v);
             CREATE MATERIALIZED VIEW per_user AS SELECT uid, count(*) AS n, max(ts) AS last FROM clicks GROUP BY uid;
             CREATE MATERIALIZED VIEW hot_windows AS SELECT uid, window_start, count(*) AS n FROM HOP(clicks, ts, INTERVAL '5' SECOND, INTERVAL '20' SECOND) GROUP BY uid, window_start;
             CREATE MATERIALIZED VIEW closed AS SELECT uid, window_start, count(*) AS n FROM TUMBLE(events, ts, INTERVAL '10' SECOND) GROUP BY uid, window_start EMIT ON WINDOW CLOSE;
             CREATE MATERIALIZED VIEW users_per_count AS SELECT n, count(*) AS users FROM per_user GROUP BY n;
             DELETE FROM clicks WHERE id % 3 = 0;
             UPDATE clicks SET uid = 99 WHERE id % 10 = 1;
             FLUSH;",
        )
        .await
        .expect("setup");
    let mut before = Vec::new();
    for view in VIEWS {
        let got = rows(&client, &format!("SELECT * FROM {view}")).await;
        assert!(!got.is_empty(), "view {view} is empty");
        before.push(got);
    }
    drop(client);
    server.shutdown().await;

    server = common::start_on(dir.path()).await;
    let client = common::connect(server.addr.port()).await;
    for (view, want) in VIEWS.iter().zip(&before) {
        assert_eq!(
            &rows(&client, &format!("SELECT * FROM {view}")).await,
            want,
            "view {view} after restart"
        );
    }
    // and they keep following
    client
        .batch_execute("INSERT INTO clicks VALUES (1000, 42, '2026-01-01 01:00:00'); FLUSH;")
        .await
        .expect("insert after restart");
    assert_eq!(
        rows(&client, "SELECT n FROM per_user WHERE uid = 42").await,
        vec!["1".to_string()]
    );
    server.shutdown().await;
}
