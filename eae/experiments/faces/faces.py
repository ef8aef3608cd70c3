"""Faces experiment (SPEC §3.3, paper Section 4.3, Fig 3): convolutional EAEs at
several temperatures, and how "generic" their reconstructions are.

Data (``results/data/faces.zarr``, one store whatever the source):

* ``images`` (sample, row, col, channel): pixels in [0, 1]. Stored as uint8 with the
  CF ``scale_factor`` 1/255 (lossless for 8-bit sources such as JPEG, 4× smaller than
  float32), so ``xarray.open_zarr`` decodes it to k/255 (float64) while
  :func:`load_faces` hands out the raw uint8 (training keeps 4× less in memory and
  converts on the fly, see :func:`uint8_mse_loss`). ``channel`` is 3 for CelebA, 1 for
  the offline faces.
* ``split`` (sample,) int8, 0/1/2 = train/val/test (CF flag attrs); samples are stored
  grouped by split, each group in source order, so one split is a contiguous slab.
* ``source_index`` (sample,) int64: CelebA — the line of the image in
  ``list_eval_partition.txt`` (0-based; image ``000001.jpg`` is line 0); offline — the
  index in ``skimage.data.lfw_subset()``.

Sources: ``celeba`` — a user-supplied folder with ``img_align_celeba/*.jpg`` and
``list_eval_partition.txt`` (the official split); every image is centre-cropped to
``crop`` × ``crop`` pixels (default 148, the crop of most CelebA VAE work; 140 is the
other common choice) and resized to ``size`` × ``size`` with Pillow's antialiased
bilinear filter, streamed to the store ``chunk_images`` at a time (memory holds one
chunk, never the 200 000 images). ``lfw`` (offline default) — the first ``n_images``
(≤ 100, the faces) of scikit-image's ``lfw_subset()`` (25 × 25 grayscale), resized to
``size`` and split at random (seeded) in ``fractions``.

Stages: :func:`prepare_faces_stage`, :func:`train_faces_stage` (one EAE per
temperature, the shared :class:`eae.core.trainer.EAETrainer`), :func:`ensemble_faces_stage`
(test-face latents of M encoder samples, decoder frozen, streamed to Zarr) and
:func:`faces_report_stage` (Fig 3 and ``faces.csv``).

The "generic vs individual" measure (:func:`generic_ratio`): the mean pairwise
Euclidean distance between the reconstructions of different test faces divided by
that between the originals. 1 means reconstructions differ from each other as much as
the faces do; 0 means every face is reconstructed as the same image — which a dead
decoder's flat grey output also achieves. Hence :func:`generic_share`: the share of
test reconstructions that correlate ≥ 0.9 with the training mean face (a constant
image counts as a failure), beside the same share of the test faces themselves. The
paper's claim (a hot EAE reconstructs every face as one generic *face*) is marked
reproduced (column ``paper_claim`` of the hot row) only when the hot ensemble is
stationary (:mod:`eae.core.wellposed`) and its generic share exceeds both the originals'
and the cold model's.
"""

# The faces experiment in three modules (data, EAE, report), so that a data rule does
# not list the trainer as its code; this module re-exports all three (``eae.faces``).
from eae.experiments.faces.data import *  # noqa: F401,F403
from eae.experiments.faces.data import (PIXEL_SCALE, REPORT_DEFAULTS, SOURCES,  # noqa: F401
                                        load_faces_at)
from eae.experiments.faces.eae import *  # noqa: F401,F403
from eae.experiments.faces.eae import _recording  # noqa: F401
from eae.experiments.faces.report import *  # noqa: F401,F403
