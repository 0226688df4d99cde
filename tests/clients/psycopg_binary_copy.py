"""psycopg 3 writes rows by binary COPY (`COPY … FROM STDIN (FORMAT BINARY)`, every value in
its type's binary form) into Sluice and into the machine's PostgreSQL; both tables, read back
as text, must be equal byte for byte. Then damaged binary data: 22P04. Usage: SCRIPT PORT"""
import datetime
import decimal
import sys

import psycopg

DDL = (
    "CREATE TABLE binary_rows (b BOOLEAN, i2 SMALLINT, i4 INT, i8 BIGINT, f4 REAL,"
    " f8 DOUBLE PRECISION, n NUMERIC(10,2), s TEXT, d DATE, ts TIMESTAMP, tstz TIMESTAMPTZ,"
    " by BYTEA)"
)
TYPES = ["bool", "int2", "int4", "int8", "float4", "float8", "numeric", "text", "date",
         "timestamp", "timestamptz", "bytea"]
UTC = datetime.timezone.utc
ROWS = [
    (True, 1, 2, 3, 1.5, 0.1, decimal.Decimal("12.50"), "hello, \"world\"\t\n",
     datetime.date(2026, 11, 24), datetime.datetime(2026, 11, 24, 10, 20, 30, 500000),
     datetime.datetime(2026, 11, 24, 10, 20, 30, tzinfo=UTC), b"ab\x00\xff"),
    (False, -32768, -2147483648, -9223372036854775808, -1.25, 1e20, decimal.Decimal("-0.01"),
     "", datetime.date(1999, 12, 31), datetime.datetime(2000, 1, 1),
     datetime.datetime(1970, 1, 1, tzinfo=UTC), b""),
    (None,) * 12,
] + [
    (i % 2 == 0, i % 100, i, i * 1000003, i / 4, i / 3, decimal.Decimal(i) / 8, f"row {i}",
     datetime.date(2020, 1, 1) + datetime.timedelta(days=i),
     datetime.datetime(2020, 1, 1) + datetime.timedelta(seconds=i * 7919),
     datetime.datetime(2020, 1, 1, tzinfo=UTC) + datetime.timedelta(microseconds=i * 104729),
     bytes([i % 256]) * (i % 7))
    for i in range(5000)
]


def load_and_read(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS binary_rows")
        conn.execute(DDL)
        with conn.cursor() as cur:
            with cur.copy("COPY binary_rows FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(TYPES)
                for row in ROWS:
                    copy.write_row(row)
            assert cur.rowcount in (len(ROWS), -1), cur.rowcount
            out = []
            with cur.copy("COPY (SELECT * FROM binary_rows ORDER BY i4, i2) TO STDOUT") as copy:
                for data in copy:
                    out.append(bytes(data))
        return b"".join(out)


port = int(sys.argv[1])
sluice = load_and_read(f"host=127.0.0.1 port={port} user=sluice dbname=sluice")
assert sluice.count(b"\n") == len(ROWS), sluice[:500]
try:
    postgres = load_and_read("host=127.0.0.1 port=5432 user=postgres dbname=postgres")
except psycopg.OperationalError as e:
    print(f"SKIPPED the comparison with PostgreSQL: {e}")
    postgres = None
if postgres is not None:
    assert sluice == postgres, (sluice[:2000], postgres[:2000])
    print(f"binary COPY of {len(ROWS)} rows equals PostgreSQL's")

with psycopg.connect(f"host=127.0.0.1 port={port} user=sluice dbname=sluice",
                     autocommit=True) as conn:
    for damaged in [b"PGCOPY\n\xff\r\n\x01", b"PGCOPY\n\xff\r\n\x00" + bytes(8) + b"\x00\x02"]:
        try:
            with conn.cursor().copy("COPY binary_rows FROM STDIN (FORMAT BINARY)") as copy:
                copy.write(damaged)
            raise AssertionError("damaged binary COPY data was accepted")
        except psycopg.Error as e:
            assert e.sqlstate == "22P04", (e.sqlstate, str(e))
    count = conn.execute("SELECT count(*) FROM binary_rows").fetchone()[0]
    assert count == len(ROWS), count
print("binary copy ok")
