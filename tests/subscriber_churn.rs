//! Subscriber churn, alone in its own test binary so that the process's memory is the
//! server's: 200 subscriptions, half the clients cut off abruptly, then the rest; tasks and the
//! live heap (counted by a wrapping allocator: resident memory also moves with the pages of
//! this debug binary and with what the allocator keeps) must come back to where they were.

mod common;

use std::time::{Duration, Instant};

use futures::StreamExt;

use common::{TestServer, subscriptions, wait_for_subscriptions};

/// Counts the bytes allocated and not yet freed, in the whole process (the server runs in it):
/// unlike resident memory, it does not depend on what the allocator keeps for later.
struct CountingAllocator;

static LIVE_BYTES: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only sizes are counted.
unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new as isize - layout.size() as isize,
            std::sync::atomic::Ordering::Relaxed,
        );
        unsafe { std::alloc::System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn live_bytes() -> isize {
    LIVE_BYTES.load(std::sync::atomic::Ordering::Relaxed)
}

/// Resident memory of this process, in bytes.
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
        memory.push((live_bytes(), resident_bytes()));
    }
    eprintln!(
        "after each round of 200 subscribers: live heap {:?} KB, resident {:?} MB",
        memory.iter().map(|m| m.0 >> 10).collect::<Vec<_>>(),
        memory.iter().map(|m| m.1 >> 20).collect::<Vec<_>>()
    );
    // Once warm, rounds leave nothing behind on the heap: a leak of even 1 KB per subscriber
    // would add 800 KB over these 800.
    assert!(
        memory[5].0 <= memory[1].0 + (256 << 10),
        "the live heap grows round after round: {memory:?}"
    );
}
