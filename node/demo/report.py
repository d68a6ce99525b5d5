"""The figures `gpumesh demo run` reports (`--report FILE` writes them as JSON): plain dataclasses,
filled by the story's parts (story.py: digits; generation.py: the byte GPT's text generation)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DisputeFigures:
    game_id: int = 0
    moves_worker: int = 0
    moves_challenger: int = 0
    gas_total: int = 0
    gas_max_move: int = 0
    gas_step: int = 0
    wall_seconds: float = 0.0
    outcome: str = ""
    reason: str = ""
    fault: str = ""
    first_wrong_op: str = ""
    # where the game ended, as the chain says: the disputed unit and op (the game's state) and the
    # element the one-step recomputed (the `step` transaction's elementIndex)
    unit: int = -1
    op: int = -1
    op_name: str = ""
    opcode: str = ""
    element: int = -1
    moves: list[dict] = field(default_factory=list)  # every game transaction: by, move, gas


@dataclass
class GenerationFigures:
    """Parts 4 and 5: the byte GPT's generation program as a job, honest then cheated."""

    program_root: str = ""
    ops: int = 0
    weights: int = 0
    prompt_len: int = 0
    generate: int = 0
    unit_batch: int = 0
    units: int = 0
    prompts: list[str] = field(default_factory=list)
    honest_job: int = 0
    honest_state: str = ""
    honest_texts: list[str] = field(default_factory=list)
    reward_withdrawn: str = ""
    cheat_job: int = 0
    cheat_state: str = ""
    cheat_texts: list[str] = field(default_factory=list)
    flip: dict = field(default_factory=dict)  # genflip.SoftmaxFlip as a dict
    claimed: int = -1  # the cheater's value of the disputed element (from the step's leaf)
    honest_value: int = -1  # the element's honest value (what the one-step recomputes)
    dispute: DisputeFigures = field(default_factory=DisputeFigures)


@dataclass
class DemoReport:
    float_accuracy: float = 0.0
    int8_accuracy: float = 0.0
    program_root: str = ""
    honest_job: int = 0
    honest_accuracy: float = 0.0
    predictions: list[int] = field(default_factory=list)
    cheat_job: int = 0
    dispute: DisputeFigures = field(default_factory=DisputeFigures)
    generation: GenerationFigures = field(default_factory=GenerationFigures)
    balances: dict[str, dict[str, str]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
