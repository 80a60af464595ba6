"""Supporting/tools/markdown_section.py: the one helper that rewrites a marked section of a page."""

import os

import pytest
from markdown_section import replace_section, section, update_section

PAGE = "# Title\n<!-- t:start -->\nold\n<!-- t:end -->\nafter\n"


def test_only_the_text_between_the_markers_changes():
    assert replace_section(PAGE, "t", "new\nrows\n") == (
        "# Title\n<!-- t:start -->\nnew\nrows\n<!-- t:end -->\nafter\n")
    assert section(replace_section(PAGE, "t", "new\n"), "t") == "new\n"


def test_another_sections_markers_are_left_alone():
    page = PAGE + "<!-- u:start -->\nkeep\n<!-- u:end -->\n"
    assert section(replace_section(page, "t", "new\n"), "u") == "keep\n"


def test_the_file_is_written_only_when_its_section_changes(tmp_path):
    path = tmp_path / "README.md"
    path.write_text(PAGE, encoding="utf-8")
    assert update_section(path, "t", "new\n", write=False) is True
    assert path.read_text(encoding="utf-8") == PAGE  # a check never writes
    assert update_section(path, "t", "new\n") is True
    assert section(path.read_text(encoding="utf-8"), "t") == "new\n"
    os.utime(path, ns=(0, 0))  # any write now would move the time stamp
    assert update_section(path, "t", "new\n") is False
    assert path.stat().st_mtime_ns == 0


@pytest.mark.parametrize("page, found", [
    ("# Title\nno markers\n", "it has 0 and 0"),
    ("# Title\n<!-- t:start -->\nold\n", "it has 1 and 0"),
    (PAGE + PAGE, "it has 2 and 2"),
    ("<!-- t:end -->\nold\n<!-- t:start -->\n", "it has 1 and 1"),  # upside down
    ("<!-- t:start --> old\n<!-- t:end -->\n", "it has 0 and 1"),  # start not on its own line
], ids=["missing", "no end", "doubled", "upside down", "not a line"])
def test_missing_or_doubled_markers_are_a_one_line_error_and_the_file_stays(tmp_path, page,
                                                                           found):
    path = tmp_path / "README.md"
    path.write_text(page, encoding="utf-8")
    with pytest.raises(ValueError) as err:
        update_section(path, "t", "new\n")
    message = str(err.value)
    assert "\n" not in message and found in message
    assert message.startswith("README.md needs one line <!-- t:start --> and, below it, one "
                              "line <!-- t:end -->")
    assert path.read_text(encoding="utf-8") == page
