"""A gonio process killed (SIGKILL) in the middle of a step loses nothing that was committed:
the next start resumes at the last committed step, and the killed step can simply be re-run."""

from __future__ import annotations

import subprocess
import sys
import time

from gonio.shell.session import Session


def test_kill_during_findspots_resumes_at_import(tmp_path):
    s = Session(tmp_path)
    assert s.run_line("simulate n_images=60 image_size=1024,1024 output=sim seed=2").ok
    assert s.run_line("import sim/image_#####.cbf").ok
    head = s.head
    s.close()
    # findspots in a separate process, killed while it reads the images
    p = subprocess.Popen([sys.executable, "-m", "gonio.shell.main", "-c", "findspots nproc=1"],
                         cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # the step starts ~0.5 s after the process and takes ~0.8 s on an idle 2-core machine
    time.sleep(0.9)
    killed_early = p.poll() is None
    p.kill()  # SIGKILL (nothing to do if it has ended already)
    p.wait()
    s = Session(tmp_path)
    if killed_early:
        assert s.head == head and [st.id for st in s.history.steps()] == [1, head]
    assert "sim/image_#####.cbf" in s.history.step(head).line
    r = s.run_line("findspots")
    assert r.ok, r.text
    assert s.history.step(s.head).metrics["spots"] > 1000
    s.close()


def test_output_into_a_closed_pipe_ends_quietly():
    """``gonio -c "help integrate" | head -1``: the reader stops early; no traceback."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-m", "gonio.shell.main", "-c", "help integrate"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # the reader is gone before gonio writes (as head after a line)
    err = p.stderr.read().decode()
    assert p.wait(timeout=60) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err, err
