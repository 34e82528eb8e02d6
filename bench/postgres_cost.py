#!/usr/bin/env python3
"""CPU per run of the `postgres` check in the product binary, beside the
real pg_isready and psql run as children, against one server in one run
(BENCHMARKS.md, "PostgreSQL checks").

    bench/postgres_cost.py BINARY PORT [SECONDS] [--callgrind]

The server on 127.0.0.1:PORT has the roles of tests/it/db_postgres.rs
(`trusty` under trust, `scram` / `scram-secret`, `md5user` / `md5-secret`).

For each form, `healthproxy run` runs 10 such checks at a 100 ms period for
SECONDS (default 10): its CPU (utime + stime from /proc/PID/stat) divided
by the runs its /metrics counted over the same window. Then the tool runs
200 times as a child (fork+exec, what an exec probe costs the node besides
the runtime's own exec machinery): the children's CPU from
getrusage(RUSAGE_CHILDREN), and this script's own share of spawning them.
With --callgrind, one check of each form runs under valgrind's callgrind
for SECONDS after its first run, and the instructions since then are
divided by the runs counted.
"""

import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

FORMS = [
    ("pg_isready", '{{ port = {port}, user = "scram", dbname = "postgres", sslmode = "disable" }}',
     ["pg_isready", "-h", "127.0.0.1", "-p", "{port}", "-U", "scram", "-d", "postgres"], None),
    ("psql -c, trust", '{{ port = {port}, user = "trusty", dbname = "postgres", sslmode = "disable", query = "SELECT 1" }}',
     ["psql", "-X", "-w", "-q", "-h", "127.0.0.1", "-p", "{port}", "-U", "trusty", "-d", "postgres", "-c", "SELECT 1"], None),
    ("psql -c, SCRAM-SHA-256", '{{ port = {port}, user = "scram", dbname = "postgres", sslmode = "disable", query = "SELECT 1", password_env = "PGPASSWORD" }}',
     ["psql", "-X", "-w", "-q", "-h", "127.0.0.1", "-p", "{port}", "-U", "scram", "-d", "postgres", "-c", "SELECT 1"], "scram-secret"),
    ("psql -c, MD5", '{{ port = {port}, user = "md5user", dbname = "postgres", sslmode = "disable", query = "SELECT 1", password_env = "PGPASSWORD" }}',
     ["psql", "-X", "-w", "-q", "-h", "127.0.0.1", "-p", "{port}", "-U", "md5user", "-d", "postgres", "-c", "SELECT 1"], "md5-secret"),
]

TICK = os.sysconf("SC_CLK_TCK")


def config(table, checks, period):
    text = ""
    for i in range(checks):
        text += f'[[check]]\nname = "db-{i}"\nprobes = ["readiness"]\nperiod = "{period}"\ntimeout = "5s"\npostgres = {table}\n\n'
    return text


def start(binary, text, password, wrapper=()):
    tmp = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    tmp.write(text)
    tmp.close()
    env = dict(os.environ, PGPASSWORD=password or "")
    proc = subprocess.Popen(
        [*wrapper, binary, "run", "--config", tmp.name, "--listen", "127.0.0.1:0", "--log-format", "json"],
        env=env, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        m = re.search(r'"listen":"([^"]+)"', line)
        if m:
            return proc, m.group(1), tmp.name
    raise SystemExit("healthproxy did not start")


def runs(addr):
    text = urllib.request.urlopen(f"http://{addr}/metrics", timeout=10).read().decode()
    total = 0
    for line in text.splitlines():
        if line.startswith("healthproxy_check_runs_total{"):
            if 'result="success"' not in line and not line.endswith(" 0"):
                raise SystemExit(f"a run did not succeed: {line}")
            total += float(line.rsplit(" ", 1)[1])
    return total


def cpu_of(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def stop(proc, path):
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    proc.wait()
    os.unlink(path)


def native(binary, table, password, seconds):
    proc, addr, path = start(binary, config(table, 10, "100ms"), password)
    time.sleep(1)
    r0, c0 = runs(addr), cpu_of(proc.pid)
    time.sleep(seconds)
    r1, c1 = runs(addr), cpu_of(proc.pid)
    stop(proc, path)
    return (c1 - c0) / (r1 - r0), r1 - r0


def tool(argv, password, times=200):
    env = dict(os.environ, PGSSLMODE="disable", PGPASSFILE="/nonexistent")
    env.pop("PGPASSWORD", None)
    if password:
        env["PGPASSWORD"] = password
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    s0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(times):
        subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    s1 = resource.getrusage(resource.RUSAGE_SELF)
    child = (c1.ru_utime - c0.ru_utime + c1.ru_stime - c0.ru_stime) / times
    parent = (s1.ru_utime - s0.ru_utime + s1.ru_stime - s0.ru_stime) / times
    return child, parent


def callgrind(binary, table, password, seconds):
    out = tempfile.mktemp(prefix="callgrind.pg.")
    proc, addr, path = start(binary, config(table, 1, "100ms"), password,
                             ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"])
    while runs(addr) < 2:
        time.sleep(0.2)
    subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, stdout=subprocess.DEVNULL)
    r0 = runs(addr)
    time.sleep(seconds)
    r1 = runs(addr)
    stop(proc, path)
    # The dump written at exit holds what ran since the zeroing.
    total = 0
    for f in [p for p in os.listdir(os.path.dirname(out)) if p.startswith(os.path.basename(out))]:
        for line in open(os.path.join(os.path.dirname(out), f)):
            if line.startswith("summary:") or line.startswith("totals:"):
                total = max(total, int(line.split()[1]))
        os.unlink(os.path.join(os.path.dirname(out), f))
    return total / (r1 - r0), r1 - r0


def main():
    binary, port = sys.argv[1], sys.argv[2]
    seconds = float(next((a for a in sys.argv[3:] if not a.startswith("--")), 10))
    print(f"| form | healthproxy CPU per run | runs | tool CPU per run (child) | + spawning (this script) | healthproxy / tool |")
    print("|---|---|---|---|---|---|")
    for name, table, argv, password in FORMS:
        table = table.format(port=port)
        argv = [a.format(port=port) for a in argv]
        per_run, n = native(binary, table, password, seconds)
        child, parent = tool(argv, password)
        print(f"| {name} | {per_run * 1e6:.0f} µs | {n:.0f} | {child * 1e6:.0f} µs | {parent * 1e6:.0f} µs "
              f"| 1/{(child + parent) / per_run:.0f} |")
    if "--callgrind" in sys.argv:
        print()
        print("| form | instructions per run (callgrind) | runs |")
        print("|---|---|---|")
        for name, table, argv, password in FORMS:
            per_run, n = callgrind(binary, table.format(port=port), password, seconds)
            print(f"| {name} | {per_run:,.0f} | {n:.0f} |")


if __name__ == "__main__":
    main()
