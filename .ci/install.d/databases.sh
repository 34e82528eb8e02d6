#!/usr/bin/env bash
# What the native database checks' tests need (tests/it/db_*): the real
# servers and their real clients from Debian, as oracles. Each test starts
# its own server from a temporary directory; the packages' own services
# are never started (policy-rc.d refuses them during the install).
set -euo pipefail

need=()
command -v pg_isready >/dev/null 2>&1 && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql postgresql-client)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
command -v mysqladmin >/dev/null 2>&1 || need+=(mariadb-client)
command -v memcached >/dev/null 2>&1 || need+=(memcached)
command -v pgrep >/dev/null 2>&1 || need+=(procps)
# ZooKeeper 3.8 (Java; tests/it/exec_convert_e2e.rs starts it from a
# temporary directory in about 1.5 s, 65 MB resident) and Debian's nc,
# which its `echo ruok | nc` probes run.
[ -f /usr/share/java/zookeeper.jar ] || need+=(zookeeper)
command -v nc >/dev/null 2>&1 || need+=(netcat-openbsd)
if [ ${#need[@]} -gt 0 ]; then
    echo "databases: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    policy=/usr/sbin/policy-rc.d
    had_policy=0
    [ -e "$policy" ] && had_policy=1
    if [ "$had_policy" = 0 ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    [ "$had_policy" = 0 ] && rm -f "$policy"
fi
# A service the install started anyway would hold the default ports.
for svc in postgresql redis-server mariadb memcached zookeeper; do
    service "$svc" stop >/dev/null 2>&1 || true
done
for tool in pg_isready psql redis-server redis-cli mysqladmin mariadb memcached pgrep nc java; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || { echo "databases: $tool is still missing" >&2; exit 1; }
done
[ -f /usr/share/java/zookeeper.jar ] || { echo "databases: zookeeper.jar is still missing" >&2; exit 1; }
