"""The README's first lines are the two commands a newcomer runs; CI and the Procfile agree with them."""

import re
import shlex

from config import load_config

from tests.support.harness import ROOT, procfile_command


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


class _RecordingEnv(dict):
    """An environment that remembers every variable the configuration asks for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, name, default=None):
        self.asked.add(name)
        return super().get(name, default)

    def __getitem__(self, name):
        self.asked.add(name)
        return super().__getitem__(name)

    def __contains__(self, name):
        self.asked.add(name)
        return super().__contains__(name)


def test_every_config_variable_is_in_the_readme_table():
    """Every variable config.load_config reads (however it names it: a literal, a constant) has a row."""
    readme = (ROOT / "README.md").read_text()
    env = _RecordingEnv()
    load_config(env)
    names = {n for n in env.asked if n.isupper()} - {"WHATSAPP_CLIENT_FACTORY"}  # a test seam, not a setting
    missing = sorted(n for n in names if f"| `{n}` |" not in readme)
    assert "WHATSAPP_SESSION" in names and "API_KEY" in names, names
    assert not missing, f"undocumented variables: {missing}"


def test_no_merge_conflict_markers_are_left_in_the_sources_or_the_docs():
    """A merge once left `<<<<<<< HEAD` in the README and every other test still passed."""
    markers = ("<<<<<<< ", "=======\n", ">>>>>>> ")
    found = []
    for path in [*ROOT.glob("*.py"), *ROOT.glob("*.md"), *ROOT.glob("*/*.py"), *ROOT.glob("*/*/*.py"),
                 *ROOT.glob("*/*.md")]:
        if ".venv" in path.parts:
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(keepends=True), 1):
            if line.startswith(markers) and (line != "=======\n" or path.suffix == ".py"):
                found.append(f"{path.relative_to(ROOT)}:{number}")
    assert not found, found
