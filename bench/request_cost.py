#!/usr/bin/env python3
"""Instructions per request under callgrind: repeatable on a busy machine,
where rates and CPU time are not (BENCHMARKS.md quotes it beside them).

    bench/request_cost.py BINARY|base [CONNECTIONS] [REQUESTS]

BINARY is a healthproxy build, run with one passing tcp check and asked
for GET /readyz; `base` is the bare hyper server (bench-baseline), asked
for GET /. The requests carry the kubelet's headers and go round robin
over CONNECTIONS kept-alive connections (default 64); 0 opens a fresh
connection per request and asks for it to be closed, as the kubelet
does. Counting starts after every connection has had one answer.
Needs valgrind and a release build of the bench-baseline example
(`cargo build --release --example bench-baseline`).
"""
import glob, os, socket, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE = os.path.join(ROOT, "target/release/examples/bench-baseline")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = sys.argv[1]
    conns = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 4000
    work = tempfile.mkdtemp(prefix="request-cost-")
    target_port = free_port()
    target = subprocess.Popen([BASELINE, f"127.0.0.1:{target_port}", "current"])
    out = os.path.join(work, "callgrind.out")
    callgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    port = free_port()
    if binary == "base":
        server = subprocess.Popen(callgrind + [BASELINE, f"127.0.0.1:{port}", "current"], stderr=subprocess.DEVNULL)
        path = "/"
    else:
        config = os.path.join(work, "config.toml")
        with open(config, "w") as f:
            f.write(f'listen = "127.0.0.1:{port}"\n[[check]]\nname = "t"\nprobes = ["readiness"]\n'
                    f'tcp = {{ port = {target_port} }}\nperiod = "1h"\n')
        server = subprocess.Popen(callgrind + [binary, "run", "--config", config, "--log-level", "error"],
                                  stderr=subprocess.DEVNULL)
        path = "/readyz"
    head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: kube-probe/1.36\r\nAccept: */*\r\n"
    try:
        def get(sock, close=False):
            sock.sendall((head + ("Connection: close\r\n" if close else "") + "\r\n").encode())
            reply = b""
            while b"\r\n\r\n" not in reply or not reply.endswith(b"ok"):
                data = sock.recv(4096)
                if not data:
                    raise OSError("closed")
                reply += data
            return reply

        deadline = time.time() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port)) as s:
                    if b" 200 " in get(s).split(b"\r\n")[0]:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                sys.exit("the server did not answer 200 within 60 s")
            time.sleep(0.2)
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]
        for s in socks:
            get(s)
        subprocess.run(["callgrind_control", "-z", str(server.pid)], stdout=subprocess.DEVNULL, check=True)
        if conns == 0:
            for _ in range(n):
                with socket.create_connection(("127.0.0.1", port)) as s:
                    get(s, close=True)
        else:
            for i in range(n):
                get(socks[i % conns])
        subprocess.run(["callgrind_control", "-d", str(server.pid)], stdout=subprocess.DEVNULL, check=True)
    finally:
        server.terminate()
        server.wait()
        target.terminate()
    dump = sorted(glob.glob(out + ".*"), key=os.path.getmtime)[-1]
    with open(dump) as f:
        total = next(int(l.split()[1]) for l in f if l.startswith(("summary:", "totals:")))
    how = f"{conns} kept-alive connections" if conns else "a fresh connection each"
    print(f"{binary}: {total // n} instructions per request ({n} requests, {how})")


if __name__ == "__main__":
    main()
