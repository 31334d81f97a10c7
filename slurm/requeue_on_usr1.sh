#!/usr/bin/env bash
# Runs a command as a SLURM batch job that survives time limits and preemption. SLURM sends SIGUSR1 to the
# batch shell ahead of the time limit (`#SBATCH --signal=B:USR1@300`; `scancel --signal=USR1 --batch` sends
# it at once); this forwards it to the command (lth checkpoints its exact step and exits 3; `wandb agent
# --forward-signals` passes it on to lth), then requeues the job. The restarted task runs the same command,
# which resumes the same run directory (named by the run's identity, not the job id) and the same W&B run.
set -uo pipefail
"$@" &
child=$!
got_usr1=0
trap 'got_usr1=1; kill -USR1 "$child" 2>/dev/null' USR1
while :; do
  wait "$child"
  status=$?
  kill -0 "$child" 2>/dev/null || break  # `wait` also returns when the trap runs; go on waiting
done
if [ "$got_usr1" = 1 ] && [ -n "${SLURM_JOB_ID:-}" ]; then
  job=${SLURM_JOB_ID}
  [ -n "${SLURM_ARRAY_JOB_ID:-}" ] && job=${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}
  echo "[lth] SIGUSR1: requeueing job $job (restart count so far ${SLURM_RESTART_COUNT:-0})"
  scontrol requeue "$job"
fi
exit "$status"
