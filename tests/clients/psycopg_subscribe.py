"""psycopg 3 reading a SUBSCRIBE through a cursor, as a driver that cannot read an endless
result set does: DECLARE in a transaction, FETCH with a timeout, CLOSE.

The view `s` (k, total) holds (1, 2) when this starts.
Usage: python3 psycopg_subscribe.py PORT
"""

import sys

import psycopg

port = int(sys.argv[1])
dsn = dict(host="127.0.0.1", port=port, user="sluice", dbname="sluice")
with psycopg.connect(**dsn) as conn, psycopg.connect(**dsn, autocommit=True) as writer:
    # Not autocommit: psycopg opens the transaction the cursor needs.
    with conn.cursor() as cur:
        cur.execute("DECLARE c CURSOR FOR SUBSCRIBE TO s WITH (PROGRESS = true)")
        cur.execute("FETCH ALL c WITH (timeout = '1s')")
        names = [d.name for d in cur.description]
        assert names == ["sluice_epoch", "sluice_progressed", "sluice_diff", "k", "total"], names
        rows = cur.fetchall()
        data = [r for r in rows if not r[1]]
        assert [r[2:] for r in data] == [(1, 1, 2)], rows
        snapshot_epoch = data[0][0]

        writer.execute("INSERT INTO t VALUES (1, 5)")
        changes = []
        for _ in range(50):
            cur.execute("FETCH 100 c WITH (timeout = '200ms')")
            changes += [r for r in cur.fetchall() if not r[1]]
            if len(changes) >= 2:
                break
        assert sorted(r[2:] for r in changes) == [(-1, 1, 2), (1, 1, 7)], changes
        assert all(r[0] > snapshot_epoch for r in changes), changes
        cur.execute("CLOSE c")
    conn.commit()
print("ok")
