"""psycopg 3 against Sluice: server-side parameters, binary and text results, COPY, errors.

Usage: python3 psycopg_client.py PORT
"""

import datetime
import decimal
import sys

import psycopg

port = int(sys.argv[1])
with psycopg.connect(host="127.0.0.1", port=port, user="sluice", dbname="sluice", autocommit=True) as conn:
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE p (id BIGINT PRIMARY KEY, name TEXT, price NUMERIC(10,2), at TIMESTAMP, ok BOOLEAN)")
        at = datetime.datetime(2026, 11, 24, 10, 20, 30, 500000)
        cur.executemany(
            "INSERT INTO p VALUES (%s, %s, %s, %s, %s)",
            [(i, f"item {i}", decimal.Decimal(f"{i}.25"), at, i % 2 == 0) for i in range(10)],
        )
        cur.execute("SELECT id, name, price, at, ok FROM p WHERE id >= %s ORDER BY id", (7,))
        rows = cur.fetchall()
        assert rows == [
            (7, "item 7", decimal.Decimal("7.25"), at, False),
            (8, "item 8", decimal.Decimal("8.25"), at, True),
            (9, "item 9", decimal.Decimal("9.25"), at, False),
        ], rows

    # binary results
    with conn.cursor(binary=True) as cur:
        cur.execute("SELECT id, name, price, at, ok FROM p WHERE id = %s", (3,))
        row = cur.fetchone()
        assert row == (3, "item 3", decimal.Decimal("3.25"), at, False), row

    with conn.cursor() as cur:
        with cur.copy("COPY p (id, name) FROM STDIN") as copy:
            for i in range(100, 110):
                copy.write_row((i, f"copied {i}"))
        cur.execute("SELECT count(*) FROM p")
        assert cur.fetchone() == (20,)

        try:
            cur.execute("SELECT * FROM does_not_exist")
            raise AssertionError("expected an error")
        except psycopg.errors.UndefinedTable:
            pass
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)

    # jsonb: parameters in text and binary, results as Python objects in both formats, COPY
    with conn.cursor() as cur:
        from psycopg.types.json import Jsonb, Json

        cur.execute("CREATE TABLE docs (id INT PRIMARY KEY, doc JSONB)")
        doc = {"b": [1, 2.5, None, True], "a": {"n\u00e9": "x\ty"}}
        cur.execute("INSERT INTO docs VALUES (%s, %s), (%s, %s)", (1, Jsonb(doc), 2, Json([1, "2"])))
        with cur.copy("COPY docs FROM STDIN") as copy:
            copy.write_row((3, Jsonb({"copied": True})))
        for binary in (False, True):
            with conn.cursor(binary=binary) as c2:
                c2.execute("SELECT id, doc, doc -> 'a', doc ->> 'b' FROM docs ORDER BY id")
                rows = c2.fetchall()
                assert rows == [
                    (1, doc, doc["a"], "[1, 2.5, null, true]"),
                    (2, [1, "2"], None, None),
                    (3, {"copied": True}, None, None),
                ], (binary, rows)
        cur.execute("SELECT doc::text FROM docs WHERE id = 1")
        assert cur.fetchone() == ('{"a": {"né": "x\\ty"}, "b": [1, 2.5, null, true]}',)
        cur.execute("SELECT id FROM docs WHERE doc @> %s", (Jsonb({"b": [True]}),))
        assert cur.fetchall() == [(1,)]
        try:
            with cur.copy("COPY docs FROM STDIN") as copy:
                copy.write(b"4\t{not json\n")
            raise AssertionError("expected an error")
        except psycopg.errors.InvalidTextRepresentation:
            pass
        cur.execute("SELECT count(*) FROM docs")
        assert cur.fetchone() == (3,)

    # uuid: parameters (psycopg sends uuid.UUID typed, in text or binary), results as uuid.UUID
    # in both formats, COPY in text and binary, uuid[] and a comparison with a literal.
    import uuid

    ids = [uuid.UUID(int=i * 0x0123456789ABCDEF0123456789ABCDEF % (1 << 128)) for i in range(1, 5)]
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE things (id UUID PRIMARY KEY, n INT, tags UUID[])")
        cur.execute("INSERT INTO things VALUES (%s, %s, %s)", (ids[0], 1, [ids[1], None]))
        with conn.cursor(binary=True) as c2:
            c2.execute("INSERT INTO things VALUES (%b, %b, NULL)", (ids[1], 2))
        with cur.copy("COPY things (id, n) FROM STDIN") as copy:
            copy.write_row((ids[2], 3))
        with cur.copy("COPY things (id, n) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["uuid", "int4"])
            copy.write_row((ids[3], 4))
        for binary in (False, True):
            with conn.cursor(binary=binary) as c2:
                c2.execute("SELECT id, n, tags FROM things WHERE id <> %s ORDER BY n", (ids[3],))
                rows = c2.fetchall()
                assert rows == [(ids[0], 1, [ids[1], None]), (ids[1], 2, None), (ids[2], 3, None)], (binary, rows)
        cur.execute(f"SELECT n, id::text FROM things WHERE id = '{str(ids[3]).upper()}'")
        assert cur.fetchall() == [(4, str(ids[3]))]
        # COPY leaving columns out: they get their defaults (per row), in text and binary.
        cur.execute("CREATE TABLE stamped (id UUID DEFAULT gen_random_uuid(), n INT, tag TEXT DEFAULT 'copied')")
        with cur.copy("COPY stamped (n) FROM STDIN") as copy:
            for i in range(3):
                copy.write_row((i,))
        with cur.copy("COPY stamped (n) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int4"])
            copy.write_row((3,))
        cur.execute("SELECT count(DISTINCT id), count(*) FILTER (WHERE tag = 'copied') FROM stamped")
        assert cur.fetchone() == (4, 4)
        cur.execute(f"SELECT n, id::text FROM things WHERE id = '{str(ids[3]).upper()}'")
        assert cur.fetchall() == [(4, str(ids[3]))]
        try:
            cur.execute("INSERT INTO things VALUES ('not a uuid', 5, NULL)")
            raise AssertionError("expected an error")
        except psycopg.errors.InvalidTextRepresentation:
            pass

print("psycopg ok")
