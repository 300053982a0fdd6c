"""``python -m trio_aio``: which backend runs here and why; ``python -m trio_aio bench``.

See :mod:`trio_aio._diagnose` (``python -m trio_aio --help``).
"""

from __future__ import annotations

import sys

from trio_aio._diagnose import main

if __name__ == "__main__":
    sys.exit(main())
