"""GPU check: the int8 executor gives the same bits on CUDA as on CPU, and how fast it is.

    python bench/gpu_check.py            (from the repo root; exit 1 on any mismatch, 2 if no CUDA)
    python bench/gpu_check.py --cpu-dry-run   (no GPU: every path below runs with CPU on both sides,
                                               so the script and its cases are exercised; compares nothing)

1. Random single-op cases of every opcode, the chunked reductions 0x0B-0x0E included (edge values,
   extreme quantization parameters): CUDA output bytes == CPU output bytes (CPU is proven equal to
   the scalar reference by the tests). Then the two chunked models of docs/protocol.md 5.7.7 (an
   argmax over 131,072 logits, a global avgpool over 128x128x256): every op output identical.
2. The digits MLP and CNN (examples/digits) and a larger random CNN (exported here): every op output
   of one traced unit byte-identical on CUDA and CPU, and the result root over all units identical.
3. Speed: the int8 executor on CUDA vs torch fp16 eager (and fp32 eager) on the same float model and
   batch, measured in this run.
4. Where Triton imports: 1 and 2 (digits) again with GPUMESH_NO_TRITON=1, so the torch requant and
   add paths that Triton replaces are verified on the same GPU.
5. Transformer programs (issue #14): the ViT digits program (examples/vit_digits), the byte GPT's
   next-byte program and its text-generation program (prefill + decode steps with KV caches in the
   trace; examples/bytegpt, exported here), and the GPT-2-small shape (examples/gpt2_shape, built
   here: d 768, 12 layers, vocabulary 50,257), and a tiny Llama-style model (rotary positions,
   grouped-query attention, RMSNorm, SwiGLU) as next-byte and generation programs: every op output
   of one traced unit identical on CUDA and CPU, and the result roots identical. Speed: the ViT and the byte GPT's prefill (context 256)
   on the int8 executor vs fp16 eager on the same float model, at a batch that fills the GPU.

Needs torch, numpy, safetensors and this repository (gpumesh need not be installed: the repo is put
on sys.path, and a pure-Python keccak stands in if safe-pysha3 is missing). Runs in < 3 minutes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _bootstrap() -> None:
    """Make `gpumesh.*` importable from a bare checkout (the package maps gpumesh.client -> client/)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    if importlib.util.find_spec("gpumesh") is None:
        pkg = types.ModuleType("gpumesh")
        pkg.__path__ = [str(REPO)]
        sys.modules["gpumesh"] = pkg
    if importlib.util.find_spec("sha3") is None:
        _install_keccak_shim()


def _install_keccak_shim() -> None:
    """sha3.keccak_256 stand-in (pure Python keccak-f[1600]); only the output roots use it."""
    rc = [0x1, 0x8082, 0x800000000000808A, 0x8000000080008000, 0x808B, 0x80000001, 0x8000000080008081,
          0x8000000000008009, 0x8A, 0x88, 0x80008009, 0x8000000A, 0x8000808B, 0x800000000000008B,
          0x8000000000008089, 0x8000000000008003, 0x8000000000008002, 0x8000000000000080, 0x800A,
          0x800000008000000A, 0x8000000080008081, 0x8000000000008080, 0x80000001, 0x8000000080008008]
    rot = [[0, 36, 3, 41, 18], [1, 44, 10, 45, 2], [62, 6, 43, 15, 61], [28, 55, 25, 21, 56], [27, 20, 39, 8, 14]]
    m64 = (1 << 64) - 1

    def f(a):
        for r in range(24):
            c = [a[x][0] ^ a[x][1] ^ a[x][2] ^ a[x][3] ^ a[x][4] for x in range(5)]
            d = [c[(x - 1) % 5] ^ (((c[(x + 1) % 5] << 1) | (c[(x + 1) % 5] >> 63)) & m64) for x in range(5)]
            a = [[a[x][y] ^ d[x] for y in range(5)] for x in range(5)]
            b = [[0] * 5 for _ in range(5)]
            for x in range(5):
                for y in range(5):
                    v, n = a[x][y], rot[x][y]
                    b[y][(2 * x + 3 * y) % 5] = ((v << n) | (v >> (64 - n))) & m64 if n else v
            a = [[b[x][y] ^ ((~b[(x + 1) % 5][y]) & b[(x + 2) % 5][y]) for y in range(5)] for x in range(5)]
            a[0][0] ^= rc[r]
        return a

    def keccak256(data: bytes) -> bytes:
        rate = 136
        p = bytearray(data) + b"\x01" + bytes((-len(data) - 1) % rate)
        p[-1] |= 0x80
        a = [[0] * 5 for _ in range(5)]
        for off in range(0, len(p), rate):
            blk = p[off : off + rate]
            for i in range(rate // 8):
                a[i % 5][i // 5] ^= int.from_bytes(blk[8 * i : 8 * i + 8], "little")
            a = f(a)
        return b"".join(a[i % 5][i // 5].to_bytes(8, "little") for i in range(4))

    class _H:
        def __init__(self, data: bytes = b"") -> None:
            self.d = bytes(data)

        def update(self, data: bytes) -> None:
            self.d += bytes(data)

        def digest(self) -> bytes:
            return keccak256(self.d)

    mod = types.ModuleType("sha3")
    mod.keccak_256 = _H
    mod.__gpumesh_shim__ = True
    sys.modules["sha3"] = mod
    assert keccak256(b"").hex().startswith("c5d2460186f7233c"), "keccak shim self-test"


_bootstrap()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from gpumesh.client.core.ops.types import Opcode  # noqa: E402
from gpumesh.node.runtime import gpu_requant, kernels, kernels_cpu  # noqa: E402
from gpumesh.node.runtime.executor import Executor  # noqa: E402
from gpumesh.node.runtime.export import export_model  # noqa: E402
from gpumesh.node.runtime.files import ProgramBundle, canonical_bytes, load_program, load_units  # noqa: E402
from gpumesh.node.runtime.randprog import random_case  # noqa: E402

FAILS: list[str] = []


def check(ok: bool, what: str) -> None:
    if not ok:
        FAILS.append(what)


def torch_paths(ex_dir: Path) -> list[str]:
    """The CUDA torch paths that Triton replaces when it imports (the all-int32 and int64 requant
    and add forms): the random single ops and the digits programs again with GPUMESH_NO_TRITON=1."""
    import os

    before = len(FAILS)
    os.environ["GPUMESH_NO_TRITON"] = "1"
    try:
        lines = [random_ops().replace(f"mismatches {len(FAILS)}", f"mismatches {len(FAILS) - before}")]
        for name in ("mlp", "cnn"):
            b = load_program(ex_dir / name)
            units = load_units(ex_dir / "data" / f"test_inputs_{name}.safetensors", b.program)
            lines.append(compare_program(f"digits {name}", b, units))
    finally:
        del os.environ["GPUMESH_NO_TRITON"]
    return [f"Triton off: {x}" for x in lines]


#: "cuda", or "cpu" for --cpu-dry-run (both sides on the CPU: the script runs, nothing is compared).
DEVICE = "cuda"


@contextlib.contextmanager
def _other_side():
    """Ops prepared for the compared side: on CUDA as they are; in the dry run (CPU on both sides)
    with the torch forms instead of the fused CPU kernels (kernels_cpu), so that the dry run
    compares the two CPU implementations bit for bit."""
    if DEVICE != "cpu":
        yield
        return
    kernels_cpu.force(False)
    try:
        yield
    finally:
        kernels_cpu.force(None)


def random_ops(n_per_op: int = 40) -> str:
    rng = np.random.default_rng(1234)

    def draw(lo, hi):
        return int(rng.integers(lo, hi + 1))

    n = 0
    for op in Opcode:
        for _ in range(n_per_op):
            c = random_case(draw, op, max_dim=9, max_k=1500)
            cpu = kernels.run_op(c.desc, [torch.from_numpy(np.array(a)) for a in c.inputs])
            with _other_side():
                gpu = kernels.run_op(c.desc, [torch.from_numpy(np.array(a)).to(DEVICE) for a in c.inputs]).cpu()
            same = cpu.dtype == gpu.dtype and torch.equal(cpu, gpu)
            check(same, f"random {op.name} case differs ({dict(c.desc.attrs)}, out {c.desc.out}, "
                        f"{int((cpu != gpu.to(cpu.dtype)).sum()) if cpu.shape == gpu.shape else 'shape'} elements)")
            n += 1
    return f"random single-op cases: {n} (all {len(Opcode)} opcodes), mismatches {len(FAILS)}"


class BigCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        c = [3, 64, 128, 256]
        self.c1, self.b1 = nn.Conv2d(c[0], c[1], 3, padding=1), nn.BatchNorm2d(c[1])
        self.c2, self.b2 = nn.Conv2d(c[1], c[2], 3, padding=1), nn.BatchNorm2d(c[2])
        self.pool = nn.MaxPool2d(2)
        self.c3, self.b3 = nn.Conv2d(c[2], c[2], 3, padding=1), nn.BatchNorm2d(c[2])
        self.c4, self.b4 = nn.Conv2d(c[2], c[3], 3, stride=2, padding=1), nn.BatchNorm2d(c[3])
        self.gap, self.flat, self.fc = nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c[3], 100)
        self.r1, self.r2, self.r3, self.r4 = nn.ReLU(), nn.ReLU(), nn.ReLU(), nn.ReLU()

    def forward(self, x):
        x = self.pool(self.r2(self.b2(self.c2(self.r1(self.b1(self.c1(x)))))))
        x = self.r3(x + self.b3(self.c3(x)))
        return self.fc(self.flat(self.gap(self.r4(self.b4(self.c4(x))))))


def compare_program(name: str, bundle: ProgramBundle, units: np.ndarray) -> str:
    cpu = Executor(bundle, "cpu")
    with _other_side():
        gpu = Executor(bundle, DEVICE)
    # every op output of unit 0, compared byte for byte (stronger than comparing their roots, and
    # no hashing of megabytes when the pure-Python keccak stands in)
    with torch.inference_mode():
        oc = cpu._forward(cpu._to_device(units[0]), keep=True)
        og = gpu._forward(gpu._to_device(units[0]), keep=True)
    same_ops = sum(a.dtype == b.dtype and torch.equal(a, b.cpu()) for a, b in zip(oc, og, strict=True))
    check(same_ops == len(oc), f"{name}: traced op outputs differ")
    rc, rg = cpu.run(units), gpu.run(units)
    check(rc.result_root == rg.result_root, f"{name}: result roots differ")
    return (f"{name}: {len(units)} units, op outputs of unit 0 identical {same_ops}/{len(oc)}, "
            f"result root cpu {rc.result_root.hex()[:16]} {DEVICE} {rg.result_root.hex()[:16]} "
            f"{'SAME' if rc.result_root == rg.result_root else 'DIFFERENT'} ({DEVICE}: {gpu.rows} rows per pass, "
            f"CUDA graphs {'yes' if gpu._graphs else 'no'})")


def _time(fn, reps: int) -> float:
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps


def speed(name: str, model: nn.Module, bundle: ProgramBundle, xf: torch.Tensor, units: np.ndarray,
          reps: int = 20) -> str:
    """One unit: the executor's eager forward and its CUDA-graph pass vs fp16/fp32 eager on the same
    batch; then a full pass of the executor (ex.rows rows, several units) vs fp16 eager on as many
    rows."""
    ex = Executor(bundle, "cuda")
    unit = torch.from_numpy(np.ascontiguousarray(units[0])).cuda()
    with torch.inference_mode():
        t_eager = _time(lambda: ex._forward(unit, keep=False), reps)
        t_graph = _time(lambda: ex._pass(unit), reps)
    graphs = "yes" if ex._graphs else "no (eager fallback)"
    m16 = model.to("cuda").half().eval()
    x16 = xf[: units.shape[1]].to("cuda").half()
    rows = ex.rows
    big_x = torch.randint(-128, 128, (rows, *units.shape[2:]), dtype=torch.int8, device="cuda")
    big16 = torch.randn(rows, *xf.shape[1:], device="cuda").half()
    with torch.inference_mode():
        t_fp16 = _time(lambda: m16(x16), reps)
        t_big = _time(lambda: ex._pass(big_x), max(3, reps // 4))
        t_big16 = _time(lambda: m16(big16), max(3, reps // 4))
        m32 = model.float()
        x32 = x16.float()
        t_fp32 = _time(lambda: m32(x32), reps)
    model.cpu().float()
    return (f"{name} speed, batch {units.shape[1]}: int8 executor eager {1e3 * t_eager:.2f} ms, as a CUDA graph "
            f"{1e3 * t_graph:.2f} ms (graphs: {graphs}), fp16 eager {1e3 * t_fp16:.2f} ms, fp32 eager "
            f"{1e3 * t_fp32:.2f} ms -> int8/fp16 speed ratio {t_fp16 / t_graph:.2f}x (eager {t_fp16 / t_eager:.2f}x); "
            f"one pass of {rows} rows: int8 {1e3 * t_big:.2f} ms, fp16 eager {1e3 * t_big16:.2f} ms -> "
            f"{t_big16 / t_big:.2f}x")


class GlobalPool(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gap, self.flat = nn.AdaptiveAvgPool2d(1), nn.Flatten()

    def forward(self, x):
        return self.flat(self.gap(x))


def chunked_models() -> list[str]:
    """The chunked reductions on model-sized tensors: a 16 -> 131,072 linear head with its argmax
    (chunkmax + pairargmax) and a global avgpool over [128, 128, 256] (chunksum + sumrequant)."""
    torch.manual_seed(0)
    lines = []
    for name, model, calib, batch in (
        ("argmax over 131,072 logits", nn.Sequential(nn.Linear(16, 131072)), torch.randn(32, 16), 4),
        ("global avgpool 128x128x256", GlobalPool(), torch.randn(2, 256, 128, 128), 1),
    ):
        prog, arrays = export_model(model, calib, unit_batch=batch)
        bundle = ProgramBundle(prog, {w.name: canonical_bytes(arrays[w.name], w.type) for w in prog.weights}, arrays)
        units = np.random.default_rng(7).integers(-128, 128, (2, *prog.input.type.shape)).astype(np.int8)
        ops = "+".join(o.desc.opcode.name.lower() for o in prog.ops)
        lines.append(compare_program(f"{name} ({ops})", bundle, units))
    return lines


def _bundle(prog, arrays) -> ProgramBundle:
    return ProgramBundle(prog, {w.name: canonical_bytes(arrays[w.name], w.type) for w in prog.weights}, arrays)


def transformer_programs(full: bool) -> list[str]:
    """Section 5: the ViT, the byte GPT (next byte and text generation) and the GPT-2-small shape,
    op outputs and result roots on DEVICE against the CPU; speed on CUDA (full=False, the dry run:
    a 1-layer GPT-2 shape of the tiny preset, 2 generated tokens, no speed)."""
    from examples.bytegpt.evaluate import load as load_bytegpt
    from examples.gpt2_shape import build as gpt2
    from examples.vit_digits.models import vit
    from gpumesh.node.runtime.export_generate import export_generation
    from gpumesh.node.runtime.files import read_tensors
    from gpumesh.node.runtime.textgen import prompt_windows

    lines = []
    vdir = REPO / "examples" / "vit_digits"
    vb = load_program(vdir / "vit")
    vunits = load_units(vdir / "test_inputs.safetensors", vb.program)
    lines.append(compare_program("ViT digits", vb, vunits))
    if full:
        vm = vit()
        vm.load_state_dict(read_tensors(vdir / "vit" / "state_dict.safetensors", as_torch=True))
        xf = read_tensors(REPO / "examples" / "digits" / "data" / "test_float.safetensors", as_torch=True)
        xf = next(iter(xf.values())).float()
        lines.append(speed("ViT digits", vm.eval(), vb, xf, vunits))

    model, calib, held = load_bytegpt(REPO / "examples" / "bytegpt")
    prog, arrays = export_model(model, calib, unit_batch=8)  # the next byte after 256 bytes, 8 per unit
    nb = _bundle(prog, arrays)
    nunits = (held[:16].numpy().astype(np.int16) - 128).astype(np.int8).reshape(2, 8, -1)
    lines.append(compare_program("byte GPT next byte (ctx 256)", nb, nunits))
    if full:
        lines.append(token_speed("byte GPT prefill (ctx 256)", model, nb))
    gen = 8 if full else 2
    gprog, garrays = export_generation(model, calib, unit_batch=4, generate=gen)
    gb = _bundle(gprog, garrays)
    prompts = [bytes(r.tolist()) for r in held[:8, : 256 - gen + 1].to(torch.uint8)]
    ids, _ = prompt_windows(gprog, prompts)
    gunits = (ids - 128).astype(np.int8).reshape(-1, *gprog.input.type.shape)
    lines.append(compare_program(f"byte GPT generation ({gen} tokens, {len(gprog.ops)} ops)", gb, gunits))

    c = gpt2.PRESETS["small"] if full else gpt2.PRESETS["tiny"].with_layers(1)
    b2 = gpt2.bundle(c)
    lines.append(compare_program(f"GPT-2 shape (d {c.d}, {c.layers} layers, vocab {c.vocab}, "
                                 f"{len(b2.program.ops)} ops)", b2, gpt2.units(c, 1)))
    return lines + llama_style(full)


class LlamaStyle(nn.Module):
    """A tiny Llama-style byte model for section 5: RMSNorm, rotary q and k (HF's inv_freq form,
    rotate-half), grouped-query attention (2 kv heads for 4 query heads, transformers' repeat_kv),
    SDPA causal, SwiGLU, tied-free LM head; seeded random weights (the export paths of rope and GQA,
    docs/protocol.md 2.6)."""

    def __init__(self, d: int = 64, heads: int = 4, kv: int = 2, layers: int = 2) -> None:
        super().__init__()
        self.h, self.kv, self.dh = heads, kv, d // heads
        self.emb, self.head = nn.Embedding(256, d), nn.Linear(d, 256, bias=False)
        self.norms = nn.ModuleList(nn.RMSNorm(d) for _ in range(2 * layers + 1))
        self.q = nn.ModuleList(nn.Linear(d, d, bias=False) for _ in range(layers))
        self.k = nn.ModuleList(nn.Linear(d, kv * self.dh, bias=False) for _ in range(layers))
        self.v = nn.ModuleList(nn.Linear(d, kv * self.dh, bias=False) for _ in range(layers))
        self.o = nn.ModuleList(nn.Linear(d, d, bias=False) for _ in range(layers))
        self.gate = nn.ModuleList(nn.Linear(d, 2 * d, bias=False) for _ in range(layers))
        self.up = nn.ModuleList(nn.Linear(d, 2 * d, bias=False) for _ in range(layers))
        self.down = nn.ModuleList(nn.Linear(2 * d, d, bias=False) for _ in range(layers))
        self.register_buffer("inv_freq", 1.0 / 10000 ** (torch.arange(0, self.dh, 2).float() / self.dh),
                             persistent=False)

    @staticmethod
    def _rot(x):
        h = x.shape[-1] // 2
        return torch.cat((-x[..., h:], x[..., :h]), dim=-1)

    def forward(self, idx):
        import torch.nn.functional as F

        b, t = idx.shape
        freqs = torch.outer(torch.arange(t, dtype=torch.float32), self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        x = self.emb(idx)
        for i in range(len(self.q)):
            y = self.norms[2 * i](x)
            q = self.q[i](y).view(b, t, self.h, self.dh).transpose(1, 2)
            k = self.k[i](y).view(b, t, self.kv, self.dh).transpose(1, 2)
            v = self.v[i](y).view(b, t, self.kv, self.dh).transpose(1, 2)
            q, k = q * cos + self._rot(q) * sin, k * cos + self._rot(k) * sin
            n = self.h // self.kv
            k = k[:, :, None, :, :].expand(b, self.kv, n, t, self.dh).reshape(b, self.h, t, self.dh)
            v = v[:, :, None, :, :].expand(b, self.kv, n, t, self.dh).reshape(b, self.h, t, self.dh)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.o[i](a.transpose(1, 2).reshape(b, t, -1))
            y = self.norms[2 * i + 1](x)
            x = x + self.down[i](F.silu(self.gate[i](y)) * self.up[i](y))
        return self.head(self.norms[-1](x))


def llama_style(full: bool) -> list[str]:
    """The Llama-style model's next-byte and text-generation programs (rope and GQA lowered by the
    export) on DEVICE against the CPU."""
    from examples.bytegpt.evaluate import load as load_bytegpt
    from gpumesh.node.runtime.export_generate import export_generation

    torch.manual_seed(5)
    model = LlamaStyle().eval()
    _, calib, held = load_bytegpt(REPO / "examples" / "bytegpt")
    ctx = 32
    prog, arrays = export_model(model, calib[:, :ctx], unit_batch=4)
    ops = [o.desc.opcode for o in prog.ops]
    check(ops.count(Opcode.ROPE) == 4, "Llama-style: the export gave no rope ops")
    units = (held[:8, :ctx].numpy().astype(np.int16) - 128).astype(np.int8).reshape(2, 4, ctx)
    lines = [compare_program(f"Llama-style (rope, GQA 4/2, RMSNorm, SwiGLU; {len(prog.ops)} ops)",
                             _bundle(prog, arrays), units)]
    gen = 6 if full else 2
    gprog, garrays = export_generation(model, calib[:, :ctx], unit_batch=4, generate=gen)
    gunits = (held[:8, : ctx - gen + 1].numpy().astype(np.int16) - 128).astype(np.int8).reshape(2, 4, -1)
    lines.append(compare_program(f"Llama-style generation ({gen} tokens, {len(gprog.ops)} ops)",
                                 _bundle(gprog, garrays), gunits))
    return lines


def token_speed(name: str, model: nn.Module, bundle: ProgramBundle, reps: int = 10) -> str:
    """A token program's full pass (the executor's rows per pass, several units of sequences) vs fp16
    eager on as many sequences (the LM head on the last position, as the program)."""
    ex = Executor(bundle, "cuda")
    t = bundle.program.input.type
    x = torch.randint(-128, 128, (ex.rows, *t.shape[1:]), dtype=torch.int8, device="cuda")
    ids = (x.to(torch.int64) + 128)
    m16 = model.to("cuda").half().eval()
    with torch.inference_mode():
        t_int8 = _time(lambda: ex._pass(x), reps)
        t_fp16 = _time(lambda: m16(ids)[:, -1].argmax(-1), reps)
    model.cpu().float()
    return (f"{name} speed, {ex.rows} sequences per pass: int8 {1e3 * t_int8:.2f} ms, fp16 eager "
            f"{1e3 * t_fp16:.2f} ms -> int8/fp16 {t_fp16 / t_int8:.2f}x")


def dry_run() -> int:
    """--cpu-dry-run: the random single ops, the chunked models and the transformer programs (small
    sizes) with the CPU on both sides."""
    global DEVICE
    DEVICE = "cpu"
    t0 = time.perf_counter()
    print("gpu_check --cpu-dry-run: CPU against CPU, the fused CPU kernels against the torch forms "
          f"(fused: {'yes' if kernels_cpu.enabled() else 'no, numba missing or off'}; proves nothing about CUDA)")
    for line in [random_ops(10), *chunked_models(), *transformer_programs(full=False)]:
        print("  " + line, flush=True)
    print(f"gpu_check dry run: {'FAIL' if FAILS else 'OK'} in {time.perf_counter() - t0:.0f} s")
    return 1 if FAILS else 0


def main() -> int:
    t0 = time.perf_counter()
    if "--cpu-dry-run" in sys.argv:
        return dry_run()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device")
        return 2
    print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, cuda {torch.version.cuda}, "
          f"_int_mm {'yes' if hasattr(torch, '_int_mm') else 'no'}, "
          f"Triton requant {'yes' if gpu_requant.available() else 'no'}", flush=True)
    print(f"  keccak: {'pure-Python stand-in' if hasattr(sys.modules.get('sha3'), '__gpumesh_shim__') else 'safe-pysha3'}", flush=True)
    lines = [random_ops()]
    print("  " + lines[-1], flush=True)
    ex_dir = REPO / "examples" / "digits"
    for name in ("mlp", "cnn"):
        b = load_program(ex_dir / name)
        units = load_units(ex_dir / "data" / f"test_inputs_{name}.safetensors", b.program)
        lines.append(compare_program(f"digits {name}", b, units))
        print("  " + lines[-1], flush=True)
    for line in chunked_models():
        lines.append(line)
        print("  " + line, flush=True)
    torch.manual_seed(0)
    big = BigCNN().eval()
    calib = torch.randn(64, 3, 32, 32)
    prog, arrays = export_model(big, calib, unit_batch=128)
    bundle = ProgramBundle(prog, {w.name: canonical_bytes(arrays[w.name], w.type) for w in prog.weights}, arrays)
    xf = torch.randn(4 * 128, 3, 32, 32)
    scale = prog.meta["input_scale"]
    units = np.clip(np.rint(xf.numpy() / scale), -128, 127).astype(np.int8).reshape(4, 128, 3, 32, 32)
    lines.append(compare_program("random CNN (3x32x32, 4 convs, 128/unit)", bundle, units))
    print("  " + lines[-1], flush=True)
    lines.append(speed("random CNN", big, bundle, xf, units))
    print("  " + lines[-1], flush=True)
    for line in transformer_programs(full=True):
        lines.append(line)
        print("  " + line, flush=True)
    if gpu_requant.available():
        for line in torch_paths(ex_dir):
            lines.append(line)
            print("  " + line, flush=True)
    if kernels._INT_MM_OK.get("cuda") is False:
        print("  note: torch._int_mm refused on CUDA; the exact float64 fallback was used")
    print(f"gpu_check: {'FAIL' if FAILS else 'OK'} in {time.perf_counter() - t0:.0f} s"
          + (f" ({len(FAILS)} mismatches: {FAILS[:5]})" if FAILS else ""))
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
