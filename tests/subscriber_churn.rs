//! Subscriber churn, alone in its own test binary so that the process's memory is the
//! server's: 200 subscriptions, half the clients cut off abruptly, then the rest; tasks and
//! resident memory must come back to where they were after an identical first round.

mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;

use common::{TestServer, subscriptions, wait_for_subscriptions};

/// Resident memory of this process (the server runs in it), in bytes.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_subscribers_cut_off_abruptly_leave_nothing_behind() {
    let server = TestServer::start_with(|c| c.barrier_interval = Duration::from_millis(10)).await;
    let client = server.connect().await;
    client
        .batch_execute("CREATE TABLE t (v INT); CREATE MATERIALIZED VIEW c AS SELECT count(*) AS n, sum(v) AS s FROM t")
        .await
        .unwrap();
    let metrics = tokio::runtime::Handle::current().metrics();
    let open = async || {
        let (client, connection) = common::connect_cuttable(server.port()).await;
        let stream = client
            .copy_out("COPY (SUBSCRIBE TO c WITH (PROGRESS = true)) TO STDOUT")
            .await
            .unwrap();
        let mut stream = Box::pin(stream);
        stream.next().await.unwrap().unwrap();
        (client, connection, stream)
    };
    let tasks_start = metrics.num_alive_tasks();
    let mut memory = Vec::new();
    let mut inserted = 0;
    for round in 0..6 {
        let mut subscribers = Vec::new();
        for _ in 0..200 {
            subscribers.push(open().await);
        }
        assert_eq!(subscriptions(&server), (200, 0));
        assert!(metrics.num_alive_tasks() >= tasks_start + 200);

        // Half the clients vanish without a word: their sockets just close.
        let mut rest = subscribers.split_off(100);
        for (_, connection, _) in &subscribers {
            connection.abort();
        }
        drop(subscribers);
        let took = wait_for_subscriptions(&server, (100, 0)).await;
        assert!(took < Duration::from_secs(1), "round {round}: {took:?}");

        // The survivors still get the changes.
        client
            .batch_execute("INSERT INTO t VALUES (1)")
            .await
            .unwrap();
        inserted += 1;
        let expected = format!("\tf\t1\t{inserted}\t{inserted}\n");
        for (_, _, stream) in rest.iter_mut().take(5) {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap();
                if String::from_utf8_lossy(&chunk).ends_with(&expected) {
                    break;
                }
                assert!(Instant::now() < deadline, "round {round}: no {expected:?}");
            }
        }
        for (_, connection, _) in &rest {
            connection.abort();
        }
        drop(rest);
        wait_for_subscriptions(&server, (0, 0)).await;

        let deadline = Instant::now() + Duration::from_secs(5);
        while metrics.num_alive_tasks() > tasks_start && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let tasks = metrics.num_alive_tasks();
        assert!(
            tasks <= tasks_start,
            "round {round}: tasks {tasks_start} -> {tasks}"
        );
        memory.push(resident_bytes());
    }
    eprintln!(
        "resident memory after each round of 200 subscribers: {:?} MB",
        memory.iter().map(|m| m >> 20).collect::<Vec<_>>()
    );
    // Once the allocator has its pages, rounds leave nothing more behind: a leak of even 5 KB
    // per subscriber would add 4 MB over these 800.
    assert!(
        memory[5] <= memory[1] + (3 << 20),
        "resident memory grows round after round: {memory:?}"
    );
}
