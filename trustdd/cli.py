"""What every stage script shares: params loading and user-facing errors."""

from __future__ import annotations

import sys
from typing import Callable

from trustdd.datasets import DataNotFoundError
from trustdd.image_sources import ImageSourceError
from trustdd.params import ParamsError

USER_ERRORS = (ParamsError, DataNotFoundError, ImageSourceError, NotImplementedError, FileNotFoundError)


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage; a user error (bad param, missing data) prints one clear message and exits 2."""
    try:
        main()
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
