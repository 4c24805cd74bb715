"""Using a trained run: :func:`~.run.load_run` (a run directory, checkpoint, model folder or
``pretrained:NAME`` to a :class:`~.run.LoadedRun`: the plain model, its config and geometry, and the one
rule for K at inference), model folders (:mod:`.pretrained`), a run's datasets and loaders (:mod:`.loaders`),
reading images (:mod:`.images`) and decomposing them with their writers (:mod:`.decompose`)."""
