#!/usr/bin/env bash
# Load benchmark of the issuance path: the dispenser (`serve`, the example
# configuration's shape: JWT, mock backend, SQLite audit in a temp dir, no
# rate limits) against a bare chi handler answering the same JSON
# (scripts/benchbare), alternated in one run at several connection counts
# with wrk. Prints successful responses/s, p50 and p99 per step, and the
# ratio of each dispenser to the bare handler; then cold start to ready
# and idle RSS of each server. See docs/benchmarks.md.
#
# Usage: scripts/bench.sh [--against REF]
#   --against REF  also build the dispenser at git REF (e.g. main) and run it
#                  in the same alternation, for a before/after comparison.
# Environment:
#   DURATION=5     seconds per measured step
#   WARMUP=2       seconds of warm-up per server (at 32 connections)
#   CONNECTIONS="1 4 32 128"
#   ROUNDS=1       how many times to repeat the whole sweep
#   PORT_BASE=18080  first of the loopback ports used
#   JWT_CACHE=     set to "off" to run this tree's dispenser with
#                  auth.jwt.cache_max_lifetime: 0s (every request verifies)
#   PROFILE=DIR    write a CPU profile of this tree's dispenser during its
#                  32-connection step to DIR/cpu.pprof (turns admin.pprof on)
#   KEEP=1         keep the temporary directory (configs, logs, databases)
# Not part of CI: it needs a quiet machine to mean anything.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

DURATION=${DURATION:-5}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-"1 4 32 128"}
ROUNDS=${ROUNDS:-1}
PORT_BASE=${PORT_BASE:-18080}
against=""
while [ $# -gt 0 ]; do
  case "$1" in
    --against) against="${2:?--against needs a git ref}"; shift 2 ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

if ! command -v wrk >/dev/null 2>&1; then
  echo "bench.sh: installing wrk (Debian package)" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq wrk >/dev/null
fi

work="$(mktemp -d -t dispenser-bench.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  if [ -n "${KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- build --------------------------------------------------------------
mkdir -p "$work/bin"
echo "building ..." >&2
go build -o "$work/bin/dispenser" ./cmd/dispenser
go build -o "$work/bin/bare" ./scripts/benchbare
names=(bare dispenser)
if [ -n "$against" ]; then
  ref_name="dispenser@$(git rev-parse --short "$against")"
  mkdir -p "$work/src-ref"
  git archive --format=tar "$against" | tar -x -C "$work/src-ref"
  (cd "$work/src-ref" && go build -o "$work/bin/dispenser-ref" ./cmd/dispenser)
  names=(bare "$ref_name" dispenser)
fi

# ---- helpers ------------------------------------------------------------
mkfifo "$work/tick"
exec {tick}<>"$work/tick"
nap() { read -r -t "$1" -u "$tick" _ || true; } # sleep without a fork

# probe PORT PATH: 0 when GET answers 200 (bash's /dev/tcp, no fork, so the
# cold-start measurement is not dominated by starting curl).
probe() {
  local line=""
  { exec {fd}<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&"$fd"
  IFS= read -r -t 2 -u "$fd" line || true
  exec {fd}>&-
  [[ $line == HTTP/1.?" 200"* ]]
}

port_free() { ! { exec {fd}<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || { exec {fd}>&-; return 1; }; }

write_config() { # DIR PORT ADMIN_PORT EXTRA_AUTH_JWT EXTRA_ADMIN
  cat >"$1/config.yaml" <<EOF
# examples/local.yaml's shape: loopback, JWT (EdDSA), mock backend, SQLite
# audit; rate limits off; JSON logs at info (the production format).
server:
  listen: 127.0.0.1:$2
  admin_listen: 127.0.0.1:$3
  min_remaining: 20m
log:
  level: info
  format: json
auth:
  jwt:
    issuer: https://dispenser.local/dev
    audience: dispenser
    keys:
      - kid: dev-1
        public_key_file: $root/examples/dev-jwt-verify.DEV-ONLY.pub.pem
        algorithms: [EdDSA]
    org_claim: org
    signing_key_file: $root/examples/dev-jwt-signing.DEV-ONLY.pem
    signing_key_id: dev-1
$4
$5
backends:
  default:
    type: mock
    account_id: "111122223333"
tenants:
  - org: acme
    role_arn: arn:aws:iam::111122223333:role/vtk-dispenser-target
    external_id: acme-vtk-api-name
    max_duration: 1h
    grants:
      - bucket: media
        prefixes: ["acme/"]
        operations: [get, put, check, tag]
audit:
  type: sqlite
  path: $1/audit.db
revocation:
  poll_interval: 2s
EOF
}

declare -A bin port aport pid cold rss
path='/credentials?operation=get&location=s3://media/acme/in/'

# start NAME: launch, wait for readiness, record cold start and idle RSS.
start() {
  local n=$1 dir="$work/$1" t0 t1
  mkdir -p "$dir"
  for p in "${port[$n]}" "${aport[$n]:-}"; do
    [ -z "$p" ] || port_free "$p" || { echo "bench.sh: port $p is in use (set PORT_BASE)" >&2; exit 1; }
  done
  t0=$EPOCHREALTIME
  if [ "$n" = bare ]; then
    "${bin[$n]}" -listen "127.0.0.1:${port[$n]}" -body "$work/answer.json" >"$dir/stdout" 2>"$dir/stderr" &
  else
    "${bin[$n]}" serve --config "$dir/config.yaml" >"$dir/stdout" 2>"$dir/stderr" &
  fi
  pid[$n]=$!
  pids+=("${pid[$n]}")
  local ready_port=${aport[$n]:-${port[$n]}} ready_path=/readyz
  [ "$n" = bare ] && ready_path=/healthz
  for ((i = 0; ; i++)); do
    probe "$ready_port" "$ready_path" && break
    if ! kill -0 "${pid[$n]}" 2>/dev/null || [ $i -gt 20000 ]; then
      echo "bench.sh: $n did not become ready; its stderr:" >&2
      tail -20 "$dir/stderr" >&2
      exit 1
    fi
    nap 0.001
  done
  t1=$EPOCHREALTIME
  cold[$n]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", (b - a) * 1000 }')
}

idle_rss() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/${pid[$1]}/status"; }

cat >"$work/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %d %d\n", summary.requests,
    e.status + e.connect + e.read + e.write + e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(99)))
end
EOF

# load NAME CONNECTIONS SECONDS: prints "resp/s p50_us p99_us errors".
load() {
  local n=$1 c=$2 d=$3 t=2 out
  [ "$c" -lt 2 ] && t=1
  out=$(wrk -t "$t" -c "$c" -d "${d}s" -s "$work/report.lua" -H "Authorization: Bearer $token" \
    "http://127.0.0.1:${port[$n]}$path" | awk '/^BENCH/ { print $2, $3, $4, $5, $6 }')
  # requests errors duration_us p50 p99
  awk -v o="$out" 'BEGIN { split(o, f, " "); printf "%.0f %d %d %d\n", (f[1] - f[2]) / f[3] * 1e6, f[4], f[5], f[2] }'
}

# ---- start the servers --------------------------------------------------
i=0
for n in "${names[@]}"; do
  port[$n]=$((PORT_BASE + i))
  [ "$n" = bare ] || aport[$n]=$((PORT_BASE + 10 + i))
  i=$((i + 1))
done
bin[bare]="$work/bin/bare"
bin[dispenser]="$work/bin/dispenser"
jwt_extra="" admin_extra=""
if [ "${JWT_CACHE:-}" = off ]; then jwt_extra="    cache_max_lifetime: 0s"; fi
if [ -n "${PROFILE:-}" ]; then admin_extra=$'admin:\n  pprof: true'; mkdir -p "$PROFILE"; fi
mkdir -p "$work/dispenser"
write_config "$work/dispenser" "${port[dispenser]}" "${aport[dispenser]}" "$jwt_extra" "$admin_extra"
if [ -n "$against" ]; then
  bin[$ref_name]="$work/bin/dispenser-ref"
  mkdir -p "$work/$ref_name"
  write_config "$work/$ref_name" "${port[$ref_name]}" "${aport[$ref_name]}" "" ""
fi

for n in "${names[@]}"; do
  [ "$n" = bare ] || start "$n"
done
# Idle RSS of each dispenser before any request (the answer fetched below
# would make this tree's look bigger than the others').
nap 1
for n in "${names[@]}"; do [ "$n" = bare ] || rss[$n]=$(idle_rss "$n"); done
token=$("${bin[dispenser]}" token --config "$work/dispenser/config.yaml" --subject worker-1 --org acme --ttl 10h)
# The bare handler serves the values of a real answer (same JSON, same size).
code=$(curl -s -o "$work/answer.json" -w '%{http_code}' -H "Authorization: Bearer $token" "http://127.0.0.1:${port[dispenser]}$path")
[ "$code" = 200 ] || { echo "bench.sh: the dispenser answered $code: $(cat "$work/answer.json")" >&2; exit 1; }
start bare
nap 1
rss[bare]=$(idle_rss bare)

echo "warming up ..." >&2
for n in "${names[@]}"; do load "$n" 32 "$WARMUP" >/dev/null; done

# ---- the sweep ----------------------------------------------------------
echo
echo "scripts/bench.sh  $(date -u +%Y-%m-%dT%H:%MZ)  $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo))"
echo "tree: $(git rev-parse --short HEAD)$(git diff --quiet HEAD 2>/dev/null || echo '+dirty')${against:+, against $against}; go: $(go env GOVERSION); wrk $(wrk -v 2>&1 | awk 'NR==1 { print $2 }'); ${DURATION}s per step"
[ "${JWT_CACHE:-}" = off ] && echo "this tree's dispenser runs with auth.jwt.cache_max_lifetime: 0s"
echo
printf '%-5s %-6s %-22s %10s %9s %9s %7s %6s\n' round conns server "resp/s" "p50 ms" "p99 ms" "x bare" errors
results="$work/results"
: >"$results"
for ((r = 1; r <= ROUNDS; r++)); do
  for c in $CONNECTIONS; do
    bare_rps=0
    for n in "${names[@]}"; do
      if [ -n "${PROFILE:-}" ] && [ "$n" = dispenser ] && [ "$c" = 32 ] && [ "$r" = 1 ]; then
        curl -s -o "$PROFILE/cpu.pprof" "http://127.0.0.1:${aport[dispenser]}/debug/pprof/profile?seconds=$((DURATION > 2 ? DURATION - 1 : 1))" &
        prof=$!
      fi
      read -r rps p50 p99 errs < <(load "$n" "$c" "$DURATION")
      [ -z "${prof:-}" ] || { wait "$prof" || true; prof=""; }
      [ "$n" = bare ] && bare_rps=$rps
      ratio=$(awk -v a="$rps" -v b="$bare_rps" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
      printf '%-5s %-6s %-22s %10s %9.2f %9.2f %7s %6s\n' "$r" "$c" "$n" "$rps" "$(awk -v v="$p50" 'BEGIN{print v/1000}')" \
        "$(awk -v v="$p99" 'BEGIN{print v/1000}')" "$ratio" "$errs"
      echo "$r $c $n $rps $p50 $p99" >>"$results"
    done
  done
done

# ---- summary ------------------------------------------------------------
echo
echo "per server (round 1): c=4/c=1 throughput, c=4/c=1 p50, c=32 p99/p50, x bare at 32; cold start to ready; idle RSS"
printf '%-22s %12s %10s %12s %10s %9s %9s\n' server "c4/c1 rps" "c4/c1 p50" "c32 p99/p50" "x bare@32" "start ms" "RSS MB"
for n in "${names[@]}"; do
  awk -v n="$n" -v cold="${cold[$n]:-}" -v rss="${rss[$n]}" '
    $1 == 1 { rps[$3 " " $2] = $4; p50[$3 " " $2] = $5; p99[$3 " " $2] = $6 }
    function ratio(a, b) { return (b > 0 && a != "") ? sprintf("%.2f", a / b) : "-" }
    END {
      printf "%-22s %12s %10s %12s %10s %9s %9s\n", n, ratio(rps[n " 4"], rps[n " 1"]), ratio(p50[n " 4"], p50[n " 1"]),
        ratio(p99[n " 32"], p50[n " 32"]), ratio(rps[n " 32"], rps["bare 32"]), (cold == "" ? "-" : cold), rss
    }' "$results"
done
[ -z "${PROFILE:-}" ] || echo "CPU profile of the dispenser at 32 connections: $PROFILE/cpu.pprof (go tool pprof -top $PROFILE/cpu.pprof)"
