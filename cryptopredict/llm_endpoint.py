"""The check a worker makes at start on its LLM endpoint: with a real Ollama, the configured model must
be there (pulled when `llm.pull_model` allows); any other OpenAI-compatible server is only logged."""

from __future__ import annotations

import logging

import httpx

from cryptopredict.settings import LlmSettings

logger = logging.getLogger(__name__)


def server_root(base_url: str) -> str:
    """http://host:11434/v1 -> http://host:11434 (Ollama's native API lives at the root)."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


async def ensure_llm_model(settings: LlmSettings) -> str:
    """Returns what it found: "ollama", "pulled", "other" or "unreachable". Raises when an Ollama server
    lacks the model and pulling is not allowed, so a worker does not start only to fail every item."""
    import ollama

    root = server_root(settings.base_url)
    try:
        async with httpx.AsyncClient(timeout=5.0) as http:
            response = await http.get(f"{root}/api/version")
    except httpx.HTTPError as exc:
        logger.warning(
            "LLM endpoint %s unreachable at start (%s): sentiment activities retry until it is up", root, exc
        )
        return "unreachable"
    if response.status_code != 200 or "version" not in response.text:
        logger.info("LLM endpoint %s is not Ollama: model check skipped (OpenAI-compatible server)", root)
        return "other"
    client = ollama.AsyncClient(host=root)
    listed = await client.list()
    names = {m.model for m in listed.models}
    if settings.model in names or f"{settings.model}:latest" in names:
        logger.info("Ollama at %s serves %s", root, settings.model)
        return "ollama"
    if not settings.pull_model:
        raise RuntimeError(
            f"Ollama at {root} has no model {settings.model}: run `ollama pull {settings.model}` "
            "or set CRYPTOPREDICT_LLM__PULL_MODEL=true"
        )
    logger.info("pulling %s into Ollama at %s", settings.model, root)
    await client.pull(settings.model)
    return "pulled"
