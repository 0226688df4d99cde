//! [`SourceSpec`] and [`SinkSpec`]: what a connector's `WITH (…) FORMAT … ENCODE …` clauses
//! mean, checked once at DDL time so that a running connector never meets a bad option.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{Error, Result, sqlstate};
use crate::sql::parser::ConnectorClause;

/// Where a source's records come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    /// A Kafka topic, read through librdkafka.
    Kafka(KafkaSource),
    /// Files matching a path or glob, read once (a bounded source).
    File {
        /// The path or glob pattern.
        path: String,
    },
    /// The Nexmark generator.
    Nexmark(NexmarkSource),
    /// A RabbitMQ queue (classic, quorum or stream), read through lapin.
    RabbitMq(RabbitMqSource),
    /// A PostgreSQL table: a snapshot, then its logical replication stream.
    PostgresCdc(PostgresCdcSource),
}

/// `connector = 'postgres-cdc'` options of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresCdcSource {
    /// The server, database and table.
    pub target: PostgresTarget,
    /// `slot.name`: the replication slot (made by Sluice; default from the table's name).
    pub slot: Option<String>,
    /// `publication.name`: a publication holding the table (default: one Sluice makes for it).
    pub publication: Option<String>,
}

/// `connector = 'rabbitmq'` options of a source.
#[derive(Debug, Clone, PartialEq)]
pub struct RabbitMqSource {
    /// `url`: `amqp://user:password@host:port/vhost`.
    pub url: String,
    /// `queue`: the queue to consume (it must exist).
    pub queue: String,
    /// `scan.startup.mode`: where a stream queue is first read from (other queues deliver
    /// what they hold).
    pub startup: StartupMode,
    /// `prefetch.count`: deliveries in flight before an acknowledgement (5000).
    pub prefetch: u16,
    /// `idle.timeout`: a queue silent this long no longer holds the watermark back.
    pub idle_timeout: Duration,
}

/// `connector = 'kafka'` options of a source.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSource {
    /// `topic`.
    pub topic: String,
    /// `properties.bootstrap.server`.
    pub bootstrap: String,
    /// `scan.startup.mode` (and `scan.startup.timestamp.millis`).
    pub startup: StartupMode,
    /// `properties.<librdkafka option>`, passed through.
    pub properties: BTreeMap<String, String>,
    /// `idle.timeout` (`'5s'`, `'500ms'`): a partition silent this long no longer holds the
    /// watermark back.
    pub idle_timeout: Duration,
}

/// Where a Kafka source starts when it has no position of its own yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupMode {
    /// The oldest retained record.
    Earliest,
    /// Only records produced from now on.
    Latest,
    /// The first record at or after this time (milliseconds since the epoch).
    Timestamp(i64),
}

/// `connector = 'nexmark'` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NexmarkSource {
    /// `nexmark.table.type`: `bid`, `auction` or `person`.
    pub table: NexmarkTable,
    /// `nexmark.event.num`: events in all (all three kinds counted), unbounded when absent.
    pub event_num: Option<u64>,
    /// `nexmark.split.num`: generators run side by side.
    pub split_num: u32,
    /// `nexmark.max.chunk.size`: events generated per appended batch.
    pub chunk_size: usize,
    /// `nexmark.min.event.gap.in.ns`: pacing; 0 generates as fast as possible.
    pub event_gap_ns: u64,
}

/// The Nexmark relations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NexmarkTable {
    /// `bid`.
    Bid,
    /// `auction`.
    Auction,
    /// `person`.
    Person,
}

/// `FORMAT …`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Every record is a row to insert.
    Plain,
    /// The record's key names the row; its value replaces the row, an empty value deletes it.
    Upsert,
    /// Debezium change envelopes (sinks only).
    Debezium,
}

/// `ENCODE …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encode {
    /// One JSON object per record (or per line of a file).
    Json,
    /// One CSV line per record.
    Csv {
        /// `delimiter`, one byte.
        delimiter: u8,
        /// `without_header = 'false'` (files only): skip a first header line.
        header: bool,
    },
    /// Avro with the Confluent wire format (magic byte, 4-byte schema id, body).
    Avro {
        /// `schema` (inline JSON) or the schemas of a registry (`schema.registry`).
        schema: AvroSchemaSource,
    },
}

/// Where an Avro writer schema comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AvroSchemaSource {
    /// `schema = '{…}'`: used for every schema id seen.
    Inline(String),
    /// `schema.registry = 'http://…'`: each schema id's writer schema, fetched once.
    Registry(String),
}

/// `on_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Skip and count a record that does not decode (the default).
    Skip,
    /// Stop the source with the record's error.
    Fail,
}

/// Metadata a source can add as columns (`INCLUDE …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeKind {
    /// The Kafka record key (bytea).
    Key,
    /// The partition (int).
    Partition,
    /// The offset (bigint).
    Offset,
    /// The record's timestamp (timestamptz).
    Timestamp,
}

/// A metadata column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    /// What it holds.
    pub kind: IncludeKind,
    /// Its column name.
    pub column: String,
}

impl Include {
    /// The column's type.
    pub fn data_type(&self) -> datafusion::arrow::datatypes::DataType {
        use datafusion::arrow::datatypes::{DataType, TimeUnit};
        match self.kind {
            IncludeKind::Key => DataType::Binary,
            IncludeKind::Partition => DataType::Int32,
            IncludeKind::Offset => DataType::Int64,
            IncludeKind::Timestamp => {
                DataType::Timestamp(TimeUnit::Nanosecond, Some("+00:00".into()))
            }
        }
    }
}

/// A source as its DDL declared it.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSpec {
    /// Where records come from.
    pub kind: SourceKind,
    /// `FORMAT`.
    pub format: Format,
    /// `ENCODE` (the Nexmark generator has none of its own; JSON is recorded).
    pub encode: Encode,
    /// `INCLUDE …` columns, appended after the declared ones.
    pub includes: Vec<Include>,
    /// `on_error`.
    pub on_error: OnError,
    /// Records above this many bytes are counted as bad (`max.record.bytes`).
    pub max_record_bytes: usize,
}

/// A sink as its DDL declared it.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkSpec {
    /// Where its records go.
    pub target: SinkTarget,
    /// `FORMAT` (a PostgreSQL sink: `Upsert` with a `primary_key`, else `Plain`).
    pub format: Format,
    /// `primary_key = 'a, b'`: the record key of upsert and Debezium sinks.
    pub primary_key: Vec<String>,
    /// `force_append_only = 'true'`: a plain sink over an updating view drops retractions.
    pub force_append_only: bool,
    /// `sink.exactly_once` (default true): each checkpoint's changes go out in one transaction
    /// (Kafka's, or PostgreSQL's), committed once the checkpoint is durable; `false`: every
    /// epoch at once, at-least-once.
    pub exactly_once: bool,
}

/// Where a sink writes.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkTarget {
    /// `connector = 'kafka'`.
    Kafka(KafkaSinkTarget),
    /// `connector = 'postgres'` (or `'jdbc'` with a `jdbc.url` of PostgreSQL).
    Postgres(PostgresTarget),
}

/// A Kafka sink's topic and client.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSinkTarget {
    /// `topic`.
    pub topic: String,
    /// `properties.bootstrap.server`.
    pub bootstrap: String,
    /// `properties.<librdkafka option>`, passed through.
    pub properties: BTreeMap<String, String>,
}

/// A PostgreSQL server, database and table.
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresTarget {
    /// `host` / `hostname`.
    pub host: String,
    /// `port` (5432).
    pub port: u16,
    /// `user` / `username`.
    pub user: String,
    /// `password` (none).
    pub password: Option<String>,
    /// `database` / `database.name`.
    pub database: String,
    /// `schema` / `schema.name` (`public`).
    pub schema: String,
    /// `table` / `table.name`.
    pub table: String,
}

impl PostgresTarget {
    /// A `tokio_postgres` connection configuration.
    pub fn config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.database)
            .application_name("sluice")
            .connect_timeout(Duration::from_secs(10));
        if let Some(password) = &self.password {
            config.password(password);
        }
        config
    }

    /// `"schema"."table"`, quoted.
    pub fn qualified_table(&self) -> String {
        format!(
            "{}.{}",
            quote_identifier(&self.schema),
            quote_identifier(&self.table)
        )
    }

    /// Reads the connection options every PostgreSQL connector shares.
    fn parse(options: &Options<'_>, connector: &str) -> Result<Self> {
        let either = |a, b| options.get(a).or_else(|| options.get(b));
        let port = match options.get("port") {
            None => 5432,
            Some(p) => p
                .trim()
                .parse::<u16>()
                .map_err(|_| invalid(format!("option 'port' must be a port number, not '{p}'")))?,
        };
        let (table, schema) = match either("table.name", "table") {
            None => {
                return Err(invalid(format!(
                    "connector '{connector}' needs option 'table.name'"
                )));
            }
            // `schema.table` in one option, as RisingWave's JDBC sink allows.
            Some(t) => match (t.split_once('.'), either("schema.name", "schema")) {
                (Some((s, t)), None) => (t.to_string(), s.to_string()),
                (_, schema) => (t.to_string(), schema.unwrap_or("public").to_string()),
            },
        };
        Ok(Self {
            host: either("hostname", "host")
                .unwrap_or("127.0.0.1")
                .to_string(),
            port,
            user: either("username", "user")
                .ok_or_else(|| invalid(format!("connector '{connector}' needs option 'username'")))?
                .to_string(),
            password: options.get("password").map(str::to_string),
            database: either("database.name", "database")
                .ok_or_else(|| {
                    invalid(format!(
                        "connector '{connector}' needs option 'database.name'"
                    ))
                })?
                .to_string(),
            schema,
            table,
        })
    }
}

/// `name` as a PostgreSQL identifier: double-quoted, inner quotes doubled.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// librdkafka options the Kafka source sets itself: a user's value would be overridden, so it
/// is refused rather than ignored.
pub const SOURCE_OWN_PROPERTIES: &[&str] = &[
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
    "auto.offset.reset",
];

fn invalid(message: impl Into<String>) -> Error {
    Error::user(sqlstate::INVALID_PARAMETER_VALUE, message.into())
}

/// Options a clause has that nothing read: a typo must not pass silently.
struct Options<'a> {
    options: &'a BTreeMap<String, String>,
    used: std::cell::RefCell<Vec<&'a str>>,
}

impl<'a> Options<'a> {
    fn new(options: &'a BTreeMap<String, String>) -> Self {
        Self {
            options,
            used: Default::default(),
        }
    }

    fn get(&self, key: &'a str) -> Option<&'a str> {
        self.used.borrow_mut().push(key);
        self.options.get(key).map(String::as_str)
    }

    fn require(&self, key: &'a str, connector: &str) -> Result<&'a str> {
        self.get(key)
            .ok_or_else(|| invalid(format!("connector '{connector}' needs option '{key}'")))
    }

    fn number<T: std::str::FromStr>(&self, key: &'a str) -> Result<Option<T>> {
        self.get(key)
            .map(|v| {
                v.trim()
                    .parse()
                    .map_err(|_| invalid(format!("option '{key}' must be a number, not '{v}'")))
            })
            .transpose()
    }

    fn boolean(&self, key: &'a str) -> Result<Option<bool>> {
        self.get(key)
            .map(|v| match v.to_ascii_lowercase().as_str() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(invalid(format!("option '{key}' must be true or false"))),
            })
            .transpose()
    }

    /// `properties.x.y = v` as `x.y = v`.
    fn properties(&self) -> BTreeMap<String, String> {
        self.options
            .iter()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix("properties.")?;
                (name != "bootstrap.server").then(|| (name.to_string(), v.clone()))
            })
            .collect()
    }

    fn check_all_used(&self, what: &str) -> Result<()> {
        let used = self.used.borrow();
        for key in self.options.keys() {
            if !used.contains(&key.as_str()) && !key.starts_with("properties.") {
                return Err(invalid(format!("unknown {what} option '{key}'")));
            }
        }
        Ok(())
    }
}

/// The longest duration an option or a statement may give.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// `seconds` as a duration, when it is a number of seconds from 0 to [`MAX_DURATION`] (a
/// larger one would overflow the clock arithmetic it is used in).
pub fn duration_of_seconds(seconds: f64) -> Option<Duration> {
    if seconds.is_nan() || seconds < 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| *d <= MAX_DURATION)
}

/// Parses a duration such as `5s`, `500ms`, `1m`, `2h`, `1d` or a bare number of seconds, at most
/// [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim().to_ascii_lowercase();
    let (digits, unit) = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((t.as_str(), "s"), |i| (&t[..i], t[i..].trim()));
    let value: f64 = digits.parse().ok()?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" | "sec" | "second" | "seconds" => value,
        "m" | "min" | "minute" | "minutes" => value * 60.0,
        "h" | "hour" | "hours" => value * 3600.0,
        "d" | "day" | "days" => value * 86_400.0,
        _ => return None,
    };
    duration_of_seconds(seconds)
}

fn parse_format(clause: &ConnectorClause, default: Format) -> Result<Format> {
    match clause.format.as_deref() {
        None => Ok(default),
        Some("PLAIN") => Ok(Format::Plain),
        Some("UPSERT") => Ok(Format::Upsert),
        Some("DEBEZIUM") => Ok(Format::Debezium),
        Some(other) => Err(Error::unsupported(format!("FORMAT {other}"))),
    }
}

fn parse_encode(clause: &ConnectorClause) -> Result<Encode> {
    let options = Options::new(&clause.encode_options);
    let encode = match clause.encode.as_deref() {
        None | Some("JSON") => Encode::Json,
        Some("CSV") => {
            let delimiter = match options.get("delimiter") {
                None => b',',
                Some(d) if d.len() == 1 => d.as_bytes()[0],
                Some("\\t") => b'\t',
                Some(d) => {
                    return Err(invalid(format!(
                        "CSV delimiter must be one character, not '{d}'"
                    )));
                }
            };
            let without_header = options.boolean("without_header")?.unwrap_or(true);
            Encode::Csv {
                delimiter,
                header: !without_header,
            }
        }
        Some("AVRO") => {
            let schema = match (options.get("schema"), options.get("schema.registry")) {
                (Some(inline), None) => AvroSchemaSource::Inline(inline.to_string()),
                (None, Some(url)) if url.starts_with("http://") => {
                    AvroSchemaSource::Registry(url.trim_end_matches('/').to_string())
                }
                (None, Some(url)) => {
                    return Err(Error::unsupported(format!(
                        "schema.registry = '{url}': only http:// registries are supported"
                    )));
                }
                _ => {
                    return Err(invalid(
                        "ENCODE AVRO needs one of schema = '<json>' or schema.registry = '<url>'",
                    ));
                }
            };
            Encode::Avro { schema }
        }
        Some(other) => return Err(Error::unsupported(format!("ENCODE {other}"))),
    };
    options.check_all_used("ENCODE")?;
    Ok(encode)
}

/// `scan.startup.mode` (and `scan.startup.timestamp.millis`).
fn startup_mode(options: &Options<'_>) -> Result<StartupMode> {
    let startup = match options
        .get("scan.startup.mode")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("earliest") => StartupMode::Earliest,
        Some("latest") => StartupMode::Latest,
        Some("timestamp") => StartupMode::Timestamp(
            options
                .number("scan.startup.timestamp.millis")?
                .ok_or_else(|| {
                    invalid("scan.startup.mode = 'timestamp' needs scan.startup.timestamp.millis")
                })?,
        ),
        Some(other) => {
            return Err(invalid(format!(
                "scan.startup.mode must be earliest, latest or timestamp, not '{other}'"
            )));
        }
    };
    if startup != StartupMode::Timestamp(0) {
        options.get("scan.startup.timestamp.millis");
    }
    Ok(startup)
}

/// `idle.timeout` (5 s by default).
fn idle_timeout(options: &Options<'_>) -> Result<Duration> {
    match options.get("idle.timeout") {
        None => Ok(Duration::from_secs(5)),
        Some(t) => parse_duration(t).ok_or_else(|| {
            invalid(format!(
                "idle.timeout: bad duration '{t}' (like '5s', at most 365 days)"
            ))
        }),
    }
}

impl SourceSpec {
    /// Checks a source's (or connector table's) clauses.
    pub fn parse(clause: &ConnectorClause) -> Result<Self> {
        let options = Options::new(&clause.options);
        let connector = options
            .get("connector")
            .ok_or_else(|| invalid("a source needs WITH (connector = '…')"))?
            .to_ascii_lowercase();
        let kind = match connector.as_str() {
            "kafka" => {
                let startup = startup_mode(&options)?;
                let idle_timeout = idle_timeout(&options)?;
                let properties = options.properties();
                if let Some(own) = SOURCE_OWN_PROPERTIES
                    .iter()
                    .find(|p| properties.contains_key(**p))
                {
                    return Err(invalid(format!(
                        "properties.{own} is set by the Kafka source itself (it keeps its \
                         offsets in its own log and resumes after the last record it kept)"
                    )));
                }
                SourceKind::Kafka(KafkaSource {
                    topic: options.require("topic", "kafka")?.to_string(),
                    bootstrap: options
                        .require("properties.bootstrap.server", "kafka")?
                        .to_string(),
                    startup,
                    properties,
                    idle_timeout,
                })
            }
            "file" => SourceKind::File {
                path: options.require("path", "file")?.to_string(),
            },
            "postgres-cdc" => {
                if clause.format.is_some() || clause.encode.is_some() {
                    return Err(invalid(
                        "a postgres-cdc table takes no FORMAT … ENCODE …: rows come as rows",
                    ));
                }
                let slot = options.get("slot.name").map(str::to_string);
                if let Some(slot) = &slot
                    && (slot.is_empty()
                        || slot.len() > 63
                        || !slot
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
                {
                    return Err(invalid(format!(
                        "slot.name '{slot}': a replication slot name is 1 to 63 lower-case letters, digits and underscores"
                    )));
                }
                SourceKind::PostgresCdc(PostgresCdcSource {
                    target: PostgresTarget::parse(&options, "postgres-cdc")?,
                    slot,
                    publication: options.get("publication.name").map(str::to_string),
                })
            }
            "rabbitmq" => SourceKind::RabbitMq(RabbitMqSource {
                url: options.require("url", "rabbitmq")?.to_string(),
                queue: options.require("queue", "rabbitmq")?.to_string(),
                startup: startup_mode(&options)?,
                prefetch: options.number("prefetch.count")?.unwrap_or(5000u16).max(1),
                idle_timeout: idle_timeout(&options)?,
            }),
            "nexmark" => {
                let table = match options
                    .get("nexmark.table.type")
                    .map(str::to_ascii_lowercase)
                    .as_deref()
                {
                    None | Some("bid") => NexmarkTable::Bid,
                    Some("auction") => NexmarkTable::Auction,
                    Some("person") => NexmarkTable::Person,
                    Some(other) => {
                        return Err(invalid(format!(
                            "nexmark.table.type must be bid, auction or person, not '{other}'"
                        )));
                    }
                };
                SourceKind::Nexmark(NexmarkSource {
                    table,
                    event_num: options.number("nexmark.event.num")?,
                    split_num: options.number("nexmark.split.num")?.unwrap_or(1).max(1),
                    chunk_size: options
                        .number("nexmark.max.chunk.size")?
                        .unwrap_or(8192usize)
                        .max(1),
                    event_gap_ns: options.number("nexmark.min.event.gap.in.ns")?.unwrap_or(0),
                })
            }
            other => return Err(Error::unsupported(format!("connector '{other}'"))),
        };
        let on_error = match options
            .get("on_error")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("skip") => OnError::Skip,
            Some("fail") => OnError::Fail,
            Some(other) => {
                return Err(invalid(format!(
                    "on_error must be 'skip' or 'fail', not '{other}'"
                )));
            }
        };
        let max_record_bytes = options.number("max.record.bytes")?.unwrap_or(1 << 20);
        options.check_all_used("source")?;
        let format = parse_format(clause, Format::Plain)?;
        if format == Format::Debezium {
            return Err(Error::unsupported("FORMAT DEBEZIUM for sources"));
        }
        if matches!(kind, SourceKind::RabbitMq(_)) && format != Format::Plain {
            return Err(Error::unsupported(
                "a rabbitmq source is FORMAT PLAIN (messages have no key to upsert by)",
            ));
        }
        let encode = parse_encode(clause)?;
        if matches!(kind, SourceKind::File { .. }) && matches!(encode, Encode::Avro { .. }) {
            return Err(Error::unsupported("ENCODE AVRO for file sources"));
        }
        let mut includes = Vec::new();
        for (kind, column) in &clause.includes {
            let kind = match kind.as_str() {
                "key" => IncludeKind::Key,
                "partition" => IncludeKind::Partition,
                "offset" => IncludeKind::Offset,
                "timestamp" => IncludeKind::Timestamp,
                other => return Err(Error::unsupported(format!("INCLUDE {other}"))),
            };
            if connector != "kafka" {
                return Err(Error::unsupported(format!(
                    "INCLUDE for connector '{connector}'"
                )));
            }
            includes.push(Include {
                kind,
                column: column.clone(),
            });
        }
        Ok(Self {
            kind,
            format,
            encode,
            includes,
            on_error,
            max_record_bytes,
        })
    }

    /// The connector's name, as `sluice_sources` shows it.
    pub fn connector(&self) -> &'static str {
        match self.kind {
            SourceKind::Kafka(_) => "kafka",
            SourceKind::File { .. } => "file",
            SourceKind::Nexmark(_) => "nexmark",
            SourceKind::RabbitMq(_) => "rabbitmq",
            SourceKind::PostgresCdc(_) => "postgres-cdc",
        }
    }

    /// True for sources that end (files, a Nexmark generator with `nexmark.event.num`).
    pub fn is_bounded(&self) -> bool {
        match &self.kind {
            SourceKind::Kafka(_) | SourceKind::RabbitMq(_) | SourceKind::PostgresCdc(_) => false,
            SourceKind::File { .. } => true,
            SourceKind::Nexmark(n) => n.event_num.is_some(),
        }
    }
}

impl SinkSpec {
    /// Checks a sink's clauses.
    pub fn parse(clause: &ConnectorClause) -> Result<Self> {
        let options = Options::new(&clause.options);
        let connector = options
            .get("connector")
            .ok_or_else(|| invalid("a sink needs WITH (connector = 'kafka' | 'postgres')"))?
            .to_ascii_lowercase();
        let primary_key: Vec<String> = options
            .get("primary_key")
            .map(|k| {
                k.split(',')
                    .map(|c| c.trim().to_lowercase())
                    .filter(|c| !c.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let force_append_only = options.boolean("force_append_only")?.unwrap_or(false);
        let exactly_once = options.boolean("sink.exactly_once")?.unwrap_or(true);
        let spec = match connector.as_str() {
            "kafka" => Self {
                target: SinkTarget::Kafka(KafkaSinkTarget {
                    topic: options.require("topic", "kafka")?.to_string(),
                    bootstrap: options
                        .require("properties.bootstrap.server", "kafka")?
                        .to_string(),
                    properties: options.properties(),
                }),
                format: parse_format(clause, Format::Plain)?,
                primary_key,
                force_append_only,
                exactly_once,
            },
            "postgres" | "postgresql" => {
                // RisingWave's `type = 'upsert' | 'append-only'`; without it, a sink with a
                // primary key upserts.
                let format = match options.get("type").map(str::to_ascii_lowercase).as_deref() {
                    None if primary_key.is_empty() => Format::Plain,
                    None | Some("upsert") => Format::Upsert,
                    Some("append-only") => Format::Plain,
                    Some(other) => {
                        return Err(invalid(format!(
                            "option 'type' of a postgres sink is 'upsert' or 'append-only', not '{other}'"
                        )));
                    }
                };
                if clause.format.is_some() || clause.encode.is_some() {
                    return Err(invalid(
                        "a postgres sink takes no FORMAT … ENCODE …: rows are written as rows \
                         (type = 'upsert' with primary_key, or 'append-only')",
                    ));
                }
                Self {
                    target: SinkTarget::Postgres(PostgresTarget::parse(&options, "postgres")?),
                    format,
                    primary_key,
                    force_append_only,
                    exactly_once,
                }
            }
            other => return Err(Error::unsupported(format!("sink connector '{other}'"))),
        };
        options.get("type");
        options.check_all_used("sink")?;
        if matches!(spec.target, SinkTarget::Postgres(_))
            && options.options.keys().any(|k| k.starts_with("properties."))
        {
            return Err(invalid("a postgres sink takes no properties.* options"));
        }
        if clause.encode.as_deref().is_some_and(|e| e != "JSON") {
            return Err(Error::unsupported(format!(
                "sink ENCODE {}",
                clause.encode.as_deref().unwrap_or_default()
            )));
        }
        if spec.format == Format::Debezium && matches!(spec.target, SinkTarget::Postgres(_)) {
            return Err(invalid("a postgres sink is upsert or append-only"));
        }
        if spec.format != Format::Plain && spec.primary_key.is_empty() {
            return Err(invalid(
                "FORMAT UPSERT and DEBEZIUM sinks need primary_key = '<columns>'",
            ));
        }
        Ok(spec)
    }

    /// The Kafka target; an error for any other.
    pub fn kafka(&self) -> Result<&KafkaSinkTarget> {
        match &self.target {
            SinkTarget::Kafka(k) => Ok(k),
            SinkTarget::Postgres(_) => Err(Error::internal("not a kafka sink")),
        }
    }

    /// What `sluice_sinks` shows as the sink's connector and target.
    pub fn shown_target(&self) -> (&'static str, String) {
        match &self.target {
            SinkTarget::Kafka(k) => ("kafka", k.topic.clone()),
            SinkTarget::Postgres(p) => (
                "postgres",
                format!(
                    "{}:{}/{}/{}.{}",
                    p.host, p.port, p.database, p.schema, p.table
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::parse_sql;

    fn clause(sql: &str) -> ConnectorClause {
        parse_sql(sql).unwrap().remove(0).connector.unwrap()
    }

    #[test]
    fn kafka_source_options_are_checked() {
        let spec = SourceSpec::parse(&clause(
            "CREATE SOURCE s (a INT) INCLUDE partition AS p WITH (connector = 'kafka', topic = 't', \
             properties.bootstrap.server = 'h:1', properties.fetch.wait.max.ms = '5', \
             scan.startup.mode = 'latest', idle.timeout = '200ms') FORMAT PLAIN ENCODE JSON",
        ))
        .unwrap();
        let SourceKind::Kafka(kafka) = &spec.kind else {
            panic!("not kafka")
        };
        assert_eq!(kafka.startup, StartupMode::Latest);
        assert_eq!(kafka.idle_timeout, Duration::from_millis(200));
        assert_eq!(kafka.properties["fetch.wait.max.ms"], "5");
        assert_eq!(spec.includes[0].kind, IncludeKind::Partition);

        let typo = SourceSpec::parse(&clause(
            "CREATE SOURCE s (a INT) WITH (connector = 'kafka', topik = 't') FORMAT PLAIN ENCODE JSON",
        ))
        .unwrap_err();
        assert_eq!(typo.sqlstate(), sqlstate::INVALID_PARAMETER_VALUE);
        let missing = SourceSpec::parse(&clause(
            "CREATE SOURCE s (a INT) WITH (connector = 'kafka', topic = 't') FORMAT PLAIN ENCODE JSON",
        ))
        .unwrap_err();
        assert!(missing.to_string().contains("properties.bootstrap.server"));
        let own = SourceSpec::parse(&clause(
            "CREATE SOURCE s (a INT) WITH (connector = 'kafka', topic = 't', \
             properties.bootstrap.server = 'h:1', properties.auto.offset.reset = 'latest') \
             FORMAT PLAIN ENCODE JSON",
        ))
        .unwrap_err();
        assert_eq!(own.sqlstate(), sqlstate::INVALID_PARAMETER_VALUE);
        assert!(own.to_string().contains("auto.offset.reset"), "{own}");
    }

    #[test]
    fn csv_and_sink_options() {
        let spec = SourceSpec::parse(&clause(
            "CREATE SOURCE s (a INT) WITH (connector = 'file', path = '/x/*.csv') \
             FORMAT PLAIN ENCODE CSV (delimiter = '|', without_header = 'false')",
        ))
        .unwrap();
        assert_eq!(
            spec.encode,
            Encode::Csv {
                delimiter: b'|',
                header: true
            }
        );
        assert!(spec.is_bounded());
        let sink = SinkSpec::parse(&clause(
            "CREATE SINK k FROM v WITH (connector = 'kafka', topic = 'o', \
             properties.bootstrap.server = 'h:1', primary_key = 'a, B') FORMAT UPSERT ENCODE JSON",
        ))
        .unwrap();
        assert_eq!(sink.primary_key, vec!["a", "b"]);
        assert!(
            SinkSpec::parse(&clause(
                "CREATE SINK k FROM v WITH (connector = 'kafka', topic = 'o', \
                 properties.bootstrap.server = 'h:1') FORMAT UPSERT ENCODE JSON",
            ))
            .is_err()
        );
    }

    #[test]
    fn rabbitmq_source_options() {
        let spec = SourceSpec::parse(&clause(
            "CREATE SOURCE s (a INT) WITH (connector = 'rabbitmq', url = 'amqp://h', \
             queue = 'q', prefetch.count = '10', scan.startup.mode = 'latest') \
             FORMAT PLAIN ENCODE JSON",
        ))
        .unwrap();
        let SourceKind::RabbitMq(rabbit) = &spec.kind else {
            panic!("not rabbitmq")
        };
        assert_eq!((rabbit.queue.as_str(), rabbit.prefetch), ("q", 10));
        assert_eq!(rabbit.startup, StartupMode::Latest);
        assert!(!spec.is_bounded());
        for bad in [
            "WITH (connector = 'rabbitmq', url = 'amqp://h') FORMAT PLAIN ENCODE JSON",
            "WITH (connector = 'rabbitmq', url = 'amqp://h', queue = 'q', prefetch.count = '70000') \
             FORMAT PLAIN ENCODE JSON",
            "WITH (connector = 'rabbitmq', url = 'amqp://h', queue = 'q') FORMAT UPSERT ENCODE JSON",
            "INCLUDE offset WITH (connector = 'rabbitmq', url = 'amqp://h', queue = 'q') \
             FORMAT PLAIN ENCODE JSON",
        ] {
            let sql = format!("CREATE SOURCE s (a INT) {bad}");
            assert!(
                parse_sql(&sql)
                    .map_err(|_| ())
                    .and_then(
                        |mut s| SourceSpec::parse(&s.remove(0).connector.unwrap()).map_err(|_| ())
                    )
                    .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn postgres_sink_options() {
        let sink = SinkSpec::parse(&clause(
            "CREATE SINK p FROM v WITH (connector = 'postgres', hostname = 'db', port = '6543', \
             username = 'u', password = 'pw', database.name = 'd', table.name = 'app.totals', \
             primary_key = 'k')",
        ))
        .unwrap();
        assert_eq!(sink.format, Format::Upsert);
        let SinkTarget::Postgres(pg) = &sink.target else {
            panic!("not postgres")
        };
        assert_eq!((pg.host.as_str(), pg.port), ("db", 6543));
        assert_eq!((pg.schema.as_str(), pg.table.as_str()), ("app", "totals"));
        assert_eq!(pg.qualified_table(), r#""app"."totals""#);
        let append = SinkSpec::parse(&clause(
            "CREATE SINK p FROM v WITH (connector = 'postgres', user = 'u', database = 'd', \
             table = 't', type = 'append-only')",
        ))
        .unwrap();
        assert_eq!(append.format, Format::Plain);
        for bad in [
            "connector = 'postgres', user = 'u', database = 'd'",
            "connector = 'postgres', user = 'u', database = 'd', table = 't', port = 'x'",
            "connector = 'postgres', user = 'u', database = 'd', table = 't', type = 'upsert'",
            "connector = 'postgres', user = 'u', database = 'd', table = 't', tabel = 'x'",
        ] {
            assert!(
                SinkSpec::parse(&clause(&format!("CREATE SINK p FROM v WITH ({bad})"))).is_err(),
                "{bad}"
            );
        }
        assert_eq!(quote_identifier(r#"a"b"#), r#""a""b""#);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("x"), None);
        // Too large for a Duration, or for the clock arithmetic it is used in: refused.
        assert_eq!(parse_duration("100000000000000000000s"), None);
        assert_eq!(parse_duration("10000000000"), None);
        assert_eq!(parse_duration("31536001"), None);
        assert_eq!(parse_duration("525600m"), Some(MAX_DURATION));
    }
}
