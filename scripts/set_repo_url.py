"""Point every Colab badge, Binder badge and Colab install cell at the repository in pyproject.toml.

The repository URL is written once, in ``pyproject.toml`` under ``[project.urls] Repository``.
A fork changes that one line and runs::

    python scripts/set_repo_url.py          # rewrite the links in place
    python scripts/set_repo_url.py --check  # exit 1, listing the files, if any link is stale

It rewrites, in ``notebooks/*.ipynb``, ``notebooks/*.py`` and ``README.md``:

* Colab links   ``https://colab.research.google.com/github/OWNER/REPO/...``
* Binder links  ``https://mybinder.org/v2/gh/OWNER/REPO/...``
* pip installs  ``git+https://github.com/OWNER/REPO``

Only the ``OWNER/REPO`` part changes, with a plain text substitution, so a notebook's outputs,
its pairing with the ``.py`` file and everything else in it stay as they are (no re-execution).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent

_NAME = r"[A-Za-z0-9_.-]+"
PATTERNS = {
    "colab": re.compile(rf"(https://colab\.research\.google\.com/github/)({_NAME})/({_NAME})(?=/)"),
    "binder": re.compile(rf"(https://mybinder\.org/v2/gh/)({_NAME})/({_NAME})(?=/)"),
    "install": re.compile(rf"(git\+https://github\.com/)({_NAME})/({_NAME})"),
}
"""Link kind -> regex with groups (prefix, owner, repo); the repo group may end in ``.git``."""


def repository_url(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """The ``[project.urls] Repository`` entry of ``pyproject``, without a trailing ``/`` or ``.git``."""
    with open(pyproject, "rb") as file:
        data = tomllib.load(file)
    try:
        url = data["project"]["urls"]["Repository"]
    except KeyError:
        raise ValueError(f"{pyproject} has no [project.urls] Repository entry") from None
    owner, repo = owner_repo(url)
    return f"https://github.com/{owner}/{repo}"


def owner_repo(url: str) -> tuple[str, str]:
    """``(owner, repo)`` of a GitHub URL such as ``https://github.com/owner/repo(.git)``."""
    match = re.fullmatch(rf"https://github\.com/({_NAME})/({_NAME}?)(?:\.git)?/?", url.strip())
    if not match:
        raise ValueError(f"the repository URL must look like https://github.com/OWNER/REPO, got {url!r}")
    return match.group(1), match.group(2)


def links(text: str) -> list[tuple[str, str, str]]:
    """Every ``(kind, owner, repo)`` link of the kinds in :data:`PATTERNS` found in ``text``."""
    found = []
    for kind, pattern in PATTERNS.items():
        for match in pattern.finditer(text):
            repo = match.group(3)
            found.append((kind, match.group(2), repo[:-4] if repo.endswith(".git") else repo))
    return found


def rewrite(text: str, owner: str, repo: str) -> str:
    """``text`` with every link of :data:`PATTERNS` pointing at ``owner/repo``."""
    for pattern in PATTERNS.values():
        text = pattern.sub(lambda m: f"{m.group(1)}{owner}/{repo}", text)
    return text


def target_files(root: Path = ROOT) -> list[Path]:
    """The files whose links follow the repository URL (those that exist)."""
    files = sorted((root / "notebooks").glob("*.ipynb")) + sorted((root / "notebooks").glob("*.py"))
    files.append(root / "README.md")
    return [f for f in files if f.is_file()]


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or with ``--check`` only report) stale links; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="report stale files and exit 1; change nothing")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this checkout)")
    args = parser.parse_args(argv)

    url = repository_url(args.root / "pyproject.toml")
    owner, repo = owner_repo(url)
    stale = []
    for path in target_files(args.root):
        text = path.read_text(encoding="utf-8")
        new = rewrite(text, owner, repo)
        if new != text:
            stale.append(path)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    verb = "stale" if args.check else "updated"
    for path in stale:
        print(f"{verb}: {path.relative_to(args.root)}")
    print(f"repository: {url} ({len(stale)} file(s) {verb})")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
