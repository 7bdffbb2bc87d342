"""Building and running one reconstruction: from a :class:`~dipkit.run.config.RunConfig` and a
:class:`~dipkit.problem.Problem` to a run directory.

=================  ==============================================================================
module             what it holds
=================  ==============================================================================
``config``         :class:`RunConfig`: the one place a run's settings are parsed and validated
``resolve``        the defaults that depend on the problem or the network; the validation split
``runner``         one method's run on the engine: State, callbacks, resume, refit, the result
``auto``           ``--method auto``: a portfolio of candidates ranked by held-out misfit
``batched``        the seeds of one method as one batched engine run (``dipkit bench``)
``summary``        a finished run's summary records (selections, ensemble, uncertainty)
``rundir``         the run directory: file names, writing, reading back, completeness
``pictures``       ``progress.png`` and ``overview.png``
``tune``           ground-truth-free grid search (``dipkit tune``)
``warmstart``      pre-training a network for warm starts (``dipkit pretrain``)
=================  ==============================================================================

The package imports nothing itself, so ``import dipkit.run.config`` stays light (no torch).
"""
