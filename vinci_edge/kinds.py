"""What an LLM input position holds: text, or a row of one medium's encoder output.

One spelling everywhere: `Kind.VIDEO` is the plan's code (the int the stitch kernels read, see
cpp_ext/crte_capi.h), `Kind.VIDEO.label` ("video") is what people read in `--json` output and
reports, and every table keyed by medium (placeholders, encoders, banks) is keyed by `Kind`.
"""

from __future__ import annotations

import enum


class Kind(enum.IntEnum):
    TEXT = 0
    VIDEO = 1
    AUDIO = 2
    IMAGE = 3

    @property
    def label(self) -> str:
        return self.name.lower()


MEDIA_KINDS: tuple[Kind, ...] = (Kind.VIDEO, Kind.AUDIO, Kind.IMAGE)
