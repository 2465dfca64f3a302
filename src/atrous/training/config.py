"""``TrainConfig``: one training run's settings, read from a JSON (or YAML) file in
``configs/`` and overridden from the command line with ``key=value``."""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atrous.constants import IGNORE_INDEX
from atrous.crf.rnn_model import crf_rnn_options

AMP_MODES = ("none", "bf16", "fp16")
LOSSES = ("ce", "ohem")
OPTIMIZERS = ("sgd", "adamw")
ON_ERROR = ("skip", "raise")
# Names other training tools use for a setting, suggested when difflib finds nothing close.
_ALIASES = {
    "learning_rate": "lr",
    "base_lr": "lr",
    "max_iter": "iterations",
    "max_iters": "iterations",
    "num_iterations": "iterations",
    "iters": "iterations",
    "n_classes": "num_classes",
    "classes": "num_classes",
    "data_dir": "data_root",
    "root": "data_root",
    "arch": "model",
}


@dataclass
class TrainConfig:
    """Settings of a training run; defaults follow DeepLab v3 §4 (VOC) where they apply."""

    # model
    model: str = "deeplabv3plus_mobilenetv2"
    model_options: dict[str, Any] = field(default_factory=dict)  # build() options (norm, ...)
    num_classes: int | None = None  # default: the dataset's
    # Train with a num_classes that differs from the dataset's class count (an error
    # otherwise); a smaller one is refused when the masks hold labels >= num_classes.
    allow_num_classes_mismatch: bool = False
    output_stride: int | None = None
    aux: bool = False
    weights: str | None = None  # fine-tune from a checkpoint file or a registry name
    pretrained_backbone: str | None = None  # "imagenet", an ImageNet registry name, or a file
    freeze_bn: bool = False  # v3 §4 second stage: BN statistics and affine frozen
    # CRF-as-RNN last layer (Zheng et al. 2015), trained end to end: null, or options of
    # atrous.crf.CRF_RNN_DEFAULTS, e.g. {"iterations": 5, "eval_iterations": 10, "bi_w": 4}
    crf_rnn: dict[str, Any] | None = None
    # data
    dataset: str = "synthetic"
    data_root: str | None = None
    train_split: str = "train"
    val_split: str | None = "val"
    dataset_options: dict[str, Any] = field(default_factory=dict)
    crop_size: int | list[int] = 513  # a side, or [height, width]
    scale_range: list[float] | None = field(default_factory=lambda: [0.5, 2.0])
    flip: bool = True
    color_jitter: float = 0.0
    # share of training crops placed on a class drawn uniformly from those in the frame
    # (class-balanced crop sampling: thin classes get as many crops as large ones)
    crop_class_balance: float = 0.0
    blur: float = 0.0  # probability of a Gaussian blur (sigma 0.1-2 px) of a training image
    num_workers: int = 4
    # A bad training or validation sample (unreadable image, bad mask): "skip" reports it,
    # trains on without it, lists it in summary.json and `atrous train` exits 1; "raise"
    # stops training at it. dataset_options.on_error, where given, takes precedence.
    on_error: str = "skip"
    # optimization (v3 §4: poly, momentum 0.9, batch 16, lr 0.007)
    batch_size: int = 16  # per process: the global batch is batch_size × processes × grad_accum
    grad_accum: int = 1
    iterations: int = 30000
    # Wall-clock budget in minutes, from set-up to the exported weights: the iteration count
    # is re-planned from the measured speed so the poly schedule ends when the budget does;
    # validation takes at most time_limit_val_share of it (less often, then on an evenly
    # spaced subset), checkpoints 3%, warm-up 10% of the iterations (atrous.training.
    # time_budget). Not bit-exact on resume (the plan depends on timing); null = train
    # exactly ``iterations``.
    time_limit: float | None = None
    time_limit_val_share: float = 0.1
    optimizer: str = "sgd"  # "adamw" (betas 0.9/0.999) converges faster from scratch
    lr: float = 0.007
    lr_power: float = 0.9
    warmup_iters: int = 0
    warmup_factor: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    head_lr_mult: float = 1.0  # v2 used 10 for the classifier
    no_decay_norm_bias: bool = False
    # Validate and export an exponential moving average of the weights (atrous.training.ema);
    # null = the live weights. 0.999 averages over about the last thousand steps.
    ema_decay: float | None = None
    # loss
    loss: str = "ce"
    ohem_top_k: float = 0.2
    class_weights: list[float] | str | None = None  # a list, "inverse_log" or "median"
    class_weight_samples: int = 200
    class_weight_cap: float | None = None  # computed weights clipped to cap × the smallest
    label_smoothing: float = 0.0  # cross-entropy target smoothing (Szegedy et al. 2016 §7)
    region_loss: str | None = None  # "lovasz" | "dice"
    region_weight: float = 1.0
    aux_weight: float = 0.5
    # engine
    device: str = "auto"
    amp: str = "none"
    channels_last: bool = False
    # torch.compile the training forward (false, true, or a mode: "reduce-overhead",
    # "max-autotune"); compile_backend "inductor" needs a C++ compiler on CPU.
    compile: bool | str = False
    compile_backend: str = "inductor"
    # BatchNorm -> SyncBatchNorm across processes (DDP on CUDA only: torch's SyncBatchNorm
    # has no CPU kernel; on CPU use norm=gn or freeze_bn).
    sync_bn: bool = False
    deterministic: bool = False
    seed: int = 0
    log_every: int = 10
    val_every: int = 1000
    val_max_images: int | None = None
    # Test-time scales of validation (logits averaged, evaluated against full-resolution
    # labels); saved with the weights as the model's default for eval/predict.
    eval_scales: list[float] = field(default_factory=lambda: [1.0])
    tensorboard: bool = True  # scalars and sample predictions under <out>/tensorboard
    tb_images: int = 3  # validation images drawn (image | truth | prediction) per validation
    ckpt_every: int = 1000
    # documentation only: what the paper or reference reports with these settings
    reference: str = ""
    reference_miou: float | None = None

    def validate(self, where: str = "config") -> TrainConfig:
        """Raise ValueError naming ``where`` and the field for a setting out of range (the
        checks of :data:`_RULES`, in order)."""
        for name, ok, why in _RULES:
            value = getattr(self, name)
            if not ok(value):
                raise ValueError(f"{where}: {name}={value!r}: {why}")
        if self.crf_rnn is not None:
            crf_rnn_options(self.crf_rnn, f"{where}: crf_rnn")
        if not isinstance(self.model_options, dict) or not isinstance(self.dataset_options, dict):
            raise ValueError(f"{where}: model_options and dataset_options must be objects")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> TrainConfig:
        data = {k: v for k, v in data.items() if not k.startswith("_")}  # "_comment" keys
        unknown = sorted(set(data) - set(setting_names()))
        if unknown:
            raise ValueError(f"{where}: {unknown_settings(unknown)}")
        return cls(**data).validate(where)


# ---------------------------------------------------------------------- validation rules
def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _positive_int(v: Any) -> bool:
    return _int(v) and v >= 1


def _non_negative_int(v: Any) -> bool:  # a bool passes, as 0 or 1
    return isinstance(v, int) and v >= 0


def _positive_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and v > 0


def _probability(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1


def _crop_size(v: Any) -> bool:
    sides = v if isinstance(v, list) else [v]
    return len(sides) in (1, 2) and all(_positive_int(x) for x in sides)


def _num_classes(v: Any) -> bool:
    return v is None or (_int(v) and 1 <= v < IGNORE_INDEX)


def _eval_scales(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(s, (int, float)) and s > 0 for s in v)


def _scale_range(v: Any) -> bool:
    return v is None or (len(v) == 2 and 0 < v[0] <= v[1])


def _optional(ok: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or ok(v)


def _one_of(choices: tuple[Any, ...]) -> Callable[[Any], bool]:
    return lambda v: v in choices


# (setting, check, what a good value is), checked in this order by TrainConfig.validate.
_COUNTS = ("batch_size", "grad_accum", "iterations", "log_every", "val_every", "ckpt_every")
_RULES: list[tuple[str, Callable[[Any], bool], str]] = [
    *[(name, _positive_int, "must be a positive integer") for name in _COUNTS],
    ("crop_size", _crop_size, "must be a positive integer or [height, width]"),
    ("lr", _positive_number, "must be a positive number"),
    ("warmup_iters", _non_negative_int, "must be a non-negative integer"),
    (
        "num_classes",
        _num_classes,
        f"must be 1..{IGNORE_INDEX - 1} ({IGNORE_INDEX} is the ignore label), or null for "
        "the dataset's",
    ),
    ("on_error", _one_of(ON_ERROR), f"must be one of {ON_ERROR}"),
    ("amp", _one_of(AMP_MODES), f"must be one of {AMP_MODES}"),
    ("optimizer", _one_of(OPTIMIZERS), f"must be one of {OPTIMIZERS}"),
    (
        "time_limit",
        _optional(_positive_number),
        "must be a positive number of minutes, or null",
    ),
    (
        "time_limit_val_share",
        lambda v: isinstance(v, (int, float)) and 0 < v < 1,
        "must be in (0, 1)",
    ),
    ("eval_scales", _eval_scales, "must be a non-empty list of positive numbers"),
    (
        "compile",
        lambda v: isinstance(v, (bool, str)),
        "must be true, false or a torch.compile mode string",
    ),
    ("tb_images", _non_negative_int, "must be a non-negative integer"),
    ("loss", _one_of(LOSSES), f"must be one of {LOSSES}"),
    ("ohem_top_k", lambda v: 0 < v <= 1, "must be in (0, 1]"),
    ("crop_class_balance", _probability, "must be a probability in [0, 1]"),
    ("blur", _probability, "must be a probability in [0, 1]"),
    (
        "label_smoothing",
        lambda v: isinstance(v, (int, float)) and 0 <= v < 1,
        "must be in [0, 1)",
    ),
    (
        "class_weight_cap",
        _optional(lambda v: isinstance(v, (int, float)) and v >= 1),
        "must be a number >= 1, or null",
    ),
    (
        "ema_decay",
        _optional(lambda v: isinstance(v, (int, float)) and 0 < v < 1),
        "must be in (0, 1), or null",
    ),
    ("region_loss", _one_of((None, "lovasz", "dice")), "must be null, 'lovasz' or 'dice'"),
    (
        "class_weights",
        lambda v: not isinstance(v, str) or v in ("inverse_log", "median"),
        "must be a list, 'inverse_log' or 'median'",
    ),
    ("scale_range", _scale_range, "must be [min, max] with 0 < min <= max, or null"),
]


def setting_names() -> list[str]:
    """The names of the :class:`TrainConfig` settings."""
    return [f.name for f in dataclasses.fields(TrainConfig)]


def unknown_settings(keys: list[str]) -> str:
    """``"unknown setting 'num_clases' (did you mean 'num_classes'?)"``; the known settings
    are listed only when some key has no close match."""
    names = setting_names()
    parts, lost = [], False
    for key in keys:
        close = difflib.get_close_matches(key, names, n=1) or (
            [_ALIASES[key.lower()]] if key.lower() in _ALIASES else []
        )
        parts.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
        lost = lost or not close
    head = f"unknown setting{'s' if len(keys) > 1 else ''} {', '.join(parts)}"
    return f"{head}; known: {', '.join(sorted(names))}" if lost else head


def _read(path: Path) -> dict[str, Any]:
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"{path}: reading YAML needs pyyaml; use a .json config") from None
        data = yaml.safe_load(text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config must be a mapping of settings")
    return data


def packaged_configs() -> dict[str, Path]:
    """The recipes shipped inside the package (``atrous/configs/*.json``) by name, e.g.
    ``synthetic_demo``: usable by ``load_config(name)`` without the repository."""
    from importlib import resources

    folder = resources.files("atrous") / "configs"
    return {Path(f.name).stem: Path(str(f)) for f in folder.iterdir() if f.name.endswith(".json")}


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> TrainConfig:
    """Read ``path`` (JSON, or YAML where pyyaml is installed) and apply ``key=value``
    overrides (see :func:`apply_overrides`). A bare name that is no file, such as
    ``synthetic_demo``, is looked up among :func:`packaged_configs`."""
    path = Path(path)
    if not path.is_file() and path.suffix == "" and str(path) in packaged_configs():
        path = packaged_configs()[str(path)]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    cfg = TrainConfig.from_dict(_read(path), str(path))
    return apply_overrides(cfg, overrides or [])


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare string: --set dataset=voc


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """A copy of ``cfg`` with ``key=value`` settings applied. Values are JSON (``lr=0.01``,
    ``scale_range=[0.5,1.5]``, ``val_split=null``) or bare strings; ``a.b=v`` sets key ``b``
    of the dict setting ``a`` (``model_options.norm=gn``)."""
    data = cfg.to_dict()
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected key=value")
        value = _parse_value(raw)
        top, _, sub = key.partition(".")
        if top not in data:
            raise ValueError(f"--set {item!r}: {unknown_settings([top])}")
        if sub:
            if not isinstance(data[top], dict):
                raise ValueError(f"--set {item!r}: {top!r} is not a dict setting")
            data[top] = {**data[top], sub: value}
            continue
        if isinstance(getattr(cfg, top), str) and not isinstance(value, str) and value is not None:
            value = raw  # e.g. dataset=123 stays a string
        if isinstance(getattr(cfg, top), float) and isinstance(value, int):
            value = float(value)
        data[top] = value
    return TrainConfig.from_dict(data, "--set")
