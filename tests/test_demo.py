"""The packaged demo model and the README's main command: a fresh install transcribes the shipped held-out
example with no network (issue: "a small multilingual model trained on synthetic speech")."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from safetensors import safe_open

from speechkit.model.hub import DEMO_DIR, resolve_checkpoint
from speechkit.training.data.recipe import load_recipe_config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
RECIPE = ROOT / "recipes" / "synthetic_demo" / "config.yaml"
SHARD_LIMIT = 16 * 2**20  # bytes: what one file carried back from the training machine may hold


def _example() -> dict:
    return json.loads((EXAMPLES / "demo_example.json").read_text("utf-8"))


def _readme_command(verb: str) -> list[str]:
    """The README's quick-start line ``speechkit <verb> examples/... --model demo ...`` as argv."""
    pattern = rf"^\s+(speechkit {verb} examples/\S+ .*--model demo.*)$"
    found = re.findall(pattern, (ROOT / "README.md").read_text("utf-8"), flags=re.MULTILINE)
    assert found, f"README.md has no 'speechkit {verb} examples/... --model demo' line"
    argv = shlex.split(found[0].split("#")[0])
    exe = shutil.which("speechkit", path=str(Path(sys.executable).parent)) or shutil.which("speechkit")
    return [exe, *argv[1:]] if exe else [sys.executable, "-m", "speechkit.cli", *argv[1:]]


def test_demo_alias_resolves_to_the_packaged_bf16_shards() -> None:
    assert resolve_checkpoint("demo") == DEMO_DIR
    shards = sorted(DEMO_DIR.glob("model-*.safetensors"))
    assert shards and all(p.stat().st_size <= SHARD_LIMIT for p in shards)
    assert sum(p.stat().st_size for p in shards) < 32 * 2**20
    index = json.loads((DEMO_DIR / "model.safetensors.index.json").read_text("utf-8"))
    assert set(index["weight_map"].values()) == {p.name for p in shards}
    with safe_open(str(shards[0]), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes == {"BF16"}


def test_example_is_from_the_held_out_set() -> None:
    meta = _example()
    assert meta["split"] == "test" and meta["id"].startswith(f"test-{meta['src_lang']}-")
    data = load_recipe_config(RECIPE).data
    variant = meta["voice"].partition("+")[2]
    assert variant in data.heldout_variants and variant not in data.train_variants
    assert (EXAMPLES / meta["audio"]).is_file()


def test_readme_main_command_transcribes_the_example() -> None:
    """What a user runs first: the installed command, the packaged model, no network."""
    meta = _example()
    argv = _readme_command("transcribe")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    words = set(re.findall(r"\w+", done.stdout.lower()))
    missing = [w for w in meta["known_words"] if w not in words]
    assert not missing, f"{missing} not in the transcript {done.stdout!r} of {meta['text']!r}"


def test_readme_translate_command_runs() -> None:
    """The translation example runs and prints a non-empty line (its quality is in RESULTS.md)."""
    done = subprocess.run(_readme_command("translate"), capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()


def test_loading_the_demo_on_cpu_leaves_dynamo_unimported_and_init_restored() -> None:
    # building the model on the meta device must not run torch's Python reference kernels (their first call
    # imports torch._dynamo: ~3 s of a CPU transcription), and the loader must put nn.init back
    code = (
        "import sys, torch\n"
        "normal = torch.nn.init.normal_\n"
        "from speechkit.inference.pipeline import Pipeline\n"
        "Pipeline.load('demo', device='cpu')\n"
        "assert 'torch._dynamo' not in sys.modules, 'torch._dynamo was imported'\n"
        "assert torch.nn.init.normal_ is normal\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
