"""The catalogue: push -> list -> show -> load, checksums, atomic and locked writes (real processes, real SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from ltrain.cli.zoo import run as zoo_cli
from ltrain.errors import LtrainError
from ltrain.models import build_model
from ltrain.zoo import Zoo

INPUT = (1, 32, 32)


def tiny_timm(num_classes: int = 5, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model({"name": "test_resnet"}, num_classes, INPUT).eval()


def push_tiny(zoo: Zoo, name: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    model = tiny_timm(seed=seed)
    zoo.push(model, name, model_cfg={"name": "test_resnet", "kwargs": {}}, input_shape=INPUT, **kwargs)
    return model


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_push_list_show_load_gives_identical_outputs(tmp_path, capsys):
    zoo = Zoo()
    push_tiny(zoo, "base", seed=1, metrics={"test_acc": [0.90, 0.92]}, seeds=[0, 1], description="the parent")
    model = push_tiny(
        zoo,
        "child",
        seed=2,
        parent="base",
        metrics={"test_acc": 0.8},
        seeds=[0],
        dataset={"dataset": "digits", "class_names": list("abcde")},
        preprocessing={"mean": [0.13], "std": [0.31]},
    )

    assert zoo_cli(["list"]) == 0
    listing = capsys.readouterr().out
    assert "base" in listing and "0.9100 ± 0.0141 (2 seeds)" in listing
    assert "child" in listing and "0.8000 (1 seed)" in listing
    assert zoo_cli(["show", "child"]) == 0
    shown = capsys.readouterr().out
    assert "lineage:     child <- base" in shown and "local-dir:" in shown
    assert zoo.lineage("child") == ["child", "base"] and zoo.children("base") == ["child"]

    entry = yaml.safe_load(zoo.entry_file("child").read_text())  # the text file a human (or git) reads
    assert entry["parent"] == "base" and entry["architecture"] == "test_resnet" and entry["num_classes"] == 5
    assert entry["files"]["model.safetensors"]["size"] == (zoo.folder("child") / "model.safetensors").stat().st_size
    assert set(entry["versions"]) == {"ltrain", "torch", "timm", "lightning"}
    timm_cfg = json.loads((zoo.folder("child") / "config.json").read_text())["pretrained_cfg"]
    assert timm_cfg["mean"] == [0.13] and timm_cfg["std"] == [0.31] and timm_cfg["input_size"] == list(INPUT)

    x = torch.randn(4, *INPUT)
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(zoo.load_model("child")(x), expected)
        again = build_model({"name": "test_resnet", "pretrained": "zoo:child"}, 5, INPUT).eval()
        assert torch.equal(again(x), expected)

    # timm alone (no ltrain imported) reads the entry folder.
    save_file({"x": x, "expected": expected}, str(tmp_path / "io.safetensors"))
    script = (
        "import sys, timm, torch; from safetensors.torch import load_file\n"
        f"torch.set_num_threads({torch.get_num_threads()})\n"  # same thread count: bit-identical float sums
        f"io = load_file({str(tmp_path / 'io.safetensors')!r})\n"
        f"m = timm.create_model('local-dir:{zoo.folder('child')}', pretrained=True).eval()\n"
        "assert not any(k.startswith('ltrain') for k in sys.modules), 'ltrain was imported'\n"
        "with torch.no_grad(): print(float((m(io['x']) - io['expected']).abs().max()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False
    )
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.strip().splitlines()[-1]) == 0.0


def test_entry_loads_as_timm_pretrained_weights_with_a_new_head():
    zoo = Zoo()
    model = push_tiny(zoo, "base")
    import timm

    new = timm.create_model(
        "test_resnet",
        pretrained=True,
        num_classes=3,
        in_chans=1,
        pretrained_cfg_overlay=zoo.timm_pretrained_cfg("base"),
    )
    assert torch.equal(new.conv1[0].weight, model.conv1[0].weight)
    assert new.fc.weight.shape == (3, model.fc.in_features)


def test_flipped_byte_is_caught_by_verify_and_by_loading(capsys):
    zoo = Zoo()
    push_tiny(zoo, "good", seed=1)
    push_tiny(zoo, "bad", seed=2)
    weights = zoo.folder("bad") / "model.safetensors"
    flip_byte(weights, weights.stat().st_size // 2)  # inside the tensor data: the file still parses

    results = {r.name: r for r in zoo.verify()}
    assert results["good"].ok
    assert not results["bad"].ok and "checksum mismatch" in results["bad"].problems[0]
    assert zoo_cli(["verify"]) == 1
    assert "DAMAGED bad" in capsys.readouterr().out
    assert zoo_cli(["verify", "good"]) == 0
    zoo.entry_file("good").write_text("name: [unclosed")  # a broken entry file does not hide the others
    assert zoo_cli(["list"]) == 0
    out, err = capsys.readouterr()
    assert "bad" in out and "skipping good" in err
    assert zoo_cli(["rm", "good"]) == 0 and zoo.names() == ["bad"]  # as the error message advises
    with pytest.raises(LtrainError, match=r"(?s)damaged.*checksum mismatch"):
        zoo.load_model("bad")
    with pytest.raises(LtrainError, match="damaged"):
        build_model({"name": "test_resnet", "pretrained": "zoo:bad"}, 5, INPUT)


def test_missing_weights_folder_is_reported_by_verify():
    zoo = Zoo()
    push_tiny(zoo, "gone")
    (zoo.folder("gone") / "model.safetensors").unlink()
    (result,) = zoo.verify("gone")
    assert result.problems == [f"model.safetensors missing ({zoo.folder('gone') / 'model.safetensors'})"]


def test_rm_removes_entry_and_weights_and_lineage_shows_the_removed_parent(capsys):
    zoo = Zoo()
    push_tiny(zoo, "a")
    push_tiny(zoo, "b", parent="a")
    folder = zoo.folder("a")
    assert zoo_cli(["rm", "a"]) == 0
    assert "children b" in capsys.readouterr().out
    assert not folder.exists() and zoo.names() == ["b"]
    assert zoo.lineage("b") == ["b", "a (removed)"]
    with pytest.raises(LtrainError, match=r"(?s)no zoo entry .a.*Entries: b"):
        zoo.get("a")


def test_push_refuses_bad_or_taken_names_and_overwrite_replaces_the_weights():
    zoo = Zoo()
    push_tiny(zoo, "taken", seed=1)
    old_folder = zoo.folder("taken")
    with pytest.raises(LtrainError, match="exists"):
        push_tiny(zoo, "taken", seed=2)
    for bad in ("../escape", "", "a b", ".hidden"):
        with pytest.raises(LtrainError, match="not valid"):
            push_tiny(zoo, bad)
    with pytest.raises(LtrainError, match="parent entry 'nope'"):
        push_tiny(zoo, "orphan", parent="nope")
    model = push_tiny(zoo, "taken", seed=2, overwrite=True)
    assert not old_folder.exists() and zoo.verify("taken")[0].ok
    assert torch.equal(zoo.load_state_dict("taken")["fc.weight"], model.fc.weight)


def expected_mlp_state(seed: int, hidden: list[int]) -> dict[str, torch.Tensor]:
    from tests.store.push_worker import seeded_mlp  # here, not at the top: importing it sets torch's thread count

    return seeded_mlp(seed, hidden).state_dict()


def test_two_concurrent_pushes_of_different_entries_both_land_intact(push_worker, tmp_path):
    zoo = Zoo()
    hidden = [256, 256]
    common = {"home": str(zoo.home), "catalog": str(zoo.catalog), "hidden": hidden}
    first = push_worker.send(op="push", names=["left_0", "left_1", "left_2"], **common)["pid"]
    second = push_worker.send(op="push", names=["right_0", "right_1", "right_2"], **common)["pid"]
    assert push_worker.send(op="wait", pid=first)["status"] == 0
    assert push_worker.send(op="wait", pid=second)["status"] == 0

    assert zoo.names() == ["left_0", "left_1", "left_2", "right_0", "right_1", "right_2"]
    assert all(r.ok for r in zoo.verify())
    for side in ("left", "right"):
        for i in range(3):
            got = zoo.load_state_dict(f"{side}_{i}")
            want = expected_mlp_state(i, hidden)
            assert all(torch.equal(got[k], want[k]) for k in want)


def test_two_concurrent_pushes_of_one_name_one_wins_and_the_entry_is_intact(push_worker):
    zoo = Zoo()
    common = {"home": str(zoo.home), "catalog": str(zoo.catalog), "hidden": [256, 256], "names": ["same"]}
    pids = [push_worker.send(op="push", **common)["pid"] for _ in range(2)]
    statuses = sorted(push_worker.send(op="wait", pid=p)["status"] for p in pids)
    assert statuses == [0, 3]  # one pushed, the other was told the name is taken
    assert zoo.names() == ["same"] and zoo.verify("same")[0].ok
    assert len(list((zoo.home / "models" / "same").iterdir())) == 1  # the loser left nothing behind


@pytest.mark.parametrize("point", ["staging", "before_rename", "after_rename", "before_commit", "after_commit"])
def test_push_killed_at_each_point_leaves_the_catalogue_as_before_or_complete(
    push_worker, point, tmp_path, kill_report
):
    """SIGKILL a pusher stopped at each step of a push; the entry is listed whole (only after the commit) or not
    at all, ``ltrain-zoo verify`` passes, and pushing the name again works and clears what the kill left."""
    zoo = Zoo()
    push_tiny(zoo, "kept")
    marker = tmp_path / "paused"
    pid = push_worker.send(
        op="pause",
        home=str(zoo.home),
        catalog=str(zoo.catalog),
        name="victim",
        hidden=[64],
        point=point,
        marker=str(marker),
    )["pid"]
    while not marker.exists():  # no time limit decides the outcome: the worker either pauses or exits
        time.sleep(0.02)
        assert push_worker.send(op="poll", pid=pid)["status"] is None, "the pusher exited before its pause point"
    assert marker.read_text() == point
    os.kill(pid, signal.SIGKILL)
    assert push_worker.send(op="wait", pid=pid)["status"] == -signal.SIGKILL
    committed = point == "after_commit"
    assert zoo.names() == (["kept", "victim"] if committed else ["kept"])
    assert all(r.ok for r in zoo.verify()), [r for r in zoo.verify() if not r.ok]
    left = sorted(p.name for p in (zoo.home / "models" / "victim").iterdir())
    kill_report(f"killed at {point}: {'listed and verified' if committed else 'not listed'}; left on disk {left}")
    cli = Path(sys.executable).parent / "ltrain-zoo"  # what a user runs after the crash
    verify = subprocess.run([str(cli), "verify"], capture_output=True, text=True, timeout=120, check=False)
    lines = verify.stdout.splitlines()
    assert verify.returncode == 0 and len(lines) == len(zoo.names()) and all(x.startswith("ok ") for x in lines), (
        verify.stdout + verify.stderr
    )
    if not committed:  # pushing the interrupted name again works and clears the dead pusher's staging folder
        model = build_model({"name": "mlp", "hidden": [8]}, 10, (1, 28, 28))
        zoo.push(model, "victim", model_cfg={"name": "mlp", "hidden": [8]}, input_shape=(1, 28, 28))
        assert zoo.verify("victim")[0].ok
        assert not list((zoo.home / "models" / "victim").glob(".tmp-*"))


def test_what_a_kill_can_leave_behind_is_invisible_and_cleared_by_the_next_push():
    """The states a SIGKILL can leave (rare windows included): a half-written entry temp file, a weights folder
    renamed in without its entry file, a dead pusher's staging folder. None is listed; the next push works."""
    zoo = Zoo()
    push_tiny(zoo, "kept")
    dead = subprocess.Popen(["true"])
    dead.wait()  # reaped: its pid names no process now
    (zoo.catalog / ".x.yaml.k3j2.tmp").write_text("name: x\narchitec")  # killed inside atomic_write_bytes
    (zoo.home / "models" / "x" / "20260101T000000-deadbeef").mkdir(parents=True)  # killed after the rename
    staging = zoo.home / "models" / "x" / f".tmp-{dead.pid}-20260101T000001-cafe0000"  # killed while staging
    staging.mkdir()
    (staging / "model.safetensors").write_bytes(b"\0" * 100)
    assert zoo.names() == ["kept"] and all(r.ok for r in zoo.verify())
    with pytest.raises(LtrainError, match="no zoo entry 'x'"):
        zoo.get("x")
    push_tiny(zoo, "x")
    assert zoo.names() == ["kept", "x"] and zoo.verify("x")[0].ok and not staging.exists()
