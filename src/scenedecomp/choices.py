"""Config choices as enums that read, write and compare like their names.

A :class:`Choice` is a ``str`` enum whose members' values equal their names. OmegaConf reads a member
from its name (in YAML and in ``key=value`` overrides), writes the name back to ``config.yaml``, and
refuses any other value with one line naming the key and the allowed names. Because a member *is* a
``str``, code may compare it with plain strings (``cfg.type == "resnet"``), and ``str()``, f-strings and
JSON give the bare name.
"""

from __future__ import annotations

from enum import Enum


class Choice(str, Enum):
    """Base of every config choice (members are declared as ``name = "name"``)."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(member.value for member in cls)
