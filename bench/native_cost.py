#!/usr/bin/env python3
"""CPU per run of the native database checks in the product binary,
beside the real tool each replaces run as a child, against one server in
one run (BENCHMARKS.md, "PostgreSQL checks" and "Redis, MySQL and
memcached checks").

    bench/native_cost.py KIND BINARY [PORT] [SECONDS] [--callgrind] [--before OTHER]

KIND is postgres, redis, mysql or memcached. For postgres, PORT is a
server on 127.0.0.1 with the roles of tests/it/db_postgres.rs (`trusty`
under trust, `scram` / `scram-secret`, `md5user` / `md5-secret`). For the
others PORT is `-` (or left out when SECONDS is too): the script starts
redis-server, mariadbd (with a user `probe` / `probe-secret`) or memcached
from a temporary directory, as the tests do, and stops it at the end.

For each form, `healthproxy run` runs 10 such checks at a 100 ms period for
SECONDS (default 10): its CPU (utime + stime from /proc/PID/stat) divided
by the runs its /metrics counted over the same window. Then the tool runs
200 times as a child (fork+exec, what an exec probe costs the node besides
the runtime's own exec machinery): the children's CPU from
getrusage(RUSAGE_CHILDREN), and this script's own share of spawning them.
With --before OTHER, the binary OTHER (an earlier build) is measured the
same way right after BINARY, in the same run, for a side-by-side figure.
With --callgrind, one check of each form runs under valgrind's callgrind
for SECONDS after its first run, and the instructions since then are
divided by the runs counted.
"""

import os
import re
import resource
import shutil
import socket
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

PG = ["-h", "127.0.0.1", "-p", "{port}"]
MY = ["--no-defaults", "-h", "127.0.0.1", "-P", "{port}", "-u", "probe"]
# The `nc` one-liner of an exec probe, `printf 'version\\r\\nquit\\r\\n' | nc
# 127.0.0.1 PORT | grep -q '^VERSION '`, in Python as tests/it/db_dialogue.rs
# writes it (the image has no nc); `quit` makes memcached close, so the
# tool's run ends when the answer is in rather than after nc's -q wait.
NC = """import re, socket, sys
s = socket.create_connection(('127.0.0.1', {port}))
s.sendall(b'version\\r\\nquit\\r\\n')
got = b''
while True:
    d = s.recv(4096)
    if not d: break
    got += d
sys.exit(0 if re.search(rb'^VERSION ', got, re.M) else 1)
"""

# kind: [(form, check key, check table, the tool's argv, (password variable, password))]
FORMS = {
    "postgres": [
        ("pg_isready", "postgres", '{{ port = {port}, user = "scram", dbname = "postgres", sslmode = "disable" }}',
         ["pg_isready", *PG, "-U", "scram", "-d", "postgres"], None),
        ("psql -c, trust", "postgres", '{{ port = {port}, user = "trusty", dbname = "postgres", sslmode = "disable", query = "SELECT 1" }}',
         ["psql", "-X", "-w", "-q", *PG, "-U", "trusty", "-d", "postgres", "-c", "SELECT 1"], None),
        ("psql -c, SCRAM-SHA-256", "postgres", '{{ port = {port}, user = "scram", dbname = "postgres", sslmode = "disable", query = "SELECT 1", password_env = "PGPASSWORD" }}',
         ["psql", "-X", "-w", "-q", *PG, "-U", "scram", "-d", "postgres", "-c", "SELECT 1"], ("PGPASSWORD", "scram-secret")),
        ("psql -c, MD5", "postgres", '{{ port = {port}, user = "md5user", dbname = "postgres", sslmode = "disable", query = "SELECT 1", password_env = "PGPASSWORD" }}',
         ["psql", "-X", "-w", "-q", *PG, "-U", "md5user", "-d", "postgres", "-c", "SELECT 1"], ("PGPASSWORD", "md5-secret")),
    ],
    "redis": [
        ("redis-cli ping", "redis", '{{ port = {port} }}',
         ["redis-cli", "-h", "127.0.0.1", "-p", "{port}", "-e", "ping"], None),
    ],
    "mysql": [
        ("mysqladmin ping", "mysql", '{{ port = {port}, user = "probe", password_env = "MYSQL_PWD" }}',
         ["mysqladmin", *MY, "ping"], ("MYSQL_PWD", "probe-secret")),
        ("mariadb -e 'SELECT 1'", "mysql", '{{ port = {port}, user = "probe", password_env = "MYSQL_PWD", command = "query" }}',
         ["mariadb", *MY, "-e", "SELECT 1"], ("MYSQL_PWD", "probe-secret")),
    ],
    "memcached": [
        ("nc: version", "dialogue", '{{ port = {port}, steps = [{{ send = "version\\r\\n" }}, {{ expect = "(?m)^VERSION " }}] }}',
         ["python3", "-c", NC], None),
    ],
}

TICK = os.sysconf("SC_CLK_TCK")


def config(key, table, checks, period):
    text = ""
    for i in range(checks):
        text += f'[[check]]\nname = "db-{i}"\nprobes = ["readiness"]\nperiod = "{period}"\ntimeout = "5s"\n{key} = {table}\n\n'
    return text


def start(binary, text, password, wrapper=()):
    tmp = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    tmp.write(text)
    tmp.close()
    env = dict(os.environ)
    if password:
        env[password[0]] = password[1]
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


def native(binary, key, table, password, seconds):
    proc, addr, path = start(binary, config(key, table, 10, "100ms"), password)
    time.sleep(1)
    r0, c0 = runs(addr), cpu_of(proc.pid)
    time.sleep(seconds)
    r1, c1 = runs(addr), cpu_of(proc.pid)
    stop(proc, path)
    return (c1 - c0) / (r1 - r0), r1 - r0


def tool(argv, password, times=200):
    env = dict(os.environ, PGSSLMODE="disable", PGPASSFILE="/nonexistent")
    env.pop("PGPASSWORD", None)
    env.pop("MYSQL_PWD", None)
    if password:
        env[password[0]] = password[1]
    c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    s0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(times):
        subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)
    c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    s1 = resource.getrusage(resource.RUSAGE_SELF)
    child = (c1.ru_utime - c0.ru_utime + c1.ru_stime - c0.ru_stime) / times
    parent = (s1.ru_utime - s0.ru_utime + s1.ru_stime - s0.ru_stime) / times
    return child, parent


def callgrind(binary, key, table, password, seconds):
    out = tempfile.mktemp(prefix="callgrind.hp.")
    proc, addr, path = start(binary, config(key, table, 1, "100ms"), password,
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


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server(kind, tmp):
    """Starts KIND's server from `tmp` as the tests do; returns (process, port)."""
    port = free_port()
    quiet = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if kind == "redis":
        proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp,
                                 "--save", "", "--appendonly", "no", "--logfile", "redis.log"], cwd=tmp, **quiet)
    elif kind == "memcached":
        proc = subprocess.Popen(["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-u", "root",
                                 "-c", "64", "-t", "1"], **quiet)
    else:
        data = os.path.join(tmp, "data")
        subprocess.run(["mariadb-install-db", "--no-defaults", "--user=root", "--skip-test-db",
                        "--auth-root-authentication-method=socket", f"--datadir={data}"], check=True, **quiet)
        proc = subprocess.Popen(["mariadbd", "--no-defaults", f"--datadir={data}", f"--socket={tmp}/sock",
                                 f"--port={port}", f"--pid-file={tmp}/pid", f"--log-error={tmp}/error.log",
                                 "--bind-address=127.0.0.1", "--user=root", "--skip-name-resolve",
                                 "--skip-log-bin", "--innodb-buffer-pool-size=8M", "--max-connections=500"], **quiet)
    deadline = time.monotonic() + 120
    while not listening(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{kind} server did not start")
        time.sleep(0.1)
    if kind == "mysql":
        subprocess.run(["mariadb", "--no-defaults", f"--socket={tmp}/sock", "-e",
                        "CREATE USER 'probe'@'127.0.0.1' IDENTIFIED BY 'probe-secret'"], check=True)
    return proc, port


def main():
    kind, binary = sys.argv[1], sys.argv[2]
    args = sys.argv[3:]
    before = None
    if "--before" in args:
        at = args.index("--before")
        before = args[at + 1]
        del args[at:at + 2]
    rest = [a for a in args if not a.startswith("--")]
    port = rest[0] if rest and rest[0] != "-" else None
    seconds = float(rest[1]) if len(rest) > 1 else 10
    tmp, srv = None, None
    if port is None:
        tmp = tempfile.mkdtemp(prefix=f"native-cost-{kind}.")
        srv, port = server(kind, tmp)
    try:
        measure(kind, binary, str(port), seconds, before)
    finally:
        if srv:
            srv.terminate()
            srv.wait()
            shutil.rmtree(tmp, ignore_errors=True)


def measure(kind, binary, port, seconds, before=None):
    extra = (" OTHER CPU per run | OTHER / tool |", "---|---|") if before else ("", "")
    print(f"| form | healthproxy CPU per run | runs | tool CPU per run (child) | + spawning (this script) | healthproxy / tool |{extra[0]}")
    print(f"|---|---|---|---|---|---|{extra[1]}")
    for name, key, table, argv, password in FORMS[kind]:
        table = table.format(port=port)
        argv = [a.format(port=port) for a in argv]
        per_run, n = native(binary, key, table, password, seconds)
        child, parent = tool(argv, password)
        row = (f"| {name} | {per_run * 1e6:.0f} µs | {n:.0f} | {child * 1e6:.0f} µs | {parent * 1e6:.0f} µs "
               f"| 1/{(child + parent) / per_run:.1f} |")
        if before:
            other, _ = native(before, key, table, password, seconds)
            row += f" {other * 1e6:.0f} µs | 1/{(child + parent) / other:.1f} |"
        print(row, flush=True)
    if "--callgrind" in sys.argv:
        print()
        print("| form | instructions per run (callgrind) | runs |")
        print("|---|---|---|")
        for name, key, table, argv, password in FORMS[kind]:
            per_run, n = callgrind(binary, key, table.format(port=port), password, seconds)
            print(f"| {name} | {per_run:,.0f} | {n:.0f} |", flush=True)


if __name__ == "__main__":
    main()
