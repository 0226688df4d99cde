//! Every Nexmark query (`tests/nexmark/queries.rs`) as a view over the generator, created before
//! the events flow, equals the same query run in batch once every source has finished, at
//! parallelism 1 and 4.

mod common;
#[path = "nexmark/queries.rs"]
mod queries;

use tokio_postgres::Client;

async fn wait_for_sources(client: &Client) {
    for _ in 0..600 {
        let rows = client
            .query(
                "SELECT count(*) FROM sluice_sources WHERE status <> 'finished'",
                &[],
            )
            .await
            .expect("sluice_sources");
        if rows[0].get::<_, i64>(0) == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the Nexmark sources never finished");
}

async fn run(parallelism: usize, events: u64) {
    let mut server = common::TestServer::start_with(|c| {
        c.parallelism = parallelism;
        c.fsync = sluice::storage::FsyncPolicy::Never;
        c.barrier_interval = std::time::Duration::from_millis(20);
    })
    .await;
    let client = server.connect().await;
    // Events paced (100 µs apart, 64 at a time) so that views see them over many epochs.
    let setup = queries::setup(events, 2, 100_000, 64);
    let (tables, sources) = setup
        .split_once("CREATE SOURCE")
        .expect("setup creates sources");
    client.batch_execute(tables).await.expect("side input");
    let mut created = Vec::new();
    let mut refused = Vec::new();
    // Views need their sources: create the sources, then the views at once (they read each
    // source from its start).
    client
        .batch_execute(&format!("CREATE SOURCE{sources}"))
        .await
        .expect("sources");
    for (name, query) in queries::QUERIES {
        match client
            .batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {query}"))
            .await
        {
            Ok(()) => created.push((name, query)),
            Err(e) => refused.push(format!("{name}: {:?}", common::db_error(&e))),
        }
    }
    assert!(refused.is_empty(), "queries refused: {refused:#?}");
    wait_for_sources(&client).await;
    client.batch_execute("FLUSH").await.expect("flush");
    let mut wrong = Vec::new();
    for (name, query) in created {
        let got = common::sorted_rows(&client, &format!("SELECT * FROM {name}")).await;
        let want = common::sorted_rows(&client, query).await;
        eprintln!("{name}: {} rows", got.len());
        if got != want {
            let missing: Vec<_> = want.iter().filter(|r| !got.contains(r)).take(3).collect();
            let extra: Vec<_> = got.iter().filter(|r| !want.contains(r)).take(3).collect();
            wrong.push(format!(
                "{name}: {} rows, batch {}; missing {missing:?}, extra {extra:?}",
                got.len(),
                want.len()
            ));
        } else {
            assert!(
                !want.is_empty() || *name == "q2",
                "{name} is empty: the test would not see a wrong view"
            );
        }
    }
    assert!(
        wrong.is_empty(),
        "views differ from their batch queries (parallelism {parallelism}):\n{}",
        wrong.join("\n")
    );
    server.stop().await;
}

/// Splits take turns a chunk at a time: one split's chunk may reach far past the start of the
/// next split's. The source's watermark is the minimum over all its splits, so no event is late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_source_loses_no_event_to_its_watermark() {
    let mut server = common::TestServer::start_with(|c| {
        c.fsync = sluice::storage::FsyncPolicy::Never;
    })
    .await;
    let client = server.connect().await;
    let events = 100_000u64;
    // One chunk holds all of a split's persons and auctions (2,000 and 6,000 in the stream).
    let setup = queries::setup(events, 2, 0, 8192);
    let (_, sources) = setup.split_once("CREATE SOURCE").expect("sources");
    client
        .batch_execute(&format!("CREATE SOURCE{sources}"))
        .await
        .expect("sources");
    wait_for_sources(&client).await;
    let shown = common::sorted_rows(
        &client,
        "SELECT source_name, rows, late_rows FROM sluice_sources",
    )
    .await;
    // Of every 50 events, 1 is a person, 3 are auctions and 46 are bids.
    let expected = vec![
        format!("auction|{}|0", events / 50 * 3),
        format!("bid|{}|0", events / 50 * 46),
        format!("person|{}|0", events / 50),
    ];
    assert_eq!(shown, expected);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_nexmark_query_equals_its_batch_query_at_parallelism_1() {
    run(1, 30_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_nexmark_query_equals_its_batch_query_at_parallelism_4() {
    run(4, 30_000).await;
}
