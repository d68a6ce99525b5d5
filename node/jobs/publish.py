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


def _load_checked(program_dir: Path, inputs_file: Path) -> tuple[ProgramBundle, np.ndarray]:
    """The program and the units of a job to post, or one UsageError naming the flag at fault."""
    if not program_dir.is_dir():
        raise UsageError(f"--program {program_dir}: not a program folder")
    if not inputs_file.is_file():
        raise UsageError(f"--inputs {inputs_file}: no such file")
    bundle = load_program(program_dir)
    if (why := unit_output_too_large(bundle.program)) is not None:
        raise UsageError(f"--program {program_dir}: {why}")
    return bundle, load_units(inputs_file, bundle.program)


def publish_job(store, program_dir: str | Path, inputs_file: str | Path, *, units: int | None = None,
                min_gpu_memory_mib: int = 0, meta: dict[str, Any] | None = None) -> PublishedJob:
    """Validate, upload and describe a job's data; returns the spec and its CID (nothing on-chain)."""
    program_dir, inputs_file = Path(program_dir), Path(inputs_file)
    bundle, arr = _load_checked(program_dir, inputs_file)
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


def shard_sizes(num_units: int, *, shards: int | None = None, units_per_shard: int | None = None) -> list[int]:
    """Units per shard, in order: `shards` near-equal contiguous parts (the first ones one unit
    larger), or parts of `units_per_shard` (the last one the rest). Every shard holds >= 1 unit."""
    if (shards is None) == (units_per_shard is None):
        raise UsageError("give one of --shards N and --units-per-shard M")
    if shards is not None:
        if not 1 <= shards <= num_units:
            raise UsageError(f"--shards {shards}: the inputs hold {num_units} units, so 1 to {num_units} shards")
        q, r = divmod(num_units, shards)
        sizes = [q + (i < r) for i in range(shards)]
    else:
        if units_per_shard < 1:
            raise UsageError(f"--units-per-shard {units_per_shard}: must be at least 1")
        sizes = [min(units_per_shard, num_units - s) for s in range(0, num_units, units_per_shard)]
    if len(sizes) > MAX_SHARDS:
        raise UsageError(f"{len(sizes)} shards: one post takes at most {MAX_SHARDS} (the market's MAX_SHARDS)")
    return sizes


def split_amount(total: int, sizes: list[int], *, round_up: bool = False) -> list[int]:
    """`total` split in proportion to `sizes`: floors that add up to `total` exactly (the remainder
    to the first parts), or with round_up each part's ceiling (so a shard's stake is never below its
    share)."""
    n = sum(sizes)
    if round_up:
        return [-(-total * s // n) for s in sizes]
    parts = [total * s // n for s in sizes]
    for i in range(total - sum(parts)):
        parts[i % len(parts)] += 1
    return parts


#: JobMarket.MAX_SHARDS: the most jobs one postJobs call posts.
MAX_SHARDS = 256


def publish_sharded(store, program_dir: str | Path, inputs_file: str | Path, sizes: list[int], *,
                    min_gpu_memory_mib: int = 0, meta: dict[str, Any] | None = None,
                    samples_per_unit: int = 1) -> list[PublishedJob]:
    """The shards of one job: the program uploaded once, the units cut into contiguous parts of
    `sizes` units, each part its own inputs file, root and spec (docs/protocol.md 4.12). Each spec's
    meta carries `shard` {index, count, first_unit, units} and, when the poster gave `samples`, the
    real samples of that shard (`samples_per_unit` each; only the last shard can hold padding)."""
    from gpumesh.node.runtime.files import save_units

    program_dir, inputs_file = Path(program_dir), Path(inputs_file)
    _, arr = _load_checked(program_dir, inputs_file)
    if sum(sizes) != len(arr):
        raise UsageError(f"shards of {sum(sizes)} units, but {inputs_file} holds {len(arr)} units")
    meta = dict(meta or {})
    samples = meta.pop("samples", None)
    out: list[PublishedJob] = []
    with tempfile.TemporaryDirectory(prefix="gpumesh-shards-") as tmp:
        first = 0
        for i, n in enumerate(sizes):
            part = Path(tmp) / f"shard{i}.safetensors"
            save_units(part, arr[first:first + n])
            m = dict(meta, shard={"index": i, "count": len(sizes), "first_unit": first, "units": n})
            if samples is not None:
                m["samples"] = max(0, min(n * samples_per_unit, samples - first * samples_per_unit))
            # publish_job re-uploads the same program folder: the store computes its CID locally and
            # the blocks are already there, so only the shard's inputs and spec are new data.
            out.append(publish_job(store, program_dir, part, min_gpu_memory_mib=min_gpu_memory_mib, meta=m))
            first += n
    return out
