"""CLI commands: check, repair, key (issue 6).

Defined on the group from ``tui.cli``, which imports this module once the group exists.
"""

from __future__ import annotations
