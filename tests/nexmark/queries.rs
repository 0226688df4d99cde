//! Nexmark's queries as Sluice runs them, shared by the test (`tests/nexmark.rs`) and the
//! benchmark (`benches/nexmark.rs`): q0–q22 and RisingWave's q101–q106, over the tables
//! `person`, `auction` and `bid` (and `side_input` for q13).
//!
//! Where a query's result would depend on how ties are broken (`ROW_NUMBER`, a `ROWS` frame,
//! `LIMIT`), the `ORDER BY` has tie-breakers, so that the view and its batch query agree.
//! Left out: q12 (processing-time windows: no batch query gives the same rows). q102 divides by
//! `nullif(count(DISTINCT auction), 0)`: its view starts before any bid, and a division by zero
//! fails a view, as it fails a query. q14's UDF is a SQL function (`count_char`, made by `setup`).

/// `(name, query)`.
pub const QUERIES: &[(&str, &str)] = &[
    ("q0", "SELECT auction, bidder, price, date_time FROM bid"),
    (
        "q1",
        "SELECT auction, bidder, 0.908 * price AS price, date_time FROM bid",
    ),
    (
        "q2",
        "SELECT auction, price FROM bid WHERE auction % 123 = 0",
    ),
    (
        "q3",
        "SELECT p.name, p.city, p.state, a.id FROM auction a JOIN person p ON a.seller = p.id \
         WHERE a.category = 10 AND (p.state = 'OR' OR p.state = 'ID' OR p.state = 'CA')",
    ),
    (
        "q4",
        "SELECT q.category, avg(q.final) AS avg_final FROM (SELECT max(b.price) AS final, a.category \
         FROM auction a, bid b WHERE a.id = b.auction AND b.date_time BETWEEN a.date_time AND a.expires \
         GROUP BY a.id, a.category) q GROUP BY q.category",
    ),
    (
        "q5",
        "SELECT ab.auction, ab.num, ab.starttime FROM (SELECT auction, count(*) AS num, window_start AS starttime \
         FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) GROUP BY window_start, auction) ab \
         JOIN (SELECT max(c.num) AS maxn, c.starttime_c FROM (SELECT count(*) AS num, window_start AS starttime_c \
         FROM HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) GROUP BY auction, window_start) c \
         GROUP BY c.starttime_c) mb ON ab.starttime = mb.starttime_c AND ab.num >= mb.maxn",
    ),
    (
        "q6",
        "SELECT seller, avg(final) OVER (PARTITION BY seller ORDER BY date_time, id \
         ROWS BETWEEN 10 PRECEDING AND CURRENT ROW) AS avg_final FROM (SELECT a.id, a.seller, a.date_time, \
         max(b.price) AS final FROM auction a JOIN bid b ON a.id = b.auction \
         AND b.date_time BETWEEN a.date_time AND a.expires GROUP BY a.id, a.seller, a.date_time) q",
    ),
    (
        "q7",
        "SELECT b.auction, b.price, b.bidder, b.date_time FROM bid b JOIN (SELECT max(price) AS maxprice, \
         window_end AS date_time FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND) GROUP BY window_end) b1 \
         ON b.price = b1.maxprice WHERE b.date_time BETWEEN b1.date_time - INTERVAL '10' SECOND AND b1.date_time",
    ),
    (
        "q8",
        "SELECT p.id, p.name, p.starttime FROM (SELECT id, name, window_start AS starttime, window_end AS endtime \
         FROM TUMBLE(person, date_time, INTERVAL '10' SECOND) GROUP BY id, name, window_start, window_end) p \
         JOIN (SELECT seller, window_start AS starttime, window_end AS endtime \
         FROM TUMBLE(auction, date_time, INTERVAL '10' SECOND) GROUP BY seller, window_start, window_end) a \
         ON p.id = a.seller AND p.starttime = a.starttime AND p.endtime = a.endtime",
    ),
    (
        "q9",
        "SELECT id, item_name, description, initial_bid, reserve, date_time, expires, seller, category, \
         auction, bidder, price, bid_date_time FROM (SELECT a.*, b.auction, b.bidder, b.price, \
         b.date_time AS bid_date_time, row_number() OVER (PARTITION BY a.id \
         ORDER BY b.price DESC, b.date_time, b.bidder) AS rownum FROM auction a JOIN bid b \
         ON a.id = b.auction AND b.date_time BETWEEN a.date_time AND a.expires) q WHERE rownum <= 1",
    ),
    (
        "q10",
        "SELECT auction, bidder, price, date_time, to_char(date_time, 'YYYY-MM-DD') AS date, \
         to_char(date_time, 'HH:MI') AS time FROM bid",
    ),
    (
        "q11",
        "SELECT bidder, count(*) AS bid_count, SESSION_START(date_time, INTERVAL '10' SECOND) AS starttime \
         FROM bid GROUP BY bidder, SESSION(date_time, INTERVAL '10' SECOND)",
    ),
    (
        "q13",
        "SELECT b.auction, b.bidder, b.price, b.date_time, s.value FROM bid b \
         JOIN side_input FOR SYSTEM_TIME AS OF PROCTIME() s ON b.auction % 10000 = s.key",
    ),
    (
        "q14",
        "SELECT auction, bidder, 0.908 * price AS price, CASE \
         WHEN extract(hour FROM date_time) >= 8 AND extract(hour FROM date_time) <= 18 THEN 'dayTime' \
         WHEN extract(hour FROM date_time) <= 6 OR extract(hour FROM date_time) >= 20 THEN 'nightTime' \
         ELSE 'otherTime' END AS bid_time_type, date_time, extra, \
         count_char(extra, 'c') AS c_counts FROM bid \
         WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000",
    ),
    (
        "q15",
        "SELECT to_char(date_time, 'YYYY-MM-DD') AS day, count(*) AS total_bids, \
         count(*) FILTER (WHERE price < 10000) AS rank1_bids, \
         count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids, \
         count(*) FILTER (WHERE price >= 1000000) AS rank3_bids, \
         count(DISTINCT bidder) AS total_bidders, \
         count(DISTINCT bidder) FILTER (WHERE price < 10000) AS rank1_bidders, \
         count(DISTINCT bidder) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bidders, \
         count(DISTINCT bidder) FILTER (WHERE price >= 1000000) AS rank3_bidders, \
         count(DISTINCT auction) AS total_auctions, \
         count(DISTINCT auction) FILTER (WHERE price < 10000) AS rank1_auctions, \
         count(DISTINCT auction) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_auctions, \
         count(DISTINCT auction) FILTER (WHERE price >= 1000000) AS rank3_auctions \
         FROM bid GROUP BY to_char(date_time, 'YYYY-MM-DD')",
    ),
    (
        "q16",
        "SELECT channel, to_char(date_time, 'YYYY-MM-DD') AS day, max(to_char(date_time, 'HH24:MI')) AS minute, \
         count(*) AS total_bids, \
         count(*) FILTER (WHERE price < 10000) AS rank1_bids, \
         count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids, \
         count(*) FILTER (WHERE price >= 1000000) AS rank3_bids, \
         count(DISTINCT bidder) AS total_bidders, \
         count(DISTINCT bidder) FILTER (WHERE price < 10000) AS rank1_bidders, \
         count(DISTINCT bidder) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bidders, \
         count(DISTINCT bidder) FILTER (WHERE price >= 1000000) AS rank3_bidders, \
         count(DISTINCT auction) AS total_auctions, \
         count(DISTINCT auction) FILTER (WHERE price < 10000) AS rank1_auctions, \
         count(DISTINCT auction) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_auctions, \
         count(DISTINCT auction) FILTER (WHERE price >= 1000000) AS rank3_auctions \
         FROM bid GROUP BY channel, to_char(date_time, 'YYYY-MM-DD')",
    ),
    (
        "q17",
        "SELECT auction, to_char(date_time, 'YYYY-MM-DD') AS day, count(*) AS total_bids, \
         count(*) FILTER (WHERE price < 10000) AS rank1_bids, \
         count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids, \
         count(*) FILTER (WHERE price >= 1000000) AS rank3_bids, \
         min(price) AS min_price, max(price) AS max_price, avg(price) AS avg_price, sum(price) AS sum_price \
         FROM bid GROUP BY auction, to_char(date_time, 'YYYY-MM-DD')",
    ),
    (
        "q18",
        "SELECT auction, bidder, price, channel, url, date_time, extra FROM (SELECT *, row_number() OVER \
         (PARTITION BY bidder, auction ORDER BY date_time DESC, price DESC, url, extra) AS rank_number \
         FROM bid) q WHERE rank_number <= 1",
    ),
    (
        "q19",
        "SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY auction \
         ORDER BY price DESC, date_time, bidder, url, extra) AS rank_number FROM bid) q WHERE rank_number <= 10",
    ),
    (
        "q20",
        "SELECT b.auction, b.bidder, b.price, b.channel, b.url, b.date_time AS bid_time, b.extra AS bid_extra, \
         a.item_name, a.description, a.initial_bid, a.reserve, a.date_time AS auction_time, a.expires, \
         a.seller, a.category, a.extra AS auction_extra FROM bid b JOIN auction a ON b.auction = a.id \
         WHERE a.category = 10",
    ),
    (
        "q21",
        "SELECT auction, bidder, price, channel, CASE WHEN lower(channel) = 'apple' THEN '0' \
         WHEN lower(channel) = 'google' THEN '1' WHEN lower(channel) = 'facebook' THEN '2' \
         WHEN lower(channel) = 'baidu' THEN '3' \
         ELSE (regexp_match(url, '(&|^)channel_id=([^&]*)'))[2] END AS channel_id FROM bid \
         WHERE (regexp_match(url, '(&|^)channel_id=([^&]*)'))[2] IS NOT NULL \
         OR lower(channel) IN ('apple', 'google', 'facebook', 'baidu')",
    ),
    (
        "q22",
        "SELECT auction, bidder, price, channel, split_part(url, '/', 4) AS dir1, \
         split_part(url, '/', 5) AS dir2, split_part(url, '/', 6) AS dir3 FROM bid",
    ),
    (
        "q101",
        "SELECT a.id AS auction_id, a.item_name AS auction_item_name, b.max_price AS current_highest_bid \
         FROM auction a LEFT OUTER JOIN (SELECT b1.auction, max(b1.price) AS max_price FROM bid b1 \
         GROUP BY b1.auction) b ON a.id = b.auction",
    ),
    (
        "q102",
        "SELECT a.id AS auction_id, a.item_name AS auction_item_name, count(b.auction) AS bid_count \
         FROM auction a JOIN bid b ON a.id = b.auction GROUP BY a.id, a.item_name \
         HAVING count(b.auction) >= (SELECT count(*) / nullif(count(DISTINCT auction), 0) FROM bid)",
    ),
    (
        "q103",
        "SELECT a.id AS auction_id, a.item_name AS auction_item_name FROM auction a \
         WHERE a.id IN (SELECT b.auction FROM bid b GROUP BY b.auction HAVING count(*) >= 20)",
    ),
    (
        "q104",
        "SELECT a.id AS auction_id, a.item_name AS auction_item_name FROM auction a \
         WHERE a.id NOT IN (SELECT b.auction FROM bid b GROUP BY b.auction HAVING count(*) < 20)",
    ),
    (
        "q105",
        "SELECT a.id AS auction_id, a.item_name AS auction_item_name, count(b.auction) AS bid_count \
         FROM auction a JOIN bid b ON a.id = b.auction GROUP BY a.id, a.item_name \
         ORDER BY bid_count DESC, a.id LIMIT 1000",
    ),
    (
        "q106",
        "SELECT min(final) AS min_final FROM (SELECT a.id, max(b.price) AS final FROM auction a, bid b \
         WHERE b.auction = a.id AND b.date_time BETWEEN a.date_time AND a.expires GROUP BY a.id) q",
    ),
];

/// The sources of `events` Nexmark events (the generator's three streams, `splits` readers
/// each, at least `gap_ns` apart, in chunks of at most `chunk` rows) and q13's side input.
pub fn setup(events: u64, splits: u32, gap_ns: u64, chunk: u64) -> String {
    let with = |table: &str| {
        format!(
            "WITH (connector = 'nexmark', nexmark.table.type = '{table}', \
             nexmark.event.num = '{events}', nexmark.split.num = '{splits}', \
             nexmark.min.event.gap.in.ns = '{gap_ns}', nexmark.max.chunk.size = '{chunk}')"
        )
    };
    format!(
        "CREATE FUNCTION count_char(s VARCHAR, c VARCHAR) RETURNS BIGINT LANGUAGE SQL
           AS $$ SELECT length(s) - length(replace(s, c, '')) $$;
         CREATE TABLE side_input (key BIGINT PRIMARY KEY, value TEXT);
         INSERT INTO side_input SELECT v, 'value-' || v FROM generate_series(0, 9999) AS g(v);
         CREATE SOURCE person (id BIGINT, name VARCHAR, email_address VARCHAR, credit_card VARCHAR,
           city VARCHAR, state VARCHAR, date_time TIMESTAMP, extra VARCHAR,
           WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) {};
         CREATE SOURCE auction (id BIGINT, item_name VARCHAR, description VARCHAR, initial_bid BIGINT,
           reserve BIGINT, date_time TIMESTAMP, expires TIMESTAMP, seller BIGINT, category BIGINT,
           extra VARCHAR, WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) {};
         CREATE SOURCE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR,
           date_time TIMESTAMP, extra VARCHAR,
           WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) {};",
        with("person"),
        with("auction"),
        with("bid")
    )
}
