"""A progress bar saved in a notebook shows where it ended, on GitHub as in JupyterLab."""

import nbformat
import pytest
from nbclient import NotebookClient


@pytest.mark.parametrize("loop, shown", [
    ("for _ in tqdm(range(30), desc='training'):\n    pass", "training: 100%"),
    ("bar = tqdm(total=8)\nbar.update(3)\nbar.close()", " 3/8 "),  # stopped early: says so
    ("for _ in trange(5):\n    pass", "5/5"),
])
def test_the_saved_text_of_a_bar_is_its_final_state(loop, shown):
    kernel = {"name": "python3", "display_name": "Python 3"}
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": kernel})
    nb.cells = [nbformat.v4.new_code_cell(f"from buildllm.progress import tqdm, trange\n{loop}")]
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    (output,) = nb.cells[0].outputs
    assert "application/vnd.jupyter.widget-view+json" in output.data  # still a live widget
    assert shown in output.data["text/plain"] and " 0%" not in output.data["text/plain"]


def test_outside_a_notebook_it_is_tqdm_auto(capsys):
    from tqdm.auto import tqdm as auto

    from buildllm.progress import tqdm

    assert tqdm is auto
    for _ in tqdm(range(3), desc="steps"):
        pass
    assert "steps: 100%" in capsys.readouterr().err
