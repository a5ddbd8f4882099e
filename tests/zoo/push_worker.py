"""A process that forks real pushers on command, for the concurrency and kill tests of the zoo.

Imports torch and ltrain once, then reads one JSON command per line on stdin and answers one JSON line:
  {"op": "push", "home", "catalog", "names", "hidden", "overwrite"?} -> forks a child that pushes one MLP per
      name (weights seeded by the name's index, so the test can rebuild them) and exits 0, or 3 on LtrainError;
      answers {"pid"}
  {"op": "loop", "home", "catalog", "prefix", "hidden"} -> forks a child pushing one model (seed 0) as prefix_0,
      prefix_1, ... until killed; answers {"pid"}
  {"op": "wait", "pid"} -> reaps the child; answers {"status"} (the raw wait status: -9 means SIGKILL)
Forking after the imports keeps each pusher cheap; the children are real processes holding real file locks.
"""

from __future__ import annotations

import json
import os
import sys

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


def child(cmd: dict) -> int:
    zoo = Zoo(catalog=cmd["catalog"], home=cmd["home"])
    try:
        if cmd["op"] == "push":
            for i, name in enumerate(cmd["names"]):
                push_one(zoo, name, i, cmd["hidden"], cmd.get("overwrite", False))
        else:
            model, i = seeded_mlp(0, cmd["hidden"]), 0  # built once: the loop's time is spent pushing
            while True:
                zoo.push(
                    model,
                    f"{cmd['prefix']}_{i}",
                    model_cfg={"name": "mlp", "hidden": cmd["hidden"]},
                    num_classes=10,
                    input_shape=INPUT_SHAPE,
                )
                i += 1
    except LtrainError as e:
        print(f"child {os.getpid()}: {e}", file=sys.stderr)
        return 3
    return 0


def main() -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] in ("push", "loop"):
            pid = os.fork()
            if pid == 0:
                os._exit(child(cmd))
            answer = {"pid": pid}
        elif cmd["op"] == "wait":
            _, status = os.waitpid(cmd["pid"], 0)
            answer = {"status": -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)}
        else:
            answer = {"error": f"unknown op {cmd['op']}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
