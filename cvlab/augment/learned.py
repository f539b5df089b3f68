"""Learned augmentation ("Learn to Augment", Luo et al., CVPR 2020): an agent network looks at each image and
chooses, for every fiducial point and axis, whether the point moves back, stays or moves forward (by a random
distance between half and all of `radius` × image height); the image is warped through the moved points with a
thin-plate spline. The agent sees only the image; the distances and all sampling come from the step's generator.

Joint training alternates with the recognizer, one agent update per recognizer step (`learn`), as the paper's
Algorithm 1:
1. the batch is warped by the agent's choices; the recognizer's training forward scores it (no extra pass);
2. exploration perturbs those choices: each point's move is changed to another move with probability
   `explore`, and the same images are warped by the perturbed moves with the same distances. The pipeline runs
   every op that follows `learned` on this explored batch too, with the same random parameters, so both are
   scored under the same following ops (`Pipeline.forward`); it is scored without gradients;
3. per image, whichever choice the recognizer found harder becomes the agent's target (cross-entropy), so the
   agent drifts toward the moves that hurt the current recognizer most, while the recognizer keeps training on
   them. Samples stay learnable because every move is bounded by `radius`, as in the paper.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from .base import Op
from .textwarp import WARPS, fiducial_points, to_normalized

STATES = 3  # per point and axis: move back, stay, move forward


class Agent(nn.Module):
    """image (B, C, H, W) -> scores (B, K, 2, STATES) for K fiducial points, x and y."""

    def __init__(self, points: int):
        super().__init__()
        self.points = points
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # (B, 1, 32, 96) -> (B, 16, 16, 48)
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # -> (B, 32, 8, 24)
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d((1, 8)),                                 # -> (B, 64, 1, 8)
        )
        self.head = nn.Linear(64 * 8, points * 2 * STATES)
        # a zero head is a uniform policy: the agent starts out as the random baseline it is compared with
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # grey, fixed size, [-1, 1]: the agent's cost does not grow with the recognizer's input size
        g = F.interpolate(x.float().mean(1, keepdim=True), size=(32, 96), mode="bilinear", align_corners=False)
        f = self.features(g * 2 - 1).flatten(1)  # (B, 64, 1, 8) -> (B, 512)
        return self.head(f).view(-1, self.points, 2, STATES)


def per_sample_loss(model: nn.Module, logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor
                    ) -> torch.Tensor:
    """(B,) recognizer losses, through the model's own `loss` one sample at a time (heads reduce to a mean;
    logits, targets and lengths are batch-first)."""
    return torch.stack([model.loss(logits[i:i + 1], targets[i:i + 1], lengths[i:i + 1])
                        for i in range(logits.shape[0])]).float()


def forward_without_trace(model: nn.Module, *args) -> torch.Tensor:
    """A train-mode forward that leaves the model as it was: batch-norm statistics update copies of the buffers.
    (Updating and restoring the real ones in place would invalidate the training forward's autograd graph.)"""
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    return torch.func.functional_call(model, buffers, args)


class LearnedWarp(Op):
    def __init__(self, spec):
        super().__init__(spec)
        self.agent = Agent(2 * (spec.segments + 1))
        self.optimizer = torch.optim.Adam(self.agent.parameters(), lr=spec.lr)
        self.last: dict | None = None  # what `learn` needs from the latest training batch
        self._stats: dict[str, float] = {}
        self._count = 0

    def sample(self, x, gen):
        b, k = x.shape[0], self.agent.points
        f32 = {"generator": gen, "device": gen.device, "dtype": torch.float32}
        # all randomness is drawn here, from the step's generator; the agent's choices come from `pick` by
        # inverse-CDF sampling of these uniforms
        return {"pick": torch.rand(b, k, 2, **f32),
                "distance": 0.5 + 0.5 * torch.rand(b, k, 2, **f32),  # a share of radius, so 'move' means move
                "explore": torch.rand(b, k, 2, **f32),  # which of the agent's moves exploration changes
                "shift": torch.randint(1, STATES, (b, k, 2), generator=gen, device=gen.device)}  # ... to which

    def warp(self, x: torch.Tensor, states: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        src = fiducial_points(self.spec.segments, x).float()
        moves = (states - 1).float() * distance * (self.spec.radius * h)  # pixels
        dst = (src + to_normalized(moves, h, w)).clamp(-1, 1)  # clamped: every point stays inside the image
        return WARPS[self.spec.warp](x, src, dst)

    def apply(self, x, params):
        with torch.no_grad():
            probs = self.agent(x).softmax(-1)  # (B, K, 2, STATES)
        states = (params["pick"].unsqueeze(-1) > probs.cumsum(-1)).sum(-1).clamp(max=STATES - 1)
        if self.training:
            # exploration around the agent's own prediction: a changed move is always a different one
            explored = torch.where(params["explore"] < self.spec.explore, (states + params["shift"]) % STATES,
                                   states)
            self.last = {"inputs": x.detach(), "states": states, "distance": params["distance"],
                         "explored_states": explored}
        return self.warp(x, states, params["distance"])

    def forward(self, x, gen):
        idx = self.choose(x, gen)
        self.last = None
        out = self.apply_at(x, idx, self.sample(x, gen))
        if self.last is not None:
            self.last["index"] = idx  # which images of the batch were warped (None: all)
            with torch.no_grad():
                warped = self.warp(self.last["inputs"], self.last["explored_states"], self.last["distance"])
                if idx is not None:
                    full = x.detach().clone()
                    full[idx] = warped
                    warped = full
            self.last["explored"] = warped  # the whole batch: the pipeline's later ops transform it alongside
        return out

    def learn(self, model: nn.Module, logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor,
              *, amp=None, reduce=None) -> None:
        """One agent update from the latest training batch; `logits` is the recognizer's training forward on it.
        Call it before the recognizer's step, so both losses are measured with the same weights.

        `reduce` (DDP: an in-place sum over ranks) makes the update one of a single agent over every rank's
        warped images: each rank's gradient, weighted by its image count, is summed, so the agents stay equal.
        Every rank must call it every step, also when it warped nothing (it then adds zeros)."""
        last, self.last = self.last, None
        if last is None:  # no image was warped this step
            if reduce is not None:
                self._step_reduced(None, 0, reduce)
            return
        idx = last["index"]
        if idx is not None:
            logits, targets, lengths = logits[idx], targets[idx], lengths[idx]
        loss_learned = per_sample_loss(model, logits.detach(), targets, lengths)
        explored = last["explored"] if idx is None else last["explored"][idx]
        with torch.no_grad(), (amp or contextlib.nullcontext()):
            loss_explored = per_sample_loss(model, forward_without_trace(model, explored, targets, lengths),
                                            targets, lengths)

        # per image, the harder of the two choices is the target: the agent learns what the recognizer finds hard
        explored_harder = loss_explored > loss_learned
        target = torch.where(explored_harder.view(-1, 1, 1), last["explored_states"], last["states"])
        scores = self.agent(last["inputs"])  # (n, K, 2, STATES)
        agent_loss = F.cross_entropy(scores.reshape(-1, STATES), target.reshape(-1))
        if reduce is None:
            self.optimizer.zero_grad(set_to_none=True)
            agent_loss.backward()
            self.optimizer.step()
        else:
            self._step_reduced(agent_loss, len(target), reduce)

        height = last["inputs"].shape[-2]
        move_px = ((last["states"] - 1).abs() * last["distance"]).mean() * self.spec.radius * height
        for k, v in (("loss_learned", loss_learned.mean()), ("loss_explored", loss_explored.mean()),
                     ("agent_loss", agent_loss.detach()), ("agent_move_px", move_px),
                     ("agent_confidence", scores.detach().softmax(-1).amax(-1).mean()),
                     ("explored_harder", explored_harder.float().mean())):
            self._stats[k] = self._stats.get(k, 0.0) + float(v)
        self._count += 1

    def _step_reduced(self, agent_loss: torch.Tensor | None, n: int, reduce) -> None:
        """The agent's step on the image-weighted mean gradient over ranks (n images here, 0 with no loss)."""
        params = list(self.agent.parameters())
        self.optimizer.zero_grad(set_to_none=True)
        if agent_loss is not None:
            (agent_loss * n).backward()
        flat = torch.cat([*(p.grad.flatten() if p.grad is not None else torch.zeros_like(p).flatten()
                            for p in params), torch.tensor([float(n)], device=params[0].device)])
        reduce(flat)
        total = float(flat[-1])
        if total == 0:  # no rank warped an image this step
            self.optimizer.zero_grad(set_to_none=True)
            return
        offset = 0
        for p in params:
            p.grad = (flat[offset:offset + p.numel()] / total).view_as(p).clone()
            offset += p.numel()
        self.optimizer.step()

    def pop_stats(self) -> dict[str, float]:
        """Means since the last call: the recognizer's loss on the agent's vs the explored warps, the agent's own
        loss, its mean point movement in pixels, how sure it is (mean top probability), how often the explored
        warp was harder."""
        out = {k: v / self._count for k, v in self._stats.items()} if self._count else {}
        self._stats, self._count = {}, 0
        return out

    def state(self) -> dict:
        """For the run's checkpoint: the agent and its optimizer."""
        return {"agent": self.agent.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state(self, state: dict) -> None:
        self.agent.load_state_dict(state["agent"])
        self.optimizer.load_state_dict(state["optimizer"])
