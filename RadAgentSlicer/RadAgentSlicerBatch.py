"""Batch planning script: ``Slicer --no-main-window --python-script RadAgentSlicerBatch.py -- ARGS``.

Also runs outside Slicer: ``python RadAgentSlicerBatch.py ARGS`` with ``radagent`` and ``slicer-core``
installed. ``--help`` lists the arguments; see ``RadAgentSlicerLib/batch.py`` for the exit statuses.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from RadAgentSlicerLib.batch import main

if __name__ == "__main__":
    status = main(sys.argv[1:])
    import slicer

    app = getattr(slicer, "app", None)
    if app is not None:  # inside Slicer: let pending events finish, then exit with the status
        slicer.util.exit(status)
    else:
        sys.exit(status)
