"""Copy the ABIs of the deployed contracts from the forge build (contracts/out) into
gpumesh/client/chain/abi/<Name>.json, so the package works without forge.

Run by `make contracts` as `python -m gpumesh.client.chain.export_abi`; imported by nobody else.
Contracts listed in OPTIONAL are skipped while their source does not exist yet.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gpumesh.client.chain.abi_store import ABI_DIR

#: Int8Verifier is required: its custom errors reach the dispute responder and the watchtower
#: through the game's reverts, and errors.py decodes only what a shipped ABI declares.
REQUIRED = ("JobMarket", "WorkerRegistry", "Int8Verifier")
OPTIONAL = ("DisputeGame",)


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def export(out_dir: Path, dest: Path = ABI_DIR) -> list[str]:
    """Write dest/<Name>.json for every contract found; returns the names written."""
    written = []
    for name in REQUIRED + OPTIONAL:
        artifact = out_dir / f"{name}.sol" / f"{name}.json"
        if not artifact.exists():
            if name in REQUIRED:
                raise SystemExit(f"export_abi: {artifact} is missing (run `forge build` first)")
            continue
        abi = json.loads(artifact.read_text(encoding="utf-8"))["abi"]
        text = json.dumps(abi, indent=1, sort_keys=True) + "\n"
        target = dest / f"{name}.json"
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
        written.append(name)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=_repo_root() / "contracts" / "out")
    args = ap.parse_args(argv)
    names = export(args.out)
    sys.stdout.write(f"exported ABIs: {', '.join(names)} -> {ABI_DIR}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
