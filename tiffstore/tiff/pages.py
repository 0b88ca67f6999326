"""Pages that only tifffile decodes (packed bits, volumetric tiles, odd layouts).

The reader plans such pages as ``tifffile`` pieces; this decodes them, each from
its own IFD, so a page costs its IFD rather than a parse of the whole file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO

import numpy as np
import tifffile

from tiffstore._compat import open_tiff_file
from tiffstore.errors import TiffReadError, TiffStoreError
from tiffstore.tiff.layout import FileLayout

__all__ = ["read_pages_with_tifffile"]


def read_pages_with_tifffile(
    fh: IO[bytes] | str, layout: FileLayout, pages: Sequence[int], name: str
) -> list[np.ndarray]:
    """Decode pages of a file through tifffile, for what segments cannot describe.

    Each array has the layout's page shape. Pages are found by their IFD offsets,
    so a page costs its own IFD, not a parse of the whole file.
    """
    try:
        with open_tiff_file(fh) as tif:
            if layout.page_ifds is None:
                # The file is one "page", or one IFD describes many frames: decode the
                # whole series.
                whole = np.asarray(tif.series[0].asarray()).reshape((-1, *layout.page_shape))
                return [whole[p] for p in pages]
            out = []
            want = np.dtype(layout.dtype).newbyteorder("=")
            first = tif.pages[0]
            assert isinstance(first, tifffile.TiffPage)
            kind = (first.compression, first.predictor, first.bitspersample)
            for p in pages:
                tif.filehandle.seek(layout.page_ifds[p])
                page = tifffile.TiffPage(tif, index=p)
                if (
                    page.dtype is None
                    or np.dtype(page.dtype).newbyteorder("=") != want
                    or (page.compression, page.predictor, page.bitspersample) != kind
                ):
                    # tifffile reads every page of a series as its first page says;
                    # a page stored otherwise is a corrupt or mixed file: never guess.
                    raise TiffReadError(
                        f"{name}: page {p} is stored unlike the file's first page "
                        f"({page.dtype}, {page.compression!s} vs {want}, "
                        f"{first.compression!s}): the file is corrupt or mixes images."
                    )
                out.append(np.asarray(page.asarray()).reshape(layout.page_shape))
            return out
    except TiffStoreError:
        raise
    except Exception as exc:
        raise TiffReadError(
            f"{name}: could not decode pages {list(pages)[:8]} ({exc}). Check that the file "
            "is complete and opens with tifffile.imread."
        ) from exc
