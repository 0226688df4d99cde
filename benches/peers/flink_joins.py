#!/usr/bin/env python3
"""The join queries of `cargo bench --bench joins` in Flink SQL (PyFlink, local MiniCluster,
streaming mode, blackhole sinks), over the same rows: CSV files written by
`JOINS_CSV=DIR cargo bench --bench joins -- EVENTS` (DIR/person, DIR/auction, DIR/bid).

Each query prints one line `RESULT {...}` with the wall time from submitting the INSERT to the
end of the job (planning and job start included, JVM start not) and events/s over all of the
stream's events, as the Sluice bench counts them.

    python3 benches/peers/flink_joins.py --dir /tmp/joins_csv --events 10000000 --parallelism 2

Needs PyFlink 2.3 (see ../shared/bench/peers/README.md for the venv).
"""
import argparse
import json
import os
import time

TABLES = {
    "person": "id BIGINT, name STRING, email_address STRING, credit_card STRING, city STRING, "
              "state STRING, date_time TIMESTAMP(3), extra STRING",
    "auction": "id BIGINT, item_name STRING, description STRING, initial_bid BIGINT, "
               "reserve BIGINT, date_time TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, "
               "category BIGINT, extra STRING",
    "bid": "auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, "
           "date_time TIMESTAMP(3), extra STRING",
}

# (sink columns, query): the same queries as benches/joins.rs, in Flink's spelling.
QUERIES = {
    "q3": ("name STRING, city STRING, state STRING, id BIGINT",
           "SELECT p.name, p.city, p.state, a.id FROM auction a JOIN person p ON a.seller = p.id "
           "WHERE a.category = 10 AND (p.state = 'OR' OR p.state = 'ID' OR p.state = 'CA')"),
    "q8": ("id BIGINT, name STRING, starttime TIMESTAMP(3)",
           "SELECT p.id, p.name, p.starttime FROM "
           "(SELECT id, name, window_start AS starttime, window_end AS endtime "
           " FROM TABLE(TUMBLE(TABLE person, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) "
           " GROUP BY id, name, window_start, window_end) p "
           "JOIN (SELECT seller, window_start AS starttime, window_end AS endtime "
           " FROM TABLE(TUMBLE(TABLE auction, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) "
           " GROUP BY seller, window_start, window_end) a "
           "ON p.id = a.seller AND p.starttime = a.starttime AND p.endtime = a.endtime"),
    "interval": ("auction BIGINT, price BIGINT, date_time TIMESTAMP(3), seller BIGINT",
                 "SELECT b.auction, b.price, b.date_time, a.seller FROM bid b JOIN auction a "
                 "ON b.auction = a.id AND b.date_time BETWEEN a.date_time "
                 "AND a.date_time + INTERVAL '10' SECOND"),
    "q20": ("auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, "
            "bid_time TIMESTAMP(3), item_name STRING, description STRING, initial_bid BIGINT, "
            "reserve BIGINT, auction_time TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, "
            "category BIGINT",
            "SELECT b.auction, b.bidder, b.price, b.channel, b.url, b.date_time AS bid_time, "
            "a.item_name, a.description, a.initial_bid, a.reserve, a.date_time AS auction_time, "
            "a.expires, a.seller, a.category FROM bid b JOIN auction a ON b.auction = a.id "
            "WHERE a.category = 10"),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, help="directory with person/, auction/, bid/")
    ap.add_argument("--events", type=int, required=True, help="events the stream had")
    ap.add_argument("--query", default="q3,q8,interval,q20")
    ap.add_argument("--parallelism", type=int, default=2)
    args = ap.parse_args()

    from pyflink.table import EnvironmentSettings, TableEnvironment
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    t_env.get_config().set("parallelism.default", str(args.parallelism))
    for table, columns in TABLES.items():
        path = os.path.abspath(os.path.join(args.dir, table))
        t_env.execute_sql(f"""
            CREATE TABLE {table} ({columns},
              WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)
            WITH ('connector' = 'filesystem', 'path' = 'file://{path}', 'format' = 'csv')""")
    for q in [x.strip() for x in args.query.split(",") if x.strip()]:
        columns, sql = QUERIES[q]
        t_env.execute_sql(f"CREATE TABLE sink_{q} ({columns}) WITH ('connector' = 'blackhole')")
        started = time.time()
        t_env.execute_sql(f"INSERT INTO sink_{q} {sql}").wait()
        wall = time.time() - started
        print("RESULT " + json.dumps(dict(
            query=q, events=args.events, parallelism=args.parallelism, wall_s=round(wall, 2),
            ev_per_s=round(args.events / wall),
            ev_per_s_per_core=round(args.events / wall / (os.cpu_count() or 1)),
            load1=round(os.getloadavg()[0], 2))), flush=True)


if __name__ == "__main__":
    main()
