"""The job spec document (docs/protocol.md section 4.1): the JSON a poster puts on IPFS and whose
CID the JobPosted event carries. It names where the program and the inputs live; the chain holds
the roots they must reproduce, so nothing in this document is trusted on its own.

Pure: dicts and bytes in, dataclasses out. Shared by the poster, the worker and the watchtower.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from gpumesh.client.core.errors import ValidationError

FORMAT = "gpumesh.job"
VERSION = 1
MAX_SPEC_BYTES = 64 * 1024
_CID_RE = re.compile(r"^(Qm[1-9A-HJ-NP-Za-km-z]{44}|b[a-z2-7]{20,120})$")
_HEX32_RE = re.compile(r"^0x[0-9a-fA-F]{64}$")


class JobSpecError(ValidationError):
    """A job spec document is malformed."""


@dataclass(frozen=True)
class JobSpecDoc:
    program_cid: str  # UnixFS directory: program.json + weights.safetensors
    inputs_cid: str  # UnixFS file: inputs safetensors (one tensor `units` [numUnits, *input])
    program_root: bytes
    inputs_root: bytes
    num_units: int
    min_gpu_memory_mib: int = 0
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "program": {"cid": self.program_cid, "root": "0x" + self.program_root.hex()},
            "inputs": {"cid": self.inputs_cid, "root": "0x" + self.inputs_root.hex(), "units": self.num_units},
            "requirements": {"min_gpu_memory_mib": self.min_gpu_memory_mib},
            "meta": self.meta,
        }

    def to_bytes(self) -> bytes:
        """Canonical bytes (sorted keys, no spaces): the same spec always has the same CID."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()

    @staticmethod
    def from_bytes(data: bytes) -> JobSpecDoc:
        if len(data) > MAX_SPEC_BYTES:
            raise JobSpecError(f"job spec is {len(data)} bytes, over the {MAX_SPEC_BYTES}-byte limit")
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise JobSpecError(f"job spec is not JSON ({exc})") from None
        return JobSpecDoc.from_json(obj)

    @staticmethod
    def from_json(obj: Any) -> JobSpecDoc:
        if not isinstance(obj, dict):
            raise JobSpecError("job spec must be a JSON object")
        if obj.get("format") != FORMAT:
            raise JobSpecError(f"not a gpumesh job spec (format {obj.get('format')!r})")
        if obj.get("version") != VERSION:
            raise JobSpecError(f"unsupported job spec version {obj.get('version')!r} (this gpumesh reads {VERSION})")
        prog, inp = _table(obj, "program"), _table(obj, "inputs")
        req = obj.get("requirements", {})
        if not isinstance(req, dict):
            raise JobSpecError("job spec field 'requirements' must be an object")
        units = inp.get("units")
        if not isinstance(units, int) or isinstance(units, bool) or not 1 <= units < 2**32:
            raise JobSpecError("job spec field 'inputs.units' must be an integer in [1, 2^32)")
        mem = req.get("min_gpu_memory_mib", 0)
        if not isinstance(mem, int) or isinstance(mem, bool) or mem < 0:
            raise JobSpecError("job spec field 'requirements.min_gpu_memory_mib' must be a non-negative integer")
        meta = obj.get("meta", {})
        return JobSpecDoc(
            program_cid=_cid(prog, "program"),
            inputs_cid=_cid(inp, "inputs"),
            program_root=_root(prog, "program"),
            inputs_root=_root(inp, "inputs"),
            num_units=units,
            min_gpu_memory_mib=mem,
            meta=meta if isinstance(meta, dict) else {},
        )


def _table(obj: dict, key: str) -> dict:
    t = obj.get(key)
    if not isinstance(t, dict):
        raise JobSpecError(f"job spec field '{key}' must be an object")
    return t


def _cid(t: dict, where: str) -> str:
    cid = t.get("cid")
    if not isinstance(cid, str) or not _CID_RE.match(cid):
        raise JobSpecError(f"job spec field '{where}.cid' is not an IPFS CID: {cid!r}")
    return cid


def _root(t: dict, where: str) -> bytes:
    r = t.get("root")
    if not isinstance(r, str) or not _HEX32_RE.match(r):
        raise JobSpecError(f"job spec field '{where}.root' must be 0x + 64 hex digits")
    return bytes.fromhex(r[2:])
