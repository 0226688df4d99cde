#!/usr/bin/env python3
"""Nexmark side by side: Sluice, Flink 2.3 and DuckDB on the same rows, one table.

1. The rows: `NEXMARK_CSV=DIR cargo bench --bench nexmark -- EVENTS` writes the `nexmark`
   generator's person, auction and bid tables (and q13's side input) as CSV, the very rows the
   Sluice benchmark's sources make (skipped when DIR already holds them).
2. Sluice: `cargo bench --bench nexmark -- EVENTS q…` (release): per query, the time from
   `CREATE MATERIALIZED VIEW` until the view has caught up with its sources, already loaded from
   the generator; each view is checked against its batch query inside Sluice and prints a
   checksum (row count and the sum of its integer columns).
3. Flink 2.3 (PyFlink, local MiniCluster, streaming mode, blackhole sinks): the same queries in
   Flink's spelling over the CSV files (watermark `date_time - 4 s`), one job per query in one
   JVM after a warm-up job; the time from submitting the job to its end (planning, job start and
   CSV parsing included; JVM start not). A query Flink refuses is shown with its reason, a job
   still running after `--flink-timeout` seconds is cancelled and shown as such.
4. DuckDB: the tables loaded from the CSV files into memory first (the load timed apart), then
   each query in batch (windows written out by hand), timed, with the same checksum as Sluice's.

Events/s are over all the stream's events (the Nexmark convention); per core divides by the
machine's cores for both engines, so the ratio is Flink's time over Sluice's.

    python3 benches/peers/nexmark.py --events 10000000 --dir /tmp/nexmark_csv [--queries q0,q5]
        [--skip sluice,flink,duckdb] [--parallelism 2]

Needs `pip install apache-flink==2.3.0 duckdb` and Java 17. Every part prints its raw lines
(`nexmark query=…`, `FLINK {…}`, `DUCKDB {…}`) before the table.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

COLUMNS = {
    "person": [("id", "BIGINT"), ("name", "VARCHAR"), ("email_address", "VARCHAR"),
               ("credit_card", "VARCHAR"), ("city", "VARCHAR"), ("state", "VARCHAR"),
               ("date_time", "TIMESTAMP"), ("extra", "VARCHAR")],
    "auction": [("id", "BIGINT"), ("item_name", "VARCHAR"), ("description", "VARCHAR"),
                ("initial_bid", "BIGINT"), ("reserve", "BIGINT"), ("date_time", "TIMESTAMP"),
                ("expires", "TIMESTAMP"), ("seller", "BIGINT"), ("category", "BIGINT"),
                ("extra", "VARCHAR")],
    "bid": [("auction", "BIGINT"), ("bidder", "BIGINT"), ("price", "BIGINT"),
            ("channel", "VARCHAR"), ("url", "VARCHAR"), ("date_time", "TIMESTAMP"),
            ("extra", "VARCHAR")],
    "side_input": [("key", "BIGINT"), ("value", "VARCHAR")],
}

QUERY_ORDER = ["q0", "q1", "q2", "q3", "q4", "q5", "q6", "q7", "q8", "q9", "q10", "q11",
               "q13", "q14", "q15", "q16", "q17", "q18", "q19", "q20", "q21", "q22",
               "q101", "q102", "q103", "q104", "q105", "q106"]

RANKS = ("count(*) FILTER (WHERE price < 10000) AS rank1_bids, "
         "count(*) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bids, "
         "count(*) FILTER (WHERE price >= 1000000) AS rank3_bids")
DISTINCTS = ("count(DISTINCT bidder) AS total_bidders, "
             "count(DISTINCT bidder) FILTER (WHERE price < 10000) AS rank1_bidders, "
             "count(DISTINCT bidder) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_bidders, "
             "count(DISTINCT bidder) FILTER (WHERE price >= 1000000) AS rank3_bidders, "
             "count(DISTINCT auction) AS total_auctions, "
             "count(DISTINCT auction) FILTER (WHERE price < 10000) AS rank1_auctions, "
             "count(DISTINCT auction) FILTER (WHERE price >= 10000 AND price < 1000000) AS rank2_auctions, "
             "count(DISTINCT auction) FILTER (WHERE price >= 1000000) AS rank3_auctions")
Q4_INNER = ("SELECT max(b.price) AS final_price, a.category FROM auction a, bid b "
            "WHERE a.id = b.auction AND b.date_time BETWEEN a.date_time AND a.expires "
            "GROUP BY a.id, a.category")
Q9_INNER = ("SELECT a.id, a.item_name, a.description, a.initial_bid, a.reserve, a.date_time, "
            "a.expires, a.seller, a.category, b.auction, b.bidder, b.price, "
            "b.date_time AS bid_date_time, row_number() OVER (PARTITION BY a.id "
            "ORDER BY b.price DESC, b.date_time, b.bidder) AS rownum FROM auction a JOIN bid b "
            "ON a.id = b.auction AND b.date_time BETWEEN a.date_time AND a.expires")
Q9_COLUMNS = ("id, item_name, description, initial_bid, reserve, date_time, expires, seller, "
              "category, auction, bidder, price, bid_date_time")
Q20 = ("SELECT b.auction, b.bidder, b.price, b.channel, b.url, b.date_time AS bid_time, "
       "b.extra AS bid_extra, a.item_name, a.description, a.initial_bid, a.reserve, "
       "a.date_time AS auction_time, a.expires, a.seller, a.category, a.extra AS auction_extra "
       "FROM bid b JOIN auction a ON b.auction = a.id WHERE a.category = 10")
Q101 = ("SELECT a.id AS auction_id, a.item_name AS auction_item_name, "
        "b.max_price AS current_highest_bid FROM auction a LEFT OUTER JOIN "
        "(SELECT b1.auction, max(b1.price) AS max_price FROM bid b1 GROUP BY b1.auction) b "
        "ON a.id = b.auction")
Q103 = ("SELECT a.id AS auction_id, a.item_name AS auction_item_name FROM auction a "
        "WHERE a.id IN (SELECT b.auction FROM bid b GROUP BY b.auction HAVING count(*) >= 20)")
Q104 = ("SELECT a.id AS auction_id, a.item_name AS auction_item_name FROM auction a "
        "WHERE a.id NOT IN (SELECT b.auction FROM bid b GROUP BY b.auction HAVING count(*) < 20)")
Q106 = ("SELECT min(final_price) AS min_final FROM (SELECT a.id, max(b.price) AS final_price "
        "FROM auction a, bid b WHERE b.auction = a.id AND b.date_time BETWEEN a.date_time "
        "AND a.expires GROUP BY a.id) q")
Q21_CASE = ("CASE WHEN lower(channel) = 'apple' THEN '0' WHEN lower(channel) = 'google' THEN '1' "
            "WHEN lower(channel) = 'facebook' THEN '2' WHEN lower(channel) = 'baidu' THEN '3' ")
CHANNEL_ID = "'(&|^)channel_id=([^&]*)'"
Q14_CASE = ("CASE WHEN extract(hour FROM date_time) >= 8 AND extract(hour FROM date_time) <= 18 "
            "THEN 'dayTime' WHEN extract(hour FROM date_time) <= 6 "
            "OR extract(hour FROM date_time) >= 20 THEN 'nightTime' ELSE 'otherTime' END")


def duckdb_queries():
    """The queries of tests/nexmark/queries.rs as DuckDB batch queries: windows written out,
    to_char as strftime, integer division as `//`, regexp_match as regexp_extract."""
    hop = ("(SELECT b.*, make_timestamp((epoch_us(b.date_time) // 2000000 - k) * 2000000) "
           "AS window_start FROM bid b, range(5) r(k))")
    tumble = lambda t: (f"(SELECT x.*, make_timestamp(epoch_us(x.date_time) // 10000000 * 10000000) "
                        f"AS window_start, make_timestamp((epoch_us(x.date_time) // 10000000 + 1) "
                        f"* 10000000) AS window_end FROM {t} x)")
    day = "strftime(date_time, '%Y-%m-%d')"
    return {
        "q0": "SELECT auction, bidder, price, date_time FROM bid",
        "q1": "SELECT auction, bidder, 0.908 * price AS price, date_time FROM bid",
        "q2": "SELECT auction, price FROM bid WHERE auction % 123 = 0",
        "q3": "SELECT p.name, p.city, p.state, a.id FROM auction a JOIN person p ON a.seller = p.id "
              "WHERE a.category = 10 AND (p.state = 'OR' OR p.state = 'ID' OR p.state = 'CA')",
        "q4": f"SELECT q.category, avg(q.final_price) AS avg_final FROM ({Q4_INNER}) q GROUP BY q.category",
        "q5": f"SELECT ab.auction, ab.num, ab.starttime FROM (SELECT auction, count(*) AS num, "
              f"window_start AS starttime FROM {hop} GROUP BY window_start, auction) ab JOIN "
              f"(SELECT max(c.num) AS maxn, c.starttime_c FROM (SELECT count(*) AS num, "
              f"window_start AS starttime_c FROM {hop} GROUP BY auction, window_start) c "
              f"GROUP BY c.starttime_c) mb ON ab.starttime = mb.starttime_c AND ab.num >= mb.maxn",
        "q6": "SELECT seller, avg(final_price) OVER (PARTITION BY seller ORDER BY date_time, id "
              "ROWS BETWEEN 10 PRECEDING AND CURRENT ROW) AS avg_final FROM (SELECT a.id, a.seller, "
              "a.date_time, max(b.price) AS final_price FROM auction a JOIN bid b ON a.id = b.auction "
              "AND b.date_time BETWEEN a.date_time AND a.expires GROUP BY a.id, a.seller, a.date_time) q",
        "q7": f"SELECT b.auction, b.price, b.bidder, b.date_time FROM bid b JOIN (SELECT max(price) "
              f"AS maxprice, window_end AS date_time FROM {tumble('bid')} GROUP BY window_end) b1 "
              f"ON b.price = b1.maxprice WHERE b.date_time BETWEEN b1.date_time - INTERVAL 10 SECOND "
              f"AND b1.date_time",
        "q8": f"SELECT p.id, p.name, p.starttime FROM (SELECT id, name, window_start AS starttime, "
              f"window_end AS endtime FROM {tumble('person')} GROUP BY id, name, window_start, "
              f"window_end) p JOIN (SELECT seller, window_start AS starttime, window_end AS endtime "
              f"FROM {tumble('auction')} GROUP BY seller, window_start, window_end) a "
              f"ON p.id = a.seller AND p.starttime = a.starttime AND p.endtime = a.endtime",
        "q9": f"SELECT {Q9_COLUMNS} FROM ({Q9_INNER}) q WHERE rownum <= 1",
        "q10": f"SELECT auction, bidder, price, date_time, {day} AS date, "
               f"strftime(date_time, '%I:%M') AS time FROM bid",
        # A session: a bidder's bids, in time order, each at most 10 s after the one before.
        "q11": "SELECT bidder, count(*) AS bid_count, min(date_time) AS starttime FROM "
               "(SELECT bidder, date_time, sum(fresh) OVER (PARTITION BY bidder ORDER BY date_time "
               "ROWS UNBOUNDED PRECEDING) AS session FROM (SELECT bidder, date_time, CASE WHEN "
               "date_time - lag(date_time) OVER (PARTITION BY bidder ORDER BY date_time) "
               "<= INTERVAL 10 SECOND THEN 0 ELSE 1 END AS fresh FROM bid) s) g GROUP BY bidder, session",
        "q13": "SELECT b.auction, b.bidder, b.price, b.date_time, s.value FROM bid b "
               "JOIN side_input s ON b.auction % 10000 = s.key",
        "q14": f"SELECT auction, bidder, 0.908 * price AS price, {Q14_CASE} AS bid_time_type, "
               f"date_time, extra, length(extra) - length(replace(extra, 'c', '')) AS c_counts "
               f"FROM bid WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000",
        "q15": f"SELECT {day} AS day, count(*) AS total_bids, {RANKS}, {DISTINCTS} FROM bid GROUP BY {day}",
        "q16": f"SELECT channel, {day} AS day, max(strftime(date_time, '%H:%M')) AS minute, "
               f"count(*) AS total_bids, {RANKS}, {DISTINCTS} FROM bid GROUP BY channel, {day}",
        "q17": f"SELECT auction, {day} AS day, count(*) AS total_bids, {RANKS}, min(price) AS min_price, "
               f"max(price) AS max_price, avg(price) AS avg_price, sum(price) AS sum_price FROM bid "
               f"GROUP BY auction, {day}",
        "q18": "SELECT auction, bidder, price, channel, url, date_time, extra FROM (SELECT *, "
               "row_number() OVER (PARTITION BY bidder, auction ORDER BY date_time DESC, price DESC, "
               "url, extra) AS rank_number FROM bid) q WHERE rank_number <= 1",
        "q19": "SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY auction ORDER BY price DESC, "
               "date_time, bidder, url, extra) AS rank_number FROM bid) q WHERE rank_number <= 10",
        "q20": Q20,
        "q21": f"SELECT auction, bidder, price, channel, {Q21_CASE} ELSE regexp_extract(url, "
               f"{CHANNEL_ID}, 2) END AS channel_id FROM bid WHERE regexp_matches(url, {CHANNEL_ID}) "
               f"OR lower(channel) IN ('apple', 'google', 'facebook', 'baidu')",
        "q22": "SELECT auction, bidder, price, channel, split_part(url, '/', 4) AS dir1, "
               "split_part(url, '/', 5) AS dir2, split_part(url, '/', 6) AS dir3 FROM bid",
        "q101": Q101,
        "q102": "SELECT a.id AS auction_id, a.item_name AS auction_item_name, count(b.auction) AS "
                "bid_count FROM auction a JOIN bid b ON a.id = b.auction GROUP BY a.id, a.item_name "
                "HAVING count(b.auction) >= (SELECT count(*) // nullif(count(DISTINCT auction), 0) FROM bid)",
        "q103": Q103,
        "q104": Q104,
        "q105": "SELECT a.id AS auction_id, a.item_name AS auction_item_name, count(b.auction) AS "
                "bid_count FROM auction a JOIN bid b ON a.id = b.auction GROUP BY a.id, a.item_name "
                "ORDER BY bid_count DESC, a.id LIMIT 1000",
        "q106": Q106,
    }


def flink_queries():
    """The same queries in Flink SQL: window table-valued functions, DATE_FORMAT, SPLIT_INDEX,
    REGEXP_EXTRACT; q13's side input joined as a table (a filesystem table has no lookup);
    q14's UDF is the same length/replace expression."""
    hop = ("TABLE(HOP(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, "
           "INTERVAL '10' SECOND))")
    tumble = lambda t: f"TABLE(TUMBLE(TABLE {t}, DESCRIPTOR(date_time), INTERVAL '10' SECOND))"
    day = "DATE_FORMAT(date_time, 'yyyy-MM-dd')"
    q = duckdb_queries()
    return {
        "q0": q["q0"],
        "q1": q["q1"],
        "q2": "SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0",
        "q3": q["q3"],
        "q4": q["q4"],
        "q5": f"SELECT ab.auction, ab.num, ab.starttime FROM (SELECT auction, count(*) AS num, "
              f"window_start AS starttime, window_end AS endtime FROM {hop} "
              f"GROUP BY auction, window_start, window_end) ab JOIN (SELECT max(c.num) AS maxn, "
              f"c.starttime, c.endtime FROM (SELECT count(*) AS num, window_start AS starttime, "
              f"window_end AS endtime FROM {hop} GROUP BY auction, window_start, window_end) c "
              f"GROUP BY c.starttime, c.endtime) mb ON ab.starttime = mb.starttime "
              f"AND ab.endtime = mb.endtime AND ab.num >= mb.maxn",
        "q6": q["q6"],
        "q7": f"SELECT b.auction, b.price, b.bidder, b.date_time FROM bid b JOIN (SELECT max(price) "
              f"AS maxprice, window_end AS date_time FROM {tumble('bid')} "
              f"GROUP BY window_start, window_end) b1 ON b.price = b1.maxprice "
              f"WHERE b.date_time BETWEEN b1.date_time - INTERVAL '10' SECOND AND b1.date_time",
        "q8": f"SELECT p.id, p.name, p.starttime FROM (SELECT id, name, window_start AS starttime, "
              f"window_end AS endtime FROM {tumble('person')} GROUP BY id, name, window_start, "
              f"window_end) p JOIN (SELECT seller, window_start AS starttime, window_end AS endtime "
              f"FROM {tumble('auction')} GROUP BY seller, window_start, window_end) a "
              f"ON p.id = a.seller AND p.starttime = a.starttime AND p.endtime = a.endtime",
        "q9": q["q9"],
        "q10": f"SELECT auction, bidder, price, date_time, {day} AS `date`, "
               f"DATE_FORMAT(date_time, 'hh:mm') AS `time` FROM bid",
        "q11": "SELECT bidder, count(*) AS bid_count, SESSION_START(date_time, INTERVAL '10' SECOND) "
               "AS starttime FROM bid GROUP BY bidder, SESSION(date_time, INTERVAL '10' SECOND)",
        "q13": "SELECT b.auction, b.bidder, b.price, b.date_time, s.`value` FROM bid b "
               "JOIN side_input s ON MOD(b.auction, 10000) = s.key",
        "q14": f"SELECT auction, bidder, 0.908 * price AS price, {Q14_CASE} AS bid_time_type, "
               f"date_time, extra, CHAR_LENGTH(extra) - CHAR_LENGTH(REPLACE(extra, 'c', '')) "
               f"AS c_counts FROM bid WHERE 0.908 * price > 1000000 AND 0.908 * price < 50000000",
        "q15": f"SELECT {day} AS `day`, count(*) AS total_bids, {RANKS}, {DISTINCTS} FROM bid "
               f"GROUP BY {day}",
        "q16": f"SELECT channel, {day} AS `day`, max(DATE_FORMAT(date_time, 'HH:mm')) AS `minute`, "
               f"count(*) AS total_bids, {RANKS}, {DISTINCTS} FROM bid GROUP BY channel, {day}",
        "q17": f"SELECT auction, {day} AS `day`, count(*) AS total_bids, {RANKS}, "
               f"min(price) AS min_price, max(price) AS max_price, avg(price) AS avg_price, "
               f"sum(price) AS sum_price FROM bid GROUP BY auction, {day}",
        "q18": q["q18"],
        "q19": "SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY auction ORDER BY price DESC, "
               "date_time, bidder, url, extra) AS rank_number FROM bid) WHERE rank_number <= 10",
        "q20": Q20,
        "q21": f"SELECT auction, bidder, price, channel, {Q21_CASE} ELSE REGEXP_EXTRACT(url, "
               f"{CHANNEL_ID}, 2) END AS channel_id FROM bid WHERE REGEXP_EXTRACT(url, "
               f"{CHANNEL_ID}, 2) IS NOT NULL OR lower(channel) IN ('apple', 'google', 'facebook', 'baidu')",
        "q22": "SELECT auction, bidder, price, channel, SPLIT_INDEX(url, '/', 3) AS dir1, "
               "SPLIT_INDEX(url, '/', 4) AS dir2, SPLIT_INDEX(url, '/', 5) AS dir3 FROM bid",
        "q101": Q101,
        "q102": "SELECT a.id AS auction_id, a.item_name AS auction_item_name, count(b.auction) AS "
                "bid_count FROM auction a JOIN bid b ON a.id = b.auction GROUP BY a.id, a.item_name "
                "HAVING count(b.auction) >= (SELECT count(*) / count(DISTINCT auction) FROM bid)",
        "q103": Q103,
        "q104": Q104,
        "q105": "SELECT auction_id, auction_item_name, bid_count FROM (SELECT *, row_number() OVER "
                "(ORDER BY bid_count DESC, auction_id) AS rn FROM (SELECT a.id AS auction_id, "
                "a.item_name AS auction_item_name, count(b.auction) AS bid_count FROM auction a "
                "JOIN bid b ON a.id = b.auction GROUP BY a.id, a.item_name)) WHERE rn <= 1000",
        "q106": Q106,
    }


def run_flink(args, queries):
    """One JVM: a warm-up job, then a job per query. Prints `FLINK {...}` lines."""
    from pyflink.table import EnvironmentSettings, TableEnvironment
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    t_env.get_config().set("parallelism.default", str(args.parallelism))
    for table, columns in COLUMNS.items():
        spelled = ", ".join(
            f"`{c}` {'TIMESTAMP(3)' if t == 'TIMESTAMP' else 'STRING' if t == 'VARCHAR' else t}"
            for c, t in columns)
        watermark = (", WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND"
                     if table != "side_input" else "")
        path = os.path.abspath(os.path.join(args.dir, table))
        t_env.execute_sql(f"CREATE TABLE {table} ({spelled}{watermark}) WITH ("
                          f"'connector' = 'filesystem', 'path' = 'file://{path}', 'format' = 'csv')")
    # Warm-up: class loading and the first job's start are paid here, not by q0.
    t_env.execute_sql("CREATE TABLE warm_up WITH ('connector' = 'blackhole') AS "
                      "SELECT * FROM side_input").wait()
    sqls = flink_queries()
    for name in queries:
        started = time.time()
        result = dict(query=name, events=args.events, parallelism=args.parallelism)
        try:
            job = t_env.execute_sql(f"CREATE TABLE sink_{name} WITH ('connector' = 'blackhole') "
                                    f"AS {sqls[name]}")
            try:
                job.wait(args.flink_timeout * 1000)
                result["seconds"] = round(time.time() - started, 2)
            except Exception:  # still running at the timeout: cancelled, shown as such
                if time.time() - started < args.flink_timeout:
                    raise
                job.get_job_client().cancel().result()
                result["timeout"] = args.flink_timeout
        except Exception as e:  # Flink refuses the query: keep its reason, go on.
            text = str(e)
            reason = re.search(r"(?:ValidationException|TableException|UnsupportedOperationException"
                               r"|SqlParserException)[:\s]+([^\n]+)", text)
            result["error"] = (reason.group(1) if reason else text.splitlines()[0])[:300]
        print("FLINK " + json.dumps(result), flush=True)


def run_duckdb(args, queries):
    """Loads the CSV files into memory, then runs each query in batch. Prints `DUCKDB {...}`."""
    import duckdb
    con = duckdb.connect()
    con.execute(f"SET threads = {args.parallelism}")
    started = time.time()
    for table, columns in COLUMNS.items():
        spelled = ", ".join(f"'{c}': '{t}'" for c, t in columns)
        path = os.path.join(args.dir, table, "*.csv")
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM read_csv('{path}', header = false, "
                    f"columns = {{{spelled}}}, timestampformat = '%Y-%m-%d %H:%M:%S.%f')")
    print("DUCKDB " + json.dumps(dict(load_seconds=round(time.time() - started, 2))), flush=True)
    sqls = duckdb_queries()
    for name in queries:
        started = time.time()
        con.execute(f"CREATE OR REPLACE TABLE result AS {sqls[name]}")
        seconds = time.time() - started
        integers = [c for c, t, *_ in con.execute("DESCRIBE result").fetchall()
                    if t in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT")]
        sums = "".join(f", coalesce(sum(\"{c}\"), 0)::HUGEINT" for c in integers)
        row = con.execute(f"SELECT count(*){sums} FROM result").fetchone()
        print("DUCKDB " + json.dumps(dict(query=name, seconds=round(seconds, 3),
                                          checksum=f"{row[0]}:{sum(int(v) for v in row[1:])}")),
              flush=True)


def run_sluice(args, queries):
    """The Sluice benchmark in release, one process per query (each loads the sources afresh);
    returns its `nexmark query=` lines as dicts."""
    command = ([args.sluice_binary] if args.sluice_binary
               else ["cargo", "bench", "--bench", "nexmark", "--"])
    results = {}
    for name in queries:
        run = subprocess.run([*command, str(args.events), name], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for line in run.stdout.splitlines():
            print(line, flush=True)
            if line.startswith("nexmark query="):
                fields = dict(f.split("=", 1) for f in line.split()[1:])
                results[fields["query"]] = fields
        if run.returncode != 0:
            print(f"SLUICE {name} exited with {run.returncode}: "
                  f"{run.stderr.strip().splitlines()[:3]}", flush=True)
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--dir", required=True, help="where the CSV files are (written if missing)")
    ap.add_argument("--queries", default=",".join(QUERY_ORDER))
    ap.add_argument("--parallelism", type=int, default=2)
    ap.add_argument("--flink-timeout", type=int, default=300,
                    help="seconds after which a Flink job is cancelled")
    ap.add_argument("--sluice-binary",
                    help="a built bench binary (target/release/deps/nexmark-…) instead of cargo bench")
    ap.add_argument("--skip", default="", help="parts to leave out: sluice,flink,duckdb")
    ap.add_argument("--part", help=argparse.SUPPRESS)  # internal: run one part in this process
    args = ap.parse_args()
    queries = [q.strip() for q in args.queries.split(",") if q.strip()]
    if args.part == "flink":
        return run_flink(args, queries)
    if args.part == "duckdb":
        return run_duckdb(args, queries)

    if not os.path.exists(os.path.join(args.dir, "bid", "part-0.csv")):
        subprocess.run(["cargo", "bench", "--bench", "nexmark", "--", str(args.events)],
                       cwd=ROOT, check=True, env=dict(os.environ, NEXMARK_CSV=args.dir))
    skip = set(args.skip.split(","))
    sluice = run_sluice(args, queries) if "sluice" not in skip else {}
    peers = {}
    for part in ("flink", "duckdb"):
        if part in skip:
            continue
        # Each peer in its own process, so that neither's memory or threads linger.
        out = subprocess.run([sys.executable, __file__, "--part", part, "--events", str(args.events),
                              "--dir", args.dir, "--queries", ",".join(queries),
                              "--parallelism", str(args.parallelism),
                              "--flink-timeout", str(args.flink_timeout)],
                             stdout=subprocess.PIPE, text=True).stdout
        for line in out.splitlines():
            print(line, flush=True)
            if line.startswith(part.upper() + " "):
                fields = json.loads(line.split(" ", 1)[1])
                if "query" in fields:
                    peers[(part, fields["query"])] = fields
                else:
                    peers[(part, "load")] = fields
    cores = os.cpu_count() or 1
    per_core = lambda seconds: args.events / seconds / cores / 1e6
    print(f"\nNexmark, {args.events:,} events, {cores} cores, parallelism {args.parallelism}; "
          f"DuckDB's load of the CSV: {peers.get(('duckdb', 'load'), {}).get('load_seconds', '–')} s\n")
    print("| query | Sluice s | Sluice M ev/s/core | Flink 2.3 s | Flink M ev/s/core | "
          "Sluice ÷ Flink per core | DuckDB batch s | checksum = DuckDB's |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in queries:
        s = sluice.get(name)
        f = peers.get(("flink", name), {})
        d = peers.get(("duckdb", name), {})
        s_seconds = float(s["seconds"]) if s else None
        cells = [name,
                 f"{s_seconds:.2f}" if s else "–",
                 f"{per_core(s_seconds):.2f}" if s else "–"]
        if "seconds" in f:
            cells += [f"{f['seconds']:.1f}", f"{per_core(f['seconds']):.2f}",
                      f"{f['seconds'] / s_seconds:.1f}×" if s else "–"]
        elif "timeout" in f:
            cells += [f"> {f['timeout']} (cancelled)", f"< {per_core(f['timeout']):.2f}",
                      f"> {f['timeout'] / s_seconds:.0f}×" if s else "–"]
        else:
            cells += [f"refused: {f['error']}" if "error" in f else "–", "–", "–"]
        cells.append(f"{d['seconds']:.2f}" if d else "–")
        if s and d:
            cells.append("yes" if s["checksum"] == d["checksum"]
                         else f"NO: {s['checksum']} vs {d['checksum']}")
        else:
            cells.append("–")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
