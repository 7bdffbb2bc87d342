"""``dipkit import``: build a problem file from measured data (see :mod:`dipkit.importers`).

Examples::

    dipkit import --task ct --sinogram sino.npy --angles angles.txt --convention skimage --out ct.npz
    dipkit import --task ct --sinogram scan.h5:sino --geometry scan.yaml --out ct.npz
    dipkit import --task ct-fan --sinogram fan.npy --views 360 --geometry fan.yaml --out fan.npz
    dipkit import --task mri-multicoil --kspace file_brain.h5 --estimate-coil-maps --out mri.npz
    dipkit import --task inpaint --image photo.png --mask holes.png.npy --out hole.npz
"""

from __future__ import annotations

from ..errors import DipkitError
from .common import Verb, nonneg_float, positive_int

__all__ = ["IMPORT"]

#: flags each task takes besides --task, --out and the common ones
_CT_FLAGS = ("sinogram", "angles", "views", "arc", "geometry", "convention", "image_size")
_TASK_FLAGS = {
    "ct": _CT_FLAGS,
    "ct-fan": _CT_FLAGS,
    "mri": ("kspace", "mask", "convention"),
    "mri-multicoil": ("kspace", "mask", "coil_maps", "estimate_coil_maps", "convention"),
    "denoise": ("image",),
    "inpaint": ("image", "mask"),
    "deblur": ("image", "kernel"),
    "superres": ("image", "factor", "filter"),
}
_COMMON = ("key", "slice_index", "ground_truth", "noise_std", "scale")
_ALL = sorted({f for flags in _TASK_FLAGS.values() for f in flags})


def _flag(name: str) -> str:
    return "--" + {"slice_index": "slice"}.get(name, name).replace("_", "-")


def add_arguments(s) -> None:
    s.add_argument("--task", required=True, choices=list(_TASK_FLAGS),
                   help="ct, ct-fan (--sinogram), mri, mri-multicoil (--kspace), denoise, inpaint, "
                        "deblur, superres (--image)")
    s.add_argument("--out", required=True, help="problem file to write (.npz)")
    m = s.add_argument_group("measurement (one, by task)")
    m.add_argument("--sinogram", help="CT sinogram: FILE or FILE:KEY (NPY, NPZ, TIFF, MAT, HDF5)")
    m.add_argument("--kspace", help="MRI k-space (complex): FILE or FILE:KEY; fastMRI HDF5 works")
    m.add_argument("--image", help="degraded image: PNG/JPEG/TIFF/NPY/DICOM, or FILE:KEY")
    m.add_argument("--key", help="dataset / variable / member name in the measurement file")
    m.add_argument("--slice", dest="slice_index", type=int, default=None, metavar="I",
                   help="slice of a stacked measurement (first axis; default the middle one)")
    c = s.add_argument_group("CT")
    c.add_argument("--angles", help="view angles: FILE (text, NPY, ...), in the convention's unit")
    c.add_argument("--views", type=positive_int, help="N equispaced views (k·ARC/N degrees)")
    c.add_argument("--arc", type=float, help="angular range of --views in degrees (default 180 "
                                             "parallel, 360 fan)")
    c.add_argument("--geometry", help="geometry YAML (angles, detector, COR offset, pixel size, "
                                      "fan distances; see dipkit.importers.ct)")
    c.add_argument("--convention", help="CT: dipkit (default), skimage, astra; MRI k-space: "
                                        "centred (default, fastMRI/deepinv) or numpy")
    c.add_argument("--image-size", type=positive_int, help="CT image size N (default: the ground "
                                                            "truth's, else from the detector)")
    r = s.add_argument_group("MRI")
    r.add_argument("--mask", help="sampling mask (MRI: [W] or [H, W]) / kept pixels (inpaint)")
    r.add_argument("--coil-maps", help="coil sensitivities [coils, H, W] (complex)")
    r.add_argument("--estimate-coil-maps", action="store_true", default=None,
                   help="estimate coil maps from the fully sampled k-space centre (low-resolution "
                        "sum-of-squares method)")
    i = s.add_argument_group("restoration")
    i.add_argument("--kernel", help="deblur: blur kernel (2-D, odd sizes)")
    i.add_argument("--factor", type=positive_int, help="superres: down-sampling factor ≥ 2")
    i.add_argument("--filter", help="superres: bicubic (default), bilinear, gaussian, sinc, none")
    g = s.add_argument_group("common")
    g.add_argument("--ground-truth", help="reference image for PSNR/SSIM (benchmarking)")
    g.add_argument("--noise-std", type=nonneg_float,
                   help="the measurement's noise std in its own units (default: estimated)")
    g.add_argument("--scale", default=None,
                   help="divide the data by: auto (default for CT/MRI: ground truth max, else a "
                        "robust max of the naive reconstruction), none (default otherwise), or a number")


def run(args) -> int:
    from ..importers import IMPORT_TASKS, import_problem

    task = args.task
    allowed = set(_TASK_FLAGS[task]) | set(_COMMON)
    given = {k: getattr(args, k) for k in (*_ALL, *_COMMON) if getattr(args, k, None) is not None}
    wrong = sorted(set(given) - allowed)
    if wrong:
        raise DipkitError(f"--task {task} does not take " + ", ".join(_flag(w) for w in wrong))
    measurement = IMPORT_TASKS[task][0]
    if measurement not in given:
        raise DipkitError(f"--task {task} needs --{measurement} FILE")
    if "estimate_coil_maps" in given:
        given["estimate_coil_maps"] = bool(given["estimate_coil_maps"])
    if "scale" not in given:
        given["scale"] = "none" if measurement == "image" else "auto"
    problem = import_problem(task, **given)
    out = problem.save(args.out)
    meta = problem.meta
    shape = "×".join(str(s) for s in problem.img_shape[1:])
    sigma = meta.get("noise_sigma")
    extra = " (estimated)" if meta.get("noise_sigma_estimated") else ""
    print(f"wrote {out}  ({task}, image {shape}, measurement {'×'.join(map(str, problem.y.shape[1:]))}, "
          f"scale {meta.get('intensity_scale', 1.0):.4g}, noise σ = {sigma:.4g}{extra}"
          + (", with ground truth" if problem.x_true is not None else "") + ")")
    return 0


IMPORT = Verb("build a problem file from measured data (CT sinogram, MRI k-space, degraded image)",
              run, add_arguments,
              "Build a problem file from a measurement made outside dipkit: a CT sinogram with its "
              "angles and geometry, MRI k-space with its mask (and coil maps), or a degraded image. "
              "See dipkit.importers for formats, conventions and the geometry YAML.")
