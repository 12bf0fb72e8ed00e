#!/bin/bash
# One device call: install the carried wheels, then the named steps, each under its own time limit, logs in $OUT.
# Usage: bash bench/device/run.sh STEP... (env: check; tests; kernels; host; peerhost; breedN with args BREED_N, limit T_BREED_N)
# peerhost: bench/merge_host.py from another commit's tree on the same machine (an A/B the machines' spread, 47-55%
# for one commit, would drown): PEER=folder, made before the call by
#   mkdir peer && git archive COMMIT darwin_core bench | tar -x -C peer   (carried, or untracked so it travels);
# PEER_ARGS and T_PEER default to HOST_ARGS and T_HOST
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit 3
W=/tmp/darwin-breed
quiet() { grep --line-buffered -v "Writing model shards\|Loading weights\|it/s\]$"; }
for step in "$@"; do
  start=$(date +%s)
  case "$step" in
    env) { nvidia-smi; python3 -c "import torch, transformers, triton; print(torch.__version__, transformers.__version__, triton.__version__, torch.cuda.get_device_name())"; free -g; df -h /tmp; } > $OUT/env.txt 2>&1 ;;
    tests) timeout ${T_TESTS:-240} python3 -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider ${TESTS_K:+-k "$TESTS_K"} 2>&1 | tail -60 > $OUT/gpu_tests.log ;;
    kernels) timeout ${T_KERNELS:-220} python3 bench/breed_kernels.py --shape 4b --workdir $W ${KERNEL_ARGS:---profile} --json $OUT/kernels.json 2>&1 | quiet > $OUT/kernels.log ;;
    host) timeout ${T_HOST:-200} python3 bench/merge_host.py ${HOST_ARGS} 2>&1 | quiet > $OUT/merge_host.log ;;
    peerhost) (cd "${PEER:?set PEER to the other commit tree}" && timeout ${T_PEER:-${T_HOST:-200}} python3 bench/merge_host.py ${PEER_ARGS:-$HOST_ARGS}) 2>&1 | quiet > $OUT/merge_host_peer.log ;;
    breed*) n=${step#breed}; eval "args=\$BREED_$n; limit=\${T_BREED_$n:-\${T_BREED:-300}}"; timeout $limit python3 bench/breed.py --shape 4b --workdir $W $args --json $OUT/breed$n.json 2>&1 | quiet > $OUT/breed$n.log ;;
  esac
  echo "step $step: rc ${PIPESTATUS[0]} in $(( $(date +%s) - start )) s"
done
for f in $OUT/*.log; do echo "== $f"; tail -n 45 "$f"; done
