"""Run presets of ``mfray train`` and ``mfray pretrain``: the training budget and the LF model size.

One name covers both verbs, and ``auto`` (the default) picks it from the device the run trains on:

- ``cpu`` (a run on CPUs): HF models train for at most 300 epochs with early-stopping patience 30;
  LF models are the ``cpu`` size (GCN VGAE 3 x 256, Set Transformer 256 wide, 8 heads, 8 seeds:
  ~1.2 M parameters, several times the throughput of the paper's on a CPU).
- ``paper`` (a run on GPUs): the reference protocol (METHOD.md section 7): HF models at most 1000
  epochs with patience 100; LF models at the paper's size (Set Transformer 1024 wide, 16 heads,
  32 seeds: ~14.4 M parameters).

Both keep the objective and the optimiser (Adam, the strategy's learning rate or 5e-5 for LF
models, batch 32 / 512, ReduceLROnPlateau, 10 LF epochs): a preset changes how long and how big,
never what is optimised. Explicit flags win over the preset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mfray.utils.errors import MfrayError


@dataclass(frozen=True)
class RunPreset:
    """A named set of defaults.

    Attributes:
        name: ``"cpu"`` or ``"paper"``.
        hf: :class:`~mfray.train.loop.TrainConfig` values of ``mfray train``.
        lf: :class:`~mfray.train.loop.TrainConfig` values of ``mfray pretrain``.
        lf_size: the LF model size (a key of :data:`mfray.models.spec.LF_PRESETS`; not imported here:
            the CLI builds its parser from this module, and ``mfray.models`` imports torch).
    """

    name: str
    hf: dict[str, Any]
    lf: dict[str, Any]
    lf_size: str

    @classmethod
    def cpu(cls) -> RunPreset:
        return cls("cpu", hf={"max_epochs": 300, "patience": 30}, lf={"max_epochs": 10, "patience": 0}, lf_size="cpu")

    @classmethod
    def paper(cls) -> RunPreset:
        return cls("paper", hf={"max_epochs": 1000, "patience": 100}, lf={"max_epochs": 10, "patience": 0},
                   lf_size="paper")


PRESETS = {"cpu": RunPreset.cpu, "paper": RunPreset.paper}
#: what ``--preset`` accepts
CHOICES = ("auto", *PRESETS)


def resolve_preset(name: str, device: str) -> tuple[RunPreset, str]:
    """The preset ``name`` (``auto``: ``paper`` when ``device`` is a GPU, else ``cpu``) and why it was
    chosen, in words."""
    if name == "auto":
        gpu = device.startswith("cuda")
        return (RunPreset.paper() if gpu else RunPreset.cpu(),
                "auto: training on GPUs" if gpu else "auto: training on the CPU")
    if name not in PRESETS:
        raise MfrayError(f"--preset {name!r}: expected one of {', '.join(CHOICES)}")
    return PRESETS[name](), "as asked"
