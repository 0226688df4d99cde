//! Randomized writes against a model: inserts (upserts on a keyed table), updates and deletes
//! through a real client, in random batch sizes, checked after every round against an in-memory
//! model of what PostgreSQL would hold, and again after a restart on the same data directory.

mod common;

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

async fn table_rows(client: &tokio_postgres::Client, sql: &str) -> Vec<(i32, String)> {
    client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn sorted_bag(bag: &[(i32, String)]) -> Vec<(i32, String)> {
    let mut v = bag.to_vec();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_writes_match_the_model_before_and_after_restart() {
    let seed: u64 = std::env::var("SLUICE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("seed {seed} (set SLUICE_SEED to replay)");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut server = common::start_on(dir.path()).await;
    let mut client = common::connect(server.addr.port()).await;
    client
        .batch_execute(
            "CREATE TABLE keyed (k INT PRIMARY KEY, v TEXT); CREATE TABLE bag (k INT, v TEXT)",
        )
        .await
        .unwrap();
    let mut keyed: BTreeMap<i32, String> = BTreeMap::new();
    let mut bag: Vec<(i32, String)> = Vec::new();

    for round in 0..40 {
        match rng.random_range(0..4) {
            0 | 1 => {
                let n = rng.random_range(1..30);
                let rows: Vec<(i32, String)> = (0..n)
                    .map(|_| {
                        (
                            rng.random_range(0..50),
                            format!("v{}", rng.random_range(0..1000)),
                        )
                    })
                    .collect();
                let values: Vec<String> =
                    rows.iter().map(|(k, v)| format!("({k}, '{v}')")).collect();
                client
                    .batch_execute(&format!("INSERT INTO keyed VALUES {}", values.join(", ")))
                    .await
                    .unwrap();
                client
                    .batch_execute(&format!("INSERT INTO bag VALUES {}", values.join(", ")))
                    .await
                    .unwrap();
                for (k, v) in rows {
                    keyed.insert(k, v.clone());
                    bag.push((k, v));
                }
            }
            2 => {
                let (lo, hi) = (rng.random_range(0..50), rng.random_range(0..50));
                let deleted = client
                    .execute("DELETE FROM keyed WHERE k >= $1 AND k < $2", &[&lo, &hi])
                    .await
                    .unwrap();
                let expected = keyed.range(lo..hi.max(lo)).count() as u64;
                assert_eq!(deleted, expected, "round {round}");
                keyed.retain(|k, _| !(lo..hi).contains(k));
                let deleted = client
                    .execute("DELETE FROM bag WHERE k >= $1 AND k < $2", &[&lo, &hi])
                    .await
                    .unwrap();
                let before = bag.len();
                bag.retain(|(k, _)| !(lo..hi).contains(k));
                assert_eq!(deleted as usize, before - bag.len(), "round {round}");
            }
            _ => {
                let k = rng.random_range(0..50);
                let suffix = format!("u{round}");
                client
                    .execute(
                        "UPDATE keyed SET v = v || $1 WHERE k % 7 = $2",
                        &[&suffix, &i64::from(k % 7)],
                    )
                    .await
                    .unwrap();
                for (key, v) in keyed.iter_mut() {
                    if key % 7 == k % 7 {
                        v.push_str(&suffix);
                    }
                }
                client
                    .execute(
                        "UPDATE bag SET v = v || $1 WHERE k % 7 = $2",
                        &[&suffix, &i64::from(k % 7)],
                    )
                    .await
                    .unwrap();
                for (key, v) in bag.iter_mut() {
                    if *key % 7 == k % 7 {
                        v.push_str(&suffix);
                    }
                }
            }
        }
        let expected: Vec<(i32, String)> = keyed.iter().map(|(k, v)| (*k, v.clone())).collect();
        assert_eq!(
            table_rows(&client, "SELECT k, v FROM keyed ORDER BY k").await,
            expected,
            "round {round}"
        );
        assert_eq!(
            sorted_bag(&table_rows(&client, "SELECT k, v FROM bag").await),
            sorted_bag(&bag),
            "round {round}"
        );

        if round % 13 == 12 {
            drop(client);
            server.shutdown().await;
            server = common::start_on(dir.path()).await;
            client = common::connect(server.addr.port()).await;
            assert_eq!(
                table_rows(&client, "SELECT k, v FROM keyed ORDER BY k").await,
                expected,
                "after restart, round {round}"
            );
            assert_eq!(
                sorted_bag(&table_rows(&client, "SELECT k, v FROM bag").await),
                sorted_bag(&bag),
                "after restart, round {round}"
            );
        }
    }
    server.shutdown().await;
}
