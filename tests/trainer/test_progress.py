"""Training progress off a terminal: plain lines in a job's log instead of silence."""

import io

from rich.console import Console

from deepclust.trainer.progress import _LogLines, progress_bars


def _lines(every):
    buf = io.StringIO()
    return _LogLines(Console(file=buf, markup=False, width=200), every=every), buf


def test_a_completed_stage_prints_one_line_with_its_last_info():
    lines, buf = _lines(every=3600)
    task = lines.add_task("pretrain", total=2, info="")
    lines.advance(task)
    lines.advance(task)  # complete; the epoch's loss is set after its last step
    lines.update(task, info="epoch 2/2 loss 0.5")
    assert buf.getvalue() == ""
    lines.add_task("cluster (kmeans)", total=1)  # the next stage prints the last one's line
    assert buf.getvalue().splitlines() == ["pretrain: 2/2, epoch 2/2 loss 0.5 (0s, done)"]


def test_a_long_stage_prints_a_line_every_interval():
    lines, buf = _lines(every=0)
    task = lines.add_task("fine-tune", total=3, info="")
    lines.advance(task)
    lines.update(task, info="labels changed 0.0100")
    lines.finish()
    assert buf.getvalue().splitlines() == ["fine-tune: 1/3 (0s)", "fine-tune: 1/3, labels changed 0.0100 (0s)"]


def test_enabled_progress_off_a_terminal_is_plain_lines():
    with progress_bars(True) as p:  # pytest captures stderr: not a terminal
        assert isinstance(p, _LogLines)
    with progress_bars(False) as p:
        assert not isinstance(p, _LogLines)
