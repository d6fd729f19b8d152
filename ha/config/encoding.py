"""Bytes of a config file to text, without letting one bad byte take the file down (issue #10).

A config file that is not valid UTF-8 is a config error like any other: the
lines that hold bad bytes are reported (file and line) and their section is
left out, so every other section still parses. Leaving a section out is safe
only because the live runtime keeps the last good version of a section it can
no longer read (``ha.config.lastgood``); a half-read section (one property
line dropped, say ``state stopped``) would be worse than none.

Pure: bytes in, text and errors out.
"""

from __future__ import annotations

from ha.errors import ConfigError


def _is_header(line: str) -> bool:
    return bool(line.strip()) and not line[:1].isspace() and not line.startswith("#")


def decode_config(data: bytes, path: str) -> tuple[str, list[ConfigError]]:
    """``data`` as text; sections holding bytes that are not UTF-8 are blanked out and reported.

    Blanked lines stay as empty lines, so line numbers of later errors still
    point at the file as it is. A bad byte in a comment line drops just that
    line (comments carry no meaning).
    """
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError:
        pass
    lines = data.split(b"\n")
    bad: list[int] = []
    for i, raw in enumerate(lines):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(i)
    text_lines = [raw.decode("utf-8", errors="replace") for raw in lines]
    # section extent of each line: from its header (a non-indented, non-comment line
    # after a blank line or at the start) to the next blank line
    blank: set[int] = set()
    errors: list[ConfigError] = []
    for i in bad:
        if text_lines[i].startswith("#"):
            blank.add(i)
            errors.append(ConfigError("comment line is not valid UTF-8, ignored", path, i + 1))
            continue
        start = i
        while start > 0 and text_lines[start - 1].strip() and not _is_header(text_lines[start]):
            start -= 1
        end = i
        while end + 1 < len(text_lines) and text_lines[end + 1].strip():
            end += 1
        head = text_lines[start].strip() if _is_header(text_lines[start]) else "?"
        errors.append(ConfigError(f"line is not valid UTF-8, section '{head}' ignored", path, i + 1))
        blank.update(range(start, end + 1))
    out = ["" if i in blank else line for i, line in enumerate(text_lines)]
    return "\n".join(out), errors
