//! The SQL front end on arbitrary text: parse, then plan every statement as `Describe` would
//! (queries and DML), and stream-plan every `CREATE MATERIALIZED VIEW`, against a catalog with
//! a table of every common type, a watermarked append-only table and a view. Nothing is run.
//! Errors are fine; a panic or a hang is a bug.

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use sluice::sql::{Session, parse_sql};
use sluice::{Config, Engine};

struct World {
    runtime: tokio::runtime::Runtime,
    engine: Arc<Engine>,
    session: tokio::sync::Mutex<Session>,
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::new(dir.path());
        config.checkpoint_interval = None;
        config.fsync = sluice::storage::FsyncPolicy::Never;
        let (engine, session) = runtime.block_on(async {
            let engine = Engine::open(config).await.expect("engine");
            let mut session = Session::new(Arc::clone(&engine));
            for sql in [
                "CREATE TABLE t (k INT PRIMARY KEY, v BIGINT, d DOUBLE, n NUMERIC(10, 2), s VARCHAR, b BOOLEAN, ts TIMESTAMP, dt DATE)",
                "CREATE TABLE e (k INT, v BIGINT, s VARCHAR, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) APPEND ONLY",
                "CREATE MATERIALIZED VIEW mv AS SELECT k, sum(v) AS total, count(*) AS n FROM e GROUP BY k",
            ] {
                for statement in parse_sql(sql).expect("setup parses") {
                    session.execute(&statement, None).await.expect("setup runs");
                }
            }
            (engine, session)
        });
        World {
            runtime,
            engine,
            session: tokio::sync::Mutex::new(session),
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let world = world();
    let Ok(statements) = parse_sql(text) else {
        return;
    };
    world.runtime.block_on(async {
        let session = world.session.lock().await;
        for statement in &statements {
            match &statement.statement {
                datafusion::sql::sqlparser::ast::Statement::CreateView(create)
                    if create.materialized =>
                {
                    let state = world.engine.new_context().state();
                    let _ = world
                        .engine
                        .plan_view(&state, create, statement.emit_on_window_close)
                        .await;
                }
                _ => {
                    let _ = session.describe(statement).await;
                }
            }
        }
    });
});
