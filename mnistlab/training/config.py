"""A training run's configuration as plain data: what config.json holds and what `mnistlab train`
and `train()` take. Its fields, defaults and checks are mnistlab.params' table."""
from dataclasses import asdict, dataclass, field, fields

from mnistlab.params import PARAMS, check

_DEFAULT = {name: p.default for name, p in PARAMS.items()}


@dataclass
class TrainConfig:
    model: str = _DEFAULT["model"]
    dataset: str = _DEFAULT["dataset"]
    epochs: int = _DEFAULT["epochs"]
    batch_size: int = _DEFAULT["batch_size"]
    optimizer: str = _DEFAULT["optimizer"]
    lr: float | None = _DEFAULT["lr"]
    optimizer_defaults: str = _DEFAULT["optimizer_defaults"]
    loss: str = _DEFAULT["loss"]
    hidden: list | None = _DEFAULT["hidden"]
    dropout: float = _DEFAULT["dropout"]
    seed: int = _DEFAULT["seed"]
    validation_split: float | None = _DEFAULT["validation_split"]
    shuffle: bool = _DEFAULT["shuffle"]
    data_dir: str | None = _DEFAULT["data_dir"]
    verify_data: bool = _DEFAULT["verify_data"]
    engine: str = _DEFAULT["engine"]
    extra: dict = field(default_factory=dict)  # room for keys a newer mnistlab wrote

    def __post_init__(self):
        for name in PARAMS:
            setattr(self, name, check(name, getattr(self, name)))

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, data):
        known = {f.name for f in fields(cls)} - {"extra"}
        extra = dict(data.get("extra") or {}) | {k: v for k, v in data.items() if k not in known | {"extra"}}
        return cls(**{k: v for k, v in data.items() if k in known}, extra=extra)
