//! Kafka end to end against librdkafka's mock cluster (a real Kafka protocol server on
//! loopback): a 3-partition topic of events, some of them malformed, feeds a source; a HOP
//! view over it must equal the same query run as a batch SELECT; the malformed count must be
//! exact; an upsert sink's topic, read back, must rebuild the view. Once per encoding: JSON,
//! CSV and Avro (Confluent wire format).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio_postgres::Client;

use common::{TestServer, sorted_rows};

/// Base event time: 2026-01-01 00:00:00 UTC, in milliseconds.
const T0_MS: i64 = 1_767_225_600_000;
const EVENTS: usize = 3000;
const PARTITIONS: i32 = 3;

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Json,
    Csv,
    Avro,
    /// Avro whose writer schema comes from a schema registry.
    AvroRegistry,
}

const AVRO_SCHEMA: &str = r#"{"type":"record","name":"ev","fields":[{"name":"k","type":"int"},{"name":"v","type":"long"},{"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#;

fn zigzag(n: i64, out: &mut Vec<u8>) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    loop {
        let byte = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// One event's record; `bad` makes it malformed in a way of this encoding.
fn encode(enc: Encoding, k: i32, v: i64, ts_ms: i64, bad: u32) -> Vec<u8> {
    let ts = chrono::DateTime::from_timestamp_millis(ts_ms)
        .unwrap()
        .naive_utc()
        .format("%Y-%m-%d %H:%M:%S%.3f")
        .to_string();
    match (enc, bad) {
        (Encoding::Json, 0) => format!(r#"{{"k": {k}, "v": {v}, "ts": "{ts}"}}"#).into_bytes(),
        (Encoding::Json, 1) => format!(r#"{{"k": {k}, "v": {v}, "ts": "#).into_bytes(),
        (Encoding::Json, 2) => format!(r#"{{"k": "x{k}", "v": {v}, "ts": "{ts}"}}"#).into_bytes(),
        (Encoding::Json, _) => format!(r#"{{"v": {v}, "ts": "{ts}"}}"#).into_bytes(),
        (Encoding::Csv, 0) => format!("{k},{v},{ts}").into_bytes(),
        (Encoding::Csv, 1) => format!("{k},{v}").into_bytes(),
        (Encoding::Csv, 2) => format!("{k},not-a-number,{ts}").into_bytes(),
        (Encoding::Csv, _) => format!(",{v},{ts}").into_bytes(),
        (Encoding::Avro | Encoding::AvroRegistry, bad) => {
            let mut out = vec![0u8, 0, 0, 0, 7];
            zigzag(i64::from(k), &mut out);
            zigzag(v, &mut out);
            zigzag(ts_ms, &mut out);
            match bad {
                0 => out,
                1 => {
                    out.truncate(out.len() - 2);
                    out
                }
                // Not Confluent framing; with a registry, a schema id it does not know.
                2 if enc == Encoding::AvroRegistry => {
                    out[4] = 8;
                    out
                }
                2 => {
                    out[0] = 9;
                    out
                }
                _ => out[..3].to_vec(),
            }
        }
    }
}

/// A timestamp as PostgreSQL prints it: fractional seconds without trailing zeros.
fn pg_timestamp(ts_ms: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(ts_ms)
        .unwrap()
        .naive_utc();
    let whole = t.format("%Y-%m-%d %H:%M:%S").to_string();
    match ts_ms.rem_euclid(1000) {
        0 => whole,
        ms => format!("{whole}.{}", format!("{ms:03}").trim_end_matches('0')),
    }
}

fn producer(bootstrap: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("producer")
}

/// Produces the events; returns the good ones as `k|v|ts` rows and the number of bad ones.
fn produce(bootstrap: &str, topic: &str, enc: Encoding, seed: u64) -> (Vec<String>, usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let producer = producer(bootstrap);
    let mut good = Vec::new();
    let mut bad_count = 0;
    for i in 0..EVENTS {
        let k = rng.random_range(0..12);
        let v = rng.random_range(-1000..100_000);
        // Time order per event number, jittered by up to 1 s: under the 5 s watermark delay.
        let ts_ms = T0_MS + i as i64 * 20 + rng.random_range(0..1000);
        let bad = if rng.random_ratio(1, 25) {
            rng.random_range(1..4)
        } else {
            0
        };
        let payload = encode(enc, k, v, ts_ms, bad);
        if bad == 0 {
            good.push(format!("{k}|{v}|{}", pg_timestamp(ts_ms)));
        } else {
            bad_count += 1;
        }
        let partition = rng.random_range(0..PARTITIONS);
        let key = format!("{k}");
        let record = BaseRecord::to(topic)
            .partition(partition)
            .key(&key)
            .payload(&payload);
        producer.send(record).map_err(|(e, _)| e).expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    good.sort();
    (good, bad_count)
}

/// Reads the whole sink topic and applies it as upserts: key → latest value.
fn read_upserts(bootstrap: &str, topic: &str) -> BTreeMap<String, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "sink-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .expect("watermarks");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).expect("assign");
    let mut state = BTreeMap::new();
    let mut read = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while read < high && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.expect("message");
        read = message.offset() + 1;
        let key = String::from_utf8(message.key().expect("key").to_vec()).unwrap();
        match message.payload() {
            Some(value) => state.insert(key, String::from_utf8(value.to_vec()).unwrap()),
            None => state.remove(&key),
        };
    }
    state
}

/// A sink value `{"k":1,"window_start":"2026-01-01T00:00:01","n":2,"s":5}` as a view row.
fn row_of_json(value: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(value).expect("json");
    let ws = v["window_start"].as_str().unwrap().replace('T', " ");
    format!("{}|{}|{}|{}", v["k"], ws, v["n"], v["s"])
}

async fn wait_for_source(client: &Client, name: &str, records: usize) -> (i64, i64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let row = client
            .query_one(
                "SELECT rows, bad_records, status, error FROM sluice_sources WHERE source_name = $1",
                &[&name],
            )
            .await
            .expect("sluice_sources");
        let (rows, bad): (i64, i64) = (row.get(0), row.get(1));
        let status: String = row.get(2);
        assert_ne!(
            status,
            "failed",
            "{name}: {:?}",
            row.get::<_, Option<String>>(3)
        );
        if rows + bad >= records as i64 || Instant::now() > deadline {
            return (rows, bad);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every partition is idle and the source's watermark has reached its newest
/// event less `delay`, where it stays; then flushes, so views and oracle see the same time.
async fn wait_for_final_watermark(client: &Client, source: &str, ts: &str, delay: &str) {
    let sql = format!(
        "SELECT watermark = (SELECT max({ts}) - INTERVAL '{delay}' FROM {source}) \
         FROM sluice_sources WHERE source_name = '{source}'"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while sorted_rows(client, &sql).await != ["t"] {
        assert!(
            Instant::now() < deadline,
            "{source}: watermark never reached the end"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.batch_execute("FLUSH").await.expect("flush");
}

async fn pipeline(enc: Encoding, seed: u64) {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let bootstrap = cluster.bootstrap_servers();
    cluster
        .create_topic("events", PARTITIONS, 1)
        .expect("topic");
    cluster.create_topic("out", 1, 1).expect("topic");
    let (good, bad) = produce(&bootstrap, "events", enc, seed);

    let server = TestServer::start_with(|c| {
        c.parallelism = 2;
        // The sinks are exactly-once: records go out at each checkpoint.
        c.checkpoint_interval = Some(std::time::Duration::from_millis(300));
    })
    .await;
    let client = server.connect().await;
    let encode = match enc {
        Encoding::Json => "ENCODE JSON".to_string(),
        Encoding::Csv => "ENCODE CSV (delimiter = ',')".to_string(),
        Encoding::Avro => format!("ENCODE AVRO (schema = '{AVRO_SCHEMA}')"),
        Encoding::AvroRegistry => format!(
            "ENCODE AVRO (schema.registry = '{}')",
            serve_registry(7, AVRO_SCHEMA)
        ),
    };
    client
        .batch_execute(&format!(
            "CREATE SOURCE ev (k INT NOT NULL, v BIGINT, ts TIMESTAMP, \
               WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) \
             INCLUDE partition AS p INCLUDE offset AS o \
             WITH (connector = 'kafka', topic = 'events', properties.bootstrap.server = '{bootstrap}', \
               scan.startup.mode = 'earliest', idle.timeout = '1s') \
             FORMAT PLAIN {encode};
             CREATE MATERIALIZED VIEW hop AS SELECT k, window_start, count(*) AS n, sum(v) AS s \
               FROM HOP(ev, ts, INTERVAL '1' SECOND, INTERVAL '4' SECOND) GROUP BY k, window_start;
             CREATE MATERIALIZED VIEW hop_closed AS SELECT window_start, count(*) AS n, max(v) AS m \
               FROM HOP(ev, ts, INTERVAL '2' SECOND, INTERVAL '6' SECOND) GROUP BY window_start \
               EMIT ON WINDOW CLOSE;
             CREATE SINK hop_out FROM hop WITH (connector = 'kafka', topic = 'out', \
               properties.bootstrap.server = '{bootstrap}', primary_key = 'k, window_start') \
             FORMAT UPSERT ENCODE JSON;"
        ))
        .await
        .expect("DDL");

    let (rows, bad_seen) = wait_for_source(&client, "ev", EVENTS).await;
    assert_eq!(bad_seen as usize, bad, "malformed records counted exactly");
    assert_eq!(rows as usize, good.len(), "every good record ingested once");
    // Every partition goes idle after 1 s, so the watermark reaches the newest event.
    wait_for_final_watermark(&client, "ev", "ts", "5 seconds").await;

    let ingested = sorted_rows(&client, "SELECT k, v, ts FROM ev").await;
    assert_eq!(ingested, good, "the source holds exactly the good records");
    let late: i64 = client
        .query_one(
            "SELECT late_rows FROM sluice_sources WHERE source_name = 'ev'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(late, 0, "disorder stays under the watermark delay");
    let partitions = sorted_rows(&client, "SELECT DISTINCT p FROM ev").await;
    assert_eq!(partitions, vec!["0", "1", "2"]);
    let offsets = sorted_rows(&client, "SELECT count(DISTINCT (p, o)) = count(*) FROM ev").await;
    assert_eq!(offsets, vec!["t"]);

    let batch = "SELECT k, window_start, count(*) AS n, sum(v) AS s \
                 FROM HOP(ev, ts, INTERVAL '1' SECOND, INTERVAL '4' SECOND) GROUP BY k, window_start";
    let view = sorted_rows(&client, "SELECT * FROM hop").await;
    assert_eq!(
        view,
        sorted_rows(&client, batch).await,
        "HOP view = batch oracle"
    );
    assert!(view.len() > 100);

    let closed = sorted_rows(&client, "SELECT * FROM hop_closed").await;
    let closed_batch = sorted_rows(
        &client,
        "SELECT window_start, count(*) AS n, max(v) AS m \
         FROM HOP(ev, ts, INTERVAL '2' SECOND, INTERVAL '6' SECOND) GROUP BY window_start \
         HAVING window_start + INTERVAL '6' SECOND <= (SELECT watermark FROM sluice_sources WHERE source_name = 'ev')",
    )
    .await;
    assert_eq!(
        closed, closed_batch,
        "EOWC view = batch oracle over closed windows"
    );

    // The sink topic, applied as upserts, rebuilds the view.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rebuilt: Vec<String> = {
            let mut rows: Vec<String> = read_upserts(&bootstrap, "out")
                .values()
                .map(|v| row_of_json(v))
                .collect();
            rows.sort();
            rows
        };
        if rebuilt == view {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sink topic never matched the view: {} rows vs {}",
            rebuilt.len(),
            view.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The metrics say the same: rows and bad records exactly, no lag once caught up, and the
    // sink's deliveries.
    let engine = &server.server.as_ref().expect("running").engine;
    let text = sluice::metrics::render(engine);
    let sample = |series: &str| -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    };
    let source = r#"{source="ev",connector="kafka"}"#;
    assert_eq!(
        sample(&format!("sluice_source_rows_total{source}")),
        Some(good.len() as f64),
        "{text}"
    );
    assert_eq!(
        sample(&format!("sluice_source_bad_records_total{source}")),
        Some(bad as f64)
    );
    assert_eq!(
        sample(&format!("sluice_source_lag_records{source}")),
        Some(0.0)
    );
    assert!(sample(&format!("sluice_source_received_bytes_total{source}")).unwrap() > 0.0);
    assert!(sample(&format!("sluice_source_watermark_seconds{source}")).unwrap() > 1e9);
    let sink = r#"{sink="hop_out",view="hop",connector="kafka"}"#;
    assert!(sample(&format!("sluice_sink_records_total{sink}")).unwrap() >= view.len() as f64);
    assert_eq!(sample(&format!("sluice_sink_up{sink}")), Some(1.0));
    assert!(sample(&format!("sluice_sink_lag_seconds{sink}")).unwrap() >= 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_topic_feeds_hop_view_and_upsert_sink() {
    pipeline(Encoding::Json, 11).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_topic_feeds_hop_view_and_upsert_sink() {
    pipeline(Encoding::Csv, 12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_topic_feeds_hop_view_and_upsert_sink() {
    pipeline(Encoding::Avro, 13).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_with_a_schema_registry_feeds_hop_view_and_upsert_sink() {
    pipeline(Encoding::AvroRegistry, 14).await;
}

/// A Confluent schema registry on loopback that knows one schema id; returns its URL. It
/// answers in chunks, as some registries do; an unknown id is a 404.
fn serve_registry(id: u32, schema: &'static str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/registry", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            // The whole request, headers too: closing a socket with unread input resets it.
            let mut reader = BufReader::new(&stream);
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let wanted = format!("/registry/schemas/ids/{id}");
            let response = if request.split_whitespace().nth(1) == Some(wanted.as_str()) {
                let body = serde_json::json!({ "schema": schema }).to_string();
                format!(
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}".to_string()
            };
            let _ = stream.write_all(response.as_bytes());
        }
    });
    url
}

/// The playground's pipeline (`examples/clickstream/pipeline.sql`) as shipped, on page views
/// shaped like the example producer's, 1 % of them malformed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickstream_example_pipeline_runs_as_shipped() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let bootstrap = cluster.bootstrap_servers();
    cluster
        .create_topic("page_views", PARTITIONS, 1)
        .expect("topic");
    cluster.create_topic("views_per_user", 1, 1).expect("topic");

    let pages = ["/", "/search", "/item", "/cart", "/checkout", "/help"];
    let mut rng = StdRng::seed_from_u64(21);
    let producer = producer(&bootstrap);
    let mut bad = 0;
    for i in 0..EVENTS {
        let user = rng.random_range(1..=50);
        // 200 ms apart over 10 minutes, jittered by up to 1 s (the watermark allows 5 s).
        let ts_ms = T0_MS + i as i64 * 200 + rng.random_range(0..1000);
        let ts = chrono::DateTime::from_timestamp_millis(ts_ms)
            .unwrap()
            .naive_utc()
            .format("%Y-%m-%d %H:%M:%S%.3f");
        let value = if rng.random_ratio(1, 100) {
            bad += 1;
            r#"{"user_id": oops"#.to_string()
        } else {
            let page = pages[rng.random_range(0..pages.len())];
            format!(r#"{{"user_id": {user}, "page": "{page}", "ts": "{ts}"}}"#)
        };
        let key = user.to_string();
        let record = BaseRecord::to("page_views")
            .partition(rng.random_range(0..PARTITIONS))
            .key(&key)
            .payload(&value);
        producer.send(record).map_err(|(e, _)| e).expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");

    let server = TestServer::start_with(|c| {
        c.parallelism = 2;
        // The sinks are exactly-once: records go out at each checkpoint.
        c.checkpoint_interval = Some(std::time::Duration::from_millis(300));
    })
    .await;
    let client = server.connect().await;
    let sql = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/clickstream/pipeline.sql"),
    )
    .expect("pipeline.sql");
    assert!(sql.contains("'kafka:9092'"));
    client
        .batch_execute(&sql.replace("kafka:9092", &bootstrap))
        .await
        .expect("pipeline.sql runs");

    let (rows, bad_seen) = wait_for_source(&client, "page_views", EVENTS).await;
    assert_eq!(bad_seen, bad, "malformed page views counted exactly");
    assert_eq!(rows as usize, EVENTS - bad as usize);
    // After the default 5 s idle timeout every partition is idle and the watermark stops moving.
    wait_for_final_watermark(&client, "page_views", "ts", "5 seconds").await;

    let view = sorted_rows(&client, "SELECT * FROM views_per_user").await;
    let batch = sorted_rows(
        &client,
        "SELECT user_id, window_start, window_end, count(*), count(DISTINCT page) \
         FROM HOP(page_views, ts, INTERVAL '1' MINUTE, INTERVAL '5' MINUTE) \
         GROUP BY user_id, window_start, window_end",
    )
    .await;
    assert_eq!(view, batch, "views_per_user = batch oracle");
    let closed = sorted_rows(&client, "SELECT * FROM views_per_user_final").await;
    let closed_batch = sorted_rows(
        &client,
        "SELECT user_id, window_start, count(*) \
         FROM HOP(page_views, ts, INTERVAL '1' MINUTE, INTERVAL '5' MINUTE) \
         GROUP BY user_id, window_start, window_end HAVING window_end <= \
           (SELECT watermark FROM sluice_sources WHERE source_name = 'page_views')",
    )
    .await;
    assert_eq!(
        closed, closed_batch,
        "views_per_user_final = closed windows"
    );
    assert!(!closed.is_empty());

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut rebuilt: Vec<String> = read_upserts(&bootstrap, "views_per_user")
            .values()
            .map(|value| {
                let v: serde_json::Value = serde_json::from_str(value).expect("json");
                let time = |c: &str| v[c].as_str().unwrap().replace('T', " ");
                format!(
                    "{}|{}|{}|{}|{}",
                    v["user_id"],
                    time("window_start"),
                    time("window_end"),
                    v["views"],
                    v["pages"]
                )
            })
            .collect();
        rebuilt.sort();
        if rebuilt == view {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sink topic never matched views_per_user: {} rows vs {}",
            rebuilt.len(),
            view.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Produces `(key, value)` records to partition `key % PARTITIONS`; a `None` value is a tombstone.
fn produce_keyed(bootstrap: &str, topic: &str, records: &[(i64, Option<String>)]) {
    let producer = producer(bootstrap);
    for (k, value) in records {
        let key = format!(r#"{{"id": {k}}}"#);
        let mut record = BaseRecord::to(topic)
            .partition((*k % PARTITIONS as i64) as i32)
            .key(&key);
        if let Some(v) = value {
            record = record.payload(v);
        }
        producer.send(record).map_err(|(e, _)| e).expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

async fn wait_until_rows(client: &Client, sql: &str, expected: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        client.batch_execute("FLUSH").await.expect("flush");
        let rows = sorted_rows(client, sql).await;
        if rows == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sql}: {} rows, expected {}",
            rows.len(),
            expected.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `FORMAT UPSERT`: the key's last value wins and a tombstone deletes; after a restart both an
/// upsert table and a plain source resume from the offsets stored in their logs, so records
/// produced while the server was down arrive once and nothing is read twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_table_and_plain_source_resume_after_restart() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let bootstrap = cluster.bootstrap_servers();
    cluster.create_topic("users", PARTITIONS, 1).expect("topic");
    cluster
        .create_topic("events", PARTITIONS, 1)
        .expect("topic");

    let mut rng = StdRng::seed_from_u64(31);
    let mut state: BTreeMap<i64, i64> = BTreeMap::new();
    let mut events: Vec<String> = Vec::new();
    let mut round = |rng: &mut StdRng, events: &mut Vec<String>| {
        let mut records = Vec::new();
        for _ in 0..600 {
            let k = rng.random_range(0..40);
            if rng.random_ratio(1, 5) {
                state.remove(&k);
                records.push((k, None));
            } else {
                let score = rng.random_range(0..1000);
                state.insert(k, score);
                records.push((k, Some(format!(r#"{{"id": {k}, "score": {score}}}"#))));
            }
        }
        produce_keyed(&bootstrap, "users", &records);
        let plain: Vec<(i64, Option<String>)> = (0..500)
            .map(|_| {
                let (k, v) = (rng.random_range(0..10), rng.random_range(0..100));
                events.push(format!("{k}|{v}"));
                (k, Some(format!(r#"{{"k": {k}, "v": {v}}}"#)))
            })
            .collect();
        produce_keyed(&bootstrap, "events", &plain);
        let mut users: Vec<String> = state.iter().map(|(k, s)| format!("{k}|{s}")).collect();
        users.sort();
        let mut sums: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        for e in events.iter() {
            let (k, v) = e.split_once('|').unwrap();
            let entry = sums.entry(k).or_default();
            entry.0 += 1;
            entry.1 += v.parse::<i64>().unwrap();
        }
        let mut per_key: Vec<String> = sums
            .iter()
            .map(|(k, (n, s))| format!("{k}|{n}|{s}"))
            .collect();
        per_key.sort();
        (users, per_key)
    };

    let dir = tempfile::tempdir().unwrap();
    let mut server = common::start_on(dir.path()).await;
    let client = common::connect(server.addr.port()).await;
    client
        .batch_execute(&format!(
            "CREATE TABLE users (id INT PRIMARY KEY, score BIGINT) \
             WITH (connector = 'kafka', topic = 'users', properties.bootstrap.server = '{bootstrap}') \
             FORMAT UPSERT ENCODE JSON;
             CREATE SOURCE ev (k INT, v BIGINT) \
             WITH (connector = 'kafka', topic = 'events', properties.bootstrap.server = '{bootstrap}') \
             FORMAT PLAIN ENCODE JSON;
             CREATE MATERIALIZED VIEW per_key AS SELECT k, count(*) AS n, sum(v) AS s FROM ev GROUP BY k;"
        ))
        .await
        .expect("DDL");
    // Only the connector writes to a connector table: its log records carry the resume position.
    let refused = client
        .batch_execute("INSERT INTO users VALUES (1, 1)")
        .await
        .unwrap_err();
    assert_eq!(common::db_error(&refused).0, "42809");

    let (users, per_key) = round(&mut rng, &mut events);
    wait_until_rows(&client, "SELECT * FROM users", &users).await;
    wait_until_rows(&client, "SELECT * FROM per_key", &per_key).await;

    drop(client);
    server.shutdown().await;
    // Produced while the server is down.
    let (users, per_key) = round(&mut rng, &mut events);
    server = common::start_on(dir.path()).await;
    let client = common::connect(server.addr.port()).await;
    wait_until_rows(&client, "SELECT * FROM users", &users).await;
    wait_until_rows(&client, "SELECT * FROM per_key", &per_key).await;
    let batch = sorted_rows(&client, "SELECT k, count(*), sum(v) FROM ev GROUP BY k").await;
    assert_eq!(batch, per_key, "every record once in the source's log");
    server.shutdown().await;
}

/// A source holds its watermark back until every partition has reported: rows of the first
/// partition must not move a view's watermark past rows another partition sends later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_back_watermark_does_not_close_windows_early() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let bootstrap = cluster.bootstrap_servers();
    cluster.create_topic("late", 2, 1).expect("topic");
    let send = |partition: i32, seconds: &[i64]| {
        let producer = producer(&bootstrap);
        for (i, s) in seconds.iter().enumerate() {
            let ts = chrono::DateTime::from_timestamp_millis(T0_MS + s * 1000)
                .unwrap()
                .naive_utc()
                .format("%Y-%m-%d %H:%M:%S");
            let payload = format!(r#"{{"v": {i}, "ts": "{ts}"}}"#);
            let record = BaseRecord::<(), str>::to("late")
                .partition(partition)
                .payload(&payload);
            producer.send(record).map_err(|(e, _)| e).expect("send");
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
    };
    // Partition 0 is 100 s ahead; partition 1 has said nothing yet (and, with a long idle
    // timeout, holds the watermark back until it does).
    send(0, &(100..110).collect::<Vec<_>>());
    let server = TestServer::start().await;
    let client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE SOURCE late (v INT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
             WITH (connector = 'kafka', topic = 'late', properties.bootstrap.server = '{bootstrap}',
               idle.timeout = '600s') FORMAT PLAIN ENCODE JSON;
             CREATE MATERIALIZED VIEW per_10s AS SELECT window_start, count(*) AS n
               FROM HOP(late, ts, INTERVAL '10' SECOND, INTERVAL '10' SECOND) GROUP BY window_start
               EMIT ON WINDOW CLOSE;"
        ))
        .await
        .expect("DDL");
    wait_for_source(&client, "late", 10).await;
    client.batch_execute("FLUSH").await.unwrap();
    // Now partition 1 reports, 100 s behind; its last row moves its watermark to 19 s, which
    // closes the window [0 s, 10 s).
    send(1, &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 20]);
    wait_for_source(&client, "late", 21).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        client.batch_execute("FLUSH").await.unwrap();
        let closed = sorted_rows(&client, "SELECT n FROM per_10s").await;
        if !closed.is_empty() {
            // All ten rows of partition 1 in it: none dropped by the view.
            assert_eq!(closed, ["10"]);
            break;
        }
        assert!(Instant::now() < deadline, "the window never closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let late = sorted_rows(
        &client,
        "SELECT late_rows FROM sluice_sources WHERE source_name = 'late'",
    )
    .await;
    assert_eq!(late, ["0"]);
}

/// An at-least-once sink whose records the broker does not take (it is down) counts every
/// failed delivery, sends the epoch again, and after three tries stops with the error in
/// `sluice_sinks`; its records are never dropped quietly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_at_least_once_sink_that_cannot_deliver_fails_loudly() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let bootstrap = cluster.bootstrap_servers();
    cluster.create_topic("out", 1, 1).expect("topic");
    let server = TestServer::start().await;
    let client = server.connect().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE t (k INT PRIMARY KEY, v INT);
             CREATE MATERIALIZED VIEW mv AS SELECT k, v FROM t;
             CREATE SINK s FROM mv WITH (connector = 'kafka', topic = 'out',
               properties.bootstrap.server = '{bootstrap}', primary_key = 'k',
               sink.exactly_once = 'false', properties.message.timeout.ms = '300')
             FORMAT UPSERT ENCODE JSON;
             INSERT INTO t VALUES (1, 10); FLUSH;"
        ))
        .await
        .unwrap();
    // Delivered while the broker is up.
    let state = "SELECT status, records, failed_records, error IS NULL FROM sluice_sinks";
    let deadline = Instant::now() + Duration::from_secs(30);
    while sorted_rows(&client, state).await != ["running|1|0|t"] {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            sorted_rows(&client, state).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.broker_down(1).expect("broker down");
    client
        .batch_execute("INSERT INTO t VALUES (2, 20), (3, 30); FLUSH")
        .await
        .unwrap();
    let shown = "SELECT sink_name, view_name, exactly_once, status, records, failed_records,
                   error LIKE '%2 records of epoch % not delivered after 3 tries%' FROM sluice_sinks";
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = sorted_rows(&client, shown).await;
        if rows == ["s|mv|f|failed|1|6|t"] {
            break;
        }
        assert!(Instant::now() < deadline, "{rows:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.batch_execute("DROP SINK s").await.unwrap();
    assert!(
        sorted_rows(&client, "SELECT * FROM sluice_sinks")
            .await
            .is_empty()
    );
}
