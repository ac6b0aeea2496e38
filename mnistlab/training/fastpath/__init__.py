"""The fast training path: whole epochs as compiled XLA programs, for the models it can train exactly.

A subpackage with a hard boundary, so that Keras' fit stays the reference: it
either trains a model as Keras' fit would (the same objective; other random
streams and rounding) or refuses it before training, and the caller falls
back. `check(model)` gives the reason it refuses (None: it trains it); `fit`
raises `Unsupported` (with `.reason`) in that case. Inside mnistlab it depends
on the leaf modules `mnistlab.errors`, `mnistlab.paths`, `mnistlab.system` and
`mnistlab.streams` only, and it changes no global JAX setting on import.

  engine.py     the compiled epoch loop, its caches, fit (each epoch's inputs may differ: augmentation)
  progress.py   the progress display: Keras' bar in a terminal, tqdm's in a notebook, else a line an epoch
  check.py      what it refuses, and why
  lowering.py   a Keras Sequential as typed ops and one pure JAX function
  registry.py   LOWERED, the one table (Keras layer class -> op class), and the checks every op shares
  layers.py     the op classes, each registered by the Keras layer class it lowers (@lowers)
  layouts.py    the two image layouts (NHWC, CHWN) the ops compute in
  routes.py     which ops go to the hand-written CPU kernels
  widths.py     shared programs: a study's trials of other widths and dropout rates compile once
  ops.py        the array operations and their custom gradients
  kernels/      hand-written C++ CPU kernels (build.py builds, ffi.py calls)
"""

from mnistlab.training.fastpath.check import check
from mnistlab.training.fastpath.engine import Engine, default_layout, engine_for, epoch_plan, fit
from mnistlab.training.fastpath.unsupported import Unsupported
from mnistlab.training.fastpath.widths import shared_programs

__all__ = ["Engine", "Unsupported", "check", "default_layout", "engine_for", "epoch_plan", "fit", "shared_programs"]
