# Budget timings: each method alone on the 2-core machine, default threads (2), seed 0, wall clock.
cd "$(git rev-parse --show-toplevel)"
T=${OUT:-/tmp/timing}
run() { .venv/bin/sslfast train $2 --data $3 --seed 0 --no-progress --out $T/$1 > $T/$1.log 2>&1; }
run graphmae-cora graphmae cora
run grace-cora grace cora
run mae mae mnist5k
run simmim simmim mnist5k
run graphmae-citeseer graphmae citeseer
echo finished > $T/done
