r"""Importers: a :class:`~dipkit.problem.Problem` from *measured* data, without a ground truth.

``dipkit import`` (:mod:`dipkit.cli.import_`) and :func:`import_problem` build a problem file
from a measurement made outside dipkit, plus what is known about how it was measured:

==================  =====================================  =========================================
task                measurement                            how it was measured
==================  =====================================  =========================================
``ct``, ``ct-fan``  ``--sinogram FILE``                    ``--angles FILE`` or ``--views N
                                                           [--arc DEG]``; ``--geometry FILE.yaml``;
                                                           ``--convention dipkit|skimage|astra``;
                                                           ``--image-size N`` (:mod:`.ct`)
``mri``,            ``--kspace FILE`` (complex; fastMRI    ``--mask FILE``; ``--coil-maps FILE`` or
``mri-multicoil``   HDF5 works: ``kspace`` dataset,        ``--estimate-coil-maps``; ``--convention
                    ``--slice I``)                         centred|numpy`` (:mod:`.mri`)
``denoise``,        ``--image FILE``                       ``--mask`` (inpaint), ``--kernel``
``inpaint``,                                               (deblur), ``--factor`` [``--filter``]
``deblur``,                                                (superres) (:mod:`.images`)
``superres``
==================  =====================================  =========================================

Every task also takes ``--ground-truth FILE`` (for benchmarking: PSNR/SSIM get computed),
``--noise-std S`` (the measurement's noise std in the file's units, when known; otherwise it is
estimated and recorded with ``meta["noise_sigma_estimated"] = true``), ``--scale auto|none|S``
(the measurement and ground truth are divided by ``S``; ``auto`` -- the default for CT and MRI --
brings images to about [0, 1], see :func:`.common.resolve_scale`; recorded as
``meta["intensity_scale"]``), ``--key NAME`` (the measurement's dataset in an NPZ/MAT/HDF5 file;
any array argument also takes ``FILE:NAME``) and ``--slice I`` (a stack's slice, default the middle
one). Arrays are read from NPY, NPZ, TIFF, MAT (v5 and v7.3) and HDF5 (:mod:`.arrays`).

Bad input -- unreadable files, missing keys, shapes that disagree, NaN or Inf, an unwritable
output -- is a one-line :class:`~dipkit.errors.DipkitError` (``dipkit: error: ...``, exit code 2)
and the problem file is written atomically, so nothing is ever half-written.
"""

from __future__ import annotations

from typing import Any

from ..errors import DipkitError

__all__ = ["IMPORT_TASKS", "import_problem"]

#: task -> (measurement option, importer module)
IMPORT_TASKS = {
    "ct": ("sinogram", "ct"),
    "ct-fan": ("sinogram", "ct"),
    "mri": ("kspace", "mri"),
    "mri-multicoil": ("kspace", "mri"),
    "denoise": ("image", "images"),
    "inpaint": ("image", "images"),
    "deblur": ("image", "images"),
    "superres": ("image", "images"),
}


def import_problem(task: str, **options: Any):
    """Build a :class:`~dipkit.problem.Problem` for ``task`` from measured data; ``options`` are
    the keyword arguments of :func:`.ct.import_ct`, :func:`.mri.import_mri` or
    :func:`.images.import_image_task` (the CLI flags with ``-`` as ``_``)."""
    if task not in IMPORT_TASKS:
        raise DipkitError(f"unknown task {task!r} (choose from {', '.join(IMPORT_TASKS)})")
    kind = IMPORT_TASKS[task][1]
    if kind == "ct":
        from .ct import import_ct

        return import_ct(task=task, **options)
    if kind == "mri":
        from .mri import import_mri

        return import_mri(task=task, **options)
    from .images import import_image_task

    return import_image_task(task=task, **options)
