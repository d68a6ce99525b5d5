"""Train the byte-level GPT (examples/bytegpt/model.py) on the standard library's own sources
(every Python has them: `sysconfig.get_paths()["stdlib"]`, no download), deterministically (fixed
seeds, one thread, torch deterministic algorithms), and write

    <out>/state_dict.safetensors   float weights stored as fp16 (the model runs them in fp32)
    <out>/calib.safetensors        uint8 ids [64, 256]: seeded windows of the training files
    <out>/heldout.safetensors      uint8 ids [128, 256]: seeded windows of the held-out files

    python examples/bytegpt/train.py [--out examples/bytegpt] [--steps 1500] [--no-eval]

then (unless --no-eval) exports it to int8 and prints float vs int8 next-byte accuracy and
bits-per-byte on the held-out windows (evaluate.figures). The bits are those of the same stdlib
files: the corpus digest printed first names them (Python 3.11.7 here).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import sysconfig
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parents[1]) not in sys.path:  # runnable from a checkout without an install
    sys.path.insert(0, str(HERE.parents[1]))

# A fixed, sorted list of stdlib files to train on, and files the model never sees (evaluation).
TRAIN = sorted(["argparse.py", "bisect.py", "collections/__init__.py", "configparser.py", "contextlib.py",
                "copy.py", "csv.py", "dataclasses.py", "enum.py", "fractions.py", "functools.py", "heapq.py",
                "json/decoder.py", "json/encoder.py", "logging/__init__.py", "pathlib.py", "random.py",
                "shlex.py", "string.py", "textwrap.py"])
HELD_OUT = sorted(["calendar.py", "difflib.py", "fnmatch.py", "glob.py"])
STEPS, BATCH, LR, WARMUP = 1500, 16, 1.5e-3, 20
CALIB, EVAL = 64, 128


def stdlib_bytes(names: list[str]) -> bytes:
    root = Path(sysconfig.get_paths()["stdlib"])
    return b"".join((root / n).read_bytes() for n in names)


def corpus_digest() -> str:
    """sha256 over the training then held-out files: equal digests, equal training data."""
    return hashlib.sha256(stdlib_bytes(TRAIN) + b"\0" + stdlib_bytes(HELD_OUT)).hexdigest()


def windows(data: bytes, ctx: int, count: int, seed: int):
    """`count` windows of ctx bytes at seeded random offsets, uint8 [count, ctx]."""
    import torch

    t = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(t) - ctx, (count,), generator=g)
    return torch.stack([t[s : s + ctx] for s in starts.tolist()])


def _init(model) -> None:
    """GPT-2's initialisation: matrices and embeddings N(0, 0.02), the residual projections N(0,
    0.02 / sqrt(2 layers)), biases 0, norms as made (1, 0) (torch's defaults, N(0, 1) embeddings
    among them, left training on a plateau near 2.3 nats/byte)."""
    import math

    import torch.nn as nn

    layers = len(model.blocks)
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            std = 0.02 / math.sqrt(2 * layers) if name.endswith(("proj.weight", "out.weight")) else 0.02
            nn.init.normal_(p, 0.0, std)
        elif name.endswith("bias"):
            nn.init.zeros_(p)


def train(steps: int = STEPS):
    """The model after `steps` AdamW steps (batch 16 x 256 bytes, linear warmup then cosine)."""
    import math

    import torch
    import torch.nn.functional as F

    from examples.bytegpt.model import CTX, gpt

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(0)
    model = gpt()
    _init(model)
    t = torch.frombuffer(bytearray(stdlib_bytes(TRAIN)), dtype=torch.uint8).long()
    g = torch.Generator().manual_seed(0)
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": matrices, "weight_decay": 0.1}, {"params": vectors, "weight_decay": 0.0}],
                            lr=LR, betas=(0.9, 0.95))
    model.train()
    for step in range(steps):
        lr = LR * min(1.0, (step + 1) / WARMUP) * (0.1 + 0.45 * (1 + math.cos(math.pi * step / steps)))
        for group in opt.param_groups:
            group["lr"] = lr
        s = torch.randint(0, len(t) - CTX - 1, (BATCH,), generator=g).tolist()
        x = torch.stack([t[i : i + CTX] for i in s])
        y = torch.stack([t[i + 1 : i + CTX + 1] for i in s])
        loss = F.cross_entropy(model(x).reshape(-1, 256), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step}: loss {loss.item():.3f} (nats/byte)", flush=True)
    return model.eval()


def build(out: Path, steps: int = STEPS, evaluate: bool = True) -> dict:
    from safetensors.torch import save_file

    from examples.bytegpt.model import CTX

    print(f"corpus sha256 {corpus_digest()} ({len(TRAIN)} training files, {len(HELD_OUT)} held out)")
    t0 = time.perf_counter()
    model = train(steps)
    seconds = round(time.perf_counter() - t0, 1)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().half().contiguous() for k, v in model.state_dict().items()},
              str(out / "state_dict.safetensors"), metadata={"trained": f"{steps} steps on corpus sha256 {corpus_digest()}"})
    # one metadata key: safetensors writes several in no fixed order (equal tensors, different bytes)
    save_file({"ids": windows(stdlib_bytes(TRAIN), CTX, CALIB, seed=1)}, str(out / "calib.safetensors"))
    save_file({"ids": windows(stdlib_bytes(HELD_OUT), CTX, EVAL, seed=2)}, str(out / "heldout.safetensors"))
    report = {"train_seconds": seconds}
    if evaluate:
        from examples.bytegpt.evaluate import figures, load

        m, calib, held = load(out)
        report.update(figures(m, calib, held))
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--no-eval", action="store_true")
    a = ap.parse_args()
    for k, v in build(Path(a.out), a.steps, not a.no_eval).items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
