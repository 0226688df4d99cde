-- Clickstream: page views per user over a 5-minute window sliding every minute.
-- Inside the playground, Kafka is kafka:9092 (from your machine: 127.0.0.1:19092).

CREATE SOURCE page_views (
  user_id INT NOT NULL,
  page VARCHAR,
  ts TIMESTAMP,
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
)
INCLUDE partition AS kafka_partition
WITH (
  connector = 'kafka',
  topic = 'page_views',
  properties.bootstrap.server = 'kafka:9092',
  scan.startup.mode = 'earliest'
) FORMAT PLAIN ENCODE JSON;

-- Updating: every window's count so far.
CREATE MATERIALIZED VIEW views_per_user AS
SELECT user_id, window_start, window_end, count(*) AS views, count(DISTINCT page) AS pages
FROM HOP(page_views, ts, INTERVAL '1' MINUTE, INTERVAL '5' MINUTE)
GROUP BY user_id, window_start, window_end;

-- Final: each window once, when the watermark passes its end (Flink's group-window spelling).
CREATE MATERIALIZED VIEW views_per_user_final AS
SELECT user_id, HOP_START(ts, INTERVAL '1' MINUTE, INTERVAL '5' MINUTE) AS window_start, count(*) AS views
FROM page_views
GROUP BY user_id, HOP(ts, INTERVAL '1' MINUTE, INTERVAL '5' MINUTE)
EMIT ON WINDOW CLOSE;

-- The busiest users' windows go back to Kafka as upserts (key: user and window).
CREATE SINK busiest FROM views_per_user WITH (
  connector = 'kafka',
  topic = 'views_per_user',
  properties.bootstrap.server = 'kafka:9092',
  primary_key = 'user_id, window_start'
) FORMAT UPSERT ENCODE JSON;
