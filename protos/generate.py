"""Generate the Python code for the gRPC API from protos/ into grpc_server/pb/.

Run from anywhere: ``python protos/generate.py`` (or ``make proto``). The output is committed;
tests/unit/test_proto_generated.py regenerates into a temp dir and fails on any difference.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = PROTO_ROOT.parent / "grpc_server" / "pb"
# Relative to PROTO_ROOT: this is the file name recorded in the descriptor and seen by reflection.
PROTO_FILE = "cryptopredict/v1/predictions.proto"
GENERATED = ("predictions_pb2.py", "predictions_pb2.pyi", "predictions_pb2_grpc.py")

# protoc derives the import from the proto package, which would resolve to our core package
# `cryptopredict`; the generated modules sit side by side, so a relative import is right.
_ABSOLUTE_IMPORT = "from cryptopredict.v1 import predictions_pb2"
_RELATIVE_IMPORT = "from . import predictions_pb2"


def generate(out: Path = DEFAULT_OUT) -> list[Path]:
    """Run protoc on the proto and write the generated modules flat into `out`."""
    # The well-known types (google/protobuf/timestamp.proto) ship inside grpc_tools.
    well_known = resources.files("grpc_tools") / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            str(PROTO_ROOT / PROTO_FILE),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed: {' '.join(args)}")
        out.mkdir(parents=True, exist_ok=True)
        written = []
        generated_dir = Path(tmp) / Path(PROTO_FILE).parent
        for name in GENERATED:
            text = (generated_dir / name).read_text()
            if name.endswith("_grpc.py"):
                if _ABSOLUTE_IMPORT not in text:
                    raise RuntimeError(f"expected `{_ABSOLUTE_IMPORT}` in {name}")
                text = text.replace(_ABSOLUTE_IMPORT, _RELATIVE_IMPORT)
            target = out / name
            target.write_text(text)
            written.append(target)
    init = out / "__init__.py"
    if not init.exists():
        init.write_text('"""Generated protobuf and gRPC modules; regenerate with protos/generate.py."""\n')
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
