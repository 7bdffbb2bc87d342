r"""Self-validation: hold out a random part of the measurement and fit on the rest.

Users have no ground truth, but the measurement can check itself: a seeded random fraction of the
*measured entries* is held out (rays for CT, k-space samples for MRI, observed pixels for the image
tasks), every method fits the remaining entries, and the misfit on the held-out entries — which the
fit never saw — tracks how well the reconstruction predicts new data. Its minimum over the
iterations (the :class:`~dipkit.stopping.val.Validation` rule) or over a grid of settings
(``dipkit tune``) chooses without a ground truth.

An *entry* is a position on the last two axes of the measurement (detector × view for a sinogram,
k-space row × column for MRI, pixel row × column for images), shared by the leading channel axes
(the real and imaginary part, every coil, the colour channels). Only measured entries are held out:
where the operator has a sampling mask (``physics.mask``: MRI lines, inpainting pixels) the
unmeasured positions are excluded.

:class:`MaskedPhysics` is the *fit view* of the operator, :math:`A_{\mathrm{fit}} = M A` with the
0/1 mask :math:`M` of the entries kept for fitting, and :math:`A_{\mathrm{fit}}^\top = A^\top M`;
with :math:`y_{\mathrm{fit}} = M y` every method's data term
:math:`\tfrac12\|A_{\mathrm{fit}}x - y_{\mathrm{fit}}\|^2` is the data term over the kept entries,
so every method works unchanged. Its ``A_dagger`` (used for FBP / A†y network inputs) applies the
full operator's to the measurement with the held-out entries *filled in* from the kept ones
(:meth:`ValidationSplit.fill`), so no held-out value reaches the network's input.

**Sinograms: held-out views and a ramp-filtered score.** For CT (layout ``[..., detector, views]``)
the split can hold out whole *views* instead (``split="views"``): of the :math:`V` measured views
(views with any measured entry), :math:`n = \max(1, \mathrm{round}(f V))` are held out, one drawn
at random in each of :math:`n` equal consecutive blocks of views (block :math:`k` is views
:math:`\lfloor kV/n \rfloor \dots \lfloor (k+1)V/n \rfloor - 1`), so they spread over the angular
range of an equispaced scan. A random held-out ray is predicted almost exactly by its fitted
neighbours in the same view, so its misfit mostly sees the noise and the low-frequency error; a
held-out view asks what the reconstruction predicts at an angle the fit never saw — the question
of sparse-view CT. The held-out views' residual can be scored after the ramp filter
:math:`F` of FBP (``score="ramp"``, :func:`dipkit.physics.ct_fbp.ramp_filter`, along the detector,
zero-padded as FBP does):

.. math:: v_{\mathrm{ramp}}(x) = \frac{1}{|H|}\sum_{v \in H_V}\big\|F\,[(Ax - y)_{\cdot v} \odot m_{\cdot v}]\big\|^2 ,

:math:`H_V` the held-out views, :math:`m` the 0/1 map of the held-out entries, :math:`|H|` their
number (all detector cells of the held-out views, times the leading channel axes). By the Fourier
slice theorem a view's residual is a slice of the image error's 2-D spectrum, and :math:`F`
weights it by :math:`|\omega|`, so :math:`v_{\mathrm{ramp}}` weights the image error's
spectrum by :math:`|\omega|^2` along the held-out directions, where the plain misfit
(``score="raw"``) weights it by 1 — dominated by the low frequencies. The noise adds a constant
(:math:`\sigma^2 \|F\|_F^2 / n_{det}` per entry in expectation), which moves no minimum.

**Cartesian MRI: held-out lines** (``split="lines"``). A held-out k-space sample on a measured line
is predicted almost exactly by the rest of its line (the line is the 1-D spectrum of an image of
finite support), so the entries misfit mostly sees the noise and the measured frequencies — while
the image error of undersampled MRI lives on the *unmeasured* lines. The ``lines`` split holds out
whole measured columns, :math:`n = \mathrm{round}(f L)` of the :math:`L` measured lines but at least
two (one where only two lines are eligible), drawn from the measured lines *outside* the fully
sampled centre (:func:`outer_lines`). Those were drawn from the same outer columns as the
unmeasured lines, so a held-out outer line is a sample of what the reconstruction predicts where
nothing was measured, and by Parseval its raw squared misfit (the centred FFT is unitary) is, up
to the noise constant, the image error's energy at that frequency column. The error energy falls
fast with the distance from the centre, so the draw is stratified by distance: the eligible lines
are ordered nearest the centre first and one is drawn in each of :math:`n` equal blocks of that
order — a single far line (mostly noise) cannot be the whole score: on the ``mr`` slice at 64²
(4×, 16 lines) one held-out line (column 51, 19 from the centre) ranked the deep decoder first
and TV last in ``--method auto``. The default on single-coil Cartesian MRI, and why:
:func:`dipkit.run.resolve.resolve_validation` (``benchmarks/results/mri-validation.md``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import DipkitError

__all__ = ["ValidationSplit", "MaskedPhysics", "measured_support", "outer_lines", "SPLITS", "SCORES"]


def measured_support(physics, y: torch.Tensor) -> torch.Tensor:
    """Boolean ``[H, W]`` map of the measured positions on the last two axes of ``y``: the
    operator's sampling mask when it has one of that shape (MRI, inpainting), else everything.
    For a fit view (:class:`MaskedPhysics`) the entries held out of it are not measured either, so a
    split *inside* a fit view (e.g. TV's α search in a run that has a validation split) holds out
    only entries the fit view really has — not zeros it never saw."""
    h, w = y.shape[-2:]
    if isinstance(physics, MaskedPhysics):
        return measured_support(physics.base, y) & (physics.keep.reshape(-1, h, w).amax(0) > 0).to(y.device)
    mask = getattr(physics, "mask", None)
    if isinstance(mask, torch.Tensor) and mask.ndim >= 2 and tuple(mask.shape[-2:]) == (h, w):
        return (mask.detach().reshape(-1, h, w).abs().amax(0) > 0).to(y.device)
    return torch.ones((h, w), dtype=torch.bool, device=y.device)


class MaskedPhysics:
    r"""The fit view :math:`M A` of a linear operator (see the module docs).

    ``A``, ``A_adjoint`` and ``A_dagger`` as above; everything else (``spec``, ``img_size``, …)
    is the base operator's. ``keep`` is the 0/1 mask ``[H, W]`` of the fitted entries; methods that
    use the measurement itself as an image (aSeqDIP's ``z0 = y``) take ``fill(y)``.
    """

    def __init__(self, base, keep: torch.Tensor, fill):
        self.base, self.keep = base, keep
        #: ``fill(y)``: the measurement with its held-out entries completed from the kept ones
        self.fill = fill

    def A(self, x, **kwargs):
        return self.base.A(x, **kwargs) * self.keep

    def A_adjoint(self, y, **kwargs):
        return self.base.A_adjoint(y * self.keep, **kwargs)

    def A_dagger(self, y, **kwargs):
        return self.base.A_dagger(self.fill(y), **kwargs)

    def __getattr__(self, name):
        # the base operator's other attributes (spec, img_size, measurement_shape, …)
        if name in ("base", "keep", "fill"):
            raise AttributeError(name)
        return getattr(self.base, name)

    def to(self, device):
        self.base = self.base.to(device)
        self.keep = self.keep.to(device)
        return self

    def __repr__(self):
        return f"MaskedPhysics({type(self.base).__name__}, kept {int(self.keep.sum())}/{self.keep.numel()})"


#: what a split holds out: single measured entries, whole views of a sinogram, or whole k-space lines
#: outside the fully sampled centre (Cartesian MRI)
SPLITS = ("entries", "views", "lines")


def outer_lines(support: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The columns of a Cartesian line mask a ``lines`` split may hold out, nearest the zero frequency
    first (then by index), and the number of measured columns, from the ``[H, W]`` map of measured
    positions (:func:`measured_support`): of the fully measured columns (every row measured), those
    outside the *fully sampled centre* — the run of consecutive measured columns that contains the
    zero frequency (column ``W // 2``, the centred FFT's). A column measured in some rows only makes
    the mask not a line mask.

    :raises DipkitError: for a mask that is not made of whole columns, or has no measured column outside
        its centre block."""
    s = support.cpu()
    measured = s.any(0)
    full = s.all(0)
    if not bool(measured.any()) or bool((measured & ~full).any()):
        raise DipkitError("validation.split=lines holds out whole k-space lines: it needs a Cartesian line mask "
                          "(every sampled column sampled in every row)")
    w = s.shape[-1]
    lo = hi = w // 2
    if bool(full[w // 2]):
        while lo > 0 and bool(full[lo - 1]):
            lo -= 1
        while hi < w - 1 and bool(full[hi + 1]):
            hi += 1
        centre = torch.zeros(w, dtype=torch.bool)
        centre[lo:hi + 1] = True
    else:
        centre = torch.zeros(w, dtype=torch.bool)
    pool = torch.nonzero(full & ~centre).squeeze(1)
    if pool.numel() == 0:
        raise DipkitError("validation.split=lines: no sampled k-space line lies outside the fully sampled centre")
    distance = (pool - w // 2).abs()
    order = sorted(range(pool.numel()), key=lambda i: (int(distance[i]), int(pool[i])))
    return pool[order], int(full.sum())


#: how the held-out residual is scored: plain squares, or squares after the ramp filter (views only)
SCORES = ("raw", "ramp")


class ValidationSplit:
    """A seeded random hold-out of ``fraction`` of the measured entries (or views) of ``y`` (module docs).

    :param physics: the full operator.
    :param y: the measurement ``[B, ...]`` (the same split for every sample of the batch).
    :param fraction: share of the measured entries (``split="views"``: of the measured views;
        ``"lines"``: of the measured k-space lines) held out, in (0, 0.5].
    :param seed: seed of the split (independent of the run's seed, so runs with different seeds —
        ensemble members, grid points of ``dipkit tune`` — see the same split).
    :param fill: how :meth:`fill` completes held-out entries for network inputs: ``"neighbours"``
        (mean of the kept 3×3 neighbours, repeated for clusters: sinograms and images; a held-out
        view gets the mean of its two neighbouring views, each averaged over 3 detector cells) or
        ``"zero"`` (k-space, where zero-filling is the convention).
    :param split: ``"entries"`` (random measured entries) or ``"views"`` (whole views — the last
        axis — of a sinogram, spread over the views; at least one). Which measurements are
        sinograms is the caller's business (:func:`dipkit.run.resolve.make_split`); or ``"lines"``
        (whole k-space columns of a Cartesian line mask, drawn from the measured ones outside the fully
        sampled centre, :func:`outer_lines`; spread over them as views are).
    :param score: ``"raw"`` (mean squared held-out misfit) or ``"ramp"`` (the same after the ramp
        filter along the detector axis, the second-last; needs ``split="views"``).
    :param fold: ``split="entries"``: which block of the seeded permutation of the measured entries
        is held out: fold ``k`` holds out its entries ``k·n … (k+1)·n − 1`` (``n`` = ``fraction`` of
        the measured entries), so folds ``0 … K−1`` of one seed are disjoint (``K·fraction ≤ 1``);
        fold 0 is the split of earlier versions.
    """

    def __init__(self, physics, y: torch.Tensor, *, fraction: float = 0.05, seed: int = 0,
                 fill: str = "neighbours", split: str = "entries", score: str = "raw",
                 fold: int = 0):
        if not 0.0 < float(fraction) <= 0.5:
            raise DipkitError(f"validation.fraction must be in (0, 0.5], got {fraction}")
        if int(fold) != fold or fold < 0:
            raise DipkitError(f"fold must be an integer ≥ 0, got {fold}")
        if y.ndim < 3:
            raise DipkitError(f"a validation split needs a measurement with two trailing axes, got {tuple(y.shape)}")
        if split not in SPLITS:
            raise DipkitError(f"validation.split must be one of {', '.join(SPLITS)}, got {split!r}")
        if score not in SCORES:
            raise DipkitError(f"validation.score must be one of {', '.join(SCORES)}, got {score!r}")
        if score == "ramp" and split != "views":
            raise DipkitError("validation.score=ramp filters whole held-out views: it needs validation.split=views")
        self.physics, self.y, self.fraction, self.seed = physics, y, float(fraction), int(seed)
        self.split, self.score = split, score
        support = measured_support(physics, y)
        self.fold = int(fold)
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        self.views: list[int] | None = None  # the held-out views (split=views) or k-space lines (split=lines)
        if split == "entries":
            n_measured = int(support.sum())
            n_out = int(round(self.fraction * n_measured))
            if n_out < 1 or n_out >= n_measured:
                raise DipkitError(f"cannot hold out {self.fraction:.0%} of {n_measured} measured entries")
            if (self.fold + 1) * n_out > n_measured:
                raise DipkitError(f"fold {self.fold} of {self.fraction:.0%} hold-outs does not fit in "
                                  f"{n_measured} measured entries")
            idx = torch.nonzero(support.cpu().reshape(-1)).squeeze(1)
            chosen = idx[torch.randperm(idx.numel(), generator=gen)[self.fold * n_out:(self.fold + 1) * n_out]]
            held = torch.zeros(support.numel(), dtype=torch.bool)
            held[chosen] = True
            held = held.reshape(support.shape)
        else:
            if self.fold:
                raise DipkitError("folds (fold > 0) are for the entries split")
            if split == "views":
                pool = torch.nonzero(support.cpu().any(0)).squeeze(1)
                n_out = max(1, int(round(self.fraction * pool.numel())))
                if n_out >= pool.numel():
                    raise DipkitError(f"cannot hold out {n_out} of {pool.numel()} measured views "
                                      "(validation.split=views)")
            else:
                pool, n_measured = outer_lines(support)  # nearest the centre first
                # at least two where three or more are eligible: one nearer the centre, one farther out
                n_out = max(1 if pool.numel() < 3 else 2, int(round(self.fraction * n_measured)))
                if n_out >= pool.numel():
                    raise DipkitError(f"cannot hold out {n_out} k-space lines: {pool.numel()} measured lines lie "
                                      "outside the fully sampled centre (validation.split=lines)")
            bounds = [(k * pool.numel()) // n_out for k in range(n_out + 1)]
            picks = [lo + int(torch.randint(hi - lo, (1,), generator=gen)) for lo, hi in zip(bounds, bounds[1:])]
            self.views = sorted(int(pool[i]) for i in picks)
            held = torch.zeros(support.shape, dtype=torch.bool)
            held[:, self.views] = True
            held &= support.cpu()
        self.held_out = held.to(y.device)
        self.keep = (~self.held_out).to(y.dtype)
        self.n_held_out = int(held.sum())
        # entries per held-out position (the leading non-batch axes: channels, coils, real/imag)
        self._per_position = int(y[0].numel() // (y.shape[-1] * y.shape[-2]))
        if fill not in ("neighbours", "zero"):
            raise DipkitError(f"fill must be 'neighbours' or 'zero', got {fill!r}")
        self.fill_mode = fill

    # ------------------------------------------------------------------ views
    def fit_physics(self) -> MaskedPhysics:
        """The operator restricted to the fitted entries."""
        return MaskedPhysics(self.physics, self.keep, self.fill)

    def fit_y(self) -> torch.Tensor:
        """The measurement with the held-out entries set to zero (what the fit sees)."""
        return self.y * self.keep

    @torch.no_grad()
    def fill(self, y: torch.Tensor) -> torch.Tensor:
        """``y`` with the held-out entries replaced from the kept ones (for network inputs only)."""
        if self.fill_mode == "zero":
            return y * self.keep
        lead = y.shape[:-2]
        h, w = y.shape[-2:]
        v = (y * self.keep).reshape(-1, 1, h, w)
        known = self.keep.expand(v.shape[0], 1, h, w).clone()
        kernel = torch.ones((1, 1, 3, 3), dtype=v.dtype, device=v.device)
        for _ in range(8):  # grow into clusters of held-out entries; 5 % random holes need one pass
            s = F.conv2d(v * known, kernel, padding=1)
            n = F.conv2d(known, kernel, padding=1)
            new = (known == 0) & (n > 0)
            if not bool(new.any()):
                break
            v = torch.where(new, s / n.clamp_min(1), v)
            known = torch.where(new, torch.ones_like(known), known)
        return v.reshape(*lead, h, w)

    # ------------------------------------------------------------------ validation
    def misfit(self, x: torch.Tensor) -> torch.Tensor:
        r"""Per-sample score of ``x`` on the held-out entries, shape ``[B]`` (on the device):
        ``score="raw"``: the mean squared misfit :math:`\frac{1}{|H|}\sum_{i\in H} ((Ax)_i - y_i)^2`;
        ``score="ramp"``: :math:`\frac{1}{|H|}\sum_{v\in H_V}\|F[(Ax-y)_{\cdot v}\odot m_{\cdot v}]\|^2`
        with the ramp filter :math:`F` along the detector (module docs)."""
        return self.residual(x).pow(2).sum(1) / (self.n_held_out * self._per_position)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        r"""The held-out residual of ``x`` that :meth:`misfit` scores, flattened per sample, shape
        ``[B, M]``: :math:`((Ax - y)\odot m_H)` (``raw``; zero off the held-out entries) or its
        ramp-filtered held-out views (``ramp``). Linear in :math:`Ax - y`, so the residual of a convex
        combination of images is the same combination of their residuals (``auto``'s stacking,
        :func:`dipkit.run.auto.stack_weights`)."""
        r = (self.physics.A(x) - self.y) * self.held_out
        if self.score == "ramp":
            from .ct_fbp import ramp_filter

            r = ramp_filter(r[..., self.views])
        return r.flatten(1)

    def entry_scores(self, x: torch.Tensor) -> torch.Tensor:
        r"""The held-out score of ``x`` entry by entry, pooled over the batch: a 1-D tensor whose mean
        over the entries of one sample is :meth:`misfit` (``score="raw"``: the squared misfit of each
        held-out entry; ``"ramp"``: of each entry of the filtered held-out views, scaled so that the
        mean is the same). Two images' paired differences of these give the standard error of the
        difference of their misfits (:mod:`dipkit.run.auto`'s one-standard-error rule)."""
        r = (self.physics.A(x) - self.y) * self.held_out
        if self.score == "ramp":
            from .ct_fbp import ramp_filter

            r = ramp_filter(r[..., self.views]).pow(2)
            per_sample = r[0].numel()
            return (r * (per_sample / (self.n_held_out * self._per_position))).reshape(-1)
        held = self.held_out.expand(r.shape)
        return r.pow(2)[held]

    def describe(self) -> dict:
        """The split's settings and size, for ``metrics.json`` (``views``: the held-out views, or null;
        ``lines``: the held-out k-space lines of a ``lines`` split)."""
        out = {"fraction": self.fraction, "seed": self.seed, "held_out": self.n_held_out, "fill": self.fill_mode,
               "split": self.split, "score": self.score,
               "views": self.views if self.split == "views" else None}
        if self.split == "lines":
            out["lines"] = self.views
        if self.fold:
            out["fold"] = self.fold
        return out
