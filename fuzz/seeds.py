#!/usr/bin/env python3
"""Builds the fuzz targets' seed corpora under fuzz/corpus/<target>/ (not committed):

- sql_frontend: every statement of the .slt files;
- pgwire_frames: frames a driver sends after startup (simple and extended query, COPY);
- record_decoders: the JSON and CSV records of sql-tests/data, behind each decoder's pick byte;
- storage_readers: the segment files and checkpoint files of a real data directory, made by the
  server binary given as the first argument (skipped without one);
- params: text and binary values of the types a driver binds;
- copy_decoders: COPY data in text, CSV and binary format, behind the pick byte.

Usage: python3 fuzz/seeds.py [path/to/sluice]
"""

import hashlib
import os
import pathlib
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


def put(target, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


def slt_statements():
    for path in sorted((ROOT / "sql-tests").rglob("*.slt")):
        lines = path.read_text().splitlines()
        i = 0
        while i < len(lines):
            head = lines[i].split()
            i += 1
            if not head or head[0] not in ("statement", "query"):
                continue
            sql = []
            while i < len(lines) and lines[i].strip() and lines[i] != "----":
                sql.append(lines[i])
                i += 1
            if sql:
                yield "\n".join(sql)


def frame(tag, body):
    return tag + struct.pack("!i", len(body) + 4) + body


def cstr(s):
    return s.encode() + b"\0"


def pgwire_seeds():
    q = frame(b"Q", cstr("SELECT 1"))
    parse = frame(b"P", cstr("s1") + cstr("SELECT $1::int4") + struct.pack("!hi", 1, 23))
    bind = frame(b"B", cstr("") + cstr("s1") + struct.pack("!hh", 1, 1) + struct.pack("!hi", 1, 4)
                 + struct.pack("!i", 7) + struct.pack("!hh", 1, 1))
    describe = frame(b"D", b"P" + cstr(""))
    execute = frame(b"E", cstr("") + struct.pack("!i", 0))
    sync = frame(b"S", b"")
    copy = frame(b"d", b"1,2\n3,4\n") + frame(b"c", b"") + frame(b"f", cstr("stop"))
    yield q
    yield parse + bind + describe + execute + sync
    yield copy
    yield frame(b"C", b"S" + cstr("s1")) + frame(b"H", b"") + frame(b"X", b"")


def record_seeds():
    data = ROOT / "sql-tests" / "data"
    jsonl = (data / "clicks.jsonl").read_bytes().splitlines()
    yield b"\x00" + b"\xff".join(jsonl[:20])
    yield b"\x00" + b'{"auction": 1, "price": null, "channel": "x", "ts": 1700000000000, "ok": true, "score": 1.5}'
    for name in ("bids_a.csv", "bids_b.csv"):
        lines = (data / name).read_bytes().splitlines()
        yield b"\x01" + b"\xff".join(lines[:20])
    yield b"\x01" + b"1,2,web,2024-01-01T00:00:00,true,0.5\xff3,,app,1700000000000,false,-1e9"
    yield b"\x02auction|price|channel|ts|ok|score\n1|2|x|2024-01-01 00:00:00|t|1\n"
    # Confluent frame: magic 0, schema id 1, then an Avro body (longs are zigzag varints).
    body = bytes([2, 0, 2]) + bytes([3]) + b"web" + bytes([0x80, 0x01]) + bytes([1]) + struct.pack("<d", 2.5)
    yield b"\x03" + b"\x00\x00\x00\x00\x01" + body


def param_seeds():
    text = ["1", "-32768", "9223372036854775807", "1.5", "NaN", "-Infinity", "123.456", "t", "false",
            "hello", "\\x00ff", "2024-02-29", "23:59:59.999999", "2024-01-01 12:00:00",
            "2024-01-01 12:00:00+02", "1 day 02:03:04", "P1Y2M", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            '{"a": [1, 2]}', "{1,2,NULL}", '{"x","y"}', "{}"]
    for t in range(25):
        for v in text:
            yield bytes([t << 1]) + v.encode()
    binary = [struct.pack("!?", True), struct.pack("!h", -5), struct.pack("!i", 7), struct.pack("!q", -1),
              struct.pack("!f", 1.5), struct.pack("!d", -2.25), struct.pack("!hhhhh", 1, 0, 0, 0, 12),
              struct.pack("!q", 86400000000), struct.pack("!i", 8000), struct.pack("!qii", 1, 2, 3),
              bytes(16), struct.pack("!iiiii", 1, 0, 23, 2, 1) + struct.pack("!ii", 4, 5) + struct.pack("!ii", 4, 6)]
    for t in range(25):
        for v in binary:
            yield bytes([(t << 1) | 1]) + v


def copy_seeds():
    text = b"1\thello\tt\t12.50\t2026-11-24 10:20:30.5\t0.1\t2026-11-24\t\\x6162\n2\t\\N\tf\t-0.01\t\\N\t1e20\t1999-12-31\t\\N\n\\.\n"
    csv = b'1,"hello, ""x""",t,12.50,2026-11-24 10:20:30,0.1,2026-11-24,\\x6162\r\n2,"",,,,,,\n3,,f,1,,,,\n'
    csv_header = b"a;b;c;d;e;f;g;h\n1;'it\\'s';t;1.5;;;;\n2;;;;;;;\n"
    header = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
    row = struct.pack("!h", 8)
    for value in [struct.pack("!i", 7), b"hello", b"\x01", struct.pack("!hhhhh", 1, 0, 0, 2, 12),
                  struct.pack("!q", 86400000000), struct.pack("!d", -2.25), struct.pack("!i", 8000), b"\x00\xff"]:
        row += struct.pack("!i", len(value)) + value
    nulls = struct.pack("!h", 8) + struct.pack("!i", 4) + struct.pack("!i", 1) + struct.pack("!i", -1) * 7
    binary = header + row + nulls + row + struct.pack("!h", -1)
    for pick in range(0, 32, 4):
        yield bytes([pick | 0]) + text
        yield bytes([pick | 1]) + csv
        yield bytes([pick | 2]) + csv_header
        yield bytes([pick | 3]) + binary


def storage_seeds(binary):
    with tempfile.TemporaryDirectory() as tmp:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        data = pathlib.Path(tmp) / "data"
        server = subprocess.Popen([binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data),
                                   "--checkpoint-interval", "100ms"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            sql = ("CREATE TABLE t (k INT, v BIGINT, s TEXT, ts TIMESTAMP); "
                   "INSERT INTO t VALUES (1, 2, 'a', '2024-01-01 00:00:00'), (2, NULL, 'b', NULL); "
                   "CREATE MATERIALIZED VIEW v AS SELECT k, sum(v) AS total, count(*) AS n FROM t GROUP BY k; "
                   "DELETE FROM t WHERE k = 2; FLUSH;")
            for _ in range(100):
                done = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "sluice", "-d", "sluice",
                                       "-c", sql], capture_output=True)
                if done.returncode == 0:
                    break
                time.sleep(0.2)
            time.sleep(1)
        finally:
            server.terminate()
            server.wait()
        for path in sorted(data.rglob("*")):
            if path.is_file() and (path.suffix in (".arrow", ".json") or path.parent.parent.name == "tables"):
                if path.name not in ("LOCK", "catalog.json") and path.stat().st_size < 1 << 20:
                    put("storage_readers", path.read_bytes())


def main():
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    for sql in slt_statements():
        put("sql_frontend", sql)
    for seed in pgwire_seeds():
        put("pgwire_frames", seed)
    for seed in record_seeds():
        put("record_decoders", seed)
    for seed in param_seeds():
        put("params", seed)
    for seed in copy_seeds():
        put("copy_decoders", seed)
    if len(sys.argv) > 1:
        storage_seeds(sys.argv[1])
    for target in sorted(os.listdir(CORPUS)):
        print(f"{target}: {len(os.listdir(CORPUS / target))} seeds")


if __name__ == "__main__":
    main()
