-- A first session with Sluice: run `sluice serve`, then
--   psql -h 127.0.0.1 -p 5433 -U sluice -d sluice -f examples/bids.sql
CREATE TABLE IF NOT EXISTS bids (
    auction BIGINT,
    bidder BIGINT,
    price BIGINT,
    date_time TIMESTAMP
) APPEND ONLY;

INSERT INTO bids VALUES
    (1000, 1, 150, '2026-01-01 00:00:01'),
    (1000, 2, 175, '2026-01-01 00:00:02'),
    (1001, 1, 90, '2026-01-01 00:00:03'),
    (1002, 3, 1200, '2026-01-01 00:00:09');

-- bids per auction and 10-second window, as a batch query today (a live view in the next step)
SELECT auction,
       date_bin(INTERVAL '10 seconds', date_time, TIMESTAMP '1970-01-01') AS window_start,
       count(*) AS bids,
       max(price) AS top
FROM bids
GROUP BY 1, 2
ORDER BY 1, 2;
