"""`lifeboat validate` cannot be crashed by a stack file: generated files (the chirp stack mutated line by line
and character by character, random YAML-ish text, random nested documents with the schema's own keys, deep
nesting, huge numbers, lone surrogates, control characters) always give exit 0 or 2, exactly one JSON
envelope on stdout, and every problem names the file, and its line where the message has one.

Seeded (derandomized) and in-process (the same `main()` the `lifeboat` command runs), so 1,200 cases take
seconds and a failure reproduces."""

from __future__ import annotations

import contextlib
import io
import json
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolkit import cli

from .conftest import REPO, STACKFILES

GOOD = (STACKFILES / "good" / "chirp.yml").read_text().replace("../../../examples/chirp", str(REPO / "examples" / "chirp"))
LINES = GOOD.splitlines(keepends=True)

VOCABULARY = ["version", "name", "domain", "services", "role", "web", "worker", "image", "build", "command", "port",
              "env", "replicas", "health", "path", "secrets", "postgres", "redis", "buckets", "media", "tls",
              "providers", "type", "local", "baremetal", "aws", "s3", "dns", "zone", "records", "ttl", "backup",
              "to", "keep", "wal", "encrypt_with", "from", "var", "length", "generate", "hosts", "state_dir",
              "database", "extensions", "disposable", "acme_email", "target", "values", "<<"]
ODD = ["", " ", "\ud800", "\udfff", "\x00", "\x01", "\x7f", "\u2028", "\ufeff", "☃", "é", "𝕏", "~", "null", "yes",
       "0x1F", "1e309", "-0", "9" * 5000, "&a", "*a", "!!python/object:os.system", "%YAML 1.2", "---", "...", "'",
       '"', "\\", "{", "[", "}", "]", ":", "- ", "? ", "|", ">", "#", "@", "`", "\t", "\r", "\n"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10 ** 400), max_value=10 ** 400),
                    st.floats(allow_nan=True), st.sampled_from(ODD), st.sampled_from(VOCABULARY), st.text(max_size=12))
documents = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.one_of(st.sampled_from(VOCABULARY), st.text(max_size=6)), children,
                                               max_size=5)),
    max_leaves=40)


def as_yaml(document, ascii_only: bool) -> str:
    return json.dumps(document, ensure_ascii=ascii_only, allow_nan=True)  # JSON is YAML


@st.composite
def mutated(draw) -> str:
    """The good stack with a few lines dropped, doubled, re-indented, or characters changed."""
    lines = list(LINES)
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        at = draw(st.integers(0, len(lines) - 1))
        what = draw(st.sampled_from(["drop", "double", "indent", "dedent", "char", "value"]))
        if what == "drop":
            del lines[at]
        elif what == "double":
            lines.insert(at, lines[at])
        elif what == "indent":
            lines[at] = "  " + lines[at]
        elif what == "dedent":
            lines[at] = lines[at][2:]
        elif what == "char":
            line = lines[at]
            pos = draw(st.integers(0, len(line)))
            lines[at] = line[:pos] + draw(st.sampled_from(ODD)) + line[pos + 1:]
        else:
            key = lines[at].split(":", 1)[0]
            lines[at] = f"{key}: {as_yaml(draw(documents), draw(st.booleans()))}\n"
    return "".join(lines)


texts = st.one_of(
    mutated(),
    st.builds(as_yaml, documents, st.booleans()),
    st.text(alphabet=st.sampled_from([*":-[]{}#&*!|>'\"%@`,? \n\t\rabcz019._/", "\x01", "\x7f", "\u2028", "\ud800", "é"]),
            max_size=200),
    st.integers(40, 2000).map(lambda n: "name: " + "[" * n + "]" * n + "\n"),
    st.integers(40, 400).map(lambda n: "".join("  " * i + f"k{i}:\n" for i in range(n)) + "  " * n + "v: 1\n"),
    st.integers(90, 6000).map(lambda n: GOOD.replace("port: 8000", "port: " + "7" * n)),
)


def validate(path) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = cli.main(["-c", str(path), "-o", "json", "validate"])
    return code, out.getvalue()


def test_the_unmutated_stack_is_valid(tmp_path):
    path = tmp_path / "lifeboat.yml"
    path.write_text(GOOD)
    code, out = validate(path)
    assert code == 0, out


@settings(max_examples=1200, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(text=texts)
def test_validate_never_crashes_and_always_names_the_file_and_line(tmp_path, text):
    path = tmp_path / "lifeboat.yml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    code, out = validate(path)
    assert code in (0, 2), out
    assert out.endswith("\n") and out.count("\n") == 1, out  # exactly one line: one JSON object
    envelope = json.loads(out)
    assert set(envelope) == {"lifeboat", "command", "status", "exit_code", "data", "errors", "warnings"}, envelope
    assert envelope["exit_code"] == code and envelope["command"] == "validate"
    assert bool(envelope["errors"]) == (code == 2), envelope
    shown = str(path)
    for error in envelope["errors"]:
        assert error["file"] == shown, error
        assert error["code"].startswith("stack."), error
        named = re.match(re.escape(shown) + r":(\d+):", error["message"])
        if named:
            assert error.get("line") == int(named.group(1)), error
        if error["code"] in ("stack.yaml", "stack.duplicate_key", "stack.too_deep", "stack.number_too_long",
                             "stack.encoding"):
            assert error.get("line"), error  # a problem at a place in the file says where
