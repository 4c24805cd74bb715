"""``python -m scenedecomp``: the ``scenedecomp`` command."""

import sys

from .cli import main

sys.exit(main())
