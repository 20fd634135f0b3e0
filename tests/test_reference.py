"""The PyTorch reference end to end: checkpoint round trip, generation on `tiny`, bad checkpoints."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from vinci_edge import crte
from vinci_edge.cli import run
from vinci_edge.errors import CheckpointError
from vinci_edge.generation import GenerationConfig
from vinci_edge.kinds import Kind
from vinci_edge.metrics import Metrics
from vinci_edge.model.checkpoint import init_checkpoint, load_model, save_checkpoint
from vinci_edge.model.reference import Reference


def _outputs(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    px = torch.randn(2, 3, cfg.image_size, cfg.image_size, generator=g)
    mel = torch.randn(1, cfg.num_mel_bins, 3000, generator=g)
    ids = torch.arange(10)
    with torch.inference_mode():
        return (
            model.encode_frames(px),
            model.encode_audio(mel),
            model.llm(input_ids=ids[None]).logits,
        )


def test_checkpoint_round_trip(tiny_ckpt, tmp_path):
    a = load_model(tiny_ckpt)
    save_checkpoint(a, tmp_path / "copy")
    shutil.copytree(tiny_ckpt / "llm", tmp_path / "copy" / "llm", dirs_exist_ok=True)
    b = load_model(tmp_path / "copy")
    for x, y in zip(_outputs(a), _outputs(b)):
        assert torch.equal(x, y)
    # the same seed writes the same weights
    init_checkpoint("tiny", tmp_path / "again", seed=0)
    c = load_model(tmp_path / "again")
    for x, y in zip(_outputs(a), _outputs(c)):
        assert torch.equal(x, y)
    # the real layout: a folder per component, each with its config and safetensors
    for sub in ("llm", "vision_tower", "mm_projector", "sound_tower", "sound_mm_projector"):
        assert (tiny_ckpt / sub / "config.json").is_file()
        assert (tiny_ckpt / sub / "model.safetensors").is_file()
    assert json.loads((tiny_ckpt / "sound_tower" / "config.json").read_text())["model_type"] == "qwen2_audio"
    assert (tiny_ckpt / "llm" / "tokenizer.json").is_file()


def test_generation_on_tiny_with_video_and_audio(tiny_ckpt, clip):
    ref = Reference.from_checkpoint(tiny_ckpt)
    pieces: list[str] = []
    ans = ref.answer(
        "What happens in this clip?", GenerationConfig(max_new_tokens=8), on_text=pieces.append, video=clip
    )
    assert 1 <= len(ans.token_ids) <= 8
    assert "".join(pieces) == ans.text
    assert ans.plan["video"] == ref.cfg.num_video_frames * ref.cfg.tokens_per_frame
    assert ans.plan["audio"] > 0  # the clip's own audio, interleaved
    stages = ans.metrics.totals()
    for stage in ("media_decode", "vision", "audio", "stitch", "prefill"):
        assert stages[stage] > 0
    # greedy is deterministic
    again = ref.answer("What happens in this clip?", GenerationConfig(max_new_tokens=8), video=clip)
    assert again.token_ids == ans.token_ids
    # the second question about the same clip reuses its encoder rows: the towers do not run again
    assert "vision" not in again.metrics.totals() and "audio" not in again.metrics.totals()


def test_without_the_row_cache_every_request_encodes_its_media(tiny_ckpt, clip):
    """What a benchmark against the runtime's `cache_chunks=0` needs (bench_runtime.py)."""
    ref = Reference.from_checkpoint(tiny_ckpt, cache_chunks=0)
    for _ in range(2):
        stages = ref.answer("What happens?", GenerationConfig(max_new_tokens=2), video=clip).metrics.totals()
        assert stages["vision"] > 0 and stages["audio"] > 0


def test_stitch_places_text_and_rotates_media(tiny_ckpt, clip):
    ref = Reference.from_checkpoint(tiny_ckpt)
    req = ref.prepare("Describe.", video=clip)
    embeds = ref.inputs_embeds(req)
    text = req.plan.kind == Kind.TEXT
    table = ref.model.embed_tokens(torch.from_numpy(req.plan.src[text]))
    assert torch.equal(embeds[torch.from_numpy(text)], table)
    # media rows are the stage outputs rotated by CRTE: the torch rotation agrees with numpy's
    banks = ref.banks(req, Metrics())
    v = req.plan.kind == Kind.VIDEO
    rows = banks[Kind.VIDEO][torch.from_numpy(req.plan.src[v])].double().numpy()
    expect = crte.apply_rotation(
        rows, ref.model.tables[Kind.VIDEO], req.plan.scale[v], req.plan.a[v], req.plan.b[v]
    )
    np.testing.assert_allclose(embeds[torch.from_numpy(v)].double().numpy(), expect, rtol=0, atol=1e-6)


def test_cli_generate_json(tiny_ckpt, wav, capsys):
    code = run(
        [
            "generate",
            "--checkpoint",
            str(tiny_ckpt),
            "--audio",
            str(wav),
            "--prompt",
            "Hi",
            "--max-new-tokens",
            "4",
            "--json",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"text", "token_ids", "timings"}
    assert len(out["token_ids"]) <= 4 and out["plan"]["audio"] == 750


def test_wrong_checkpoint_is_refused_with_a_hint(tiny_ckpt, tmp_path, capsys):
    bad = tmp_path / "mixed"
    shutil.copytree(tiny_ckpt, bad)
    # a projector from another model: shapes no longer match the config
    cfg = json.loads((bad / "config.json").read_text())
    cfg["mm_hidden_size"] = None
    (bad / "config.json").write_text(json.dumps(cfg))
    vt = json.loads((bad / "vision_tower" / "config.json").read_text())
    vt["hidden_size"] = 48
    vt["num_attention_heads"] = 2
    (bad / "vision_tower" / "config.json").write_text(json.dumps(vt))
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(bad)
    # damaged weights
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_ckpt, damaged)
    (damaged / "mm_projector" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_model(damaged)
    # the CLI says it in one message, no traceback
    assert run(["generate", "--checkpoint", str(bad), "--prompt", "x"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "hint:" in err and "Traceback" not in err
    # weights missing altogether
    missing = tmp_path / "missing"
    shutil.copytree(tiny_ckpt, missing)
    (missing / "mm_projector" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no .safetensors"):
        load_model(missing)


def test_config_only_9b_writes_layout_without_weights(tmp_path):
    assert (
        run(["init-checkpoint", "--preset", "omnivinci-9b", "--out", str(tmp_path / "9b"), "--config-only"])
        == 0
    )
    from vinci_edge.config import load_config

    cfg = load_config(tmp_path / "9b")
    assert cfg.hidden_size == 3584 and cfg.tokens_per_frame == 256
    assert not list((tmp_path / "9b").rglob("*.safetensors"))


@pytest.mark.slow
def test_smollm2_checkpoint_answers_sensibly(smol_ckpt):
    ref = Reference.from_checkpoint(smol_ckpt)
    ans = ref.answer("What is the capital of France?", GenerationConfig(max_new_tokens=16))
    assert "Paris" in ans.text
    assert ans.stop_reason in ("eos", "max_new_tokens")


def test_image_with_dynamic_s2_tiles(tiny_ckpt, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    path = tmp_path / "wide.png"
    Image.fromarray(rng.integers(0, 255, (60, 150, 3), dtype=np.uint8)).save(path)
    ref = Reference.from_checkpoint(tiny_ckpt)
    req = ref.prepare("What is this?", image=path)
    tiles = req.images[0]
    rows, cols = tiles.block_size
    # fixed scales (1 + 4 tiles) then the aspect-ratio tiling; tokens at the largest scale
    assert tiles.pixels.shape[0] == 1 + 4 + rows * cols
    assert tiles.n_tokens == rows * cols * ref.cfg.tokens_per_frame
    embeds = ref.inputs_embeds(req)
    assert embeds.shape == (len(req.plan), ref.cfg.hidden_size)
    assert req.plan.counts()["image"] == tiles.n_tokens
    ans = ref.answer("What is this?", GenerationConfig(max_new_tokens=3), image=path)
    assert 1 <= len(ans.token_ids) <= 3


def test_reference_can_stitch_with_the_native_kernel(tiny_ckpt, clip):
    from vinci_edge.model.crte_op import native_available

    ref = Reference.from_checkpoint(tiny_ckpt)
    req = ref.prepare("Describe.", video=clip)
    expect = ref.inputs_embeds(req)
    ref.model.use_native_stitch = True
    got = ref.inputs_embeds(req)
    # the kernel (or its float64 torch fallback when the library is not built) gives the same rows
    assert torch.allclose(got, expect, rtol=1e-6, atol=1e-6), native_available()
