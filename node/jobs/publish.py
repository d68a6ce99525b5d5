"""The poster's half of a job's data: upload a program folder and an inputs file to IPFS, compute
every root from the data (gpumesh.client.core.program), and write the job spec document.

    pub = publish_job(store, "examples/digits/cnn", "inputs.safetensors", meta={"labels": [...]})
    pub.spec_cid, pub.spec.program_root, pub.spec.inputs_root, pub.spec.num_units

Only `program.json` and `weights.safetensors` are uploaded (a program folder may hold other files,
such as the float state_dict, that are the poster's business). Roots are computed from the same
files that are uploaded, and the store computes every CID locally (a daemon that reports another
CID is refused), so what workers fetch is exactly what the chain commits to. Used by
`gpumesh job post` and tests.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gpumesh.client.core.errors import UsageError
from gpumesh.client.core.jobspec import JobSpecDoc
from gpumesh.node.jobs.fetch import check_inputs_root, unit_output_too_large
from gpumesh.node.runtime.files import PROGRAM_FILE, WEIGHTS_FILE, ProgramBundle, load_program, load_units


@dataclass(frozen=True)
class PublishedJob:
    spec: JobSpecDoc
    spec_cid: str
    bundle: ProgramBundle
    units: np.ndarray


def publish_job(store, program_dir: str | Path, inputs_file: str | Path, *, units: int | None = None,
                min_gpu_memory_mib: int = 0, meta: dict[str, Any] | None = None) -> PublishedJob:
    """Validate, upload and describe a job's data; returns the spec and its CID (nothing on-chain)."""
    program_dir, inputs_file = Path(program_dir), Path(inputs_file)
    if not program_dir.is_dir():
        raise UsageError(f"--program {program_dir}: not a program folder")
    if not inputs_file.is_file():
        raise UsageError(f"--inputs {inputs_file}: no such file")
    bundle = load_program(program_dir)
    if (why := unit_output_too_large(bundle.program)) is not None:
        raise UsageError(f"--program {program_dir}: {why}")
    arr = load_units(inputs_file, bundle.program)
    if units is not None and units != len(arr):
        raise UsageError(f"--units {units}, but {inputs_file} holds {len(arr)} units")
    prog_root = bundle.program.root()
    in_root = check_inputs_root(bundle, arr)
    with tempfile.TemporaryDirectory(prefix="gpumesh-post-") as tmp:
        clean = Path(tmp) / "program"
        clean.mkdir()
        shutil.copyfile(program_dir / PROGRAM_FILE, clean / PROGRAM_FILE)
        if (program_dir / WEIGHTS_FILE).is_file():
            shutil.copyfile(program_dir / WEIGHTS_FILE, clean / WEIGHTS_FILE)
        program_cid = store.add_path(clean)
    inputs_cid = store.add_path(inputs_file)
    spec = JobSpecDoc(program_cid=program_cid, inputs_cid=inputs_cid, program_root=prog_root,
                      inputs_root=in_root, num_units=len(arr), min_gpu_memory_mib=min_gpu_memory_mib,
                      meta=dict(meta or {}))
    spec_cid = store.add_bytes(spec.to_bytes())
    return PublishedJob(spec, spec_cid, bundle, arr)
