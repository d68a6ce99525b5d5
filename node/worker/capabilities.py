"""The worker's capability document: what it runs on and what it accepts, as canonical JSON whose
CID the worker publishes in the WorkerRegistry (`setCapabilities`). Posters and tools read it to
see who can take a job. Pure (dicts and bytes); imported by the worker daemon and `worker doctor`.
"""

from __future__ import annotations

import json

from gpumesh.client.core.constants import PROGRAM_VERSION
from gpumesh.client.core.ops.types import Opcode
from gpumesh.node.jobs.fetch import JobLimits
from gpumesh.node.worker.inventory import Inventory

FORMAT = "gpumesh.capabilities"
VERSION = 1


def capability_dict(inv: Inventory, device: str, limits: JobLimits) -> dict:
    inv_d = inv.to_dict()
    inv_d.pop("extra", None)
    return {
        "format": FORMAT,
        "version": VERSION,
        "device": device,
        "gpus": inv_d["gpus"],
        "cpu": inv_d["cpu"],
        "max_gpu_memory_mib": inv.max_gpu_memory_mib,
        "program_versions": [PROGRAM_VERSION],
        "ops": sorted(op.name.lower() for op in Opcode),
        "limits": {"max_units": limits.max_units, "max_inputs_bytes": limits.max_inputs_bytes,
                   "max_weights_bytes": limits.max_weights_bytes},
    }


def capability_document(inv: Inventory, device: str, limits: JobLimits) -> bytes:
    """Canonical bytes (sorted keys, no spaces): an unchanged machine republishes the same CID."""
    return json.dumps(capability_dict(inv, device, limits), sort_keys=True, separators=(",", ":")).encode()
