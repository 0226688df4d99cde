//! RabbitMQ as a real system beside Sluice: the machine's broker on 127.0.0.1:5672
//! (guest/guest). JSON messages, 1 % malformed, are published to a stream queue and to a
//! classic queue while the Sluice server is killed with SIGKILL now and then; in the end the
//! stream source holds each well-formed message exactly once, the classic source each one at
//! least once, and every view equals its query run in batch over its source.

mod common;

use std::time::{Duration, Instant};

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rand::{Rng, SeedableRng};
use tokio_postgres::Client;

use common::process::{ServerProcess, connect_when_up, free_port, spawn_with};
use common::sorted_rows;

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn spawn(dir: &std::path::Path, port: u16) -> ServerProcess {
    spawn_with(dir, port, &["--checkpoint-interval", "200ms"])
}

/// A channel with publisher confirms; `queues` deleted and declared afresh (`stream`: as
/// stream queues).
async fn broker(queues: &[(&str, bool)]) -> (Connection, lapin::Channel) {
    let connection = Connection::connect(AMQP, ConnectionProperties::default())
        .await
        .expect("the machine's RabbitMQ on 127.0.0.1:5672");
    let channel = connection.create_channel().await.unwrap();
    for &(queue, stream) in queues {
        channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await
            .unwrap();
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
            .unwrap();
    }
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    (connection, channel)
}

/// Publishes `messages` to `queue` and waits for the broker's confirms.
async fn publish(channel: &lapin::Channel, queue: &str, messages: &[String]) {
    let mut confirms = Vec::with_capacity(messages.len());
    for m in messages {
        confirms.push(
            channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    m.as_bytes(),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap(),
        );
    }
    for confirm in confirms {
        confirm.await.unwrap();
    }
}

/// `count` messages numbered from `first`; every 100th is malformed. Returns the messages and
/// how many are well-formed.
fn messages(rng: &mut impl Rng, first: i64, count: i64) -> (Vec<String>, i64) {
    let mut good = 0;
    let out = (first..first + count)
        .map(|id| {
            if id % 100 == 99 {
                format!("{{\"id\": {id}, \"g\": ")
            } else {
                good += 1;
                format!(
                    "{{\"id\": {id}, \"g\": {}, \"v\": {}}}",
                    rng.random_range(0..20),
                    rng.random_range(-50..1000)
                )
            }
        })
        .collect();
    (out, good)
}

async fn scalar(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// Waits until `sql` gives `want`.
async fn await_value(client: &Client, sql: &str, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        client.batch_execute("FLUSH").await.unwrap();
        let got = scalar(client, sql).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{sql}: {got}, expected {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_queue_exactly_once_and_classic_queue_at_least_once_across_sigkills() {
    const STREAM: &str = "sluice_test_stream";
    const CLASSIC: &str = "sluice_test_classic";
    let (_connection, channel) = broker(&[(STREAM, true), (CLASSIC, false)]).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = spawn(dir.path(), port);
    let mut sluice = connect_when_up(port).await;
    sluice
        .batch_execute(&format!(
            "CREATE SOURCE s_stream (id BIGINT, g INT, v INT)
               WITH (connector = 'rabbitmq', url = '{AMQP}', queue = '{STREAM}')
               FORMAT PLAIN ENCODE JSON;
             CREATE SOURCE s_classic (id BIGINT, g INT, v INT)
               WITH (connector = 'rabbitmq', url = '{AMQP}', queue = '{CLASSIC}', prefetch.count = '500')
               FORMAT PLAIN ENCODE JSON;
             CREATE MATERIALIZED VIEW per_g_stream AS
               SELECT g, count(*) AS n, sum(v) AS total FROM s_stream GROUP BY g;
             CREATE MATERIALIZED VIEW per_g_classic AS
               SELECT g, count(*) AS n, sum(v) AS total FROM s_classic GROUP BY g;"
        ))
        .await
        .unwrap();

    let mut rng = rand::rngs::StdRng::seed_from_u64(
        std::env::var("SLUICE_TEST_SEED").map_or(31, |s| s.parse().expect("a u64 seed")),
    );
    let mut good = 0;
    let mut next = 0;
    for round in 0..8 {
        let (batch, ok) = messages(&mut rng, next, 3000);
        next += 3000;
        good += ok;
        publish(&channel, STREAM, &batch).await;
        publish(&channel, CLASSIC, &batch).await;
        if round % 2 == 1 {
            // Killed while the sources are somewhere in what was just published.
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..150))).await;
            child.kill();
            child = spawn(dir.path(), port);
            sluice = connect_when_up(port).await;
        }
    }
    await_value(&sluice, "SELECT count(*) FROM s_stream", good).await;
    await_value(&sluice, "SELECT count(DISTINCT id) FROM s_classic", good).await;
    let stream_ids = scalar(&sluice, "SELECT count(DISTINCT id) FROM s_stream").await;
    assert_eq!(stream_ids, good, "every message of the stream once");
    let classic_rows = scalar(&sluice, "SELECT count(*) FROM s_classic").await;
    assert!(classic_rows >= good);
    eprintln!("classic queue: {classic_rows} rows for {good} messages (at least once)");

    // No kill from here on: malformed messages are counted exactly.
    let bad_before = scalar(
        &sluice,
        "SELECT bad_records FROM sluice_sources WHERE source_name = 's_stream'",
    )
    .await;
    let (batch, ok) = messages(&mut rng, next, 1000);
    good += ok;
    publish(&channel, STREAM, &batch).await;
    publish(&channel, CLASSIC, &batch).await;
    await_value(&sluice, "SELECT count(*) FROM s_stream", good).await;
    await_value(&sluice, "SELECT count(DISTINCT id) FROM s_classic", good).await;
    let bad_after = scalar(
        &sluice,
        "SELECT bad_records FROM sluice_sources WHERE source_name = 's_stream'",
    )
    .await;
    assert_eq!(
        bad_after - bad_before,
        1000 - ok,
        "malformed messages counted"
    );

    // Every row is in the sources: once an epoch has taken them, each view equals its batch
    // query (a FLUSH waits for an epoch that started after it).
    sluice.batch_execute("FLUSH").await.unwrap();
    for (view, source) in [("per_g_stream", "s_stream"), ("per_g_classic", "s_classic")] {
        let streamed = sorted_rows(&sluice, &format!("SELECT g, n, total FROM {view}")).await;
        let batch = sorted_rows(
            &sluice,
            &format!("SELECT g, count(*), sum(v) FROM {source} GROUP BY g"),
        )
        .await;
        assert_eq!(streamed, batch, "{view} equals its batch query");
        assert_eq!(streamed.len(), 20);
    }
    drop(child);
    let (_c, channel) = broker(&[]).await;
    for queue in [STREAM, CLASSIC] {
        channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    }
}

/// `examples/rabbitmq/pipeline.sql` as shipped, over readings published to its stream queue
/// (1 % malformed): every closed window equals the batch query over the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_example_pipeline_runs_as_shipped() {
    let (_connection, channel) = broker(&[("readings", true)]).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    // 30 seconds of readings, then one a minute later that closes their windows.
    let mut messages: Vec<String> = (0..600)
        .map(|i| {
            if i % 100 == 99 {
                "{\"sensor\": \"s1\", \"celsius\": ".to_string()
            } else {
                format!(
                    "{{\"sensor\": \"s{}\", \"celsius\": {}.5, \"at\": \"2026-01-01 00:00:{:02}.{}\"}}",
                    rng.random_range(1..6),
                    rng.random_range(10..30),
                    i / 20,
                    (i % 20) * 5
                )
            }
        })
        .collect();
    messages.push(r#"{"sensor": "s1", "celsius": 1.0, "at": "2026-01-01 00:01:30"}"#.into());
    publish(&channel, "readings", &messages).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _child = spawn(dir.path(), port);
    let sluice = connect_when_up(port).await;
    let pipeline = std::fs::read_to_string(format!(
        "{}/examples/rabbitmq/pipeline.sql",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    sluice.batch_execute(&pipeline).await.unwrap();
    await_value(&sluice, "SELECT count(*) FROM readings", 595).await;
    await_value(&sluice, "SELECT sum(n)::BIGINT FROM per_sensor", 594).await;
    let streamed = sorted_rows(
        &sluice,
        "SELECT sensor, window_start, n, mean, peak FROM per_sensor",
    )
    .await;
    let batch = sorted_rows(
        &sluice,
        "SELECT sensor, window_start, count(*), avg(celsius), max(celsius)
         FROM TUMBLE(readings, at, INTERVAL '10 seconds')
         WHERE at < TIMESTAMP '2026-01-01 00:01:00' GROUP BY sensor, window_start",
    )
    .await;
    assert_eq!(streamed, batch);
    let bad: i64 = scalar(
        &sluice,
        "SELECT bad_records FROM sluice_sources WHERE source_name = 'readings'",
    )
    .await;
    assert_eq!(bad, 6);
    channel
        .queue_delete("readings".into(), QueueDeleteOptions::default())
        .await
        .unwrap();
}
