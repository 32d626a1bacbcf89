"""Reading a stack file safely: a regular file of sane size, then YAML within limits (depth, digits of
a number, nodes after aliases), every refusal naming the file and line. The schema and the model are
:mod:`toolkit.config.stackfile`'s."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from toolkit.errors import Problem, StackFileError

DEFAULT_FILE = "lifeboat.yml"

MAX_FILE_BYTES = 4 << 20  # a stack file is a few kilobytes; anything this large is a mistake
MAX_DEPTH = 64  # nesting of mappings and lists (a stack needs about 6)
MAX_DIGITS = 100  # digits of a plain number (every number a stack holds is bounded far below)
MAX_NODES = 200_000  # values after anchors and aliases are followed (no "billion laughs")


def _refuse(shown: str, code: str, message: str, hint: str | None = None, line: int | None = None):
    return StackFileError(shown, [Problem(code, message, hint, file=shown, line=line)])


def read_bytes(path: Path, shown: str) -> bytes:
    """The file's bytes; anything but a readable regular file of sane size refused at once (a FIFO or a
    device is opened without waiting for a writer, then refused)."""
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except (FileNotFoundError, NotADirectoryError):  # NotADirectory: a folder on the way is a file
        raise _refuse(shown, "stack.missing", f"{shown}: no stack file here.",
                      "run `lifeboat init` to write an annotated example, or pass --config FILE.") from None
    except IsADirectoryError:
        raise _refuse(shown, "stack.missing", f"{shown}: is a directory, not a stack file.",
                      f"pass the file inside it: --config {shown.rstrip('/')}/{DEFAULT_FILE}.") from None
    except PermissionError:
        raise _refuse(shown, "stack.unreadable", f"{shown}: cannot be read (permission denied).") from None
    except OSError as exc:
        raise _refuse(shown, "stack.unreadable", f"{shown}: cannot be opened ({exc.strerror}).") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise _refuse(shown, "stack.missing", f"{shown}: is a directory, not a stack file.",
                          f"pass the file inside it: --config {shown.rstrip('/')}/{DEFAULT_FILE}.")
        kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
        raise _refuse(shown, "stack.not_a_file", f"{shown}: is {kind}, not a stack file; it was not read.",
                      "pass a regular file (a process substitution or a pipe cannot be read twice).")
    with os.fdopen(fd, "rb") as handle:
        os.set_blocking(fd, True)
        try:
            data = handle.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise _refuse(shown, "stack.unreadable", f"{shown}: cannot be read ({exc.strerror}).") from None
    if len(data) > MAX_FILE_BYTES:
        raise _refuse(shown, "stack.too_large", f"{shown}: is larger than {MAX_FILE_BYTES >> 20} MiB; a stack file "
                      "is a few kilobytes.", "check that --config names the stack file.")
    return data


def parse_yaml(text: str, shown: str) -> Any:
    """The document, or StackFileError naming the line: YAML errors, characters YAML does not allow,
    nesting deeper than MAX_DEPTH, numbers longer than MAX_DIGITS, more than MAX_NODES values once aliases
    are followed. Nothing here recurses on the input before those limits are checked."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError, YAMLError
    from ruamel.yaml.reader import ReaderError

    def line_of(position: int) -> int:
        return text.count("\n", 0, max(0, position)) + 1

    deep = _flow_too_deep(text)
    if deep is not None:  # the parser's scanner reads a whole flow collection ahead: slow on thousands of [
        raise _too_deep(shown, deep)
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        loaded = yaml.load(text)
    except ReaderError as exc:  # a character YAML does not allow (control characters, a lone surrogate)
        line = line_of(exc.position)
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise _refuse(shown, "stack.yaml", f"{shown}:{line}: this is not valid YAML: the character U+{code:04X} "
                      "is not allowed in a YAML file.", "remove it (control characters cannot be written in "
                      "YAML, not even in quotes; write them as an escape such as \\t inside double quotes).",
                      line) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        what = (exc.problem or "").strip() or "invalid YAML"
        if "duplicate key" in what:
            found = re.search(r'found duplicate key "([^"]*)"', str(exc))
            key = found.group(1) if found else None
            message = f'{shown}:{line}: key "{key}" appears twice in the same mapping.' if key else \
                f"{shown}:{line}: a key appears twice in the same mapping."
            problem = Problem("stack.duplicate_key", message, "keep one of them.", file=shown, line=line, key=key)
        else:
            context = f" ({exc.context.strip()})" if exc.context else ""
            problem = Problem("stack.yaml", f"{shown}:{line}: this is not valid YAML: {what}{context}.",
                              "check indentation and quoting on that line and the one before.", file=shown,
                              line=line)
        raise StackFileError(shown, [problem]) from None
    except YAMLError as exc:
        raise _refuse(shown, "stack.yaml", f"{shown}: this is not valid YAML: {exc}.") from None
    except (ValueError, TypeError, RecursionError, OverflowError) as exc:  # nesting, a number too long, ...
        _check_shape(text, shown)  # raises naming the line where it finds the cause
        raise _refuse(shown, "stack.yaml", f"{shown}: this YAML cannot be read ({type(exc).__name__}: "
                      f"{str(exc)[:200]}).") from None
    try:
        _count_nodes(loaded, shown)
    except StackFileError:
        _check_shape(text, shown)  # too deep as written: say where
        raise
    return loaded


def _too_deep(shown: str, line: int) -> StackFileError:
    return _refuse(shown, "stack.too_deep", f"{shown}:{line}: mappings and lists are nested more than {MAX_DEPTH} "
                   "levels deep here; a stack file needs a handful.",
                   "check the indentation or the brackets on that line.", line)


PLAIN_NUMBER = re.compile(r"[-+]?(0[xob])?[0-9a-fA-F_.:]+([eE][-+]?[0-9]+)?")


def _check_shape(text: str, shown: str) -> None:
    """After a load that failed or came out too deep: one pass over the parser's events (a state machine,
    no recursion, whatever the nesting) to name the line where nesting passes MAX_DEPTH or a plain number
    is longer than MAX_DIGITS. Returns when it finds neither."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError
    from ruamel.yaml.events import CollectionEndEvent, CollectionStartEvent, ScalarEvent

    try:
        events = list(YAML(typ="rt").parse(text))
    except YAMLError:
        return
    depth = 0
    for event in events:
        if isinstance(event, CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise _too_deep(shown, event.start_mark.line + 1)
        elif isinstance(event, CollectionEndEvent):
            depth -= 1
        elif (isinstance(event, ScalarEvent) and not event.style and len(event.value) > MAX_DIGITS
              and PLAIN_NUMBER.fullmatch(event.value)):
            line = event.start_mark.line + 1
            raise _refuse(shown, "stack.number_too_long", f"{shown}:{line}: a number of {len(event.value)} "
                          f"characters; no setting takes more than {MAX_DIGITS} digits.",
                          "quote it if it is meant as text.", line)


def _flow_too_deep(text: str) -> int | None:
    """The line where brackets ([ and {, outside quotes and comments) open more than MAX_DEPTH levels, or
    None. A quick look only: what it misses, the parser's events still catch."""
    depth, line, quote, previous = 0, 1, None, "\n"
    for char in text:
        if char == "\n":
            line += 1
        if quote is not None:
            if char == quote:
                quote = None
        elif char == "#" and previous in " \t\n":
            quote = "\n"  # a comment runs to the end of the line
        elif char in "'\"" and previous in " \t\n[{,:":
            quote = char
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return line
        elif char in "]}" and depth:
            depth -= 1
        previous = char
    return None


def _count_nodes(document: Any, shown: str) -> None:
    """Refuse a document that anchors and aliases make huge, deep or circular once followed (each node
    counted once per place it appears). The parsed nesting is bounded already, and each alias only adds a
    node already measured, so this walk stays within that bound too."""
    measured: dict[int, tuple[int, int]] = {}  # id -> (values, depth)
    open_now: set[int] = set()

    def measure(node: Any) -> tuple[int, int]:
        if not isinstance(node, dict | list):
            return 1, 0
        known = measured.get(id(node))
        if known is not None:
            return known
        if id(node) in open_now:
            raise _refuse(shown, "stack.circular", f"{shown}: an alias (*name) refers to a mapping or list that "
                          "holds it; a stack cannot be circular.", "copy the values instead of the alias.")
        open_now.add(id(node))
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        values, depth = 1, 0
        for child in children:
            v, d = measure(child)
            values, depth = values + v, max(depth, d + 1)
            if values > MAX_NODES or depth > MAX_DEPTH:
                raise _refuse(shown, "stack.too_large", f"{shown}: once its aliases (*name) are followed it holds "
                              f"more than {MAX_NODES} values or nests more than {MAX_DEPTH} levels.",
                              "use fewer aliases of large anchors.")
        open_now.discard(id(node))
        measured[id(node)] = (values, depth)
        return values, depth

    measure(document)
