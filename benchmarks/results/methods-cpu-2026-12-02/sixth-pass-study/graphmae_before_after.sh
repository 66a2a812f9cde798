# GraphMAE one training step before (75dec6a: dense masked input, dense reconstruction) and after
# (5d9a571: project_masked, sce_loss_of_codes, sparse features), each as `sslfast train` feeds it,
# one thread, thread clock, median of 5 steps, both backends; alternated 3 times, Cora and CiteSeer.
# Setup: git worktree add /tmp/old 75dec6a && ln -s "$PWD"/sslfast/_C*.so /tmp/old/sslfast/
# (the C++ extension is the same at both commits).
cd "$(git rev-parse --show-toplevel)"
export SSLFAST_PLANETOID=${SSLFAST_PLANETOID:-../shared/data/planetoid}
HERE=benchmarks/results/methods-cpu-2026-12-02/sixth-pass-study
for r in 1 2 3; do
  for data in cora citeseer; do
    echo "round $r $data before: $(PYTHONPATH=/tmp/old .venv/bin/python $HERE/graphmae_step.py $data 5 sslfast,eager 2>/dev/null | tr '\n' ' ')"
    echo "round $r $data after:  $(PYTHONPATH=$PWD .venv/bin/python $HERE/graphmae_step.py $data 5 sslfast,eager 2>/dev/null | tr '\n' ' ')"
  done
done
