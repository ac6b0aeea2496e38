"""Step 1 of the pipeline: find, verify, read and preprocess the data."""

from mnistlab.data.idx import read_idx, write_idx
from mnistlab.data.load import Dataset, load_dataset
from mnistlab.data.preprocess import for_input, one_hot, scale, scale_pixels, shaped
from mnistlab.data.registry import DATASETS, IMAGE_SHAPE, IMAGE_SIDE, NUM_CLASSES, PIXELS

__all__ = [
    "DATASETS",
    "IMAGE_SHAPE",
    "IMAGE_SIDE",
    "NUM_CLASSES",
    "PIXELS",
    "Dataset",
    "for_input",
    "load_dataset",
    "one_hot",
    "read_idx",
    "scale",
    "scale_pixels",
    "shaped",
    "write_idx",
]
