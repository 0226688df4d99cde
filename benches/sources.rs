//! Source benchmarks; each prints events/s.
//!
//! - `cargo bench --bench sources -- kafka [N]`: N JSON bids (default 1,000,000) produced to a
//!   topic (one partition per 4 MB: the mock broker keeps 5 MB per partition) of librdkafka's mock cluster, then read by a Kafka source into a
//!   pass-through view, and by a second source into a HOP view (slide 2 s, size 10 s). The time
//!   is from CREATE SOURCE until the view holds every event.
//! - `cargo bench --bench sources -- file PATH`: the HOP view of ../shared/bench/peers
//!   (slide 2 s, size 10 s, per auction: count, sum and max of price) over the CSV bids at PATH
//!   (a file, or a directory of part files), EMIT ON WINDOW CLOSE; prints the time until the
//!   source is exhausted and every window is out, and the checksum the peers' DuckDB script
//!   prints.
//! - `cargo bench --bench sources -- postgres-cdc [N]`: a PostgreSQL table of N rows (default
//!   1,000,000) in the machine's PostgreSQL (127.0.0.1:5432, database `test`, wal_level =
//!   logical) taken as a CDC table's snapshot (rows/s until `count(*)` in a view is N), then N
//!   rows updated upstream in transactions of 10,000 rows (changes/s from the first update
//!   until the view's sum shows the last), then N more while Sluice is stopped (changes/s
//!   from its restart until it caught up).
//! - `cargo bench --bench sources -- rabbitmq [N]`: N JSON bids (default 1,000,000) published
//!   to a stream queue and to a classic queue of the machine's RabbitMQ (127.0.0.1:5672), then
//!   read by a source each into a count view (messages/s from CREATE SOURCE until every
//!   message is in), beside a bare lapin consumer reading the stream queue.
//!
//! Every mode prints the process's peak resident memory at the end.

mod common;

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sluice::connector::nexmark::{NexmarkConfig, NexmarkGenerator};
use sluice::storage::FsyncPolicy;
use tokio_postgres::Client;

const BID_COLUMNS: &str = "auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, \
                           url VARCHAR, date_time TIMESTAMP, extra VARCHAR";
const HOP_VIEW: &str = "SELECT auction, window_start, count(*) AS c, sum(price) AS s, max(price) AS m \
                        FROM HOP({src}, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) \
                        GROUP BY auction, window_start";

#[tokio::main]
async fn main() {
    common::init_logs();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let count = |default: usize| args.get(1).and_then(|a| a.parse().ok()).unwrap_or(default);
    match args.first().map(String::as_str) {
        Some("postgres-cdc") => postgres_cdc(count(1_000_000)).await,
        Some("rabbitmq") => rabbitmq(count(1_000_000)).await,
        Some("file") => {
            let path = args
                .get(1)
                .cloned()
                .unwrap_or_else(|| "/tmp/peers/bids_10m_x2".into());
            file(&path).await;
        }
        _ => {
            let n = args
                .get(1)
                .and_then(|a| a.parse().ok())
                .unwrap_or(1_000_000);
            kafka(n).await;
        }
    }
    println!(
        "peak memory: {} MB",
        common::peak_rss_mb(std::process::id())
    );
}

/// Waits until `sql` (one BIGINT) in Sluice gives `want`, failing if a source failed.
async fn wait_value(client: &Client, sql: &str, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let got: Option<i64> = client.query_one(sql, &[]).await.expect(sql).get(0);
        if got == Some(want) {
            return;
        }
        let failed: i64 = client
            .query_one(
                "SELECT count(*) FROM sluice_sources WHERE status = 'failed'",
                &[],
            )
            .await
            .expect("sluice_sources")
            .get(0);
        assert_eq!(failed, 0, "a source failed");
        assert!(Instant::now() < deadline, "{sql}: {got:?}, expected {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn postgres_cdc(n: usize) {
    let n = n as i64;
    let (pg, connection) = tokio_postgres::connect(
        "host=127.0.0.1 port=5432 user=postgres dbname=test",
        tokio_postgres::NoTls,
    )
    .await
    .expect("the machine's PostgreSQL");
    tokio::spawn(connection);
    pg.execute(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
         WHERE slot_name = 'sluice_bench_cdc'",
        &[],
    )
    .await
    .expect("slot");
    let started = Instant::now();
    pg.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS sluice_bench CASCADE; CREATE SCHEMA sluice_bench;
         CREATE TABLE sluice_bench.rows (id BIGINT PRIMARY KEY, g INT, v BIGINT, s TEXT,
                                         at TIMESTAMPTZ);
         INSERT INTO sluice_bench.rows SELECT i, i % 1000, i, 'row ' || i,
           TIMESTAMPTZ '2026-01-01 00:00:00+00' + i * INTERVAL '1 second'
           FROM generate_series(1, {n}) i;
         ANALYZE sluice_bench.rows;"
    ))
    .await
    .expect("upstream table");
    println!(
        "postgres: {n} rows inserted in {:.2} s",
        started.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir().expect("dir");
    let (server, client) = common::start_server(dir.path(), FsyncPolicy::Always).await;
    let started = Instant::now();
    client
        .batch_execute(
            "CREATE TABLE rows (id BIGINT PRIMARY KEY, g INT, v BIGINT, s TEXT, at TIMESTAMPTZ)
               WITH (connector = 'postgres-cdc', hostname = '127.0.0.1', port = '5432',
                     username = 'postgres', database.name = 'test', schema.name = 'sluice_bench',
                     table.name = 'rows', slot.name = 'sluice_bench_cdc');
             CREATE MATERIALIZED VIEW totals AS SELECT count(*) AS n, sum(v) AS total FROM rows;",
        )
        .await
        .expect("DDL");
    wait_value(&client, "SELECT n FROM totals", n).await;
    let snapshot = started.elapsed().as_secs_f64();
    println!(
        "postgres-cdc snapshot: {n} rows in {snapshot:.2} s ({:.3} M rows/s)",
        n as f64 / snapshot / 1e6
    );

    // N updates, 10,000 rows a transaction, each adding 1 to v.
    let before: i64 = n * (n + 1) / 2;
    let started = Instant::now();
    update_all(&pg, n).await;
    let upstream = started.elapsed().as_secs_f64();
    wait_value(&client, "SELECT total::BIGINT FROM totals", before + n).await;
    let streamed = started.elapsed().as_secs_f64();
    println!(
        "postgres-cdc stream: {n} updated rows in {streamed:.2} s ({:.3} M changes/s; \
         PostgreSQL took {upstream:.2} s to make them)",
        n as f64 / streamed / 1e6
    );
    // Sluice stopped, N more changes upstream; then the time to catch up on them.
    drop(client);
    server.shutdown().await;
    update_all(&pg, n).await;
    let started = Instant::now();
    let (_server, client) = common::start_server(dir.path(), FsyncPolicy::Always).await;
    wait_value(&client, "SELECT total::BIGINT FROM totals", before + 2 * n).await;
    let caught_up = started.elapsed().as_secs_f64();
    println!(
        "postgres-cdc catch-up: {n} rows updated while Sluice was stopped, applied in \
         {caught_up:.2} s from its restart ({:.3} M changes/s)",
        n as f64 / caught_up / 1e6
    );
    client
        .batch_execute("DROP MATERIALIZED VIEW totals; DROP TABLE rows")
        .await
        .expect("drop");
    pg.batch_execute("DROP SCHEMA sluice_bench CASCADE")
        .await
        .expect("drop schema");
}

/// Adds 1 to `v` of every row, 10,000 rows a transaction.
async fn update_all(pg: &Client, n: i64) {
    let mut from = 1;
    while from <= n {
        let to = (from + 9_999).min(n);
        pg.execute(
            "UPDATE sluice_bench.rows SET v = v + 1 WHERE id BETWEEN $1 AND $2",
            &[&from, &to],
        )
        .await
        .expect("update");
        from = to + 1;
    }
}

async fn rabbitmq(n: usize) {
    use lapin::options::{
        BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
    };
    use lapin::types::{AMQPValue, FieldTable};
    const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
    let connection = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default())
        .await
        .expect("the machine's RabbitMQ");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let mut generator = NexmarkGenerator::new(NexmarkConfig::default());
    let mut messages: Vec<Vec<u8>> = Vec::with_capacity(n);
    while messages.len() < n {
        let batch = generator
            .next_bids(8192.min(n - messages.len()))
            .expect("bids");
        messages.extend(sluice::connector::sink::json_lines(&batch).expect("json"));
    }
    for (queue, stream) in [
        ("sluice_bench_stream", true),
        ("sluice_bench_classic", false),
    ] {
        channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await
            .expect("delete");
        let mut arguments = FieldTable::default();
        if stream {
            arguments.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("stream".into()),
            );
        }
        channel
            .queue_declare(queue.into(), QueueDeclareOptions::durable(), arguments)
            .await
            .expect("declare");
        let started = Instant::now();
        for chunk in messages.chunks(10_000) {
            let mut confirms = Vec::with_capacity(chunk.len());
            for m in chunk {
                confirms.push(
                    channel
                        .basic_publish(
                            "".into(),
                            queue.into(),
                            BasicPublishOptions::default(),
                            m,
                            lapin::BasicProperties::default(),
                        )
                        .await
                        .expect("publish"),
                );
            }
            for c in confirms {
                c.await.expect("confirm");
            }
        }
        println!(
            "rabbitmq: {n} messages published to {queue} in {:.2} s",
            started.elapsed().as_secs_f64()
        );
    }
    // The bare client: lapin reading the stream queue, acknowledging every 1,000.
    {
        use futures::StreamExt;
        let consumer_channel = connection.create_channel().await.expect("channel");
        consumer_channel
            .basic_qos(5000, lapin::options::BasicQosOptions::default())
            .await
            .expect("qos");
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-stream-offset".into(),
            AMQPValue::LongString("first".into()),
        );
        let started = Instant::now();
        let mut consumer = consumer_channel
            .basic_consume(
                "sluice_bench_stream".into(),
                "bench".into(),
                lapin::options::BasicConsumeOptions::default(),
                arguments,
            )
            .await
            .expect("consume");
        let mut read = 0usize;
        while read < n {
            let delivery = consumer.next().await.expect("open").expect("delivery");
            read += 1;
            if read.is_multiple_of(1000) {
                consumer_channel
                    .basic_ack(
                        delivery.delivery_tag,
                        lapin::options::BasicAckOptions { multiple: true },
                    )
                    .await
                    .expect("ack");
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "bare lapin consumer: {read} messages of the stream queue in {elapsed:.2} s ({:.3} M messages/s)",
            read as f64 / elapsed / 1e6
        );
        consumer_channel
            .close(200, "done".into())
            .await
            .expect("close");
    }
    let dir = tempfile::tempdir().expect("dir");
    let (_server, client) = common::start_server(dir.path(), FsyncPolicy::Always).await;
    for (queue, kind) in [
        ("sluice_bench_stream", "stream"),
        ("sluice_bench_classic", "classic"),
    ] {
        let started = Instant::now();
        client
            .batch_execute(&format!(
                "CREATE SOURCE src_{kind} ({BID_COLUMNS})
                   WITH (connector = 'rabbitmq', url = '{AMQP}', queue = '{queue}')
                   FORMAT PLAIN ENCODE JSON;
                 CREATE MATERIALIZED VIEW n_{kind} AS SELECT count(*) AS n FROM src_{kind};"
            ))
            .await
            .expect("DDL");
        wait_value(&client, &format!("SELECT n FROM n_{kind}"), n as i64).await;
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "rabbitmq {kind} queue -> count view: {n} messages in {elapsed:.2} s ({:.3} M messages/s)",
            n as f64 / elapsed / 1e6
        );
    }
    for queue in ["sluice_bench_stream", "sluice_bench_classic"] {
        channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await
            .expect("delete");
    }
}

/// Counts failed deliveries and remembers the first error.
#[derive(Default)]
struct Deliveries {
    failed: std::sync::atomic::AtomicUsize,
    first: std::sync::Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.first
                .lock()
                .unwrap()
                .get_or_insert_with(|| e.to_string());
        }
    }
}

async fn wait_rows(client: &Client, source: &str, n: i64) {
    let mut report = Instant::now();
    loop {
        let row = client
            .query_one(
                "SELECT rows, bad_records, status, error FROM sluice_sources WHERE source_name = $1",
                &[&source],
            )
            .await
            .expect("sluice_sources");
        let rows: i64 = row.get(0);
        let bad: i64 = row.get(1);
        let status: String = row.get(2);
        assert_ne!(status, "failed", "{:?}", row.get::<_, Option<String>>(3));
        if rows + bad >= n || status == "finished" {
            return;
        }
        if report.elapsed() > Duration::from_secs(10) {
            eprintln!("  {source}: {rows} rows, {bad} bad records so far ({status})");
            report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn kafka(n: usize) {
    let cluster = MockCluster::new(1).expect("mock cluster");
    let bootstrap = cluster.bootstrap_servers();
    // librdkafka's mock broker keeps at most 5 MB per partition (it drops the oldest
    // records past that): enough partitions to hold every record.
    let partitions = (n * 240 / (4 << 20) + 1).max(3) as i32;
    cluster.create_topic("bids", partitions, 1).expect("topic");
    let producer: ThreadedProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create_with_context(Deliveries::default())
        .expect("producer");
    let started = Instant::now();
    let mut generator = NexmarkGenerator::new(NexmarkConfig {
        event_num: Some(n as u64 * 50 / 46 + 100),
        ..NexmarkConfig::default()
    });
    let mut produced = 0usize;
    let mut bytes = 0usize;
    while produced < n {
        let batch = generator.next_bids(8192.min(n - produced)).expect("bids");
        if batch.num_rows() == 0 {
            break;
        }
        for line in sluice::connector::sink::json_lines(&batch).expect("json") {
            let mut record = BaseRecord::<(), [u8]>::to("bids").payload(line.as_slice());
            record = record.partition(produced as i32 % partitions);
            bytes += line.len();
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        record = back;
                        producer.poll(Duration::from_millis(1));
                    }
                }
            }
            produced += 1;
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    let held: i64 = (0..partitions)
        .map(|p| {
            let (low, high) = producer
                .client()
                .fetch_watermarks("bids", p, Duration::from_secs(10))
                .expect("watermarks");
            high - low
        })
        .sum();
    let context = producer.context();
    assert_eq!(
        held as usize,
        n,
        "the topic holds every record produced; {} failed, first: {:?}",
        context.failed.load(std::sync::atomic::Ordering::Relaxed),
        context.first.lock().unwrap()
    );
    println!(
        "produced {produced} JSON bids ({:.0} bytes each) to {partitions} partitions of the mock cluster in {:.1} s",
        bytes as f64 / produced as f64,
        started.elapsed().as_secs_f64()
    );

    // The ceiling: a bare consumer reading every record (no decoding, no storing).
    let started = Instant::now();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", "baseline")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset("bids", p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&assignment).expect("assign");
    let mut read = 0usize;
    while read < produced {
        if let Some(message) = consumer.poll(Duration::from_secs(5)) {
            message.expect("message");
            read += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "bare rdkafka consumer: {read} records in {elapsed:.2} s ({:.2} M records/s)",
        read as f64 / elapsed / 1e6
    );
    drop(consumer);

    let dir = tempfile::tempdir().expect("dir");
    let (_server, client) = common::start_server(dir.path(), FsyncPolicy::Never).await;
    for (name, view) in [
        ("pass_through", "SELECT * FROM {src}".to_string()),
        ("hop", HOP_VIEW.to_string()),
    ] {
        let src = format!("src_{name}");
        let extra = std::env::var("KAFKA_EXTRA").unwrap_or_default();
        let started = Instant::now();
        client
            .batch_execute(&format!(
                "CREATE SOURCE {src} ({BID_COLUMNS}, WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND) \
                 WITH (connector = 'kafka', topic = 'bids', properties.bootstrap.server = '{bootstrap}'{extra}) \
                 FORMAT PLAIN ENCODE JSON; \
                 CREATE MATERIALIZED VIEW v_{name} AS {}",
                view.replace("{src}", &src)
            ))
            .await
            .expect("DDL");
        wait_rows(&client, &src, produced as i64).await;
        let ingested = started.elapsed().as_secs_f64();
        client.batch_execute("FLUSH").await.expect("flush");
        let total = started.elapsed().as_secs_f64();
        let rows: i64 = client
            .query_one(&format!("SELECT count(*) FROM v_{name}"), &[])
            .await
            .expect("count")
            .get(0);
        println!(
            "kafka JSON -> {name}: {produced} events, decoded and stored in {ingested:.2} s \
             ({:.2} M events/s), view caught up in {total:.2} s ({:.2} M events/s), {rows} view rows",
            produced as f64 / ingested / 1e6,
            produced as f64 / total / 1e6
        );
    }
}

async fn file(path: &str) {
    let pattern = if std::path::Path::new(path).is_dir() {
        format!("{path}/*.csv")
    } else {
        path.to_string()
    };
    let dir = tempfile::tempdir().expect("dir");
    // The files are read where they are: the root is the root of their absolute path.
    let (_server, client) = common::start_server_with(dir.path(), FsyncPolicy::Never, |c| {
        c.file_source_root = Some("/".into())
    })
    .await;
    let started = Instant::now();
    client
        .batch_execute(&format!(
            "CREATE SOURCE bid ({BID_COLUMNS}, WATERMARK FOR date_time AS date_time) \
             WITH (connector = 'file', path = '{pattern}') FORMAT PLAIN ENCODE CSV; \
             CREATE MATERIALIZED VIEW hop AS {} EMIT ON WINDOW CLOSE",
            HOP_VIEW.replace("{src}", "bid")
        ))
        .await
        .expect("DDL");
    wait_rows(&client, "bid", i64::MAX).await;
    client.batch_execute("FLUSH").await.expect("flush");
    let elapsed = started.elapsed().as_secs_f64();
    let row = client
        .query_one(
            "SELECT (SELECT rows FROM sluice_sources WHERE source_name = 'bid'), count(*), \
               sum(c), sum(s), sum(m), sum(CAST(extract(epoch FROM window_start) AS BIGINT)) FROM hop",
            &[],
        )
        .await
        .expect("checksum");
    let events: i64 = row.get(0);
    println!(
        "file CSV -> HOP view (EOWC, slide 2 s, size 10 s): {events} events in {elapsed:.2} s ({:.2} M events/s)",
        events as f64 / elapsed / 1e6
    );
    println!(
        "checksum: rows {}, sum_c {}, sum_s {}, sum_m {}, sum_ws {}",
        row.get::<_, i64>(1),
        row.get::<_, i64>(2),
        row.get::<_, i64>(3),
        row.get::<_, i64>(4),
        row.get::<_, i64>(5),
    );
}
