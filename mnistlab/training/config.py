"""A training run's configuration as plain data: what config.json holds and
what `mnistlab train` and `train()` take."""
from dataclasses import asdict, dataclass, field, fields

from mnistlab.errors import UsageError


ENGINES = ("auto", "fast", "keras")


@dataclass
class TrainConfig:
    model: str = "dnn"                 # "dnn" or "cnn"
    dataset: str = "mnist"             # "mnist" or "fashion-mnist"
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "Adam"
    lr: float | None = None            # None: the optimizer's default under `optimizer_defaults`
    optimizer_defaults: str = "keras"  # "keras" (Keras 3) or "notebook" (Keras 2's, as the notebook had)
    loss: str = "categorical_crossentropy"
    hidden: list | None = None         # hidden dense sizes; None keeps the notebook's
    dropout: float = 0.5
    seed: int = 0
    validation_split: float | None = None  # None: validate on the test set each epoch, as the notebook
    shuffle: bool = True
    data_dir: str | None = None
    verify_data: bool = True           # False: accept IDX files other than the published ones
    engine: str = "auto"               # "auto": the fast path (training/fast.py) where it applies, else
                                       # Keras' fit; "fast": insist on the fast path; "keras": Keras' fit
    extra: dict = field(default_factory=dict)  # room for keys a newer mnistlab wrote

    def __post_init__(self):
        if int(self.epochs) < 1:
            raise UsageError(f"epochs must be at least 1, got {self.epochs}")
        if int(self.batch_size) < 1:
            raise UsageError(f"batch size must be at least 1, got {self.batch_size}")
        if self.validation_split is not None and not 0 < float(self.validation_split) < 1:
            raise UsageError(f"validation split must be between 0 and 1, got {self.validation_split}")
        if self.engine not in ENGINES:
            raise UsageError(f"unknown engine {self.engine!r}: choose one of {', '.join(ENGINES)}")
        self.epochs, self.batch_size, self.seed = int(self.epochs), int(self.batch_size), int(self.seed)

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, data):
        known = {f.name for f in fields(cls)} - {"extra"}
        extra = dict(data.get("extra") or {}) | {k: v for k, v in data.items() if k not in known | {"extra"}}
        return cls(**{k: v for k, v in data.items() if k in known}, extra=extra)
