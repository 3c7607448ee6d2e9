"""README.md's Python code blocks run as written.

Every ```python fenced block is executed in a fresh namespace with a temporary
working directory; shell commands belong in ```bash blocks, which are not run.
A block opts out only with ``<!-- readme-test: skip (reason) -->`` on the line
just before its opening fence.
"""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SKIP = re.compile(r"^<!--\s*readme-test:\s*skip\s*\((?P<reason>[^)]*)\)\s*-->$")
FENCE = re.compile(r"^(?P<ticks>`{3,})(?P<lang>[\w+-]*)\s*$")


def fenced_blocks(text: str) -> list:
    """Fenced code blocks of a Markdown text.

    Parameters
    ----------
    text : str
        Markdown.

    Returns
    -------
    list of dict
        ``lang``, ``line`` (1-based line of the opening fence), ``source`` and
        ``before`` (the line just before the fence, stripped) of each block.
    """
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i].strip())
        if not m:
            i += 1
            continue
        close = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == m["ticks"]), None)
        if close is None:
            raise ValueError(f"README.md:{i + 1}: code fence never closed")
        blocks.append({"lang": m["lang"].lower(), "line": i + 1, "source": "\n".join(lines[i + 1:close]) + "\n",
                       "before": lines[i - 1].strip() if i else ""})
        i = close + 1
    return blocks


BLOCKS = fenced_blocks(README.read_text(encoding="utf-8"))
PYTHON = [b for b in BLOCKS if b["lang"] in ("python", "py")]
RUN = [b for b in PYTHON if not SKIP.match(b["before"])]


@pytest.mark.parametrize("block", RUN, ids=[f"README.md:{b['line']}" for b in RUN])
def test_python_block_runs(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # padded so that tracebacks point at README.md's own line numbers
    code = compile("\n" * block["line"] + block["source"], str(README), "exec")
    exec(code, {"__name__": "__readme__"})


def test_enough_blocks_are_executed():
    assert len(RUN) >= 2, f"README.md has {len(RUN)} executed ```python blocks, expected at least 2"


def test_skip_markers_give_a_reason_and_sit_on_a_python_block():
    markers = [(n, line) for n, line in enumerate(README.read_text(encoding="utf-8").splitlines(), 1)
               if "readme-test" in line]
    fence_after = {b["line"] - 1: b for b in BLOCKS}
    for n, line in markers:
        m = SKIP.match(line.strip())
        assert m and m["reason"].strip(), f"README.md:{n}: write '<!-- readme-test: skip (reason) -->'"
        assert n in fence_after and fence_after[n]["lang"] in ("python", "py"), \
            f"README.md:{n}: a skip marker must be on the line just before a ```python block"


def test_fenced_blocks_parser():
    text = "intro\n<!-- readme-test: skip (needs a GPU) -->\n```python\nx = 1\n```\n\n````bash\nls\n```\n````\n"
    blocks = fenced_blocks(text)
    assert [(b["lang"], b["line"]) for b in blocks] == [("python", 3), ("bash", 7)]
    assert blocks[0]["source"] == "x = 1\n" and SKIP.match(blocks[0]["before"])["reason"] == "needs a GPU"
    assert blocks[1]["source"] == "ls\n```\n"
    with pytest.raises(ValueError, match="never closed"):
        fenced_blocks("```python\nx = 1\n")
