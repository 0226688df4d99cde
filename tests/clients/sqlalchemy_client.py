"""SQLAlchemy 2 (over psycopg 3) and pandas against Sluice, with default settings: connect,
DDL, Core inserts and selects with parameters, reflection, savepoints, a materialized view read
by pandas, and errors with their SQLSTATE. Then psycopg's own transaction helpers: nested
transactions (savepoints), rollback after prepared statements (DEALLOCATE ALL), TypeInfo.

Usage: python3 sqlalchemy_client.py PORT
"""

import sys

import pandas as pd
import psycopg
import sqlalchemy
from psycopg.types import TypeInfo
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    Table,
    Text,
    create_engine,
    exc,
    inspect,
    insert,
    select,
    text,
)

port = int(sys.argv[1])
engine = create_engine(f"postgresql+psycopg://sluice@127.0.0.1:{port}/sluice")

# Core: DDL, an executemany insert, a select with a bound parameter.
metadata = MetaData()
orders = Table(
    "orders",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("customer", Text, nullable=False),
    Column("amount", Integer),
)
metadata.create_all(engine)
with engine.begin() as conn:
    conn.execute(
        insert(orders),
        [{"id": i, "customer": f"c{i % 3}", "amount": i * 10} for i in range(30)],
    )
with engine.connect() as conn:
    rows = conn.execute(
        select(orders.c.id, orders.c.amount).where(orders.c.amount >= 250).order_by(orders.c.id)
    ).all()
    assert rows == [(25, 250), (26, 260), (27, 270), (28, 280), (29, 290)], rows

# INSERT … RETURNING, with bound parameters (the extended protocol describes its rows).
with engine.begin() as conn:
    returned = conn.execute(
        insert(orders).values(id=50, customer="ret", amount=7).returning(orders.c.id, orders.c.amount)
    ).all()
    assert returned == [(50, 7)], returned
    conn.execute(text("DELETE FROM orders WHERE id = 50"))

# Reflection, as inspect() and autoload do it.
inspector = inspect(engine)
assert "orders" in inspector.get_table_names(), inspector.get_table_names()
columns = {c["name"]: c for c in inspector.get_columns("orders")}
assert list(columns) == ["id", "customer", "amount"], columns
assert isinstance(columns["id"]["type"], sqlalchemy.INTEGER), columns["id"]
assert columns["customer"]["nullable"] is False and columns["amount"]["nullable"] is True
pk = inspector.get_pk_constraint("orders")
assert pk["constrained_columns"] == ["id"] and pk["name"] == "orders_pkey", pk
reflected = Table("orders", MetaData(), autoload_with=engine)
assert [c.name for c in reflected.primary_key.columns] == ["id"]

# A savepoint that nothing wrote after is rolled back; one that a write followed cannot be
# (each statement commits as it runs) and says so.
with engine.connect() as conn:
    with conn.begin():
        nested = conn.begin_nested()
        assert conn.execute(text("SELECT count(*) FROM orders")).scalar() == 30
        nested.rollback()
        nested = conn.begin_nested()
        conn.execute(insert(orders).values(id=100, customer="late", amount=1))
        try:
            nested.rollback()
            raise AssertionError("a rollback past a write was accepted")
        except exc.NotSupportedError as e:
            assert e.orig.sqlstate == "0A000", e

# A materialized view, read by pandas, equals the same query run as a batch.
with engine.begin() as conn:
    conn.execute(
        text(
            "CREATE MATERIALIZED VIEW per_customer AS "
            "SELECT customer, count(*) AS n, sum(amount) AS total FROM orders GROUP BY customer"
        )
    )
    conn.execute(text("FLUSH"))
view = pd.read_sql("SELECT * FROM per_customer ORDER BY customer", engine)
batch = pd.read_sql(
    "SELECT customer, count(*) AS n, sum(amount) AS total FROM orders "
    "GROUP BY customer ORDER BY customer",
    engine,
)
assert list(view.columns) == ["customer", "n", "total"], view.columns
assert view.to_dict("records") == batch.to_dict("records"), (view, batch)
assert view["n"].sum() == 31, view

# Errors carry their SQLSTATE.
try:
    with engine.begin() as conn:
        conn.execute(text("SELECT * FROM no_such_table"))
    raise AssertionError("no error")
except exc.ProgrammingError as e:
    assert e.orig.sqlstate == "42P01", e

# psycopg: nested transactions, rollback after prepared statements, TypeInfo.
with psycopg.connect(host="127.0.0.1", port=port, user="sluice", dbname="sluice") as conn:
    for i in range(8):
        conn.execute("SELECT id FROM orders WHERE id = %s", (i,), prepare=True)
    conn.rollback()  # psycopg answers with DEALLOCATE ALL when it prepared statements
    with conn.transaction():
        with conn.transaction():
            assert conn.execute("SELECT count(*) FROM orders").fetchone() == (31,)
    # A list binds as an array: of ints typed int8[], of strings untyped (= ANY makes it text[]).
    assert conn.execute("SELECT count(*) FROM orders WHERE customer = ANY(%s)", (["c0", "c1"],)).fetchone() == (20,)
    assert conn.execute("SELECT count(*) FROM orders WHERE id = ANY(%s)", ([1, 2, 3],)).fetchone() == (3,)
    info = TypeInfo.fetch(conn, "int4")
    assert info is not None and info.oid == 23 and info.array_oid == 1007, info
    assert TypeInfo.fetch(conn, "no_such_type") is None
    try:
        conn.execute("DEALLOCATE nope")
        raise AssertionError("no error")
    except psycopg.errors.InvalidSqlStatementName:
        conn.rollback()
    try:
        conn.execute("RELEASE SAVEPOINT nowhere")
        raise AssertionError("no error")
    except psycopg.Error as e:
        assert e.sqlstate in ("3B001", "25P01"), e
        conn.rollback()

print(f"sqlalchemy {sqlalchemy.__version__} pandas {pd.__version__} psycopg {psycopg.__version__} ok")
