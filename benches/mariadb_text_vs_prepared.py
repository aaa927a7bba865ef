"""MariaDB's own CPU per row for the sink's statement shape: multi-row
`INSERT ... ON DUPLICATE KEY UPDATE` of 2 000 rows x 24 columns (random keys), sent as text
with literals (`text`) or as one server-side prepared statement with bound values (`prepared`,
the binary protocol sink-mysql uses by default), or the same rows as `LOAD DATA LOCAL INFILE
... REPLACE` of one 2 000-row tab-separated file per transaction (`load`, the path of
bench-sink's ceiling). Prints wall time and mariadbd's CPU seconds (/proc) per mode; the
wall time of `prepared` is mostly this Python client preparing the
48 000-placeholder statement once (~80 s, the server idle), not the server's work. Issue #18
item 5 (README "What MariaDB spends its CPU on").

    python3 -m venv /tmp/pv && /tmp/pv/bin/pip install mysql-connector-python
    /tmp/pv/bin/python benches/mariadb_text_vs_prepared.py 200000 text prepared text prepared
    /tmp/pv/bin/python benches/mariadb_text_vs_prepared.py 200000 load prepared load prepared
    /tmp/pv/bin/python benches/mariadb_text_vs_prepared.py 400000 text:1 text:4 load:1 load:4

A mode followed by `:N` writes the rows over N concurrent connections (a process each).

Needs the local stack's MariaDB (deploy/local/stack.sh up); ETL_MYSQL_PASSWORD (default etl).
Creates and drops the table `prep_bench` in the `etl` database.
"""
import multiprocessing
import os
import random
import sys
import time

import mysql.connector

N = int(sys.argv[1])
BATCH = 2000
COLUMNS = (
    [("k", "VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL")]
    + [(f"s{i}", "VARCHAR(255) CHARACTER SET utf8mb4 NULL") for i in range(8)]
    + [(f"n{i}", "BIGINT NULL") for i in range(8)]
    + [(f"d{i}", "DOUBLE NULL") for i in range(7)]
)
NAMES = ",".join(c for c, _ in COLUMNS)
HEAD = f"INSERT INTO prep_bench ({NAMES}) VALUES "
TAIL = " ON DUPLICATE KEY UPDATE " + ",".join(f"{c}=VALUES({c})" for c, _ in COLUMNS[1:])


def mariadb_cpu_seconds():
    pid = os.popen("pgrep mariadbd").read().split()[0]
    stat = open(f"/proc/{pid}/stat").read().split()
    return (int(stat[13]) + int(stat[14])) / 100


def make_rows():
    random.seed(1)
    keys = list(range(N))
    random.shuffle(keys)
    words = ["GOLD", "SILVER", "RANKED_SOLO_5x5", "I", "II"]
    return [
        [f"key-{j:012d}"]
        + [random.choice(words + [f"summoner {j}"]) for _ in range(8)]
        + [random.randint(0, 10**9) for _ in range(8)]
        + [random.random() * 100 for _ in range(7)]
        for j in keys
    ]


def literal(v):
    if isinstance(v, str):
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return repr(v)


def connect():
    return mysql.connector.connect(
        host="127.0.0.1",
        user="etl",
        password=os.environ.get("ETL_MYSQL_PASSWORD", "etl"),
        database="etl",
        allow_local_infile=True,
    )


def write(args):
    """One connection writing its share of the rows, a 2 000-row transaction at a time."""
    mode, rows = args
    cn = connect()
    cur = cn.cursor(prepared=(mode == "prepared"))
    row_marks = "(" + ",".join(["%s"] * len(COLUMNS)) + ")"
    prepared = HEAD + ",".join([row_marks] * BATCH) + TAIL
    tsv = f"/tmp/prep_bench_{os.getpid()}.tsv"
    for i in range(0, len(rows), BATCH):
        chunk = rows[i : i + BATCH]
        if mode == "load":
            with open(tsv, "w") as f:
                f.writelines("\t".join(str(v) for v in r) + "\n" for r in chunk)
            cur.execute(f"LOAD DATA LOCAL INFILE '{tsv}' REPLACE INTO TABLE prep_bench ({NAMES})")
        # A share's last, shorter chunk (with `:N`) goes as text: the prepared statement
        # holds exactly BATCH rows, and preparing another shape would cost minutes here.
        elif mode == "prepared" and len(chunk) == BATCH:
            cur.execute(prepared, [v for r in chunk for v in r])
        else:
            text = ",".join("(" + ",".join(literal(v) for v in r) + ")" for r in chunk)
            cur.execute(HEAD + text + TAIL)
        cn.commit()
    if os.path.exists(tsv):
        os.remove(tsv)
    cn.close()


def run(spec, rows):
    """`spec` is a mode (text, prepared, load), optionally `:N` for N concurrent connections
    sharing the rows (default 1)."""
    mode, _, conns = spec.partition(":")
    conns = int(conns or 1)
    cn = connect()
    ddl = cn.cursor()
    ddl.execute("DROP TABLE IF EXISTS prep_bench")
    ddl.execute(
        "CREATE TABLE prep_bench ("
        + ",".join(f"{c} {t}" for c, t in COLUMNS)
        + ", PRIMARY KEY(k)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
    )
    cpu0, t0 = mariadb_cpu_seconds(), time.time()
    if conns == 1:
        write((mode, rows))
    else:
        with multiprocessing.Pool(conns) as pool:
            pool.map(write, [(mode, rows[i::conns]) for i in range(conns)])
    secs, cpu = time.time() - t0, mariadb_cpu_seconds() - cpu0
    load = open("/proc/loadavg").read().split()[0]
    print(
        f"{spec:11s} {N} rows {secs:.1f} s {N / secs:.0f} rows/s  "
        f"mariadbd CPU {cpu:.1f} s ({1e6 * cpu / N:.1f} µs/row)  load {load}"
    )
    ddl.execute("DROP TABLE prep_bench")
    cn.close()


if __name__ == "__main__":
    all_rows = make_rows()
    for m in sys.argv[2:]:
        run(m, all_rows)
