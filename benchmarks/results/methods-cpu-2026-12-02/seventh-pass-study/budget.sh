# Budget timings after this pass's recipe changes: each run alone on the idle 2-core machine,
# default threads (2), seed 0, wall clock (GNU time). Output: budget.txt and OUT/<name>/results.json.
cd "$(git rev-parse --show-toplevel)"
HERE=benchmarks/results/methods-cpu-2026-12-02/seventh-pass-study
OUT=${OUT:-/tmp/budget7}
mkdir -p "$OUT"
run() {
  /usr/bin/time -f "$1: %e s wall" -a -o "$HERE/budget.txt" \
    .venv/bin/sslfast train "$2" --data "$3" --seed 0 --no-progress --out "$OUT/$1" > "$OUT/$1.log" 2>&1
}
echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD): sslfast train M --data D --seed 0 --no-progress, default 2 threads, alone" >> "$HERE/budget.txt"
run grace-cora grace cora
run graphmae-cora graphmae cora
run graphmae-citeseer graphmae citeseer
run simsiam-mnist5k simsiam mnist5k
