"""The README's first lines are the two commands a newcomer runs; CI and the Procfile agree with them."""

import re
import shlex

from tests.harness import ROOT, procfile_command


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block and text.index(block.group(0)) < 200, "the README must open with its commands"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_run_and_test_commands():
    run, test = readme_commands()
    command = procfile_command()
    tail = shlex.split(run)[-len(command):]
    tail[0] = tail[0].rpartition("/")[2]  # .venv/bin/gunicorn is the Procfile's gunicorn
    assert tail == command, "run the bot the way Heroku runs it"
    assert "requirements.txt" in run and "requirements-dev.txt" in test and "pytest" in test


def test_ci_runs_exactly_the_readme_test_command():
    _, test = readme_commands()
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci_lines
    assert "rm -rf .venv" in ci_lines, "CI must build a fresh virtualenv"


def test_every_config_variable_is_in_the_readme_table():
    readme = (ROOT / "README.md").read_text()
    source = (ROOT / "config.py").read_text()
    names = set(re.findall(r'_(?:text|integer|seconds)\(env, "([A-Z_]+)"', source))
    names.discard("WHATSAPP_CLIENT_FACTORY")  # a test seam, not a user setting
    missing = sorted(n for n in names if f"| `{n}` |" not in readme)
    assert names and not missing, f"undocumented variables: {missing}"
