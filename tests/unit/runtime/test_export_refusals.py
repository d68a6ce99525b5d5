"""What the export does with layers and patterns a new user brings (issue #16, stumble 6): every
case is either exported (and then its int8 result follows the float model) or refused in one line
that names the layer by module type and says the fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from gpumesh.node.runtime.evaluate import quantize_units
from gpumesh.node.runtime.executor import Executor
from gpumesh.node.runtime.export import ExportError, export_model, unsupported
from gpumesh.node.runtime.files import load_program, save_program


def _int8_vs_float(tmp_path, model: nn.Module, x: torch.Tensor, unit: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(int8 class, float class) per sample of x (the program ends in argmax)."""
    prog, arrays = export_model(model, x, unit)
    save_program(tmp_path, prog, arrays)
    bundle = load_program(tmp_path)
    got = Executor(bundle).run(quantize_units(bundle.program, x.numpy())).outputs.reshape(len(x), -1)
    with torch.no_grad():
        want = model(x).argmax(-1).numpy().reshape(len(x), -1)
    return got, want


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


class GeluMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 5)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def test_gelu_is_now_exported_as_a_lookup_table(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(64, 16)
    got, want = _int8_vs_float(tmp_path, GeluMLP().eval(), x)
    assert (got == want).mean() >= 0.9


class Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(8, 8, batch_first=True)
        self.norm = nn.GroupNorm(2, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.rnn(x)[0][:, -1])


def test_unsupported_modules_are_named_by_type_with_a_fix():
    with pytest.raises(ExportError) as e:
        export_model(Recurrent(), torch.randn(4, 5, 8), 2)
    msg = _one_line(e)
    assert msg.startswith("rnn (nn.LSTM): recurrent layers are not in the op set") and "1 more" in msg
    every = unsupported(Recurrent())  # all at once (gpumesh program check)
    assert every == ["rnn (nn.LSTM): recurrent layers are not in the op set; a transformer block exports",
                     "norm (nn.GroupNorm): use LayerNorm over the last axis"]


def test_unsupported_calls_in_forward_are_listed_with_samples():
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x):
            y = self.fc(x)
            return torch.cumsum(y, -1) + torch.exp(y)

    lines = unsupported(Odd(), torch.randn(2, 8), 1)
    assert [ln.split(":")[0] for ln in lines] == ["cumsum (cumsum())", "exp (exp())"]


class FinalSoftmax(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.sm = nn.Linear(8, 4), nn.Softmax(dim=1)

    def forward(self, x):
        return self.sm(self.fc(x))


def test_a_final_softmax_is_refused_with_the_hint_to_drop_it():
    with pytest.raises(ExportError) as e:
        export_model(FinalSoftmax(), torch.randn(8, 8), 4)
    assert _one_line(e) == ("sm (nn.Softmax): a softmax on the output: drop it, the argmax does not need it "
                            "(same class)")
    assert unsupported(FinalSoftmax(), torch.randn(8, 8), 4)[-1].startswith("sm (nn.Softmax): a softmax on the output")


class DeadBranch(nn.Module):
    """A residual whose ReLU branch is zero on every calibration sample (the bias pushes it below 0):
    once 'multiplier 9970665740.97 too large for int32' with no layer named."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.dead, self.relu, self.fc2 = nn.Linear(8, 8), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)
        with torch.no_grad():
            self.dead.bias.fill_(-100.0)

    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(h + self.relu(self.dead(h)))


def test_a_layer_that_is_zero_on_the_calibration_data_exports(tmp_path):
    torch.manual_seed(1)
    x = torch.randn(64, 8)
    got, want = _int8_vs_float(tmp_path, DeadBranch().eval(), x)
    assert (got == want).mean() >= 0.9


def test_a_multiplier_out_of_range_is_refused_naming_the_layer(monkeypatch):
    """Whatever still overflows a requant multiplier (a degenerate calibration) is one line naming
    the layer, not a bare ValueError."""
    from gpumesh.node.runtime import export

    def overflow(reals):
        raise ValueError("multiplier 9970665740.97 too large for int32 with shift >= 1")

    monkeypatch.setattr(export, "qp_table", overflow)
    with pytest.raises(ExportError) as e:
        export_model(DeadBranch().eval(), torch.randn(16, 8), 8)
    msg = _one_line(e)
    assert msg.startswith("fc1 (nn.Linear): multiplier 9970665740.97 too large") and "calibrate with samples" in msg


class PlusOne(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 8), nn.Linear(8, 4)

    def forward(self, x):
        return self.fc2(self.fc1(x) + 1.0)  # once KeyError: 1.0


def test_adding_a_constant_exports(tmp_path):
    torch.manual_seed(2)
    x = torch.randn(64, 8)
    got, want = _int8_vs_float(tmp_path, PlusOne().eval(), x)
    assert (got == want).mean() >= 0.9


def test_a_model_returning_a_tuple_is_refused_with_the_fix():
    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            y = self.fc(x)
            return y, y.sum()

    with pytest.raises(ExportError) as e:
        export_model(Pair(), torch.randn(4, 8), 2)
    assert _one_line(e) == ("the model returns a tuple of 2: return one tensor (the logits), e.g. a wrapper "
                            "whose forward returns model(x)[0]")


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l, self.out = nn.Linear(8, 8), nn.Linear(8, 4)

    def forward(self, x):
        return self.out(self.l(torch.relu(self.l(x))))  # once "weight 3: name 'l.w' empty or used twice"


def test_a_module_called_twice_exports_twice(tmp_path):
    torch.manual_seed(3)
    x = torch.randn(64, 8)
    prog, _ = export_model(Twice().eval(), x, 8)
    assert [o.name for o in prog.ops if o.desc.opcode.name == "LINEAR"] == ["l", "l_1", "out"]
    got, want = _int8_vs_float(tmp_path, Twice().eval(), x)
    assert (got == want).mean() >= 0.9


class Patches(nn.Module):
    """A ViT-style patch embedding: conv -> Flatten(2) -> transpose (once: Flatten ignored start_dim)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.flat, self.fc = nn.Conv2d(1, 6, 2, stride=2), nn.Flatten(2), nn.Linear(6 * 16, 4)

    def forward(self, x):
        p = self.flat(self.conv(x)).transpose(1, 2)  # [B, 16 patches, 6]
        return self.fc(p.reshape(p.shape[0], -1))


def test_flatten_with_start_dim_exports(tmp_path):
    torch.manual_seed(4)
    x = torch.randn(64, 1, 8, 8)
    got, want = _int8_vs_float(tmp_path, Patches().eval(), x)
    assert (got == want).mean() >= 0.9


def test_token_ids_beyond_a_byte_are_refused_with_the_reason():
    from tests.unit.runtime.tiny_gpt import TinyGPT

    ids = torch.randint(0, 256, (4, 32))
    ids[3, 7] = 300
    with pytest.raises(ExportError) as e:
        export_model(TinyGPT(vocab=512), ids, 2)
    assert _one_line(e) == ("token ids in [0, 300]: v1 unit inputs are int8, so a token program takes ids in "
                            "[0, 256) (byte-level vocabularies)")
