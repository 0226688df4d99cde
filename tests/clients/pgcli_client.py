"""pgcli against Sluice: the start-up introspection pgcli runs when it connects (every
completion refresher: schemata, tables, views, their columns, foreign keys, types, databases,
casing, functions), then the completions it offers for tables, views and columns, and the functions it learnt.
Exits non-zero on any failure. Usage: pgcli_client.py PORT"""
import sys

import psycopg
from pgcli.completion_refresher import CompletionRefresher
from pgcli.pgcompleter import PGCompleter
from pgcli.pgexecute import PGExecute
from pgspecial.main import PGSpecial
from prompt_toolkit.document import Document

port = int(sys.argv[1])
with psycopg.connect(f"host=127.0.0.1 port={port} user=sluice dbname=sluice", autocommit=True) as conn:
    conn.execute("CREATE TABLE pgcli_items (id INT PRIMARY KEY, label TEXT, price FLOAT)")
    conn.execute(
        "CREATE MATERIALIZED VIEW pgcli_totals AS "
        "SELECT label, sum(price) AS total FROM pgcli_items GROUP BY label"
    )

executor = PGExecute(
    database="sluice", user="sluice", password=None, host="127.0.0.1", port=port, dsn=None
)
completer = PGCompleter(smart_completion=True, pgspecial=PGSpecial(), settings={})
for name, refresh in CompletionRefresher.refreshers.items():
    refresh(completer, executor)  # any exception fails the script
    print(f"refresher {name}: ok")


def offered(text, position=None):
    document = Document(text, len(text) if position is None else position)
    return {c.text for c in completer.get_completions(document, None)}


tables = offered("SELECT * FROM pgcli_")
assert {"pgcli_items", "pgcli_totals"} <= tables, tables
columns = offered("SELECT  FROM pgcli_items", len("SELECT "))
assert {"id", "label", "price"} <= columns, columns
view_columns = offered("SELECT * FROM pgcli_totals WHERE ")
assert {"label", "total"} <= view_columns, view_columns
# Functions are known by schema, as PostgreSQL's pg_proc lists them (keywords quoted).
functions = {f.strip('"') for f in completer.dbmetadata["functions"]["pg_catalog"]}
assert {"count", "string_agg", "upper", "row_number"} <= functions, sorted(functions)
print("pgcli ok")
