"""The tags that split one seed into independent random streams: every one of them, named here.

A run's randomness is a pure function of its seed (and the epoch, or the
test-time copy), so a resumed run replays the uninterrupted one
(docs/determinism.md). Each kind of random choice draws from a stream of its own,
derived from the seed by folding in a tag:

  tag  name           drives                                   derived as (in)
  ---  -------------  ---------------------------------------  --------------------------------------------
   1   DROPOUT        the fast path's dropout masks            fold_in(fold_in(key(seed), epoch), 1), then
                                                               per step and per dropout layer
                                                               (training/fastpath/engine.py, epoch_plan)
   2   KERAS_ORDER    Keras' fit's sample order with           PCG64([seed, epoch, 2])
                      augmentation                             (training/augmented.py)
   3   AUGMENT        each epoch's transformed images          fold_in(fold_in(key(seed), epoch), 3), then
                      (both training loops)                    per chunk (data/augment.py, epoch_images)
   5   TEST_COPIES    test-time augmentation's copies          fold_in(fold_in(key(seed), copy), 5), then
                                                               per chunk (data/augment.py)
   7   MIRROR         which images an augmentation flips       fold_in(chunk key, 7) (data/augment.py,
                                                               transforms)
  11   ELASTIC        elastic distortions' displacements       fold_in(chunk key, 11) (data/augment.py)
  13   ERASE          which rectangle of which image is        fold_in(chunk key, 13) (data/augment.py)
                      erased

Why they must differ: DROPOUT, AUGMENT and TEST_COPIES fold their tag into the
same (seed, number) key, so two equal tags would hand two consumers the same
bits: dropout masks correlated with the epoch's transformations, or copy k of
the test images transformed exactly as epoch k's training images were. MIRROR,
ELASTIC and ERASE are folded into a chunk's key that transforms() also splits
three ways; streams of their own rather than more splits keep what runs without
them draw.
KERAS_ORDER is a numpy stream, not a JAX key, but is numbered among the others
so that each tag names one stream whichever generator draws it; with it, Keras'
fit's order differs from the fast path's (PCG64([seed, epoch]), untagged).

Draws from the bare seed, with no tag: the fast path's sample order
(PCG64([seed, epoch])), the validation split (numpy's default_rng(seed),
training/loop.py) and the per-layer initializer seeds (SeedSequence(seed),
models.seeded).

The VALUES are part of every recorded run: changing one changes the numbers
every later run with that seed produces, so a run would no longer reproduce an
old one bit for bit. Add a stream with a new tag; never renumber one.

A leaf module (it imports nothing of mnistlab): the fast path may import it.
"""

DROPOUT = 1
KERAS_ORDER = 2
AUGMENT = 3
TEST_COPIES = 5
MIRROR = 7
ELASTIC = 11
ERASE = 13
