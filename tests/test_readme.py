"""The README's Python examples run as written, top to bottom, in one session (with stand-ins
for the checkpoint files they name, made from the parity fixtures' deterministic weights)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples():
    blocks = python_blocks()
    assert len(blocks) >= 3
    assert any("Segmenter.from_model" in b for b in blocks)


def test_readme_python_examples_run(tmp_path, monkeypatch):
    from models.test_parity import reference_state_dict

    # The files the examples load, in the formats their names say.
    torch.save(
        reference_state_dict("torchvision", "deeplabv3_resnet101"),
        tmp_path / "deeplabv3_resnet101_coco-586e9e4e.pth",
    )
    vainf = {"model_state": reference_state_dict("vainf", "deeplabv3plus_mobilenet_os16")}
    torch.save(vainf, tmp_path / "best_deeplabv3plus_mobilenet_voc_os16.pth")
    torch.save(vainf, tmp_path / "vainf.pth")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for i, block in enumerate(python_blocks()):
        exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
    assert namespace["out"]["out"].shape == (2, 19, 513, 513)
    import atrous.weights as W

    assert W.load(tmp_path / "model.safetensors").metadata["class_names"][1] == "road"
    assert (tmp_path / "masks" / "photo.png").is_file()
    assert (tmp_path / "masks" / "photo_overlay.jpg").is_file()


def shell_commands() -> list[list[str]]:
    """Every ``atrous ...`` command of the README's bash blocks (and ``torchrun ... -m atrous
    ...``), continuation lines joined, comments dropped, as argument lists."""
    import shlex

    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == "atrous":
                commands.append(words[1:])
            elif words and words[0] == "torchrun" and "atrous" in words:  # -m atrous ...
                commands.append(words[words.index("atrous") + 1 :])
    return commands


def test_readme_commands_parse_with_their_flags():
    """Each command of the README names a real subcommand and real flags (those that need a
    download or a long run are only parsed, not run)."""
    from atrous.cli import build_parser

    commands = shell_commands()
    assert len(commands) >= 15
    parser = build_parser()
    for argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit as e:  # argparse's error exit
            raise AssertionError(f"README: `atrous {' '.join(argv)}` does not parse") from e


def test_readme_links_exist():
    """Every relative link of the README points to a file of the repository."""
    root = README.parent
    for target in re.findall(r"\]\(([^)#:]+)\)", README.read_text()):
        assert (root / target).exists(), f"README links to {target}, which does not exist"
