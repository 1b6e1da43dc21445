#!/usr/bin/env bash
# Reproduce the shipped DQN agents and the README's evaluation tables on the prostate family.
# Trains on variants 0-29 and evaluates on the held-out variants 30-39. Same seed and thread count
# give the same numbers. Usage: RadAgentCore/benchmarks/reproduce_agents.sh [OUTPUT_FOLDER]
set -euo pipefail
out=${1:-results/agents}
radagent=${RADAGENT:-radagent}
mkdir -p "$out"

# The shipped checkpoints (RadAgentCore/src/radagent/agents/checkpoints) came from these commands.
/usr/bin/time -f "gantry training: %e s wall, %M kB max RSS" \
  "$radagent" train --env gantry --variants 0-29 --episodes 1000 --out "$out/dqn-gantry"
/usr/bin/time -f "tpp training: %e s wall, %M kB max RSS" \
  "$radagent" train --env tpp --variants 0-29 --steps 2000 --include-tpps --seed 0 \
  --out "$out/dqn-tpp"
# ... continued to 3000 steps (chosen on validation variants 40-49; the buffer refills on resume).
/usr/bin/time -f "tpp training, resumed: %e s wall, %M kB max RSS" \
  "$radagent" train --env tpp --variants 0-29 --steps 3000 --include-tpps --seed 0 --resume \
  --out "$out/dqn-tpp"
"$radagent" compare --env tpp --case prostate --variants 40-49 --agents "dqn-tpp:$out/dqn-tpp" \
  --out "$out/validate-tpp"

# The evaluation tables: held-out variants, every number from the CT-grid evaluation.
"$radagent" compare --env gantry --case prostate --variants 30-39 \
  --agents "random,equispaced,dqn-gantry:$out/dqn-gantry,greedy,exhaustive" --out "$out/compare-gantry"
"$radagent" compare --env tpp --case prostate --variants 30-39 \
  --agents "tuner,dqn-tpp:$out/dqn-tpp" --out "$out/compare-tpp"
# From the sources' random TPP ranges (the tuner is left out here: from such starts it takes over
# 6 min per variant on 2 cores).
"$radagent" compare --env tpp --case prostate --variants 30-39 --start random \
  --agents "dqn-tpp:$out/dqn-tpp" --out "$out/compare-tpp-random"
