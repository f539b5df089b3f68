"""Learn to Augment as the paper's Algorithm 1: exploration perturbs the agent's own moves, and both warps are
scored under the same following ops."""

from __future__ import annotations

import torch
from pydantic import TypeAdapter

from cvlab.augment import build_pipeline, step_generator
from cvlab.config.augment import AugmentSpec

torch.set_num_threads(1)


def _pipe(*specs):
    return build_pipeline([TypeAdapter(AugmentSpec).validate_python(s) for s in specs]).train()


def _images(b: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = 0.8 + 0.2 * torch.rand(b, 1, 32, 100, generator=g)
    for i in range(b):
        x[i, :, 8:24, 10 + i:90:9] = 0.0  # vertical strokes, a different phase per image
    return x


def test_exploration_perturbs_the_agents_own_moves():
    pipe = _pipe({"op": "learned", "explore": 0.25})
    agent = pipe.learned
    with torch.no_grad():  # a confident agent: 'forward' for every point, so its moves are not a uniform draw
        agent.agent.head.bias.copy_(torch.tensor([0.0, 0.0, 8.0]).repeat(agent.agent.points * 2))
    pipe(_images(32), step_generator(0, 0))
    own, explored = agent.last["states"], agent.last["explored_states"]
    assert (own == 2).float().mean() > 0.99
    changed = explored != own
    assert 0.2 < changed.float().mean() < 0.3  # about `explore` of the moves
    assert ((explored == own) | changed).all() and (explored[~changed] == 2).all()


def test_explored_batch_goes_through_the_same_following_ops():
    # with (almost) no exploration the explored batch must come out exactly like the trained batch: same warp,
    # same noise, same blur parameters after the learned op
    pipe = _pipe({"op": "learned", "p": 0.5, "explore": 1e-9}, {"op": "noise", "std": 0.1},
                 {"op": "gaussian_blur", "p": 1.0})
    x = _images()
    out = pipe(x, step_generator(0, 3))
    assert torch.equal(pipe.learned.last["states"], pipe.learned.last["explored_states"])
    torch.testing.assert_close(pipe.learned.last["explored"], out, atol=0, rtol=0)
    assert not torch.equal(out, x)


def test_mls_warp_moves_content_to_the_destination_and_is_exact_at_rest():
    from cvlab.augment.textwarp import fiducial_points, mls_warp

    x = _images(2)
    src = fiducial_points(4, x)
    torch.testing.assert_close(mls_warp(x, src, src.expand(2, -1, -1)), x, atol=1e-5, rtol=0)
    shifted = src + torch.tensor([5 * 2 / 100, 0.0])  # every point 5 px right: a pure shift
    y = mls_warp(x, src, shifted.expand(2, -1, -1))
    torch.testing.assert_close(y[..., 5:], x[..., :-5], atol=1e-4, rtol=0)


def test_every_text_warp_runs_through_mls():
    x = _images(4)
    for op in ("text_distort", "text_stretch", "text_perspective", "learned"):
        pipe = _pipe({"op": op, "p": 1.0, "warp": "mls"})
        y = pipe(x, step_generator(0, 1))
        assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1 and not torch.equal(y, x), op
        z = _pipe({"op": op, "p": 1.0, "warp": "tps"})(x, step_generator(0, 1))
        assert (y - z).abs().mean() < 0.1, op  # the same moves: two interpolations of one deformation


def test_the_agents_warps_get_harder_for_a_fixed_recognizer():
    """The agent's expected difficulty (recognizer loss under its policy, fixed distances) rises as it learns."""
    from cvlab.augment.learned import STATES, per_sample_loss
    from cvlab.config import ModelCfg
    from cvlab.data.tokenizer import CTCTokenizer
    from cvlab.models import build_model

    tok = CTCTokenizer("0123456789")
    cfg = ModelCfg.model_validate({"backbone": {"name": "vgg", "size": "tiny", "width": 0.5},
                                   "sequence": {"name": "none"}, "norm": {"name": "group", "groups": 4},
                                   "init": "torch"})  # the init these 40 fitting steps were sized for
    torch.manual_seed(0)
    model = build_model(cfg, tok.num_classes).model
    targets, lengths = tok.encode_batch(["1234", "5678", "9012", "3456", "7890", "1357", "2468", "0246"])
    x = _images()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):  # a recognizer fitted to the clean images, so warps can hurt it; then it stays fixed
        opt.zero_grad()
        model.loss(model(x), targets, lengths).backward()
        opt.step()
    model.eval()
    pipe = _pipe({"op": "learned", "lr": 0.1, "radius": 0.4})
    agent = pipe.learned

    @torch.no_grad()
    def difficulty() -> float:
        g = torch.Generator().manual_seed(5)  # the same draws before and after
        probs = agent.agent(x).softmax(-1)
        losses = []
        for _ in range(8):
            u = torch.rand(probs.shape[:-1], generator=g)
            states = (u.unsqueeze(-1) > probs.cumsum(-1)).sum(-1).clamp(max=STATES - 1)
            warped = agent.warp(x, states, torch.full(states.shape, 0.75))
            losses.append(per_sample_loss(model, model(warped), targets, lengths).mean())
        return torch.stack(losses).mean().item()

    before = difficulty()
    for step in range(100):
        augmented = pipe(x, step_generator(0, step))
        with torch.no_grad():
            logits = model(augmented)
        agent.learn(model, logits, targets, lengths)
    after = difficulty()
    assert after > 1.03 * before, (before, after)  # +7 % here (+10 %, +4.5 % with seeds 1 and 2)


def test_authors_magnitudes_bound_the_moves_as_their_tool_does():
    from cvlab.augment import AUGMENTS
    from cvlab.augment.textwarp import fiducial_points

    x = _images(64)  # 32×100, 4 segments: a segment is 25 px, the tool's distort threshold 25/3 px
    spec = TypeAdapter(AugmentSpec).validate_python({"op": "text_distort", "p": 1.0, "magnitudes": "authors"})
    dst = AUGMENTS["text_distort"](spec).sample(x, step_generator(0, 0))["dst"]
    moves = (dst - fiducial_points(4, x)) * torch.tensor([50.0, 16.0])  # normalized -> pixels
    corners, inner = moves[:, [0, 4, 5, 9]], moves[:, [1, 2, 3, 6, 7, 8]]
    assert corners.abs().max() < 25 / 3 and corners.abs().max() > 0.8 * 25 / 3
    assert (corners[:, 0] >= 0).all() and (corners[:, 1, 0] <= 0).all() and (corners[:, 2, 1] <= 0).all()
    assert inner.abs().max() <= 25 / 6 + 1e-4 and (inner[..., 1] < 0).any() and (inner[:, :3, 1] < 0).any()
    spec = TypeAdapter(AugmentSpec).validate_python({"op": "text_perspective", "p": 1.0, "magnitudes": "authors"})
    dst = AUGMENTS["text_perspective"](spec).sample(x, step_generator(0, 0))["dst"]
    dy = (dst - fiducial_points(4, x))[..., 1] * 16
    assert dy.abs().max() < 16 and dy.abs().max() > 0.3 * 32  # beyond cvlab's default 0.3 × height


def test_under_ddp_the_agents_step_on_every_ranks_images_and_stay_one_agent():
    """Two 'ranks' (threads, summing through a barrier as all_reduce does) split a batch: their agents take the
    step one agent takes on the whole batch; a rank that warped nothing still joins, and the agents stay equal."""
    import copy
    import threading

    from cvlab.config import ModelCfg
    from cvlab.data.tokenizer import CTCTokenizer
    from cvlab.models import build_model

    tok = CTCTokenizer("0123456789")
    cfg = ModelCfg.model_validate({"backbone": {"name": "vgg", "size": "tiny", "width": 0.5},
                                   "sequence": {"name": "none"}, "norm": {"name": "group", "groups": 4}})
    torch.manual_seed(0)
    model = build_model(cfg, tok.num_classes).model.eval()
    targets, lengths = tok.encode_batch(["1234", "5678", "9012", "3456", "7890", "1357", "2468", "0246"])
    x = _images()
    whole = _pipe({"op": "learned", "p": 1.0, "lr": 0.05}).learned
    ranks = [copy.deepcopy(whole), copy.deepcopy(whole)]

    box, barrier = [], threading.Barrier(2)

    def all_reduce(t):  # in-place sum over the two threads
        box.append(t.clone())
        barrier.wait()
        t.copy_(box[0] + box[1])
        barrier.wait()
        if len(box) == 2:
            box.clear()
        barrier.wait()

    def run(agent, last, part, logits):
        agent.last = last
        agent.learn(model, logits, targets[part], lengths[part], reduce=all_reduce)

    with torch.no_grad():
        whole(x, step_generator(0, 0))
        logits = model(x)
    last = whole.last
    halves = [slice(0, 3), slice(3, 8)]  # uneven: the mean is over images, not over ranks
    split = [{k: (v if v is None else v[h]) for k, v in last.items()} for h in halves]
    threads = [threading.Thread(target=run, args=(a, s, h, logits[h])) for a, s, h in zip(ranks, split, halves, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    before = [p.detach().clone() for p in whole.agent.parameters()]
    whole.learn(model, logits, targets, lengths)
    for pw, pa, pb in zip(whole.agent.parameters(), *(r.agent.parameters() for r in ranks), strict=True):
        assert torch.equal(pa, pb) and torch.equal(pa.grad, pb.grad)
        torch.testing.assert_close(pa.grad, pw.grad, rtol=1e-4, atol=1e-9)  # the whole batch's mean gradient
    assert any(not torch.equal(p0, p) for p0, p in zip(before, whole.agent.parameters(), strict=True))

    # next step: rank 0 warped nothing (last is None), rank 1 did; both return, and they still agree
    with torch.no_grad():
        ranks[1](x, step_generator(0, 1))
    threads = [threading.Thread(target=run, args=(ranks[0], None, slice(0, 0), logits[:0])),
               threading.Thread(target=run, args=(ranks[1], ranks[1].last, slice(0, 8), logits))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(torch.equal(pa, pb) for pa, pb in zip(*(r.agent.parameters() for r in ranks), strict=True))
