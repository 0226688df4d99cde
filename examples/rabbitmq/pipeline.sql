-- Run in Sluice: psql -h 127.0.0.1 -p 5433 -U sluice -d sluice -f pipeline.sql
-- Sensor readings from a RabbitMQ stream queue (declared by publish.py), averaged per sensor
-- over 10-second tumbling windows, each window emitted once it has closed.
CREATE SOURCE readings (sensor TEXT, celsius DOUBLE PRECISION, at TIMESTAMP,
                        WATERMARK FOR at AS at - INTERVAL '2 seconds')
WITH (connector = 'rabbitmq', url = 'amqp://guest:guest@127.0.0.1:5672/%2f',
      queue = 'readings')
FORMAT PLAIN ENCODE JSON;
CREATE MATERIALIZED VIEW per_sensor AS
  SELECT sensor, window_start, count(*) AS n, avg(celsius) AS mean, max(celsius) AS peak
  FROM TUMBLE(readings, at, INTERVAL '10 seconds')
  GROUP BY sensor, window_start
  EMIT ON WINDOW CLOSE;
