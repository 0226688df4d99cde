//! Views are in the catalog: a restart on the same data directory brings every view back,
//! rebuilt from its tables' logs, with the same contents, and it goes on following new writes.

mod common;

use tokio_postgres::Client;

async fn rows(client: &Client, sql: &str) -> Vec<String> {
    common::sorted_rows(client, sql).await
}

/// The SQLSTATE `sql` fails with (`why`: what its failing shows).
async fn failure(client: &Client, sql: &str, why: &str) -> String {
    let err = client.simple_query(sql).await.expect_err(why);
    err.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("{err:?}"))
}

const VIEWS: &[&str] = &["per_user", "hot_windows", "closed", "users_per_count"];

/// The views of the checkpoint tests: every kind of stateful operator.
const CHECKPOINTED: &[&str] = &[
    "per_user",
    "hot_windows",
    "closed",
    "users_per_count",
    "sessions",
    "hop_events",
    "joined",
    "unmatched",
    "paired",
    "top_clicks",
    "click_gaps",
    "top_windows",
    "click_stats",
    "event_lists",
    "click_rollup",
    "click_distinct",
    "click_docs",
    "closed_top",
];

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

/// The batch queries the views must equal (the oracle): each view's query run over the tables.
const ORACLES: &[(&str, &str)] = &[
    (
        "per_user",
        "SELECT uid, count(*) AS n, max(ts) AS last FROM clicks GROUP BY uid",
    ),
    (
        "hot_windows",
        "SELECT uid, window_start, count(*) AS n FROM HOP(clicks, ts, INTERVAL '5' SECOND, INTERVAL '20' SECOND) GROUP BY uid, window_start",
    ),
    (
        "users_per_count",
        "SELECT n, count(*) AS users FROM (SELECT uid, count(*) AS n FROM clicks GROUP BY uid) GROUP BY n",
    ),
    (
        "sessions",
        "SELECT uid, SESSION_START(ts, INTERVAL '2' SECOND) AS s, count(*) AS n FROM clicks GROUP BY uid, SESSION(ts, INTERVAL '2' SECOND)",
    ),
    (
        "hop_events",
        "SELECT uid, window_start, count(*) AS n FROM HOP(events, ts, INTERVAL '2' SECOND, INTERVAL '6' SECOND) GROUP BY uid, window_start",
    ),
    (
        "joined",
        "SELECT c.id, c.uid, e.n FROM clicks c LEFT JOIN (SELECT uid, count(*) AS n FROM events GROUP BY uid) e ON c.uid = e.uid",
    ),
    (
        "unmatched",
        "SELECT c.id FROM clicks c WHERE NOT EXISTS (SELECT 1 FROM clicks d WHERE d.uid = c.uid AND d.id > c.id + 300)",
    ),
    (
        "paired",
        "SELECT e1.uid, count(*) AS n FROM events e1 JOIN events e2 ON e1.uid = e2.uid AND e2.ts BETWEEN e1.ts AND e1.ts + INTERVAL '1' SECOND GROUP BY e1.uid",
    ),
    (
        "top_clicks",
        "SELECT uid, id, rn FROM (SELECT uid, id, row_number() OVER (PARTITION BY uid ORDER BY id DESC) AS rn FROM clicks) WHERE rn <= 2",
    ),
    (
        "click_gaps",
        "SELECT id, id - lag(id) OVER (PARTITION BY uid ORDER BY id) AS gap FROM clicks",
    ),
    (
        "top_windows",
        "SELECT window_start, uid FROM (SELECT window_start, uid, row_number() OVER (PARTITION BY window_start ORDER BY uid DESC, ts) AS rn FROM TUMBLE(events, ts, INTERVAL '10' SECOND)) q WHERE rn <= 2",
    ),
    (
        "click_stats",
        "SELECT uid, median(id) AS med, percentile_cont(0.5) WITHIN GROUP (ORDER BY id) AS p, bit_xor(id) AS x FROM clicks GROUP BY uid",
    ),
    (
        "event_lists",
        "SELECT uid, array_agg(ts ORDER BY ts) AS tss, first_value(ts ORDER BY ts) AS f, approx_distinct(ts) AS d FROM events GROUP BY uid",
    ),
    (
        "click_rollup",
        "SELECT uid, id % 2 AS parity, count(*) AS n, grouping(uid, id % 2) AS g FROM clicks GROUP BY ROLLUP (uid, id % 2)",
    ),
    (
        "click_distinct",
        "SELECT uid % 3 AS b, count(DISTINCT id % 11) AS d, count(DISTINCT uid) FILTER (WHERE id % 2 = 0) AS e FROM clicks GROUP BY uid % 3",
    ),
    (
        "click_docs",
        "SELECT jsonb_build_object('u', uid, 'p', jsonb_build_array(id % 2)) AS doc, count(*) AS n FROM clicks GROUP BY 1",
    ),
];

const SETUP: &str = "CREATE TABLE clicks (id INT PRIMARY KEY, uid INT, ts TIMESTAMP);
     CREATE TABLE events (uid INT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) APPEND ONLY;
     INSERT INTO clicks SELECT v, v % 7, to_timestamp_millis(1767225600000 + v * 250) FROM generate_series(1, 500) AS g(v);
     INSERT INTO events SELECT v % 5, to_timestamp_millis(1767225600000 + v * 100) FROM generate_series(1, 500) AS g(v);
     CREATE MATERIALIZED VIEW per_user AS SELECT uid, count(*) AS n, max(ts) AS last FROM clicks GROUP BY uid;
     CREATE MATERIALIZED VIEW hot_windows AS SELECT uid, window_start, count(*) AS n FROM HOP(clicks, ts, INTERVAL '5' SECOND, INTERVAL '20' SECOND) GROUP BY uid, window_start;
     CREATE MATERIALIZED VIEW closed AS SELECT uid, window_start, count(*) AS n FROM TUMBLE(events, ts, INTERVAL '10' SECOND) GROUP BY uid, window_start EMIT ON WINDOW CLOSE;
     CREATE MATERIALIZED VIEW users_per_count AS SELECT n, count(*) AS users FROM per_user GROUP BY n;
     CREATE MATERIALIZED VIEW sessions AS SELECT uid, SESSION_START(ts, INTERVAL '2' SECOND) AS s, count(*) AS n FROM clicks GROUP BY uid, SESSION(ts, INTERVAL '2' SECOND);
     CREATE MATERIALIZED VIEW hop_events AS SELECT uid, window_start, count(*) AS n FROM HOP(events, ts, INTERVAL '2' SECOND, INTERVAL '6' SECOND) GROUP BY uid, window_start;
     CREATE MATERIALIZED VIEW joined AS SELECT c.id, c.uid, e.n FROM clicks c LEFT JOIN (SELECT uid, count(*) AS n FROM events GROUP BY uid) e ON c.uid = e.uid;
     CREATE MATERIALIZED VIEW unmatched AS SELECT c.id FROM clicks c WHERE NOT EXISTS (SELECT 1 FROM clicks d WHERE d.uid = c.uid AND d.id > c.id + 300);
     CREATE MATERIALIZED VIEW paired AS SELECT e1.uid, count(*) AS n FROM events e1 JOIN events e2 ON e1.uid = e2.uid AND e2.ts BETWEEN e1.ts AND e1.ts + INTERVAL '1' SECOND GROUP BY e1.uid;
     CREATE MATERIALIZED VIEW top_clicks AS SELECT uid, id, rn FROM (SELECT uid, id, row_number() OVER (PARTITION BY uid ORDER BY id DESC) AS rn FROM clicks) WHERE rn <= 2;
     CREATE MATERIALIZED VIEW click_gaps AS SELECT id, id - lag(id) OVER (PARTITION BY uid ORDER BY id) AS gap FROM clicks;
     CREATE MATERIALIZED VIEW top_windows AS SELECT window_start, uid FROM (SELECT window_start, uid, row_number() OVER (PARTITION BY window_start ORDER BY uid DESC, ts) AS rn FROM TUMBLE(events, ts, INTERVAL '10' SECOND)) q WHERE rn <= 2;
     CREATE MATERIALIZED VIEW click_stats AS SELECT uid, median(id) AS med, percentile_cont(0.5) WITHIN GROUP (ORDER BY id) AS p, bit_xor(id) AS x FROM clicks GROUP BY uid;
     CREATE MATERIALIZED VIEW event_lists AS SELECT uid, array_agg(ts ORDER BY ts) AS tss, first_value(ts ORDER BY ts) AS f, approx_distinct(ts) AS d FROM events GROUP BY uid;
     CREATE MATERIALIZED VIEW click_rollup AS SELECT uid, id % 2 AS parity, count(*) AS n, grouping(uid, id % 2) AS g FROM clicks GROUP BY ROLLUP (uid, id % 2);
     CREATE MATERIALIZED VIEW click_distinct AS SELECT uid % 3 AS b, count(DISTINCT id % 11) AS d, count(DISTINCT uid) FILTER (WHERE id % 2 = 0) AS e FROM clicks GROUP BY uid % 3;
     CREATE MATERIALIZED VIEW click_docs AS SELECT jsonb_build_object('u', uid, 'p', jsonb_build_array(id % 2)) AS doc, count(*) AS n FROM clicks GROUP BY 1;
     CREATE MATERIALIZED VIEW closed_top AS SELECT window_start, uid, rn FROM (SELECT window_start, uid, row_number() OVER (PARTITION BY window_start ORDER BY uid DESC, ts) AS rn FROM TUMBLE(events, ts, INTERVAL '10' SECOND)) q WHERE rn <= 2 EMIT ON WINDOW CLOSE;
     FLUSH;";

/// More writes: deletes, updates and inserts into both tables.
fn churn(round: i64) -> String {
    let base = 1000 * round;
    format!(
        "DELETE FROM clicks WHERE id % {m} = 0;
         UPDATE clicks SET uid = {round} + 90 WHERE id % 10 = {r};
         INSERT INTO clicks SELECT {base} + v, v % 11, to_timestamp_millis(1767225700000 + v * 300) FROM generate_series(1, 200) AS g(v);
         INSERT INTO events SELECT v % 5, to_timestamp_millis(1767225650000 + {round} * 20000 + v * 100) FROM generate_series(1, 200) AS g(v);
         FLUSH;",
        m = round + 2,
        r = round % 10,
    )
}

async fn checkpoints(client: &Client, kind: &str) -> Vec<i64> {
    client
        .query(
            "SELECT epoch FROM sluice_checkpoints WHERE kind = $1 ORDER BY epoch",
            &[&kind],
        )
        .await
        .expect("sluice_checkpoints")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// A server over `dir` that checkpoints every 100 ms, and a client of it.
async fn start_checkpointing(dir: &std::path::Path) -> (sluice::RunningServer, Client) {
    let server = common::start_on_with(dir, |c| {
        c.checkpoint_interval = Some(std::time::Duration::from_millis(100))
    })
    .await;
    let client = common::connect(server.addr.port()).await;
    (server, client)
}

/// The rows of every view of [`CHECKPOINTED`].
async fn contents(client: &Client) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for view in CHECKPOINTED {
        out.push(rows(client, &format!("SELECT * FROM {view}")).await);
    }
    out
}

/// Views the recovery restored from its checkpoint (not replayed).
async fn restored_views(client: &Client) -> i64 {
    client
        .query_one(
            "SELECT views_written FROM sluice_checkpoints WHERE kind = 'recovery'",
            &[],
        )
        .await
        .expect("the recovery row")
        .get(0)
}

/// Every view was restored from the checkpoint and holds what it held before the restart.
async fn assert_restored_as_before(client: &Client, before: &[Vec<String>], when: &str) {
    assert_eq!(
        restored_views(client).await,
        CHECKPOINTED.len() as i64,
        "every view restored"
    );
    for (view, want) in CHECKPOINTED.iter().zip(before) {
        assert_eq!(
            &rows(client, &format!("SELECT * FROM {view}")).await,
            want,
            "view {view} {when}"
        );
    }
}

/// The newest checkpoint once checkpoints have stopped coming (nothing changes any more, so
/// it holds everything written so far).
async fn settled_checkpoint(client: &Client) -> i64 {
    let mut newest = checkpoint_after(client, 0).await;
    for _ in 0..20 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let now = *checkpoints(client, "checkpoint")
            .await
            .last()
            .expect("a checkpoint");
        if now == newest {
            return newest;
        }
        newest = now;
    }
    panic!("checkpoints never stop coming although nothing changes");
}

/// Waits until a checkpoint newer than `after` is complete; returns its epoch.
async fn checkpoint_after(client: &Client, after: i64) -> i64 {
    for _ in 0..200 {
        if let Some(&e) = checkpoints(client, "checkpoint").await.last()
            && e > after
        {
            return e;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no checkpoint after epoch {after}");
}

async fn assert_oracles(client: &Client, when: &str) {
    for (view, query) in ORACLES {
        assert_eq!(
            rows(client, &format!("SELECT * FROM {view}")).await,
            rows(client, query).await,
            "view {view} {when} differs from its batch query"
        );
    }
}

/// The complete checkpoints on disk, oldest first: (directory, manifest).
fn manifests(dir: &std::path::Path) -> Vec<(std::path::PathBuf, serde_json::Value)> {
    let mut found: Vec<(std::path::PathBuf, serde_json::Value)> =
        std::fs::read_dir(dir.join("checkpoints"))
            .expect("checkpoints directory")
            .filter_map(|e| {
                let path = e.ok()?.path();
                let text = std::fs::read(path.join("manifest.json")).ok()?;
                Some((
                    path,
                    serde_json::from_slice(&text).expect("manifest parses"),
                ))
            })
            .collect();
    found.sort_by_key(|(_, m)| m["epoch"].as_u64());
    found
}

/// Cuts in half the largest file the newest checkpoint under `dir` wrote itself, so that
/// recovery falls back to the one before; returns that one's epoch.
fn damage_newest_checkpoint(dir: &std::path::Path) -> i64 {
    let found = manifests(dir);
    assert!(
        found.len() >= 2,
        "two complete checkpoints are kept, found {}",
        found.len()
    );
    let (newest_dir, newest) = &found[found.len() - 1];
    let previous_epoch = found[found.len() - 2].1["epoch"].as_i64().expect("epoch");
    // The largest file the newest checkpoint wrote itself, cut in half.
    let own = newest_dir
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let victim = newest["views"]
        .as_array()
        .expect("views")
        .iter()
        .flat_map(|v| v["files"].as_array().expect("files").iter())
        .map(|f| &f[1])
        .filter(|f| f["path"].as_str().expect("path").starts_with(&own))
        .max_by_key(|f| f["bytes"].as_u64())
        .expect("the newest checkpoint wrote a file");
    let path = dir
        .join("checkpoints")
        .join(victim["path"].as_str().expect("path"));
    let bytes = victim["bytes"].as_u64().expect("bytes");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open")
        .set_len(bytes / 2)
        .expect("truncate");
    previous_epoch
}

/// A server over `dir` with `parallelism` partitions per keyed operator, checkpointing every
/// 100 ms.
async fn start_with_parallelism(
    dir: &std::path::Path,
    parallelism: usize,
) -> (sluice::RunningServer, Client) {
    let server = common::start_on_with(dir, |c| {
        c.parallelism = parallelism;
        c.checkpoint_interval = Some(std::time::Duration::from_millis(100));
    })
    .await;
    let client = common::connect(server.addr.port()).await;
    (server, client)
}

/// A checkpoint written at one parallelism restores at another: every operator's state is
/// split by its keys' hashes over the new partitions (nothing replays), and the views go on
/// equal to their batch queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_written_with_another_parallelism_is_repartitioned() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, client) = start_with_parallelism(dir.path(), 1).await;
    client.batch_execute(SETUP).await.expect("setup");
    client.batch_execute(&churn(1)).await.expect("churn");
    settled_checkpoint(&client).await;
    let mut before = contents(&client).await;
    drop(client);
    server.shutdown().await;
    for (round, parallelism) in [(2, 3), (3, 2), (4, 1)] {
        let (server, client) = start_with_parallelism(dir.path(), parallelism).await;
        let when = format!("restored at parallelism {parallelism}");
        assert_restored_as_before(&client, &before, &when).await;
        assert_oracles(&client, &when).await;
        client.batch_execute(&churn(round)).await.expect("churn");
        assert_oracles(&client, &format!("{when}, then written to")).await;
        settled_checkpoint(&client).await;
        before = contents(&client).await;
        drop(client);
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_resume_from_a_checkpoint_and_replay_only_the_tail() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, client) = start_checkpointing(dir.path()).await;
    client.batch_execute(SETUP).await.expect("setup");
    client.batch_execute(&churn(1)).await.expect("churn");
    let first = settled_checkpoint(&client).await;
    // Written after the checkpoint (or in the next one): recovery restores and then replays.
    client.batch_execute(&churn(2)).await.expect("churn");
    let before = contents(&client).await;
    assert_oracles(&client, "before the restart").await;
    drop(client);
    server.shutdown().await;

    let (server, client) = start_checkpointing(dir.path()).await;
    let recovered = checkpoints(&client, "recovery").await;
    assert_eq!(recovered.len(), 1, "one recovery row");
    assert!(
        recovered[0] >= first,
        "recovered from {recovered:?}, an older checkpoint than {first}"
    );
    assert_restored_as_before(&client, &before, "after recovery").await;
    client
        .batch_execute(&churn(3))
        .await
        .expect("churn after restart");
    assert_oracles(&client, "after recovery and more writes").await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_checkpoint_file_falls_back_to_the_previous_checkpoint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, client) = start_checkpointing(dir.path()).await;
    client.batch_execute(SETUP).await.expect("setup");
    // Both kept checkpoints hold every view: taken after the setup.
    let first = settled_checkpoint(&client).await;
    client.batch_execute(&churn(1)).await.expect("churn");
    checkpoint_after(&client, first).await;
    settled_checkpoint(&client).await;
    let before = contents(&client).await;
    drop(client);
    server.shutdown().await;

    let found = manifests(dir.path());
    assert!(
        found.len() >= 2,
        "two complete checkpoints are kept, found {}",
        found.len()
    );
    let previous_epoch = damage_newest_checkpoint(dir.path());

    let (server, client) = start_checkpointing(dir.path()).await;
    assert_eq!(
        checkpoints(&client, "recovery").await,
        vec![previous_epoch],
        "recovery used the checkpoint before the damaged one"
    );
    assert_restored_as_before(&client, &before, "after falling back").await;
    assert_oracles(&client, "after falling back").await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_writes_only_the_views_that_changed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, client) = start_checkpointing(dir.path()).await;
    client.batch_execute(SETUP).await.expect("setup");
    // A checkpoint takes in everything the setup did; then nothing changes, and no further
    // checkpoint is taken.
    let last = settled_checkpoint(&client).await;
    // Only `closed`, `hop_events`, `joined`, `paired`, `top_windows`, `event_lists` and
    // `closed_top` read `events`.
    client
        .batch_execute(
            "INSERT INTO events SELECT v % 5, to_timestamp_millis(1767225800000 + v * 100) FROM generate_series(1, 100) AS g(v); FLUSH;",
        )
        .await
        .expect("insert");
    let next = checkpoint_after(&client, last).await;
    let row = client
        .query_one(
            "SELECT views_written, views_reused FROM sluice_checkpoints WHERE epoch = $1",
            &[&next],
        )
        .await
        .expect("the checkpoint's row");
    let (written, reused): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(
        (written, reused),
        (7, CHECKPOINTED.len() as i64 - 7),
        "only the views over `events` written again"
    );
    server.shutdown().await;
}

/// The count of rows dropped as late is kept in the table's log: a restart shows the same
/// count and watermark, including rows of an INSERT or a COPY that were all late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_rows_are_still_counted_after_restart() {
    use futures::SinkExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let server = common::start_on(dir.path()).await;
    let client = common::connect(server.addr.port()).await;
    client
        .batch_execute(
            "CREATE TABLE r (v INT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) APPEND ONLY;
             INSERT INTO r VALUES (1, '2026-01-01 00:00:20');
             INSERT INTO r VALUES (2, '2026-01-01 00:00:14'), (3, '2026-01-01 00:00:16');
             INSERT INTO r VALUES (4, '2026-01-01 00:00:01'), (5, '2026-01-01 00:00:02');",
        )
        .await
        .expect("setup");
    // A COPY whose rows are all late.
    let sink = client
        .copy_in("COPY r FROM STDIN WITH (FORMAT csv)")
        .await
        .expect("copy");
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(
        b"6,2026-01-01 00:00:03\n7,2026-01-01 00:00:04\n",
    ))
    .await
    .expect("copy data");
    assert_eq!(sink.finish().await.expect("copy done"), 0);
    let query = "SELECT watermark, late_rows FROM sluice_watermarks WHERE table_name = 'r'";
    let before = rows(&client, query).await;
    assert_eq!(before, ["2026-01-01 00:00:15|5"]);
    drop(client);
    server.shutdown().await;

    let server = common::start_on(dir.path()).await;
    let client = common::connect(server.addr.port()).await;
    assert_eq!(rows(&client, query).await, before, "after restart");
    assert_eq!(
        rows(&client, "SELECT v FROM r").await,
        ["1", "3"],
        "late rows stay out"
    );
    drop(client);
    server.shutdown().await;
}

/// A join's state comes back whole from a checkpoint, with each row's count of matches under
/// a condition: after the restart, a row that loses its last match enters an anti join's
/// output and gets its NULL-padded row in an outer join, at another parallelism too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_state_with_match_counts_survives_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (server, client) = start_with_parallelism(dir.path(), 2).await;
    let views = [
        (
            "lonely",
            "SELECT a.id FROM a WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.k = a.k AND b.v > a.id)",
        ),
        (
            "padded",
            "SELECT a.id, b.id AS bid FROM a LEFT JOIN b ON a.k = b.k AND b.v > a.id",
        ),
        ("pairs", "SELECT a.id, b.v FROM a FULL JOIN b ON a.k = b.k"),
    ];
    client
        .batch_execute(
            "CREATE TABLE a (id INT PRIMARY KEY, k INT);
             CREATE TABLE b (id INT PRIMARY KEY, k INT, v INT);
             INSERT INTO a SELECT v, v % 5 FROM generate_series(1, 40) AS g(v);
             INSERT INTO b SELECT v, v % 7, v + 0 FROM generate_series(1, 60) AS g(v);",
        )
        .await
        .expect("setup");
    for (name, query) in views {
        client
            .batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {query}"))
            .await
            .expect("view");
    }
    client.batch_execute("FLUSH").await.expect("flush");
    settled_checkpoint(&client).await;
    drop(client);
    server.shutdown().await;

    let (server, client) = start_with_parallelism(dir.path(), 3).await;
    assert_eq!(restored_views(&client).await, 3, "every view restored");
    // Every row of `a` loses its matches under the condition, then some gain new ones.
    client
        .batch_execute(
            "DELETE FROM b WHERE v > 20;
             FLUSH;
             INSERT INTO b VALUES (100, 1, 100), (101, 2, 5);
             FLUSH;",
        )
        .await
        .expect("writes");
    for (name, query) in views {
        let got = rows(&client, &format!("SELECT * FROM {name}")).await;
        assert_eq!(got, rows(&client, query).await, "view {name} after restart");
    }
    server.shutdown().await;
}

const BID: &str = "CREATE SOURCE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, \
     url VARCHAR, date_time TIMESTAMP, extra VARCHAR) \
     WITH (connector = 'nexmark', nexmark.table.type = 'bid', nexmark.event.num = '500000', \
     nexmark.min.event.gap.in.ns = '{gap}')";
const PER_BUCKET: &str = "CREATE MATERIALIZED VIEW per_bucket AS \
     SELECT bidder % 8 AS b, count(*) AS n, sum(price) AS total, max(auction) AS top \
     FROM bid GROUP BY bidder % 8";

/// Where a relation's log starts and how many segments it has, from `sluice_logs`.
async fn log_of(client: &Client, relation: &str) -> (i64, i64) {
    let row = client
        .query_one(
            "SELECT start_position, segments FROM sluice_logs WHERE relation_name = $1",
            &[&relation],
        )
        .await
        .expect("sluice_logs");
    (row.get(0), row.get(1))
}

/// Waits until the nexmark source `bid` has generated every event and views show them all.
async fn source_finished(client: &Client) {
    for _ in 0..1200 {
        let status: String = client
            .query_one(
                "SELECT status FROM sluice_sources WHERE source_name = 'bid'",
                &[],
            )
            .await
            .expect("sluice_sources")
            .get(0);
        if status == "finished" {
            client.batch_execute("FLUSH").await.expect("FLUSH");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the nexmark source never finished");
}

/// A source's log loses whole segments below what both kept checkpoints and every view still
/// need, while it is being written; a restart in the middle restores the view and resumes the
/// source, and the view ends up as it does on a server whose log kept everything. A table's log
/// keeps everything (it is the table's rows); a view created after truncation reads what the
/// source's log still holds, which is what `SELECT` over the source shows too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_log_loses_what_no_view_or_checkpoint_needs() {
    // The oracle: the same deterministic events on a server whose log is never truncated.
    let oracle = common::TestServer::start().await;
    let client = oracle.connect().await;
    client
        .batch_execute(&format!("{}; {PER_BUCKET}", BID.replace("{gap}", "0")))
        .await
        .unwrap();
    source_finished(&client).await;
    let want = rows(&client, "SELECT * FROM per_bucket").await;
    let all_bids: i64 = client
        .query_one("SELECT count(*) FROM bid", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        log_of(&client, "bid").await.0,
        0,
        "one segment: nothing truncated"
    );
    drop(client);
    drop(oracle);

    // Killed (SIGKILL: no last checkpoint) while the source runs, each time once the log was
    // cut further and with the newest checkpoint damaged: recovery restores the views from the
    // one before, which is a second of input behind (several segments), and must find every
    // record it did not cover.
    let dir = tempfile::tempdir().unwrap();
    let port = common::process::free_port();
    let args = [
        "--checkpoint-interval",
        "1s",
        "--barrier-interval",
        "50ms",
        "--log-segment-size",
        "1MB",
    ];
    let mut server = common::process::spawn_with(dir.path(), port, &args);
    let mut client = common::process::connect_when_up(port).await;
    client
        .batch_execute(&format!(
            "{}; {PER_BUCKET};
             CREATE TABLE t (k INT, v TEXT);
             CREATE MATERIALIZED VIEW t_count AS SELECT count(*) AS n FROM t;",
            BID.replace("{gap}", "25000")
        ))
        .await
        .unwrap();
    for i in 0..20 {
        client
            .batch_execute(&format!(
                "INSERT INTO t SELECT g, repeat('x', 40) FROM generate_series({}, {}) AS s(g)",
                i * 1000,
                i * 1000 + 999
            ))
            .await
            .unwrap();
    }
    let mut cut = 0;
    for kill in 0..2 {
        let mut truncated = false;
        for _ in 0..1000 {
            if log_of(&client, "bid").await.0 > cut {
                truncated = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(truncated, "the source's log was not cut before kill {kill}");
        cut = log_of(&client, "bid").await.0;
        let status: String = client
            .query_one(
                "SELECT status FROM sluice_sources WHERE source_name = 'bid'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            status, "running",
            "kill {kill} must come while the source runs"
        );
        server.kill();
        let previous = damage_newest_checkpoint(dir.path());
        server = common::process::spawn_with(dir.path(), port, &args);
        client = common::process::connect_when_up(port).await;
        assert_eq!(checkpoints(&client, "recovery").await, vec![previous]);
        assert!(
            restored_views(&client).await >= 2,
            "the views come back from a checkpoint"
        );
    }
    source_finished(&client).await;
    assert_eq!(rows(&client, "SELECT * FROM per_bucket").await, want);
    // What was truncated before the restart stays truncated (the two checkpoints kept last
    // may still need some segments: recovery can fall back to the older one).
    assert!(log_of(&client, "bid").await.0 > 0);
    // A new view reads what the log holds when it starts, which only shrinks (checkpoints
    // taken since may cut it further).
    let count = || async {
        let n: i64 = client
            .query_one("SELECT count(*) FROM bid", &[])
            .await
            .unwrap()
            .get(0);
        n
    };
    let before = count().await;
    assert!(
        before < all_bids,
        "SELECT over the source reads what its log holds"
    );
    client
        .batch_execute("CREATE MATERIALIZED VIEW late AS SELECT count(*) AS n FROM bid")
        .await
        .unwrap();
    let after = count().await;
    let late: i64 = client
        .query_one("SELECT n FROM late", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        after <= late && late <= before,
        "the new view counts {late}, the log held {before} before it and {after} after"
    );

    // The table keeps every record, and its view every row.
    assert_eq!(log_of(&client, "t").await.0, 0);
    assert_eq!(
        rows(&client, "SELECT n FROM t_count").await,
        vec!["20000".to_string()]
    );
    assert_eq!(
        rows(&client, "SELECT count(*) FROM t").await,
        vec!["20000".to_string()]
    );
}

/// A SQL function is in the catalog: every session sees it as soon as it is created (also one
/// opened before), a view that calls it comes back after a restart, and so does the function.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_functions_reach_every_session_and_survive_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = common::start_on(dir.path()).await;
    let early = common::connect(server.addr.port()).await;
    let client = common::connect(server.addr.port()).await;
    client
        .batch_execute(
            "CREATE FUNCTION twice(x BIGINT) RETURNS BIGINT LANGUAGE SQL AS $$ SELECT x * 2 $$;
             CREATE FUNCTION gone(x BIGINT) RETURNS BIGINT LANGUAGE SQL RETURN x;
             CREATE TABLE n (v BIGINT);
             INSERT INTO n VALUES (1), (2);
             CREATE MATERIALIZED VIEW doubled AS SELECT twice(v) AS d FROM n;
             FLUSH;",
        )
        .await
        .expect("setup");
    assert_eq!(rows(&early, "SELECT twice(21)").await, vec!["42"]);
    assert_eq!(rows(&early, "SELECT gone(7)").await, vec!["7"]);
    client
        .batch_execute("DROP FUNCTION gone")
        .await
        .expect("drop");
    assert_eq!(
        failure(
            &early,
            "SELECT gone(7)",
            "a dropped function is gone in every session"
        )
        .await,
        "42883"
    );
    server.shutdown().await;

    server = common::start_on(dir.path()).await;
    let client = common::connect(server.addr.port()).await;
    assert_eq!(rows(&client, "SELECT * FROM doubled").await, vec!["2", "4"]);
    client
        .batch_execute("INSERT INTO n VALUES (3); FLUSH;")
        .await
        .expect("insert");
    assert_eq!(
        rows(&client, "SELECT * FROM doubled").await,
        vec!["2", "4", "6"]
    );
    assert_eq!(rows(&client, "SELECT twice(5)").await, vec!["10"]);
    assert_eq!(
        failure(
            &client,
            "SELECT gone(7)",
            "a dropped function stays dropped"
        )
        .await,
        "42883"
    );
    server.shutdown().await;
}

/// A composite type (`CREATE TYPE … AS (…)`) is seen by every session at once, comes back on
/// restart before the tables and views that use it, and a dropped one stays dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_types_reach_every_session_and_survive_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = common::start_on(dir.path()).await;
    let early = common::connect(server.addr.port()).await;
    let client = common::connect(server.addr.port()).await;
    client
        .batch_execute(
            "CREATE TYPE point2 AS (x INT, y INT);
             CREATE TYPE segment AS (a point2, b point2);
             CREATE TYPE gone AS (v TEXT);
             CREATE TABLE segs (id INT PRIMARY KEY, s segment);
             INSERT INTO segs VALUES (1, ROW(ROW(0, 0), ROW(3, 4)));
             CREATE MATERIALIZED VIEW ends AS SELECT id, ((s).b).x AS bx FROM segs;
             FLUSH;",
        )
        .await
        .expect("setup");
    assert_eq!(
        rows(&early, "SELECT (ROW(1, 2)::point2).y").await,
        vec!["2"]
    );
    client.batch_execute("DROP TYPE gone").await.expect("drop");
    assert_eq!(
        failure(
            &early,
            "SELECT ROW('a')::gone",
            "a dropped type is gone in every session"
        )
        .await,
        "42704"
    );
    server.shutdown().await;

    server = common::start_on(dir.path()).await;
    let client = common::connect(server.addr.port()).await;
    assert_eq!(
        rows(&client, "SELECT s FROM segs").await,
        vec!["(\"(0,0)\",\"(3,4)\")"]
    );
    client
        .batch_execute("INSERT INTO segs VALUES (2, ROW(ROW(1, 1), ROW(7, 8))); FLUSH;")
        .await
        .expect("insert");
    assert_eq!(
        rows(&client, "SELECT bx FROM ends ORDER BY id").await,
        vec!["3", "7"]
    );
    assert_eq!(
        failure(
            &client,
            "SELECT ROW('a')::gone",
            "a dropped type stays dropped"
        )
        .await,
        "42704"
    );
    assert_eq!(
        failure(&client, "DROP TYPE point2", "a type in use stays").await,
        "2BP01"
    );
    server.shutdown().await;
}

/// A column's `DEFAULT` comes back with its table: rows written after a restart without the
/// column get it, and the catalogs still show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn column_defaults_survive_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = common::start_on(dir.path()).await;
    let client = common::connect(server.addr.port()).await;
    client
        .batch_execute(
            "CREATE TABLE orders (id UUID DEFAULT gen_random_uuid(), qty INT DEFAULT 1,
               status TEXT DEFAULT 'new', at TIMESTAMPTZ DEFAULT now());
             INSERT INTO orders (qty) VALUES (5);",
        )
        .await
        .expect("setup");
    server.shutdown().await;

    server = common::start_on(dir.path()).await;
    let client = common::connect(server.addr.port()).await;
    client
        .batch_execute("INSERT INTO orders (status) VALUES ('paid'), ('paid')")
        .await
        .expect("insert after restart");
    assert_eq!(
        rows(
            &client,
            "SELECT qty, status, count(DISTINCT id), bool_and(at IS NOT NULL) FROM orders \
             GROUP BY qty, status ORDER BY qty"
        )
        .await,
        vec!["1|paid|2|t", "5|new|1|t"]
    );
    assert_eq!(
        rows(
            &client,
            "SELECT column_name, column_default FROM information_schema.columns \
             WHERE table_name = 'orders' ORDER BY ordinal_position"
        )
        .await,
        vec!["at|now()", "id|gen_random_uuid()", "qty|1", "status|'new'"]
    );
    server.shutdown().await;
}
