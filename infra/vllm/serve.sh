#!/usr/bin/env bash
# Serve the judge model with vLLM's OpenAI-compatible API (seed 002's run_vllm_server.sh).
#
#   infra/vllm/serve.sh                          # Qwen/Qwen2.5-1.5B-Instruct on :8000
#   TRAINWIRE_JUDGE_MODEL=meta-llama/Meta-Llama-3-8B-Instruct VLLM_PORT=8001 infra/vllm/serve.sh --max-model-len 8192
#
# Environment overrides:
#   TRAINWIRE_JUDGE_MODEL    model to serve (also the name trainwire's judge asks for)
#   VLLM_HOST, VLLM_PORT     where to listen (default 0.0.0.0:8000)
#   VLLM_API_KEY             require this key (pass the same as TRAINWIRE_JUDGE_API_KEY)
#   VLLM_GPU_MEMORY_UTILIZATION, VLLM_MAX_MODEL_LEN, VLLM_DTYPE   passed on when set
# Extra arguments go to `vllm serve` unchanged. Check it with: curl http://localhost:8000/v1/models
set -euo pipefail

MODEL="${TRAINWIRE_JUDGE_MODEL:-Qwen/Qwen2.5-1.5B-Instruct}"
HOST="${VLLM_HOST:-0.0.0.0}"
PORT="${VLLM_PORT:-8000}"

if ! command -v vllm > /dev/null 2>&1; then
    echo "vllm is not installed: pip install vllm (needs a GPU), or: docker compose --profile judge up vllm" >&2
    exit 1
fi

args=(serve "$MODEL" --host "$HOST" --port "$PORT")
[[ -n "${VLLM_API_KEY:-}" ]] && args+=(--api-key "$VLLM_API_KEY")
[[ -n "${VLLM_GPU_MEMORY_UTILIZATION:-}" ]] && args+=(--gpu-memory-utilization "$VLLM_GPU_MEMORY_UTILIZATION")
[[ -n "${VLLM_MAX_MODEL_LEN:-}" ]] && args+=(--max-model-len "$VLLM_MAX_MODEL_LEN")
[[ -n "${VLLM_DTYPE:-}" ]] && args+=(--dtype "$VLLM_DTYPE")

echo "serving $MODEL on $HOST:$PORT (OpenAI API at http://$HOST:$PORT/v1)" >&2
exec vllm "${args[@]}" "$@"
