"""Passthrough: `POST /v1/chat/completions` relayed to providers, and `GET /v1/models`.

The app registers `chat_completions` and `list_models`, puts `CompletionsFront` (the
same route without Litestar's per-request layers) ahead of its handler, and enters
`passthrough_lifespan(state, settings)`; the trajectories slice calls
`replay_completion` for `POST /v1/trajectories/{id}/replay`.
"""

from gateway.passthrough._front import CompletionsFront
from gateway.passthrough._lifespan import passthrough_lifespan
from gateway.passthrough.routes import chat_completions, list_models
from gateway.passthrough.service import CompletionCall, replay_completion

__all__ = ["CompletionCall", "CompletionsFront", "chat_completions", "list_models", "passthrough_lifespan", "replay_completion"]
