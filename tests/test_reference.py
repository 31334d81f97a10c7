"""The settings reference is generated from the typed configuration: every setting explained where it is declared,
and the committed page equal to what the code generates."""

import dataclasses
from pathlib import Path

from lth import config, reference


def test_every_setting_is_explained_where_it_is_declared():
    settings = reference.settings()
    assert [s.key for s in settings] == list(config.settings())
    assert [s.key for s in settings if not s.doc] == []
    by_key = {s.key: s for s in settings}
    assert by_key["train.lr"].type == "float" and by_key["train.lr"].default == 0.1
    assert by_key["rigl.update_every"].doc.startswith("ΔT in steps")  # a plugin's own settings, from its Params
    assert by_key["prune.earlybird.target"].doc  # inherited from the schedule it extends (oneshot)


def test_a_field_s_comment_above_and_beside_it_is_its_explanation():
    @dataclasses.dataclass
    class Section:
        # Above,
        # on two lines.
        first: int = 1  # and beside.
        second: str = "x"
        third: float = 0.5  # beside alone

    fields = reference._fields(Section)
    assert fields == {"first": ("int", "Above, on two lines. and beside."), "second": ("str", ""), "third": ("float", "beside alone")}


def test_the_committed_reference_pages_are_what_the_code_generates():
    """Regenerate them with `python -m lth.reference`."""
    for path, page in reference.PAGES.items():
        assert (Path("docs") / path).read_text() == page() + "\n", f"docs/{path} is stale: python -m lth.reference"


def test_the_reference_names_every_command_results_field_and_registered_name():
    from lth import cli
    from lth.models import MODELS
    from lth.run_dir import Row

    commands, results, settings = reference.commands(), reference.results(), reference.markdown()
    assert [c for c in cli.COMMANDS if f"## lth {c}" not in commands] == []
    assert [f.name for f in dataclasses.fields(Row) if f"| `{f.name}` |" not in results] == []
    assert "|  |" not in results  # every field explained
    assert [m for m in MODELS if f"`{m}`" not in settings] == []


def test_a_user_s_plugin_imported_in_the_process_leaves_the_reference_as_it_is(monkeypatch):
    """The reference documents lth; a plugin of a user's, registered in the same process (as the tests' own are),
    once made the committed page look stale depending on which tests ran first."""
    from lth.arms import ARMS
    from lth.arms.base import Arm

    before = reference.markdown()

    @dataclasses.dataclass
    class Params:
        width: int = 3  # a user's setting

    class Probe(Arm):
        name = "doc_probe"
        weights = "init"

    Probe.Params = Params
    monkeypatch.setitem(ARMS, "doc_probe", Probe())  # as `lth.registry.extend` registers a user's plugin
    assert "doc_probe.width" in config.settings() and reference.markdown() == before


def test_the_w_and_b_page_names_every_metric_lth_logs_at_a_level():
    from lth.tracking import LEVEL_METRICS

    page = Path("docs/reference/wandb.md").read_text()
    assert [key for key in LEVEL_METRICS if f"`<arm>/{key}`" not in page] == []
