//! Real clients against a real server: tokio-postgres (simple and extended protocol, parameters,
//! binary results), psql (as a user types it), psycopg 3, and misbehaving clients.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use chrono::NaiveDateTime;
use common::{TestServer, db_error};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn tokio_postgres_prepared_statements_with_parameters_and_binary_results() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    client
        .batch_execute("CREATE TABLE m (id INT PRIMARY KEY, name TEXT, score DOUBLE PRECISION, at TIMESTAMP, ok BOOLEAN, big BIGINT)")
        .await
        .unwrap();
    let insert = client
        .prepare("INSERT INTO m VALUES ($1, $2, $3, $4, $5, $6)")
        .await
        .unwrap();
    let at = NaiveDateTime::parse_from_str("2026-11-24 10:20:30.123456", "%Y-%m-%d %H:%M:%S%.f")
        .unwrap();
    for i in 0..20i32 {
        let n = client
            .execute(
                &insert,
                &[
                    &i,
                    &format!("row {i}"),
                    &(f64::from(i) / 4.0),
                    &at,
                    &(i % 2 == 0),
                    &(i64::from(i) << 40),
                ],
            )
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
    // Extended protocol results come back in binary; the driver decodes them by type.
    let rows = client
        .query(
            "SELECT id, name, score, at, ok, big FROM m WHERE id >= $1 AND name <> $2 ORDER BY id",
            &[&15i32, &"row 16"],
        )
        .await
        .unwrap();
    let ids: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, vec![15, 17, 18, 19]);
    let r = &rows[0];
    assert_eq!(r.get::<_, String>(1), "row 15");
    assert_eq!(r.get::<_, f64>(2), 3.75);
    assert_eq!(r.get::<_, NaiveDateTime>(3), at);
    assert!(!r.get::<_, bool>(4));
    assert_eq!(r.get::<_, i64>(5), 15i64 << 40);

    // NULL parameters and results
    client
        .execute(
            "INSERT INTO m (id, name) VALUES ($1, $2)",
            &[&100i32, &None::<String>],
        )
        .await
        .unwrap();
    let row = client
        .query_one("SELECT name, score FROM m WHERE id = $1", &[&100i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0), None);
    assert_eq!(row.get::<_, Option<f64>>(1), None);

    // A statement prepared once runs many times; UPDATE/DELETE report their counts.
    let update = client
        .prepare("UPDATE m SET score = score + $1 WHERE id < $2")
        .await
        .unwrap();
    assert_eq!(client.execute(&update, &[&1.0f64, &5i32]).await.unwrap(), 5);
    assert_eq!(
        client.execute("DELETE FROM m WHERE ok", &[]).await.unwrap(),
        10
    );
    let count: i64 = client
        .query_one("SELECT count(*) FROM m", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 11);

    // Simple protocol returns text.
    let rows = client
        .simple_query("SELECT 1.5::DOUBLE PRECISION, true, NULL::INT")
        .await
        .unwrap();
    let tokio_postgres::SimpleQueryMessage::Row(row) = &rows[1] else {
        panic!("expected a row, got {:?}", rows.len());
    };
    assert_eq!(row.get(0), Some("1.5"));
    assert_eq!(row.get(1), Some("t"));
    assert_eq!(row.get(2), None);
}

#[tokio::test]
async fn errors_keep_the_session_usable() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    let e = client.simple_query("SELEC 1").await.unwrap_err();
    assert_eq!(db_error(&e).0, "42601");
    let e = client.query("SELECT * FROM nope", &[]).await.unwrap_err();
    assert_eq!(db_error(&e).0, "42P01");
    let e = client
        .prepare("SELECT nope FROM (SELECT 1 AS a) t")
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).0, "42703");
    let row = client.query_one("SELECT 41 + 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i64>(0), 42);
}

#[tokio::test]
async fn unknown_database_is_refused_with_3d000() {
    let server = TestServer::start().await;
    let err = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user=sluice dbname=other",
            server.port()
        ),
        tokio_postgres::NoTls,
    )
    .await
    .err()
    .expect("connection refused");
    assert_eq!(db_error(&err).0, "3D000");
}

#[tokio::test]
async fn a_malformed_message_closes_only_its_connection() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    client
        .batch_execute("CREATE TABLE x (a INT)")
        .await
        .unwrap();
    // A startup packet claiming an absurd length, then garbage.
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .unwrap();
    raw.write_all(&[0x7f, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8])
        .await
        .unwrap();
    let _ = raw.shutdown().await;
    drop(raw);
    let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    drop(raw);
    client
        .batch_execute("INSERT INTO x VALUES (1)")
        .await
        .unwrap();
    let other = server.connect().await;
    let n: i64 = other
        .query_one("SELECT count(*) FROM x", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

fn psql(port: u16, args: &[&str], stdin: &str) -> (String, String, bool) {
    let mut child = Command::new("psql")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "sluice",
            "-d",
            "sluice",
        ])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql is installed (bash .ci/run installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write to psql");
    let out = child.wait_with_output().expect("psql runs");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_creates_inserts_queries_and_describes() {
    let server = TestServer::start().await;
    let port = server.port();
    let script = "\
CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR NOT NULL, price NUMERIC(10,2), at TIMESTAMP);
INSERT INTO t VALUES (1, 'tea', 3.50, '2026-01-01 08:00:00'), (2, 'coffee', 4.25, NULL);
SELECT * FROM t ORDER BY id;
SELECT name, price FROM t WHERE price > 4;
\\d t
\\dt
\\l
";
    let (out, err, ok) = tokio::task::spawn_blocking(move || psql(port, &[], script))
        .await
        .unwrap();
    assert!(ok, "psql failed: {err}\n{out}");
    assert!(err.is_empty(), "psql printed errors: {err}");
    let expected_select = "\
 id |  name  | price |         at          
----+--------+-------+---------------------
  1 | tea    |  3.50 | 2026-01-01 08:00:00
  2 | coffee |  4.25 | 
(2 rows)
";
    assert!(
        out.contains(expected_select),
        "unexpected SELECT output:\n{out}"
    );
    let expected_describe = "\
                            Table \"public.t\"
 Column |            Type             | Collation | Nullable | Default 
--------+-----------------------------+-----------+----------+---------
 id     | integer                     |           | not null | 
 name   | character varying           |           | not null | 
 price  | numeric(10,2)               |           |          | 
 at     | timestamp without time zone |           |          | 
Indexes:
    \"t_pkey\" PRIMARY KEY, btree (id)
";
    assert!(
        out.contains(expected_describe),
        "unexpected \\d output:\n{out}"
    );
    let expected_dt = "\
        List of relations
 Schema | Name | Type  | Owner  
--------+------+-------+--------
 public | t    | table | sluice
(1 row)
";
    assert!(out.contains(expected_dt), "unexpected \\dt output:\n{out}");
    assert!(
        out.contains(" sluice | sluice | UTF8     | C.UTF-8"),
        "unexpected \\l output:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_lists_and_describes_materialized_views() {
    let server = TestServer::start().await;
    let port = server.port();
    let script = "\
CREATE TABLE clicks (uid INT, ts TIMESTAMP);
INSERT INTO clicks VALUES (1, '2026-01-01 00:00:01'), (1, '2026-01-01 00:00:02'), (2, '2026-01-01 00:00:03');
CREATE MATERIALIZED VIEW per_user AS SELECT uid, count(*) AS clicks FROM clicks GROUP BY uid;
SELECT * FROM per_user ORDER BY uid;
\\dm
\\d per_user
";
    let (out, err, ok) = tokio::task::spawn_blocking(move || psql(port, &[], script))
        .await
        .unwrap();
    assert!(ok, "psql failed: {err}\n{out}");
    assert!(err.is_empty(), "psql printed errors: {err}");
    let expected_select = "\
 uid | clicks 
-----+--------
   1 |      2
   2 |      1
(2 rows)
";
    assert!(
        out.contains(expected_select),
        "unexpected SELECT output:\n{out}"
    );
    let expected_dm = "\
                List of relations
 Schema |   Name   |       Type        | Owner  
--------+----------+-------------------+--------
 public | per_user | materialized view | sluice
(1 row)
";
    assert!(out.contains(expected_dm), "unexpected \\dm output:\n{out}");
    let expected_describe = "\
   Materialized view \"public.per_user\"
 Column |  Type   | Collation | Nullable | Default 
--------+---------+-----------+----------+---------
 uid    | integer |           |          | 
 clicks | bigint  |           |          | 
";
    assert!(
        out.contains(expected_describe),
        "unexpected \\d output:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_copy_from_stdin_and_errors() {
    let server = TestServer::start().await;
    let port = server.port();
    let script = "\
CREATE TABLE c (a INT, b TEXT, d DATE);
COPY c FROM STDIN WITH (FORMAT csv);
1,\"x, y\",2026-01-02
2,,2026-01-03
\\.
COPY c (b, a) FROM STDIN;
tab\\there\t3
\\N\t4
\\.
SELECT a, b, d FROM c ORDER BY a;
SELECT * FROM missing;
SELECT count(*) AS n FROM c;
";
    let (out, err, _) = tokio::task::spawn_blocking(move || psql(port, &[], script))
        .await
        .unwrap();
    assert!(
        out.contains("COPY 2\nCOPY 2\n"),
        "COPY tags missing:\n{out}\n{err}"
    );
    assert!(
        out.contains(" 1 | x, y         | 2026-01-02"),
        "csv row:\n{out}"
    );
    assert!(
        out.contains(" 2 |              | 2026-01-03"),
        "csv NULL:\n{out}"
    );
    assert!(
        out.contains(" 3 | tab     here | \n"),
        "text row with an escaped tab:\n{out}"
    );
    assert!(
        err.contains("ERROR:  relation \"missing\" does not exist") || err.contains("missing"),
        "error for a missing table:\n{err}"
    );
    assert!(
        out.contains(" n \n---\n 4\n"),
        "the session went on after the error:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_round_trip() {
    let server = TestServer::start().await;
    let out = common::run_python_client("psycopg_client.py", server.port()).await;
    assert!(out.contains("psycopg ok"));
}

/// `COPY table|(query) TO STDOUT` in text and CSV (header, delimiter, NULL and quoting as
/// PostgreSQL writes them), psql's `\copy … to` a file and back, and tokio-postgres's
/// `copy_out`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_to_stdout_in_text_and_csv() {
    let server = TestServer::start().await;
    let port = server.port();
    let file = server.data_dir().join("out.csv");
    let script = format!(
        "\
CREATE TABLE c (a INT, b TEXT, d DATE);
INSERT INTO c VALUES (1, 'x, \"y\"', '2026-01-02'), (2, NULL, '2026-01-03'), (3, 'back\\slash', NULL), (4, E'tab\\there', '2026-01-04');
COPY c TO STDOUT;
COPY (SELECT a, b FROM c WHERE a > 1 ORDER BY a) TO STDOUT WITH (FORMAT csv, HEADER);
COPY c (b, a) TO STDOUT WITH (DELIMITER '|');
\\copy c to '{file}' csv header
CREATE TABLE c2 (a INT, b TEXT, d DATE);
\\copy c2 from '{file}' csv header
SELECT count(*) FROM c2;
SELECT count(*) FROM (SELECT a, b, d FROM c2 INTERSECT SELECT a, b, d FROM c) AS same WHERE a <> 3;
",
        file = file.display()
    );
    let (out, err, ok) = tokio::task::spawn_blocking(move || psql(port, &["-qAt"], &script))
        .await
        .unwrap();
    assert!(ok && err.is_empty(), "psql failed: {err}\n{out}");
    let expected = "\
1\tx, \"y\"\t2026-01-02
2\t\\N\t2026-01-03
3\tback\\\\slash\t\\N
4\ttab\\there\t2026-01-04
a,b
2,
3,back\\slash
4,tab\there
x, \"y\"|1
\\N|2
back\\\\slash|3
tab\\there|4
4
3
";
    assert_eq!(out, expected);
    let csv = std::fs::read_to_string(&file).unwrap();
    assert!(
        csv.starts_with("a,b,d\n1,\"x, \"\"y\"\"\",2026-01-02\n"),
        "{csv}"
    );

    // tokio-postgres: COPY out of a query, the rows as one byte stream.
    let client = server.connect().await;
    let stream = client
        .copy_out("COPY (SELECT a, d FROM c ORDER BY a) TO STDOUT WITH (FORMAT csv)")
        .await
        .unwrap();
    let chunks: Vec<bytes::Bytes> = futures::TryStreamExt::try_collect(stream).await.unwrap();
    let text: String = chunks
        .iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    assert_eq!(text, "1,2026-01-02\n2,2026-01-03\n3,\n4,2026-01-04\n");
    let err = client
        .copy_out("COPY nowhere TO STDOUT")
        .await
        .err()
        .expect("an error");
    assert_eq!(db_error(&err).0, "42P01");
}

/// Output columns are named as PostgreSQL names them (`count`, `int4`, `?column?`, `case`),
/// in queries and in a view's columns; `'\x…'::bytea` is hex input.
#[tokio::test]
async fn columns_are_named_as_postgres_names_them() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE t (k INT, v INT);
             INSERT INTO t VALUES (1, 2), (1, 3), (2, 5);
             CREATE MATERIALIZED VIEW mv AS SELECT k, count(*), sum(v), max(v)::text FROM t GROUP BY k;",
        )
        .await
        .unwrap();
    let names = |rows: &[tokio_postgres::Row]| -> Vec<String> {
        rows[0]
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect()
    };
    let rows = client
        .query(
            "SELECT k, count(*), sum(v) AS total, 1::int, 'x'::text, now() IS NOT NULL, \
             coalesce(v, 0), CASE WHEN k > 1 THEN 1 END FROM t GROUP BY k, v LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        names(&rows),
        [
            "k", "count", "total", "int4", "text", "?column?", "coalesce", "case"
        ]
    );
    let rows = client.query("SELECT * FROM mv", &[]).await.unwrap();
    assert_eq!(names(&rows), ["k", "count", "sum", "max"]);
    // Duplicate names, as PostgreSQL allows them.
    let rows = client
        .query(
            "SELECT count(*), count(v), 1 AS a, 2 AS a, k, k, 1, 2 FROM t GROUP BY k",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        names(&rows),
        ["count", "count", "a", "a", "k", "k", "?column?", "?column?"]
    );
    // An integer literal as a column is int4, as in PostgreSQL.
    assert_eq!(rows[0].get::<_, i32>(3), 2);
    let literals = client
        .prepare("SELECT 1, -2 AS n, 3000000000, 1 + 1")
        .await
        .unwrap();
    let types: Vec<_> = literals
        .columns()
        .iter()
        .map(|c| c.type_().clone())
        .collect();
    assert_eq!(
        types,
        [
            tokio_postgres::types::Type::INT4,
            tokio_postgres::types::Type::INT4,
            tokio_postgres::types::Type::INT8,
            tokio_postgres::types::Type::INT8
        ]
    );
    let bytes: Vec<u8> = client
        .query_one("SELECT '\\x0102ff'::bytea", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(bytes, [1, 2, 255]);
}

/// psql's meta-commands print as they print against PostgreSQL: the same script runs against
/// the machine's PostgreSQL (the oracle) and against Sluice, and the outputs are equal but for
/// the owner's name. `\du`, `\df` and `\dp`, whose rows differ by design (roles, functions),
/// must run without an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_meta_commands_print_as_postgresql_prints_them() {
    let script = "\
CREATE TABLE t (k INT PRIMARY KEY, v TEXT, n NUMERIC(10,2), at TIMESTAMP);
CREATE MATERIALIZED VIEW mv AS SELECT k, count(*) FROM t GROUP BY k;
\\d t
\\d+ t
\\d mv
\\dt
\\dm
\\di
\\dn
\\df
\\dv
\\x
SELECT 1 AS one, 'two' AS two;
\\x
";
    let database = format!("sluice_meta_{}", std::process::id());
    let admin = |sql: String| {
        Command::new("psql")
            .args([
                "-X",
                "-q",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-c", &sql])
            .output()
    };
    match admin(format!("CREATE DATABASE {database}")) {
        Ok(out) if out.status.success() => {}
        other => {
            eprintln!(
                "SKIPPED psql_meta_commands_print_as_postgresql_prints_them: no PostgreSQL at 127.0.0.1:5432 ({other:?})"
            );
            return;
        }
    }
    let run = |args: Vec<String>, owner: &str| -> String {
        let out = Command::new("psql")
            .args(["-X", "-q", "-A", "-v", "ON_ERROR_STOP=1"])
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(script.as_bytes())?;
                child.wait_with_output()
            })
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .replace("pg_database_owner", "OWNER")
            .replace(owner, "OWNER")
    };
    let postgres = tokio::task::spawn_blocking({
        let database = database.clone();
        move || {
            let args = ["-h", "127.0.0.1", "-U", "postgres", "-d", database.as_str()];
            run(args.iter().map(|a| a.to_string()).collect(), "postgres")
        }
    })
    .await
    .unwrap();
    if let Err(e) = admin(format!("DROP DATABASE {database}")) {
        eprintln!("could not drop {database}: {e}");
    }
    let server = TestServer::start().await;
    let port = server.port().to_string();
    let sluice = tokio::task::spawn_blocking(move || {
        let args = [
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "sluice",
            "-d",
            "sluice",
        ];
        run(args.iter().map(|a| a.to_string()).collect(), "sluice")
    })
    .await
    .unwrap();
    assert!(
        postgres.contains("Materialized view \"public.mv\""),
        "{postgres}"
    );
    assert_eq!(
        sluice, postgres,
        "Sluice:\n{sluice}\nPostgreSQL:\n{postgres}"
    );
    let port = server.port();
    let (out, err, ok) = tokio::task::spawn_blocking(move || {
        psql(
            port,
            &["-v", "ON_ERROR_STOP=1"],
            "\\du\n\\df\n\\dp\n\\dn+\n",
        )
    })
    .await
    .unwrap();
    assert!(ok && err.is_empty(), "{err}\n{out}");
    assert!(
        out.contains("List of roles") && out.contains("Access privileges"),
        "{out}"
    );
}

/// `COPY … TO STDOUT (FORMAT binary)` is byte for byte what the machine's PostgreSQL sends for
/// the same rows (NULLs, integers, floats, text, timestamps, booleans, numerics, dates); those
/// bytes loaded by binary `COPY … FROM` read back the same.
#[tokio::test]
async fn binary_copy_out_equals_postgresql() {
    let setup = "CREATE TABLE b (a INT, b TEXT, c DOUBLE PRECISION, d TIMESTAMP, e BOOLEAN, \
                 f BIGINT, g NUMERIC(10,2), h DATE);
                 INSERT INTO b VALUES (1, 'x', 1.5, '2026-01-02 03:04:05.123456', true, 9000000000, 12.34, '2026-01-02'),
                   (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL), (-3, 'ünï', -0.25, '1999-12-31 23:59:59', false, -1, -0.5, '1970-01-01');";
    let copy = "COPY (SELECT * FROM b ORDER BY a) TO STDOUT (FORMAT binary)";
    let read = |client: tokio_postgres::Client| async move {
        let stream = client.copy_out(copy).await.unwrap();
        let chunks: Vec<bytes::Bytes> = futures::TryStreamExt::try_collect(stream).await.unwrap();
        chunks.concat()
    };
    let postgres = match tokio_postgres::connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=postgres",
        tokio_postgres::NoTls,
    )
    .await
    {
        Ok((client, connection)) => {
            tokio::spawn(connection);
            client
        }
        Err(e) => {
            eprintln!(
                "SKIPPED binary_copy_out_equals_postgresql: no PostgreSQL at 127.0.0.1:5432 ({e})"
            );
            return;
        }
    };
    let schema = format!("sluice_binary_{}", std::process::id());
    postgres
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; SET search_path = {schema}; {setup}"
        ))
        .await
        .unwrap();
    let expected = read(postgres).await;
    let (cleanup, connection) = tokio_postgres::connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=postgres",
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    cleanup
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();

    let server = TestServer::start().await;
    let client = server.connect().await;
    client.batch_execute(setup).await.unwrap();
    let got = read(server.connect().await).await;
    assert!(expected.starts_with(b"PGCOPY\n\xff\r\n\0") && expected.len() > 100);
    assert_eq!(
        got, expected,
        "\nSluice:     {got:02x?}\nPostgreSQL: {expected:02x?}"
    );
    // PostgreSQL's binary rows loaded into an empty table by binary COPY FROM, in pieces of
    // 5 bytes, come out the same again.
    client.batch_execute("DELETE FROM b").await.unwrap();
    let sink = client
        .copy_in::<_, bytes::Bytes>("COPY b FROM STDIN (FORMAT binary)")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    for piece in expected.chunks(5) {
        futures::SinkExt::send(&mut sink, bytes::Bytes::copy_from_slice(piece))
            .await
            .unwrap();
    }
    assert_eq!(sink.finish().await.unwrap(), 3);
    let again = read(server.connect().await).await;
    assert_eq!(again, expected, "after binary COPY FROM");
}

/// What BI tools and IDEs (DBeaver, Metabase, Grafana) probe at connect: catalog relations
/// and functions answer as PostgreSQL answers them.
#[tokio::test]
async fn catalog_probes_of_bi_tools() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE t (k INT PRIMARY KEY, v TEXT);
             INSERT INTO t VALUES (1, 'a'), (2, 'b');
             CREATE MATERIALIZED VIEW mv AS SELECT k, count(*) FROM t GROUP BY k;",
        )
        .await
        .unwrap();
    let one = |sql: &'static str| {
        let client = &client;
        async move {
            let row = client
                .query_one(sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            (0..row.len())
                .map(|i| {
                    row.try_get::<_, Option<String>>(i)
                        .map(|v| v.unwrap_or_else(|| "NULL".into()))
                        .or_else(|_| row.try_get::<_, i64>(i).map(|v| v.to_string()))
                        .or_else(|_| row.try_get::<_, bool>(i).map(|v| v.to_string()))
                        .unwrap_or_else(|e| panic!("{sql}: column {i}: {e}"))
                })
                .collect::<Vec<String>>()
        }
    };
    assert_eq!(
        one("SELECT pg_typeof('a'::text), pg_typeof(now())").await,
        ["text", "timestamp with time zone"]
    );
    assert_eq!(
        one("SELECT matviewname, definition, ispopulated FROM pg_matviews").await,
        ["mv", "SELECT k, count(*) FROM t GROUP BY k", "true"]
    );
    assert_eq!(
        one("SELECT pg_get_viewdef('mv'::regclass)").await,
        ["SELECT k, count(*) FROM t GROUP BY k"]
    );
    assert_eq!(
        one("SELECT relname, n_live_tup FROM pg_stat_user_tables").await,
        ["t", "2"]
    );
    assert_eq!(one("SELECT count(*) FROM pg_locks").await, ["0"]);
    assert_eq!(one("SELECT (SELECT count(*) FROM pg_trigger)").await, ["0"]);
    assert_eq!(
        one("SELECT quote_ident('A b'), quote_ident('ab')").await,
        ["\"A b\"", "ab"]
    );
    assert_eq!(
        one("SELECT to_regclass('mv') IS NOT NULL, to_regclass('nope') IS NULL, to_regtype('int4') IS NOT NULL").await,
        ["true", "true", "true"]
    );
    assert_eq!(
        one("SELECT 'a_b' LIKE 'a\\_b' ESCAPE '\\', 'axb' LIKE 'a\\_b' ESCAPE '\\'").await,
        ["true", "false"]
    );
    assert_eq!(
        one("SELECT current_setting('server_encoding'), current_setting('nope', true)").await,
        ["UTF8", "NULL"]
    );
    let (oid, relkind) = {
        let row = client
            .query_one(
                "SELECT oid::bigint, relkind FROM pg_class WHERE relname = 'mv'",
                &[],
            )
            .await
            .unwrap();
        (row.get::<_, i64>(0), row.get::<_, String>(1))
    };
    let regclass: i64 = client
        .query_one("SELECT 'mv'::regclass::oid::bigint", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!((regclass, relkind.as_str()), (oid, "m"));
}

/// asyncpg: parameters typed by their casts, prepared statements, cursors on a SELECT and on
/// SUBSCRIBE (a row limit per Execute, the portal suspended between fetches).
#[tokio::test]
async fn asyncpg_parameters_and_cursors() {
    let server = TestServer::start().await;
    let out = common::run_python_client("asyncpg_client.py", server.port()).await;
    assert!(out.contains(" ok"), "{out}");
    eprintln!("{}", out.trim());
}

/// psycopg 3 writes rows by binary COPY into Sluice and into PostgreSQL: both read back alike;
/// damaged binary data is refused with 22P04 and loses nothing already loaded.
#[tokio::test]
async fn psycopg_binary_copy_from_equals_postgresql() {
    let server = TestServer::start().await;
    let out = common::run_python_client("psycopg_binary_copy.py", server.port()).await;
    assert!(out.contains("binary copy ok"), "{out}");
    eprintln!("{}", out.trim());
}

/// pgcli: its start-up introspection (every completion refresher it runs on connecting), the
/// completions it then offers for tables, views and columns, and the functions it learnt.
#[tokio::test]
async fn pgcli_completes_after_its_start_up_introspection() {
    let server = TestServer::start().await;
    let out = common::run_python_client("pgcli_client.py", server.port()).await;
    assert!(out.contains("pgcli ok"), "{out}");
}

/// node-postgres (`pg`): parameterized and named statements, row counts, typed results, a
/// savepoint, a view, errors with their SQLSTATE.
#[tokio::test]
async fn node_postgres_queries_and_errors() {
    let modules = std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default())
        .join(".cache/sluice-node/node_modules");
    if !modules.join("pg").exists() || Command::new("node").arg("--version").output().is_err() {
        // .ci/run installs it (npm install --prefix ~/.cache/sluice-node pg@8).
        eprintln!(
            "SKIPPED node_postgres_queries_and_errors: no node or no {}",
            modules.join("pg").display()
        );
        return;
    }
    let server = TestServer::start().await;
    let port = server.port();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/clients/node_pg_client.js"
            ))
            .arg(port.to_string())
            .env("NODE_PATH", &modules)
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("node-postgres ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// SQLAlchemy 2 with default settings (connect, Core, reflection, savepoints), pandas
/// `read_sql` of a view, and psycopg's transaction helpers and `TypeInfo`.
#[tokio::test]
async fn sqlalchemy_pandas_and_psycopg_transactions() {
    let server = TestServer::start().await;
    let out = common::run_python_client("sqlalchemy_client.py", server.port()).await;
    assert!(out.contains(" ok"), "{out}");
    eprintln!("{}", out.trim());
}

/// The frames of one backend message stream, as (type byte, body), read until ReadyForQuery.
async fn read_until_ready(socket: &mut tokio::net::TcpStream) -> Vec<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut messages = Vec::new();
    loop {
        let kind = socket.read_u8().await.expect("a message");
        let len = socket.read_u32().await.expect("a length") as usize;
        let mut body = vec![0; len - 4];
        socket.read_exact(&mut body).await.expect("a body");
        messages.push((kind, body));
        if kind == b'Z' {
            return messages;
        }
    }
}

/// A frontend message: type byte, length, body.
fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Describe of a prepared statement, on the wire as PostgreSQL answers it: parameters and
/// `NoData` for an INSERT (pgwire alone sent an empty RowDescription), parameters and a
/// RowDescription for a query.
#[tokio::test]
async fn describe_answers_no_data_for_a_statement_without_rows() {
    let server = TestServer::start().await;
    server
        .connect()
        .await
        .batch_execute("CREATE TABLE d (id INT PRIMARY KEY, v TEXT)")
        .await
        .unwrap();
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .unwrap();
    let mut startup = Vec::new();
    startup.extend_from_slice(&196_608u32.to_be_bytes());
    startup.extend_from_slice(b"user\0sluice\0database\0sluice\0\0");
    let mut message = (startup.len() as u32 + 4).to_be_bytes().to_vec();
    message.extend_from_slice(&startup);
    socket.write_all(&message).await.unwrap();
    read_until_ready(&mut socket).await;
    let types = |messages: &[(u8, Vec<u8>)]| -> String {
        messages.iter().map(|(k, _)| *k as char).collect()
    };
    for (sql, expected) in [
        ("INSERT INTO d VALUES ($1, $2)", "1tnZ"),
        ("DELETE FROM d WHERE id = $1", "1tnZ"),
        ("SELECT v FROM d WHERE id = $1", "1tTZ"),
    ] {
        let mut parse = b"s1\0".to_vec();
        parse.extend_from_slice(sql.as_bytes());
        parse.extend_from_slice(&[0, 0, 0]);
        let mut request = frame(b'P', &parse);
        request.extend(frame(b'D', b"Ss1\0"));
        request.extend(frame(b'S', b""));
        socket.write_all(&request).await.unwrap();
        let answer = read_until_ready(&mut socket).await;
        assert_eq!(types(&answer), expected, "{sql}");
        let mut close = frame(b'C', b"Ss1\0");
        close.extend(frame(b'S', b""));
        socket.write_all(&close).await.unwrap();
        read_until_ready(&mut socket).await;
    }
}

/// pgJDBC, as a Java program compiled here: `executeUpdate` on a prepared INSERT (Describe
/// answers NoData), queries with parameters, SQLSTATEs, `getTables`, `getColumns`,
/// `getTypeInfo`.
#[tokio::test]
async fn pgjdbc_prepared_statements_and_metadata() {
    let jar = "/usr/share/java/postgresql.jar";
    let javac = Command::new("javac").arg("-version").output();
    if !std::path::Path::new(jar).exists() || javac.is_err() {
        // .ci/run installs both (Debian's libpostgresql-jdbc-java and a JDK).
        eprintln!("SKIPPED pgjdbc_prepared_statements_and_metadata: no {jar} or no javac");
        return;
    }
    let server = TestServer::start().await;
    let port = server.port();
    let classes = tempfile::tempdir().unwrap();
    let out = classes.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/JdbcClient.java");
        let compiled = Command::new("javac")
            .args(["-d", &out.display().to_string(), source])
            .output()
            .expect("javac runs");
        assert!(
            compiled.status.success(),
            "javac: {}",
            String::from_utf8_lossy(&compiled.stderr)
        );
        Command::new("java")
            .args(["-cp", &format!("{jar}:{}", out.display()), "JdbcClient"])
            .arg(port.to_string())
            .output()
            .expect("java runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("pgjdbc ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{}", stdout.trim());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_runs_in_psql() {
    let server = TestServer::start().await;
    let port = server.port();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/bids.sql");
    let (out, err, ok) = tokio::task::spawn_blocking(move || {
        psql(port, &["-v", "ON_ERROR_STOP=1", "-f", example], "")
    })
    .await
    .unwrap();
    assert!(
        ok && err.is_empty(),
        "examples/bids.sql failed: {err}\n{out}"
    );
    assert!(
        out.contains("    1000 | 2026-01-01 00:00:00 |    2 |  175"),
        "{out}"
    );
}

/// SQL-level `PREPARE`, `EXECUTE` and `DEALLOCATE`, as psql users type them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prepare_execute_and_deallocate() {
    let server = TestServer::start().await;
    let port = server.port();
    let script = "\
CREATE TABLE t (k INT PRIMARY KEY, v TEXT);
PREPARE ins (INT, TEXT) AS INSERT INTO t VALUES ($1, $2);
EXECUTE ins(1, 'a');
EXECUTE ins(2, 'b');
PREPARE q (INT) AS SELECT k, v FROM t WHERE k >= $1 ORDER BY k;
EXECUTE q(2);
DEALLOCATE q;
EXECUTE q(1);
DEALLOCATE ALL;
EXECUTE ins(3, 'c');
SELECT count(*) FROM t;
";
    let (out, err, _) = tokio::task::spawn_blocking(move || psql(port, &["-qAt"], script))
        .await
        .unwrap();
    assert_eq!(out, "2|b\n2\n", "{err}");
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        [
            "ERROR:  prepared statement \"q\" does not exist",
            "ERROR:  prepared statement \"ins\" does not exist",
        ]
    );
    let client = server.connect().await;
    let e = client.batch_execute("EXECUTE nope(1)").await.unwrap_err();
    assert_eq!(db_error(&e).0, "26000");
}

/// `INSERT … RETURNING`: the inserted rows, through expressions and `*`, with the columns
/// left out NULL; the simple and the extended protocol; errors as PostgreSQL names them.
#[tokio::test]
async fn insert_returning() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE r (id INT PRIMARY KEY, name TEXT NOT NULL, score DOUBLE PRECISION)",
        )
        .await
        .unwrap();
    let rows = client
        .query(
            "INSERT INTO r VALUES ($1, $2, $3), (2, 'b', 2) RETURNING id, upper(name) AS n, r.score * 2",
            &[&1i32, &"a", &1.5f64],
        )
        .await
        .unwrap();
    let got: Vec<(i32, String, f64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(got, [(1, "A".to_string(), 3.0), (2, "B".to_string(), 4.0)]);
    assert_eq!(rows[0].columns()[1].name(), "n");
    let all = client
        .simple_query("INSERT INTO r (id, name) VALUES (3, 'c') RETURNING *")
        .await
        .unwrap();
    let row = all
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some((r.get(0), r.get(1), r.get(2))),
            _ => None,
        })
        .expect("a row");
    assert_eq!(row, (Some("3"), Some("c"), None));
    assert_eq!(
        common::sorted_rows(&client, "SELECT id FROM r").await,
        ["1", "2", "3"]
    );
    let e = client
        .batch_execute("INSERT INTO r (id) VALUES (4) RETURNING id")
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).0, "23502");
    let e = client
        .batch_execute("INSERT INTO r (id, nope) VALUES (4, 1) RETURNING id")
        .await
        .unwrap_err();
    assert_eq!(db_error(&e).0, "42703");
    assert_eq!(
        common::sorted_rows(&client, "SELECT id FROM r").await,
        ["1", "2", "3"]
    );
    // Fewer values than columns fill the first ones, with or without RETURNING.
    client
        .execute("INSERT INTO r VALUES ($1, $2)", &[&20i32, &"t"])
        .await
        .unwrap();
    let row = client
        .query_one("SELECT name, score IS NULL FROM r WHERE id = 20", &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, bool>(1)),
        ("t".into(), true)
    );
    // psql prints the rows, then the tag PostgreSQL gives: INSERT 0 n.
    let port = server.port();
    let (out, err, ok) = tokio::task::spawn_blocking(move || {
        psql(
            port,
            &[],
            "INSERT INTO r VALUES (7, 'g'), (8, 'h') RETURNING id;\n",
        )
    })
    .await
    .unwrap();
    assert!(ok && err.is_empty(), "{err}");
    assert_eq!(out, " id \n----\n  7\n  8\n(2 rows)\n\nINSERT 0 2\n");
}
