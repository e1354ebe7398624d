# Sourced by gpu_run.sh (and tests/integration/test_gpu_stage.py): one stage = one command under a time limit that ends with
# every process the command started, and a JSON record saying whether it finished or was cut.
#
# Why not `timeout` alone: it signals its own process group, and train_throughput.py starts each measurement in a
# session of its own (so that it can kill that one measurement); a stage cut by `timeout` left its measurement
# holding the GPU while the next stage measured. Here every process of a stage carries GPU_RUN_STAGE_TOKEN in
# its environment (inherited through any fork, setsid or exec), and when the stage ends, cut or not, every process
# that still carries the token is killed: the whole tree, whatever sessions or process groups it made.
#
# Needs: DEADLINE (seconds), START (the $SECONDS the run started at), RESULTS (folder for stage__NAME.json), LOG,
# SLOW (budget multiplier, 1 on a GPU); optional GPU_RUN_SKIP (comma-separated stage names) and an
# export_results function (called after each stage).

log() { echo "[gpu_run $(date -u +%H:%M:%S) +$((SECONDS - START))s] $*" | tee -a "$LOG"; }

# kill_tree TOKEN: SIGKILL every process whose environment holds GPU_RUN_STAGE_TOKEN=TOKEN; print how many.
kill_tree() {
  local token=$1 environ pid killed=0
  for environ in /proc/[0-9]*/environ; do
    pid=${environ#/proc/}
    pid=${pid%/environ}
    [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
    if grep -qzx "GPU_RUN_STAGE_TOKEN=$token" "$environ" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null && killed=$((killed + 1))
    fi
  done
  echo "$killed"
}

# stage_record NAME STATUS RC SECONDS LIMIT KILLED: results/stage__NAME.json
stage_record() {
  printf '{"stage": "%s", "status": "%s", "rc": %s, "seconds": %s, "limit_s": %s, "leftover_processes_killed": %s}\n' \
    "$1" "$2" "$3" "$4" "$5" "$6" >"$RESULTS/stage__$1.json"
}

# stage NAME BUDGET_S COMMAND...: run within min(budget, time left); status finished (rc 0), failed (other rc),
# cut (ran out of time: rc 124/137) or skipped; never stops the script.
stage() {
  local name=$1 budget=$(($2 * SLOW)) left limit rc status token killed began
  shift 2
  if [[ ",${GPU_RUN_SKIP:-}," == *",$name,"* ]]; then
    log "SKIP $name: named in GPU_RUN_SKIP"
    return 0
  fi
  left=$((DEADLINE - (SECONDS - START)))
  limit=$((budget < left ? budget : left))
  if ((limit < 15)); then
    log "SKIP $name: ${left}s left of the ${DEADLINE}s deadline"
    stage_record "$name" skipped null 0 "$limit" 0
    return 0
  fi
  log "START $name (limit ${limit}s)"
  echo "  command: $*" >>"$LOG"
  began=$SECONDS
  token="$name-$$-$RANDOM$RANDOM"
  GPU_RUN_STAGE_TOKEN=$token timeout --kill-after=5 "$limit" "$@" >>"$LOG" 2>&1
  rc=$?
  killed=$(kill_tree "$token")
  case $rc in
    0) status=finished ;;
    124 | 137) status=cut ;;
    *) status=failed ;;
  esac
  log "END $name: $status (rc=$rc) after $((SECONDS - began))s; $killed leftover process(es) killed"
  stage_record "$name" "$status" "$rc" $((SECONDS - began)) "$limit" "$killed"
  if declare -F export_results >/dev/null; then export_results; fi
  return 0
}
