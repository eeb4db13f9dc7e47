"""`python -m bench` prints one table: figure, ours, baseline, ratio, README says (issue 22, section 2).

The shape is checked here, never the figures' values: how fast or small something is belongs to the
benchmarks, not to a timed test on a loaded machine.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from bench.figures import HEADER, NO_BASELINE, Figure, table
from tests.support.harness import ROOT

RATIO = re.compile(r"^(-|-?\d[\d,]*(\.\d+)?|\d[\d,]*(\.\d+)?×|1/\d[\d,]*(\.\d+)?)$")


def cells(line: str) -> list[str]:
    assert line.startswith("| ") and line.endswith(" |"), line
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line[1:-1])]


def run_bench(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the benchmark's scratch directories stay in tmp_path
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def test_the_snapshot_rows_come_as_one_table_each_against_a_baseline_of_the_same_run(tmp_path):
    result = run_bench(tmp_path, "--only", "snapshot")
    assert result.returncode == 0, result.stdout + result.stderr
    heading, *lines = result.stdout.strip().splitlines()
    assert heading.startswith("quick"), heading
    assert cells(lines[0]) == list(HEADER)
    assert set(lines[1]) <= {"|", "-"}, "a Markdown separator line"
    rows = [cells(line) for line in lines[2:]]
    assert all(len(row) == len(HEADER) for row in rows), rows
    names = [row[0] for row in rows]
    assert any(name.startswith("snapshot size, fresh pairing") for name in names), names
    assert any(name.startswith("snapshot size, 3000 contacts") for name in names), names
    assert any(name.startswith("snapshot pack") for name in names) and any("unpack" in n for n in names)
    for name, ours, baseline, ratio, readme in rows:
        assert ours[:1].isdigit(), (name, ours)
        assert ":" in baseline and NO_BASELINE not in baseline, (name, baseline)  # measured in this run
        assert RATIO.match(ratio) and ratio != "-", (name, ratio)
        assert readme, name
    sizes = [row for row in rows if row[0].startswith("snapshot size")]
    assert all(row[4] != "-" for row in sizes), "the sizes are the README's figures"
    readme = (ROOT / "README.md").read_text()
    for name, *_, says in rows:  # what the row quotes is what the README says
        for figure in re.findall(r"\d[\d,.]*\d|\d", says):
            assert figure in readme, (name, figure)
    assert list(tmp_path.iterdir()) == [], "scratch directories are removed"


def test_an_unknown_module_is_a_clear_error(tmp_path):
    result = run_bench(tmp_path, "--only", "nosuchbench")
    assert result.returncode == 2
    assert "invalid choice: 'nosuchbench'" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_a_row_without_a_baseline_says_so_instead_of_a_ratio():
    text = table([Figure("save answer", 4.2, "s", "--baseline DIR not given", None, "within 22 s"),
                  Figure("pack", 40.0, "ms", "tarfile", 400.0, "-"),
                  Figure("a | b", None, "", "", None, "-", note="failed: OSError")])
    lines = text.splitlines()
    assert set(lines[1]) <= {"|", "-"}
    header, no_base, measured, failed = (cells(line) for line in lines[:1] + lines[2:])
    assert header == list(HEADER)
    assert no_base[2] == f"{NO_BASELINE} (--baseline DIR not given)" and no_base[3] == "-"
    assert measured[2] == "tarfile: 400 ms" and measured[3] == "1/10"
    assert failed[0] == "a \\| b" and failed[1] == "- (failed: OSError)"


def test_each_module_of_the_table_exposes_its_figures():
    from bench.__main__ import MODULES
    import importlib

    for name, module in MODULES.items():
        assert callable(importlib.import_module(module).figures), name


def test_what_each_row_says_the_readme_says_is_in_the_readme():
    """The numbers in a row's 'README says' are the README's own: a README figure changed without its row
    (or the other way round) fails here, before a reader finds the two disagree."""
    from bench.__main__ import MODULES
    import importlib

    readme = " ".join((ROOT / "README.md").read_text().split())
    for name, module in MODULES.items():
        says = importlib.import_module(module).README  # {} when the README quotes none of its figures
        assert isinstance(says, dict), name
        for claim in says.values():
            for figure in re.findall(r"\d[\d,.]*\d|\d", claim):
                assert figure in readme, (name, claim, figure)


def test_a_module_that_fails_is_one_row_saying_how_and_the_run_fails(monkeypatch, capsys):
    import bench.__main__ as runner

    monkeypatch.setitem(runner.MODULES, "broken", "bench.figures")  # a module without figures()
    assert runner.main(["--only", "broken"]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    (row,) = [cells(line) for line in lines[3:]]
    assert row[0] == "broken: FAILED" and "AttributeError" in row[1], row
