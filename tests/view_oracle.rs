//! The view oracle: random keys, timestamps with bounded disorder, random statement sizes,
//! upserts, updates and deletes on a primary-key table, at parallelism 1 and 4. After every
//! FLUSH, each view equals its query run as a batch SELECT over the tables.

mod common;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::Client;

/// Base event time: 2026-01-01 00:00:00 UTC, in milliseconds.
const T0_MS: i64 = 1_767_225_600_000;

/// (view name, defining query, EMIT ON WINDOW CLOSE). Batch queries use the same text, with
/// views read through their own definitions.
fn views() -> Vec<(&'static str, String, bool)> {
    let agg = "SELECT k, count(*) AS n, sum(v) AS s, min(v) AS lo, max(v) AS hi, avg(v) AS a, \
               count(DISTINCT v) AS d FROM ev GROUP BY k";
    vec![
        ("o_agg", agg.to_string(), false),
        (
            "o_tumble",
            "SELECT k, TUMBLE_START(ts, INTERVAL '10' SECOND) AS ws, count(*) AS n, sum(v) AS s \
             FROM ev GROUP BY k, TUMBLE(ts, INTERVAL '10' SECOND)"
                .into(),
            false,
        ),
        (
            "o_hop_group",
            "SELECT k, HOP_START(ts, INTERVAL '5' SECOND, INTERVAL '15' SECOND) AS ws, \
             HOP_END(ts, INTERVAL '5' SECOND, INTERVAL '15' SECOND) AS we, count(*) AS n, max(v) AS m \
             FROM ev GROUP BY k, HOP(ts, INTERVAL '5' SECOND, INTERVAL '15' SECOND)"
                .into(),
            false,
        ),
        (
            "o_hop_tvf",
            "SELECT window_start, window_end, count(*) AS n, min(v) AS lo \
             FROM HOP(ev, ts, INTERVAL '2' SECOND, INTERVAL '6' SECOND) GROUP BY window_start, window_end"
                .into(),
            false,
        ),
        (
            // sessions merge and split as rows arrive, move and leave
            "o_session",
            "SELECT k, SESSION_START(ts, INTERVAL '2' SECOND) AS s, SESSION_END(ts, INTERVAL '2' SECOND) AS e, \
             count(*) AS n, sum(v) AS sv FROM ev GROUP BY k, SESSION(ts, INTERVAL '2' SECOND)"
                .into(),
            false,
        ),
        (
            "o_filter",
            "SELECT id, k * 2 AS k2, v + 1 AS v1 FROM ev WHERE v % 3 <> 0".into(),
            false,
        ),
        (
            "o_distinct",
            "SELECT DISTINCT k, v % 5 AS r FROM ev".into(),
            false,
        ),
        (
            "o_having",
            "SELECT k, sum(v) AS s FROM ev GROUP BY k HAVING count(*) > 2".into(),
            false,
        ),
        (
            "o_mv_on_mv",
            "SELECT n, count(*) AS c FROM o_agg GROUP BY n".into(),
            false,
        ),
        (
            "o_union",
            "SELECT k, v FROM ev WHERE v > 50 UNION ALL SELECT k, v FROM ao".into(),
            false,
        ),
        (
            "o_eowc",
            "SELECT k, window_start, count(*) AS n, sum(v) AS s \
             FROM TUMBLE(ao, ts, INTERVAL '10' SECOND) GROUP BY k, window_start"
                .into(),
            true,
        ),
        (
            "o_hop_eowc",
            "SELECT window_start, count(*) AS n, max(v) AS m \
             FROM HOP(ao, ts, INTERVAL '5' SECOND, INTERVAL '20' SECOND) GROUP BY window_start"
                .into(),
            true,
        ),
        (
            // slide 4 s does not divide size 10 s: slices are gcd = 2 s wide
            "o_hop_keyed_eowc",
            "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s, min(v) AS lo \
             FROM HOP(ao, ts, INTERVAL '4' SECOND, INTERVAL '10' SECOND) GROUP BY k, window_start, window_end"
                .into(),
            true,
        ),
        (
            // HOP over an append-only table, updating: sliced, windows re-merged as slices change
            "o_hop_updating",
            "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s, max(v) AS m \
             FROM HOP(ao, ts, INTERVAL '3' SECOND, INTERVAL '9' SECOND) GROUP BY k, window_start, window_end"
                .into(),
            false,
        ),
        (
            "o_hop_group_updating",
            "SELECT HOP_START(ts, INTERVAL '2' SECOND, INTERVAL '5' SECOND) AS ws, min(v) AS lo, count(v) AS c \
             FROM ao GROUP BY HOP(ts, INTERVAL '2' SECOND, INTERVAL '5' SECOND)"
                .into(),
            false,
        ),
        (
            // A window aggregate over an append-only table, updating: each window's groups are
            // freed once the watermark passes its end, and its rows stay. Over `al`, whose short
            // watermark delay puts rows right at the edge of windows being freed.
            "o_tumble_expiring",
            "SELECT k, window_start, count(*) AS n, sum(v) AS s, count(DISTINCT v) AS d \
             FROM TUMBLE(al, ts, INTERVAL '3' SECOND) GROUP BY k, window_start"
                .into(),
            false,
        ),
        (
            // An updating HOP over `al`, sliced: slices and the remembered rows of windows the
            // watermark passed are freed while rows keep landing near the watermark.
            "o_hop_expiring",
            "SELECT k, window_start, count(*) AS n, sum(v) AS s, max(v) AS m \
             FROM HOP(al, ts, INTERVAL '1' SECOND, INTERVAL '3' SECOND) GROUP BY k, window_start"
                .into(),
            false,
        ),
        (
            // Sessions over `al`: a session the watermark closed is dropped from the operator
            // while rows keep arriving right behind it.
            "o_session_expiring",
            "SELECT k, SESSION_START(ts, INTERVAL '1' SECOND) AS s, SESSION_END(ts, INTERVAL '1' SECOND) AS e, \
             count(*) AS n, sum(v) AS sv, max(v) AS m FROM al GROUP BY k, SESSION(ts, INTERVAL '1' SECOND)"
                .into(),
            false,
        ),
        (
            "o_global",
            "SELECT count(*) AS n, sum(v) AS s, max(v) AS m, min(ts) AS first FROM ao".into(),
            false,
        ),
        // Joins of `ev` (upserts, updates, deletes) with `dim` (upserts, deletes): `ev.k` is
        // 0..8 and `dim.k` 0..10, so rows on both sides come and go without a match.
        (
            "o_join_inner",
            "SELECT ev.id, ev.v, dim.k, dim.tier FROM ev JOIN dim ON ev.k = dim.k".into(),
            false,
        ),
        (
            "o_join_left",
            "SELECT ev.id, ev.k, dim.tier, dim.name FROM ev LEFT JOIN dim ON ev.k = dim.k".into(),
            false,
        ),
        (
            "o_join_right",
            "SELECT ev.id, dim.k, dim.tier FROM ev RIGHT JOIN dim ON ev.k = dim.k".into(),
            false,
        ),
        (
            "o_join_full",
            "SELECT ev.id, ev.k AS ek, dim.k AS dk, dim.tier FROM ev FULL JOIN dim ON ev.k = dim.k"
                .into(),
            false,
        ),
        (
            // three ways, `dim` twice: a self-join
            "o_join_3way",
            "SELECT ev.id, d1.tier, d2.name FROM ev JOIN dim d1 ON ev.k = d1.k \
             JOIN dim d2 ON d2.k = d1.tier"
                .into(),
            false,
        ),
        (
            "o_join_residual",
            "SELECT ev.id, ev.v, dim.tier FROM ev JOIN dim ON ev.k = dim.k AND ev.v > dim.tier * 20"
                .into(),
            false,
        ),
        (
            "o_join_then_agg",
            "SELECT dim.tier, count(*) AS n, sum(ev.v) AS s FROM ev JOIN dim ON ev.k = dim.k \
             GROUP BY dim.tier"
                .into(),
            false,
        ),
        (
            "o_join_agg_subquery",
            "SELECT d.k, d.tier, a.n, a.s FROM dim d \
             JOIN (SELECT k, count(*) AS n, sum(v) AS s FROM ev GROUP BY k) a ON a.k = d.k"
                .into(),
            false,
        ),
        (
            "o_in",
            "SELECT id, v FROM ev WHERE k IN (SELECT k FROM dim WHERE tier > 1)".into(),
            false,
        ),
        (
            "o_not_exists",
            "SELECT id, v FROM ev WHERE NOT EXISTS (SELECT 1 FROM dim WHERE dim.k = ev.k)".into(),
            false,
        ),
        (
            "o_exists",
            "SELECT k, tier FROM dim WHERE EXISTS (SELECT 1 FROM ev WHERE ev.k = dim.k AND ev.v > 50)"
                .into(),
            false,
        ),
        // Conditions beyond the keys decide which rows match: padding, EXISTS and NOT
        // EXISTS follow each row's own matches.
        (
            "o_join_left_cond",
            "SELECT ev.id, dim.k, dim.tier FROM ev LEFT JOIN dim ON ev.k = dim.k AND ev.v > dim.tier * 20"
                .into(),
            false,
        ),
        (
            "o_join_full_cond",
            "SELECT ev.id, ev.v, dim.k, dim.tier FROM ev FULL JOIN dim ON ev.k = dim.k AND ev.v > dim.tier * 20"
                .into(),
            false,
        ),
        (
            "o_exists_cond",
            "SELECT k, tier FROM dim WHERE EXISTS (SELECT 1 FROM ev WHERE ev.k = dim.k AND ev.v > dim.tier * 20)"
                .into(),
            false,
        ),
        (
            "o_not_exists_cond",
            "SELECT id, v FROM ev WHERE NOT EXISTS (SELECT 1 FROM dim WHERE dim.k = ev.k AND dim.tier * 20 < ev.v)"
                .into(),
            false,
        ),
        // Interval joins of the append-only tables: rows are freed as the other side's
        // watermark passes them, while `al`'s short delay puts rows right at that edge.
        (
            "o_interval",
            "SELECT a.k, a.v AS av, b.v AS bv, a.ts FROM ao a JOIN al b ON a.k = b.k \
             AND a.ts BETWEEN b.ts - INTERVAL '1' SECOND AND b.ts + INTERVAL '2' SECOND"
                .into(),
            false,
        ),
        (
            "o_interval_left",
            "SELECT b.k, b.v, b.ts, a.v AS av FROM al b LEFT JOIN ao a ON a.k = b.k \
             AND a.ts >= b.ts AND a.ts < b.ts + INTERVAL '1' SECOND"
                .into(),
            false,
        ),
        (
            "o_interval_windows",
            "SELECT a.k, TUMBLE_START(a.ts, INTERVAL '4' SECOND) AS ws, count(*) AS n, sum(b.v) AS s \
             FROM ao a JOIN al b ON a.k = b.k AND b.ts BETWEEN a.ts - INTERVAL '1' SECOND AND a.ts \
             GROUP BY a.k, TUMBLE(a.ts, INTERVAL '4' SECOND)"
                .into(),
            false,
        ),
        (
            // Nexmark q7's shape: rows against their window's maximum, an interval join on
            // the aggregate's window end. The aggregate reads `ao`, whose watermark lags
            // `al`'s: its rows may still change after `al`'s watermark passed them.
            "o_interval_window_max",
            "SELECT b.k, b.v, b.ts, m.we FROM al b JOIN (SELECT max(v) AS mv, window_end AS we \
             FROM TUMBLE(ao, ts, INTERVAL '3' SECOND) GROUP BY window_end) m \
             ON b.v = m.mv WHERE b.ts BETWEEN m.we - INTERVAL '3' SECOND AND m.we"
                .into(),
            false,
        ),
        (
            // The same on a window start, the window aggregate on the left and ahead: a
            // window's rows may match `ao`'s rows until `ao`'s watermark passes its end.
            "o_interval_window_start",
            "SELECT m.k, m.ws, m.n, b.v FROM (SELECT k, window_start AS ws, count(*) AS n \
             FROM TUMBLE(al, ts, INTERVAL '10' SECOND) GROUP BY k, window_start) m \
             JOIN ao b ON b.k = m.k AND b.ts >= m.ws AND b.ts < m.ws + INTERVAL '10' SECOND"
                .into(),
            false,
        ),
        (
            // a window join: a window's rows go once both watermarks pass its end
            "o_window_join",
            "SELECT a.k, a.ws, a.n, b.n AS bn, b.s FROM \
             (SELECT k, window_start AS ws, count(*) AS n FROM TUMBLE(ao, ts, INTERVAL '5' SECOND) GROUP BY k, window_start) a \
             JOIN (SELECT k, window_start AS ws, count(*) AS n, sum(v) AS s FROM TUMBLE(al, ts, INTERVAL '5' SECOND) GROUP BY k, window_start) b \
             ON a.k = b.k AND a.ws = b.ws"
                .into(),
            false,
        ),
        (
            // a dynamic filter: every row is judged again when the average moves
            "o_scalar_filter",
            "SELECT id, v FROM ev WHERE v > (SELECT avg(v) FROM ev)".into(),
            false,
        ),
        (
            "o_agg_filter",
            "SELECT k, count(*) FILTER (WHERE v > 50) AS big, sum(v) FILTER (WHERE v % 2 = 0) AS even, \
             count(DISTINCT v) FILTER (WHERE v < 30) AS small, max(v) FILTER (WHERE id % 3 = 0) AS m3 \
             FROM ev GROUP BY k"
                .into(),
            false,
        ),
        (
            // DataFusion's accumulators that retract any value: exact percentiles and XOR
            "o_df_retract",
            "SELECT k, median(v) AS med, percentile_cont(0.25) WITHIN GROUP (ORDER BY v) AS p, \
             bit_xor(v) AS x, count(*) AS n FROM ev GROUP BY k"
                .into(),
            false,
        ),
        (
            // one aggregate per grouping set, GROUPING() telling them apart
            "o_rollup",
            "SELECT k, v % 3 AS r, count(*) AS n, sum(v) AS s, grouping(k, v % 3) AS g \
             FROM ev GROUP BY ROLLUP (k, v % 3)"
                .into(),
            false,
        ),
        (
            // jsonb built, filtered by containment, grouped by a member and by a whole document
            "o_jsonb",
            "SELECT d ->> 'k' AS k, d -> 'p' AS p, count(*) AS n, sum((d -> 'v')::bigint) AS s \
             FROM (SELECT jsonb_build_object('k', k, 'v', v, 'p', jsonb_build_array(v % 3, k % 2), \
             'odd', v % 2 = 1) AS d FROM ev) WHERE d @> '{\"odd\": true}' GROUP BY 1, 2"
                .into(),
            false,
        ),
        (
            // jsonb_agg and jsonb_object_agg over append-only input
            "o_jsonb_append",
            "SELECT k, jsonb_agg(v ORDER BY v, ts) AS vs, \
             jsonb_object_agg(v % 5, ts ORDER BY ts, v) AS last_ts FROM ao GROUP BY k"
                .into(),
            false,
        ),
        (
            // over append-only input, aggregates that cannot forget a row
            "o_df_append",
            "SELECT k, array_agg(v ORDER BY v, ts) AS vs, first_value(v ORDER BY ts, v) AS f, \
             bit_or(v) AS b, approx_distinct(v) AS d FROM ao GROUP BY k"
                .into(),
            false,
        ),
        (
            // NOT IN: the subquery's NULLs (v > 95, coming and going) decide every row at once
            "o_not_in",
            "SELECT id, k FROM ev WHERE k NOT IN \
             (SELECT CASE WHEN v > 95 THEN NULL ELSE v % 8 END FROM ev WHERE id % 5 = 0)"
                .into(),
            false,
        ),
        (
            // group top-N under upserts and deletes: the next row moves in
            "o_topn",
            "SELECT k, id, v, rn FROM (SELECT k, id, v, row_number() OVER \
             (PARTITION BY k ORDER BY v DESC, id) AS rn FROM ev) WHERE rn <= 3"
                .into(),
            false,
        ),
        (
            // ties share a rank
            "o_rank",
            "SELECT k, id, r FROM (SELECT k, id, rank() OVER (PARTITION BY k ORDER BY v) AS r \
             FROM ev) WHERE r <= 2"
                .into(),
            false,
        ),
        (
            "o_dense_rank",
            "SELECT k, v, d FROM (SELECT k, v, dense_rank() OVER (PARTITION BY k ORDER BY v DESC) AS d \
             FROM ev) WHERE d BETWEEN 2 AND 3"
                .into(),
            false,
        ),
        (
            "o_global_top",
            "SELECT id, v FROM ev ORDER BY v DESC, id LIMIT 5 OFFSET 2".into(),
            false,
        ),
        (
            "o_distinct_on",
            "SELECT DISTINCT ON (k) k, id, v FROM ev ORDER BY k, v DESC, id".into(),
            false,
        ),
        (
            // dedup over append-only input keeps only each key's first rows
            "o_dedup",
            "SELECT k, v, ts FROM (SELECT k, v, ts, row_number() OVER \
             (PARTITION BY k ORDER BY ts, v) AS rn FROM ao) WHERE rn = 1"
                .into(),
            false,
        ),
        (
            "o_top_append_only",
            "SELECT k, v, ts, rn FROM (SELECT k, v, ts, row_number() OVER \
             (PARTITION BY k ORDER BY v DESC, ts) AS rn FROM ao) WHERE rn <= 4"
                .into(),
            false,
        ),
        (
            // a window top-N: each window's partition freed once the watermark passes its end
            "o_window_top",
            "SELECT window_start, k, v FROM (SELECT window_start, k, v, row_number() OVER \
             (PARTITION BY window_start ORDER BY v DESC, k, ts) AS rn \
             FROM TUMBLE(ao, ts, INTERVAL '5' SECOND)) q WHERE rn <= 2"
                .into(),
            false,
        ),
        (
            "o_lag",
            "SELECT id, k, v, lag(v) OVER (PARTITION BY k ORDER BY ts, id) AS prev, \
             lead(id, 2) OVER (PARTITION BY k ORDER BY ts, id) AS next2 FROM ev"
                .into(),
            false,
        ),
        (
            // a running sum (RANGE: ties are peers) and a sliding count (ROWS)
            "o_running",
            "SELECT id, sum(v) OVER (PARTITION BY k ORDER BY v) AS run, \
             count(*) OVER (PARTITION BY k ORDER BY id ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS c3 \
             FROM ev"
                .into(),
            false,
        ),
    ]
}

async fn rows(client: &Client, sql: &str) -> Vec<String> {
    common::sorted_rows(client, sql).await
}

fn ts_literal(ms: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(ms).expect("valid time");
    format!("'{}'", t.format("%Y-%m-%d %H:%M:%S%.3f"))
}

/// A server at `parallelism` with fast barriers and no fsync, and a client of it.
async fn start(parallelism: usize) -> (common::TestServer, Client) {
    let server = common::TestServer::start_with(|c| {
        c.parallelism = parallelism;
        c.fsync = sluice::storage::FsyncPolicy::Never;
        c.barrier_interval = std::time::Duration::from_millis(20);
    })
    .await;
    let client = server.connect().await;
    (server, client)
}

async fn run(parallelism: usize, seed: u64) {
    let (mut server, client) = start(parallelism).await;
    let mut rng = StdRng::seed_from_u64(seed);
    client
        .batch_execute(
            "CREATE TABLE ev (id INT PRIMARY KEY, k INT, v BIGINT, ts TIMESTAMP);
             CREATE TABLE ao (k INT, v BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '30' SECOND) APPEND ONLY;
             CREATE TABLE al (k INT, v BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) APPEND ONLY;
             CREATE TABLE dim (k INT PRIMARY KEY, tier INT, name TEXT);",
        )
        .await
        .expect("tables");
    // Some rows exist before the views: views start from them.
    let mut now_ms = T0_MS;
    let views = views();
    let mut created = 0;
    for round in 0..40 {
        let create = match round {
            0..=20 if round % 3 == 0 => 1,
            0..=20 => 0,
            _ => 2,
        };
        for _ in 0..create {
            if created == views.len() {
                break;
            }
            let (name, query, eowc) = &views[created];
            let emit = if *eowc { " EMIT ON WINDOW CLOSE" } else { "" };
            client
                .batch_execute(&format!("CREATE MATERIALIZED VIEW {name} AS {query}{emit}"))
                .await
                .unwrap_or_else(|e| panic!("creating {name}: {e:?}"));
            created += 1;
        }
        for _ in 0..rng.random_range(1..6) {
            match rng.random_range(0..10) {
                0..=3 => {
                    let n = rng.random_range(1..40);
                    let values: Vec<String> = (0..n)
                        .map(|_| {
                            let ts = now_ms + rng.random_range(-20_000..20_000);
                            format!(
                                "({}, {}, {}, {})",
                                rng.random_range(0..150),
                                rng.random_range(0..8),
                                rng.random_range(0..100),
                                ts_literal(ts)
                            )
                        })
                        .collect();
                    client
                        .batch_execute(&format!("INSERT INTO ev VALUES {}", values.join(", ")))
                        .await
                        .expect("insert ev");
                }
                4..=5 => {
                    let n = rng.random_range(1..60);
                    let values: Vec<String> = (0..n)
                        .map(|_| {
                            now_ms += rng.random_range(0..400);
                            // Disorder bounded by 25 s, under the 30 s watermark delay.
                            let ts = now_ms - rng.random_range(0..25_000);
                            format!(
                                "({}, {}, {})",
                                rng.random_range(0..5),
                                rng.random_range(0..1000),
                                ts_literal(ts)
                            )
                        })
                        .collect();
                    client
                        .batch_execute(&format!("INSERT INTO ao VALUES {}", values.join(", ")))
                        .await
                        .expect("insert ao");
                    // The same rows where most are late: the rest arrive at windows' edges.
                    client
                        .batch_execute(&format!("INSERT INTO al VALUES {}", values.join(", ")))
                        .await
                        .expect("insert al");
                }
                6 => {
                    let sql = if rng.random_bool(0.5) {
                        format!(
                            "UPDATE ev SET v = v + {}, ts = ts + INTERVAL '3' SECOND WHERE id % 7 = {}",
                            rng.random_range(1..30),
                            rng.random_range(0..7)
                        )
                    } else {
                        format!(
                            "UPDATE ev SET k = {} WHERE id = {}",
                            rng.random_range(0..8),
                            rng.random_range(0..150)
                        )
                    };
                    client.batch_execute(&sql).await.expect("update ev");
                }
                7 => {
                    let sql = if rng.random_bool(0.7) {
                        format!("DELETE FROM ev WHERE id = {}", rng.random_range(0..150))
                    } else {
                        format!(
                            "DELETE FROM ev WHERE id % 11 = {} AND v > 50",
                            rng.random_range(0..11)
                        )
                    };
                    client.batch_execute(&sql).await.expect("delete ev");
                }
                8 => {
                    let k = rng.random_range(0..10);
                    let sql = match rng.random_range(0..4) {
                        0 => format!("DELETE FROM dim WHERE k = {k}"),
                        1 => format!(
                            "UPDATE dim SET tier = {} WHERE k = {k}",
                            rng.random_range(0..5)
                        ),
                        _ => {
                            let values: Vec<String> = (0..rng.random_range(1..5))
                                .map(|_| {
                                    let tier = rng.random_range(0..5);
                                    format!("({}, {tier}, 'n{tier}')", rng.random_range(0..10))
                                })
                                .collect();
                            format!("INSERT INTO dim VALUES {}", values.join(", "))
                        }
                    };
                    client.batch_execute(&sql).await.expect("write dim");
                }
                _ => {
                    // Let a barrier pass on its own, with no FLUSH.
                    tokio::time::sleep(std::time::Duration::from_millis(rng.random_range(0..40)))
                        .await;
                }
            }
        }
        if rng.random_bool(0.4) || round == 39 {
            client.batch_execute("FLUSH").await.expect("flush");
            check(&client, &views[..created], seed, parallelism).await;
        }
    }
    let late = rows(
        &client,
        "SELECT late_rows FROM sluice_watermarks WHERE table_name = 'ao'",
    )
    .await;
    assert_eq!(
        late,
        vec!["0"],
        "no row was behind the watermark (seed {seed})"
    );
    server.stop().await;
}

async fn check(
    client: &Client,
    views: &[(&'static str, String, bool)],
    seed: u64,
    parallelism: usize,
) {
    let watermark = rows(
        client,
        "SELECT watermark FROM sluice_watermarks WHERE table_name = 'ao'",
    )
    .await;
    for (name, query, eowc) in views {
        let got = rows(client, &format!("SELECT * FROM {name}")).await;
        // A view over a view reads the other view's definition in batch.
        let mut batch = query.replace("FROM o_agg", &format!("FROM ({}) AS o_agg", views[0].1));
        if *eowc {
            // Only windows the watermark has closed are in the view.
            let closed = match watermark.first() {
                Some(w) if w != "NULL" => format!("window_end <= TIMESTAMP '{w}'"),
                _ => "false".to_string(),
            };
            batch = batch.replace(" GROUP BY", &format!(" WHERE {closed} GROUP BY"));
        }
        let want = rows(client, &batch).await;
        assert_eq!(
            got, want,
            "view {name} differs from its batch query (seed {seed}, parallelism {parallelism})\n{batch}"
        );
        // Equalities on a view's key are looked up, not scanned: they must find the same rows.
        let probes: &[(&str, i64)] =
            if query.starts_with("SELECT k,") || query.starts_with("SELECT DISTINCT k,") {
                &[("k", 9)]
            } else if query.starts_with("SELECT id,") {
                &[("id", 150)]
            } else {
                &[]
            };
        for &(column, max) in probes {
            let x = (seed as i64 + got.len() as i64).rem_euclid(max);
            for filter in [
                format!("{column} = {x}"),
                format!("{column} IN ({x}, {}, {})", x + 1, max + 5),
                format!("{column} = {x} AND {column} = {}", x + 1),
            ] {
                let got = rows(client, &format!("SELECT * FROM {name} WHERE {filter}")).await;
                let want = rows(
                    client,
                    &format!("SELECT * FROM ({batch}) AS b WHERE {filter}"),
                )
                .await;
                assert_eq!(
                    got, want,
                    "view {name} WHERE {filter} differs from its batch query (seed {seed}, parallelism {parallelism})"
                );
            }
        }
    }
}

/// The run's seed: `SLUICE_SEED` replays a failed run's statements (the barrier timing that
/// cuts them into epochs is the machine's), otherwise a random one, printed.
fn seed() -> u64 {
    let seed = match std::env::var("SLUICE_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("SLUICE_SEED={s:?} is not an unsigned integer")),
        Err(_) => rand::random(),
    };
    eprintln!("seed {seed} (set SLUICE_SEED={seed} to replay)");
    seed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_equal_batch_queries_at_parallelism_1() {
    run(1, seed()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_equal_batch_queries_at_parallelism_4() {
    run(4, seed()).await;
}

/// A temporal join (`FOR SYSTEM_TIME AS OF PROCTIME()`) against its own oracle: each stream
/// row joins the table as it stood when the row arrived, and later changes of the table do not
/// touch it. Rounds of random upserts and deletes on the table, then stream rows, each followed
/// by a FLUSH: the rows a round adds to the view are the batch join of that round's stream rows
/// with the table as it is then.
async fn temporal(parallelism: usize, seed: u64) {
    let (mut server, client) = start(parallelism).await;
    let mut rng = StdRng::seed_from_u64(seed);
    client
        .batch_execute(
            "CREATE TABLE st (id INT, k INT, v BIGINT) APPEND ONLY;
             CREATE TABLE dt (k INT PRIMARY KEY, rate BIGINT, label TEXT);
             CREATE MATERIALIZED VIEW t_inner AS SELECT s.id, s.v * d.rate AS x, d.label
               FROM st s JOIN dt FOR SYSTEM_TIME AS OF PROCTIME() d ON s.k = d.k;
             CREATE MATERIALIZED VIEW t_left AS SELECT s.id, d.rate
               FROM st s LEFT JOIN dt FOR SYSTEM_TIME AS OF PROCTIME() AS d ON s.k = d.k;",
        )
        .await
        .expect("setup");
    let queries = [
        (
            "t_inner",
            "SELECT s.id, s.v * d.rate AS x, d.label FROM st s JOIN dt d ON s.k = d.k",
        ),
        (
            "t_left",
            "SELECT s.id, d.rate FROM st s LEFT JOIN dt d ON s.k = d.k",
        ),
    ];
    let mut expected: Vec<Vec<String>> = vec![Vec::new(); queries.len()];
    let mut next_id = 0;
    for round in 0..30 {
        for _ in 0..rng.random_range(1..4) {
            let k = rng.random_range(0..12);
            let sql = if rng.random_bool(0.25) {
                format!("DELETE FROM dt WHERE k = {k}")
            } else {
                let rate = rng.random_range(1..9);
                format!("INSERT INTO dt VALUES ({k}, {rate}, 'r{rate}')")
            };
            client.batch_execute(&sql).await.expect("table write");
        }
        client.batch_execute("FLUSH").await.expect("flush");
        let first = next_id;
        let values: Vec<String> = (0..rng.random_range(1..30))
            .map(|_| {
                next_id += 1;
                format!(
                    "({next_id}, {}, {})",
                    rng.random_range(0..14),
                    rng.random_range(0..100)
                )
            })
            .collect();
        client
            .batch_execute(&format!(
                "INSERT INTO st VALUES {}; FLUSH;",
                values.join(", ")
            ))
            .await
            .expect("stream rows");
        for (i, (view, query)) in queries.iter().enumerate() {
            expected[i].extend(
                rows(
                    &client,
                    &format!("SELECT * FROM ({query}) q WHERE id > {first}"),
                )
                .await,
            );
            expected[i].sort();
            assert_eq!(
                rows(&client, &format!("SELECT * FROM {view}")).await,
                expected[i],
                "{view} after round {round} (seed {seed}, parallelism {parallelism})"
            );
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporal_joins_look_up_the_table_as_it_stood_at_parallelism_1() {
    temporal(1, seed()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporal_joins_look_up_the_table_as_it_stood_at_parallelism_4() {
    temporal(4, seed()).await;
}
