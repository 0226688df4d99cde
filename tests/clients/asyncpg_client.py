"""asyncpg against Sluice: parameters typed by their casts, prepared statements, executemany,
transactions, a cursor on a SELECT and one on SUBSCRIBE (Execute with a row limit: the portal
is suspended between fetches), and errors with their SQLSTATE.

Usage: python3 asyncpg_client.py PORT
"""

import asyncio
import datetime
import sys

import asyncpg

port = int(sys.argv[1])


async def main():
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="sluice", database="sluice")

    # asyncpg binds each parameter by the type Describe gives it: here, its cast's.
    assert await conn.fetchval("SELECT $1::int + 1", 41) == 42
    assert await conn.fetchval("SELECT $1::bigint * 2", 2**40) == 2**41
    assert await conn.fetchval("SELECT $1::float8 / 2", 3.0) == 1.5
    assert await conn.fetchval("SELECT NOT $1::bool", False) is True
    assert await conn.fetchval("SELECT $1::date", datetime.date(2026, 1, 2)) == datetime.date(2026, 1, 2)
    assert await conn.fetchval("SELECT $1::text || 'b'", "a") == "ab"

    # Arrays: asyncpg introspects each array type (its query binds `$1::oid[]`), then binds
    # and reads lists.
    assert await conn.fetchval("SELECT $1::int[]", [1, 2, 3]) == [1, 2, 3]
    assert await conn.fetchval("SELECT $1::text[]", ["x", None, "z"]) == ["x", None, "z"]
    assert await conn.fetchval("SELECT $1::float8[]", [1.5, None]) == [1.5, None]
    assert await conn.fetchval("SELECT 3 = ANY($1::bigint[])", [1, 3]) is True

    await conn.execute("CREATE TABLE a (id INT PRIMARY KEY, v TEXT, at TIMESTAMP)")
    at = datetime.datetime(2026, 11, 24, 10, 20, 30)
    await conn.executemany(
        "INSERT INTO a VALUES ($1, $2, $3)", [(i, f"v{i}", at) for i in range(10)]
    )
    statement = await conn.prepare("SELECT id, v, at FROM a WHERE id >= $1 ORDER BY id")
    rows = await statement.fetch(8)
    assert [tuple(r) for r in rows] == [(8, "v8", at), (9, "v9", at)], rows

    # A cursor on a SELECT, fetched a few rows at a time.
    async with conn.transaction():
        cursor = await conn.cursor("SELECT id FROM a ORDER BY id")
        assert [r["id"] for r in await cursor.fetch(4)] == [0, 1, 2, 3]
        assert [r["id"] for r in await cursor.fetch(4)] == [4, 5, 6, 7]
        assert [r["id"] for r in await cursor.fetch(4)] == [8, 9]

    # A cursor on SUBSCRIBE: the snapshot, then a change made after it, as they come.
    await conn.execute("CREATE MATERIALIZED VIEW big_ids AS SELECT id, v FROM a WHERE id >= 7")
    async with conn.transaction():
        cursor = await conn.cursor("SUBSCRIBE TO big_ids")
        snapshot = await asyncio.wait_for(cursor.fetch(3), 30)
        assert sorted((r["id"], r["sluice_diff"]) for r in snapshot) == [(7, 1), (8, 1), (9, 1)], snapshot
        other = await asyncpg.connect(host="127.0.0.1", port=port, user="sluice", database="sluice")
        await other.execute("INSERT INTO a VALUES (20, 'late', NULL)")
        await other.close()
        change = await asyncio.wait_for(cursor.fetch(1), 30)
        assert [(r["id"], r["v"], r["sluice_diff"]) for r in change] == [(20, "late", 1)], change

    # Errors carry their SQLSTATE, and the connection goes on.
    try:
        await conn.fetch("SELECT * FROM nowhere")
        raise AssertionError("no error")
    except asyncpg.PostgresError as e:
        assert e.sqlstate == "42P01", e
    try:
        await conn.execute("CREATE TABLE a (x INT)")
        raise AssertionError("no error")
    except asyncpg.exceptions.DuplicateTableError:
        pass
    assert await conn.fetchval("SELECT count(*) FROM a") == 11
    await conn.close()
    print(f"asyncpg {asyncpg.__version__} ok")


asyncio.run(main())
