"""Training: one LightningModule for every model (:mod:`.module`), ``train`` (:mod:`.train`), its callbacks,
exact resume (:mod:`.resume`), the divergence guard (:mod:`.divergence`) and a preset over several seeds
(:mod:`.seeds`). A run directory::

    <out_dir>/<name>/
      config.yaml        resolved configuration
      env.json           package versions, git commit, command line, seed, machine
      checkpoints/       last.ckpt and periodic step*.ckpt (:func:`scenedecomp.load_run` reads them)
      tensorboard/       scalars (loss terms, metrics) and decomposition images
      history.jsonl      validation metrics vs step and wall-clock
      metrics.json       held-out metrics (``scenedecomp evaluate``; written at the end of training)
      figures/           decomposition figures, the metric curve
"""
