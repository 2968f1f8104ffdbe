"""CLI commands: copy between repositories (issue 7).

Defined on the group from ``tui.cli``, which imports this module once the group exists.
"""

from __future__ import annotations
