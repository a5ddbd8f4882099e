"""A process that forks real pushers on command, for the concurrency and kill tests of the zoo.

Imports torch and ltrain once, then reads one JSON command per line on stdin and answers one JSON line:
  {"op": "push", "home", "catalog", "names", "hidden", "overwrite"?} -> forks a child that pushes one MLP per
      name (weights seeded by the name's index, so the test can rebuild them) and exits 0, or 3 on LtrainError;
      answers {"pid"}
  {"op": "pause", "home", "catalog", "name", "hidden", "point", "marker"} -> forks a child that pushes one MLP
      (seed 0) and stops at ``point`` of the push (see PAUSE_POINTS), writes ``marker`` and waits to be killed;
      answers {"pid"}
  {"op": "poll", "pid"} -> {"status": None} while the child runs, else reaps it like "wait"
  {"op": "wait", "pid"} -> reaps the child; answers {"status"} (the raw wait status: -9 means SIGKILL)
Forking after the imports keeps each pusher cheap; the children are real processes holding real file locks.
"""

from __future__ import annotations

import json
import os
import sys
import time

import lightning  # noqa: F401 - imported once here, not in every forked pusher (entries record its version)
import timm  # noqa: F401
import torch

torch.set_num_threads(1)  # before any op: a forked child must not inherit a busy thread pool

from ltrain.errors import LtrainError  # noqa: E402
from ltrain.models import build_model  # noqa: E402
from ltrain.zoo import Zoo  # noqa: E402

INPUT_SHAPE = (1, 28, 28)


def seeded_mlp(seed: int, hidden: list[int]) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model({"name": "mlp", "hidden": hidden}, 10, INPUT_SHAPE)


def push_one(zoo: Zoo, name: str, seed: int, hidden: list[int], overwrite: bool = False) -> None:
    zoo.push(
        seeded_mlp(seed, hidden),
        name,
        model_cfg={"name": "mlp", "hidden": hidden},
        num_classes=10,
        input_shape=INPUT_SHAPE,
        metrics={"test_acc": 0.5},
        seeds=[seed],
        overwrite=overwrite,
    )


# Where a push can be killed, named by the file-system call it is about to make (or has just made): a push
# stages its weights folder (written and fsynced), renames it into place, then commits the entry file with an
# atomic temp-file + os.replace. Pausing at these calls, not at ltrain's function names, survives refactors.
PAUSE_POINTS = ("staging", "before_rename", "after_rename", "before_commit", "after_commit")


def pause_in_push(point: str, marker: str) -> None:
    """Patch this (forked, single-use) process's os calls so that the push stops at ``point`` and waits."""

    def pause() -> None:
        tmp = marker + ".tmp"
        with open(tmp, "w") as f:
            f.write(point)
        os.replace_original(tmp, marker)
        while True:
            time.sleep(0.05)

    rename, replace, fsync = os.rename, os.replace, os.fsync
    os.replace_original = replace
    seen = {"fsync": 0}

    def patched_fsync(fd):
        fsync(fd)
        seen["fsync"] += 1
        if point == "staging" and seen["fsync"] == 1:  # the first weights file is written, the folder is not
            pause()

    def patched_rename(src, dst, *args, **kwargs):
        if point == "before_rename":
            pause()
        rename(src, dst, *args, **kwargs)
        if point == "after_rename":
            pause()

    def patched_replace(src, dst, *args, **kwargs):
        committing = str(dst).endswith(".yaml")
        if committing and point == "before_commit":
            pause()
        replace(src, dst, *args, **kwargs)
        if committing and point == "after_commit":
            pause()

    os.fsync, os.rename, os.replace = patched_fsync, patched_rename, patched_replace


def child(cmd: dict) -> int:
    zoo = Zoo(catalog=cmd["catalog"], home=cmd["home"])
    try:
        if cmd["op"] == "push":
            for i, name in enumerate(cmd["names"]):
                push_one(zoo, name, i, cmd["hidden"], cmd.get("overwrite", False))
        else:
            pause_in_push(cmd["point"], cmd["marker"])
            push_one(zoo, cmd["name"], 0, cmd["hidden"])
            return 4  # the push ended without reaching its pause point
    except LtrainError as e:
        print(f"child {os.getpid()}: {e}", file=sys.stderr)
        return 3
    return 0


def main() -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] in ("push", "pause"):
            pid = os.fork()
            if pid == 0:
                os._exit(child(cmd))
            answer = {"pid": pid}
        elif cmd["op"] == "poll":
            done, status = os.waitpid(cmd["pid"], os.WNOHANG)
            answer = {
                "status": None
                if done == 0
                else (-os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
            }
        elif cmd["op"] == "wait":
            _, status = os.waitpid(cmd["pid"], 0)
            answer = {"status": -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)}
        else:
            answer = {"error": f"unknown op {cmd['op']}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
