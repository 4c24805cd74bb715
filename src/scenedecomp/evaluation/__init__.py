"""Scoring a trained run: held-out metrics and decomposition figures (:mod:`.evaluate`), the latents scored
against ground-truth factors (:mod:`.latents`), latent traversals and slot swaps (:mod:`.latent_figures`),
the model folder export and its check (:mod:`.export`) and the one-page report (:mod:`.report`)."""
