#!/usr/bin/env bash
# The main job against a simulated Mac: build, seed a chat.db with imsg-sim, start `imsg-bridge run`
# with examples/sim.json5, inject two messages from "another process" (as Messages would write them),
# print the envelopes that come out, and stop. Run it from anywhere; it works in the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet --bins
rm -rf target/try-sim && mkdir -p target/try-sim
./target/debug/imsg-sim init --db target/try-sim/chat.db --seed demo >/dev/null

./target/debug/imsg-bridge --config examples/sim.json5 run >target/try-sim/envelopes.jsonl 2>target/try-sim/bridge.log &
bridge=$!
trap 'kill $bridge 2>/dev/null || true' EXIT

for _ in $(seq 100); do grep -q "watching for messages" target/try-sim/bridge.log && break; sleep 0.1; done
./target/debug/imsg-sim inject --db target/try-sim/chat.db --from +14155551212 --text "Hi bot, are you there?" >/dev/null
./target/debug/imsg-sim inject --db target/try-sim/chat.db --from jane@example.com --group Family \
  --participants +14155551212,jane@example.com --text "Dinner at 7?" >/dev/null
for _ in $(seq 100); do [ "$(wc -l <target/try-sim/envelopes.jsonl)" -ge 2 ] && break; sleep 0.1; done

kill -TERM $bridge && wait $bridge || true
trap - EXIT
echo "--- log (stderr) ---"
cat target/try-sim/bridge.log
echo "--- envelopes (stdout, one per line) ---"
cat target/try-sim/envelopes.jsonl
