"""``python -m scenedecomp.cli``: the ``scenedecomp`` command."""

import sys

from . import main

sys.exit(main())
