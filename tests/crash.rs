//! Durability: the server binary is killed with SIGKILL right after INSERTs were acknowledged;
//! restarted on the same data directory, it has every acknowledged row and every table. Killed
//! again and again during a feed, it recovers every view exactly (from checkpoints, or by
//! replaying logs) and its sinks hold each change once.

mod common;

use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

use common::process::{ServerProcess, connect_when_up as connect, free_port, spawn_with};

fn spawn(dir: &std::path::Path, port: u16) -> ServerProcess {
    spawn_with(dir, port, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_acknowledged_inserts_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = spawn(dir.path(), port);
    let client = connect(port).await;
    client
        .batch_execute(
            "CREATE TABLE acked (id BIGINT PRIMARY KEY, v TEXT); CREATE TABLE log (n INT) APPEND ONLY",
        )
        .await
        .unwrap();

    // Writers run concurrently; the server dies under them. Every INSERT that returned Ok
    // must be there after the restart.
    let mut writers = Vec::new();
    for w in 0..4i64 {
        let c = connect(port).await;
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..10_000i64 {
                let id = w * 1_000_000 + i;
                match c
                    .execute(
                        "INSERT INTO acked VALUES ($1, $2)",
                        &[&id, &format!("v{id}")],
                    )
                    .await
                {
                    Ok(_) => acked.push(id),
                    Err(_) => break,
                }
            }
            acked
        }));
    }
    client
        .execute("INSERT INTO log VALUES (1), (2), (3)", &[])
        .await
        .unwrap();
    let updated_before = client
        .execute("UPDATE acked SET v = 'updated' WHERE id < 5", &[])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill();
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(
        !acked.is_empty(),
        "some inserts were acknowledged before the kill"
    );

    let mut child = spawn(dir.path(), port);
    let client = connect(port).await;
    let rows = client.query("SELECT id FROM acked", &[]).await.unwrap();
    let present: std::collections::HashSet<i64> = rows.iter().map(|r| r.get(0)).collect();
    let lost: Vec<&i64> = acked.iter().filter(|id| !present.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged rows lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let updated: i64 = client
        .query_one("SELECT count(*) FROM acked WHERE v = 'updated'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(updated as u64, updated_before);
    let n: i64 = client
        .query_one("SELECT sum(n) FROM log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 6);
    // the restarted server keeps accepting writes after the recovered tail
    client
        .execute("INSERT INTO log VALUES (4)", &[])
        .await
        .unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 4);
    child.kill();
}

/// SIGKILL, again and again, while a Kafka topic (librdkafka's mock cluster) feeds a source
/// and clients write to a keyed table: after each restart the source resumes from the offsets
/// in its log, and in the end the source holds every record exactly once and every kind of view
/// (sliding windows, tumbling windows emitted on close, a grouped view over a keyed table with
/// deletes, a view over a view) equals its query run in batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_kafka_feed_keeps_every_view_exact() {
    use rand::{Rng, SeedableRng};

    const EVENTS: i64 = 30_000;
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    let bootstrap = cluster.bootstrap_servers();
    cluster.create_topic("events", 3, 1).expect("topic");

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = spawn(dir.path(), port);
    let client = connect(port).await;
    client
        .batch_execute(&format!(
            "{}
             {VIEWS}",
            source_and_table(&bootstrap)
        ))
        .await
        .unwrap();
    drop(client);

    // The feed: 30,000 events over about 3 s, in time order per event number.
    let feed = spawn_feed(Feed {
        bootstrap: bootstrap.clone(),
        events: EVENTS,
        seed: 3,
        event_ms: |id| id * 2,
        pause_every: 1000,
        pause: Duration::from_millis(100),
    });

    // Writers to the keyed table, reconnecting after each kill.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer_stop = std::sync::Arc::clone(&stop);
    let writer = tokio::spawn(async move {
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        while !writer_stop.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok((c, conn)) = tokio_postgres::connect(
                &format!("host=127.0.0.1 port={port} user=sluice dbname=sluice"),
                NoTls,
            )
            .await
            else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            tokio::spawn(conn);
            while !writer_stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = rng.random_range(0..200);
                let sql = if rng.random_ratio(1, 4) {
                    format!("DELETE FROM pk WHERE id = {id}")
                } else {
                    format!(
                        "INSERT INTO pk VALUES ({id}, {}, {})",
                        rng.random_range(0..5),
                        rng.random_range(0..100)
                    )
                };
                if c.batch_execute(&sql).await.is_err() {
                    break;
                }
            }
        }
    });

    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..500))).await;
        child.kill();
        child = spawn(dir.path(), port);
        connect(port).await;
    }
    feed.join().unwrap();
    assert_broker_kept_everything(&bootstrap, "events");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();

    let client = connect(port).await;
    wait_for_every_event(&client, EVENTS, Duration::from_secs(60)).await;
    client.batch_execute("FLUSH").await.unwrap();
    assert_views_equal_batch_queries(&client, "after 10 kills").await;
    child.kill();
}

/// Source `ev` over topic `events` of the cluster at `bootstrap`, and the keyed table `pk`:
/// what both Kafka crash tests read.
fn source_and_table(bootstrap: &str) -> String {
    format!(
        "CREATE SOURCE ev (id BIGINT, k INT, v BIGINT, ts TIMESTAMP,
           WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
         WITH (connector = 'kafka', topic = 'events', properties.bootstrap.server = '{bootstrap}',
           idle.timeout = '1s') FORMAT PLAIN ENCODE JSON;
         CREATE TABLE pk (id INT PRIMARY KEY, g INT, v BIGINT);"
    )
}

/// A feed of JSON events `{id, k, v, ts}` into topic `events`, round-robin over 3 partitions.
struct Feed {
    bootstrap: String,
    events: i64,
    seed: u64,
    /// Event `id`'s time, in ms after 2026-01-01, before up to 500 ms of disorder.
    event_ms: fn(i64) -> i64,
    /// A pause of `pause` after every `pause_every` events spreads the feed over time.
    pause_every: i64,
    pause: Duration,
}

/// Produces the feed on a thread of its own.
fn spawn_feed(feed: Feed) -> std::thread::JoinHandle<()> {
    use rand::{Rng, SeedableRng};
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

    const BASE_MS: i64 = 1_767_225_600_000;
    std::thread::spawn(move || {
        // librdkafka's mock broker keeps only the newest 5 MB of each partition and deletes
        // older records: compressed (zstd) in large batches, the feed stays well under that,
        // so that a source that fell behind during a restart finds every record still there
        // (`assert_broker_kept_everything` checks it; lz4 was not enough).
        let producer: ThreadedProducer<Deliveries> = ClientConfig::new()
            .set("bootstrap.servers", &feed.bootstrap)
            .set("queue.buffering.max.messages", "1000000")
            .set("compression.type", "zstd")
            .set("linger.ms", "20")
            .set("batch.size", "1000000")
            .create_with_context(Deliveries::default())
            .expect("producer");
        let mut rng = rand::rngs::StdRng::seed_from_u64(feed.seed);
        for id in 0..feed.events {
            let ts = chrono::DateTime::from_timestamp_millis(
                BASE_MS + (feed.event_ms)(id) + rng.random_range(0..500),
            )
            .unwrap()
            .naive_utc()
            .format("%Y-%m-%d %H:%M:%S%.3f");
            let payload = format!(
                r#"{{"id": {id}, "k": {}, "v": {}, "ts": "{ts}"}}"#,
                rng.random_range(0..8),
                rng.random_range(0..1000)
            );
            let mut record = BaseRecord::<(), str>::to("events")
                .partition((id % 3) as i32)
                .payload(&payload);
            // A full queue waits for the producer to catch up.
            while let Err((_, back)) = producer.send(record) {
                record = back;
                std::thread::sleep(Duration::from_millis(5));
            }
            if id % feed.pause_every == feed.pause_every - 1 {
                std::thread::sleep(feed.pause);
            }
        }
        producer.flush(Duration::from_secs(60)).expect("flush");
        producer.context().assert_all_delivered();
    })
}

/// Reads every delivery report of a test producer: a record the broker did not take would
/// make the source look like it lost it.
#[derive(Default)]
struct Deliveries(std::sync::Mutex<Vec<String>>);

impl rdkafka::ClientContext for Deliveries {}

impl rdkafka::producer::ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            self.0.lock().unwrap().push(error.to_string());
        }
    }
}

impl Deliveries {
    fn assert_all_delivered(&self) {
        let failed = self.0.lock().unwrap();
        assert!(
            failed.is_empty(),
            "{} records not delivered: {:?}",
            failed.len(),
            &failed[..failed.len().min(3)]
        );
    }
}

/// Each partition of `topic` still starts at offset 0: the mock broker deleted nothing, so a
/// source that misses records has lost them itself.
fn assert_broker_kept_everything(bootstrap: &str, topic: &str) {
    for (p, (low, high)) in watermarks(bootstrap, topic) {
        assert_eq!(
            low, 0,
            "the mock broker deleted records of {topic} [{p}] (it holds {low}..{high})"
        );
    }
}

/// Each partition's oldest and end offsets, as the broker answers.
fn watermarks(bootstrap: &str, topic: &str) -> std::collections::BTreeMap<i32, (i64, i64)> {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| {
            let w = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .expect("watermarks");
            (p.id(), w)
        })
        .collect()
}

/// Waits until each of the `events` events the feed produced is in source `ev` once or was
/// dropped as late (the count is kept in the source's log, so it spans every restart: with
/// `idle.timeout = '1s'` a partition whose producer or reader was starved for a second can go
/// idle, and the others' watermark may then pass its next events), and the watermark stands at
/// the newest event less the delay (every partition idle).
async fn wait_for_every_event(client: &tokio_postgres::Client, events: i64, patience: Duration) {
    let deadline = Instant::now() + patience;
    loop {
        let state = common::sorted_rows(
            client,
            "SELECT count(*), count(DISTINCT id), (SELECT watermark = (SELECT max(ts) - INTERVAL '1' SECOND FROM ev)
               FROM sluice_sources WHERE source_name = 'ev'),
               (SELECT late_rows FROM sluice_sources WHERE source_name = 'ev') FROM ev",
        )
        .await;
        let [counts] = &state[..] else {
            panic!("one row: {state:?}");
        };
        let fields: Vec<&str> = counts.split('|').collect();
        let (rows, distinct, at_end, late): (i64, i64, &str, i64) = (
            fields[0].parse().unwrap(),
            fields[1].parse().unwrap(),
            fields[2],
            fields[3].parse().unwrap(),
        );
        // Every partition read to the end the broker reports, nothing skipped.
        let partitions = common::sorted_rows(
            client,
            "SELECT position = end_offset, lag, skipped_offsets FROM sluice_source_partitions
               WHERE source_name = 'ev'",
        )
        .await;
        let read_to_end = !partitions.is_empty() && partitions.iter().all(|p| p == "t|0|0");
        // One starved second drops a few thousand events of a million; each of the ten kills
        // may cause one. Far more means a watermark ran ahead of its partitions.
        assert!(
            late <= events / 10,
            "{late} of {events} events late: a watermark ran far ahead"
        );
        if rows == distinct && rows + late == events && at_end == "t" && read_to_end {
            if late > 0 {
                eprintln!("{late} of {events} events were dropped as late");
            }
            return;
        }
        if Instant::now() >= deadline {
            // Tells a source that lost records (bad, skipped) from a feed that did not
            // deliver them (the broker's ends add up to fewer than `events`).
            let held = common::sorted_rows(
                client,
                "SELECT (SELECT sum(end_offset) FROM sluice_source_partitions WHERE source_name = 'ev'),
                   bad_records FROM sluice_sources WHERE source_name = 'ev'",
            )
            .await;
            panic!(
                "source never complete: (rows, distinct ids, at end, late rows) {state:?}, \
                 partitions (read to end, lag, skipped): {partitions:?}, \
                 (records in the topic, bad records): {held:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The views both Kafka crash tests create, over source `ev` and table `pk`.
const VIEWS: &str = "
    CREATE MATERIALIZED VIEW hop AS SELECT k, window_start, count(*) AS n, sum(v) AS s
      FROM HOP(ev, ts, INTERVAL '1' SECOND, INTERVAL '4' SECOND) GROUP BY k, window_start;
    CREATE MATERIALIZED VIEW tumble_closed AS SELECT window_start, count(*) AS n, max(v) AS m
      FROM TUMBLE(ev, ts, INTERVAL '2' SECOND) GROUP BY window_start EMIT ON WINDOW CLOSE;
    CREATE MATERIALIZED VIEW per_g AS SELECT g, count(*) AS n, sum(v) AS s, min(v) AS lo FROM pk GROUP BY g;
    CREATE MATERIALIZED VIEW hop_totals AS SELECT k, count(*) AS windows, sum(n) AS events
      FROM hop GROUP BY k;
    CREATE MATERIALIZED VIEW by_group AS SELECT p.id, p.g, h.events FROM pk p JOIN hop_totals h ON p.g = h.k;
    CREATE MATERIALIZED VIEW seen_groups AS SELECT g, count(*) AS n FROM pk WHERE g IN (SELECT k FROM ev) GROUP BY g;";

/// Each of [`VIEWS`] equals its query run in batch over what the source and table hold.
async fn assert_views_equal_batch_queries(client: &tokio_postgres::Client, when: &str) {
    let checks = [
        (
            "SELECT * FROM hop",
            "SELECT k, window_start, count(*), sum(v) FROM HOP(ev, ts, INTERVAL '1' SECOND, INTERVAL '4' SECOND) GROUP BY k, window_start",
        ),
        (
            "SELECT * FROM tumble_closed",
            "SELECT window_start, count(*), max(v) FROM TUMBLE(ev, ts, INTERVAL '2' SECOND) GROUP BY window_start, window_end
               HAVING window_end <= (SELECT watermark FROM sluice_sources WHERE source_name = 'ev')",
        ),
        (
            "SELECT * FROM per_g",
            "SELECT g, count(*), sum(v), min(v) FROM pk GROUP BY g",
        ),
        (
            "SELECT * FROM hop_totals",
            "SELECT k, count(*), sum(n) FROM (SELECT k, window_start, count(*) AS n FROM HOP(ev, ts, INTERVAL '1' SECOND, INTERVAL '4' SECOND) GROUP BY k, window_start) w GROUP BY k",
        ),
        (
            "SELECT * FROM by_group",
            "SELECT p.id, p.g, h.events FROM pk p JOIN (SELECT k, sum(n) AS events FROM (SELECT k, window_start, count(*) AS n FROM HOP(ev, ts, INTERVAL '1' SECOND, INTERVAL '4' SECOND) GROUP BY k, window_start) w GROUP BY k) h ON p.g = h.k",
        ),
        (
            "SELECT * FROM seen_groups",
            "SELECT g, count(*) FROM pk WHERE g IN (SELECT k FROM ev) GROUP BY g",
        ),
    ];
    for (view, batch) in checks {
        let (got, want) = (
            common::sorted_rows(client, view).await,
            common::sorted_rows(client, batch).await,
        );
        assert!(!want.is_empty(), "{batch}");
        assert_eq!(got, want, "{view} {when}");
    }
}

/// Every message of `topic` (all partitions, `read_committed`): (key, value, batch header,
/// sequence header).
type SinkMessage = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn read_topic(bootstrap: &str, topic: &str) -> Vec<SinkMessage> {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::{Offset, TopicPartitionList};

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "crash-test-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions: Vec<i32> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let mut open: std::collections::HashSet<i32> = partitions.into_iter().collect();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8(b.to_vec()).unwrap());
    while !open.is_empty() {
        assert!(Instant::now() < deadline, "reading {topic} timed out");
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            Some(Ok(m)) => {
                let header = |key: &str| {
                    m.headers()
                        .and_then(|h| h.iter().find(|h| h.key == key))
                        .and_then(|h| text(h.value))
                };
                out.push((
                    text(m.key()),
                    text(m.payload()),
                    header("sluice-batch"),
                    header("sluice-seq"),
                ));
            }
        }
    }
    out
}

/// Each record of a sink names its batch and place in it; a record sent twice would repeat one.
fn assert_each_record_once(topic: &str, messages: &[SinkMessage]) {
    let mut seen = std::collections::HashSet::new();
    for (_, _, batch, seq) in messages {
        let id = (
            batch.clone().expect("batch header"),
            seq.clone().expect("seq header"),
        );
        assert!(seen.insert(id.clone()), "{topic}: record {id:?} sent twice");
    }
}

/// The done-when of exactly-once recovery: a million events (900,000 from a Kafka topic,
/// 100,000 row writes to a keyed table) into views of every kind; the server binary is killed
/// with SIGKILL at 10 random moments during the feed and restarted; at the end every view
/// equals its batch query, and each sink topic, read `read_committed`, holds each change once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_million_events_recovers_views_and_sinks_exactly_once() {
    use rand::{Rng, SeedableRng};

    const KAFKA_EVENTS: i64 = 900_000;
    const TABLE_ROWS: i64 = 100_000;
    const KILLS: usize = 10;
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    let bootstrap = cluster.bootstrap_servers();
    cluster.create_topic("events", 3, 1).expect("topic");
    cluster.create_topic("closed_out", 3, 1).expect("topic");
    cluster.create_topic("per_g_out", 1, 1).expect("topic");

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let args = ["--checkpoint-interval", "500ms"];
    let mut child = spawn_with(dir.path(), port, &args);
    let client = connect(port).await;
    client
        .batch_execute(&format!(
            "{}
             {VIEWS}
             CREATE SINK closed_out FROM tumble_closed WITH (connector = 'kafka', topic = 'closed_out',
               properties.bootstrap.server = '{bootstrap}') FORMAT PLAIN ENCODE JSON;
             CREATE SINK per_g_out FROM per_g WITH (connector = 'kafka', topic = 'per_g_out',
               properties.bootstrap.server = '{bootstrap}', primary_key = 'g') FORMAT UPSERT ENCODE JSON;",
            source_and_table(&bootstrap)
        ))
        .await
        .unwrap();
    drop(client);

    // The feed: 900,000 events in chunks, in time order per event number (2 events per ms).
    let feed = spawn_feed(Feed {
        bootstrap: bootstrap.clone(),
        events: KAFKA_EVENTS,
        seed: 13,
        event_ms: |id| id / 2,
        pause_every: 20_000,
        pause: Duration::from_millis(200),
    });

    // Writers to the keyed table (upserts and deletes, 500 rows a statement), reconnecting
    // after each kill, until 100,000 rows were written.
    let writer = tokio::spawn(async move {
        let mut rng = rand::rngs::StdRng::seed_from_u64(14);
        let mut written = 0;
        while written < TABLE_ROWS {
            let Ok((c, conn)) = tokio_postgres::connect(
                &format!("host=127.0.0.1 port={port} user=sluice dbname=sluice"),
                NoTls,
            )
            .await
            else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            tokio::spawn(conn);
            while written < TABLE_ROWS {
                let sql = if rng.random_ratio(1, 5) {
                    let ids: Vec<String> = (0..100)
                        .map(|_| rng.random_range(0..5000).to_string())
                        .collect();
                    format!("DELETE FROM pk WHERE id IN ({})", ids.join(", "))
                } else {
                    let rows: Vec<String> = (0..500)
                        .map(|_| {
                            format!(
                                "({}, {}, {})",
                                rng.random_range(0..5000),
                                rng.random_range(0..50),
                                rng.random_range(0..1000)
                            )
                        })
                        .collect();
                    format!("INSERT INTO pk VALUES {}", rows.join(", "))
                };
                if c.batch_execute(&sql).await.is_err() {
                    break;
                }
                written += if sql.starts_with("INSERT") { 500 } else { 100 };
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });

    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        child.kill();
        child = spawn_with(dir.path(), port, &args);
        connect(port).await;
    }
    feed.join().unwrap();
    assert_broker_kept_everything(&bootstrap, "events");
    writer.await.unwrap();

    let client = connect(port).await;
    wait_for_every_event(&client, KAFKA_EVENTS, Duration::from_secs(300)).await;
    client.batch_execute("FLUSH").await.unwrap();
    let recoveries: i64 = client
        .query_one(
            "SELECT count(*) FROM sluice_checkpoints WHERE kind = 'recovery'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(recoveries, 1, "the last start recovered from a checkpoint");
    assert_views_equal_batch_queries(&client, "after 10 kills").await;

    // The sinks catch up at the next checkpoints; then each topic holds every change once.
    let closed_view = common::sorted_rows(&client, "SELECT * FROM tumble_closed").await;
    let per_g_view = common::sorted_rows(&client, "SELECT * FROM per_g").await;
    let json_row = |value: &str, columns: &[&str]| {
        let v: serde_json::Value = serde_json::from_str(value).expect("json");
        columns
            .iter()
            .map(|c| match &v[*c] {
                serde_json::Value::String(s) => s.replace('T', " "),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join("|")
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let closed = read_topic(&bootstrap, "closed_out");
        let mut closed_rows: Vec<String> = closed
            .iter()
            .map(|(_, v, _, _)| {
                json_row(v.as_deref().expect("a value"), &["window_start", "n", "m"])
            })
            .collect();
        closed_rows.sort();
        let per_g = read_topic(&bootstrap, "per_g_out");
        let mut upserted = std::collections::BTreeMap::new();
        for (key, value, _, _) in &per_g {
            let key = key.clone().expect("a key");
            match value {
                Some(v) => upserted.insert(key, json_row(v, &["g", "n", "s", "lo"])),
                None => upserted.remove(&key),
            };
        }
        let mut per_g_rows: Vec<String> = upserted.into_values().collect();
        per_g_rows.sort();
        if closed_rows.len() >= closed_view.len() && per_g_rows == per_g_view
            || Instant::now() > deadline
        {
            assert_each_record_once("closed_out", &closed);
            assert_each_record_once("per_g_out", &per_g);
            assert_eq!(
                closed_rows, closed_view,
                "closed_out holds each closed window once"
            );
            assert_eq!(
                per_g_rows, per_g_view,
                "per_g_out applied by key equals the view"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    child.kill();
}

/// Produces `count` JSON events `{id, k, v, ts}` (ids from `first`, one ms apart) to `topic`,
/// partition `partition_of(id)`, and waits until the broker has them all.
fn produce_events(
    bootstrap: &str,
    topic: &str,
    first: i64,
    count: i64,
    partition_of: fn(i64) -> i32,
    compression: &str,
    batch_bytes: &str,
) {
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
    const BASE_MS: i64 = 1_767_225_600_000;
    let producer: ThreadedProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("queue.buffering.max.messages", "1000000")
        .set("compression.type", compression)
        .set("linger.ms", "20")
        .set("batch.size", batch_bytes)
        .create_with_context(Deliveries::default())
        .expect("producer");
    for id in first..first + count {
        let ts = chrono::DateTime::from_timestamp_millis(BASE_MS + id)
            .unwrap()
            .naive_utc()
            .format("%Y-%m-%d %H:%M:%S%.3f");
        let payload = format!(
            r#"{{"id": {id}, "k": {}, "v": {}, "ts": "{ts}"}}"#,
            id % 8,
            id % 1000
        );
        let mut record = BaseRecord::<(), str>::to(topic)
            .partition(partition_of(id))
            .payload(&payload);
        while let Err((_, back)) = producer.send(record) {
            record = back;
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    producer.context().assert_all_delivered();
}

/// Each partition of source `ev`: (partition, position, end offset), read while it runs.
async fn partition_positions(client: &tokio_postgres::Client) -> Vec<(i32, i64, i64)> {
    client
        .query(
            "SELECT partition, position, end_offset FROM sluice_source_partitions
               WHERE source_name = 'ev' AND end_offset IS NOT NULL ORDER BY partition",
            &[],
        )
        .await
        .map(|rows| {
            rows.iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect()
        })
        .unwrap_or_default()
}

/// Killed while its partitions are read at different offsets (a backlog of unequal size per
/// partition), three times, the Kafka source resumes every partition from its own log: in
/// the end it holds every record once, each partition is read to its end, and every view
/// equals its batch query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_partitions_are_mid_fetch_resumes_every_partition() {
    const EVENTS: i64 = 120_000;
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    let bootstrap = cluster.bootstrap_servers();
    cluster.create_topic("events", 3, 1).expect("topic");
    // Half the events to partition 0, a third to 1, a sixth to 2.
    produce_events(
        &bootstrap,
        "events",
        0,
        EVENTS,
        |id| [0, 0, 0, 1, 1, 2][(id % 6) as usize],
        "lz4",
        "4096",
    );
    assert_broker_kept_everything(&bootstrap, "events");

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let args = ["--checkpoint-interval", "300ms"];
    let mut child = spawn_with(dir.path(), port, &args);
    let client = connect(port).await;
    // Small batches, one a fetch: the backlog takes long enough to read that the kills land
    // mid-way.
    client
        .batch_execute(&format!(
            "{}
             {VIEWS}",
            source_and_table(&bootstrap).replace(
                "idle.timeout = '1s')",
                "idle.timeout = '1s', properties.fetch.max.bytes = '4096',
                   properties.message.max.bytes = '4096', properties.max.partition.fetch.bytes = '4096')"
            )
        ))
        .await
        .unwrap();
    client
        .batch_execute("INSERT INTO pk VALUES (1, 1, 10), (2, 2, 20), (3, 1, 30)")
        .await
        .unwrap();
    drop(client);

    let mut kills_mid_fetch = 0;
    let mut last_total = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while kills_mid_fetch < 3 {
        let client = connect(port).await;
        let seen = partition_positions(&client).await;
        let total: i64 = seen.iter().map(|p| p.1).sum();
        let mid_fetch = seen.len() == 3
            && seen
                .iter()
                .any(|&(_, position, end)| 0 < position && position < end)
            && total > last_total;
        if mid_fetch {
            eprintln!("killed while partitions (partition, position, end) stood at {seen:?}");
            child.kill();
            kills_mid_fetch += 1;
            last_total = total;
            child = spawn_with(dir.path(), port, &args);
            continue;
        }
        assert!(
            seen.iter().any(|&(_, position, end)| position < end) || seen.len() < 3,
            "the source read every partition before 3 kills mid-fetch: {seen:?}"
        );
        assert!(
            Instant::now() < deadline,
            "no progress to kill in: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let client = connect(port).await;
    wait_for_every_event(&client, EVENTS, Duration::from_secs(120)).await;
    let per_partition = common::sorted_rows(
        &client,
        "SELECT partition, position, end_offset, skipped_offsets FROM sluice_source_partitions
           WHERE source_name = 'ev'",
    )
    .await;
    assert_eq!(
        per_partition,
        ["0|60000|60000|0", "1|40000|40000|0", "2|20000|20000|0"]
    );
    client.batch_execute("FLUSH").await.unwrap();
    assert_views_equal_batch_queries(&client, "after 3 kills mid-fetch").await;
    child.kill();
}

/// While the server is down, the broker deletes records the source has not read (librdkafka's
/// mock broker keeps 5 MB a partition). After the restart the source does not jump to the
/// end and call itself complete: it goes on from the oldest record the broker still holds,
/// and `sluice_source_partitions` counts the offsets it could not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_the_broker_deleted_before_they_were_read_are_counted() {
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    let bootstrap = cluster.bootstrap_servers();
    cluster.create_topic("events", 1, 1).expect("topic");
    produce_events(&bootstrap, "events", 0, 1_000, |_| 0, "none", "1000000");

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = spawn(dir.path(), port);
    let client = connect(port).await;
    client
        .batch_execute(&source_and_table(&bootstrap))
        .await
        .unwrap();
    wait_for_every_event(&client, 1_000, Duration::from_secs(60)).await;
    child.kill();

    // 150,000 uncompressed events (about 10 MB): the broker deletes the oldest.
    produce_events(
        &bootstrap,
        "events",
        1_000,
        150_000,
        |_| 0,
        "none",
        "1000000",
    );
    let (low, high) = watermarks(&bootstrap, "events")[&0];
    assert!(
        low > 1_000,
        "the broker deleted records the source did not read ({low})"
    );
    assert_eq!(high, 151_000);

    let _child = spawn(dir.path(), port);
    let client = connect(port).await;
    let expected = format!("0|{high}|{high}|{}|idle", low - 1_000);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let shown = common::sorted_rows(
            &client,
            "SELECT partition, position, end_offset, skipped_offsets, state FROM sluice_source_partitions
               WHERE source_name = 'ev'",
        )
        .await;
        if shown == [expected.clone()] {
            break;
        }
        assert!(Instant::now() < deadline, "{shown:?}, expected {expected}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let held = common::sorted_rows(
        &client,
        "SELECT count(*), count(DISTINCT id), min(id) FILTER (WHERE id >= 1000) FROM ev",
    )
    .await;
    assert_eq!(
        held,
        [format!(
            "{}|{}|{low}",
            1_000 + high - low,
            1_000 + high - low
        )]
    );
    let status = common::sorted_rows(
        &client,
        "SELECT status FROM sluice_sources WHERE source_name = 'ev'",
    )
    .await;
    assert_eq!(status, ["running"]);
}
