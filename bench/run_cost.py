#!/usr/bin/env python3
"""Instructions per check run under callgrind, with many checks: what the
engine and the snapshot cost a run beyond the check itself (recording it,
finding its check), which grows with the number of checks if a run
searches for its check.

    bench/run_cost.py BINARY [CHECKS] [SECONDS] [PERIOD]
    bench/run_cost.py --path PATH BINARY [CHECKS] [REQUESTS]

BINARY runs CHECKS file checks (default 1000) of one existing file, each
in liveness and readiness, every PERIOD (default 2s), under valgrind's
callgrind. Once every check has run twice, the counts are zeroed
(`callgrind_control -z`), and after SECONDS (default 20) the
instructions are dumped (`callgrind_control -d`) and divided by the runs
due meanwhile, CHECKS x SECONDS / PERIOD; the runs counted in /metrics
around the window confirm that the process kept up. The figure includes the idle
process's timers and the file check's own work.

With --path, the checks' period is 1h (they stay idle), and the figure is
instructions per GET PATH (default REQUESTS 2000, on one kept-alive
connection, counted after a first answer): `/livez/c-999` asks for the
last of 1000 checks by name.
"""
import os, re, signal, socket, subprocess, sys, tempfile, time, urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def runs(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=300).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("healthproxy_check_runs_total{"))


def get(sock, head):
    sock.sendall(head)
    reply = b""
    while b"\r\n\r\n" not in reply:
        reply += sock.recv(65536)
    header, body = reply.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"(?i)content-length: *(\d+)", header).group(1))
    while len(body) < length:
        body += sock.recv(65536)
    return header.split(b"\r\n")[0]


def main():
    args = sys.argv[1:]
    path = None
    if args[:1] == ["--path"]:
        path, args = args[1], args[2:]
    if not args:
        sys.exit(__doc__)
    binary = args[0]
    n = int(args[1]) if len(args) > 1 else 1000
    seconds = float(args[2]) if len(args) > 2 and not path else 20
    requests = int(args[2]) if len(args) > 2 and path else 2000
    period = "1h" if path else (args[3] if len(args) > 3 else "2s")
    work = tempfile.mkdtemp(prefix="run-cost-")
    beat = os.path.join(work, "beat")
    open(beat, "w").close()
    port = free_port()
    config = os.path.join(work, "config.toml")
    with open(config, "w") as f:
        # A scrape of 1000 checks under callgrind can take seconds.
        f.write(f'listen = "127.0.0.1:{port}"\n[server]\nrequest_timeout = "300s"\n')
        for i in range(n):
            f.write(f'[[check]]\nname = "c-{i}"\nprobes = ["liveness", "readiness"]\n'
                    f'file = {{ path = "{beat}", max_age = "24h" }}\nperiod = "{period}"\n')
    out = os.path.join(work, "callgrind.out")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                             binary, "run", "--config", config, "--log-level", "error"],
                            stderr=subprocess.DEVNULL)
    try:
        if path:
            per_request(proc, port, path, requests, out)
            return
        deadline = time.time() + 600
        while True:
            try:
                if runs(port) >= 2 * n:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                sys.exit("the checks did not run")
            time.sleep(0.5)
        r0 = runs(port)
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, stdout=subprocess.DEVNULL)
        time.sleep(seconds)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, stdout=subprocess.DEVNULL)
        r1 = runs(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
    dumps = sorted(f for f in os.listdir(work) if f.startswith("callgrind.out."))
    total = 0
    with open(os.path.join(work, dumps[0])) as f:
        for line in f:
            m = re.match(r"(summary|totals): (\d+)", line)
            if m:
                total = int(m.group(2))
                break
    # Each check runs once a period, the checks spread over it: the window
    # holds N x SECONDS / PERIOD runs if the process kept up, which the
    # counters confirm (they also count the runs made while /metrics was
    # being scraped, seconds under callgrind with many checks).
    expected = n * seconds / parse_seconds(period)
    if r1 - r0 < expected * 0.98:
        sys.exit(f"the process fell behind: {r1 - r0:.0f} runs counted, {expected:.0f} due")
    print(f"{binary}: {n} checks, {expected:.0f} runs due in {seconds:.0f} s ({r1 - r0:.0f} counted "
          f"around it), {total / expected:,.0f} instructions per run")


def parse_seconds(text):
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    return float(m.group(1)) * units[m.group(2)]


def per_request(proc, port, path, requests, out):
    head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: kube-probe/1.36\r\nAccept: */*\r\n\r\n".encode()
    deadline = time.time() + 600
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port))
            status = get(sock, head)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                sys.exit("the server did not answer")
            time.sleep(0.5)
    subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, stdout=subprocess.DEVNULL)
    for _ in range(requests):
        get(sock, head)
    subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, stdout=subprocess.DEVNULL)
    dump = sorted(f for f in os.listdir(os.path.dirname(out)) if f.startswith("callgrind.out."))[0]
    with open(os.path.join(os.path.dirname(out), dump)) as f:
        total = next(int(l.split()[1]) for l in f if l.startswith(("summary:", "totals:")))
    print(f"GET {path} ({status.decode()}): {total // requests:,} instructions per request")


if __name__ == "__main__":
    main()
