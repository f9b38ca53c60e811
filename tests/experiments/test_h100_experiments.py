"""experiments/h100_*.yaml and exits_autoscaling.yaml validate against the H100 profiles
imported as their header says (when ../shared/data/h100-stage-profiles is present)."""

import re
import shutil
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data" / "h100-stage-profiles"
YAMLS = sorted((REPO / "experiments").glob("h100_*.yaml"))
RUNS = {path.stem: 3 for path in YAMLS} | {"exits_autoscaling": 54}  # 2 traces x 9 arms x 3 seeds
TWITTER = REPO.parent / "shared" / "data" / "twitter-trace"


def test_there_are_eight():
    assert len(YAMLS) == 8  # resnet50 and bert, cudagraph and eager, with and without exits


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/h100-stage-profiles is absent")
@pytest.mark.parametrize("path", YAMLS + [REPO / "experiments" / "exits_autoscaling.yaml"], ids=lambda p: p.stem)
def test_the_header_commands_import_and_check(servesim, tmp_path, path):
    """The import command in the file's header, run as written from a copy of the
    repository's layout, then `servesim check` of the file."""
    text = path.read_text()
    command = re.search(r"#   (servesim profile import .*?)\n#   servesim run", text, re.S).group(1)
    argv = shlex.split(command.replace("\\\n#", " "))[1:]
    (tmp_path / "repo" / "experiments").mkdir(parents=True)
    shutil.copy(path, tmp_path / "repo" / "experiments")
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data" / SHARED.name).symlink_to(SHARED)
    if "twitter-trace" in text:
        if not TWITTER.is_dir():
            pytest.skip(f"{TWITTER} is absent")
        (tmp_path / "shared" / "data" / TWITTER.name).symlink_to(TWITTER)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path / "repo")
        assert servesim(*argv).rc == 0
        outcome = servesim("check", f"experiments/{path.name}")
    assert outcome.rc == 0 and f"OK, {RUNS[path.stem]} run(s)" in outcome.out, outcome.err
