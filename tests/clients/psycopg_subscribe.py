"""psycopg 3 reading subscriptions through cursors, as a driver that cannot read an endless
result set does: DECLARE in a transaction, FETCH with a timeout in a loop, CLOSE.

While random inserts, updates and deletes go to table w, two cursors follow the view
per_k (k, count, sum of v grouped by k) and the table itself, both with progress rows. At
every epoch both reported, the view's summed diffs must equal the grouping of the table's.

Usage: python3 psycopg_subscribe.py PORT
"""

import collections
import random
import sys
import time

import psycopg

port = int(sys.argv[1])
dsn = dict(host="127.0.0.1", port=port, user="sluice", dbname="sluice")


class Feed:
    """A feed's diffs summed up, with the state as of each epoch whose progress row came."""

    def __init__(self):
        self.rows = collections.Counter()
        self.at = {}
        self.last_epoch = 0

    def apply(self, row):
        epoch, progressed, diff, values = row[0], row[1], row[2], tuple(row[3:])
        assert epoch >= self.last_epoch, (epoch, self.last_epoch)
        self.last_epoch = epoch
        if progressed:
            assert diff is None, row
            self.at[epoch] = +self.rows
            return
        self.rows[values] += diff
        assert self.rows[values] >= 0, f"{values} retracted more often than inserted"


def per_k(table):
    groups = collections.defaultdict(lambda: [0, 0])
    for (_id, k, v), n in table.items():
        groups[k][0] += n
        groups[k][1] += n * v
    return collections.Counter({(k, n, s): 1 for k, (n, s) in groups.items()})


rng = random.Random(7)
with psycopg.connect(**dsn) as conn, psycopg.connect(**dsn, autocommit=True) as writer:
    # Not autocommit: psycopg opens the transaction the cursors need.
    cur = conn.cursor()
    cur.execute("DECLARE v CURSOR FOR SUBSCRIBE TO per_k WITH (PROGRESS = true)")
    cur.execute("DECLARE t CURSOR FOR SUBSCRIBE TO w WITH (PROGRESS = true)")
    view, table = Feed(), Feed()
    started, quiet = time.time(), 0
    while time.time() - started < 1.5 or quiet < 3:
        if time.time() - started < 1.5:
            for _ in range(rng.randrange(1, 10)):
                i = rng.randrange(60)
                if rng.randrange(4) == 0:
                    writer.execute(f"DELETE FROM w WHERE id = {i}")
                else:
                    writer.execute(
                        f"INSERT INTO w VALUES ({i}, {rng.randrange(6)}, {rng.randrange(-50, 500)})"
                    )
        else:
            quiet += 1
        for name, feed in (("v", view), ("t", table)):
            cur.execute(f"FETCH ALL {name} WITH (timeout = '20ms')")
            if name == "v":
                names = [d.name for d in cur.description]
                assert names == ["sluice_epoch", "sluice_progressed", "sluice_diff", "k", "n", "s"], names
            for row in cur.fetchall():
                feed.apply(row)
    compared = 0
    for epoch, rows in view.at.items():
        if epoch in table.at:
            assert rows == per_k(table.at[epoch]), (epoch, rows, per_k(table.at[epoch]))
            compared += 1
    assert compared >= 20, f"only {compared} epochs in common"
    cur.execute("CLOSE v")
    conn.commit()
print(f"ok: {compared} epochs compared")
