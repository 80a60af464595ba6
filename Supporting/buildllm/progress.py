"""Progress bars whose saved notebook shows where they ended (every meeting).

In a notebook, `tqdm.auto` draws a widget and stores beside it a line of text for viewers
that cannot draw widgets, GitHub among them. tqdm writes that text once, when the bar
appears, so every committed notebook showed `0%|          | 0/360` for a loop that ran to
the end. This `tqdm` displays its widget under a display id and, when the bar closes,
displays it again under the same id: Jupyter and nbclient then replace the stored text with
the final one, `100%|██████████| 360/360 [...]`. Outside a notebook it is `tqdm.auto.tqdm`.

    >>> from buildllm.progress import tqdm
    >>> for step in tqdm(range(360), desc="training"):
    ...     pass
"""

from __future__ import annotations

from tqdm.auto import tqdm as _auto_tqdm
from tqdm.notebook import tqdm_notebook

__all__ = ["tqdm", "trange"]

if issubclass(_auto_tqdm, tqdm_notebook):  # running in a Jupyter kernel with ipywidgets
    from IPython.display import display

    class tqdm(_auto_tqdm):  # noqa: N801 - tqdm's own name, so it drops in for it
        """tqdm.auto's notebook bar, whose stored text is updated when it closes."""

        def __init__(self, *args, **kwargs):
            show = kwargs.pop("display", True)
            super().__init__(*args, display=False, **kwargs)
            self._handle = None
            if show and not self.disable and self.delay <= 0:
                self._handle = display(self.container, display_id=True)
                self.displayed = True

        def close(self) -> None:
            super().close()
            if getattr(self, "_handle", None) is not None:
                self._handle.update(self.container)  # the text now says where it ended
                self._handle = None

else:
    tqdm = _auto_tqdm


def trange(*args, **kwargs) -> tqdm:
    """`tqdm(range(*args), **kwargs)`, as tqdm's own trange."""
    return tqdm(range(*args), **kwargs)
