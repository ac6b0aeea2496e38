"""A training run's configuration as plain data: what config.json holds and what `mnistlab train`
and `train()` take. Its fields, defaults and checks are mnistlab.params' table; a run folder
stores it as a plain dict (storage.RunFolder), read back with TrainConfig.from_folder."""

from dataclasses import asdict, dataclass, field, fields, replace

from mnistlab.errors import MnistlabError, UsageError
from mnistlab.params import PARAMS, check
from mnistlab.storage import RunFolder

_DEFAULT = {name: p.default for name, p in PARAMS.items()}  # each of its field's type (Param.default: Any)


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
    filters: list | None = _DEFAULT["filters"]
    dropout: float = _DEFAULT["dropout"]
    augment: float | None = _DEFAULT["augment"]
    flip: bool = _DEFAULT["flip"]
    elastic: float = _DEFAULT["elastic"]
    erase: float = _DEFAULT["erase"]
    schedule: str | None = _DEFAULT["schedule"]
    warmup: float = _DEFAULT["warmup"]
    label_smoothing: float | None = _DEFAULT["label_smoothing"]
    weight_decay: float | None = _DEFAULT["weight_decay"]
    ema: float | None = _DEFAULT["ema"]
    seed: int = _DEFAULT["seed"]
    validation_split: float | None = _DEFAULT["validation_split"]
    shuffle: bool = _DEFAULT["shuffle"]
    data_dir: str | None = _DEFAULT["data_dir"]
    verify_data: bool = _DEFAULT["verify_data"]
    target_accuracy: float | None = _DEFAULT["target_accuracy"]
    time_budget: float | None = _DEFAULT["time_budget"]  # seconds; epochs then holds the run's plan
    tta: int = _DEFAULT["tta"]
    members: int = _DEFAULT["members"]
    engine: str = _DEFAULT["engine"]
    extra: dict = field(default_factory=dict)  # room for keys a newer mnistlab wrote

    def __post_init__(self):
        for name in PARAMS:
            setattr(self, name, check(name, getattr(self, name)))
        if self.label_smoothing and self.loss != "categorical_crossentropy":
            raise UsageError(f"label_smoothing needs loss categorical_crossentropy, not {self.loss}")
        if self.members > 1 and (self.target_accuracy or self.validation_split):
            # each member would stop at the target on its own, or hold out images of its own seed
            beside = "target_accuracy" if self.target_accuracy else "validation_split"
            raise UsageError(f"{beside} applies to one network: not with members {self.members} (an ensemble)")

    def resolved(self):
        """This config with each recipe setting left at None set to the model's own (catalog.RECIPES):
        what a run trains with and writes to config.json, so that it reruns the same."""
        from mnistlab.catalog import RECIPES

        recipe = dict(RECIPES[self.model])
        if self.loss != "categorical_crossentropy":  # the recipe's label smoothing needs that loss
            recipe["label_smoothing"] = 0.0
        resolved = replace(self, **{k: v for k, v in recipe.items() if getattr(self, k) is None})
        resolved.test_time_augmentation()  # a tta without augment or flip to draw its copies with fails now
        return resolved

    def test_time_augmentation(self):
        """The TestTimeAugmentation of --tta (None without), its copies drawn as training's augmentation."""
        from mnistlab.inference import TestTimeAugmentation

        return TestTimeAugmentation(self.tta, self.augment or 0.0, self.flip, self.seed) if self.tta else None

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, data):
        known = {f.name for f in fields(cls)} - {"extra"}
        extra = dict(data.get("extra") or {}) | {k: v for k, v in data.items() if k not in known | {"extra"}}
        return cls(**{k: v for k, v in data.items() if k in known}, extra=extra)

    @classmethod
    def from_folder(cls, folder):
        """A run folder's config.json (`folder` a storage.RunFolder or its path) as a TrainConfig;
        missing or damaged: one clear MnistlabError."""
        folder = folder if isinstance(folder, RunFolder) else RunFolder(folder)
        config = folder.read_config()
        try:
            return cls.from_dict(config)
        except (ValueError, TypeError) as e:  # a UsageError too: the file is wrong, not the command
            raise MnistlabError(f"{folder.config_path}: not a valid run configuration ({e})") from None
