# Sourced by the perf scripts that measure an edge (gateway.sh, waf.sh): starts one enrolled
# edge stack (`sase-waf-e2e serve-edge`: control plane, edge, the policy in force) and waits for
# its ready line. Needs $BIN (the driver's directory) and $WORK. Every driver started is in
# SERVE_EDGE_DRIVERS from the moment it starts; stop_edges (call it from the script's exit
# trap) stops them, and each driver stops the edge and control plane it started.

SERVE_EDGE_DRIVERS=()

stop_edges() {
  local pid
  for pid in "${SERVE_EDGE_DRIVERS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}

# serve_edge NAME BIN_DIR [ARGS...]: the stack's files go to $WORK/NAME-stack and its log to
# $WORK/serve-NAME.log; BIN_DIR holds the sase-control and sase-edge it runs; ARGS go to
# serve-edge after the policy ($SERVE_EDGE_POLICY, default $WORK/policy.json). Variables in the
# array SERVE_EDGE_ENV are set for it. Sets STACK_DRIVER (the driver's pid), STACK_URL and STACK_PID (the edge's); exits when the stack is not ready within 180 s or its driver dies.
serve_edge() {
  local name=$1 bin_dir=$2
  shift 2
  env "${SERVE_EDGE_ENV[@]}" "$BIN/sase-waf-e2e" serve-edge --bin-dir "$bin_dir" \
    --work-dir "$WORK/$name-stack" --policy "${SERVE_EDGE_POLICY:-$WORK/policy.json}" "$@" \
    > "$WORK/serve-$name.log" 2>&1 &
  STACK_DRIVER=$!
  SERVE_EDGE_DRIVERS+=("$STACK_DRIVER")
  local deadline=$((SECONDS + 180))
  until grep -q '^ready ' "$WORK/serve-$name.log"; do
    if ! kill -0 "$STACK_DRIVER" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
      echo "$(basename "$0"): the edge ($name) did not start:" >&2
      tail -20 "$WORK/serve-$name.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  local ready
  ready=$(grep -m1 '^ready ' "$WORK/serve-$name.log")
  STACK_URL=$(sed -n 's/.*edge_url=\([^ ]*\).*/\1/p' <<< "$ready")
  STACK_PID=$(sed -n 's/.*edge_pid=\([0-9]*\).*/\1/p' <<< "$ready")
}
