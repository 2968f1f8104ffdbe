"""CLI commands: forget, evict, prune (issue 4).

Defined on the group from ``tui.cli``, which imports this module once the group exists.
"""

from __future__ import annotations
