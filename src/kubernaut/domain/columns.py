"""Tables as kubectl prints them: plain columns padded to their widest cell, three spaces apart.

Fitted to a width, the widest columns give way first (the row's name last) and their cells end
in "…", so that a row never wraps over several lines.
"""

from collections.abc import Sequence

GAP = "   "
ELLIPSIS = "…"


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + ELLIPSIS


def layout(
    headers: Sequence[str], rows: Sequence[Sequence[str]], width: int | None, keep: Sequence[str] = ("NAME",)
) -> list[str]:
    """The lines of a table: header, then one line per row. With `width` no line is longer: the
    widest column is narrowed first, never below its header, and the `keep` columns (what names
    a row) only once the others are down to their headers."""
    cells = [[" ".join(str(cell).split()) for cell in row] for row in rows]  # one line per row
    widths = [max([len(header), *(len(row[i]) for row in cells)]) for i, header in enumerate(headers)]
    if width is not None:
        excess = sum(widths) + len(GAP) * (len(widths) - 1) - width
        for kept in (False, True):
            while excess > 0:
                shrinkable = [i for i, h in enumerate(headers) if (h in keep) == kept and widths[i] > len(h)]
                if not shrinkable:
                    break
                widths[max(shrinkable, key=lambda i: widths[i])] -= 1
                excess -= 1
    lines = []
    for row in [list(headers), *cells]:
        line = GAP.join(_fit(cell, w).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        lines.append(_fit(line, width) if width is not None else line)
    return lines
