"""Training on the synthetic task: the batched prefix stitch is the reference stitch, a few steps
lower the loss, an interrupted run resumes to the same weights, and the checkpoint it writes loads
and answers through the reference and the exported engine alike."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vinci_edge.avtask.speech import espeak_available
from vinci_edge.kinds import Kind

pytestmark = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")

SHORT = {"clips_per_step": 2, "questions_per_clip": 3, "warmup_steps": 1, "lr": 3e-3, "tower_steps": 2}


def _setup(tmp_path, ablation="none", **recipe):
    from vinci_edge.avtask.questions import corpus
    from vinci_edge.model.omnivinci import OmniVinciModel
    from vinci_edge.request.prompt import PromptBuilder
    from vinci_edge.text.tokenizer import TextTokenizer
    from vinci_edge.text.train_tokenizer import write_trained_tokenizer
    from vinci_edge.training.batch import BatchMaker
    from vinci_edge.training.recipe import Recipe, recipe_config

    llm = tmp_path / "llm"
    if not llm.exists():
        write_trained_tokenizer(llm, 512, corpus=corpus(range(200)))
    tok = TextTokenizer.from_folder(llm)
    r = Recipe(ablation=ablation, **{**SHORT, **recipe})
    cfg = recipe_config(r, tok.vocab_size)
    torch.manual_seed(0)
    model = OmniVinciModel(cfg)
    return model, BatchMaker(cfg, PromptBuilder(cfg, tok), r.questions_per_clip), r


@pytest.mark.parametrize("ablation", ["none", "no-teg", "no-crte"])
def test_the_batched_prefix_is_the_reference_stitch(tmp_path, ablation):
    """Every clip's prefix, stitched for the batch at once, equals the model's own stitch (float64
    CRTE) of the same positions of that clip's full prompt."""
    from vinci_edge.avtask.dataset import example
    from vinci_edge.training.loop import PrefixStitch

    model, maker, _ = _setup(tmp_path, ablation)
    batch = maker.make([11, 12], np.random.default_rng(0))
    with torch.no_grad():
        video = model.encode_frames(batch.pixels).reshape(2, -1, model.cfg.hidden_size)
        audio = model.encode_audio(batch.mel).reshape(2, -1, model.cfg.hidden_size)
        got = PrefixStitch(batch.prefix, model.tables)(model.llm.get_input_embeddings(), video, audio)
        for i, seed in enumerate([11, 12]):
            chunk = maker.chunk(example(seed, maker.words))
            prompt = maker.prompt(chunk, "Which word is spoken?")
            want = model.stitch(prompt.plan, {Kind.VIDEO: video[i], Kind.AUDIO: audio[i]})
            assert torch.allclose(got[i], want[: len(batch.prefix)], atol=1e-5, rtol=1e-5)
    rotated = ablation != "no-crte"
    assert (model.tables[Kind.VIDEO] is not None) == rotated


def test_a_few_steps_lower_the_loss(tmp_path):
    from vinci_edge.training.loop import forward

    model, maker, r = _setup(tmp_path)
    batch = maker.make([1, 2], np.random.default_rng(0))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):  # the same batch: the loss must fall on what it has seen
        loss, result = forward(model, None, batch, r)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(result.lm)
    assert losses[-1] < 0.7 * losses[0], losses


def test_the_dense_probe_learns_what_is_where(tmp_path):
    """The dense heads read each video and audio row; a few steps on one batch lower their loss."""
    from vinci_edge.training.loop import MediaProbe, forward

    model, maker, r = _setup(tmp_path, dense_probe=True)
    batch = maker.make([1, 2], np.random.default_rng(0))
    assert batch.cell_labels.shape == (2, 8, 16, 2) and batch.row_labels.shape == (2, 200)
    probe = MediaProbe(model.cfg.hidden_size, dense=True)
    opt = torch.optim.AdamW([*model.parameters(), *probe.parameters()], lr=3e-3)
    losses = []
    for _ in range(6):
        loss, result = forward(model, None, batch, r, probe)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(result.probe)
    assert losses[-1] < 0.7 * losses[0], losses


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    from vinci_edge.training.loop import Trainer

    model, maker, r = _setup(tmp_path, steps=3)  # 2 steps of the towers alone, then 3 joint steps
    straight = Trainer(model, maker, r, tmp_path / "a.pt")
    straight.train()

    model, maker, r = _setup(tmp_path, steps=3)
    Trainer(model, maker, r, tmp_path / "b.pt").train(stop_at=3)  # killed after step 3's save
    model, maker, r = _setup(tmp_path, steps=3)
    resumed = Trainer(model, maker, r, tmp_path / "b.pt")
    resumed.load_state()
    assert resumed.step == 3
    resumed.train()
    for (name, x), y in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(x, y), name


def test_train_writes_a_checkpoint_that_loads_and_refuses_to_lose_a_run(tmp_path):
    from vinci_edge.cli import run
    from vinci_edge.model.checkpoint import load_model

    out = tmp_path / "ckpt"
    assert run(["train", "--out", str(out), "--steps", "2", "--tower-steps", "1"]) == 0
    record = json.loads((out / "training_record.json").read_text())
    assert record["steps"] == 3 and record["recipe"]["tower_steps"] == 1
    assert [p["phase"] for p in record["history"]] == ["towers", "joint"]
    # the joint points carry each template's running training error (questions by error)
    assert set(record["history"][1]["template_errors"]) == set(record["template_errors"])
    assert "template_errors" not in record["history"][0]
    # ... drawn beside it: one line per template outside the audio category
    curves = (out / "training_curves.svg").read_text()
    assert curves.startswith("<svg") and curves.count("<polyline") == 10
    assert "shape of colour" in curves and "word second" in curves and "tone" not in curves
    assert load_model(out).cfg.hidden_size == 128
    # a state file beside --out means an interrupted run: refused without --resume
    (tmp_path / "other.train-state.pt").write_bytes(b"x")
    assert run(["train", "--out", str(tmp_path / "other"), "--steps", "2", "--tower-steps", "0"]) == 2
    assert (
        run(["train", "--out", str(tmp_path / "new"), "--steps", "2", "--tower-steps", "0", "--resume"]) == 2
    )


def test_the_schedule_warms_up_each_phase_and_decays_only_the_joint_one():
    from vinci_edge.training.loop import lr_at
    from vinci_edge.training.recipe import Recipe

    r = Recipe(steps=1000, tower_steps=300, warmup_steps=100, lr=1e-3, min_lr_fraction=0.1)
    assert r.total_steps == 1300
    assert lr_at(0, r) == pytest.approx(1e-5) and lr_at(99, r) == pytest.approx(1e-3)
    assert lr_at(299, r) == pytest.approx(1e-3)  # the towers' phase holds the peak
    assert lr_at(300, r) == pytest.approx(1e-5)  # the joint phase warms up again (the LLM is new)
    assert lr_at(399, r) == pytest.approx(1e-3)
    assert lr_at(1299, r) == pytest.approx(1e-4, rel=1e-3)  # ... and decays to 10 %
    with pytest.raises(ValueError, match="towers' phase needs the media probe"):
        Recipe(tower_steps=10, probe_weight=0.0)
