"""`gpumesh program` commands: build (export a float model to an int8 program), check (list the
layers the op set cannot express), run (execute an inputs file locally and print the result root),
show (the program's commitments and ops).

Heavy libraries (torch, numpy, safetensors) are imported inside the commands only.
"""

from __future__ import annotations

import json

import typer

from gpumesh.client.core.errors import UsageError, ValidationError

app = typer.Typer(help="Build, inspect and run int8 tensor programs.", no_args_is_help=True)


def _load_factory(spec: str):
    """`path/to/file.py:factory` or `package.module:factory` -> the callable. The poster's OWN code,
    run locally to build a program; workers never receive it."""
    import importlib
    import importlib.util
    from pathlib import Path

    if ":" not in spec:
        raise UsageError("--model takes FILE.py:FACTORY or MODULE:FACTORY")
    mod_name, attr = spec.rsplit(":", 1)
    # the model file's own folder and the current folder are on the import path, as for `python
    # FILE.py` and `python -m`, so a model file can import its project's modules
    import sys

    for folder in (str(Path.cwd()), *((str(Path(mod_name).resolve().parent),) if mod_name.endswith(".py") else ())):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    try:
        if mod_name.endswith(".py"):
            path = Path(mod_name)
            if not path.is_file():
                raise UsageError(f"{path}: no such model file")
            s = importlib.util.spec_from_file_location(f"_gpumesh_model_{path.stem}", path)
            mod = importlib.util.module_from_spec(s)
            s.loader.exec_module(mod)
        else:
            mod = importlib.import_module(mod_name)
    except (ImportError, SyntaxError) as e:
        where = f" ({e.filename}, line {e.lineno})" if isinstance(e, SyntaxError) else ""
        raise UsageError(f"--model {spec}: importing {mod_name} failed: {type(e).__name__}: {e.msg if isinstance(e, SyntaxError) else e}"
                         f"{where} (the model file's folder and the current folder are on the import path)") from None
    if not hasattr(mod, attr):
        raise UsageError(f"{mod_name} has no {attr!r}")
    return getattr(mod, attr)


def _load_st(path: str) -> dict:
    """A safetensors file as {name: torch tensor} (files.read_tensors: never pickle); a missing file
    is a usage error here (a path the user typed)."""
    import os

    from gpumesh.node.runtime.files import read_tensors

    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such file")
    with open(path, "rb") as fh:
        head = fh.read(9)
    # safetensors: an 8-byte little-endian header length, then the JSON header's "{" (a length of
    # 128 mod 256 starts with 0x80, a pickle's first byte: the "{" tells them apart)
    is_st = len(head) == 9 and head[8:9] == b"{"
    if not is_st and (head[:4] == b"PK\x03\x04" or head[:1] == b"\x80"):  # torch.save's zip or a raw pickle
        out = os.path.splitext(path)[0] + ".safetensors"
        raise UsageError(
            f"{path} is a PyTorch pickle (torch.save); gpumesh reads safetensors only (a pickle can run code). "
            f"Convert it once, on a machine where you trust the file: python -c \"import torch; "
            f"from safetensors.torch import save_file; sd = torch.load('{path}', weights_only=True); "
            f"save_file({{k: v.contiguous().clone() for k, v in sd.items()}}, '{out}')\"")
    return read_tensors(path, as_torch=True)


def _tensor(path: str, key: str | None):
    t = _load_st(path)
    if key is None:
        if len(t) != 1:
            raise UsageError(f"{path} holds {sorted(t)}: name one with its --*-key option")
        return next(iter(t.values()))
    if key not in t:
        raise UsageError(f"{path} has no tensor {key!r}")
    return t[key]


def _model_with_weights(model: str, state_dict: str):
    m = _load_factory(model)()
    try:
        m.load_state_dict(_load_st(state_dict))
    except RuntimeError as exc:  # torch lists missing/unexpected keys and shape mismatches, one per line
        detail = "; ".join(line.strip() for line in str(exc).splitlines()[1:3]) or str(exc)
        raise ValidationError(f"{state_dict} does not fit {model}: {detail}") from None
    return m.eval()


def _samples(path: str, key: str | None):
    """Float samples, or integer token ids (a token program) as they are."""
    x = _tensor(path, key)
    return x.float() if x.is_floating_point() else x.long()


@app.command("build")
def build(
    model: str = typer.Option(..., "--model", help="FILE.py:FACTORY or MODULE:FACTORY returning the nn.Module."),
    state_dict: str = typer.Option(..., "--state-dict", help="Float weights (safetensors state_dict)."),
    calib: str = typer.Option(..., "--calib", help="Calibration samples [S, ...] (safetensors): float, or integer "
                              "token ids in [0, 256) for a token program."),
    out: str = typer.Option(..., "--out", help="Program folder to write."),
    unit_batch: int = typer.Option(32, "--unit-batch", help="Samples per unit (the program input's first dim)."),
    argmax: bool = typer.Option(True, "--argmax/--logits", help="Output class indices (int32) or int8 logits."),
    eval_data: str = typer.Option(None, "--eval", help="Held-out samples (safetensors) to report accuracy (token "
                                  "windows [S, T]: next-token accuracy and int8/float agreement, no labels)."),
    eval_labels: str = typer.Option(None, "--labels", help="Labels for --eval (safetensors int tensor or JSON list)."),
    calib_key: str = typer.Option(None, "--calib-key"),
    generate: int = typer.Option(None, "--generate", min=1, help="A text-generation program: N tokens generated "
                                 "greedily after each prompt (prefill + N - 1 decode steps with a KV cache)."),
    prompt_len: int = typer.Option(None, "--prompt-len", min=1, help="With --generate: the prompt window P "
                                   "(default: the --calib windows' length - N + 1)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Export a float PyTorch model to an int8 program (per-channel weights, per-tensor activations)."""
    import torch

    from gpumesh.node.runtime.evaluate import int8_predictions
    from gpumesh.node.runtime.export import export_model
    from gpumesh.node.runtime.files import load_program, save_program

    if prompt_len is not None and generate is None:
        raise UsageError("--prompt-len needs --generate")
    if generate is not None and not argmax:
        raise UsageError("--generate needs an argmax program (drop --logits)")
    m = _model_with_weights(model, state_dict)
    if generate is not None:
        from gpumesh.node.runtime.export_generate import export_generation

        prog, arrays = export_generation(m, _samples(calib, calib_key), unit_batch, generate, prompt_len,
                                         meta={"model": model})
    else:
        prog, arrays = export_model(m, _samples(calib, calib_key), unit_batch, argmax=argmax, meta={"model": model})
    save_program(out, prog, arrays)
    report = {"program": out, "program_root": "0x" + prog.root().hex(), "ops": len(prog.ops),
              "weights": len(prog.weights)}
    if generate is not None:
        report.update({"task": "text-generation", "prompt_len": prog.meta["prompt_len"], "generate": generate})
        if eval_data:
            report.update(_generation_report(m, load_program(out), _samples(eval_data, None)))
    elif eval_data and prog.meta.get("input_kind") == "tokens":
        report.update(_token_report(m, load_program(out), _samples(eval_data, None)))
    elif eval_data:
        if not (eval_labels and argmax):
            raise UsageError("--eval needs --labels and an argmax program")
        xe = _tensor(eval_data, None).float()
        y = _load_labels(eval_labels)
        with torch.no_grad():
            report["float_accuracy"] = float((m(xe).argmax(1).numpy() == y).mean())
        report["int8_accuracy"] = float((int8_predictions(load_program(out), xe.numpy()) == y).mean())
    if as_json:
        typer.echo(json.dumps(report))
    else:
        for k, v in report.items():
            typer.echo(f"{k}: {v}")


def _token_report(m, bundle, ids) -> dict:
    """Greedy next token at every position: float vs int8 agreement, and each one's accuracy at
    predicting the next id of the held-out windows."""
    import torch

    from gpumesh.node.runtime.evaluate import quantize_units
    from gpumesh.node.runtime.executor import Executor

    got = Executor(bundle).run(quantize_units(bundle.program, ids.numpy())).outputs
    got = torch.from_numpy(got.reshape(-1, *ids.shape[1:])[: len(ids)].astype("int64"))
    with torch.no_grad():
        want = torch.cat([m(ids[i : i + 64]).argmax(-1) for i in range(0, len(ids), 64)])
    nxt = ids[:, 1:]
    return {"next_token_agreement": round(float((got == want).double().mean()), 4),
            "float_next_token_accuracy": round(float((want[:, :-1] == nxt).double().mean()), 4),
            "int8_next_token_accuracy": round(float((got[:, :-1] == nxt).double().mean()), 4)}


def _generation_report(m, bundle, ids) -> dict:
    """Greedy generation from the first P tokens of each held-out window: int8 program vs the
    float model, the share of generated tokens that agree and of prompts whose first token does."""
    import numpy as np
    import torch

    from gpumesh.node.runtime.evaluate import quantize_units
    from gpumesh.node.runtime.executor import Executor

    p, n = bundle.program.meta["prompt_len"], bundle.program.meta["generate"]
    if ids.dim() != 2 or ids.shape[1] < p:
        raise UsageError(f"--eval: want token windows [S, T] with T >= the prompt length {p}")
    x = ids[:, :p]
    got = Executor(bundle).run(quantize_units(bundle.program, x.numpy())).outputs.reshape(-1, n)[: len(x)]
    with torch.no_grad():
        for _ in range(n):
            x = torch.cat([x, m(x)[:, -1].argmax(-1, keepdim=True)], 1)
    want = x[:, p:].numpy()
    return {"generated_token_agreement": round(float((got == want).mean()), 4),
            "first_token_agreement": round(float((got[:, 0] == want[:, 0]).mean()), 4),
            "prompts": len(x), "exact_generations": int(np.all(got == want, axis=1).sum())}


@app.command("check")
def check(
    model: str = typer.Option(..., "--model", help="FILE.py:FACTORY or MODULE:FACTORY returning the nn.Module."),
    calib: str = typer.Option(None, "--calib", help="Samples to trace on (safetensors): also checks the functions "
                              "and methods of forward, not only the module types."),
    state_dict: str = typer.Option(None, "--state-dict", help="With --calib: run the whole export on these weights."),
    calib_key: str = typer.Option(None, "--calib-key"),
    unit_batch: int = typer.Option(1, "--unit-batch", help="Samples per unit to trace and export with."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List every layer of a model that the int8 op set cannot express, each with its fix."""
    from gpumesh.node.runtime.export import ExportError, export_model, unsupported

    if state_dict and not calib:
        raise UsageError("--state-dict needs --calib (the export calibrates on it)")
    m = _model_with_weights(model, state_dict) if state_dict else _load_factory(model)().eval()
    x = _samples(calib, calib_key) if calib else None
    problems = unsupported(m, x, unit_batch)
    ops = None
    if not problems and state_dict:
        try:
            ops = len(export_model(m, x, unit_batch)[0].ops)
        except ExportError as exc:
            problems = [str(exc)]
    if as_json:
        typer.echo(json.dumps({"model": model, "problems": problems, "ops": ops}))
    else:
        for line in problems:
            typer.echo(line)
    if problems:
        raise ValidationError(f"{model}: {len(problems)} layer{'s' if len(problems) > 1 else ''} not in the op set")
    if not as_json:
        scope = "every layer and call" if calib else "every module type (add --calib to check forward's calls)"
        typer.echo(f"{model}: {scope} is in the op set" + (f"; the export gives {ops} ops" if ops else ""))


@app.command("inputs")
def inputs_cmd(
    program: str = typer.Argument(..., help="Program folder (program.json + weights.safetensors)."),
    data: str = typer.Option(None, "--data", help="Float samples [S, ...] (safetensors) in the model's own layout."),
    text: str = typer.Option(None, "--text", help="A text-generation program's prompts: a file of one prompt per "
                             "line (bytes)."),
    out: str = typer.Option(..., "--out", help="The inputs file to write (safetensors 'units' [U, ...] int8)."),
    key: str = typer.Option(None, "--key", help="Tensor name in --data when it holds several."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Quantize float samples for a program: the int8 units file that `job post --inputs` takes
    (input scale from the program's meta, the last unit zero-padded to the unit batch). With
    --text: prompts for a text-generation program, each right-aligned into its prompt window
    (left-padded with newlines, or cut to its last P bytes), the last unit topped up with empty
    prompts."""
    import numpy as np

    from gpumesh.node.runtime.evaluate import quantize_units
    from gpumesh.node.runtime.files import load_program

    if (data is None) == (text is None):
        raise UsageError("give one of --data (float samples) and --text (prompts)")
    bundle = load_program(program)
    if text is not None:
        _text_inputs(bundle, program, text, out, as_json)
        return
    x = _tensor(data, key).numpy()
    if x.dtype.kind != "f":
        raise ValidationError(f"{data}: samples are {x.dtype}, expected float (they are quantized here)")
    if x.ndim < 1 or len(x) == 0:
        raise ValidationError(f"{data}: no samples")
    if not np.isfinite(x).all():
        raise ValidationError(f"{data}: samples hold NaN or infinity")
    units = quantize_units(bundle.program, x)
    batch = bundle.program.input.type.shape[0]
    report = {"inputs": out, "units": len(units), "samples": len(x), "padding": len(units) * batch - len(x),
              "inputs_root": _write_units(bundle, out, units)}
    if as_json:
        typer.echo(json.dumps(report))
        return
    typer.echo(f"wrote {out}: {report['units']} units of {batch} ({report['samples']} samples, "
               f"{report['padding']} zero padding)")
    typer.echo(f"inputs root {report['inputs_root']}; post with: gpumesh job post --program {program} "
               f"--inputs {out} --samples {report['samples']} ...")


def _write_units(bundle, out: str, units) -> str:
    """Write the inputs file; its inputs root (hex) as the chain will commit it."""
    from gpumesh.client.core.program import inputs_root
    from gpumesh.node.runtime.files import save_units

    save_units(out, units)
    return "0x" + inputs_root(bundle.program, bundle.weight_bytes, [u.tobytes() for u in units]).hex()


def _text_inputs(bundle, program: str, text: str, out: str, as_json: bool) -> None:
    from gpumesh.node.runtime.evaluate import quantize_units
    from gpumesh.node.runtime.textgen import generation_meta, prompt_windows, read_prompts

    gm = generation_meta(bundle.program.meta)
    if gm is None:
        raise ValidationError(f"{program}: not a text-generation program (build one with --generate N); "
                              f"give float samples with --data")
    try:
        with open(text, "rb") as fh:
            prompts = read_prompts(fh.read())
    except OSError as exc:
        raise UsageError(f"--text {text}: {exc.strerror}") from None
    if not prompts:
        raise ValidationError(f"--text {text}: no prompts (one prompt per line)")
    ids, cut = prompt_windows(bundle.program, prompts)
    units = quantize_units(bundle.program, ids)
    batch = bundle.program.input.type.shape[0]
    report = {"inputs": out, "units": len(units), "prompts": len(prompts), "samples": len(prompts),
              "padding": len(ids) - len(prompts), "truncated": cut, "prompt_len": gm["prompt_len"],
              "generate": gm["generate"], "inputs_root": _write_units(bundle, out, units)}
    if as_json:
        typer.echo(json.dumps(report))
        return
    typer.echo(f"wrote {out}: {len(prompts)} prompts in {len(units)} units of {batch} "
               f"({report['padding']} empty padding prompts; {cut} cut to their last {gm['prompt_len']} bytes, "
               f"shorter ones left-padded with newlines); {gm['generate']} tokens each")
    typer.echo(f"inputs root {report['inputs_root']}; post with: gpumesh job post --program {program} "
               f"--inputs {out} --samples {len(prompts)} ...")


def echo_texts(texts: list[str], show: int | None = None) -> None:
    """Each prompt's generated text on one line (repr: newlines and control bytes visible)."""
    for i, t in enumerate(texts[:show]):
        typer.echo(f"{i:5d}  {t!r}")


@app.command("run")
def run(
    program: str = typer.Argument(..., help="Program folder (program.json + weights.safetensors)."),
    inputs: str = typer.Option(..., "--inputs", help="Inputs file: safetensors with 'units' [U, ...] int8."),
    outputs: str = typer.Option(None, "--outputs", help="Write the outputs file here."),
    labels: str = typer.Option(None, "--labels", help="True class of each sample, in order: a JSON list of "
                               "integers or a safetensors file holding one integer tensor [S]; prints accuracy."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    samples: int = typer.Option(None, "--samples", min=1, help="A text-generation program: the real prompts "
                                "(the rest of the last unit is padding); prints each one's generated text."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Execute every unit locally and print the result root (what a worker submits); with --labels,
    the accuracy of the predictions. A progress bar shows on a terminal."""
    from gpumesh.client.core.program import inputs_root
    from gpumesh.node.runtime.evaluate import class_predictions
    from gpumesh.node.runtime.executor import Executor
    from gpumesh.node.runtime.files import load_program, load_units, save_outputs
    from gpumesh.node.runtime.textgen import generated_texts, generation_meta

    truth = _load_labels(labels) if labels else None
    bundle = load_program(program)
    units = load_units(inputs, bundle.program)
    per_unit = bundle.program.input.type.shape[0]
    if truth is not None and len(truth) > len(units) * per_unit:
        raise UsageError(f"--labels {labels}: {len(truth)} labels for {len(units) * per_unit} samples "
                         f"({len(units)} units of {per_unit})")
    with _progress(len(units), as_json) as tick:
        res = Executor(bundle, device).run(units, progress=tick)
    if outputs:
        save_outputs(outputs, res.outputs)
    report = {
        "program_root": "0x" + bundle.program.root().hex(),
        "inputs_root": "0x" + inputs_root(bundle.program, bundle.weight_bytes, [u.tobytes() for u in units]).hex(),
        "units": len(units),
        "result_root": "0x" + res.result_root.hex(),
        "exec_seconds": round(res.exec_seconds, 4),
        "hash_seconds": round(res.hash_seconds, 4),
    }
    if truth is not None:
        preds = class_predictions(bundle.program, res.outputs)[: len(truth)]
        report["labelled_samples"] = len(truth)
        report["accuracy"] = float((preds == truth).mean()) if len(truth) else 0.0
    texts = None
    if generation_meta(bundle.program.meta) is not None:
        texts = generated_texts(bundle.program, res.outputs, samples)
        report["texts"] = texts
    if as_json:
        typer.echo(json.dumps(report))
        return
    typer.echo(f"result root: {report['result_root']}  ({report['units']} units, "
               f"{report['exec_seconds'] + report['hash_seconds']:.1f}s)")
    if texts is not None:
        typer.echo(f"generated text of {len(texts)} prompts:")
        echo_texts(texts)
    if truth is not None:
        typer.echo(f"accuracy {100 * report['accuracy']:.2f}% on {len(truth)} labelled samples")


def _load_labels(path: str):
    """Labels as an int64 array: a JSON list of integers (the format `job result --labels` takes) or
    a safetensors file with one integer tensor (any shape, read in order)."""
    import numpy as np

    if path.endswith(".json"):
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except OSError as exc:
            raise UsageError(f"--labels {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise UsageError(f"--labels {path}: not JSON ({exc})") from None
        if not isinstance(data, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in data):
            raise UsageError(f"--labels {path}: want a JSON list of integers")
        return np.asarray(data, dtype=np.int64)
    t = _tensor(path, None).numpy()
    if t.dtype.kind not in "iu":
        raise UsageError(f"--labels {path}: the tensor is {t.dtype}, want integer class indices")
    return t.reshape(-1).astype(np.int64)


class _progress:
    """A rich progress bar over the units on a terminal (stderr; units/s and time left), nothing
    otherwise or with --json. Used as `with _progress(total, quiet) as tick: ...; tick(done)`."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.bar, self.task = total, None, None
        if quiet:
            return
        from rich.console import Console

        console = Console(stderr=True)
        if not console.is_terminal:
            return
        from rich import progress as rp

        self.bar = rp.Progress(rp.TextColumn("units"), rp.BarColumn(), rp.MofNCompleteColumn(),
                               rp.TimeElapsedColumn(), rp.TextColumn("left"), rp.TimeRemainingColumn(),
                               console=console, transient=True)
        self.task = self.bar.add_task("units", total=total)

    def __enter__(self):
        if self.bar is None:
            return None
        self.bar.start()
        return lambda done: self.bar.update(self.task, completed=done)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


@app.command("show")
def show(
    program: str = typer.Argument(..., help="Program folder."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Validate a program folder and print its root and ops."""
    from gpumesh.node.runtime.files import load_program

    p = load_program(program).program
    info = {"program_root": "0x" + p.root().hex(), "input": str(p.input.type), "output": str(p.output_type),
            "weights": len(p.weights),
            "ops": [{"name": o.name, "op": o.desc.opcode.name.lower(), "out": str(o.desc.out),
                     "descriptor": "0x" + o.desc.encode().hex()} for o in p.ops]}
    if as_json:
        typer.echo(json.dumps(info))
        return
    typer.echo(f"program root {info['program_root']}  input {info['input']}  output {info['output']}")
    for i, o in enumerate(info["ops"]):
        typer.echo(f"  {i:3d} {o['op']:<9} {o['name']:<20} -> {o['out']}")
