//! SUBSCRIBE end to end: psql printing `COPY (SUBSCRIBE …) TO STDOUT` live and stopped with
//! Ctrl-C, cursors from tokio-postgres and psycopg, a feed checked against the batch oracle
//! under random writes, slow subscribers dropped with an error, and subscriptions torn down
//! when their client goes away.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::{Client, SimpleQueryMessage};

use common::{TestServer, db_error, subscriptions, wait_for_subscriptions};

async fn server() -> TestServer {
    TestServer::start_with(|c| {
        c.barrier_interval = Duration::from_millis(10);
        c.parallelism = 2;
    })
    .await
}

/// Rows of a simple-protocol query as `|`-joined text.
async fn simple_rows(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// psql connected to `port`, its stdout line-buffered (stdbuf: a pipe, unlike a terminal,
/// would make libc hold psql's output back), with `extra` arguments.
fn psql(port: u16, extra: &[&str]) -> Command {
    let mut command = Command::new("stdbuf");
    command
        .args(["-oL", "psql", "-X", "-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-U", "sluice", "-d", "sluice"])
        .args(extra)
        .stdout(Stdio::piped());
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_prints_copy_subscribe_live_and_ctrl_c_ends_it() {
    let server = server().await;
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE t (k INT PRIMARY KEY, v INT);
             CREATE MATERIALIZED VIEW s AS SELECT sum(v) AS total, count(*) AS n FROM t;
             INSERT INTO t VALUES (1, 10);",
        )
        .await
        .unwrap();
    let mut psql = psql(server.port(), &["-c", "COPY (SUBSCRIBE TO s) TO STDOUT"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql");
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let stdout = psql.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut next_line = async || {
        tokio::time::timeout(Duration::from_secs(10), lines.recv())
            .await
            .expect("psql printed a line in time")
            .expect("psql is still running")
    };
    // The snapshot: epoch, diff, total, n.
    let first = next_line().await;
    let fields: Vec<&str> = first.split('\t').collect();
    assert_eq!(fields[1..], ["1", "10", "1"], "{first}");
    let snapshot_epoch: u64 = fields[0].parse().unwrap();
    assert_eq!(wait_for_subscriptions(&server, (1, 0)).await.as_secs(), 0);

    // A change arrives while psql waits: the old row retracted, the new one inserted.
    client
        .batch_execute("INSERT INTO t VALUES (2, 5)")
        .await
        .unwrap();
    let mut change = [next_line().await, next_line().await];
    change.sort();
    let epoch: Vec<u64> = change
        .iter()
        .map(|l| l.split('\t').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(epoch[0], epoch[1], "one epoch's changes share it");
    assert!(epoch[0] > snapshot_epoch);
    let rest: Vec<String> = change
        .iter()
        .map(|l| l.split('\t').skip(1).collect::<Vec<_>>().join(" "))
        .collect();
    let mut rest = rest;
    rest.sort();
    assert_eq!(rest, vec!["-1 10 1", "1 15 2"]);

    // Ctrl-C: psql sends a CancelRequest; the subscription ends with 57014.
    let status = Command::new("sh")
        .args(["-c", &format!("kill -INT {}", psql.id())])
        .status()
        .unwrap();
    assert!(status.success());
    let output = psql.wait_with_output().expect("psql exits");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cancel"), "{stderr}");
    wait_for_subscriptions(&server, (0, 0)).await;
}

/// One row of a feed with `PROGRESS`: epoch, progressed, diff, the columns (text; None is null).
type FeedRow = Vec<Option<String>>;

/// A feed's rows summed up, with the state as of each epoch whose progress row came.
#[derive(Default)]
struct FeedState {
    rows: BTreeMap<String, i64>,
    at: BTreeMap<u64, Vec<String>>,
    last_epoch: u64,
}

impl FeedState {
    fn apply(&mut self, row: &FeedRow) {
        let epoch: u64 = row[0].as_deref().unwrap().parse().unwrap();
        assert!(epoch >= self.last_epoch, "epochs never go back");
        self.last_epoch = epoch;
        if row[1].as_deref() == Some("t") {
            assert!(row[2].is_none(), "a progress row has no diff");
            let mut rows: Vec<String> = self
                .rows
                .iter()
                .flat_map(|(k, &n)| std::iter::repeat_n(k.clone(), n as usize))
                .collect();
            rows.sort();
            self.at.insert(epoch, rows);
            return;
        }
        let diff: i64 = row[2].as_deref().unwrap().parse().unwrap();
        let key = row[3..]
            .iter()
            .map(|v| v.clone().unwrap_or_else(|| "NULL".into()))
            .collect::<Vec<_>>()
            .join("|");
        let count = self.rows.entry(key.clone()).or_insert(0);
        *count += diff;
        assert!(*count >= 0, "{key} retracted more often than inserted");
        if *count == 0 {
            self.rows.remove(&key);
        }
    }
}

/// `SELECT k, count(*), sum(v) FROM w GROUP BY k` over rows `id|k|v` of `w`.
fn per_k_oracle(table: &[String]) -> Vec<String> {
    let mut groups: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for row in table {
        let fields: Vec<i64> = row.split('|').map(|f| f.parse().unwrap()).collect();
        let g = groups.entry(fields[1]).or_default();
        g.0 += 1;
        g.1 += fields[2];
    }
    let mut out: Vec<String> = groups
        .iter()
        .map(|(k, (n, s))| format!("{k}|{n}|{s}"))
        .collect();
    out.sort();
    out
}

/// At every epoch both feeds reported progress for, the view's summed diffs equal the batch
/// query over the table's summed diffs. Returns how many epochs were compared.
fn check_epochs(view: &FeedState, table: &FeedState) -> usize {
    let mut compared = 0;
    for (epoch, rows) in &view.at {
        if let Some(table_rows) = table.at.get(epoch) {
            assert_eq!(rows, &per_k_oracle(table_rows), "epoch {epoch}");
            compared += 1;
        }
    }
    compared
}

const PER_K_DDL: &str = "CREATE TABLE w (id INT PRIMARY KEY, k INT, v BIGINT);
     CREATE MATERIALIZED VIEW per_k AS SELECT k, count(*) AS n, sum(v) AS s FROM w GROUP BY k;";

/// Random inserts, updates (an insert of an existing id) and deletes for `duration`.
async fn random_writes(writer: Client, seed: u64, duration: Duration) {
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    while started.elapsed() < duration {
        let mut sql = String::new();
        for _ in 0..rng.random_range(1..20) {
            let id = rng.random_range(0..60);
            match rng.random_range(0..4) {
                0 => sql.push_str(&format!("DELETE FROM w WHERE id = {id};")),
                _ => sql.push_str(&format!(
                    "INSERT INTO w VALUES ({id}, {}, {});",
                    rng.random_range(0..6),
                    rng.random_range(-50..500)
                )),
            }
        }
        writer.batch_execute(&sql).await.unwrap();
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..15))).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursor_feeds_equal_the_batch_oracle_at_every_epoch() {
    let server = server().await;
    let writer = server.connect().await;
    writer.batch_execute(PER_K_DDL).await.unwrap();
    let reader = server.connect().await;
    reader
        .batch_execute(
            "BEGIN;
             DECLARE v CURSOR FOR SUBSCRIBE TO per_k WITH (PROGRESS = true);
             DECLARE t CURSOR FOR SUBSCRIBE TO w WITH (PROGRESS = true);",
        )
        .await
        .unwrap();
    let writes = tokio::spawn(random_writes(writer, 5, Duration::from_millis(1500)));
    let (mut view, mut table) = (FeedState::default(), FeedState::default());
    let mut quiet = 0;
    while !writes.is_finished() || quiet < 3 {
        let v = simple_rows(&reader, "FETCH ALL v WITH (timeout = '20ms')").await;
        let t = simple_rows(&reader, "FETCH ALL t WITH (timeout = '20ms')").await;
        quiet = if writes.is_finished() { quiet + 1 } else { 0 };
        v.iter().for_each(|r| view.apply(r));
        t.iter().for_each(|r| table.apply(r));
    }
    let compared = check_epochs(&view, &table);
    assert!(compared >= 20, "only {compared} epochs in common");
    assert!(
        view.at
            .values()
            .collect::<std::collections::HashSet<_>>()
            .len()
            > 5
    );
    reader.batch_execute("COMMIT").await.unwrap();
    // The cursors closed with their transaction.
    wait_for_subscriptions(&server, (0, 0)).await;
    let e = reader.batch_execute("FETCH 1 v").await.unwrap_err();
    assert_eq!(db_error(&e).0, "34000");
}

/// Runs `COPY (SUBSCRIBE TO relation WITH (PROGRESS = true)) TO STDOUT` in psql until `stop`,
/// then Ctrl-C; returns the rows it printed.
fn psql_feed(port: u16, relation: &str, stop: std::sync::mpsc::Receiver<()>) -> Vec<FeedRow> {
    let copy = format!("COPY (SUBSCRIBE TO {relation} WITH (PROGRESS = true)) TO STDOUT");
    let mut psql = psql(port, &["-c", &copy])
        .stderr(Stdio::null())
        .spawn()
        .expect("psql");
    let stdout = psql.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let _ = stop.recv();
    Command::new("sh")
        .args(["-c", &format!("kill -INT {}", psql.id())])
        .status()
        .unwrap();
    let _ = psql.wait();
    lines
        .join()
        .unwrap()
        .iter()
        .map(|line| {
            line.split('\t')
                .map(|f| (f != "\\N").then(|| f.to_string()))
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_copy_feeds_equal_the_batch_oracle_at_every_epoch() {
    let server = server().await;
    let writer = server.connect().await;
    writer.batch_execute(PER_K_DDL).await.unwrap();
    let port = server.port();
    let (stop_view, view_stopped) = std::sync::mpsc::channel();
    let (stop_table, table_stopped) = std::sync::mpsc::channel();
    let view_rows = std::thread::spawn(move || psql_feed(port, "per_k", view_stopped));
    let table_rows = std::thread::spawn(move || psql_feed(port, "w", table_stopped));
    wait_for_subscriptions(&server, (2, 1)).await;
    random_writes(writer, 6, Duration::from_millis(1500)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop_view.send(()).unwrap();
    stop_table.send(()).unwrap();
    let (mut view, mut table) = (FeedState::default(), FeedState::default());
    view_rows.join().unwrap().iter().for_each(|r| view.apply(r));
    table_rows
        .join()
        .unwrap()
        .iter()
        .for_each(|r| table.apply(r));
    let compared = check_epochs(&view, &table);
    assert!(compared >= 20, "only {compared} epochs in common");
    wait_for_subscriptions(&server, (0, 0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_to_a_query_or_table_without_snapshot_and_cursor_rules() {
    let server = server().await;
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE e (k INT, v INT) APPEND ONLY; INSERT INTO e VALUES (1, 1), (2, 2);",
        )
        .await
        .unwrap();
    // Outside a transaction, as in PostgreSQL.
    let e = client
        .batch_execute("DECLARE c CURSOR FOR SUBSCRIBE TO e")
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).0, "25P01");

    client
        .batch_execute(
            "BEGIN;
             DECLARE q CURSOR FOR SUBSCRIBE (SELECT k, v * 10 AS v10 FROM e WHERE k > 1);
             DECLARE t CURSOR FOR SUBSCRIBE TO e WITH (SNAPSHOT = false);
             DECLARE plain CURSOR FOR SELECT k FROM e ORDER BY k;",
        )
        .await
        .unwrap();
    // A query and a table each run a view of their own while subscribed.
    assert_eq!(subscriptions(&server), (2, 2));
    let q = simple_rows(&client, "FETCH ALL q WITH (timeout = '1s')").await;
    assert_eq!(q.len(), 1);
    assert_eq!(
        q[0][1..],
        [Some("1".into()), Some("2".into()), Some("20".into())]
    );
    let none = simple_rows(&client, "FETCH ALL t WITH (timeout = '50ms')").await;
    assert!(none.is_empty(), "no snapshot: {none:?}");
    // A plain cursor returns exactly what is asked for.
    assert_eq!(
        simple_rows(&client, "FETCH 1 FROM plain").await,
        vec![vec![Some("1".into())]]
    );
    assert_eq!(
        simple_rows(&client, "FETCH ALL plain").await,
        vec![vec![Some("2".into())]]
    );

    let other = server.connect().await;
    other
        .batch_execute("INSERT INTO e VALUES (3, 3)")
        .await
        .unwrap();
    let t = simple_rows(&client, "FETCH ALL t WITH (timeout = '5s')").await;
    assert_eq!(t.len(), 1);
    assert_eq!(
        t[0][1..],
        [Some("1".into()), Some("3".into()), Some("3".into())]
    );
    let q = simple_rows(&client, "FETCH ALL q WITH (timeout = '5s')").await;
    assert_eq!(
        q[0][1..],
        [Some("1".into()), Some("3".into()), Some("30".into())]
    );

    let e = client
        .batch_execute("DECLARE q CURSOR FOR SELECT 1")
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).0, "42P03");
    client.batch_execute("ROLLBACK").await.unwrap();
    client
        .batch_execute("BEGIN; CLOSE ALL; COMMIT")
        .await
        .unwrap();
    // Their views stop with them.
    wait_for_subscriptions(&server, (0, 0)).await;

    let e = client
        .batch_execute("SUBSCRIBE TO e AS OF 1")
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).0, "22023", "{e}");
    // AS OF an epoch to come (epochs are milliseconds since 1970): nothing before it, then
    // the contents as of then.
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 400;
    client
        .batch_execute(&format!(
            "BEGIN; DECLARE later CURSOR FOR SUBSCRIBE TO e AS OF {soon}"
        ))
        .await
        .unwrap();
    let early = simple_rows(&client, "FETCH ALL later WITH (timeout = '50ms')").await;
    assert!(early.is_empty(), "{early:?}");
    let rows = simple_rows(&client, "FETCH ALL later WITH (timeout = '5s')").await;
    assert_eq!(rows.len(), 3, "{rows:?}");
    for row in &rows {
        let epoch: u64 = row[0].as_deref().unwrap().parse().unwrap();
        assert!(epoch >= soon, "{epoch} < {soon}");
    }
    client.batch_execute("COMMIT").await.unwrap();

    let e = client.batch_execute("SUBSCRIBE TO nope").await.unwrap_err();
    assert_eq!(db_error(&e).0, "42P01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_is_dropped_with_an_error_not_silently() {
    let server = TestServer::start_with(|c| {
        c.barrier_interval = Duration::from_millis(10);
        c.subscribe_buffer_epochs = 8;
    })
    .await;
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE t (v INT); CREATE MATERIALIZED VIEW c AS SELECT count(*) AS n FROM t;
             BEGIN; DECLARE slow CURSOR FOR SUBSCRIBE TO c WITH (PROGRESS = true);",
        )
        .await
        .unwrap();
    // Progress rows pile up at 100 epochs a second; 8 fit.
    let other = server.connect().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let queued = simple_rows(
            &other,
            "SELECT queued_epochs, queue_capacity FROM sluice_subscriptions",
        )
        .await;
        if queued.iter().any(|r| r[0].as_deref() != Some("0")) {
            assert_eq!(queued[0][1].as_deref(), Some("8"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the queue never grew: {queued:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(subscriptions(&server), (0, 0));
    // What was queued is still delivered, then the error.
    let rows = simple_rows(&client, "FETCH 100 slow WITH (timeout = '1s')").await;
    assert!(!rows.is_empty() && rows.len() <= 9, "{}", rows.len());
    let e = client
        .batch_execute("FETCH 100 slow WITH (timeout = '1s')")
        .await
        .unwrap_err();
    let (code, message) = db_error(&e);
    assert_eq!(code, "57014");
    assert!(message.contains("fell too far behind"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_go_away_release_their_subscriptions_within_a_second() {
    let server = server().await;
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE t (v INT); CREATE MATERIALIZED VIEW c AS SELECT count(*) AS n FROM t",
        )
        .await
        .unwrap();

    // COPY out through tokio-postgres (extended protocol); then the client's connection is
    // cut (its task aborted, the socket closed), as when a client process dies.
    let (copier, connection) = common::connect_cuttable(server.port()).await;
    let stream = copier
        .copy_out("COPY (SUBSCRIBE TO c) TO STDOUT")
        .await
        .unwrap();
    let mut stream = Box::pin(stream);
    let first = stream.next().await.unwrap().unwrap();
    assert!(
        String::from_utf8_lossy(&first).ends_with("\t1\t0\n"),
        "{first:?}"
    );
    assert_eq!(subscriptions(&server), (1, 0));
    connection.abort();
    drop(stream);
    drop(copier);
    let took = wait_for_subscriptions(&server, (0, 0)).await;
    assert!(took < Duration::from_secs(1), "{took:?}");

    // A cursor's connection dropped mid-transaction.
    let cursor = server.connect().await;
    cursor
        .batch_execute("BEGIN; DECLARE x CURSOR FOR SUBSCRIBE (SELECT n + 1 AS m FROM c)")
        .await
        .unwrap();
    assert_eq!(subscriptions(&server), (1, 1));
    drop(cursor);
    let took = wait_for_subscriptions(&server, (0, 0)).await;
    assert!(took < Duration::from_secs(1), "{took:?}");

    // Hundreds on one view: each sees the change.
    let many = server.connect().await;
    let mut sql = String::from("BEGIN;");
    for i in 0..200 {
        sql.push_str(&format!(
            "DECLARE c{i} CURSOR FOR SUBSCRIBE TO c WITH (SNAPSHOT = false);"
        ));
    }
    many.batch_execute(&sql).await.unwrap();
    assert_eq!(subscriptions(&server), (200, 0));
    // Visible from SQL, with how far behind each client is.
    client.batch_execute("FLUSH").await.unwrap();
    let seen = simple_rows(
        &client,
        "SELECT count(*), count(*) FILTER (WHERE view_name = 'c' AND queued_epochs = 0 \
           AND current_epoch >= start_epoch) FROM sluice_subscriptions",
    )
    .await;
    assert_eq!(seen, vec![vec![Some("200".into()), Some("200".into())]]);
    client
        .batch_execute("INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    for i in 0..200 {
        let rows = simple_rows(&many, &format!("FETCH ALL c{i} WITH (timeout = '5s')")).await;
        let mut diffs: Vec<&str> = rows.iter().map(|r| r[1].as_deref().unwrap()).collect();
        diffs.sort();
        assert_eq!(diffs, ["-1", "1"], "cursor c{i}: {rows:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_reads_a_subscription_through_a_cursor() {
    let server = server().await;
    let client = server.connect().await;
    client.batch_execute(PER_K_DDL).await.unwrap();
    let out = common::run_python_client("psycopg_subscribe.py", server.port()).await;
    assert!(out.starts_with("ok"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_watch_reruns_a_select() {
    let server = server().await;
    let client = server.connect().await;
    client
        .batch_execute("CREATE TABLE t (v INT); INSERT INTO t VALUES (1), (2)")
        .await
        .unwrap();
    // \watch re-runs the query buffer, so the query comes on stdin, as a user types it.
    let mut psql = psql(server.port(), &["-At"])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("psql");
    // Kept open until the end: psql would quit at the end of its input.
    let mut stdin = psql.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, b"SELECT sum(v) FROM t \\watch 0.1\n").unwrap();
    let stdout = psql.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line == "3" || line == "13" {
                seen.push(line.clone());
            }
            if line == "13" {
                break;
            }
        }
        seen
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    client
        .batch_execute("INSERT INTO t VALUES (10)")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reader.is_finished() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = psql.kill();
    let _ = psql.wait();
    drop(stdin);
    let seen = reader.join().unwrap();
    assert!(
        seen.contains(&"3".to_string()) && seen.contains(&"13".to_string()),
        "{seen:?}"
    );
}
