//! Metrics for Prometheus: [`Metrics`] holds what is counted as it happens (epoch and
//! checkpoint durations, statements, connections), and [`render`] adds, at each scrape, what the
//! engine already keeps (each source's rows and lag, each view's epoch and state, each sink's
//! deliveries) — the same facts the `sluice_*` relations show in SQL. `serve` answers
//! `GET /metrics` on `--metrics-listen` in the OpenMetrics text format.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::engine::Engine;

/// Labels of a statement's duration: `kind` is `read` (a query: planning and every row sent)
/// or `write` (DML, DDL and the rest).
type StatementLabels = [(&'static str, &'static str); 1];

/// What is counted as it happens. Every metric is shared (cloning one shares its value), so a
/// scrape registers the same metrics again.
#[derive(Debug)]
pub struct Metrics {
    /// One epoch of the view runtime: the cut, every view's step, publishing.
    pub epoch_duration: Histogram,
    /// Epochs completed.
    pub epochs: Counter,
    /// A checkpoint, from its barrier to its manifest being durable.
    pub checkpoint_duration: Histogram,
    /// Bytes checkpoints wrote.
    pub checkpoint_bytes: Counter,
    /// Bytes of every file the newest checkpoint uses.
    pub checkpoint_size: Gauge,
    /// How long this start took to restore the views (0 without a checkpoint).
    pub recovery_seconds: Gauge<f64, AtomicU64>,
    /// Statements, by kind.
    pub statement_duration: Family<StatementLabels, Histogram>,
    /// Client connections open now.
    pub connections_open: Gauge,
    /// Client connections accepted.
    pub connections: Counter,
    /// Connections refused beyond `--max-connections`.
    pub connections_refused: Counter,
    /// Bytes of sources' logs removed because no view or checkpoint needed them any more.
    pub log_truncated_bytes: Counter,
    /// When the newest epoch was cut, ms since 1970.
    epoch_cut_at_ms: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        // 1 ms to ~65 s.
        let seconds = || Histogram::new(exponential_buckets(0.001, 2.0, 17));
        Self {
            epoch_duration: seconds(),
            epochs: Counter::default(),
            checkpoint_duration: seconds(),
            checkpoint_bytes: Counter::default(),
            checkpoint_size: Gauge::default(),
            recovery_seconds: Gauge::default(),
            statement_duration: Family::new_with_constructor(|| {
                // 100 µs to ~100 s.
                Histogram::new(exponential_buckets(0.0001, 2.0, 21))
            }),
            connections_open: Gauge::default(),
            connections: Counter::default(),
            connections_refused: Counter::default(),
            log_truncated_bytes: Counter::default(),
            epoch_cut_at_ms: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// An epoch completed: its cut was taken at `cut_at_ms` and it took `elapsed`.
    pub fn epoch_completed(&self, cut_at_ms: u64, elapsed: Duration) {
        self.epoch_cut_at_ms.store(cut_at_ms, Ordering::Relaxed);
        self.epochs.inc();
        self.epoch_duration.observe(elapsed.as_secs_f64());
    }

    /// When the newest epoch's cut was taken, ms since 1970 (0 before the first).
    pub fn epoch_cut_at_ms(&self) -> u64 {
        self.epoch_cut_at_ms.load(Ordering::Relaxed)
    }

    /// A checkpoint completed (or, `kind` `recovery`, this start restored one).
    pub fn checkpoint_completed(&self, info: &crate::state::CheckpointInfo) {
        let seconds = Duration::from_millis(info.duration_ms).as_secs_f64();
        if info.kind == "recovery" {
            self.recovery_seconds.set(seconds);
            return;
        }
        self.checkpoint_duration.observe(seconds);
        self.checkpoint_bytes.inc_by(info.bytes_written);
        self.checkpoint_size
            .set(i64::try_from(info.total_bytes).unwrap_or(i64::MAX));
    }

    /// A source's log lost `bytes` below what anything still needs.
    pub fn log_truncated(&self, bytes: u64) {
        self.log_truncated_bytes.inc_by(bytes);
    }

    /// A statement took `elapsed`.
    pub fn statement(&self, read: bool, elapsed: Duration) {
        let kind = if read { "read" } else { "write" };
        self.statement_duration
            .get_or_create(&[("kind", kind)])
            .observe(elapsed.as_secs_f64());
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "sluice_epoch_duration_seconds",
            "Time one epoch of the view runtime took: the cut, every view's step, publishing",
            self.epoch_duration.clone(),
        );
        registry.register("sluice_epochs", "Epochs completed", self.epochs.clone());
        registry.register(
            "sluice_checkpoint_duration_seconds",
            "Time from a checkpoint's barrier to its manifest being durable",
            self.checkpoint_duration.clone(),
        );
        registry.register(
            "sluice_checkpoint_written_bytes",
            "Bytes written by checkpoints",
            self.checkpoint_bytes.clone(),
        );
        registry.register(
            "sluice_checkpoint_size_bytes",
            "Bytes of every file the newest checkpoint uses",
            self.checkpoint_size.clone(),
        );
        registry.register(
            "sluice_recovery_duration_seconds",
            "Time this start took to restore the views from their checkpoint",
            self.recovery_seconds.clone(),
        );
        registry.register(
            "sluice_log_truncated_bytes",
            "Bytes of sources' logs removed because no view or checkpoint needed them any more",
            self.log_truncated_bytes.clone(),
        );
        registry.register(
            "sluice_statement_duration_seconds",
            "Time a statement took: kind=read is a query with every row sent, kind=write the rest",
            self.statement_duration.clone(),
        );
        registry.register(
            "sluice_connections_open",
            "Client connections open",
            self.connections_open.clone(),
        );
        registry.register(
            "sluice_connections",
            "Client connections accepted",
            self.connections.clone(),
        );
        registry.register(
            "sluice_connections_refused",
            "Client connections refused beyond --max-connections",
            self.connections_refused.clone(),
        );
    }
}

/// The text of a scrape: every metric of `engine`, in the OpenMetrics text format.
pub fn render(engine: &Arc<Engine>) -> String {
    let mut registry = Registry::default();
    engine.metrics().register(&mut registry);
    registry.register_collector(Box::new(EngineCollector(Arc::clone(engine))));
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        // Writing to a String fails only if an encoder refuses a value.
        tracing::warn!(error = %e, "cannot encode the metrics");
    }
    text
}

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the engine keeps anyway, read at each scrape.
#[derive(Debug)]
struct EngineCollector(Arc<Engine>);

/// Writes one metric family: a descriptor, then one sample per label set.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (Vec<(&'static str, String)>, M)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        if labels.is_empty() {
            // One sample without labels: `name value`, not `name{} value`.
            return value.encode(metric);
        }
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn saturating(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Process memory resident now (`VmRSS`), in bytes; `None` off Linux.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

impl Collector for EngineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use crate::connector::source::SourceStatus;
        let engine = &self.0;
        let tables = engine.tables().all();
        let registry = engine.views();
        let now_ms = crate::state::now_ms();

        // Sources and connector tables.
        struct Source {
            labels: Vec<(&'static str, String)>,
            stats: Arc<crate::connector::source::SourceStats>,
            time: crate::connector::queue::EventTime,
            cdc: bool,
        }
        let sources: Vec<Source> = tables
            .iter()
            .filter_map(|t| {
                let connector = t.def().connector.as_ref()?.connector();
                Some(Source {
                    labels: vec![
                        ("source", t.def().name.clone()),
                        ("connector", connector.to_string()),
                    ],
                    stats: t.source_stats()?,
                    time: t.event_time(),
                    cdc: connector == "postgres-cdc",
                })
            })
            .collect();
        let counter = |f: &dyn Fn(&Source) -> u64| {
            sources
                .iter()
                .map(|s| (s.labels.clone(), ConstCounter::new(f(s))))
                .collect::<Vec<_>>()
        };
        family(
            &mut encoder,
            "sluice_source_rows",
            "Rows a source wrote to its table",
            MetricType::Counter,
            counter(&|s| s.stats.rows.load(Ordering::Relaxed)),
        )?;
        family(
            &mut encoder,
            "sluice_source_received_bytes",
            "Bytes of records a source received (message payloads, file bytes, WAL data)",
            MetricType::Counter,
            counter(&|s| s.stats.bytes.load(Ordering::Relaxed)),
        )?;
        family(
            &mut encoder,
            "sluice_source_bad_records",
            "Records a source skipped because they did not decode",
            MetricType::Counter,
            counter(&|s| s.stats.bad_records.load(Ordering::Relaxed)),
        )?;
        family(
            &mut encoder,
            "sluice_source_late_rows",
            "Rows dropped because they were behind the source's watermark",
            MetricType::Counter,
            counter(&|s| s.time.late_rows),
        )?;
        family(
            &mut encoder,
            "sluice_source_watermark_seconds",
            "A source's watermark: no row with an earlier event time is accepted, seconds since 1970",
            MetricType::Gauge,
            sources.iter().filter_map(|s| {
                let w = s.time.watermark?;
                Some((s.labels.clone(), ConstGauge::new(w as f64 / 1e9)))
            }),
        )?;
        let lag = |s: &Source| -> Option<i64> {
            let splits = s.stats.splits();
            let behind = splits
                .iter()
                .filter_map(|p| Some((p.end? - p.position?).max(0)))
                .collect::<Vec<_>>();
            (!behind.is_empty()).then(|| behind.iter().sum())
        };
        family(
            &mut encoder,
            "sluice_source_lag_records",
            "Records a source is behind its upstream (Kafka: offsets behind each partition's high watermark, summed)",
            MetricType::Gauge,
            sources
                .iter()
                .filter(|s| !s.cdc)
                .filter_map(|s| Some((s.labels.clone(), ConstGauge::new(lag(s)?)))),
        )?;
        family(
            &mut encoder,
            "sluice_source_lag_bytes",
            "WAL bytes a PostgreSQL CDC source is behind the server",
            MetricType::Gauge,
            sources
                .iter()
                .filter(|s| s.cdc)
                .filter_map(|s| Some((s.labels.clone(), ConstGauge::new(lag(s)?)))),
        )?;
        family(
            &mut encoder,
            "sluice_source_up",
            "1 while a source runs, 0 while it is stalled (reconnecting), failed or finished",
            MetricType::Gauge,
            sources.iter().map(|s| {
                let up = matches!(s.stats.status(), SourceStatus::Running);
                (s.labels.clone(), ConstGauge::new(i64::from(up)))
            }),
        )?;

        // Tables' own state.
        let sizes: Vec<_> = tables
            .iter()
            .map(|t| (vec![("table", t.def().name.clone())], t.state_size()))
            .collect();
        family(
            &mut encoder,
            "sluice_table_state_rows",
            "Rows a table or source holds in memory",
            MetricType::Gauge,
            sizes
                .iter()
                .map(|(l, s)| (l.clone(), ConstGauge::new(saturating(s.rows)))),
        )?;
        family(
            &mut encoder,
            "sluice_table_state_bytes",
            "Bytes a table or source holds in memory",
            MetricType::Gauge,
            sizes
                .iter()
                .map(|(l, s)| (l.clone(), ConstGauge::new(saturating(s.bytes)))),
        )?;
        let logs: Vec<_> = tables
            .iter()
            .map(|t| (vec![("table", t.def().name.clone())], t.log().size()))
            .collect();
        family(
            &mut encoder,
            "sluice_table_log_bytes",
            "Bytes of a table's or source's log on disk",
            MetricType::Gauge,
            logs.iter()
                .map(|(l, s)| (l.clone(), ConstGauge::new(saturating(s.bytes)))),
        )?;
        family(
            &mut encoder,
            "sluice_table_log_records",
            "Records a table's or source's log holds (a source's log loses those no view needs)",
            MetricType::Gauge,
            logs.iter()
                .map(|(l, s)| (l.clone(), ConstGauge::new(saturating(s.end - s.start)))),
        )?;

        // Views.
        let published = registry.published();
        let newest = published.epoch;
        let cut_at_ms = engine.metrics().epoch_cut_at_ms();
        struct View {
            labels: Vec<(&'static str, String)>,
            epoch: Option<u64>,
            failed: bool,
            rows: u64,
            bytes: u64,
        }
        let views: Vec<View> = registry
            .all()
            .iter()
            .map(|v| {
                let state = published.state.get(&v.id);
                let total = |f: fn(&crate::operator::StateSize) -> u64| {
                    state.map_or(0, |ops| ops.iter().map(|op| f(&op.size)).sum())
                };
                View {
                    labels: vec![("view", v.name.clone())],
                    epoch: state.map(|_| newest),
                    failed: matches!(
                        published.views.get(&v.id),
                        Some(crate::catalog::views::ViewSnapshot::Failed(..))
                    ),
                    rows: total(|s| s.rows),
                    bytes: total(|s| s.bytes),
                }
            })
            .collect();
        family(
            &mut encoder,
            "sluice_view_epoch",
            "The epoch a view's published contents stand at",
            MetricType::Gauge,
            views
                .iter()
                .filter_map(|v| Some((v.labels.clone(), ConstGauge::new(saturating(v.epoch?))))),
        )?;
        family(
            &mut encoder,
            "sluice_view_lag_seconds",
            "How old the input a view's published contents reflect is: now minus the time its epoch's cut was taken",
            MetricType::Gauge,
            views.iter().filter(|v| v.epoch.is_some()).map(|v| {
                let lag = now_ms.saturating_sub(cut_at_ms) as f64 / 1e3;
                (v.labels.clone(), ConstGauge::new(lag))
            }),
        )?;
        family(
            &mut encoder,
            "sluice_view_state_rows",
            "Rows a view keeps: its contents and its operators' state",
            MetricType::Gauge,
            views
                .iter()
                .map(|v| (v.labels.clone(), ConstGauge::new(saturating(v.rows)))),
        )?;
        family(
            &mut encoder,
            "sluice_view_state_bytes",
            "Bytes a view keeps: its contents and its operators' state",
            MetricType::Gauge,
            views
                .iter()
                .map(|v| (v.labels.clone(), ConstGauge::new(saturating(v.bytes)))),
        )?;
        family(
            &mut encoder,
            "sluice_view_failed",
            "1 once a view stopped on an error (sluice_views.error says why)",
            MetricType::Gauge,
            views
                .iter()
                .map(|v| (v.labels.clone(), ConstGauge::new(i64::from(v.failed)))),
        )?;
        family(
            &mut encoder,
            "sluice_epoch",
            "The newest epoch the view runtime published (ms since 1970 at its barrier)",
            MetricType::Gauge,
            [(Vec::new(), ConstGauge::new(saturating(newest)))],
        )?;

        // Sinks.
        let sinks = registry.sinks();
        let sink_labels = |name: &str, sink: &crate::connector::sink::SinkShown| {
            vec![
                ("sink", name.to_string()),
                ("view", sink.view.clone()),
                ("connector", sink.connector.to_string()),
            ]
        };
        family(
            &mut encoder,
            "sluice_sink_records",
            "Records a sink delivered",
            MetricType::Counter,
            sinks.iter().map(|(n, s)| {
                (
                    sink_labels(n, s),
                    ConstCounter::new(s.stats.records.load(Ordering::Relaxed)),
                )
            }),
        )?;
        family(
            &mut encoder,
            "sluice_sink_failed_records",
            "Records whose delivery failed (each try counts)",
            MetricType::Counter,
            sinks.iter().map(|(n, s)| {
                (
                    sink_labels(n, s),
                    ConstCounter::new(s.stats.failed_records.load(Ordering::Relaxed)),
                )
            }),
        )?;
        family(
            &mut encoder,
            "sluice_sink_lag_seconds",
            "How far the epoch a sink delivered last is behind the newest epoch handed to it \
             (or, while the sink holds its view back, the runtime's newest epoch)",
            MetricType::Gauge,
            sinks.iter().map(|(n, s)| {
                let lag = s.stats.lag_ms(published.epoch) as f64 / 1e3;
                (sink_labels(n, s), ConstGauge::new(lag))
            }),
        )?;
        family(
            &mut encoder,
            "sluice_sink_up",
            "1 while a sink runs, 0 once it stopped on an error (sluice_sinks.error says why)",
            MetricType::Gauge,
            sinks.iter().map(|(n, s)| {
                let up = s.stats.error().is_none();
                (sink_labels(n, s), ConstGauge::new(i64::from(up)))
            }),
        )?;

        // Subscriptions and memory.
        family(
            &mut encoder,
            "sluice_subscriptions",
            "Live SUBSCRIBEs",
            MetricType::Gauge,
            [(
                Vec::new(),
                ConstGauge::new(saturating(published.subscriptions.len() as u64)),
            )],
        )?;
        family(
            &mut encoder,
            "sluice_query_memory_bytes",
            "Memory ad-hoc queries hold now (sorts, joins, aggregates), of --query-memory",
            MetricType::Gauge,
            [(
                Vec::new(),
                ConstGauge::new(saturating(engine.query_memory_reserved() as u64)),
            )],
        )?;
        family(
            &mut encoder,
            "process_resident_memory_bytes",
            "Resident memory of the sluice process",
            MetricType::Gauge,
            resident_bytes().map(|b| (Vec::new(), ConstGauge::new(saturating(b)))),
        )?;
        Ok(())
    }
}

/// Serves `GET /metrics` on `listener` until `stop` turns true. Each request is answered and
/// the connection closed; a request must arrive whole within 10 s and 8 KiB.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut scrapes = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    while scrapes.try_join_next().is_some() {}
                    if scrapes.len() >= MAX_SCRAPES {
                        tracing::warn!(%peer, "metrics: too many requests at once, closing one");
                        continue;
                    }
                    let engine = Arc::clone(&engine);
                    scrapes.spawn(async move {
                        if let Err(e) = answer(socket, &engine).await {
                            tracing::debug!(%peer, error = %e, "metrics request failed");
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "metrics: accept failed"),
            },
            Some(_) = scrapes.join_next(), if !scrapes.is_empty() => {}
        }
    }
    scrapes.shutdown().await;
}

/// Requests answered at once; more are closed unanswered.
const MAX_SCRAPES: usize = 16;
/// The longest request head read.
const MAX_REQUEST: usize = 8 << 10;

async fn answer(mut socket: tokio::net::TcpStream, engine: &Arc<Engine>) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed before the request ended",
                ));
            }
            head.extend_from_slice(&buf[..n]);
            if head.len() > MAX_REQUEST {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "request head too long",
                ));
            }
        }
        Ok(())
    })
    .await;
    let (status, content_type, body) = match read {
        Err(_) => return Ok(()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => (
            "431 Request Header Fields Too Large",
            "text/plain; charset=utf-8",
            "request head too long\n".to_string(),
        ),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(())) => {
            let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
            let line = String::from_utf8_lossy(line);
            let mut parts = line.split(' ');
            let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let path = target.split('?').next().unwrap_or("");
            match (method, path) {
                ("GET", "/metrics") => {
                    let engine = Arc::clone(engine);
                    // Reading the engine's state takes short locks only; off the reactor anyway.
                    let text = tokio::task::spawn_blocking(move || render(&engine))
                        .await
                        .map_err(std::io::Error::other)?;
                    ("200 OK", CONTENT_TYPE, text)
                }
                ("GET", "/") => (
                    "200 OK",
                    "text/plain; charset=utf-8",
                    "sluice: metrics at /metrics\n".to_string(),
                ),
                ("GET", _) => (
                    "404 Not Found",
                    "text/plain; charset=utf-8",
                    "not found: metrics are at /metrics\n".to_string(),
                ),
                _ => (
                    "405 Method Not Allowed",
                    "text/plain; charset=utf-8",
                    "only GET\n".to_string(),
                ),
            }
        }
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    socket.write_all(response.as_bytes()).await?;
    socket.write_all(body.as_bytes()).await?;
    socket.shutdown().await
}
