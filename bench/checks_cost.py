#!/usr/bin/env python3
"""What the checks beyond the kubelet's cost, side by side in one run.

    bench/checks_cost.py cpu target/release/examples/bench-http-cpu \
        --serve target/release/examples/bench-check-targets [--base OTHER/bench-http-cpu]

Instructions per http check run, by callgrind: each variant runs its check
10 and 210 times; the difference divided by 200 is one run's, without
start-up. The targets are `bench-check-targets`'s: a 1 KiB JSON health
body over HTTP, HTTPS, and HTTPS that requires a client certificate.
`--base` adds the plain http run of another build (the same example built
from another revision), for a before/after.

    bench/checks_cost.py rss target/release/healthproxy \
        --base OTHER/healthproxy --serve target/release/examples/bench-check-targets

Idle VmRSS, as bench/harness.py takes it (2 s after start, every check
run once; 10 tcp checks at 10 s), this build and the base alternated for 3
rounds; then this build with 10 https checks, verified, without and with a
client certificate.
"""

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

RUNS = (10, 210)


def instructions(binary, args):
    """Instructions callgrind counted for `binary args`."""
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", binary, *args],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Collected : (\d+)", out.stderr)
    if not found:
        sys.exit(f"no instruction count from callgrind:\n{out.stderr}")
    return int(found.group(1))


def per_run(binary, url, keys):
    low, high = (instructions(binary, [url, str(n), *keys]) for n in RUNS)
    return (high - low) / (RUNS[1] - RUNS[0])


def targets(serve_binary, files):
    """Starts `bench-check-targets`; its process and its three ports."""
    server = subprocess.Popen([serve_binary, files], stdout=subprocess.PIPE, text=True)
    ports = dict(p.split("=") for p in server.stdout.readline().split())
    return server, ports


def cpu(args):
    with tempfile.TemporaryDirectory() as files:
        server, ports = targets(args.serve, files)
        try:
            http = f"http://127.0.0.1:{ports['http']}/healthz"
            https = f"https://127.0.0.1:{ports['https']}/healthz"
            mtls = f"https://127.0.0.1:{ports['mtls']}/healthz"
            ca = f"ca_file={files}/ca.pem"
            client = [f"cert_file={files}/client.crt", f"key_file={files}/client.key"]
            pattern = 'body_matches="status":\\s*"(ready|ok)"'
            variants = []
            if args.base:
                variants.append(("http, before (base build)", args.base, http, []))
            variants += [
                ("http", args.binary, http, []),
                ("http, body_matches over 1 KiB", args.binary, http, [pattern]),
                ("https, verified, no client certificate", args.binary, https, [ca]),
                ("https, verified, client certificate", args.binary, mtls, [ca, *client]),
            ]
            print("| http check run | instructions per run |")
            print("|---|---|")
            for name, binary, url, keys in variants:
                print(f"| {name} | {per_run(binary, url, keys):,.0f} |", flush=True)
        finally:
            server.kill()


def vm_rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def idle_rss(binary, config, work):
    """VmRSS of `binary run` with `config`, 2 s after its start."""
    path = os.path.join(work, "config.toml")
    with open(path, "w") as f:
        f.write(f'listen = "127.0.0.1:{free_port()}"\n[drain]\nmin = "0s"\n{config}')
    p = subprocess.Popen([binary, "run", "--config", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2)
        if p.poll() is not None:
            sys.exit(f"{binary} exited: {p.returncode}")
        return vm_rss_mib(p.pid)
    finally:
        p.kill()
        p.wait()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def checks(n, handler):
    return "".join(
        f'[[check]]\nname = "c{i}"\nprobes = ["readiness"]\nperiod = "10s"\n{handler}\n' for i in range(n)
    )


def rss(args):
    with tempfile.TemporaryDirectory() as files:
        server, ports = targets(args.serve, files)
        try:
            tcp = checks(10, f"tcp = {{ port = {ports['http']} }}")
            ca = f'ca_file = "{files}/ca.pem"'
            client = f'cert_file = "{files}/client.crt", key_file = "{files}/client.key"'
            https = checks(10, f'http = {{ scheme = "https", port = {ports["https"]}, {ca} }}')
            mtls = checks(10, f'http = {{ scheme = "https", port = {ports["mtls"]}, {ca}, {client} }}')
            rounds = {"10 tcp checks, base build": [], "10 tcp checks, this build": [],
                      "10 https checks, verified": [], "10 https checks, client certificate": []}
            for _ in range(3):
                for name, binary, config in [
                    ("10 tcp checks, base build", args.base, tcp),
                    ("10 tcp checks, this build", args.binary, tcp),
                    ("10 https checks, verified", args.binary, https),
                    ("10 https checks, client certificate", args.binary, mtls),
                ]:
                    rounds[name].append(idle_rss(binary, config, files))
            print("| idle VmRSS | 3 rounds, MiB |")
            print("|---|---|")
            for name, values in rounds.items():
                print(f"| {name} | {' / '.join(f'{v:.2f}' for v in values)} |")
        finally:
            server.kill()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("cpu")
    p.add_argument("binary", help="bench-http-cpu of this tree")
    p.add_argument("--base", help="bench-http-cpu of another build, for the plain http run")
    p.add_argument("--serve", required=True, help="bench-check-targets, for the targets")
    p = sub.add_parser("rss")
    p.add_argument("binary", help="healthproxy of this tree")
    p.add_argument("--base", required=True, help="healthproxy of another build")
    p.add_argument("--serve", required=True, help="bench-check-targets, for the targets")
    args = parser.parse_args()
    {"cpu": cpu, "rss": rss}[args.what](args)


if __name__ == "__main__":
    main()
