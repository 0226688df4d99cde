//! Monitoring: `--metrics-listen` serves the Prometheus metrics of a running pipeline, a real
//! Prometheus (Debian's `prometheus`) scrapes them, and the same facts are in SQL.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` over a fresh connection: the status code and the body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

async fn http_request(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
    socket.write_all(request.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), socket.read_to_end(&mut response))
        .await
        .expect("an answer within 30 s")
        .expect("read");
    let text = String::from_utf8(response).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    // Chunked bodies (Prometheus's API) are joined.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            if size == 0 {
                break;
            }
            out.push_str(&after[..size]);
            rest = &after[size + 2..];
        }
        out
    } else {
        body.to_string()
    };
    (status, body)
}

/// The value of the sample written exactly `series` (name and labels as Sluice writes them).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.parse().ok()
    })
}

/// Where a server started with [`metrics_config`] serves `/metrics`.
fn metrics_addr(server: &TestServer) -> SocketAddr {
    server
        .server
        .as_ref()
        .and_then(|s| s.metrics_addr)
        .expect("metrics address")
}

fn metrics_config(config: &mut sluice::Config) {
    config.metrics_listen = Some("127.0.0.1:0".parse().expect("address"));
    config.barrier_interval = Duration::from_millis(50);
    config.checkpoint_interval = Some(Duration::from_millis(200));
}

/// A file source with good and bad lines, a view over it and a statement or two: the
/// endpoint's counters equal what happened, byte for byte.
#[tokio::test]
async fn metrics_count_what_a_pipeline_did() {
    let server = TestServer::start_with(metrics_config).await;
    let addr = metrics_addr(&server);
    let files = server.data_dir().join("files");
    let mut csv = String::new();
    let mut good = 0u64;
    for i in 0..500u64 {
        if i % 50 == 7 {
            csv.push_str("not a number,x\n");
        } else {
            csv.push_str(&format!("{},{}\n", i % 13, i));
            good += 1;
        }
    }
    std::fs::write(files.join("in.csv"), &csv).unwrap();
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE SOURCE replay (k BIGINT, v BIGINT) WITH (connector = 'file', path = 'in.csv') \
             FORMAT PLAIN ENCODE CSV (without_header = 'true');
             CREATE MATERIALIZED VIEW totals AS SELECT k, sum(v) AS s FROM replay GROUP BY k;",
        )
        .await
        .unwrap();
    // Wait until the source finished and the view holds every group.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status: String = client
            .query_one(
                "SELECT status FROM sluice_sources WHERE source_name = 'replay'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        client.batch_execute("FLUSH").await.unwrap();
        let groups: i64 = client
            .query_one("SELECT count(*) FROM totals", &[])
            .await
            .unwrap()
            .get(0);
        if status == "finished" && groups == 13 {
            break;
        }
        assert!(Instant::now() < deadline, "the source did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (status, text) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        text.ends_with("# EOF\n"),
        "an OpenMetrics exposition ends with # EOF"
    );
    let source = r#"{source="replay",connector="file"}"#;
    assert_eq!(
        sample(&text, &format!("sluice_source_rows_total{source}")),
        Some(good as f64)
    );
    assert_eq!(
        sample(&text, &format!("sluice_source_bad_records_total{source}")),
        Some((500 - good) as f64)
    );
    assert_eq!(
        sample(
            &text,
            &format!("sluice_source_received_bytes_total{source}")
        ),
        Some(csv.len() as f64),
        "every byte of the file was received"
    );
    assert_eq!(
        sample(&text, &format!("sluice_source_up{source}")),
        Some(0.0)
    );
    let view = r#"{view="totals"}"#;
    assert!(sample(&text, &format!("sluice_view_state_rows{view}")).unwrap() >= 13.0);
    assert!(sample(&text, &format!("sluice_view_state_bytes{view}")).unwrap() > 0.0);
    assert_eq!(
        sample(&text, &format!("sluice_view_failed{view}")),
        Some(0.0)
    );
    let lag = sample(&text, &format!("sluice_view_lag_seconds{view}")).expect("a lag");
    assert!((0.0..60.0).contains(&lag), "lag {lag}");
    let epoch = sample(&text, "sluice_epoch").expect("an epoch");
    assert_eq!(
        sample(&text, &format!("sluice_view_epoch{view}")),
        Some(epoch)
    );
    assert!(sample(&text, "sluice_epochs_total").unwrap() > 0.0);
    assert!(sample(&text, "sluice_epoch_duration_seconds_count").unwrap() > 0.0);
    // One connection is open (this test's), and it ran statements of both kinds.
    assert_eq!(sample(&text, "sluice_connections_open"), Some(1.0));
    assert!(sample(&text, "sluice_connections_total").unwrap() >= 1.0);
    let reads = r#"sluice_statement_duration_seconds_count{kind="read"}"#;
    let read_count = sample(&text, reads).expect("reads timed");
    assert!(
        sample(
            &text,
            r#"sluice_statement_duration_seconds_count{kind="write"}"#
        )
        .unwrap()
            >= 2.0
    );
    assert!(sample(&text, "process_resident_memory_bytes").unwrap() > 1e6);
    assert!(sample(&text, "sluice_table_state_rows{table=\"replay\"}").is_some());

    // A checkpoint is taken within a few intervals: its duration and size show.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, text) = http_get(addr, "/metrics").await;
        if sample(&text, "sluice_checkpoint_duration_seconds_count").unwrap() > 0.0 {
            assert!(sample(&text, "sluice_checkpoint_size_bytes").unwrap() > 0.0);
            assert!(sample(&text, "sluice_checkpoint_written_bytes_total").unwrap() > 0.0);
            break;
        }
        assert!(Instant::now() < deadline, "no checkpoint was counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // One more query counts once more; a dropped connection is no longer open.
    client.query("SELECT * FROM totals", &[]).await.unwrap();
    let other = server.connect().await;
    let (_, text) = http_get(addr, "/metrics").await;
    assert_eq!(sample(&text, reads), Some(read_count + 1.0));
    assert_eq!(sample(&text, "sluice_connections_open"), Some(2.0));
    drop(other);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = http_get(addr, "/metrics").await;
        if sample(&text, "sluice_connections_open") == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed connection still counts"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Anything but GET /metrics gets a plain answer, and a flood of header bytes is refused.
    assert_eq!(http_get(addr, "/nope").await.0, 404);
    assert_eq!(
        http_request(addr, "DELETE /metrics HTTP/1.1\r\n\r\n")
            .await
            .0,
        405
    );
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    assert_eq!(http_request(addr, &huge).await.0, 431);
    // The endpoint is still there.
    let (status, text) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);

    // Every series the shipped Grafana dashboard queries is one Sluice serves.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("examples/monitoring/grafana-dashboard.json"),
        )
        .unwrap(),
    )
    .expect("the dashboard is JSON");
    let names = regex::Regex::new(r"\b(sluice|process)_[a-z_]+").unwrap();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("an expression");
            for name in names.find_iter(expr) {
                let name = name.as_str();
                let family = ["_bucket", "_total"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or(name);
                assert!(
                    text.contains(&format!("# TYPE {family} ")),
                    "the dashboard queries {name}, which Sluice does not serve"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 15, "{checked} series checked");
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Err(e) = self.0.kill() {
            eprintln!("could not kill prometheus: {e}");
        }
        if let Err(e) = self.0.wait() {
            eprintln!("could not reap prometheus: {e}");
        }
    }
}

/// Debian's `prometheus` scrapes Sluice on loopback; its query API returns the rows a source
/// wrote and a view's lag.
#[tokio::test]
async fn prometheus_scrapes_sluice() {
    let Some(prometheus) = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        // .ci/run installs it (Debian's `prometheus` package).
        eprintln!(
            "SKIPPED prometheus_scrapes_sluice: no prometheus binary (apt-get install prometheus)"
        );
        return;
    };
    let server = TestServer::start_with(metrics_config).await;
    let addr = metrics_addr(&server);
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE SOURCE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, \
             url VARCHAR, date_time TIMESTAMP, extra VARCHAR) \
             WITH (connector = 'nexmark', nexmark.table.type = 'bid', nexmark.event.num = '20000');
             CREATE MATERIALIZED VIEW per_auction AS SELECT auction, count(*) AS n FROM bid GROUP BY auction;",
        )
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    // The example's scrape configuration, as shipped but for the target and a faster scrape.
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/monitoring/prometheus.yml"),
    )
    .unwrap();
    assert!(shipped.contains("'127.0.0.1:9187'") && shipped.contains("scrape_interval: 5s"));
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        shipped
            .replace("'127.0.0.1:9187'", &format!("'{addr}'"))
            .replace("_interval: 5s", "_interval: 1s"),
    )
    .unwrap();
    let web: SocketAddr = format!("127.0.0.1:{}", common::process::free_port())
        .parse()
        .unwrap();
    let mut child = KillOnDrop(
        std::process::Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus starts"),
    );

    let query = |q: &str| format!("/api/v1/query?query={q}");
    let deadline = Instant::now() + Duration::from_secs(90);
    let (rows, lag) = loop {
        if let Ok(Some(status)) = child.0.try_wait() {
            let log =
                std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
            panic!("prometheus exited ({status}):\n{log}");
        }
        let value = |body: &str| -> Option<f64> {
            let json: serde_json::Value = serde_json::from_str(body).ok()?;
            let result = json["data"]["result"].as_array()?;
            result.first()?["value"][1].as_str()?.parse().ok()
        };
        let reachable = tokio::net::TcpStream::connect(web).await.is_ok();
        if reachable {
            let (_, rows) = http_get(
                web,
                &query("sluice_source_rows_total%7Bsource%3D%22bid%22%7D"),
            )
            .await;
            let (_, lag) = http_get(
                web,
                &query("sluice_view_lag_seconds%7Bview%3D%22per_auction%22%7D"),
            )
            .await;
            if let (Some(rows), Some(lag)) = (value(&rows), value(&lag))
                && rows > 0.0
            {
                break (rows, lag);
            }
        }
        if Instant::now() > deadline {
            let log =
                std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
            let (_, targets) = if reachable {
                http_get(web, "/api/v1/targets").await
            } else {
                (0, String::new())
            };
            panic!("prometheus has no sluice series after 90 s; targets: {targets}\nlog:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!(
        "prometheus: sluice_source_rows_total{{source=\"bid\"}} = {rows}, view lag = {lag} s"
    );
    assert!(rows > 0.0);
    assert!(lag >= 0.0);
    // The scrape itself is healthy: `up` is 1.
    let (_, up) = http_get(web, &query("up%7Bjob%3D%22sluice%22%7D")).await;
    assert!(up.contains(r#""1"]"#), "up: {up}");
}

/// A `CREATE MATERIALIZED VIEW` over a backlog shows its progress in `sluice_progress` (and
/// `SHOW JOBS`), tells psql how far it got in `NOTICE`s, and a cancel request undoes it: the
/// view is gone, and created again it holds what the batch query says.
#[tokio::test]
async fn backfill_progress_shows_and_cancel_undoes_the_view() {
    let server = TestServer::start_with(|c| {
        metrics_config(c);
        c.progress_notice_interval = Duration::from_millis(100);
    })
    .await;
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE SOURCE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, \
             url VARCHAR, date_time TIMESTAMP, extra VARCHAR) \
             WITH (connector = 'nexmark', nexmark.table.type = 'bid', nexmark.event.num = '2000000');",
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status: String = client
            .query_one("SELECT status FROM sluice_sources", &[])
            .await
            .unwrap()
            .get(0);
        if status == "finished" {
            break;
        }
        assert!(Instant::now() < deadline, "the generator did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let create = "CREATE MATERIALIZED VIEW per_bidder AS \
                  SELECT bidder, count(*) AS n, max(price) AS top FROM bid GROUP BY bidder";

    // Cancelled while it reads its backlog: the statement fails with 57014, the view is gone.
    let creator = server.connect().await;
    let cancel = creator.cancel_token();
    let running = tokio::spawn(async move { creator.batch_execute(create).await });
    let seen = loop {
        let rows = client
            .query(
                "SELECT records_done, records_total, rows_done, percent_done FROM sluice_progress \
                 WHERE view_name = 'per_bidder'",
                &[],
            )
            .await
            .unwrap();
        if let Some(row) = rows.first() {
            let (done, total): (i64, i64) = (row.get(0), row.get(1));
            if done > 0 {
                break (done, total, row.get::<_, i64>(2), row.get::<_, f64>(3));
            }
        }
        assert!(
            !running.is_finished(),
            "the view caught up before its progress was seen"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let (done, total, rows_done, percent) = seen;
    assert!(done <= total && rows_done >= done && (0.0..=100.0).contains(&percent));
    let status: String = client
        .query_one(
            "SELECT status FROM sluice_views WHERE view_name = 'per_bidder'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "backfilling");
    let jobs = client.simple_query("SHOW JOBS").await.unwrap();
    assert!(
        jobs.iter().any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("per_bidder"))),
        "SHOW JOBS lists the view"
    );
    cancel.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let err = running
        .await
        .unwrap()
        .expect_err("the cancelled CREATE fails");
    assert_eq!(common::db_error(&err).0, "57014", "{err}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let views = client
            .query("SELECT view_name FROM sluice_views", &[])
            .await
            .unwrap();
        let progress = client
            .query("SELECT * FROM sluice_progress", &[])
            .await
            .unwrap();
        if views.is_empty() && progress.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cancelled view is still there"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Created again through psql: NOTICEs of its progress, then the view equals its query.
    let port = server.port();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("psql")
            .args(["-X", "-h", "127.0.0.1", "-p", &port.to_string()])
            .args([
                "-U",
                "sluice",
                "-d",
                "sluice",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                create,
            ])
            .output()
            .expect("psql runs")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "psql: {stderr}");
    assert!(
        stderr.contains("NOTICE:  materialized view \"per_bidder\":")
            && stderr.contains("% of its backlog read ("),
        "no progress NOTICE: {stderr}"
    );
    let view = common::sorted_rows(&client, "SELECT bidder, n, top FROM per_bidder").await;
    let batch = common::sorted_rows(
        &client,
        "SELECT bidder, count(*), max(price) FROM bid GROUP BY bidder",
    )
    .await;
    assert!(!view.is_empty());
    assert_eq!(view, batch);
}

/// `pg_stat_activity` shows each connection that ran a statement: its pid (`pg_backend_pid()`),
/// user, application, what it runs now (`active`) or ran last (`idle`); a closed one leaves.
#[tokio::test]
async fn pg_stat_activity_shows_connections() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    let other = server.connect().await;
    other
        .batch_execute("CREATE TABLE a (k INT); SELECT count(*) FROM a")
        .await
        .unwrap();
    let other_pid: i32 = other
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let me = client
        .query_one(
            "SELECT pid, usename, state, query, client_addr FROM pg_stat_activity \
             WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(me.get::<_, String>(1), "sluice");
    assert_eq!(me.get::<_, String>(2), "active");
    assert!(me.get::<_, String>(3).contains("FROM pg_stat_activity"));
    assert_eq!(me.get::<_, String>(4), "127.0.0.1");
    assert_ne!(me.get::<_, i32>(0), other_pid);
    let them = client
        .query_one(
            "SELECT state, query FROM pg_stat_activity WHERE pid = $1",
            &[&other_pid],
        )
        .await
        .unwrap();
    assert_eq!(them.get::<_, String>(0), "idle");
    assert_eq!(them.get::<_, String>(1), "SELECT pg_backend_pid()");
    drop(other);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1",
                &[&other_pid],
            )
            .await
            .unwrap()
            .get(0);
        if n == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a closed connection is still shown"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `EXPLAIN ANALYZE MATERIALIZED VIEW v` prints the running view's graph with each node's rows
/// in and out (changes, inserts and deletes alike) and its state.
#[tokio::test]
async fn explain_analyze_counts_each_operators_rows() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    client
        .batch_execute(
            "CREATE TABLE t (k INT, v INT);
             INSERT INTO t VALUES (1, 2), (1, 3), (2, 5), (3, -1);
             CREATE MATERIALIZED VIEW mv AS SELECT k, count(*), sum(v) FROM t WHERE v > 0 GROUP BY k;
             DELETE FROM t WHERE k = 2;
             FLUSH;",
        )
        .await
        .unwrap();
    let rows = client
        .simple_query("EXPLAIN ANALYZE MATERIALIZED VIEW mv")
        .await
        .unwrap();
    let lines: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..5)
                    .map(|i| r.get(i).unwrap_or("").to_string())
                    .collect::<Vec<_>>()
                    .join(" | "),
            ),
            _ => None,
        })
        .collect();
    // 4 inserts then a delete reach the source; the filter drops (3, -1); the aggregate takes
    // 4 rows and emits k=1 and k=2, then k=2's retraction, keeping one group (k=1).
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert!(
        lines[0].starts_with("Project: ") && lines[0].ends_with(" | 3 | 3 |  | "),
        "{lines:#?}"
    );
    assert!(
        lines[1].starts_with("  GroupAggregate: keys=[t.k]"),
        "{lines:#?}"
    );
    assert!(lines[1].contains(" | 4 | 3 | 1 | "), "{lines:#?}");
    assert!(
        lines[2].starts_with("    Filter: ") && lines[2].ends_with(" | 5 | 4 |  | "),
        "{lines:#?}"
    );
    assert!(
        lines[3].starts_with("      Source: t ") && lines[3].ends_with(" | 5 | 5 |  | "),
        "{lines:#?}"
    );
}
