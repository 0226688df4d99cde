//! What a client can send must not crash, hang or exhaust the server: each case gets a clear
//! error on its own connection, and the server (and that connection) go on serving.

mod common;

use common::{TestServer, process};
use tokio_postgres::Client;

/// The SQLSTATE of a failed statement.
async fn sqlstate_of(client: &Client, sql: &str) -> String {
    let e = client
        .batch_execute(sql)
        .await
        .expect_err("the statement is refused");
    e.as_db_error()
        .map(|d| d.code().code().to_string())
        .unwrap_or_else(|| panic!("{sql}: not a server error: {e}"))
}

/// Runs `sql` on `client` and sends a cancel request 300 ms later; returns the client and
/// what the statement answered (a statement still running 120 s later is a failure).
async fn cancelled(
    client: Client,
    sql: &'static str,
) -> (
    Client,
    Result<Vec<tokio_postgres::SimpleQueryMessage>, tokio_postgres::Error>,
) {
    let cancel = client.cancel_token();
    let running = tokio::spawn(async move {
        let result = client.simple_query(sql).await;
        (client, result)
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    cancel.cancel_query(tokio_postgres::NoTls).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(120), running)
        .await
        .expect("the statement ended")
        .unwrap()
}

/// The connection still answers.
async fn still_serves(client: &Client) {
    let one: i32 = client
        .query_one("SELECT 1::int4", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(one, 1);
}

/// Durations too large for `Duration` (or for the clock arithmetic they are used in) panicked
/// in `Duration::from_secs_f64`, killing the connection: now they are refused with `22023`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_durations_are_refused_not_panicked_on() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE t (k INT, v INT);
             BEGIN;
             DECLARE c CURSOR FOR SUBSCRIBE TO t;",
        )
        .await
        .unwrap();
    for timeout in ["100000000000000000000", "10000000000000", "1e400"] {
        let sql = format!("FETCH ALL c WITH (timeout = '{timeout}')");
        assert_eq!(sqlstate_of(&client, &sql).await, "22023", "{sql}");
        client
            .batch_execute("ROLLBACK; BEGIN; DECLARE c CURSOR FOR SUBSCRIBE TO t")
            .await
            .unwrap();
    }
    client.batch_execute("ROLLBACK").await.unwrap();
    for timeout in ["100000000000000000000s", "10000000000000"] {
        let sql = format!(
            "CREATE SOURCE s (id BIGINT) WITH (connector = 'kafka', topic = 't',
               properties.bootstrap.server = '127.0.0.1:1', idle.timeout = '{timeout}')
             FORMAT PLAIN ENCODE JSON"
        );
        assert_eq!(sqlstate_of(&client, &sql).await, "22023", "{sql}");
    }
    still_serves(&client).await;
}

/// `SELECT 1+1+…+1` with 2 million terms (a 4 MB statement), and in a dev build already 500
/// terms, overflowed the stack and killed the server with every client: now a chain past the
/// limit is refused with `54001`, and one up to it runs. Against the server binary, whose
/// runtime threads have the stacks the limit is made for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_million_term_expression_is_refused_and_the_server_lives() {
    let dir = tempfile::tempdir().unwrap();
    let port = process::free_port();
    let mut server = process::spawn_with(dir.path(), port, &[]);
    let client = process::connect_when_up(port).await;
    let other = process::connect_when_up(port).await;
    let sum = |terms: usize| format!("SELECT {}", vec!["1"; terms].join("+"));
    assert_eq!(sqlstate_of(&client, &sum(2_000_000)).await, "54001");
    assert_eq!(sqlstate_of(&client, &sum(1_002)).await, "54001");
    let ors = format!(
        "SELECT count(*) FROM (VALUES (1)) v(x) WHERE {}",
        vec!["x = 2"; 100_000].join(" OR ")
    );
    assert_eq!(sqlstate_of(&client, &ors).await, "54001");
    still_serves(&client).await;
    still_serves(&other).await;
    // Up to the limit, a chain is planned and run (simple and extended protocol).
    let rows = client.simple_query(&sum(1_000)).await.unwrap();
    let value = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(value.as_deref(), Some("1000"));
    let n: i64 = client.query_one(&sum(1_000), &[]).await.unwrap().get(0);
    assert_eq!(n, 1_000);
    still_serves(&other).await;
    assert!(server.is_running());
}

/// `connector = 'file'` read any file the server could (`/etc/passwd`): now only files below
/// the file source root, with `..` and symbolic links resolved first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_sources_read_only_below_the_file_source_root() {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.csv"), "1\n").unwrap();
    std::fs::create_dir(root.path().join("in")).unwrap();
    std::fs::write(root.path().join("in/ok.csv"), "1\n2\n").unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
    let root_dir = root.path().to_path_buf();
    let server = TestServer::start_with(|c| c.file_source_root = Some(root_dir)).await;
    let client = server.connect().await;
    let create = |name: &str, path: &str| {
        format!(
            "CREATE SOURCE {name} (x INT) WITH (connector = 'file', path = '{path}') FORMAT PLAIN ENCODE CSV (without_header = 'true')"
        )
    };
    let secret = outside.path().join("secret.csv");
    for (name, path) in [
        ("a", "/etc/passwd".to_string()),
        ("b", secret.display().to_string()),
        (
            "c",
            format!(
                "in/../../{}/secret.csv",
                outside.path().file_name().unwrap().to_str().unwrap()
            ),
        ),
        ("d", "link/secret.csv".to_string()),
        ("e", "link/*.csv".to_string()),
    ] {
        assert_eq!(
            sqlstate_of(&client, &create(name, &path)).await,
            "42501",
            "{path}"
        );
    }
    // Below the root, relative or absolute, it reads.
    client
        .batch_execute(&create("rel", "in/*.csv"))
        .await
        .unwrap();
    let abs = root.path().join("in/ok.csv");
    client
        .batch_execute(&create("abs", &abs.display().to_string()))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let rows = common::sorted_rows(
            &client,
            "SELECT (SELECT sum(x) FROM rel), (SELECT sum(x) FROM abs)",
        )
        .await;
        if rows == ["3|3"] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{rows:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Garbage on the wire, huge length prefixes, a thousand connections opened and dropped, a
/// client that stops reading in the middle of a large result and a query cancelled mid-flight:
/// each is answered or its own connection closed, the server process lives, and a well-behaved
/// client on another connection sees no error meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_abuse_is_contained_to_its_own_connection() {
    use rand::{Rng, SeedableRng};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    let dir = tempfile::tempdir().unwrap();
    let port = process::free_port();
    let mut server = process::spawn_with(dir.path(), port, &[]);
    let client = process::connect_when_up(port).await;
    client
        .batch_execute("CREATE TABLE t (k INT, v TEXT); INSERT INTO t VALUES (1, 'a')")
        .await
        .unwrap();

    // The well-behaved client: a query every 20 ms all along; every answer must be right.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = std::sync::Arc::clone(&stop);
        let client = process::connect_when_up(port).await;
        tokio::spawn(async move {
            let mut slowest = std::time::Duration::ZERO;
            let mut answered = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let started = std::time::Instant::now();
                let n: i64 = client
                    .query_one("SELECT count(*) FROM t", &[])
                    .await
                    .expect("the well-behaved client is answered")
                    .get(0);
                assert_eq!(n, 1);
                slowest = slowest.max(started.elapsed());
                answered += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            (answered, slowest)
        })
    };

    // Reads until the server closes the connection or answers; a silent open connection
    // after 10 s is a hang.
    async fn answered_or_closed(mut socket: TcpStream, what: &str) {
        let mut buf = vec![0u8; 4096];
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), socket.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{what}: neither answered nor closed"));
        let _ = read; // an answer, an EOF or a reset: each ends this connection's abuse
    }
    let startup = {
        let body = b"\x00\x03\x00\x00user\x00sluice\x00database\x00sluice\x00\x00";
        let mut m = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        m.extend_from_slice(body);
        m
    };

    // Random bytes instead of a startup packet, and after one.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for round in 0..40 {
        let mut socket = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        if round % 2 == 1 {
            socket.write_all(&startup).await.unwrap();
        }
        let noise: Vec<u8> = (0..rng.random_range(1..4096))
            .map(|_| rng.random())
            .collect();
        if socket.write_all(&noise).await.is_ok() {
            let mut buf = vec![0u8; 65536];
            // After a startup the server answers it first; keep reading to the close.
            let _ = tokio::time::timeout(std::time::Duration::from_millis(200), async {
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
        }
    }
    // Huge length prefixes: of the startup packet, and of a query after a good startup.
    let mut socket = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    socket
        .write_all(&0x7fff_ffffu32.to_be_bytes())
        .await
        .unwrap();
    socket.write_all(b"\x00\x03\x00\x00").await.unwrap();
    answered_or_closed(socket, "a 2 GB startup packet").await;
    let mut socket = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    socket.write_all(&startup).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let _ = socket.read(&mut buf).await;
    let mut query = b"Q".to_vec();
    query.extend_from_slice(&0x7fff_fff0u32.to_be_bytes());
    query.extend_from_slice(b"SELECT 1");
    socket.write_all(&query).await.unwrap();
    answered_or_closed(socket, "a 2 GB query message").await;

    // Frames the fuzzer found (fuzz/fuzz_targets/pgwire_frames.rs): a Parse, then a Bind whose
    // parameter count overruns it. pgwire's decoder panics on it; only this connection closes.
    let mut socket = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    socket.write_all(&startup).await.unwrap();
    let _ = socket.read(&mut buf).await;
    let crash = b"P\x00\x00\x00\x1ds1\x00SELECT $1::int4\x00\x00\x01\x00\x00\x00\x17B\x00\x00\x00\x1a\x00\x01D\x00\x00\x00\x06P\x00E\x00\x00\x00\x09\x00\x00\x00\x00\x00S\x00\x00\x00\x04";
    socket.write_all(crash).await.unwrap();
    answered_or_closed(socket, "a Bind that overruns its frame").await;
    // And a Parse whose count of parameter types overruns it.
    let mut socket = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    socket.write_all(&startup).await.unwrap();
    let _ = socket.read(&mut buf).await;
    let crash = b"P\x00\x00\x00\x1ds1\x00SELECT $\x00\x04f\x00\x00\x00\x09st1::int4\x00\x00\x01\x00\x00\x00\x17B\x00\x00\x00\x1a\x00f\x00\x00\x00\x09\x00\x09\x00\x00\x00\x00\x00S\x00\x00\x00\x04";
    socket.write_all(crash).await.unwrap();
    answered_or_closed(socket, "a Parse that overruns its frame").await;

    // A thousand connections opened and dropped: before, during and after the startup.
    for i in 0..1000 {
        let mut socket = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        match i % 3 {
            0 => {}
            1 => socket.write_all(&startup[..7]).await.unwrap(),
            _ => socket.write_all(&startup).await.unwrap(),
        }
    }

    // A client that asks for a large result and stops reading, then goes away.
    let mut socket = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    socket.write_all(&startup).await.unwrap();
    let _ = socket.read(&mut buf).await;
    let sql = b"SELECT repeat('x', 1000) FROM generate_series(1, 200000)\0";
    let mut query = b"Q".to_vec();
    query.extend_from_slice(&((sql.len() + 4) as u32).to_be_bytes());
    query.extend_from_slice(sql);
    socket.write_all(&query).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    drop(socket);

    // A query cancelled mid-flight: cancelled (57014) or finished, the connection usable.
    let victim = process::connect_when_up(port).await;
    let (victim, result) =
        cancelled(victim, "SELECT count(*) FROM generate_series(1, 300000000)").await;
    if let Err(e) = result {
        assert_eq!(e.code().map(|c| c.code()), Some("57014"), "{e}");
    }
    still_serves(&victim).await;

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (answered, slowest) = watcher.await.unwrap();
    eprintln!("the well-behaved client: {answered} answers, the slowest in {slowest:?}");
    assert!(answered > 0);
    still_serves(&client).await;
    assert!(server.is_running(), "the server process lives");
}

/// Beyond `--max-connections` a client is refused with `53300` (as PostgreSQL's "too many
/// clients"), a cancel request still gets through, and a slot freed is usable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_refused_with_53300() {
    let server = TestServer::start_with(|c| c.max_connections = 3).await;
    let port = server.port();
    let first = server.connect().await;
    let _second = server.connect().await;
    let third = server.connect().await;
    let refused = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=sluice dbname=sluice"),
        tokio_postgres::NoTls,
    )
    .await
    .err()
    .expect("a fourth connection is refused");
    assert_eq!(refused.code().map(|c| c.code()), Some("53300"), "{refused}");
    // A cancel request is served on a full server: a FETCH waiting 30 s for a change is
    // cancelled at once.
    first
        .batch_execute(
            "CREATE TABLE t (k INT); BEGIN;
             DECLARE c CURSOR FOR SUBSCRIBE TO t WITH (SNAPSHOT = false)",
        )
        .await
        .unwrap();
    let (first, result) = cancelled(first, "FETCH ALL c WITH (timeout = '30s')").await;
    let Err(e) = result else {
        panic!("the FETCH was not cancelled")
    };
    assert_eq!(e.code().map(|c| c.code()), Some("57014"), "{e}");
    first.batch_execute("ROLLBACK").await.unwrap();
    still_serves(&first).await;
    // A slot freed is taken again.
    drop(third);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match tokio_postgres::connect(
            &format!("host=127.0.0.1 port={port} user=sluice dbname=sluice"),
            tokio_postgres::NoTls,
        )
        .await
        {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                still_serves(&client).await;
                break;
            }
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "{e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// A panic in a view's operator used to be caught for the whole epoch, logged, and the view
/// went on with half-applied state (and every view after it skipped that epoch). Now the view
/// fails with the panic's message, `SELECT` from it says so, `sluice_views` shows it, and other
/// views go on. A panic in an ad-hoc statement answers `XX000` on its connection, which stays
/// usable. (`sluice_test_panic` exists in debug builds only.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_view_fails_alone_and_a_panicking_statement_answers_xx000() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE t (k INT, v INT);
             CREATE MATERIALIZED VIEW doomed AS
               SELECT k, CASE WHEN v = 13 THEN sluice_test_panic('row ' || CAST(v AS TEXT)) ELSE v END AS v
               FROM t;
             CREATE MATERIALIZED VIEW fine AS SELECT k, sum(v) AS s FROM t GROUP BY k;
             INSERT INTO t VALUES (1, 1), (2, 2);
             FLUSH;",
        )
        .await
        .unwrap();
    assert_eq!(
        common::sorted_rows(&client, "SELECT * FROM doomed").await,
        ["1|1", "2|2"]
    );
    client
        .batch_execute("INSERT INTO t VALUES (1, 13); FLUSH;")
        .await
        .unwrap();
    let e = client
        .simple_query("SELECT * FROM doomed")
        .await
        .expect_err("a failed view answers an error");
    let (code, message) = common::db_error(&e);
    assert_eq!(code, "XX000");
    assert!(
        message.contains("doomed") && message.contains("sluice_test_panic: row 13"),
        "{message}"
    );
    assert_eq!(
        common::sorted_rows(
            &client,
            "SELECT view_name, status, error LIKE '%row 13%' FROM sluice_views"
        )
        .await,
        ["doomed|failed|t", "fine|running|NULL"]
    );
    // The other view saw the row and goes on.
    client
        .batch_execute("INSERT INTO t VALUES (2, 5); FLUSH;")
        .await
        .unwrap();
    assert_eq!(
        common::sorted_rows(&client, "SELECT * FROM fine").await,
        ["1|14", "2|7"]
    );
    // An ad-hoc statement that panics: XX000, and the connection goes on.
    for sql in [
        "SELECT sluice_test_panic('ad hoc')",
        "SELECT sluice_test_panic(CAST(k AS TEXT)) FROM t",
    ] {
        let e = client.simple_query(sql).await.expect_err("it panics");
        let (code, message) = common::db_error(&e);
        assert_eq!(code, "XX000", "{sql}: {message}");
        assert!(message.contains("panicked"), "{message}");
        still_serves(&client).await;
    }
    let e = client
        .query("SELECT sluice_test_panic($1)", &[&"bound"])
        .await
        .expect_err("it panics");
    assert_eq!(common::db_error(&e).0, "XX000");
    still_serves(&client).await;
}

/// The peak resident memory of a process, from `/proc` (kB → bytes).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

/// `COPY … FROM STDIN` buffered the whole stream before decoding it, and the table then kept
/// every row in memory: a 2 GB COPY grew the server by 2.1 GB. Now the data is decoded as it
/// arrives and staged on disk, and an append-only table's rows stay in its log, so 400 MB of
/// CSV leave the server's peak RSS far below 400 MB. A bad line at the very end still writes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_copy_does_not_grow_the_server_and_a_bad_last_line_writes_nothing() {
    use bytes::Bytes;
    use futures::SinkExt;
    let dir = tempfile::tempdir().unwrap();
    let port = process::free_port();
    let server = process::spawn_with(dir.path(), port, &[]);
    let client = process::connect_when_up(port).await;
    client
        .batch_execute(
            "CREATE TABLE bids (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR,
               url VARCHAR, extra VARCHAR) APPEND ONLY",
        )
        .await
        .unwrap();
    let before = peak_rss(server.pid());
    const CHUNKS: u64 = 400;
    const ROWS_PER_CHUNK: u64 = 10_000;
    let mut line_bytes = 0u64;
    let chunk = |c: u64, bad_end: bool| -> Bytes {
        let mut out = String::with_capacity(1 << 20);
        for i in 0..ROWS_PER_CHUNK {
            let n = c * ROWS_PER_CHUNK + i;
            out.push_str(&format!(
                "{},{},{},Google,https://www.nexmark.com/item.htm?query=1&n={n},{}\n",
                n % 1000,
                n % 7919,
                n,
                "x".repeat(40)
            ));
        }
        if bad_end {
            out.push_str("1,2,not-a-price,Apple,u,e\n");
        }
        Bytes::from(out)
    };
    // A COPY whose last line is bad writes nothing.
    let sink = client
        .copy_in("COPY bids FROM STDIN (FORMAT csv)")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    for c in 0..20 {
        sink.send(chunk(c, c == 19)).await.unwrap();
    }
    let e = sink
        .finish()
        .await
        .expect_err("the bad line fails the COPY");
    assert_eq!(common::db_error(&e).0, "22P02");
    let count: i64 = client
        .query_one("SELECT count(*) FROM bids", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0);
    // 400 MB of good CSV.
    let sink = client
        .copy_in("COPY bids FROM STDIN (FORMAT csv)")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    for c in 0..CHUNKS {
        let data = chunk(c, false);
        line_bytes += data.len() as u64;
        sink.send(data).await.unwrap();
    }
    let rows = sink.finish().await.unwrap();
    let rows_total = CHUNKS * ROWS_PER_CHUNK;
    assert_eq!(rows, rows_total);
    let row = client
        .query_one("SELECT count(*), sum(price), max(bidder) FROM bids", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), rows_total as i64);
    let sum = (rows_total * (rows_total - 1) / 2) as i64;
    assert_eq!(row.get::<_, i64>(1), sum);
    assert_eq!(row.get::<_, i64>(2), 7918);
    let peak = peak_rss(server.pid());
    eprintln!(
        "COPY of {} MB: server peak RSS {} MB before, {} MB after",
        line_bytes >> 20,
        before >> 20,
        peak >> 20
    );
    assert!(line_bytes > 400 << 20, "{line_bytes}");
    assert!(
        peak < before + (200 << 20),
        "the server grew by {} MB for a {} MB COPY",
        (peak - before) >> 20,
        line_bytes >> 20
    );
}

/// A query whose rows take long to compute: cancel requests reached only the planning (the
/// rows are computed while they are sent), so `SELECT count(*)` over a huge series ran on.
/// Now a cancel request stops it with 57014, and so does `statement_timeout`; the connection
/// goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_queries_stop_on_cancel_and_on_statement_timeout() {
    const LONG: &str = "SELECT count(*) FROM generate_series(1, 1000000000000)";
    let server = TestServer::start().await;
    let client = server.connect().await;
    // A cancel request.
    let (client, result) = cancelled(client, LONG).await;
    let e = result.expect_err("the query was cancelled");
    let (code, message) = common::db_error(&e);
    assert_eq!(code, "57014", "{message}");
    still_serves(&client).await;
    // statement_timeout, in the simple and the extended protocol.
    client
        .batch_execute("SET statement_timeout = '300ms'")
        .await
        .unwrap();
    let shown: String = client
        .query_one("SHOW statement_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(shown, "300ms");
    let e = client.simple_query(LONG).await.expect_err("timed out");
    let (code, message) = common::db_error(&e);
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("57014", "canceling statement due to statement timeout")
    );
    let e = client.query(LONG, &[]).await.expect_err("timed out");
    assert_eq!(common::db_error(&e).0, "57014");
    still_serves(&client).await;
    // A write is not timed out: it cannot be rolled back, and "cancelled" would be a lie.
    client
        .batch_execute(
            "SET statement_timeout = '1ms';
             CREATE TABLE big (x BIGINT);
             INSERT INTO big SELECT value FROM generate_series(1, 300000);
             SET statement_timeout = 0",
        )
        .await
        .expect("writes run to the end");
    let n: i64 = client
        .query_one("SELECT count(*) FROM big", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 300_000);
    // Bad values are refused; 0 turns the limit off.
    for bad in ["'x'", "'5 parsecs'", "3000000000", "'-1'"] {
        let code = sqlstate_of(&client, &format!("SET statement_timeout = {bad}")).await;
        assert_eq!(code, "22023", "{bad}");
    }
    client
        .batch_execute("SET statement_timeout = '2min'; SET statement_timeout = 0")
        .await
        .unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM generate_series(1, 300000)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 300_000);
}

/// Ad-hoc queries share one memory pool (`--query-memory`): a sort beyond it spills to disk
/// and answers; a hash join whose build side cannot fit answers 53200 and the server goes on.
/// A FETCH gathers at most `--max-result-rows` rows (54000 beyond), and the rows it read stay
/// for the next, smaller FETCH.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_memory_and_fetch_rows_are_bounded() {
    let server = TestServer::start_with(|c| {
        c.query_memory = 32 << 20;
        c.max_result_rows = 1000;
    })
    .await;
    let client = server.connect().await;
    let rows = client
        .query(
            "SELECT value FROM generate_series(1, 6000000) ORDER BY value DESC OFFSET 5999997",
            &[],
        )
        .await
        .unwrap();
    let values: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(values, [3, 2, 1]);
    let e = client
        .simple_query(
            "SELECT count(*) FROM generate_series(1, 8000000) a
             JOIN generate_series(1, 8000000) b ON a.value = b.value",
        )
        .await
        .expect_err("the join's build side does not fit");
    let (code, message) = common::db_error(&e);
    assert_eq!(code, "53200", "{message}");
    assert!(message.contains("--query-memory"), "{message}");
    still_serves(&client).await;
    client
        .batch_execute("BEGIN; DECLARE c CURSOR FOR SELECT value FROM generate_series(1, 5000)")
        .await
        .unwrap();
    let e = client
        .simple_query("FETCH ALL c")
        .await
        .expect_err("too many rows for one FETCH");
    assert_eq!(common::db_error(&e).0, "54000");
    let rows = client.query("FETCH 1000 c", &[]).await.unwrap();
    let first: i64 = rows[0].get(0);
    assert_eq!((rows.len(), first), (1000, 1));
    client.batch_execute("COMMIT").await.unwrap();
}

/// Errors carry PostgreSQL's SQLSTATEs, found from DataFusion's error types: an unknown relation
/// is 42P01 with PostgreSQL's words (it was DataFusion's "table … not found", matched by text),
/// an ambiguous column 42702, and a planning error nothing names is 42000, not 42601 (the
/// statement parsed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_the_sqlstates_of_their_kind() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    client
        .batch_execute("CREATE TABLE a (k INT, v INT); CREATE TABLE b (k INT, w INT)")
        .await
        .unwrap();
    for (sql, code, words) in [
        (
            "SELECT * FROM nope",
            "42P01",
            "relation \"nope\" does not exist",
        ),
        (
            "SELECT * FROM a JOIN public.nope ON true",
            "42P01",
            "relation \"public.nope\" does not exist",
        ),
        ("INSERT INTO nope VALUES (1)", "42P01", "nope"),
        (
            "WITH c AS (SELECT 1 AS x) SELECT * FROM c, nope",
            "42P01",
            "nope",
        ),
        ("SELECT k FROM a, b", "42702", "k"),
        ("SELECT nope_column FROM a", "42703", "nope_column"),
        (
            "SELECT no_such_function(k) FROM a",
            "42883",
            "no_such_function",
        ),
        ("SELECT k FROM a GROUP BY v", "42000", ""),
    ] {
        let e = client.simple_query(sql).await.expect_err(sql);
        let (got, message) = common::db_error(&e);
        assert_eq!(got, code, "{sql}: {message}");
        assert!(message.contains(words), "{sql}: {message}");
    }
    // A CTE and a table function are not relations that must exist.
    let n: i64 = client
        .query_one(
            "WITH c AS (SELECT value FROM generate_series(1, 3)) SELECT count(*) FROM c",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
}

/// A COPY is written in records of 16,384 rows; it used to judge each record's rows late
/// against the watermark the records before it had moved, so rows out of order across records
/// were dropped that one INSERT of the same rows keeps. Now the whole COPY is judged against
/// the watermark it found, and moves it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_is_judged_late_as_one_insert_would_be() {
    use bytes::Bytes;
    use futures::SinkExt;
    let server = TestServer::start().await;
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE r (k BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
               APPEND ONLY;
             CREATE MATERIALIZED VIEW rv AS SELECT count(*) AS n FROM r",
        )
        .await
        .unwrap();
    // 20,000 rows an hour later than the 20,000 after them.
    let mut data = String::new();
    for i in 0..40_000u32 {
        let hour = if i < 20_000 { 1 } else { 0 };
        data.push_str(&format!("{i},2026-01-01 {hour:02}:00:{:02}\n", i % 60));
    }
    let sink = client
        .copy_in("COPY r FROM STDIN (FORMAT csv)")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    sink.send(Bytes::from(data)).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 40_000);
    client.batch_execute("FLUSH").await.unwrap();
    assert_eq!(
        common::sorted_rows(&client, "SELECT count(*) FROM r").await,
        ["40000"]
    );
    assert_eq!(
        common::sorted_rows(&client, "SELECT n FROM rv").await,
        ["40000"]
    );
    assert_eq!(
        common::sorted_rows(
            &client,
            "SELECT late_rows FROM sluice_watermarks WHERE table_name = 'r'"
        )
        .await,
        ["0"]
    );
}

/// `SELECT $5555555555` described through the extended protocol made the server allocate 5.5
/// billion parameter slots and abort (found by the `sql_frontend` fuzz target): now 42P02.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_parameter_number_is_refused() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    let e = client
        .prepare("SELECT 055555555555555555555, $5555555555 % 5")
        .await
        .expect_err("no such parameter");
    let (code, message) = common::db_error(&e);
    assert_eq!(code, "42P02", "{message}");
    let e = client
        .prepare("SELECT $65536::int4")
        .await
        .expect_err("past the protocol's count");
    assert_eq!(common::db_error(&e).0, "42P02");
    let ok = client.prepare("SELECT $3::int4").await.expect("$3 is fine");
    assert_eq!(ok.params().len(), 3);
    still_serves(&client).await;
}
