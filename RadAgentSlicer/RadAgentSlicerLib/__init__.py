"""Headless helpers of the RadAgentSlicer module: MRML I/O, planning logic, worker process, batch mode.

Nothing here imports ``qt`` or ``ctk``: the Widget, the Python console, batch mode and the tests outside
Slicer (on ``slicer-core``) all use the same code.
"""
