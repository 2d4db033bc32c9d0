"""The index run's progress bar: paragraphs encoded (with rate and ETA), articles read as a postfix.

Encoding is where an index run spends its time, so the bar counts paragraphs to encode. Its total
grows as each batch is planned (a batch's new paragraphs are only known once it is fetched, split
and compared with the table), and it moves after every encode chunk (``tasks.encode``), not once per
512-article batch. The bar writes to stderr only: stdout stays clean for ``--json``.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from typing import TextIO

from tasks import encode


class IndexProgress:
    """A tqdm bar over paragraphs to encode, registered as the run's :class:`tasks.encode.EncodeProgress`."""

    def __init__(self, file: TextIO | None = None) -> None:
        from tqdm import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self.articles = 0
        # Console log lines (Prefect's handler sits on the root logger) are written above the bar, not through it.
        self._redirect = contextlib.ExitStack()
        self._redirect.enter_context(logging_redirect_tqdm(loggers=[logging.getLogger()]))
        self.bar = tqdm(total=0, unit="para", desc="encoding", file=file or sys.stderr, dynamic_ncols=True,
                        postfix="0 articles read")
        # Set, not a with-block: the flow creates and closes the bar at two points of a long function.
        self._token: contextvars.Token | None = encode.start_reporting(self)

    def planned(self, n: int) -> None:
        """``n`` more paragraphs will be encoded: the total (and the ETA) grows."""
        if self.bar.n == 0:
            # Nothing encoded yet: restart the clock, so the time spent loading the model and reading the
            # first batch is not counted in the encoding rate and ETA.
            self.bar.reset(total=self.bar.total + n)
        else:
            self.bar.total += n
        self.bar.refresh()

    def encoded(self, n: int) -> None:
        """``n`` paragraphs were just encoded."""
        self.bar.update(n)

    def articles_read(self, n: int) -> None:
        """A batch of ``n`` articles was fetched or read, split and written (or found unchanged)."""
        self.articles += n
        self.bar.set_postfix_str(f"{self.articles} articles read")

    def close(self) -> None:
        """Close the bar and stop reporting encodes to it (idempotent)."""
        if self._token is not None:
            encode.stop_reporting(self._token)
            self._token = None
            self.bar.close()
            self._redirect.close()
