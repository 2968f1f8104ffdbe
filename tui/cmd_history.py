"""CLI commands: watch, log, ref, tag, pin/unpin, undo (issue 3).

Defined on the group from ``tui.cli``, which imports this module once the group exists.
"""

from __future__ import annotations
