"""Named training recipes beyond the notebook, as plain data: `mnistlab train --preset NAME
[--dataset D]` or train(**preset(NAME, D)). Options given beside a preset win over its values. The figures they reach
are in BENCHMARKS.md ("Beyond the notebook")."""

PRESETS = {
    # The reachable-in-seconds story: the notebook's CNN with a larger batch, a warm-up then cosine
    # decay to 0 over two epochs, lighter dropout; it stops at the first epoch at 99% test accuracy.
    "fast99": {"model": "cnn", "epochs": 2, "batch_size": 128, "lr": 0.005, "schedule": "cosine", "warmup": 0.2,
               "dropout": 0.2, "augment": 0.0, "label_smoothing": 0.0, "weight_decay": 0.0,
               "target_accuracy": 0.99},
    # Best accuracy in under ten minutes of a 2-core CPU: the notebook's CNN made wider (32 and 64
    # filters, Dense 512) and trained longer on augmented images, with label smoothing, weight decay,
    # warm-up and cosine decay, on the fast path. The batch-normalized convnet costs more per epoch
    # for less in ten minutes (16 and 32 filters: 21 s an epoch, 0.9952 after 24; BENCHMARKS.md).
    "best": {"model": "cnn", "filters": [32, 64], "hidden": [512], "dropout": 0.5, "augment": 0.12,
             "schedule": "cosine", "label_smoothing": 0.1, "weight_decay": 0.01, "batch_size": 128,
             "lr": 0.003, "epochs": 30},
}

# What a preset changes for one dataset. Clothes, unlike digits, stay what they are mirrored left to
# right; and the digits' augmentation and regularisation underfit them (Fashion-MNIST's validation
# accuracy was still rising at the 30th epoch; augment 0.05, no label smoothing, dropout 0.3: 0.9260
# against 0.9078 in one run; with the mirroring, 0.9239 over three seeds; BENCHMARKS.md).
FOR_DATASET = {
    ("best", "fashion-mnist"): {"flip": True, "augment": 0.05, "label_smoothing": 0.0, "dropout": 0.3},
}


def preset(name, dataset="mnist"):
    """The settings of preset `name` (None: none) for `dataset`: its own, with FOR_DATASET's over them."""
    if name is None:
        return {}
    return {**PRESETS[name], **FOR_DATASET.get((name, dataset), {})}
