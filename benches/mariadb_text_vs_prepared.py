"""MariaDB's own CPU per row for the sink's statement shape: multi-row
`INSERT ... ON DUPLICATE KEY UPDATE` of 2 000 rows x 24 columns (random keys), sent as text
with literals (what sink-mysql does) or as one server-side prepared statement with bound
values (binary protocol). Prints wall time and mariadbd's CPU seconds (/proc) per mode; the
wall time of `prepared` is this Python client's binding cost, not the server's. Issue #18
item 5 (README "What MariaDB spends its CPU on").

    python3 -m venv /tmp/pv && /tmp/pv/bin/pip install mysql-connector-python
    /tmp/pv/bin/python benches/mariadb_text_vs_prepared.py 200000 text prepared text prepared

Needs the local stack's MariaDB (deploy/local/stack.sh up); ETL_MYSQL_PASSWORD (default etl).
Creates and drops the table `prep_bench` in the `etl` database.
"""
import mysql.connector, random, time, os, sys
N=int(sys.argv[1]); B=2000
def mdb_cpu():
    pid=os.popen("pgrep mariadbd").read().split()[0]
    f=open(f"/proc/{pid}/stat").read().split()
    return (int(f[13])+int(f[14]))/100
cols=[("k","VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin NOT NULL")]
for i in range(8): cols.append((f"s{i}","VARCHAR(255) CHARACTER SET utf8mb4 NULL"))
for i in range(8): cols.append((f"n{i}","BIGINT NULL"))
for i in range(7): cols.append((f"d{i}","DOUBLE NULL"))
random.seed(1)
rows=[]
keys=list(range(N)); random.shuffle(keys)
for j in keys:
    r=[f"key-{j:012d}"]+[random.choice(["GOLD","SILVER","RANKED_SOLO_5x5","I","II","summoner %d"%j]) for _ in range(8)]+[random.randint(0,10**9) for _ in range(8)]+[random.random()*100 for _ in range(7)]
    rows.append(r)
names=",".join(c for c,_ in cols)
upd=",".join(f"{c}=VALUES({c})" for c,_ in cols[1:])
def esc(v):
    if isinstance(v,str): return "'"+v.replace("\\","\\\\").replace("'","\\'")+"'"
    return repr(v)
def run(mode):
    cn=mysql.connector.connect(host="127.0.0.1",user="etl",password=os.environ.get("ETL_MYSQL_PASSWORD", "etl"),database="etl")
    cur=cn.cursor(prepared=(mode=="prepared"))
    cur.execute("DROP TABLE IF EXISTS prep_bench") if mode!="prepared" else cn.cursor().execute("DROP TABLE IF EXISTS prep_bench")
    cn.cursor().execute(f"CREATE TABLE prep_bench ({','.join(c+' '+t for c,t in cols)}, PRIMARY KEY(k)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")
    c0=mdb_cpu(); t0=time.time(); ph="("+",".join(["%s"]*len(cols))+")"
    stmt=f"INSERT INTO prep_bench ({names}) VALUES "+",".join([ph]*B)+f" ON DUPLICATE KEY UPDATE {upd}"
    for i in range(0,N,B):
        chunk=rows[i:i+B]
        if mode=="prepared":
            cur.execute(stmt,[v for r in chunk for v in r])
        else:
            sql=f"INSERT INTO prep_bench ({names}) VALUES "+",".join("("+",".join(esc(v) for v in r)+")" for r in chunk)+f" ON DUPLICATE KEY UPDATE {upd}"
            cur.execute(sql)
        cn.commit()
    t=time.time()-t0; c=mdb_cpu()-c0
    print(f"{mode:9s} {N} rows {t:.1f} s {N/t:.0f} rows/s  mariadbd CPU {c:.1f} s ({1e6*c/N:.1f} µs/row)  load {open('/proc/loadavg').read().split()[0]}")
    cn.cursor().execute("DROP TABLE prep_bench")
for m in sys.argv[2:]: run(m)
