"""pyproxy's source at another git commit, in a temporary directory, to measure beside this one."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# Standard library only: bench.hotpath imports this module in a child whose `pyproxy` is the
# baseline's, which may lack anything the working tree's pyproxy has.
REPO_ROOT = Path(__file__).resolve().parent.parent
NAME_PREFIX = "pyproxy@"  # a baseline target's name: pyproxy@<short commit>
MODULE_LINE = "pyproxy module: "  # what a benchmark's pyproxy child prints first


class BaselineError(RuntimeError):
    """The ref cannot serve as a baseline: not a commit, or no pyproxy package in it."""


@dataclass(frozen=True)
class Baseline:
    """The `pyproxy` package of commit `commit` (asked for as `ref`), extracted under `source`."""

    ref: str
    commit: str
    short: str
    source: Path  # the directory to put first on a child's PYTHONPATH (and make its cwd)

    @property
    def name(self) -> str:
        return NAME_PREFIX + self.short

    @property
    def package(self) -> Path:
        return self.source / "pyproxy"

    def describe(self) -> dict[str, str]:
        return {"ref": self.ref, "commit": self.commit, "target": self.name}


def _git(*args: str, repo: Path = REPO_ROOT) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BaselineError(f"git {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def resolve(ref: str, repo: Path = REPO_ROOT) -> tuple[str, str]:
    """(full commit, short commit) of `ref`; BaselineError when it names no commit."""
    try:
        commit = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", repo=repo)
    except BaselineError:
        raise BaselineError(f"--baseline {ref}: not a commit of {repo}") from None
    return commit, _git("rev-parse", "--short=7", commit, repo=repo)


def has_file(commit: str, path: str, repo: Path = REPO_ROOT) -> bool:
    """Whether `path` exists at `commit`."""
    try:
        _git("cat-file", "-e", f"{commit}:{path}", repo=repo)
    except BaselineError:
        return False
    return True


def working_tree(repo: Path = REPO_ROOT) -> str:
    """The commit the working tree is at, with `-dirty` when it has uncommitted changes."""
    try:
        return _git("describe", "--always", "--dirty", "--abbrev=7", repo=repo)
    except BaselineError:
        return "unknown"


@contextmanager
def materialise(
    ref: str, repo: Path = REPO_ROOT, paths: tuple[str, ...] = ("pyproxy",)
) -> Iterator[Baseline]:
    """Extract the `pyproxy` package of `ref` (`git archive`) into a temporary directory,
    removed on exit. Only the package: `bench` and `tests` stay the working tree's."""
    commit, short = resolve(ref, repo)
    with tempfile.TemporaryDirectory(prefix=f"bench-baseline-{short}-") as tmp:
        proc = subprocess.run(
            ["git", "-C", str(repo), "archive", "--format=tar", commit, *paths],
            capture_output=True,
        )
        if proc.returncode != 0:
            error = proc.stderr.decode(errors="replace").strip()
            raise BaselineError(f"--baseline {ref}: no pyproxy package at {short}: {error}")
        with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
            tar.extractall(tmp, filter="data")
        baseline = Baseline(ref, commit, short, Path(tmp))
        if not (baseline.package / "__init__.py").is_file():
            raise BaselineError(f"--baseline {ref}: {short} has no pyproxy/__init__.py")
        yield baseline


def child_env(*path: Path) -> dict[str, str]:
    """This process's environment with PYTHONPATH replaced by `path`, in that order."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(str(p) for p in path))


def reported_module(log_text: str) -> Path | None:
    """The package directory a pyproxy child said it imported (see targets.LAUNCHER)."""
    for line in log_text.splitlines():
        if line.startswith(MODULE_LINE):
            return Path(line[len(MODULE_LINE) :].strip()).resolve().parent
    return None
