# Sourced by .ci/run: a throwaway PostgreSQL server on loopback for the multi-worker tune test.
# Exports RECSYS_TEST_POSTGRES (a SQLAlchemy URL) and stops the server when the CI shell exits.
# Installs the Debian server package when no server binary is found (needs root and apt).

_pg_bindir() {
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        [ -x "$dir/postgres" ] && [ -x "$dir/initdb" ] && { echo "$dir"; return 0; }
    done
    command -v postgres >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1 \
        && { dirname "$(command -v postgres)"; return 0; }
    return 1
}

_pg_free_port() {
    # 5432 unless something (another cluster, another CI job) already listens there.
    python3 - <<'EOF'
import socket
for port in [5432, *range(55432, 55532)]:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as postgres does: TIME_WAIT is fine
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(port)
        break
EOF
}

_pg_setup() {
    local bindir port run_as pgroot
    if ! bindir="$(_pg_bindir)"; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "ci: installing postgresql from Debian packages" >&2
            DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        fi
        bindir="$(_pg_bindir)" || { echo "ci: no PostgreSQL server available" >&2; return 1; }
    fi
    # postgres refuses to run as root: use the postgres account when we are root.
    run_as=()
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
        run_as=(runuser -u postgres --)
    fi
    pgroot="$(mktemp -d /tmp/recsys-ci-pg.XXXXXX)"
    chmod 755 "$pgroot"
    [ "$(id -u)" = 0 ] && chown postgres "$pgroot"
    port="$(_pg_free_port)"
    "${run_as[@]}" "$bindir/initdb" -D "$pgroot/data" -U postgres --auth=trust -E UTF8 >/dev/null
    "${run_as[@]}" "$bindir/pg_ctl" -D "$pgroot/data" -l "$pgroot/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $pgroot -c max_connections=50" start >/dev/null
    RECSYS_CI_PG_STOP="${run_as[*]} $bindir/pg_ctl -D $pgroot/data -m fast stop"
    RECSYS_CI_PG_ROOT="$pgroot"
    "${run_as[@]}" "$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -q -v ON_ERROR_STOP=1 \
        -c "CREATE USER recsys PASSWORD 'recsys'" -c "CREATE DATABASE recsys_test OWNER recsys" >/dev/null
    export RECSYS_TEST_POSTGRES="postgresql://recsys:recsys@127.0.0.1:$port/recsys_test"
    echo "ci: PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port" >&2
}

_pg_teardown() {
    [ -n "${RECSYS_CI_PG_STOP:-}" ] && $RECSYS_CI_PG_STOP >/dev/null 2>&1
    [ -n "${RECSYS_CI_PG_ROOT:-}" ] && rm -rf "$RECSYS_CI_PG_ROOT"
    return 0
}
trap _pg_teardown EXIT
_pg_setup
