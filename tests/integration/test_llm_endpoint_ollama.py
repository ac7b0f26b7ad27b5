"""The worker-start check against a server speaking Ollama's native API (version, tags, pull): the model
is found, pulled when allowed, and a missing model stops the worker with instructions otherwise.
The server below implements those three endpoints as Ollama documents them; our check and the `ollama`
client talk to it over HTTP unchanged."""

from __future__ import annotations

import pytest
from aiohttp import web

from cryptopredict.cli.demo import free_port
from cryptopredict.llm_endpoint import ensure_llm_model

pytestmark = pytest.mark.integration


class OllamaProtocolServer:
    def __init__(self, models: list[str]) -> None:
        self.models = list(models)
        self.pulls: list[str] = []
        self.port = free_port()
        app = web.Application()
        app.router.add_get("/api/version", self._version)
        app.router.add_get("/api/tags", self._tags)
        app.router.add_post("/api/pull", self._pull)
        self.runner = web.AppRunner(app)

    async def _version(self, _request: web.Request) -> web.Response:
        return web.json_response({"version": "0.12.0"})

    async def _tags(self, _request: web.Request) -> web.Response:
        models = [
            {
                "name": name,
                "model": name,
                "modified_at": "2026-11-01T00:00:00Z",
                "size": 4_683_087_332,
                "digest": "0" * 64,
                "details": {"format": "gguf", "family": "qwen2", "parameter_size": "7.6B"},
            }
            for name in self.models
        ]
        return web.json_response({"models": models})

    async def _pull(self, request: web.Request) -> web.Response:
        body = await request.json()
        name = body.get("model") or body.get("name")
        self.pulls.append(name)
        self.models.append(name if ":" in name else f"{name}:latest")
        return web.json_response({"status": "success"})

    async def __aenter__(self) -> OllamaProtocolServer:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


async def test_a_present_model_is_accepted(settings):
    async with OllamaProtocolServer(["deepseek-r1:7b"]) as server:
        llm = settings.llm.model_copy(
            update={"base_url": f"http://127.0.0.1:{server.port}/v1", "model": "deepseek-r1:7b"}
        )
        assert await ensure_llm_model(llm) == "ollama"
        assert server.pulls == []


async def test_a_missing_model_is_pulled_when_allowed_and_refused_otherwise(settings):
    async with OllamaProtocolServer(["llama3.2:1b"]) as server:
        base = {"base_url": f"http://127.0.0.1:{server.port}/v1", "model": "deepseek-r1:7b"}
        with pytest.raises(RuntimeError, match="ollama pull deepseek-r1:7b"):
            await ensure_llm_model(settings.llm.model_copy(update=base | {"pull_model": False}))
        assert server.pulls == []
        assert await ensure_llm_model(settings.llm.model_copy(update=base | {"pull_model": True})) == "pulled"
        assert server.pulls == ["deepseek-r1:7b"]
        assert await ensure_llm_model(settings.llm.model_copy(update=base)) == "ollama"  # now present
