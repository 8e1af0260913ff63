"""Progress while `worker` and `analyze` work: a live line on a terminal's stderr, nothing when piped.

Each command runs for real (``python -m trainwire.cli``) twice: with stderr on a pseudo-terminal,
where the progress line must show, and with stderr piped, where nothing but the command's own
lines may appear. Both end with a one-line summary on stdout.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

from test_analysis import _fill

from trainwire.bus import Emitter
from trainwire.config import Settings
from trainwire.events import Event, Interaction

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _trainwire(settings: Settings, *args: str, terminal: bool) -> tuple[int, str, str]:
    """Run ``trainwire ARGS``: exit status, stdout (piped) and stderr (a pseudo-terminal when ``terminal``)."""
    return _run([sys.executable, "-m", "trainwire.cli", "--data-dir", str(settings.data_dir), *args], terminal=terminal)


def _run(command: list[str], terminal: bool) -> tuple[int, str, str]:
    """Run ``command``: exit status, stdout (piped) and stderr (a pseudo-terminal when ``terminal``)."""
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "160"}
    if not terminal:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
        return done.returncode, done.stdout, done.stderr
    leader, follower = pty.openpty()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=follower, env=env)
    os.close(follower)
    screen = b""
    poller = select.poll()
    poller.register(leader, select.POLLIN)
    while True:  # read the terminal until the command closed it (EIO once no process holds it)
        ready = poller.poll(120_000)  # poll, not select: the test process may hold over 1,024 descriptors
        assert ready, "the command went quiet for two minutes"
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
    os.close(leader)
    stdout = process.stdout.read().decode()
    process.stdout.close()
    return process.wait(timeout=60), stdout, screen.decode(errors="replace")


def test_worker_shows_events_consumed_and_stored_on_a_terminal_only(embedded_settings: Settings) -> None:
    with Emitter(embedded_settings) as emitter:
        for i in range(300):
            emitter.emit(
                Event("progress", Interaction(prompt=f"p{i}", completion="c", reward=(i % 7) / 6, step=i // 10))
            )
        emitter.flush(30)

    status, piped, errors = _trainwire(
        embedded_settings, "worker", "--group", "piped", "--until-idle", "1", "--no-monitor", terminal=False
    )
    assert status == 0, errors
    assert errors == ""  # nothing but the command's own lines, all on stdout
    assert not ANSI.search(piped)
    lines = piped.splitlines()
    assert len(lines) == 2 and lines[0].startswith("worker piped")
    assert re.fullmatch(
        r"worker stopped: 300 records consumed, 300 stored, \d+ published, 0 dead letters in [\d.]+s \(\d+ records/s\)",
        lines[1],
    ), lines[1]

    status, out, screen = _trainwire(
        embedded_settings, "worker", "--group", "tty", "--until-idle", "1", "--no-monitor", terminal=True
    )
    assert status == 0, screen
    text = ANSI.sub("", screen)
    assert re.search(r"worker .*300 consumed \(\d+/s\) · 300 stored \(\d+/s\)", text), text
    assert out.splitlines()[-1].startswith("worker stopped: 300 records consumed, 300 stored")
    assert not ANSI.search(out)  # stdout is piped: the progress stays on the terminal


def test_analyze_shows_queries_done_on_a_terminal_only(embedded_settings: Settings, tmp_path: Path) -> None:
    _fill(embedded_settings)
    status, piped, errors = _trainwire(
        embedded_settings, "analyze", "--run", "a", "--output", str(tmp_path / "piped"), terminal=False
    )
    assert status == 0, errors
    assert "queries" not in errors and not ANSI.search(errors)
    summary = piped.splitlines()[-1]
    match = re.fullmatch(r"analyzed 1 run: (\d+) queries, (\d+) files in [\d.]+s", summary)
    assert match, summary
    queries = int(match[1])
    assert queries > 20 and int(match[2]) == len(list((tmp_path / "piped").iterdir()))

    status, out, screen = _trainwire(
        embedded_settings, "analyze", "--run", "a", "--output", str(tmp_path / "tty"), terminal=True
    )
    assert status == 0, screen
    text = ANSI.sub("", screen)
    assert f"{queries}/{queries} queries" in text, text
    assert re.search(r"analyze .* 1/\d+ queries", text), text
    assert out.splitlines()[-1].startswith(f"analyzed 1 run: {queries} queries")


TRAINING = """
import sys
from pathlib import Path

from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

from trainwire.producers.tiny import build_tiny_model
from trainwire.producers.training_log import show_training_progress

work = Path(sys.argv[1])
path = build_tiny_model(work / "model", seed=0)
args = GRPOConfig(
    output_dir=str(work / "out"), max_steps=3, per_device_train_batch_size=4, num_generations=2,
    max_completion_length=6, use_cpu=True, report_to=[], bf16=False, logging_steps=1, save_strategy="no", seed=0,
)
trainer = GRPOTrainer(
    model=AutoModelForCausalLM.from_pretrained(path),
    processing_class=AutoTokenizer.from_pretrained(path),
    reward_funcs=[lambda completions, **_: [float(len(c)) / 10 for c in completions]],
    args=args,
    train_dataset=Dataset.from_list([{"prompt": f"{i} + {i} ="} for i in range(16)]),
)
progress = show_training_progress(trainer, work / "logs" / "run.jsonl")
trainer.train()
print(f"training logs: {progress.path}")
"""


def test_training_shows_step_and_reward_on_a_terminal_and_keeps_the_logs_in_a_file(tmp_path: Path) -> None:
    """TRL's log dicts are not printed: a progress line shows the step and reward, the logs go to a file."""
    script = tmp_path / "train.py"
    script.write_text(TRAINING)
    status, out, screen = _run([sys.executable, str(script), str(tmp_path)], terminal=True)
    assert status == 0, screen
    text = ANSI.sub("", screen)
    assert re.search(r"training .*step 3/3 · reward \d+\.\d{3} · loss -?\d+\.\d{3}", text), text
    assert "{'loss'" not in text + out and "'reward'" not in text + out
    log = tmp_path / "logs" / "run.jsonl"
    assert out.splitlines() == [f"training logs: {log}"]
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in records if "reward" in r] == [1, 2, 3]
    assert all(isinstance(r["loss"], float) for r in records if "reward" in r)


def test_import_shows_its_bytes_and_file_on_a_terminal_only(embedded_settings: Settings, tmp_path: Path) -> None:
    """One progress mechanism for every command: import's line is trainwire's own, as the worker's."""
    logs = tmp_path / "completions.jsonl"
    logs.write_text(
        "".join(json.dumps({"prompt": f"p{i}", "completion": "c", "reward": 1.0}) + "\n" for i in range(50))
    )

    status, _, errors = _trainwire(embedded_settings, "import", str(logs), terminal=False)
    assert status == 0, errors
    assert "MB" not in errors and not ANSI.search(errors)

    status, _, screen = _trainwire(embedded_settings, "import", "--force", str(logs), terminal=True)
    assert status == 0, screen
    text = ANSI.sub("", screen)
    assert re.search(r"import .*completions\.jsonl · 0\.0 of 0\.0 MB", text), text
