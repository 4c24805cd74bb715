"""A run's configuration: :class:`RunConfig` (typed dataclasses merged with OmegaConf), the YAML presets and
their composition from ``model/``, ``dataset/`` and ``override/`` fragments, and ``key=value`` overrides.
No Lightning here: a config can be read, checked and printed without the training engine.

The preset files (:mod:`.presets`) are read without importing torch (``scenedecomp presets`` answers
at once); the typed schema (:mod:`.run`) assembles the models' own settings and so imports them on first use.
"""

from .presets import CONFIG_DIR, PresetError, list_presets, preset_layers, preset_path, read_yaml

_SCHEMA = ("ConfigError", "DataConfig", "OptimConfig", "RunConfig", "TrainerConfig", "config_from_dict", "load_config",
           "to_dict", "to_yaml", "validate")

__all__ = ["CONFIG_DIR", "PresetError", "list_presets", "preset_layers", "preset_path", "read_yaml", *_SCHEMA]


def __getattr__(name: str):
    if name in _SCHEMA:
        from . import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
