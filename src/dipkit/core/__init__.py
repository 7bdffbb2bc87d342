"""The layer under :mod:`dipkit.methods` and :mod:`dipkit.baselines`: what both need.

Methods and baselines import from here, never from each other's packages, and nothing here imports
:mod:`dipkit.methods`, :mod:`dipkit.baselines` or :mod:`dipkit.inputs`, so their imports all point
downward (``tests/test_import_cycles.py`` fails on any import cycle in ``src/dipkit``):

* :mod:`dipkit.core.method`: the method interface (:class:`~dipkit.core.method.Method`), the data
  term (:func:`~dipkit.core.method.data_fidelity`, :func:`~dipkit.core.method.data_term`), the
  parameter checks and input perturbation; re-exported by :mod:`dipkit.methods.base`;
* :mod:`dipkit.core.baseline`: :class:`~dipkit.core.baseline.Baseline`, a method without a network;
  re-exported by :mod:`dipkit.baselines.base`;
* :mod:`dipkit.core.direct`: the direct reconstructions ``A†y``: FBP for CT
  (:func:`~dipkit.core.direct.fbp`), least squares by CG for any operator
  (:func:`~dipkit.core.direct.least_squares`); re-exported by :mod:`dipkit.baselines.fbp` and
  :mod:`dipkit.baselines.naive`;
* :mod:`dipkit.core.tv`: the TV solver by PDHG at given weights (:class:`~dipkit.core.tv.TVSolver`);
  the registered method ``tv`` (:class:`dipkit.baselines.tv.TV`) adds the weight's choice;
* :mod:`dipkit.core.tv_alpha`: TV's ground-truth-free weight (:func:`~dipkit.core.tv_alpha.choose_alpha`),
  used by the ``tv`` baseline and by ``dip-tv``; re-exported by :mod:`dipkit.baselines.tv_alpha`.

Importing this package imports none of its modules.
"""
