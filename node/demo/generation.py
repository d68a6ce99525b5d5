"""Parts 4 and 5 of `gpumesh demo run` (issue #14): text generation as a verifiable job.

4. the poster builds the byte GPT's generation program from its float weights (examples/bytegpt:
   int8, PROMPT_LEN-byte prompt window, GENERATE tokens generated greedily: a prefill and
   GENERATE - 1 decode steps, each attention reading the KV cache, every step's every element in
   the trace; exactly what `gpumesh program build --generate` writes), packs the prompts of
   examples/bytegpt/prompts.txt as byte tokens (`program inputs --text`), and posts the job; the
   honest worker runs it, the watchtower agrees, the window passes, the worker is paid; the poster
   verifies the outputs against the on-chain result root and prints prompt -> continuation;
5. a cheating worker flips ONE element inside the last layer's attention softmax of a LATER token
   (a decode step k >= 1), chosen by genflip so that the text changes (the smallest top-1/top-2
   logit margin, the flip that tips it furthest); its own outputs (consistent with its result root)
   show the changed text; the watchtower disputes, the bisection game descends to that softmax op
   of that decode step and to that element, the Int8Verifier recomputes it, the cheater is slashed.

Driven like the digits parts (story.Story's daemons, ticked in turn). Adapter-level orchestration.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from gpumesh.client.chain.deploy import repo_root
from gpumesh.client.chain.types import JobState
from gpumesh.client.core.game import slash_paid
from gpumesh.client.core.program import Program
from gpumesh.node.demo.genflip import FlipSearch, SoftmaxFlip, describe_op
from gpumesh.node.demo.report import GenerationFigures
from gpumesh.node.demo.story import DemoError, Story
from gpumesh.node.jobs.results import fetch_result
from gpumesh.node.runtime.files import load_program, load_units

PROMPT_LEN, GENERATE, UNIT_BATCH = 32, 8, 4
MODEL = "examples/bytegpt/model.py:gpt"  # as a poster names it to `program build --model`


def bytegpt_dir() -> Path:
    return repo_root() / "examples" / "bytegpt"


def build_generation_program(out: Path) -> Program:
    """The byte GPT's generation program, as `gpumesh program build --model MODEL --state-dict
    examples/bytegpt/state_dict.safetensors --calib examples/bytegpt/calib.safetensors --unit-batch
    UNIT_BATCH --generate GENERATE --prompt-len PROMPT_LEN --out OUT` writes it."""
    import importlib.util

    from gpumesh.node.runtime.export_generate import export_generation
    from gpumesh.node.runtime.files import read_tensors, save_program

    ex = bytegpt_dir()
    spec = importlib.util.spec_from_file_location("gpumesh_demo_bytegpt", ex / "model.py")
    models = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(models)  # the poster's OWN model code, run on the poster's machine
    model = models.gpt()
    model.load_state_dict(read_tensors(ex / "state_dict.safetensors", as_torch=True))
    calib = read_tensors(ex / "calib.safetensors", as_torch=True)["ids"].long()
    prog, arrays = export_generation(model.eval(), calib, UNIT_BATCH, GENERATE, PROMPT_LEN, meta={"model": MODEL})
    save_program(out, prog, arrays)
    return prog


def prompt_inputs(program: Path, prompts_file: Path, out: Path) -> list[bytes]:
    """The prompts (one per line, byte tokens) packed into units, as `program inputs --text`."""
    from gpumesh.node.runtime.evaluate import quantize_units
    from gpumesh.node.runtime.files import save_units
    from gpumesh.node.runtime.textgen import prompt_windows, read_prompts

    prompts = read_prompts(prompts_file.read_bytes())
    prog = load_program(program).program  # once: it reads the weights file too
    ids, _ = prompt_windows(prog, prompts)
    save_units(out, quantize_units(prog, ids))
    return prompts


def _show(b: bytes) -> str:
    return repr(b.decode("utf-8", errors="replace"))


def _byte(token: int) -> str:
    return repr(chr(token)) if token < 128 else f"0x{token:02x}"


class GenerationStory:
    def __init__(self, story: Story) -> None:
        self.s = story
        self.echo = story.echo
        self.r: GenerationFigures = story.report.generation
        self.search: FlipSearch | None = None  # the cheater's search (pick_flip), its executor reused

    # ------------------------------------------------------------------ 4. build + honest job
    def build(self) -> tuple[Path, Path, list[bytes]]:
        self.echo("\n== 4. text generation: the byte GPT as a job, prompts in, text out")
        program = self.s.cfg.work / "bytegpt-generate"
        prog = build_generation_program(program)
        r = self.r
        r.program_root, r.ops, r.weights = "0x" + prog.root().hex(), len(prog.ops), len(prog.weights)
        r.prompt_len, r.generate, r.unit_batch = PROMPT_LEN, GENERATE, UNIT_BATCH
        prefill = sum(1 for o in prog.ops if "@" not in o.name)
        self.echo(f"  poster: built the byte GPT's int8 generation program from its float weights "
                  f"(examples/bytegpt: 4 blocks, d 256, 4 heads): a {PROMPT_LEN}-byte prompt window, "
                  f"{GENERATE} bytes generated greedily")
        self.echo(f"  {r.ops:,} ops (the prefill {prefill}, then {GENERATE - 1} decode steps of "
                  f"{(r.ops - prefill) // (GENERATE - 1)}, each attention reading its KV cache), {r.weights} weight "
                  f"tensors, program root {r.program_root[:18]}…")
        inputs = self.s.cfg.work / "prompts.safetensors"
        prompts = prompt_inputs(program, bytegpt_dir() / "prompts.txt", inputs)
        r.prompts = [p.decode("utf-8", errors="replace") for p in prompts]
        r.units = -(-len(prompts) // UNIT_BATCH)
        self.echo(f"  poster: {len(prompts)} prompts (examples/bytegpt/prompts.txt, one per line, byte tokens) "
                  f"in {r.units} units of {UNIT_BATCH}")
        return program, inputs, prompts

    def honest(self, program: Path, inputs: Path, prompts: list[bytes]) -> None:
        s, r = self.s, self.r
        job = s.post(program, inputs, {"samples": len(prompts)})
        r.honest_job = job
        s.work_and_pay(job, lambda: f"generated {GENERATE} bytes for each prompt of {r.units} units")
        r.reward_withdrawn, r.honest_state = s._eth(s.cfg.reward), s._state(job).name
        r.honest_texts = self._texts(job)
        self.echo("  poster: outputs verified against the on-chain result root; generated text (prompt -> "
                  "continuation):")
        width = max(len(_show(p)) for p in prompts)
        for p, t in zip(prompts, r.honest_texts, strict=True):
            self.echo(f"    {_show(p):<{width}} -> {t!r}")
        s._print_balances("after the generation job")

    def _texts(self, job: int) -> list[str]:
        s = self.s
        res = fetch_result(s.store, s.market["poster"], s.market["poster"].get_job(job),
                           from_block=s.cfg.deployment.deploy_block)
        return res.texts() or []

    # ------------------------------------------------------------------ 5. the cheater
    def pick_flip(self, program: Path, inputs: Path, prompts: list[bytes]) -> SoftmaxFlip:
        bundle = load_program(program)
        self.search = FlipSearch(bundle, load_units(inputs, bundle.program), len(prompts))
        flip = self.search.find()
        if flip is None:
            raise DemoError("found no single softmax flip in a decode step that changes the generated text")
        self.r.flip = {**dataclasses.asdict(flip), "prompt": flip.unit * UNIT_BATCH + flip.row}
        return flip

    def cheat(self, program: Path, inputs: Path, prompts: list[bytes]) -> None:
        s, r = self.s, self.r
        d = r.dispute
        self.echo("\n== 5. a cheating worker flips one attention probability of a later token; caught and slashed")
        t = time.perf_counter()
        f = self.pick_flip(program, inputs, prompts)
        p = f.unit * UNIT_BATCH + f.row
        self.echo(f"  flip search ({time.perf_counter() - t:.1f}s): the smallest top-1 vs top-2 margin of the int8 "
                  f"logits over {len(prompts)} prompts x {GENERATE - 1} decode steps is prompt {p} "
                  f"({_show(prompts[p])}) at decode step {f.step} (generated byte {f.step + 1}): "
                  f"{_byte(f.honest_token)} leads {_byte(f.runner_up)} by {f.margin:,}")
        self.echo(f"  of the {f.tried} single flips of that step's last-layer softmax at that prompt's query row "
                  f"({f.heads} heads x {f.keys} keys), {f.changing} change the byte; the one that moves the "
                  f"logits most:")
        d.fault = f"unit {f.unit}, op {f.op} ({describe_op(self.search.prog, f.op)}), element {f.element}"
        d.first_wrong_op = f"op {f.op} ({f.op_name}, SOFTMAX)"
        self.echo(f"  cheater: will flip one element: {d.fault} = head {f.head}, key {f.key}: probability "
                  f"{f.weight}/256 -> {f.flipped}/256")
        s.registry["cheater"].stake(s.cfg.stake)
        self.echo(f"  cheater stakes {s._eth(s.cfg.stake)} ETH again (its stake was slashed in part 3)")
        before = s._snapshot("before the generation dispute")
        job = s.post(program, inputs, {"samples": len(prompts)})
        r.cheat_job = job
        cheater, tower = s.worker("cheater", f.fault), s.watchtower()
        try:
            s._until("the cheater's result", lambda: s._state(job) == JobState.SUBMITTED, cheater.node.tick)
            r.cheat_texts = self._texts(job)
            changed = [i for i, (a, b) in enumerate(zip(r.honest_texts, r.cheat_texts, strict=True)) if a != b]
            if not changed:
                raise DemoError("the cheater's flip did not change the generated text: nothing to dispute")
            self.echo("  cheater: claimed, executed with the flip and submitted; its outputs (consistent with its "
                      "on-chain result root) read:")
            for i in changed:
                self.echo(f"    prompt {i} {_show(prompts[i])}: honest {r.honest_texts[i]!r}, cheater "
                          f"{r.cheat_texts[i]!r}")
            s.dispute(job, d, tower, cheater)
        finally:
            cheater.close()
            tower.state.close()
        self._game_lines(f)
        refund, _ = s.market["poster"].withdraw()
        self.echo(f"  poster: withdrew the {s._eth(refund)} ETH refund of job {job}")
        after = s._snapshot("after the generation dispute")
        s._print_balances("after the generation dispute")
        lost = float(before["cheater"]["stake"]) - float(after["cheater"]["stake"])
        r.cheat_state = s._state(job).name
        self.echo(f"  cheater lost {lost:.4f} ETH of stake ({s._eth(slash_paid(s.cfg.stake))} ETH to the watchtower, "
                  f"the rest burned); state of job {job}: {r.cheat_state}")

    def _game_lines(self, f: SoftmaxFlip) -> None:
        """Where the game ended (from the chain), its moves, and what the one-step recomputed."""
        s, r = self.s, self.r
        d = r.dispute
        prog = self.search.prog
        if not 0 <= d.op < len(prog.ops):
            raise DemoError(f"game {d.game_id} ended at op {d.op}, outside the program's {len(prog.ops)} ops")
        d.op_name = prog.ops[d.op].name
        d.opcode = prog.ops[d.op].desc.opcode.name
        self.echo(f"  watchtower: re-executed, found unit {d.unit} wrong, opened game {d.game_id} with a "
                  f"{s._eth(s.cfg.bond)} ETH bond")
        row, rest = divmod(d.element, f.heads * f.keys)  # the softmax output is [batch, heads, 1, keys]
        head, key = divmod(rest, f.keys)
        self.echo(f"  game {d.game_id} path: unit {d.unit} (of {r.units}) -> op {d.op} (of {r.ops}: "
                  f"{describe_op(prog, d.op)}) -> element {d.element} (prompt row {row}, head {head}, key {key})")
        line = "  moves (gas):"
        for m in d.moves:  # unit descent, trace commitment, op descent, op proof, leaf, one-step
            item = f" {m['by']} {m['move']} {m['gas']:,};"
            if len(line) + len(item) > 110:
                self.echo(line)
                line = "   "
            line += item
        self.echo(line.rstrip(";"))
        step = next((m for m in d.moves if m["move"] == "step"), None)
        if step is None or d.opcode != "SOFTMAX":
            raise DemoError(f"game {d.game_id} did not end in a one-step of a softmax ({d.op_name}, {d.reason})")
        # int8 probabilities (scale 1/256, zero point -128): the cheater's value is its leaf's byte
        # at the element; the honest one, the op output the one-step recomputes from the scores row
        leaf = bytes.fromhex(step["leaf"])
        r.claimed = int.from_bytes(leaf[d.element % len(leaf):][:1], "little", signed=True) + 128
        honest = self.search.ex.op_outputs(self.search.units[d.unit], [d.op])[d.op]
        r.honest_value = int.from_bytes(honest[d.element:d.element + 1], "little", signed=True) + 128
        self.echo(f"  game {d.game_id}: {d.outcome} ({d.reason}) after {d.moves_worker} worker and "
                  f"{d.moves_challenger} challenger moves; the contract's one-step recomputed softmax element "
                  f"{d.element} from its row of {prog.ops[d.op].desc.out.shape[-1]} scores: {r.honest_value}/256, "
                  f"where the cheater's leaf says {r.claimed}/256")
        self.echo(f"  dispute gas: {d.gas_total:,} total, largest move {d.gas_max_move:,}, one-step {d.gas_step:,}; "
                  f"wall time {d.wall_seconds:.1f}s")


def run_generation(story: Story) -> None:
    g = GenerationStory(story)
    program, inputs, prompts = story._timed("generation build", g.build)
    story._timed("generation job", lambda: g.honest(program, inputs, prompts))
    story._timed("generation cheat", lambda: g.cheat(program, inputs, prompts))
